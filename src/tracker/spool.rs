//! The first stretch's spool: the formatted results of the forward head and of the reverse
//! pass, appended to a file as they are produced and replayed in ascending frame order (for a
//! frame recorded twice, the later record wins: the reverse pass's result on the first prompted
//! frame). Memory holds only the index. Each record is framed (frame number, length, bytes), so
//! a spool cut at a saved state's length can be reopened and its index rebuilt from the file;
//! a running CRC-32 of the bytes so far goes into the saved state with the length
//! ([`SpoolMark`]), so that a spool changed or cut since is refused on reopening.
//!
//! Two kinds: a temporary spool (unique name, removed on drop) and a resumable one at a fixed
//! path that outlives the run (a saved state inside the first stretch refers to it; the caller
//! removes it).

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{FrameNo, TrackError};

/// Receives replayed records: frame number and bytes.
pub type ReplayFn<'a> = dyn FnMut(FrameNo, &[u8]) -> Result<(), TrackError> + 'a;

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Bytes of a record header (frame number, length; little endian).
const HEADER: u64 = 16;

/// A spool as a saved state saw it: its length and the CRC-32 of those bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpoolMark {
    pub len: u64,
    pub crc: u32,
}

/// A file of formatted frame results.
pub struct Spool {
    path: PathBuf,
    file: File,
    index: Vec<(FrameNo, u64, u64)>, // frame, offset of the bytes, length
    len: u64,
    /// CRC-32 of the bytes so far.
    crc: crc32fast::Hasher,
    /// Removed on drop (a temporary spool).
    temporary: bool,
}

