//! FNV-1a (64-bit): the one stable content hash of the crate. It names inputs in run parameters
//! (prompt files, model checkpoints) so that a resume can tell whether they changed, and picks
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
}
