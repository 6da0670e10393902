//! `densam annotate` as a job, through the binary: kill -9 at several points (forward head,
//! reverse pass, final stretch) then re-run equals an uninterrupted run (bytes), SIGTERM then
//! re-run (also during the checkpoint load, the model load and the prompt pre-pass), re-running a
//! finished run, parameter-change refusal and --restart, windows as checkpoint units (results
//! identical), undecodable frames (skipped, re-seeded, reported; --strict stops), a full disk,
//! HD-EPIC input with both releases' field names and bad entries (warnings, --strict), the seed
//! script's flag names (docs/ARCHITECTURE.md §5), and the error paths with their exit codes.
//!
//! Test hooks of the binary (src/job/fault.rs, built with `--features fault-injection`; the tests
//! that need them are ignored without it): `DENSAM_TEST_KILL_AT_FRAME=N` raises SIGKILL when frame
//! N has been tracked (before the checkpoint after it), `DENSAM_TEST_SIGTERM_AT_FRAME=N` raises
//! SIGTERM there, `DENSAM_TEST_SIGTERM_AT=start|checkpoint-load|model-load|prepass` raises SIGTERM
//! at that point of the start-up.

mod common;

use common::{
    assert_exit_says, code, densam, frame_numbers, killed_at, mask_iou, masks_of, names,
    one_heavy_run, output_of, run_json, stderr, with,
};

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const W: u32 = 160;
const H: u32 = 120;
const N: u32 = 40;

/// The job clip and, next to it, an HD-EPIC root made of its frames.
struct Fixture {
    clip: common::DiscClip,
    root: PathBuf,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let clip = common::disc_clip(
            N,
            W,
            H,
            r#"{"objects": [
              {"id": "disc", "label": "disc", "prompts": [{"frame": 10, "box": [34, 34, 66, 66]}]},
              {"id": "sq", "label": "square", "prompts": [
                 {"frame": 12, "points": [[115, 32]], "labels": [1]},
                 {"frame": 30, "box": [101, 36, 129, 64]}]}]}"#,
        );
        // An HD-EPIC layout: ROOT/P01/P01-20240202-171220.mp4 (if ffmpeg is there).
        let root = clip.dir.path().join("videos");
        std::fs::create_dir_all(root.join("P01")).unwrap();
        let _ = Command::new("ffmpeg")
            .args(["-loglevel", "error", "-y", "-framerate", "30", "-i"])
            .arg(clip.frames.join("%05d.png"))
            .args(["-c:v", "libx264", "-pix_fmt", "yuv420p", "-g", "8"])
            .arg(root.join("P01/P01-20240202-171220.mp4"))
            .status();
        Fixture { clip, root }
    })
}

/// The clip's annotate arguments for these tests, quiet.
fn base_args(f: &Fixture, out: &Path) -> Vec<String> {
    f.clip.args(out, &["--quiet"])
}

/// The uninterrupted result (computed once).
fn baseline() -> &'static Vec<u8> {
    static B: OnceLock<Vec<u8>> = OnceLock::new();
    B.get_or_init(|| {
        let f = fixture();
        let out = tempfile::tempdir().unwrap();
        let o = densam(&base_args(f, out.path()), &[]);
        assert_eq!(code(&o), Some(0), "{}", stderr(&o));
        let b = output_of(out.path(), "frames");
        // Exactly the output, run.json and nothing else.
        assert_eq!(
            names(out.path()),
            ["dense_annotations_frames.jsonl", "run.json"]
        );
        let text = String::from_utf8(b.clone()).unwrap();
        assert_eq!(text.lines().count(), N as usize);
        let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(first["video_id"], "frames");
        assert_eq!(first["frame_number"], 0);
        b
    })
}