impl Spool {
    /// A temporary spool with a unique name in `dir`, removed on drop.
    pub fn create(dir: &Path) -> Result<Spool, TrackError> {
        let k = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!(".densam-spool-{}-{k}", std::process::id()));
        let mut s = Self::create_at(&path)?;
        s.temporary = true;
        Ok(s)
    }

    /// A new, empty resumable spool at `path` (replacing any file there), kept on drop.
    pub fn create_at(path: &Path) -> Result<Spool, TrackError> {
        let file = crate::files::create_new(path).map_err(|e| err(path, e))?;
        Ok(Spool {
            path: path.to_path_buf(),
            file,
            index: Vec::new(),
            len: 0,
            crc: crc32fast::Hasher::new(),
            temporary: false,
        })
    }

    /// Reopens the resumable spool at `path`, cut to what a saved state saw (`mark`), with
    /// its index rebuilt from the records. A spool shorter than that, or whose bytes up to there
    /// differ from what the state saw, is [`TrackError::SpoolDamaged`].
    pub fn reopen(path: &Path, mark: SpoolMark) -> Result<Spool, TrackError> {
        let len = mark.len;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(|e| err(path, e))?;
        let have = file.metadata().map_err(|e| err(path, e))?.len();
        let damaged = |m: String| TrackError::SpoolDamaged {
            path: path.display().to_string(),
            msg: m,
        };
        if have < len {
            return Err(damaged(format!(
                "truncated: holds {have} bytes, the saved state needs {len}"
            )));
        }
        file.set_len(len).map_err(|e| err(path, e))?;
        let mut index = Vec::new();
        let mut crc = crc32fast::Hasher::new();
        {
            let mut r = BufReader::new(&mut file);
            r.seek(SeekFrom::Start(0)).map_err(|e| err(path, e))?;
            let mut pos = 0u64;
            let mut h = [0u8; HEADER as usize];
            let mut buf = Vec::new();
            while pos < len {
                if len - pos < HEADER {
                    return Err(damaged(format!("record header cut at byte {pos}")));
                }
                r.read_exact(&mut h).map_err(|e| err(path, e))?;
                crc.update(&h);
                let (frame, n) = header_fields(&h);
                let off = pos + HEADER;
                if n > len - off {
                    return Err(damaged(format!("record at byte {pos} runs past the end")));
                }
                buf.resize(n as usize, 0);
                r.read_exact(&mut buf).map_err(|e| err(path, e))?;
                crc.update(&buf);
                index.push((FrameNo(frame), off, n));
                pos = off + n;
            }
        }
        if crc.clone().finalize() != mark.crc {
            return Err(damaged(
                "damaged: its checksum differs from the saved state's".to_string(),
            ));
        }
        file.seek(SeekFrom::Start(len)).map_err(|e| err(path, e))?;
        Ok(Spool {
            path: path.to_path_buf(),
            file,
            index,
            len,
            crc,
            temporary: false,
        })
    }

    pub fn push(&mut self, frame: FrameNo, bytes: &[u8]) -> Result<(), TrackError> {
        let mut rec = Vec::with_capacity(bytes.len() + HEADER as usize);
        rec.extend_from_slice(&frame.0.to_le_bytes());
        rec.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        rec.extend_from_slice(bytes);
        self.file.write_all(&rec).map_err(|e| err(&self.path, e))?;
        self.crc.update(&rec);
        self.index
            .push((frame, self.len + HEADER, bytes.len() as u64));
        self.len += rec.len() as u64;
        Ok(())
    }

    /// Flushes the records to disk and returns the spool's length and checksum (for a saved
    /// state).
    pub fn sync(&self) -> Result<SpoolMark, TrackError> {
        self.file.sync_data().map_err(|e| err(&self.path, e))?;
        Ok(SpoolMark {
            len: self.len,
            crc: self.crc.clone().finalize(),
        })
    }

    /// Calls `f` for every frame in ascending frame order, with its latest record.
    pub fn replay_ascending(&mut self, f: &mut ReplayFn<'_>) -> Result<(), TrackError> {
        self.file.flush().map_err(|e| err(&self.path, e))?;
        let mut order: Vec<usize> = (0..self.index.len()).collect();
        // Stable: records of one frame stay in the order they were pushed.
        order.sort_by_key(|&i| self.index[i].0);
        let mut buf = Vec::new();
        for (k, &i) in order.iter().enumerate() {
            let (frame, off, len) = self.index[i];
            if order.get(k + 1).is_some_and(|&j| self.index[j].0 == frame) {
                continue;
            }
            buf.resize(len as usize, 0);
            self.file
                .seek(SeekFrom::Start(off))
                .map_err(|e| err(&self.path, e))?;
            self.file
                .read_exact(&mut buf)
                .map_err(|e| err(&self.path, e))?;
            f(frame, &buf)?;
        }
        self.file
            .seek(SeekFrom::Start(self.len))
            .map_err(|e| err(&self.path, e))?;
        Ok(())
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        if self.temporary {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The frame number and length of a record header.
fn header_fields(h: &[u8; HEADER as usize]) -> (u64, u64) {
    let mut f = [0u8; 8];
    let mut n = [0u8; 8];
    f.copy_from_slice(&h[..8]);
    n.copy_from_slice(&h[8..]);
    (u64::from_le_bytes(f), u64::from_le_bytes(n))
}

fn err(path: &Path, e: std::io::Error) -> TrackError {
    TrackError::Spool {
        path: path.display().to_string(),
        msg: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replay(s: &mut Spool) -> Vec<(u64, String)> {
        let mut got = Vec::new();
        s.replay_ascending(&mut |f, b| {
            got.push((f.0, String::from_utf8(b.to_vec()).unwrap()));
            Ok(())
        })
        .unwrap();
        got
    }

    #[test]
    fn replays_ascending_and_cleans_up() {
        let dir = std::env::temp_dir();
        let mut s = Spool::create(&dir).unwrap();
        let p = s.path.clone();
        for f in [5u64, 4, 2, 0] {
            s.push(FrameNo(f), format!("frame {f}\n").as_bytes())
                .unwrap();
        }
        let got = replay(&mut s);
        assert_eq!(
            got.iter().map(|g| g.0).collect::<Vec<_>>(),
            vec![0, 2, 4, 5]
        );
        assert_eq!(got[1].1, "frame 2\n");
        drop(s);
        assert!(!p.exists());
    }

    #[test]
    fn later_record_wins_and_reopen_cuts_to_length() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("spool");
        let mut s = Spool::create_at(&p).unwrap();
        s.push(FrameNo(3), b"head 3").unwrap();
        s.push(FrameNo(4), b"head 4").unwrap();
        let at = s.sync().unwrap();
        s.push(FrameNo(3), b"rev 3").unwrap();
        s.push(FrameNo(2), b"rev 2").unwrap();
        let full = s.sync().unwrap();
        drop(s);
        assert!(p.exists(), "a resumable spool is kept");
        let mut s = Spool::reopen(&p, full).unwrap();
        let got = replay(&mut s);
        assert_eq!(
            got,
            vec![
                (2, "rev 2".into()),
                (3, "rev 3".into()),
                (4, "head 4".into())
            ]
        );
        drop(s);
        let mut s = Spool::reopen(&p, at).unwrap();
        s.push(FrameNo(3), b"again").unwrap();
        assert_eq!(
            replay(&mut s),
            vec![(3, "again".into()), (4, "head 4".into())]
        );
        // Going on after a reopen keeps the checksum running.
        let again = s.sync().unwrap();
        drop(s);
        assert!(Spool::reopen(&p, again).is_ok());
        let damaged =
            |r: Result<Spool, TrackError>| matches!(r, Err(TrackError::SpoolDamaged { .. }));
        let long = SpoolMark {
            len: 10_000,
            ..again
        };
        assert!(damaged(Spool::reopen(&p, long)), "truncated");
        let cut = SpoolMark { len: 7, crc: 0 };
        assert!(damaged(Spool::reopen(&p, cut)), "cut inside a header");
    }

    #[test]
    fn a_changed_byte_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("spool");
        let mut s = Spool::create_at(&p).unwrap();
        for f in 0..4u64 {
            s.push(FrameNo(f), format!("{{\"frame\": {f}}}\n").as_bytes())
                .unwrap();
        }
        let mark = s.sync().unwrap();
        drop(s);
        let good = std::fs::read(&p).unwrap();
        for i in 0..good.len() {
            let mut b = good.clone();
            b[i] ^= 0x01;
            std::fs::write(&p, &b).unwrap();
            let r = Spool::reopen(&p, mark);
            assert!(
                matches!(r, Err(TrackError::SpoolDamaged { .. })),
                "byte {i} changed: {:?}",
                r.err()
            );
        }
        // Bytes after the saved length are not the state's: cut off, not an error.
        let mut b = good.clone();
        b.extend_from_slice(b"partial record of a killed run");
        std::fs::write(&p, &b).unwrap();
        assert!(Spool::reopen(&p, mark).is_ok());
        assert_eq!(std::fs::read(&p).unwrap(), good);
    }
}
