//! `densam annotate` against bad options, foreign or damaged state in the output folder and a
//! truncated video, through the binary (issue 14): option values out of range are usage errors
//! (exit 2) before anything is created; another video's result or checkpoint in the folder is
//! refused (exit 4) and left as it was; a damaged checkpoint (bytes changed, cut short) or a
//! damaged partial output is refused (exit 4) with the `--restart` hint, which then works; the
//! frames a truncated mp4's container lists past the file's end are failed frames (exit 7).
//!
//! Fixture: the job clip (tests/common), 12 frames of 160x120, one object prompted on frame 2.
//! A resumable state without the test hooks: a complete run with `--keep-checkpoints` keeps its
//! final checkpoint; with the output moved back to its partial name (and run.json removed) the
//! folder is that of a run stopped after its last frame, which a re-run finishes at once.

mod common;

use common::{
    assert_exit_says, code, densam, names, one_heavy_run, output_of, run_json, stderr, with,
};

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const N: u32 = 12;

fn fixture() -> &'static common::DiscClip {
    static F: OnceLock<common::DiscClip> = OnceLock::new();
    F.get_or_init(|| {
        common::disc_clip(
            N,
            160,
            120,
            r#"{"objects": [{"id": "disc", "label": "disc",
                "prompts": [{"frame": 2, "box": [20, 36, 48, 64]}]}]}"#,
        )
    })
}

/// The clip's annotate arguments, quiet, then `extra`.
fn args(out: &Path, extra: &[&str]) -> Vec<String> {
    with(fixture().args(out, &["--quiet"]), extra)
}

/// A complete run that keeps its final checkpoint (computed once): the output folder.
fn kept() -> &'static Path {
    static K: OnceLock<tempfile::TempDir> = OnceLock::new();
    K.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let o = densam(&args(dir.path(), &["--keep-checkpoints"]), &[]);
        assert_eq!(code(&o), Some(0), "{}", stderr(&o));
        assert_eq!(
            names(dir.path()),
            [
                ".densam-checkpoint",
                "dense_annotations_frames.jsonl",
                "run.json"
            ]
        );
        dir
    })
    .path()
}

/// A copy of [`kept`] as a run stopped after its last frame: the checkpoint and the partial
/// output, nothing else.
fn resumable(at: &Path) -> PathBuf {
    let out = at.join("out");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::copy(
        kept().join(".densam-checkpoint"),
        out.join(".densam-checkpoint"),
    )
    .unwrap();
    std::fs::copy(
        kept().join("dense_annotations_frames.jsonl"),
        out.join(".dense_annotations_frames.jsonl.partial"),
    )
    .unwrap();
    out
}

#[test]
fn option_values_out_of_range_are_usage_errors_before_anything_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["--batch-objects", "0"], "--batch-objects"),
        (&["--reverse-chunk", "0"], "--reverse-chunk"),
        (&["--checkpoint-every", "-1"], "--checkpoint-every"),
        (&["--checkpoint-every", "NaN"], "--checkpoint-every"),
        (&["--max-cond-frames", "0"], "--max-cond-frames"),
        (&["--max-cond-frames", "-2"], "--max-cond-frames"),
        (&["--image-size", "100"], "--image-size"),
        (&["--image-size", "300"], "--image-size"),
        (&["--image-size", "0"], "--image-size"),
        (&["--image-size", "4096"], "--image-size"),
        (&["--track-stride", "0"], "--track-stride"),
        (&["--frame_interval", "0"], "--frame_interval"),
        (&["--video-scale-factor", "0.5"], "--video-scale-factor"),
        (&["--span-margin", "-1"], "--span-margin"),
        (&["--window-duration", "0"], "--window-duration"),
        (&["--window-overlap", "inf"], "--window-overlap"),
    ];
    for (k, (extra, option)) in cases.iter().enumerate() {
        let out = dir.path().join(format!("out{k}"));
        let o = densam(&args(&out, extra), &[]);
        assert_exit_says(&o, Some(2), option);
        assert!(!out.exists(), "{extra:?} created {}", out.display());
    }
}

