//! The reverse-pass spool: encoded results appended to a temporary file as they are produced
//! (descending frame order) and replayed in ascending order. Memory holds only the index.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::TrackError;

/// Receives replayed records: frame number and bytes.
pub type ReplayFn<'a> = dyn FnMut(u64, &[u8]) -> Result<(), TrackError> + 'a;

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A temporary file of encoded frames, removed on drop.
pub struct Spool {
    path: PathBuf,
    file: File,
    index: Vec<(u64, u64, u64)>, // frame, offset, length
    len: u64,
}

impl Spool {
    pub fn create(dir: &Path) -> Result<Spool, TrackError> {
        let k = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!(".densam-spool-{}-{k}", std::process::id()));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| err(&path, e))?;
        Ok(Spool {
            path,
            file,
            index: Vec::new(),
            len: 0,
        })
    }

    pub fn push(&mut self, frame: u64, bytes: &[u8]) -> Result<(), TrackError> {
        self.file.write_all(bytes).map_err(|e| err(&self.path, e))?;
        self.index.push((frame, self.len, bytes.len() as u64));
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Calls `f` for every record in ascending frame order.
    pub fn replay_ascending(&mut self, f: &mut ReplayFn<'_>) -> Result<(), TrackError> {
        self.file.flush().map_err(|e| err(&self.path, e))?;
        let mut order: Vec<usize> = (0..self.index.len()).collect();
        order.sort_by_key(|&i| self.index[i].0);
        let mut buf = Vec::new();
        for i in order {
            let (frame, off, len) = self.index[i];
            buf.resize(len as usize, 0);
            self.file
                .seek(SeekFrom::Start(off))
                .map_err(|e| err(&self.path, e))?;
            self.file
                .read_exact(&mut buf)
                .map_err(|e| err(&self.path, e))?;
            f(frame, &buf)?;
        }
        Ok(())
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
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

    #[test]
    fn replays_ascending_and_cleans_up() {
        let dir = std::env::temp_dir();
        let mut s = Spool::create(&dir).unwrap();
        let p = s.path.clone();
        for f in [5u64, 4, 2, 0] {
            s.push(f, format!("frame {f}\n").as_bytes()).unwrap();
        }
        let mut got = Vec::new();
        s.replay_ascending(&mut |f, b| {
            got.push((f, String::from_utf8(b.to_vec()).unwrap()));
            Ok(())
        })
        .unwrap();
        assert_eq!(
            got.iter().map(|g| g.0).collect::<Vec<_>>(),
            vec![0, 2, 4, 5]
        );
        assert_eq!(got[1].1, "frame 2\n");
        drop(s);
        assert!(!p.exists());
    }
}
