//! The tracker's side of stop requests and damaged resume state, through the `densam` binary:
//! a frame with 150 objects stops within an object batch of a SIGTERM, in the prompt
//! pre-pass and while tracking (the frame in hand undone, the checkpoint at the stage before it),
//! and the resumed run equals an uninterrupted one byte for byte; a first-stretch spool with
//! changed bytes, or cut short, is refused with exit 4 and a `--restart` hint (never a silently
//! different or unparsable output), and `--restart` then gives the uninterrupted result.

mod common;

use common::{code, densam, names, one_heavy_run, output_of, run_json, stderr, with};

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A running `densam` whose standard error is read line by line as it comes.
struct Live {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
    /// Everything read so far.
    log: String,
}

impl Live {
    fn start(args: &[String]) -> Live {
        let mut child = Command::new(env!("CARGO_BIN_EXE_densam"))
            .args(args)
            .env("OMP_NUM_THREADS", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let err = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Live {
            child,
            lines,
            log: String::new(),
        }
    }

    /// Waits for a line containing `text`; the time it came.
    fn wait_for(&mut self, text: &str) -> Instant {
        self.wait_until(text, |l| l.contains(text))
    }

    /// Waits for a line ending with `text`; the time it came.
    fn wait_for_end(&mut self, text: &str) -> Instant {
        self.wait_until(text, |l| l.ends_with(text))
    }

    fn wait_until(&mut self, what: &str, hit: impl Fn(&str) -> bool) -> Instant {
        loop {
            match self.lines.recv_timeout(Duration::from_secs(300)) {
                Ok(l) => {
                    self.log.push_str(&l);
                    self.log.push('\n');
                    if hit(&l) {
                        return Instant::now();
                    }
                }
                Err(_) => panic!("no line with `{what}`; the run said:\n{}", self.log),
            }
        }
    }

    fn sigterm(&self) {
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
    }

    /// Waits for the exit: the exit code and the rest of standard error.
    fn finish(mut self) -> (Option<i32>, String) {
        let status = self.child.wait().unwrap();
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.log.push_str(&l);
            self.log.push('\n');
        }
        (status.code(), self.log)
    }
}