#[test]
#[cfg_attr(
    not(feature = "fault-injection"),
    ignore = "needs the test hooks: --features fault-injection"
)]
fn kill_then_rerun_equals_uninterrupted() {
    let _g = one_heavy_run();
    let f = fixture();
    let want = baseline();
    let out = tempfile::tempdir().unwrap();
    // Windows of 10 frames (1/3 s at 30 fps): checkpoints after the reverse pass (frame 26) and at
    // frames 30 and 40; none by time.
    let args = with(
        base_args(f, out.path()),
        &[
            "--window-duration",
            "0.3333334",
            "--checkpoint-every",
            "1000",
        ],
    );
    // 1: killed inside the first stretch (forward head): no resume point yet.
    killed_at(&args, 20);
    assert!(!out.path().join(".densam-checkpoint").exists());
    // 2: starts again; killed at frame 33, after the checkpoint at 30 with lines written past it.
    killed_at(&args, 33);
    assert!(out.path().join(".densam-checkpoint").exists());
    let partial = out.path().join(".dense_annotations_frames.jsonl.partial");
    let plines = std::fs::read_to_string(&partial).unwrap().lines().count();
    assert_eq!(plines, 34, "lines 0..=33 written before the kill");
    // 3: resumes at frame 30 (truncating 30..=33) and finishes.
    let o = densam(&with(args.clone(), &["--verbose"]), &[]);
    assert_exit_says(&o, Some(0), "resuming at processed frame 30");
    assert!(
        output_of(out.path(), "frames") == *want,
        "resumed output differs"
    );
    assert!(!out.path().join(".densam-checkpoint").exists());
    assert!(!partial.exists());
    let run = run_json(out.path());
    assert_eq!(run["status"], "complete");
    let windows = run["windows"].as_array().unwrap();
    assert_eq!(windows.len(), 4, "{windows:?}");
    assert_eq!(windows[3]["first_frame"], 30);
    assert_eq!(windows[3]["last_frame"], 39);
    // 4: a finished run re-run exits 0 and changes nothing.
    let before = std::fs::read(out.path().join("run.json")).unwrap();
    let o = densam(&args, &[]);
    assert_eq!(code(&o), Some(0), "{}", stderr(&o));
    assert_eq!(std::fs::read(out.path().join("run.json")).unwrap(), before);
    assert!(output_of(out.path(), "frames") == *want);
    // 5: other parameters against the finished result: refusal; --restart replaces it.
    let changed = with(args.clone(), &["--max-cond-frames", "1"]);
    let o = densam(&changed, &[]);
    assert_exit_says(&o, Some(4), "max_cond_frames");
    assert!(
        output_of(out.path(), "frames") == *want,
        "refusal changed the output"
    );
}

#[test]
#[cfg_attr(
    not(feature = "fault-injection"),
    ignore = "needs the test hooks: --features fault-injection"
)]
fn sigterm_checkpoints_and_rerun_equals_uninterrupted() {
    let _g = one_heavy_run();
    let f = fixture();
    let want = baseline();
    let out = tempfile::tempdir().unwrap();
    let args = with(base_args(f, out.path()), &["--checkpoint-every", "1000"]);
    let o = densam(&args, &[("DENSAM_TEST_SIGTERM_AT_FRAME", "35")]);
    assert_eq!(code(&o), Some(75), "{}", stderr(&o));
    let run = run_json(out.path());
    assert_eq!(run["status"], "interrupted");
    assert_eq!(run["interrupted"]["signal"], "SIGTERM");
    assert_eq!(run["interrupted"]["at"]["Rest"], 36);
    // Changed parameters against the checkpoint: refusal, the checkpoint stays.
    let o = densam(&with(args.clone(), &["--track-stride", "2"]), &[]);
    assert_exit_says(&o, Some(4), "track_stride");
    assert!(out.path().join(".densam-checkpoint").exists());
    // SIGTERM while the checkpoint, the model or the prompts load: exit 75 at once, the checkpoint
    // untouched, the output cut to it at most.
    let ckpt = std::fs::read(out.path().join(".densam-checkpoint")).unwrap();
    let partial = out.path().join(".dense_annotations_frames.jsonl.partial");
    let before = std::fs::read(&partial).unwrap();
    for point in ["checkpoint-load", "model-load", "prepass"] {
        let o = densam(&args, &[("DENSAM_TEST_SIGTERM_AT", point)]);
        assert_eq!(code(&o), Some(75), "{point}: {}", stderr(&o));
        assert_eq!(
            std::fs::read(out.path().join(".densam-checkpoint")).unwrap(),
            ckpt,
            "{point}"
        );
        let now = std::fs::read(&partial).unwrap();
        assert!(before.starts_with(&now) && now.ends_with(b"\n"), "{point}");
    }
    // Same command: resumes at 36 and ends identical; --keep-checkpoints keeps it.
    let o = densam(&with(args.clone(), &["--keep-checkpoints"]), &[]);
    assert_eq!(code(&o), Some(0), "{}", stderr(&o));
    assert!(output_of(out.path(), "frames") == *want);
    assert!(out.path().join(".densam-checkpoint").exists());
}

