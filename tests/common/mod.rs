//! Shared helpers of the integration tests: running the venv's Python (the official `sam2`
//! package) with pinned threads, and a fixture cache under `.cache/<name>-<hash>/` keyed by the
//! contents of the generating scripts and their arguments, regenerated when missing; running the
//! `densam` binary and reading its results (JSONL masks, `run.json`); the synthetic clip of the
//! job tests ([`DiscClip`]).
//!
//! Use from a test file with `mod common;`. Generation is atomic: a fixture is written into a
//! temporary directory next to its final place and renamed into it, so an interrupted or
//! concurrent run never sees a half-written fixture.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

/// The repository root (where Cargo.toml is).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Python that has the official `sam2` package: `$DENSAM_VENV_PYTHON`, else `.venv/bin/python`.
pub fn venv_python() -> PathBuf {
    match std::env::var_os("DENSAM_VENV_PYTHON") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => repo_root().join(".venv/bin/python"),
    }
}

/// Threads the Python reference runs may use (`DENSAM_TEST_THREADS`, default 1).
pub fn test_threads() -> usize {
    std::env::var("DENSAM_TEST_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(1)
}

/// A `Command` running `script` (relative to the repository root, or absolute) with the venv
/// Python, OpenMP/MKL/torch threads pinned to [`test_threads`], run from the repository root.
pub fn python_command(script: &str) -> Command {
    let root = repo_root();
    let n = test_threads().to_string();
    let mut cmd = Command::new(venv_python());
    cmd.arg(root.join(script))
        .current_dir(&root)
        .env("OMP_NUM_THREADS", &n)
        .env("MKL_NUM_THREADS", &n)
        .env("DENSAM_TORCH_THREADS", &n)
        .env("PYTHONHASHSEED", "0")
        .env("PYTHONDONTWRITEBYTECODE", "1");
    cmd
}

/// Runs `script args...` with the venv Python; panics with its output if it fails.
pub fn run_python(script: &str, args: &[String]) {
    let out = python_command(script)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", venv_python().display()));
    if !out.status.success() {
        panic!(
            "{script} {args:?} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// 64-bit FNV-1a: a hash that is stable across Rust versions and platforms.
fn fnv1a(data: &[u8], mut h: u64) -> u64 {
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The cache key of a fixture: the contents of its generator scripts and its arguments.
pub fn fixture_hash(scripts: &[&str], args: &[String]) -> String {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for s in scripts {
        let path = repo_root().join(s);
        let data =
            std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        h = fnv1a(s.as_bytes(), h);
        h = fnv1a(&(data.len() as u64).to_le_bytes(), h);
        h = fnv1a(&data, h);
    }
    for a in args {
        h = fnv1a(&(a.len() as u64).to_le_bytes(), h);
        h = fnv1a(a.as_bytes(), h);
    }
    format!("{h:016x}")
}

/// The fixture cache directory (`$DENSAM_TEST_CACHE`, else `<repo>/.cache`).
pub fn cache_root() -> PathBuf {
    match std::env::var_os("DENSAM_TEST_CACHE") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => repo_root().join(".cache"),
    }
}

static GENERATING: Mutex<()> = Mutex::new(());

/// The directory `.cache/<name>-<hash>/`, where the hash covers `scripts` (their contents) and
/// `args`. When it is missing, `generate(tmp_dir)` fills a fresh temporary directory, which is
/// then renamed into place.
pub fn fixture_dir(
    name: &str,
    scripts: &[&str],
    args: &[String],
    generate: impl FnOnce(&Path),
) -> PathBuf {
    let root = cache_root();
    let dir = root.join(format!("{name}-{}", fixture_hash(scripts, args)));
    if dir.is_dir() {
        return dir;
    }
    // One generation at a time in this process; other processes are handled by the rename.
    let _guard = GENERATING.lock().unwrap_or_else(|e| e.into_inner());
    if dir.is_dir() {
        return dir;
    }
    std::fs::create_dir_all(&root)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", root.display()));
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let tmp = root.join(format!(".tmp-{name}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&tmp)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", tmp.display()));
    generate(&tmp);
    if let Err(e) = std::fs::rename(&tmp, &dir) {
        // Another process won the race: keep its copy.
        let _ = std::fs::remove_dir_all(&tmp);
        if !dir.is_dir() {
            panic!("cannot move {} to {}: {e}", tmp.display(), dir.display());
        }
    }
    dir
}

/// A fixture made by one Python script called as `script args... --out <dir>`.
pub fn python_fixture(
    name: &str,
    script: &str,
    extra_scripts: &[&str],
    args: &[String],
) -> PathBuf {
    let mut scripts = vec![script];
    scripts.extend_from_slice(extra_scripts);
    fixture_dir(name, &scripts, args, |tmp| {
        let mut a = args.to_vec();
        a.push("--out".into());
        a.push(tmp.display().to_string());
        run_python(script, &a);
    })
}

/// The shared oracles folder (`$DENSAM_ORACLES`, else `../shared/oracles` beside the
/// repository or beside the main checkout of a git worktree); asserts that `marker` (a file
/// relative to it) is there.
pub fn oracles(marker: &str) -> PathBuf {
    let p = match std::env::var_os("DENSAM_ORACLES") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => {
            let beside = repo_root().join("../shared/oracles");
            let main = Command::new("git")
                .args(["rev-parse", "--path-format=absolute", "--git-common-dir"])
                .current_dir(repo_root())
                .output()
                .ok()
                .and_then(|o| String::from_utf8(o.stdout).ok())
                .map(|s| PathBuf::from(s.trim()).join("../../shared/oracles"));
            match main {
                Some(m) if !beside.is_dir() && m.is_dir() => m,
                _ => beside,
            }
        }
    };
    assert!(
        p.join(marker).is_file(),
        "the oracles are not at {} (no {marker}; set DENSAM_ORACLES)",
        p.display()
    );
    p
}

/// The SAM 3 tracker oracle, relative to [`oracles`].
pub const SAM3_ORACLE: &str = "sam3/run_tracker.py";

/// The SAM 3 tracker oracle's script, as a path.
pub fn sam3_oracle_script() -> String {
    oracles(SAM3_ORACLE).join(SAM3_ORACLE).display().to_string()
}

/// The seeded random `sam3.pt` of the SAM 3 tracker oracle (`make-checkpoint --seed 0`, 1.9 GB,
/// cached), its object-score head's last bias `obj_bias` (`None`: the oracle's default +10,
/// every object present).
pub fn sam3_checkpoint(obj_bias: Option<&str>) -> PathBuf {
    let script = sam3_oracle_script();
    let mut args: Vec<String> = vec!["make-checkpoint".into(), "--seed".into(), "0".into()];
    if let Some(b) = obj_bias {
        args.extend(["--obj-bias".into(), b.into()]);
    }
    let dir = fixture_dir("sam3-ckpt", &[&script], &args, |tmp| {
        let mut a = args.clone();
        a.push("--out".into());
        a.push(tmp.join("sam3.pt").display().to_string());
        run_python(&script, &a);
    });
    dir.join("sam3.pt")
}

pub const MAKE_CHECKPOINT: &str = "tools/parity/make_checkpoint.py";

/// A seeded random official checkpoint (`model.pt`, `model.safetensors`, `meta.json`) made by
/// `tools/parity/make_checkpoint.py`. `size`: tiny|small|base_plus|large, `version`: 2.0|2.1.
pub fn checkpoint(size: &str, version: &str, image_size: i64, seed: u64) -> PathBuf {
    let args: Vec<String> = [
        "--size",
        size,
        "--version",
        version,
        "--image-size",
        &image_size.to_string(),
        "--seed",
        &seed.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    python_fixture(
        &format!("ckpt-{size}-{version}-{image_size}-s{seed}"),
        MAKE_CHECKPOINT,
        &[],
        &args,
    )
}

/// Reads every tensor of a safetensors file (e.g. a reference dump) into a map.
pub fn read_safetensors(path: &Path) -> std::collections::BTreeMap<String, tch::Tensor> {
    tch::Tensor::read_safetensors(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
        .into_iter()
        .collect()
}

/// Max |a - b| over all elements (both converted to f64 on the CPU); panics on a shape mismatch.
pub fn max_abs_diff(a: &tch::Tensor, b: &tch::Tensor) -> f64 {
    assert_eq!(a.size(), b.size(), "shape mismatch");
    let a = a.to_device(tch::Device::Cpu).to_kind(tch::Kind::Double);
    let b = b.to_device(tch::Device::Cpu).to_kind(tch::Kind::Double);
    (a - b).abs().max().double_value(&[])
}

/// Asserts `max |a - b| <= tol`, naming the tensor; returns the error for reporting.
pub fn assert_close(name: &str, got: &tch::Tensor, want: &tch::Tensor, tol: f64) -> f64 {
    assert_eq!(
        got.size(),
        want.size(),
        "{name}: shape {:?} != reference {:?}",
        got.size(),
        want.size()
    );
    let err = max_abs_diff(got, want);
    eprintln!("{name}: max abs err {err:.3e} (tol {tol:.0e})");
    assert!(err <= tol, "{name}: max abs err {err:.3e} > {tol:.0e}");
    err
}

/// Runs the `densam` binary of this build with `args` and extra environment (one torch thread).
pub fn densam(args: &[String], env: &[(&str, &str)]) -> std::process::Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_densam"));
    c.args(args).env("OMP_NUM_THREADS", "1");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

/// The exit code (`None`: killed by a signal).
pub fn code(o: &std::process::Output) -> Option<i32> {
    o.status.code()
}

/// Standard error as text.
pub fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `a` with `extra` arguments appended.
pub fn with(mut a: Vec<String>, extra: &[&str]) -> Vec<String> {
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

/// The finished JSONL of video `id` in output folder `out`.
pub fn output_of(out: &Path, id: &str) -> Vec<u8> {
    std::fs::read(out.join(format!("dense_annotations_{id}.jsonl"))).unwrap()
}

/// The arguments of `densam annotate --video FRAMES --prompts PROMPTS --checkpoint CKPT --out OUT`
/// followed by `opts` (the video path is argument 2, the checkpoint 6).
pub fn annotate_args(
    frames: &Path,
    prompts: &Path,
    ckpt: &Path,
    out: &Path,
    opts: &[&str],
) -> Vec<String> {
    let mut v: Vec<String> = vec!["annotate".into(), "--video".into()];
    v.push(frames.display().to_string());
    v.extend(["--prompts".into(), prompts.display().to_string()]);
    v.extend(["--checkpoint".into(), ckpt.display().to_string()]);
    v.extend(["--out".into(), out.display().to_string()]);
    with(v, opts)
}

/// The centre of the red disc of [`write_disc_frames`] on frame `t`: it moves 2 px right a frame.
pub fn disc_center(t: u32) -> (i32, i32) {
    (30 + 2 * t as i32, 50)
}

/// Writes `n` frames `00000.png`, ... of `w` x `h` into `dir`: a red disc of radius 14 around
/// [`disc_center`], a green 27 px square centred on (115, 20 + t) and a textured background.
pub fn write_disc_frames(dir: &Path, n: u32, w: u32, h: u32) {
    for t in 0..n {
        let img = image::RgbImage::from_fn(w, h, |x, y| {
            let (xi, yi, ti) = (x as i32, y as i32, t as i32);
            let (cx, cy) = disc_center(t);
            if (xi - cx).pow(2) + (yi - cy).pow(2) < 14 * 14 {
                image::Rgb([220, 30, 30])
            } else if (xi - 115).abs() < 14 && (yi - (20 + ti)).abs() < 14 {
                image::Rgb([30, 200, 40])
            } else {
                let v = ((x * 7 + y * 13 + (x / 8) * (y / 8) * 31) % 97) as u8;
                image::Rgb([100 + v, 90 + v / 2, 120 - v / 3])
            }
        });
        img.save(dir.join(format!("{t:05}.png"))).unwrap();
    }
}

/// The input of the job tests (job_annotate, job_span): a temporary folder with the frames of
/// [`write_disc_frames`] in `frames/` and `prompts.json`, and the seeded tiny 2.1 checkpoint at
/// image size 256.
pub struct DiscClip {
    /// The temporary folder (removed when dropped).
    pub dir: tempfile::TempDir,
    /// `DIR/frames`.
    pub frames: PathBuf,
    /// `DIR/prompts.json`.
    pub prompts: PathBuf,
    /// The checkpoint's `model.pt` (in the fixture cache).
    pub ckpt: PathBuf,
}

impl DiscClip {
    /// [`annotate_args`] on this clip at image size 256 on the CPU, hole filling off and reverse
    /// chunks of 4 frames, then `opts`.
    pub fn args(&self, out: &Path, opts: &[&str]) -> Vec<String> {
        let a = annotate_args(
            &self.frames,
            &self.prompts,
            &self.ckpt,
            out,
            &[
                "--image-size",
                "256",
                "--device",
                "cpu",
                "--fill-hole-area",
                "0",
                "--reverse-chunk",
                "4",
            ],
        );
        with(a, opts)
    }
}

/// Makes a [`DiscClip`] of `n` frames of `w` x `h` with `prompts` as the prompts JSON.
pub fn disc_clip(n: u32, w: u32, h: u32, prompts: &str) -> DiscClip {
    let dir = tempfile::tempdir().unwrap();
    let frames = dir.path().join("frames");
    std::fs::create_dir_all(&frames).unwrap();
    write_disc_frames(&frames, n, w, h);
    let prompts_path = dir.path().join("prompts.json");
    std::fs::write(&prompts_path, prompts).unwrap();
    let ckpt = checkpoint("tiny", "2.1", 256, 0).join("model.pt");
    DiscClip {
        dir,
        frames,
        prompts: prompts_path,
        ckpt,
    }
}

/// `OUT/run.json`, parsed.
pub fn run_json(out: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(out.join("run.json")).unwrap()).unwrap()
}

/// The names in a folder, sorted.
pub fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// The `frame_number` of each line of a JSONL result, in order.
pub fn frame_numbers(bytes: &[u8]) -> Vec<u64> {
    String::from_utf8(bytes.to_vec())
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["frame_number"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

/// Masks (row-major, 0/1) per (frame, object id) of a JSONL result.
pub fn masks_of(bytes: &[u8]) -> std::collections::BTreeMap<(u64, String), Vec<u8>> {
    let mut m = std::collections::BTreeMap::new();
    for l in String::from_utf8(bytes.to_vec()).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        let n = v["frame_number"].as_u64().unwrap();
        for o in v["objects"].as_array().unwrap() {
            let s = &o["segmentation"];
            let (h, w) = (
                s["size"][0].as_u64().unwrap(),
                s["size"][1].as_u64().unwrap(),
            );
            let rle = densam::mask::Rle::from_counts_string(
                s["counts"].as_str().unwrap(),
                h as u32,
                w as u32,
            )
            .unwrap();
            m.insert(
                (n, o["id"].as_str().unwrap().to_string()),
                rle.decode_row_major(),
            );
        }
    }
    m
}

/// IoU of two 0/1 masks (the shorter one padded with 0); 1 when both are empty.
pub fn mask_iou(x: &[u8], y: &[u8]) -> f64 {
    let (mut i, mut u) = (0u64, 0u64);
    for p in 0..x.len().max(y.len()) {
        let (a, b) = (
            x.get(p).copied().unwrap_or(0),
            y.get(p).copied().unwrap_or(0),
        );
        i += u64::from(a & b);
        u += u64::from(a | b);
    }
    if u == 0 { 1.0 } else { i as f64 / u as f64 }
}

static HEAVY: Mutex<()> = Mutex::new(());

/// One heavy test at a time in this test binary (2 cores shared by the team): hold the guard for
/// the whole test. A lock poisoned by a failed test is taken over.
pub fn one_heavy_run() -> MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `densam args` with `DENSAM_TEST_KILL_AT_FRAME=frame` and asserts that a signal ended it.
#[track_caller]
pub fn killed_at(args: &[String], frame: u64) -> std::process::Output {
    let o = densam(args, &[("DENSAM_TEST_KILL_AT_FRAME", &frame.to_string())]);
    assert_eq!(code(&o), None, "{}", stderr(&o));
    o
}

/// Asserts that `o` ended with exit code `exit` (`None`: by a signal) and that its standard
/// error contains `text`; either failure shows the standard error.
#[track_caller]
pub fn assert_exit_says(o: &std::process::Output, exit: Option<i32>, text: &str) {
    assert_eq!(code(o), exit, "{}", stderr(o));
    assert!(stderr(o).contains(text), "{}", stderr(o));
}

/// A PNG (8-bit grey) whose header declares `w` x `h` pixels but whose data holds almost
/// nothing: a decompression bomb's shape.
pub fn png_declaring(w: u32, h: u32) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = |kind: &[u8; 4], data: &[u8]| {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc32fast::hash(&body).to_be_bytes());
    };
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]);
    chunk(b"IHDR", &ihdr);
    chunk(b"IDAT", &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]);
    chunk(b"IEND", &[]);
    out
}