/// `n` small boxes on frame 0 of a 160x120 clip, one object each, in a grid.
fn many_boxes(n: usize) -> String {
    let objects: Vec<String> = (0..n)
        .map(|k| {
            let (x, y) = (2 + (k % 19) * 8, 2 + (k / 19) * 8 % 112);
            format!(
                r#"{{"id": "b{k}", "prompts": [{{"frame": 0, "box": [{x}, {y}, {}, {}]}}]}}"#,
                x + 6,
                y + 6
            )
        })
        .collect();
    format!(r#"{{"objects": [{}]}}"#, objects.join(",\n"))
}

/// Objects on a prompted frame and on a tracked frame: a SIGTERM stops within an object batch,
/// not after all objects. In the pre-pass nothing can be saved (exit 75, no checkpoint); while
/// tracking frame 1 the frame is undone and the checkpoint taken at the stage before it
/// (`Head: 1`, not `Head: 2`); the resumed run equals the uninterrupted one.
#[test]
fn sigterm_inside_a_frame_with_many_objects() {
    let _g = one_heavy_run();
    let clip = common::disc_clip(2, 160, 120, &many_boxes(150));
    let args = |out: &Path| clip.args(out, &["--verbose", "--checkpoint-every", "1000"]);
    let dir = tempfile::tempdir().unwrap();
    // Uninterrupted, timing the pre-pass of frame 0 and the tracking of frame 1.
    let base = dir.path().join("base");
    let t0 = Instant::now();
    let mut run = Live::start(&args(&base));
    let p0 = run.wait_for("prompt pre-pass: frame 0: ");
    let p1 = run.wait_for_end("prompt pre-pass: frame 0");
    let (c, log) = run.finish();
    assert_eq!(c, Some(0), "{log}");
    let prepass = p1 - p0;
    eprintln!(
        "150 objects, 2 frames: {:.1} s; pre-pass of frame 0 {:.2} s",
        t0.elapsed().as_secs_f64(),
        prepass.as_secs_f64()
    );
    let want = output_of(&base, "frames");

    // 1: SIGTERM in the pre-pass, after the first object of frame 0.
    let out = dir.path().join("out");
    let mut run = Live::start(&args(&out));
    run.wait_for("prompt pre-pass: frame 0: ");
    let sent = Instant::now();
    run.sigterm();
    let (c, log) = run.finish();
    let latency = sent.elapsed();
    eprintln!(
        "pre-pass: stopped {:.2} s after SIGTERM (the frame's objects take {:.2} s)",
        latency.as_secs_f64(),
        prepass.as_secs_f64()
    );
    assert_eq!(c, Some(75), "{log}");
    assert!(
        latency < prepass / 2,
        "the pre-pass went on after SIGTERM for {latency:?} (the frame takes {prepass:?})"
    );
    assert_eq!(run_json(&out)["interrupted"]["at"], "Start");
    assert!(!out.join(".densam-checkpoint").exists());

    // 2: SIGTERM while frame 1's objects are tracked: the checkpoint before frame 1.
    let mut run = Live::start(&args(&out));
    run.wait_for("tracking: frame 1: ");
    run.sigterm();
    let (c, log) = run.finish();
    assert_eq!(c, Some(75), "{log}");
    assert!(log.contains("checkpoint written"), "{log}");
    let man = run_json(&out);
    assert_eq!(man["interrupted"]["at"]["Head"], 1, "{man}");
    assert!(out.join(".densam-checkpoint").exists());

    // 3: resumed there: the uninterrupted result.
    let o = densam(&args(&out), &[]);
    assert_eq!(code(&o), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("forward head at processed frame 1"),
        "{}",
        stderr(&o)
    );
    assert!(output_of(&out, "frames") == want, "resumed output differs");
}

/// Changed bytes inside the first stretch's spool, or a spool cut short: the resume is refused
/// (exit 4, naming the spool, with the `--restart` hint) before anything is written; an intact
/// copy resumes, and `--restart` gives the same result.
#[test]
#[cfg_attr(
    not(feature = "fault-injection"),
    ignore = "needs the test hooks: --features fault-injection"
)]
fn damaged_spool_is_refused_with_a_restart_hint() {
    let _g = one_heavy_run();
    let clip = common::disc_clip(
        40,
        160,
        120,
        r#"{"objects": [
          {"id": "disc", "label": "disc", "prompts": [{"frame": 10, "box": [34, 34, 66, 66]}]},
          {"id": "sq", "label": "square", "prompts": [{"frame": 12, "points": [[115, 32]],
             "labels": [1]}, {"frame": 30, "box": [101, 36, 129, 64]}]}]}"#,
    );
    let dir = tempfile::tempdir().unwrap();
    let args = |out: &Path| clip.args(out, &["--quiet", "--checkpoint-every", "1000"]);
    let out = dir.path().join("out");
    // Stopped in the reverse pass (10 -> 0) at frame 5: checkpoint and spool in the folder.
    let o = densam(&args(&out), &[("DENSAM_TEST_SIGTERM_AT_FRAME", "5")]);
    assert_eq!(code(&o), Some(75), "{}", stderr(&o));
    let spool = out.join(".densam-spool");
    let good = std::fs::read(&spool).unwrap();
    assert!(good.len() > 1000, "{} spool bytes", good.len());
    let copy = |to: &Path| {
        std::fs::create_dir_all(to).unwrap();
        for n in names(&out) {
            std::fs::copy(out.join(&n), to.join(&n)).unwrap();
        }
    };
    let intact = dir.path().join("intact");
    copy(&intact);
    let partial = ".dense_annotations_frames.jsonl.partial";
    let before = std::fs::read(out.join(partial)).unwrap();
    for (what, bytes) in [
        ("changed", {
            let mut b = good.clone();
            let mid = b.len() / 2;
            b[mid..mid + 8].copy_from_slice(b"garbage!");
            b
        }),
        ("cut", good[..good.len() / 2].to_vec()),
    ] {
        std::fs::write(&spool, &bytes).unwrap();
        let o = densam(&args(&out), &[]);
        let e = stderr(&o);
        assert_eq!(code(&o), Some(4), "{what}: {e}");
        assert!(
            e.contains(".densam-spool") && e.contains("--restart"),
            "{what}: {e}"
        );
        if what == "cut" {
            assert!(e.contains("truncated"), "{e}");
        }
        assert!(!out.join("dense_annotations_frames.jsonl").exists());
        assert_eq!(std::fs::read(out.join(partial)).unwrap(), before, "{what}");
        assert!(out.join(".densam-checkpoint").exists(), "{what}");
    }
    // The intact copy resumes; --restart on the damaged one starts again: the same bytes.
    let o = densam(&args(&intact), &[]);
    assert_eq!(code(&o), Some(0), "{}", stderr(&o));
    let o = densam(&with(args(&out), &["--restart"]), &[]);
    assert_eq!(code(&o), Some(0), "{}", stderr(&o));
    assert!(output_of(&out, "frames") == output_of(&intact, "frames"));
    assert_eq!(
        names(&out),
        ["dense_annotations_frames.jsonl", "run.json"],
        "--restart leaves nothing behind"
    );
}