#[test]
#[cfg_attr(
    not(feature = "fault-injection"),
    ignore = "needs the test hooks: --features fault-injection"
)]
fn sigterm_in_reverse_pass_checkpoints_there() {
    let _g = one_heavy_run();
    let f = fixture();
    let want = baseline();
    let out = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let tmpdir = tmp.path().display().to_string();
    let args = with(base_args(f, out.path()), &["--checkpoint-every", "1000"]);
    // Frame 5 is tracked by the reverse pass (10 -> 0): the stop checkpoints there, with the
    // spool of the first stretch in the output folder (nothing in TMPDIR).
    let o = densam(
        &args,
        &[("DENSAM_TEST_SIGTERM_AT_FRAME", "5"), ("TMPDIR", &tmpdir)],
    );
    assert_exit_says(&o, Some(75), "checkpoint written");
    let run = run_json(out.path());
    assert_eq!(run["interrupted"]["at"]["Reverse"], 5);
    assert!(out.path().join(".densam-checkpoint").exists());
    assert!(out.path().join(".densam-spool").exists());
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
    let o = densam(&with(args, &["--verbose"]), &[("TMPDIR", &tmpdir)]);
    assert_exit_says(&o, Some(0), "reverse pass below processed frame 5");
    assert!(output_of(out.path(), "frames") == *want);
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        0,
        "temp files left"
    );
    assert_eq!(
        names(out.path()),
        ["dense_annotations_frames.jsonl", "run.json"]
    );
}

#[test]
#[cfg_attr(
    not(feature = "fault-injection"),
    ignore = "needs the test hooks: --features fault-injection"
)]
fn kill_in_first_stretch_resumes_there() {
    let _g = one_heavy_run();
    let f = fixture();
    let want = baseline();
    let out = tempfile::tempdir().unwrap();
    // A checkpoint after every frame.
    let args = with(
        base_args(f, out.path()),
        &["--checkpoint-every", "0", "--verbose"],
    );
    // 1: killed in the forward head (frames 10..=25) when frame 18 is tracked: the checkpoint
    // after frame 17 holds the banks and the spool's length.
    killed_at(&args, 18);
    assert!(out.path().join(".densam-spool").exists());
    // 2: resumes in the head, killed in the reverse pass (9 -> 0) at frame 4.
    let o = densam(&args, &[("DENSAM_TEST_KILL_AT_FRAME", "4")]);
    assert_exit_says(&o, None, "forward head at processed frame 18");
    // 3: resumes in the reverse pass below 5 and finishes identical.
    let o = densam(&args, &[]);
    assert_exit_says(&o, Some(0), "reverse pass below processed frame 5");
    assert!(output_of(out.path(), "frames") == *want);
    assert_eq!(
        names(out.path()),
        ["dense_annotations_frames.jsonl", "run.json"]
    );
}

