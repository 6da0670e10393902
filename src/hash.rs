//! FNV-1a (64-bit): the one stable content hash of the crate. It names inputs in run parameters
//! (prompt files, model checkpoints, videos through a sampled fingerprint) so that a resume can
//! tell whether they changed, and picks
//! stable per-object colours. Its values are recorded in checkpoints and `run.json`, so it must
//! never change.

use std::io::Read;
use std::path::Path;

/// A streaming 64-bit FNV-1a hasher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv1a {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds `data`.
    pub fn update(&mut self, data: &[u8]) -> &mut Self {
        for &b in data {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
        self
    }

    pub fn value(&self) -> u64 {
        self.0
    }

    /// The value as 16 lowercase hex digits (how it is recorded).
    pub fn hex(&self) -> String {
        format!("{:016x}", self.0)
    }
}

/// FNV-1a of `data`.
pub fn fnv1a(data: &[u8]) -> u64 {
    Fnv1a::new().update(data).value()
}

/// FNV-1a of a file's bytes, streamed.
pub fn fnv1a_file(path: &Path) -> std::io::Result<Fnv1a> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Fnv1a::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(h);
        }
        h.update(&buf[..n]);
    }
}

/// Windows of a file [`sample_fingerprint`] hashes, and their length.
const SAMPLES: u64 = 9;
const WINDOW: u64 = 256 << 10;
/// Files of a folder [`sample_fingerprint`] reads a window of.
const FOLDER_SAMPLES: usize = 9;

/// A cheap content fingerprint of a video file or a frame folder, so that another video at the
/// same path (same size, same length) is told apart without reading it all: for a file, its
/// length and [`SAMPLES`] windows of [`WINDOW`] bytes spread evenly over it (the first at the
/// start, the last at the end: the container's header and index); for a folder, the names and
/// lengths of its files (sorted) and the first window of [`FOLDER_SAMPLES`] of them spread over
/// the list.
pub fn sample_fingerprint(path: &Path) -> std::io::Result<Fnv1a> {
    let mut h = Fnv1a::new();
    if path.is_dir() {
        let mut files: Vec<(String, std::path::PathBuf, u64)> = Vec::new();
        for e in std::fs::read_dir(path)? {
            let e = e?;
            let md = e.metadata()?;
            if md.is_file() {
                let name = e.file_name().to_string_lossy().into_owned();
                files.push((name, e.path(), md.len()));
            }
        }
        files.sort();
        for (name, _, len) in &files {
            h.update(name.as_bytes()).update(&len.to_le_bytes());
        }
        let n = files.len();
        let picks: std::collections::BTreeSet<usize> = (0..FOLDER_SAMPLES.min(n))
            .map(|i| i * (n - 1) / (FOLDER_SAMPLES - 1).max(1))
            .collect();
        for i in picks {
            window(&mut h, &files[i].1, 0, WINDOW)?;
        }
        return Ok(h);
    }
    let len = std::fs::metadata(path)?.len();
    h.update(&len.to_le_bytes());
    let span = len.saturating_sub(WINDOW);
    for i in 0..SAMPLES {
        window(&mut h, path, span * i / (SAMPLES - 1), WINDOW)?;
    }
    Ok(h)
}

/// Feeds up to `n` bytes of `path` from `offset`.
fn window(h: &mut Fnv1a, path: &Path, offset: u64, n: u64) -> std::io::Result<()> {
    use std::io::{Seek, SeekFrom};
    let mut f = std::fs::File::open(path)?;
    f.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::with_capacity(n as usize);
    f.take(n).read_to_end(&mut buf)?;
    h.update(&buf);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        // Reference values of 64-bit FNV-1a.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
        let mut h = Fnv1a::new();
        h.update(b"foo").update(b"bar");
        assert_eq!(h.value(), fnv1a(b"foobar"));
    }

    #[test]
    fn sampled_fingerprints_see_content_not_just_size() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.mp4");
        let mut bytes: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&a, &bytes).unwrap();
        let fa = sample_fingerprint(&a).unwrap();
        assert_eq!(fa, sample_fingerprint(&a).unwrap());
        // A byte changed in the first window, in a middle one, in the last: another video.
        for at in [10usize, 1_500_000, 2_999_000] {
            bytes[at] ^= 1;
            std::fs::write(&a, &bytes).unwrap();
            assert_ne!(sample_fingerprint(&a).unwrap(), fa, "byte {at}");
            bytes[at] ^= 1;
        }
        // Folders: a frame's bytes or name.
        let f = dir.path().join("frames");
        std::fs::create_dir(&f).unwrap();
        for i in 0..20 {
            std::fs::write(f.join(format!("{i:05}.png")), [i as u8; 100]).unwrap();
        }
        let ff = sample_fingerprint(&f).unwrap();
        std::fs::write(f.join("00019.png"), [0u8; 100]).unwrap();
        assert_ne!(sample_fingerprint(&f).unwrap(), ff);
    }
}