#[test]
fn another_videos_result_or_checkpoint_is_refused() {
    let _g = one_heavy_run();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let src = kept();
    std::fs::create_dir_all(&out).unwrap();
    for name in names(src) {
        std::fs::copy(src.join(&name), out.join(&name)).unwrap();
    }
    let before: Vec<Vec<u8>> = names(&out)
        .iter()
        .map(|n| std::fs::read(out.join(n)).unwrap())
        .collect();
    let other = |extra: &[&str]| with(args(&out, &["--video-id", "other"]), extra);
    // The same frames under another video id into the folder of video `frames`: refused, with
    // or without --restart, and nothing changes.
    for extra in [&[][..], &["--restart"]] {
        let o = densam(&other(extra), &[]);
        assert_exit_says(&o, Some(4), "another video, `frames`");
        assert!(
            stderr(&o).contains("dense_annotations_frames.jsonl"),
            "{}",
            stderr(&o)
        );
        let now: Vec<Vec<u8>> = names(&out)
            .iter()
            .map(|n| std::fs::read(out.join(n)).unwrap())
            .collect();
        assert_eq!(now, before, "{extra:?} changed the folder");
    }
    // Only the other video's checkpoint left: refused too.
    std::fs::remove_file(out.join("run.json")).unwrap();
    std::fs::remove_file(out.join("dense_annotations_frames.jsonl")).unwrap();
    let o = densam(&other(&[]), &[]);
    assert_exit_says(&o, Some(4), "the checkpoint");
    assert!(stderr(&o).contains("`frames`"), "{}", stderr(&o));
    assert_eq!(names(&out), [".densam-checkpoint"]);
}

/// Damages the resumable state in a folder.
type Damage = dyn Fn(&Path);

fn ckpt_of(out: &Path) -> PathBuf {
    out.join(".densam-checkpoint")
}

fn partial_of(out: &Path) -> PathBuf {
    out.join(".dense_annotations_frames.jsonl.partial")
}

#[test]
fn damaged_checkpoint_or_partial_output_is_refused_with_a_restart_hint() {
    let _g = one_heavy_run();
    let want = output_of(kept(), "frames");
    // Intact: the re-run finishes from the checkpoint, the same bytes.
    let dir = tempfile::tempdir().unwrap();
    let out = resumable(dir.path());
    let o = densam(&args(&out, &["--verbose"]), &[]);
    assert_exit_says(&o, Some(0), "resuming at processed frame 12");
    assert!(output_of(&out, "frames") == want);
    let damages: [(&str, &Damage, &str); 4] = [
        (
            "checkpoint bytes flipped",
            &|out| {
                let mut b = std::fs::read(ckpt_of(out)).unwrap();
                let mid = b.len() / 2;
                for x in &mut b[mid..mid + 4] {
                    *x ^= 0x5a;
                }
                std::fs::write(ckpt_of(out), b).unwrap();
            },
            "checksum mismatch",
        ),
        (
            "checkpoint cut in half",
            &|out| {
                let b = std::fs::read(ckpt_of(out)).unwrap();
                std::fs::write(ckpt_of(out), &b[..b.len() / 2]).unwrap();
            },
            "cut short",
        ),
        (
            "partial output changed",
            &|out| {
                let mut b = std::fs::read(partial_of(out)).unwrap();
                let mid = b.len() / 2;
                b[mid] = if b[mid] == b'1' { b'2' } else { b'1' };
                std::fs::write(partial_of(out), b).unwrap();
            },
            "checksum mismatch",
        ),
        (
            "partial output cut short",
            &|out| {
                let b = std::fs::read(partial_of(out)).unwrap();
                std::fs::write(partial_of(out), &b[..b.len() - 10]).unwrap();
            },
            "the checkpoint needs",
        ),
    ];
    for (what, damage, says) in damages {
        let dir = tempfile::tempdir().unwrap();
        let out = resumable(dir.path());
        damage(&out);
        let ckpt = std::fs::read(ckpt_of(&out)).unwrap();
        let partial = std::fs::read(partial_of(&out)).unwrap();
        let o = densam(&args(&out, &[]), &[]);
        assert_exit_says(&o, Some(4), says);
        assert!(stderr(&o).contains("--restart"), "{what}: {}", stderr(&o));
        // Refused before anything changed.
        assert_eq!(std::fs::read(ckpt_of(&out)).unwrap(), ckpt, "{what}");
        assert_eq!(std::fs::read(partial_of(&out)).unwrap(), partial, "{what}");
        assert!(!out.join("run.json").exists(), "{what}");
        // --restart starts again and ends with the same result.
        let o = densam(&args(&out, &["--restart"]), &[]);
        assert_eq!(code(&o), Some(0), "{what}: {}", stderr(&o));
        assert!(output_of(&out, "frames") == want, "{what}");
        assert_eq!(
            names(&out),
            ["dense_annotations_frames.jsonl", "run.json"],
            "{what}"
        );
    }
}