/// A copy of the fixture's frames with frames 3 (reverse pass) and 33, 34 (final stretch)
/// truncated: deterministic decode failures.
fn bad_frames(dir: &Path) -> PathBuf {
    let f = fixture();
    let bad = dir.join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    for t in 0..N {
        let name = format!("{t:05}.png");
        let bytes = std::fs::read(f.clip.frames.join(&name)).unwrap();
        let keep = if [3, 33, 34].contains(&t) {
            200
        } else {
            bytes.len()
        };
        std::fs::write(bad.join(&name), &bytes[..keep]).unwrap();
    }
    bad
}

/// Output lines by frame number.
fn lines_by_frame(bytes: &[u8]) -> std::collections::BTreeMap<u64, String> {
    String::from_utf8(bytes.to_vec())
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["frame_number"].as_u64().unwrap(), l.to_string())
        })
        .collect()
}

#[test]
fn undecodable_frames_are_skipped_reseeded_and_reported() {
    let _g = one_heavy_run();
    let f = fixture();
    let want = lines_by_frame(baseline());
    let dir = tempfile::tempdir().unwrap();
    let bad = bad_frames(dir.path());
    let args_for = |out: &Path, every: &str| {
        let mut a = base_args(f, out);
        a[2] = bad.display().to_string();
        with(a, &["--video-id", "frames", "--checkpoint-every", every])
    };
    let out = dir.path().join("out");
    let o = densam(&args_for(&out, "1000"), &[]);
    assert_exit_says(&o, Some(7), "3 frame(s) could not be decoded: 3, 33, 34");
    let got_bytes = output_of(&out, "frames");
    let got = lines_by_frame(&got_bytes);
    let frames: Vec<u64> = got.keys().copied().collect();
    let expect: Vec<u64> = (0..N as u64).filter(|n| ![3, 33, 34].contains(n)).collect();
    assert_eq!(frames, expect, "the failed frames' lines are missing");
    // Up to the bad frames each pass is as without them (reverse 10 -> 4, forward 10 -> 32).
    for n in 4..=32 {
        assert_eq!(got[&n], want[&n], "frame {n}");
    }
    let run = run_json(&out);
    assert_eq!(run["status"], "complete");
    assert_eq!(run["failed_frames"], 3);
    assert_eq!(run["failures"][0]["frames"], serde_json::json!([3, 33, 34]));
    assert!(
        run["failures"][0]["errors"][0]
            .as_str()
            .unwrap()
            .contains("00003.png")
    );
    // Re-run of the finished run: nothing changes, the same exit code.
    let o = densam(&args_for(&out, "1000"), &[]);
    assert_eq!(code(&o), Some(7), "{}", stderr(&o));
    // Killed after a failure in the reverse pass, then after the ones of the final stretch:
    // the resumed run gives the same bytes and the same failures (with the test hooks).
    if cfg!(feature = "fault-injection") {
        let out2 = dir.path().join("out2");
        let a2 = args_for(&out2, "0");
        for kill in [1, 36] {
            killed_at(&a2, kill);
        }
        let o = densam(&a2, &[]);
        assert_eq!(code(&o), Some(7), "{}", stderr(&o));
        assert!(output_of(&out2, "frames") == got_bytes);
        let run2 = run_json(&out2);
        assert_eq!(run2["failures"], run["failures"]);
    }
    // --strict: the first bad frame (3, in the reverse pass) stops the run (exit 3).
    let out3 = dir.path().join("out3");
    let o = densam(&with(args_for(&out3, "1000"), &["--strict"]), &[]);
    assert_exit_says(&o, Some(3), "frame 3 is corrupt");
    assert!(!out3.join("dense_annotations_frames.jsonl").exists());
}

