//! Job checkpoints: one file `OUT/.densam-checkpoint` holding the run parameters, the resume
//! point (the tracker's stage, output byte offset, frames written), the windows done, the frames
//! that failed so far and the tracker's saved state (memory banks; inside the first stretch also
//! the length of the first stretch's spool `OUT/.densam-spool`, which the checkpoint then needs).
//! Written atomically (temporary file, fsync, rename, fsync of the folder), so a kill at any
//! moment leaves either the previous checkpoint or the new one.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::JobError;

const MAGIC: &[u8; 8] = b"DENSAMCK";
/// Checkpoint file format version (2: the tracker's state with its stage).
pub const FORMAT: u32 = 2;

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
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    pub format: u32,
    /// The result-determining parameters (compared on resume).
    pub params: serde_json::Value,
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

/// Writes a checkpoint atomically.
pub fn write(out: &Path, meta: &Meta, banks: &[u8]) -> Result<(), JobError> {
    let final_path = path(out);
    let tmp = out.join(".densam-checkpoint.tmp");
    let json = serde_json::to_vec(meta).map_err(|e| JobError::Internal(e.to_string()))?;
    let res = (|| -> Result<(), JobError> {
        let mut f = File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(MAGIC).map_err(io(&tmp))?;
        f.write_all(&(json.len() as u64).to_le_bytes())
            .map_err(io(&tmp))?;
        f.write_all(&json).map_err(io(&tmp))?;
        f.write_all(banks).map_err(io(&tmp))?;
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

/// Reads the checkpoint of `out`, if there is one.
pub fn read(out: &Path) -> Result<Option<(Meta, Vec<u8>)>, JobError> {
    let p = path(out);
    let bytes = match std::fs::read(&p) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(JobError::Checkpoint(format!("{}: {e}", p.display()))),
    };
    let bad = |m: &str| {
        JobError::Checkpoint(format!(
            "{}: invalid checkpoint ({m}); remove it or run with --restart",
            p.display()
        ))
    };
    if bytes.len() < 16 || &bytes[..8] != MAGIC {
        return Err(bad("not a densam checkpoint"));
    }
    let n = u64::from_le_bytes(bytes[8..16].try_into().map_err(|_| bad("header"))?) as usize;
    let end = 16usize.checked_add(n).ok_or_else(|| bad("header"))?;
    if end > bytes.len() {
        return Err(bad("truncated"));
    }
    let meta: Meta = serde_json::from_slice(&bytes[16..end]).map_err(|e| bad(&e.to_string()))?;
    if meta.format != FORMAT {
        return Err(bad(&format!(
            "format {} (this densam reads {FORMAT})",
            meta.format
        )));
    }
    Ok(Some((meta, bytes[end..].to_vec())))
}

/// Removes the checkpoint (and a stray temporary one, and the spool).
pub fn remove(out: &Path) {
    let _ = std::fs::remove_file(path(out));
    let _ = std::fs::remove_file(out.join(".densam-checkpoint.tmp"));
    remove_spool(out);
}

/// The top-level keys whose values differ between two parameter objects.
pub fn param_diff(a: &serde_json::Value, b: &serde_json::Value) -> Vec<String> {
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return vec!["(all)".into()];
    };
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| {
            format!(
                "{k}: {} -> {}",
                a.get(k).map(|v| v.to_string()).unwrap_or("-".into()),
                b.get(k).map(|v| v.to_string()).unwrap_or("-".into())
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read(dir.path()).unwrap().is_none());
        let meta = Meta {
            format: FORMAT,
            params: serde_json::json!({"a": 1, "b": "x"}),
            stage: crate::tracker::Stage::Rest(crate::tracker::ProcIdx(17)),
            next: 17,
            offset: 1234,
            written_frames: 9,
            windows: vec![],
            wall_seconds: 1.5,
            failed_frames: vec![],
        };
        write(dir.path(), &meta, b"banks").unwrap();
        let (m, b) = read(dir.path()).unwrap().unwrap();
        assert_eq!((m.next, m.offset, b.as_slice()), (17, 1234, &b"banks"[..]));
        let diff = param_diff(&m.params, &serde_json::json!({"a": 2, "b": "x"}));
        assert_eq!(diff, vec!["a: 1 -> 2".to_string()]);
        std::fs::write(path(dir.path()), b"DENSAMCK\xff\xff").unwrap();
        assert!(matches!(read(dir.path()), Err(JobError::Checkpoint(_))));
        remove(dir.path());
        assert!(!path(dir.path()).exists());
    }
}