#[test]
fn frames_missing_from_a_truncated_mp4_are_failed_frames() {
    let _g = one_heavy_run();
    let dir = tempfile::tempdir().unwrap();
    // A faststart mp4 (sample tables up front) of 20 frames, cut at half its size: the container
    // still lists 20 frames, fewer can be read.
    let full = dir.path().join("full.mp4");
    let frames = dir.path().join("frames");
    std::fs::create_dir_all(&frames).unwrap();
    common::write_disc_frames(&frames, 20, 160, 120);
    let made = Command::new("ffmpeg")
        .args(["-loglevel", "error", "-y", "-framerate", "10", "-i"])
        .arg(frames.join("%05d.png"))
        .args(["-c:v", "libx264", "-pix_fmt", "yuv420p", "-g", "4"])
        .args(["-movflags", "+faststart"])
        .arg(&full)
        .status();
    if !made.is_ok_and(|s| s.success()) {
        eprintln!("ffmpeg missing: truncated mp4 test skipped");
        return;
    }
    let bytes = std::fs::read(&full).unwrap();
    let cut = dir.path().join("cut.mp4");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let out = dir.path().join("out");
    let mut a = args(&out, &[]);
    a[2] = cut.display().to_string();
    let o = densam(&a, &[]);
    assert_exit_says(
        &o,
        Some(7),
        "listed by the container past the end of the file",
    );
    let run = run_json(&out);
    assert_eq!(run["status"], "complete");
    let (failed, written) = (
        run["failed_frames"].as_u64().unwrap(),
        run["written_frames"].as_u64().unwrap(),
    );
    assert!(
        failed > 0 && written > 2,
        "{failed} failed, {written} written"
    );
    assert_eq!(failed + written, 20, "every listed frame written or failed");
    let last = run["failures"].as_array().unwrap().last().unwrap()["frames"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last, 19);
    assert!(
        stderr(&o).contains(&format!("{failed} frame(s) could not be decoded")),
        "{}",
        stderr(&o)
    );
    // The finished run re-run: nothing changes, the same exit code.
    let o = densam(&a, &[]);
    assert_eq!(code(&o), Some(7), "{}", stderr(&o));
}