/// Runs `script` (sh) in a private mount namespace as mapped root, if this system allows it.
fn in_mount_namespace(script: &str, args: &[String]) -> Option<std::process::ExitStatus> {
    let probe = Command::new("unshare")
        .args([
            "-rm",
            "sh",
            "-c",
            r#"d=$(mktemp -d) || exit 1; mount -t tmpfs tmpfs "$d" && umount "$d"; r=$?; rmdir "$d"; exit $r"#,
        ])
        .output()
        .ok()?;
    if !probe.status.success() {
        return None;
    }
    Command::new("unshare")
        .args(["-rm", "sh", "-c", script, "sh"])
        .args(args)
        .env("OMP_NUM_THREADS", "1")
        .status()
        .ok()
}

#[test]
fn disk_full_is_a_clear_error_and_resume_works() {
    let _g = one_heavy_run();
    let f = fixture();
    let want = baseline();
    let dir = tempfile::tempdir().unwrap();
    let (out, real) = (dir.path().join("out"), dir.path().join("real"));
    std::fs::create_dir_all(&out).unwrap();
    std::fs::create_dir_all(&real).unwrap();
    let mut args = base_args(f, &out);
    args.extend(["--checkpoint-every".into(), "1000".into()]);
    let out_at = args.iter().position(|a| a == "--out").unwrap();
    args.drain(out_at..out_at + 2);
    // A real full disk: a 1.6 MB tmpfs on the output folder holds the first checkpoint (after
    // the first stretch, ~1.1 MB) but not the temporary copy of the final one; then the tmpfs
    // is grown ("space is back") and the same command resumes.
    let script = r#"out=$1; real=$2; shift 2
        mount -t tmpfs -o size=1600k tmpfs "$out" || exit 99
        "$@" --out "$out" 2> "$real/err1"; echo $? > "$real/rc1"
        cp -a "$out" "$real/after1"
        mount -o remount,size=64m tmpfs "$out" || exit 98
        "$@" --out "$out" 2> "$real/err2"; echo $? > "$real/rc2"
        cp -a "$out" "$real/after2""#;
    let mut sargs = vec![out.display().to_string(), real.display().to_string()];
    sargs.push(env!("CARGO_BIN_EXE_densam").to_string());
    sargs.extend(args.iter().cloned());
    let read = |p: &str| std::fs::read_to_string(real.join(p)).unwrap_or_default();
    match in_mount_namespace(script, &sargs) {
        Some(st) => {
            eprintln!("disk full: a real tmpfs (user + mount namespace)");
            assert!(st.success(), "{st:?}");
            assert_eq!(read("rc1").trim(), "5", "{}", read("err1"));
            let err = read("err1");
            assert!(
                err.contains("No space left on device") && err.contains("disk is full"),
                "{err}"
            );
            // The checkpoint and the output up to it intact, no temporary files.
            let after1 = real.join("after1");
            assert_eq!(
                names(&after1),
                [
                    ".densam-checkpoint",
                    ".dense_annotations_frames.jsonl.partial",
                    "run.json"
                ]
            );
            let run = run_json(&after1);
            assert_eq!(run["status"], "failed");
            assert_eq!(read("rc2").trim(), "0", "{}", read("err2"));
            assert!(output_of(&real.join("after2"), "frames") == *want);
            assert_eq!(
                names(&real.join("after2")),
                ["dense_annotations_frames.jsonl", "run.json"]
            );
        }
        None => {
            // No mount namespace here: RLIMIT_FSIZE (SIGXFSZ ignored) makes writes past 1 MB fail
            // with EFBIG through the same write-error path; the first checkpoint (~1.1 MB) fails.
            eprintln!("disk full: simulated with RLIMIT_FSIZE (no mount namespace)");
            use std::os::unix::process::CommandExt;
            let mut a = args.clone();
            a.extend(["--out".into(), out.display().to_string()]);
            let mut c = Command::new(env!("CARGO_BIN_EXE_densam"));
            c.args(&a).env("OMP_NUM_THREADS", "1");
            // SAFETY: only async-signal-safe calls between fork and exec.
            unsafe {
                c.pre_exec(|| {
                    let lim = libc::rlimit {
                        rlim_cur: 1 << 20,
                        rlim_max: libc::RLIM_INFINITY,
                    };
                    libc::setrlimit(libc::RLIMIT_FSIZE, &lim);
                    libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                    Ok(())
                });
            }
            let o = c.output().unwrap();
            assert_exit_says(&o, Some(5), "disk is full");
            assert!(!out.join(".densam-checkpoint.tmp").exists());
            let o = densam(&a, &[]);
            assert_eq!(code(&o), Some(0), "{}", stderr(&o));
            assert!(output_of(&out, "frames") == *want);
        }
    }
}

