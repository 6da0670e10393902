//! Job checkpoints on disk: one file `OUT/.densam-checkpoint` holding the run parameters, the
//! resume point (the tracker's stage, output byte offset, frames written), the windows done, the
//! frames that failed so far and the tracker's saved state (memory banks; inside the first
//! stretch also the length of the first stretch's spool `OUT/.densam-spool`, which the checkpoint
//! then needs). Written atomically (temporary file, fsync, rename, fsync of the folder), so a
//! kill at any moment leaves either the previous checkpoint or the new one.
//!
//! Format 3 (written): `DENSAMC3`, the CRC-32 of everything after it (4 bytes, little endian),
//! the lengths of the metadata and of the tracker state (8 bytes each), the metadata (JSON,
//! [`Meta`], which also records the CRC-32 of the partial output's first `offset` bytes), the
//! tracker state. A file whose lengths or checksum do not match is damaged and refused, before
//! anything in it is used. Format 2 (read, from earlier versions): `DENSAMCK`, the metadata's
//! length, the metadata, the state; no checksum.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::JobError;
use super::params::RunParams;

/// Magic of the format this version writes.
const MAGIC: &[u8; 8] = b"DENSAMC3";
/// Magic of format 2 (earlier versions).
const MAGIC_V2: &[u8; 8] = b"DENSAMCK";
/// Bytes before the metadata: magic, CRC-32, two lengths.
const HEADER: usize = 8 + 4 + 8 + 8;
/// Checkpoint file format version (3: with checksums).
pub const FORMAT: u32 = 3;
/// The hint of every refusal of a checkpoint.
const RESTART_HINT: &str = "run with --restart to start again (the output so far is discarded)";

/// A processed frame that could not be decoded.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FailedFrame {
    pub frame: u64,
    pub error: String,
}

/// One finished window, as recorded in checkpoints and `run.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WindowRecord {
    pub index: u64,
    /// First and last original frame number of the window (inclusive).
    pub first_frame: u64,
    pub last_frame: u64,
    /// Wall time spent on this window in the run (or runs) that finished it.
    pub wall_seconds: f64,
    pub processed_frames: usize,
    pub fps: f64,
    pub peak_rss_bytes: Option<u64>,
    /// Peak CUDA caching-allocator bytes allocated during the window (None on the CPU).
    #[serde(default)]
    pub peak_gpu_bytes: Option<u64>,
    /// Finished inside the first stretch (pre-pass, forward head, reverse pass), whose time is
    /// reported as one.
    pub in_first_stretch: bool,
}

/// The metadata part of a checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Meta {
    pub format: u32,
    /// The result-determining parameters (compared on resume).
    pub params: RunParams,
    /// Where the tracker stands (its state is the checkpoint's payload).
    pub stage: crate::tracker::Stage,
    /// Processed index the final forward stretch continues at (0 inside the first stretch).
    pub next: usize,
    /// Bytes of the partial output that are final.
    pub offset: u64,
    pub written_frames: usize,
    pub windows: Vec<WindowRecord>,
    /// Wall time of the runs before this point.
    pub wall_seconds: f64,
    /// Frames that could not be decoded so far.
    #[serde(default)]
    pub failed_frames: Vec<FailedFrame>,
    /// CRC-32 of the partial output's first `offset` bytes (absent in format 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_crc32: Option<u32>,
}

impl Meta {
    /// The metadata of a run's start: nothing written, nothing done yet.
    pub fn start(params: RunParams) -> Meta {
        Meta {
            format: FORMAT,
            params,
            stage: crate::tracker::Stage::Start,
            next: 0,
            offset: 0,
            written_frames: 0,
            windows: Vec::new(),
            wall_seconds: 0.0,
            failed_frames: Vec::new(),
            output_crc32: Some(0),
        }
    }
}