/// `--batch-objects auto` (issue 13) on the CPU: 16, logged and recorded as chosen by `auto`.
/// A re-run with `auto` finds the result complete, also when the recorded number is not the one
/// `auto` would choose now (it takes the recorded one: the masks depend on it); a checkpoint
/// made with `auto` resumes with `auto`; a number instead of `auto` is another parameter
/// (exit 4 naming it).
#[test]
fn batch_objects_auto_is_recorded_and_kept() {
    let _g = one_heavy_run();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let auto = |out: &Path, extra: &[&str]| {
        with(args(out, &["--batch-objects", "auto", "--verbose"]), extra)
    };
    let o = densam(&auto(&out, &["--keep-checkpoints"]), &[]);
    assert_exit_says(&o, Some(0), "objects per batch: 16 (auto: on the CPU: 16)");
    let rj = run_json(&out);
    assert_eq!(rj["params"]["batch_objects"], 16);
    assert_eq!(rj["params"]["batch_objects_auto"], true);
    assert_eq!(rj["options"]["track"]["batch_objects"], "auto");
    // Same bytes as a run with the number (16 either way on the CPU).
    assert!(output_of(&out, "frames") == output_of(kept(), "frames"));
    let o = densam(&auto(&out, &[]), &[]);
    assert_exit_says(&o, Some(0), "nothing to do");
    // A number instead of `auto`: refused, naming the difference.
    let o = densam(&args(&out, &["--batch-objects", "16"]), &[]);
    assert_exit_says(&o, Some(4), "batch_objects_auto: true -> -");
    // A result whose `auto` chose 12: kept by `auto` (which would choose 16 here) ...
    let mut rj = run_json(&out);
    rj["params"]["batch_objects"] = 12.into();
    let text = serde_json::to_string_pretty(&rj).unwrap();
    std::fs::write(out.join("run.json"), text).unwrap();
    let o = densam(&auto(&out, &[]), &[]);
    assert_exit_says(&o, Some(0), "nothing to do");
    // ... and its checkpoint resumes with `auto`, to the same bytes.
    let want = output_of(&out, "frames");
    std::fs::remove_file(out.join("run.json")).unwrap();
    std::fs::rename(out.join("dense_annotations_frames.jsonl"), partial_of(&out)).unwrap();
    let o = densam(&auto(&out, &[]), &[]);
    assert_exit_says(&o, Some(0), "resuming at processed frame 12");
    assert!(output_of(&out, "frames") == want);
}

/// The bytes of every file in a folder, by name.
fn contents(dir: &Path) -> Vec<(String, Vec<u8>)> {
    names(dir)
        .into_iter()
        .map(|n| {
            let b = std::fs::read(dir.join(&n)).unwrap();
            (n, b)
        })
        .collect()
}

#[test]
fn a_second_run_into_a_locked_output_folder_is_refused_touching_nothing() {
    use std::os::fd::AsRawFd;
    let _g = one_heavy_run();
    let dir = tempfile::tempdir().unwrap();
    let out = resumable(dir.path());
    let before = contents(&out);
    // The lock a running `annotate` holds: an exclusive flock on the folder itself.
    let held = std::fs::File::open(&out).unwrap();
    // SAFETY: flock on a descriptor this test owns.
    assert_eq!(
        unsafe { libc::flock(held.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) },
        0
    );
    for extra in [&[][..], &["--restart"]] {
        let o = densam(&args(&out, extra), &[]);
        assert_exit_says(
            &o,
            Some(8),
            "another densam run is using this output folder",
        );
        assert_eq!(contents(&out), before, "{extra:?} changed the folder");
    }
    // Released (as the kernel does when the holder dies): the run goes on and finishes.
    drop(held);
    let o = densam(&args(&out, &[]), &[]);
    assert_eq!(code(&o), Some(0), "{}", stderr(&o));
    assert!(output_of(&out, "frames") == output_of(kept(), "frames"));
}

#[test]
fn video_ids_that_are_paths_are_usage_errors_before_anything_is_created() {
    let dir = tempfile::tempdir().unwrap();
    for (k, bad) in ["..", ".", "../x", "a/b", "a\\b", "a\nb", "-x", ""]
        .iter()
        .enumerate()
    {
        let out = dir.path().join(format!("out{k}"));
        let o = densam(&args(&out, &[&format!("--video-id={bad}")]), &[]);
        assert_exit_says(&o, Some(2), "cannot name a file");
        assert!(!out.exists(), "{bad:?} created {}", out.display());
    }
}