#[test]
fn windows_and_frequent_checkpoints_change_nothing() {
    let _g = one_heavy_run();
    let f = fixture();
    let want = baseline();
    let out = tempfile::tempdir().unwrap();
    let args = with(
        base_args(f, out.path()),
        &[
            "--window_duration",
            "0.2",
            "--window_overlap",
            "0.1",
            "--checkpoint-every",
            "0",
        ],
    );
    let o = densam(&args, &[]);
    assert_eq!(code(&o), Some(0), "{}", stderr(&o));
    assert!(output_of(out.path(), "frames") == *want);
    let run = run_json(out.path());
    assert_eq!(run["windows"].as_array().unwrap().len(), 7);
    assert!(run["peak_rss_bytes"].as_u64().unwrap() > 0);
    // The seed script's --video_scale_factor: model input from frames downscaled by 2, outputs in
    // original pixels.
    let out2 = tempfile::tempdir().unwrap();
    let args = with(
        base_args(f, out2.path()),
        &["--video_scale_factor", "2", "--frame_interval", "4"],
    );
    let o = densam(&args, &[]);
    assert_eq!(code(&o), Some(0), "{}", stderr(&o));
    let text = String::from_utf8(output_of(out2.path(), "frames")).unwrap();
    assert_eq!(text.lines().count(), 10);
    let mut objects = 0;
    for l in text.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        for o in v["objects"].as_array().unwrap() {
            assert_eq!(o["segmentation"]["size"], serde_json::json!([H, W]));
            objects += 1;
        }
    }
    assert!(objects > 0);
}

fn hd_epic_files(dir: &Path, old_names: bool) -> (PathBuf, PathBuf) {
    let masks_key = if old_names { "all_frames" } else { "masks" };
    let assoc = serde_json::json!({
        "P01-20240202-171220": {
            "a1": {"name": "red disc", "tracks": [{"track_id": "t1", "time_segment": [0.3, 0.4],
                   masks_key: ["m1", "m-missing"]}]},
            "a2": {"name": "green square", "tracks": [{"track_id": "t2", masks_key: ["m2", "m3"]}]},
            "a3": {"name": "nothing", "tracks": [{"track_id": "t3", masks_key: []}]},
            "a4": {"name": "late", "tracks": [{"track_id": "t4", masks_key: ["m4"]}]},
        },
        "P01-20240202-171221": {},
        "P02-20240301-000000": {}
    });
    let info = serde_json::json!({"P01-20240202-171220": {
        "m1": {"frame_number": 10, "bbox": [34.0, 34.0, 66.0, 66.0], "fixture": null},
        "m2": {"frame_number": 12, "bbox": [101.0, 18.0, 129.0, 46.0]},
        "m3": {"frame_number": 30, "bbox": [101.0, 36.0, 140.0, 64.0]},
        "m4": {"frame_number": 400, "bbox": [1.0, 1.0, 10.0, 10.0]}
    }});
    let a = dir.join("assoc_info.json");
    let m = dir.join(if old_names {
        "frame_info.json"
    } else {
        "mask_info.json"
    });
    std::fs::write(&a, serde_json::to_vec_pretty(&assoc).unwrap()).unwrap();
    std::fs::write(&m, serde_json::to_vec_pretty(&info).unwrap()).unwrap();
    (a, m)
}