/// A checkpoint read back: its metadata and the tracker's saved state.
#[derive(Debug)]
pub struct Checkpoint {
    pub meta: Meta,
    pub state: Vec<u8>,
}

/// The checkpoint file of an output folder.
pub fn path(out: &Path) -> PathBuf {
    out.join(".densam-checkpoint")
}

/// The first stretch's spool of an output folder (see [`crate::tracker::TrackerConfig::spool_file`]).
pub fn spool_path(out: &Path) -> PathBuf {
    out.join(".densam-spool")
}

/// Removes the spool.
pub fn remove_spool(out: &Path) {
    let _ = std::fs::remove_file(spool_path(out));
}

/// Removes what a killed run can leave besides the checkpoint, the partial output and the spool:
/// temporary files of atomic writes and write probes.
pub fn remove_stale(out: &Path) {
    let _ = std::fs::remove_file(out.join(".densam-checkpoint.tmp"));
    let _ = std::fs::remove_file(out.join("run.json.tmp"));
    if let Ok(rd) = std::fs::read_dir(out) {
        for e in rd.flatten() {
            if e.file_name()
                .to_string_lossy()
                .starts_with(".densam-write-test-")
            {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> JobError + '_ {
    move |e| super::output_error(format!("{}: {e}", path.display()))
}

/// The bytes of a checkpoint file (format 3).
pub fn encode(meta: &Meta, state: &[u8]) -> Result<Vec<u8>, JobError> {
    let json = serde_json::to_vec(meta).map_err(|e| JobError::Internal(e.to_string()))?;
    let mut out = Vec::with_capacity(HEADER + json.len() + state.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&(state.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(state);
    let crc = crc32fast::hash(&out[12..]);
    out[8..12].copy_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// Writes a checkpoint atomically.
pub fn write(out: &Path, meta: &Meta, state: &[u8]) -> Result<(), JobError> {
    let final_path = path(out);
    let tmp = out.join(".densam-checkpoint.tmp");
    let bytes = encode(meta, state)?;
    let res = (|| -> Result<(), JobError> {
        let mut f = crate::files::create_new(&tmp).map_err(io(&tmp))?;
        f.write_all(&bytes).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        drop(f);
        std::fs::rename(&tmp, &final_path).map_err(io(&final_path))?;
        if let Ok(d) = File::open(out) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

/// Why the bytes of a checkpoint file are refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Damage {
    #[error("not a densam checkpoint")]
    NotACheckpoint,
    #[error("cut short: {have} of {want} bytes")]
    Truncated { have: u64, want: u64 },
    #[error("{extra} bytes past its recorded end")]
    TooLong { extra: u64 },
    #[error("checksum mismatch: its bytes were changed after it was written")]
    Checksum,
    #[error("unreadable metadata: {0}")]
    Meta(String),
    #[error("format {found} in a format-{header} file")]
    Format { found: u32, header: u32 },
}

/// Parses the bytes of a checkpoint file: its metadata and the tracker state, which borrows
/// from `bytes`. Nothing is allocated from the recorded lengths; every length is checked
/// against the bytes there are, and (format 3) the checksum before the metadata is read.
pub fn decode(bytes: &[u8]) -> Result<(Meta, &[u8]), Damage> {
    let magic = bytes.get(..8).ok_or(Damage::NotACheckpoint)?;
    let u64_at = |at: usize| -> Option<u64> {
        Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
    };
    let have = bytes.len() as u64;
    let (header, meta_len, state_len, format) = if magic == MAGIC {
        let (Some(meta_len), Some(state_len)) = (u64_at(12), u64_at(20)) else {
            return Err(Damage::Truncated {
                have,
                want: HEADER as u64,
            });
        };
        let want = (HEADER as u64)
            .checked_add(meta_len)
            .and_then(|n| n.checked_add(state_len))
            .ok_or(Damage::Checksum)?;
        if have < want {
            return Err(Damage::Truncated { have, want });
        }
        if have > want {
            return Err(Damage::TooLong { extra: have - want });
        }
        let crc = u32::from_le_bytes(bytes[8..12].try_into().map_err(|_| Damage::Checksum)?);
        if crc32fast::hash(&bytes[12..]) != crc {
            return Err(Damage::Checksum);
        }
        (HEADER, meta_len, state_len, FORMAT)
    } else if magic == MAGIC_V2 {
        let meta_len = u64_at(8).ok_or(Damage::Truncated { have, want: 16 })?;
        let want = 16u64.checked_add(meta_len).ok_or(Damage::Truncated {
            have,
            want: u64::MAX,
        })?;
        if have < want {
            return Err(Damage::Truncated { have, want });
        }
        (16, meta_len, have - want, 2)
    } else {
        return Err(Damage::NotACheckpoint);
    };
    // Both lengths fit in `bytes` (checked above), so these conversions cannot truncate.
    let meta_end = header + meta_len as usize;
    let meta: Meta = serde_json::from_slice(&bytes[header..meta_end])
        .map_err(|e| Damage::Meta(e.to_string()))?;
    if meta.format != format {
        return Err(Damage::Format {
            found: meta.format,
            header: format,
        });
    }
    Ok((meta, &bytes[meta_end..meta_end + state_len as usize]))
}

/// Reads the checkpoint of `out`, if there is one; a damaged one is refused (exit 4) with the
/// hint to restart.
pub fn read(out: &Path) -> Result<Option<Checkpoint>, JobError> {
    let p = path(out);
    let bytes = match std::fs::read(&p) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(JobError::Checkpoint(format!("{}: {e}", p.display()))),
    };
    match decode(&bytes) {
        Ok((meta, state)) => {
            let state = state.to_vec();
            Ok(Some(Checkpoint { meta, state }))
        }
        Err(d) => Err(JobError::Checkpoint(format!(
            "{}: damaged checkpoint ({d}); {RESTART_HINT}",
            p.display()
        ))),
    }
}

/// Checks the partial output against the checkpoint: it must hold the `offset` bytes the
/// checkpoint counts as final, with the recorded checksum (format 3). Reads them in pieces;
/// returns their checksum.
pub fn verify_output(partial: &Path, meta: &Meta) -> Result<u32, JobError> {
    let refuse = |why: String| {
        JobError::Checkpoint(format!(
            "{}: {why}: it does not match the checkpoint; {RESTART_HINT}",
            partial.display()
        ))
    };
    let f = match File::open(partial) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && meta.offset == 0 => return Ok(0),
        Err(e) => return Err(refuse(e.to_string())),
    };
    let len = f.metadata().map_err(|e| refuse(e.to_string()))?.len();
    if len < meta.offset {
        return Err(refuse(format!(
            "holds {len} bytes, the checkpoint needs {}",
            meta.offset
        )));
    }
    let got = crc32_prefix(&f, meta.offset).map_err(|e| refuse(e.to_string()))?;
    if meta.output_crc32.is_some_and(|want| want != got) {
        return Err(refuse(format!(
            "its first {} bytes were changed (checksum mismatch)",
            meta.offset
        )));
    }
    Ok(got)
}

/// The CRC-32 of bytes `from..to` of a file, continuing `crc` (the CRC of the bytes before).
pub fn crc32_range(f: &File, crc: u32, from: u64, to: u64) -> std::io::Result<u32> {
    use std::os::unix::fs::FileExt;
    let mut h = crc32fast::Hasher::new_with_initial(crc);
    let mut buf = vec![0u8; (to.saturating_sub(from)).min(1 << 20) as usize];
    let mut at = from;
    while at < to {
        let n = buf.len().min((to - at) as usize);
        f.read_exact_at(&mut buf[..n], at)?;
        h.update(&buf[..n]);
        at += n as u64;
    }
    Ok(h.finalize())
}

/// The CRC-32 of the first `len` bytes of a file.
pub fn crc32_prefix(f: &File, len: u64) -> std::io::Result<u32> {
    crc32_range(f, 0, 0, len)
}

/// Removes the checkpoint (and a stray temporary one, and the spool).
pub fn remove(out: &Path) {
    let _ = std::fs::remove_file(path(out));
    let _ = std::fs::remove_file(out.join(".densam-checkpoint.tmp"));
    remove_spool(out);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> Meta {
        Meta {
            format: FORMAT,
            params: super::super::params::tests::sample(),
            stage: crate::tracker::Stage::Rest(crate::tracker::ProcIdx(17)),
            next: 17,
            offset: 1234,
            written_frames: 9,
            windows: vec![],
            wall_seconds: 1.5,
            failed_frames: vec![FailedFrame {
                frame: 3,
                error: "x".into(),
            }],
            output_crc32: Some(0xdead_beef),
        }
    }

    #[test]
    fn round_trip_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read(dir.path()).unwrap().is_none());
        write(dir.path(), &meta(), b"banks").unwrap();
        let c = read(dir.path()).unwrap().unwrap();
        assert_eq!(c.meta, meta());
        assert_eq!(c.state, b"banks");
        for garbage in [&b"DENSAMCK\xff\xff"[..], b"garbage", b""] {
            std::fs::write(path(dir.path()), garbage).unwrap();
            match read(dir.path()) {
                Err(JobError::Checkpoint(m)) => assert!(m.contains("--restart"), "{m}"),
                other => panic!("{other:?}"),
            }
        }
        remove(dir.path());
        assert!(!path(dir.path()).exists());
    }

    #[test]
    fn format_2_is_read() {
        let mut m = meta();
        m.format = 2;
        m.output_crc32 = None;
        let json = serde_json::to_vec(&m).unwrap();
        let mut bytes = MAGIC_V2.to_vec();
        bytes.extend_from_slice(&(json.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&json);
        bytes.extend_from_slice(b"state");
        let (got, state) = decode(&bytes).unwrap();
        assert_eq!((got, state), (m, &b"state"[..]));
        // A format-3 file's metadata under a format-2 header is refused.
        let good = encode(&meta(), b"state").unwrap();
        let mut relabelled = good.clone();
        relabelled[..8].copy_from_slice(MAGIC_V2);
        assert!(decode(&relabelled).is_err());
    }

    #[test]
    fn damage_is_named() {
        let good = encode(&meta(), &[7u8; 300]).unwrap();
        let n = good.len() as u64;
        assert_eq!(
            decode(&good[..good.len() / 2]).unwrap_err(),
            Damage::Truncated {
                have: n / 2,
                want: n
            }
        );
        let mut flipped = good.clone();
        flipped[good.len() - 100] ^= 0x10;
        assert_eq!(decode(&flipped).unwrap_err(), Damage::Checksum);
        let mut longer = good.clone();
        longer.push(0);
        assert_eq!(decode(&longer).unwrap_err(), Damage::TooLong { extra: 1 });
        let mut huge = good.clone();
        huge[12..20].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(decode(&huge), Err(Damage::Checksum)));
    }

    #[test]
    fn output_checksum_is_verified() {
        let dir = tempfile::tempdir().unwrap();
        let partial = dir.path().join("partial");
        let text = b"line 1\nline 2\nline 3 (past the checkpoint)\n";
        std::fs::write(&partial, text).unwrap();
        let mut m = meta();
        m.offset = 14;
        m.output_crc32 = Some(crc32fast::hash(&text[..14]));
        assert_eq!(
            verify_output(&partial, &m).unwrap(),
            m.output_crc32.unwrap()
        );
        // Format 2 (no checksum recorded): computed.
        let legacy = Meta {
            output_crc32: None,
            ..m.clone()
        };
        assert_eq!(
            verify_output(&partial, &legacy).unwrap(),
            m.output_crc32.unwrap()
        );
        let f = File::open(&partial).unwrap();
        let c7 = crc32_prefix(&f, 7).unwrap();
        assert_eq!(
            crc32_range(&f, c7, 7, 14).unwrap(),
            crc32fast::hash(&text[..14])
        );
        let mut damaged = text.to_vec();
        damaged[3] = b'X';
        std::fs::write(&partial, &damaged).unwrap();
        let e = verify_output(&partial, &m).unwrap_err();
        assert!(
            matches!(&e, JobError::Checkpoint(s) if s.contains("--restart")),
            "{e}"
        );
        std::fs::write(&partial, &text[..10]).unwrap();
        assert!(verify_output(&partial, &m).is_err());
    }

    /// A seeded mutation loop over a valid checkpoint (bounded to a few seconds): bit flips,
    /// overwritten bytes, cuts, appended bytes and absurd lengths are all refused as damaged,
    /// and nothing panics.
    #[test]
    fn fuzz_mutated_checkpoints_are_refused() {
        let state: Vec<u8> = (0..2000u32).map(|i| (i * 31 % 251) as u8).collect();
        let good = encode(&meta(), &state).unwrap();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rand = move || {
            // xorshift64*
            seed ^= seed >> 12;
            seed ^= seed << 25;
            seed ^= seed >> 27;
            seed.wrapping_mul(0x2545_f491_4f6c_dd1d)
        };
        let t0 = std::time::Instant::now();
        let mut tried = 0;
        let (mut restamped, mut accepted) = (0, 0);
        while tried < 1_000_000 && t0.elapsed().as_secs_f64() < 8.0 {
            let mut m = good.clone();
            for _ in 0..1 + rand() % 3 {
                let at = (rand() % m.len().max(1) as u64) as usize;
                match rand() % 6 {
                    0 if !m.is_empty() => m[at] ^= 1 << (rand() % 8),
                    1 if !m.is_empty() => m[at] = rand() as u8,
                    2 => m.truncate(at),
                    3 => m.extend((0..1 + rand() % 16).map(|_| rand() as u8)),
                    4 if m.len() >= 28 => {
                        let field = [12usize, 20][(rand() % 2) as usize];
                        let v = [u64::MAX, u64::MAX / 2, 1 << 40, rand()][(rand() % 4) as usize];
                        m[field..field + 8].copy_from_slice(&v.to_le_bytes());
                    }
                    _ if !m.is_empty() => {
                        let end = (at + 1 + (rand() % 64) as usize).min(m.len());
                        m.drain(at..end);
                    }
                    _ => {}
                }
            }
            if m != good {
                assert!(decode(&m).is_err(), "mutation {tried} was accepted");
            }
            // The same bytes with a checksum that fits them (as if the writer had been wrong):
            // the lengths and the metadata are checked on their own, without a panic.
            if m.len() >= 12 && m[..8] == MAGIC[..] {
                let crc = crc32fast::hash(&m[12..]);
                m[8..12].copy_from_slice(&crc.to_le_bytes());
                restamped += 1;
                if let Ok((meta, state)) = decode(&m) {
                    assert_eq!(meta.format, FORMAT);
                    assert!(state.len() < m.len());
                    accepted += 1;
                }
            }
            tried += 1;
        }
        eprintln!(
            "{tried} mutated checkpoints refused in {:.2} s; {restamped} re-checksummed, of \
             which {accepted} still parsed",
            t0.elapsed().as_secs_f64()
        );
        // Random bytes and random prefixes of the header.
        for k in 0..2000 {
            let mut m: Vec<u8> = (0..rand() % 64).map(|_| rand() as u8).collect();
            if k % 2 == 0 {
                m.splice(0..0, MAGIC.iter().copied());
            }
            assert!(decode(&m).is_err());
        }
        assert!(tried >= 1000, "only {tried} mutations in the time bound");
    }
}