/// On the CPU the masks' last bits depend on libtorch's thread count: it is recorded, and a
/// checkpoint or a finished result of another count is not resumed or kept (the message says
/// which OMP_NUM_THREADS to set); with that count the run goes on as before.
#[test]
fn another_cpu_thread_count_is_refused_with_the_count_to_set() {
    let _g = one_heavy_run();
    let dir = tempfile::tempdir().unwrap();
    let man: serde_json::Value =
        serde_json::from_slice(&std::fs::read(kept().join("run.json")).unwrap()).unwrap();
    assert_eq!(man["params"]["cpu_threads"], 1, "{}", man["params"]);
    // The finished result.
    let done = dir.path().join("done");
    std::fs::create_dir_all(&done).unwrap();
    for name in ["run.json", "dense_annotations_frames.jsonl"] {
        std::fs::copy(kept().join(name), done.join(name)).unwrap();
    }
    let o = densam(&args(&done, &[]), &[("OMP_NUM_THREADS", "2")]);
    assert_exit_says(&o, Some(4), "cpu_threads: 1 -> 2");
    assert!(
        stderr(&o).contains("set OMP_NUM_THREADS=1"),
        "{}",
        stderr(&o)
    );
    let o = densam(&args(&done, &[]), &[]);
    assert_eq!(code(&o), Some(0), "{}", stderr(&o));
    // A checkpoint.
    let out = resumable(dir.path());
    let o = densam(&args(&out, &[]), &[("OMP_NUM_THREADS", "2")]);
    assert_exit_says(&o, Some(4), "set OMP_NUM_THREADS=1");
    let o = densam(&args(&out, &[]), &[]);
    assert_eq!(code(&o), Some(0), "{}", stderr(&o));
    assert_eq!(
        std::fs::read(out.join("dense_annotations_frames.jsonl")).unwrap(),
        std::fs::read(kept().join("dense_annotations_frames.jsonl")).unwrap()
    );
}

/// What a run is checked against identifies content, not path and size: another video of the
/// same size and length at the same path, or other weights of the same byte size at the same
/// path, are other parameters (exit 4, named), never "complete: nothing to do" or a resume.
#[test]
fn swapped_video_or_weights_of_the_same_size_are_other_inputs() {
    let _g = one_heavy_run();
    let fx = fixture();
    let dir = tempfile::tempdir().unwrap();
    let frames = dir.path().join("frames");
    std::fs::create_dir(&frames).unwrap();
    for e in std::fs::read_dir(&fx.frames).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), frames.join(e.file_name())).unwrap();
    }
    let ckpt = dir.path().join("model.pt");
    std::fs::copy(&fx.ckpt, &ckpt).unwrap();
    let out = dir.path().join("out");
    let run = || {
        let a = common::annotate_args(
            &frames,
            &fx.prompts,
            &ckpt,
            &out,
            &[
                "--image-size",
                "256",
                "--device",
                "cpu",
                "--fill-hole-area",
                "0",
                "--quiet",
            ],
        );
        densam(&a, &[])
    };
    let o = run();
    assert_eq!(code(&o), Some(0), "{}", stderr(&o));
    let man: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("run.json")).unwrap()).unwrap();
    assert!(
        man["params"]["video_fingerprint"].is_string(),
        "{}",
        man["params"]
    );
    assert!(
        man["params"]["checkpoint_fnv1a"].is_string(),
        "{}",
        man["params"]
    );
    // Another frame 5 of the same size (another video of the same size and length).
    let f5 = frames.join("00005.png");
    let original = std::fs::read(&f5).unwrap();
    std::fs::copy(frames.join("00006.png"), &f5).unwrap();
    let o = run();
    assert_exit_says(&o, Some(4), "video_fingerprint");
    std::fs::write(&f5, &original).unwrap();
    let o = run();
    assert_eq!(code(&o), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).is_empty() || !stderr(&o).contains("error"),
        "{}",
        stderr(&o)
    );
    // Weights of the same byte size: one byte of the middle of the file changed.
    let mut w = std::fs::read(&ckpt).unwrap();
    let mid = w.len() / 2;
    w[mid] ^= 0x01;
    std::fs::write(&ckpt, &w).unwrap();
    let o = run();
    assert_exit_says(&o, Some(4), "checkpoint_fnv1a");
}