fn hd_args(f: &Fixture, a: &Path, m: &Path, out: &Path, id: &str) -> Vec<String> {
    let mut v: Vec<String> = ["annotate", "--hd-epic-assoc"].map(String::from).to_vec();
    v.push(a.display().to_string());
    v.extend(["--hd-epic-masks".into(), m.display().to_string()]);
    v.extend(["--video_id".into(), id.into()]);
    v.extend(["--video_path".into(), f.root.display().to_string()]);
    v.extend(["--checkpoint".into(), f.clip.ckpt.display().to_string()]);
    v.extend(["--out".into(), out.display().to_string()]);
    v.extend(
        [
            "--image-size",
            "256",
            "--device",
            "cpu",
            "--quiet",
            "--frame_interval",
            "3",
        ]
        .map(String::from),
    );
    v
}

#[test]
fn hd_epic_input_seed_flags_warnings_and_strict() {
    let _g = one_heavy_run();
    let f = fixture();
    if !f.root.join("P01/P01-20240202-171220.mp4").exists() {
        eprintln!("ffmpeg missing: HD-EPIC video test skipped");
        return;
    }
    let id = "P01-20240202-171220";
    for old in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let (a, m) = hd_epic_files(dir.path(), old);
        let out = dir.path().join("out");
        let o = densam(&hd_args(f, &a, &m, &out, id), &[]);
        assert_eq!(code(&o), Some(0), "{}", stderr(&o));
        let err = stderr(&o);
        for w in [
            "m-missing",
            "association `a3`: no boxes",
            "`a4`",
            "frame 400",
        ] {
            assert!(err.contains(w), "warning {w:?} missing in:\n{err}");
        }
        let text = String::from_utf8(output_of(&out, id)).unwrap();
        // --frame_interval 3: every third frame, processed and written.
        let frames = frame_numbers(text.as_bytes());
        assert_eq!(frames, (0..N as u64).step_by(3).collect::<Vec<_>>());
        let run = run_json(&out);
        assert_eq!(run["params"]["track_stride"], 3);
        assert!(run["warnings"].as_array().unwrap().len() >= 3);
        let mut seen = std::collections::BTreeSet::new();
        for l in text.lines() {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["video_id"], id);
            for o in v["objects"].as_array().unwrap() {
                assert_eq!(o["assoc_id"], o["id"]);
                assert_eq!(o["assoc_name"], o["label"]);
                seen.insert(o["id"].as_str().unwrap().to_string());
            }
        }
        assert!(seen.iter().all(|s| s == "a1" || s == "a2"), "{seen:?}");
        // --strict: the same warnings are errors (exit 3), nothing written.
        let out2 = dir.path().join("out2");
        let o = densam(&with(hd_args(f, &a, &m, &out2, id), &["--strict"]), &[]);
        assert_eq!(code(&o), Some(3), "{}", stderr(&o));
        assert!(!out2.join(format!("dense_annotations_{id}.jsonl")).exists());
    }
}

#[test]
fn error_paths_have_documented_exit_codes() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let (a, m) = hd_epic_files(dir.path(), false);
    let out = dir.path().join("out");
    // Unknown video id: near matches listed.
    let o = densam(&hd_args(f, &a, &m, &out, "P01-20240202-171229"), &[]);
    assert_exit_says(&o, Some(3), "P01-20240202-171220");
    // Malformed JSON: file, line and column.
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{\n  \"P01-x\": {\n    \"a1\": [1, 2,,]\n}").unwrap();
    let o = densam(&hd_args(f, &bad, &m, &out, "P01-x"), &[]);
    assert_exit_says(&o, Some(3), "bad.json:3:");
    // Missing video.
    let mut args = base_args(f, &out);
    args[2] = dir.path().join("nope.mp4").display().to_string();
    let o = densam(&args, &[]);
    assert_eq!(code(&o), Some(3), "{}", stderr(&o));
    // Output folder not writable (a file in the way).
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, b"x").unwrap();
    let o = densam(&base_args(f, &blocker.join("sub")), &[]);
    assert_eq!(code(&o), Some(5), "{}", stderr(&o));
    // Missing model checkpoint.
    let mut args = base_args(f, &out);
    args[6] = dir.path().join("none.pt").display().to_string();
    let o = densam(&args, &[]);
    assert_eq!(code(&o), Some(6), "{}", stderr(&o));
    // A corrupt job checkpoint: refusal naming --restart.
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join(".densam-checkpoint"), b"garbage").unwrap();
    let o = densam(&base_args(f, &out), &[]);
    assert_exit_says(&o, Some(4), "--restart");
}

