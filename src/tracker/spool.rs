//! The first stretch's spool: the encoded results of the forward head and of the reverse pass,
//! appended to a file as they are produced and replayed in ascending frame order (for a frame
//! recorded twice, the later record wins: the reverse pass's result on the first prompted
//! frame). Memory holds only the index. Each record is framed (frame number, length, bytes), so
//! a spool cut at a checkpoint's length can be reopened and its index rebuilt from the file.
//!
//! Two kinds: a temporary spool (unique name, removed on drop) and a resumable one at a fixed
//! path that outlives the run (a job checkpoint inside the first stretch refers to it; the job
//! removes it).

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::TrackError;

/// Receives replayed records: frame number and bytes.
pub type ReplayFn<'a> = dyn FnMut(u64, &[u8]) -> Result<(), TrackError> + 'a;

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Bytes of a record header (frame number, length; little endian).
const HEADER: u64 = 16;

/// A file of encoded frames.
pub struct Spool {
    path: PathBuf,
    file: File,
    index: Vec<(u64, u64, u64)>, // frame, offset of the bytes, length
    len: u64,
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
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(|e| err(path, e))?;
        Ok(Spool {
            path: path.to_path_buf(),
            file,
            index: Vec::new(),
            len: 0,
            temporary: false,
        })
    }

    /// Reopens the resumable spool at `path`, cut to its first `len` bytes (what a checkpoint
    /// saw), with its index rebuilt from the records.
    pub fn reopen(path: &Path, len: u64) -> Result<Spool, TrackError> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| err(path, e))?;
        let have = file.metadata().map_err(|e| err(path, e))?.len();
        let bad = |m: String| TrackError::Spool {
            path: path.display().to_string(),
            msg: m,
        };
        if have < len {
            return Err(bad(format!(
                "holds {have} bytes, the checkpoint needs {len}"
            )));
        }
        file.set_len(len).map_err(|e| err(path, e))?;
        let mut index = Vec::new();
        {
            let mut r = BufReader::new(&mut file);
            r.seek(SeekFrom::Start(0)).map_err(|e| err(path, e))?;
            let mut pos = 0u64;
            let mut h = [0u8; HEADER as usize];
            while pos < len {
                if len - pos < HEADER {
                    return Err(bad(format!("truncated record header at byte {pos}")));
                }
                r.read_exact(&mut h).map_err(|e| err(path, e))?;
                let frame = u64::from_le_bytes(h[..8].try_into().unwrap_or_default());
                let n = u64::from_le_bytes(h[8..].try_into().unwrap_or_default());
                let off = pos + HEADER;
                if n > len - off {
                    return Err(bad(format!("truncated record at byte {pos}")));
                }
                index.push((frame, off, n));
                r.seek_relative(n as i64).map_err(|e| err(path, e))?;
                pos = off + n;
            }
        }
        file.seek(SeekFrom::Start(len)).map_err(|e| err(path, e))?;
        Ok(Spool {
            path: path.to_path_buf(),
            file,
            index,
            len,
            temporary: false,
        })
    }

    pub fn push(&mut self, frame: u64, bytes: &[u8]) -> Result<(), TrackError> {
        let mut rec = Vec::with_capacity(bytes.len() + HEADER as usize);
        rec.extend_from_slice(&frame.to_le_bytes());
        rec.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        rec.extend_from_slice(bytes);
        self.file.write_all(&rec).map_err(|e| err(&self.path, e))?;
        self.index
            .push((frame, self.len + HEADER, bytes.len() as u64));
        self.len += rec.len() as u64;
        Ok(())
    }

    /// Flushes the records to disk and returns the spool's length (for a checkpoint).
    pub fn sync(&self) -> Result<u64, TrackError> {
        self.file.sync_data().map_err(|e| err(&self.path, e))?;
        Ok(self.len)
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
            got.push((f, String::from_utf8(b.to_vec()).unwrap()));
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
            s.push(f, format!("frame {f}\n").as_bytes()).unwrap();
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
        s.push(3, b"head 3").unwrap();
        s.push(4, b"head 4").unwrap();
        let at = s.sync().unwrap();
        s.push(3, b"rev 3").unwrap();
        s.push(2, b"rev 2").unwrap();
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
        s.push(3, b"again").unwrap();
        assert_eq!(
            replay(&mut s),
            vec![(3, "again".into()), (4, "head 4".into())]
        );
        assert!(Spool::reopen(&p, 10_000).is_err());
        assert!(Spool::reopen(&p, 7).is_err(), "cut inside a header");
    }
}