/// (min, mean, count) of the mask IoU over object-frames with a mask in either result, for
/// frames in `frames`.
fn iou_stats(a: &[u8], b: &[u8], frames: std::ops::Range<u64>) -> (f64, f64, usize) {
    let (ma, mb) = (masks_of(a), masks_of(b));
    let mut keys: Vec<&(u64, String)> = ma.keys().chain(mb.keys()).collect();
    keys.sort();
    keys.dedup();
    let (mut min, mut sum, mut n) = (1.0f64, 0.0, 0usize);
    for k in keys.into_iter().filter(|k| frames.contains(&k.0)) {
        let empty = Vec::new();
        let (x, y) = (ma.get(k).unwrap_or(&empty), mb.get(k).unwrap_or(&empty));
        let iou = mask_iou(x, y);
        min = min.min(iou);
        sum += iou;
        n += 1;
    }
    (min, sum / n.max(1) as f64, n)
}

#[test]
fn window_parallel_merge_vs_sequential() {
    let _g = one_heavy_run();
    let f = fixture();
    let want = baseline();
    let dir = tempfile::tempdir().unwrap();
    // Windows of 20 frames, 10 frames of overlap: window 1 warms up over frames 10..20.
    let mut parts = Vec::new();
    for k in [1, 0] {
        let out = dir.path().join(format!("w{k}"));
        let args = with(
            base_args(f, &out),
            &[
                "--window-duration",
                "0.6666667",
                "--window-overlap",
                "0.3333334",
                "--window",
                &k.to_string(),
            ],
        );
        let o = densam(&args, &[]);
        assert_eq!(code(&o), Some(0), "{}", stderr(&o));
        let frames = frame_numbers(&output_of(&out, "frames"));
        assert_eq!(frames, (20 * k..20 * k + 20).collect::<Vec<_>>());
        parts.push(out.display().to_string());
    }
    let merged = dir.path().join("merged.jsonl");
    let mut args: Vec<String> = vec!["merge".into()];
    args.extend(parts.iter().cloned());
    args.extend(["--out".into(), merged.display().to_string()]);
    let o = densam(&args, &[]);
    assert_eq!(code(&o), Some(0), "{}", stderr(&o));
    let m = std::fs::read(&merged).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&m).lines().count(),
        N as usize,
        "one line per frame"
    );
    let (min0, mean0, n0) = iou_stats(&m, want, 0..20);
    let (min1, mean1, n1) = iou_stats(&m, want, 20..40);
    eprintln!(
        "window-parallel vs sequential mask IoU: window 0 (no warm-up; misses the prompt at 30): \
         min {min0:.4} mean {mean0:.4} over {n0} object-frames; window 1 (after a 10-frame \
         overlap): min {min1:.4} mean {mean1:.4} over {n1}"
    );
    assert!(n1 > 0);
    // Overlapping parts are refused.
    let mut bad: Vec<String> = vec!["merge".into(), parts[0].clone(), parts[0].clone()];
    bad.extend([
        "--out".into(),
        dir.path().join("x.jsonl").display().to_string(),
    ]);
    assert_eq!(code(&densam(&bad, &[])), Some(3));
}
