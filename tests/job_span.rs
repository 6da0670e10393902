//! `densam annotate --span prompts` and HD-EPIC mask prompts, through the binary: each object only
//! within its span (first prompt − margin ..= last prompt + margin), frames with no object in
//! its span neither decoded nor run through the image encoder (run.json counts) but still
//! written (empty `objects`), the masks of an object that reads the same memories equal to
//! `--span video`'s, a span over the whole video equal to `--span video` (bytes), kill / SIGTERM
//! and re-run equal to uninterrupted (with windows, and a refusal of a changed margin), a
//! window-parallel run, `--frame_interval`; HD-EPIC `--hd-epic-prompt mask|both` with missing,
//! wrong-size, empty and undecodable PNGs (warnings naming mask id, file and frame; `--strict`).
//!
//! Fixture: 40 frames (30 fps) of 160x120; `disc` prompted on frame 10, `sq` on frame 30. With
//! `--span-margin 0.1` (3 frames) their spans are 7..=13 and 27..=33; the run order visits the
//! forward head 10..=25, the reverse pass 10..=0 and the rest 26..=39, so the image encoder runs
//! on 2 (pre-pass) + 4 + 4 + 7 = 17 frames instead of 2 + 16 + 11 + 14 = 43.

mod common;

use common::{
    assert_exit_says, code, densam, disc_center, frame_numbers, killed_at, masks_of, one_heavy_run,
    output_of, run_json, stderr, with,
};

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::OnceLock;

const W: u32 = 160;
const H: u32 = 120;
const N: u32 = 40;

type Fixture = common::DiscClip;

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        common::disc_clip(
            N,
            W,
            H,
            r#"{"objects": [
              {"id": "disc", "label": "disc", "prompts": [{"frame": 10, "box": [34, 34, 66, 66]}]},
              {"id": "sq", "label": "square", "prompts": [{"frame": 30, "box": [101, 36, 129, 64]}]}]}"#,
        )
    })
}

/// The clip's annotate arguments for these tests: objects one at a time, quiet.
fn base_args(f: &Fixture, out: &Path) -> Vec<String> {
    f.args(out, &["--batch-objects", "1", "--quiet"])
}

/// [`base_args`] with `--span prompts --span-margin 0.1` (spans 7..=13 and 27..=33), then `extra`.
fn span_args(f: &Fixture, out: &Path, extra: &[&str]) -> Vec<String> {
    let span = with(
        base_args(f, out),
        &["--span", "prompts", "--span-margin", "0.1"],
    );
    with(span, extra)
}

/// Runs to completion (exit 0) and returns the JSONL bytes and run.json.
fn complete(args: &[String], out: &Path, id: &str) -> (Vec<u8>, serde_json::Value) {
    let o = densam(args, &[]);
    assert_eq!(code(&o), Some(0), "{}", stderr(&o));
    (output_of(out, id), run_json(out))
}

/// Per line: (frame number, object ids).
fn lines(bytes: &[u8]) -> Vec<(u64, Vec<String>)> {
    String::from_utf8(bytes.to_vec())
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let ids = v["objects"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| o["id"].as_str().unwrap().to_string())
                .collect();
            (v["frame_number"].as_u64().unwrap(), ids)
        })
        .collect()
}

/// Frames an object appears on.
fn frames_of(bytes: &[u8], id: &str) -> BTreeSet<u64> {
    lines(bytes)
        .into_iter()
        .filter(|(_, ids)| ids.iter().any(|i| i == id))
        .map(|(n, _)| n)
        .collect()
}

/// The default (`--span video`) result, computed once.
fn video_result() -> &'static (Vec<u8>, serde_json::Value) {
    static B: OnceLock<(Vec<u8>, serde_json::Value)> = OnceLock::new();
    B.get_or_init(|| {
        let out = tempfile::tempdir().unwrap();
        complete(&base_args(fixture(), out.path()), out.path(), "frames")
    })
}

/// The `--span prompts --span-margin 0.1` result, computed once.
fn span_result() -> &'static (Vec<u8>, serde_json::Value) {
    static B: OnceLock<(Vec<u8>, serde_json::Value)> = OnceLock::new();
    B.get_or_init(|| {
        let out = tempfile::tempdir().unwrap();
        complete(&span_args(fixture(), out.path(), &[]), out.path(), "frames")
    })
}

#[test]
fn span_prompts_tracks_objects_only_in_their_spans_and_skips_idle_frames() {
    let _g = one_heavy_run();
    let (video, vrun) = video_result();
    let (span, run) = span_result();
    // Every frame still has its line, in order; idle ones list no object.
    let ls = lines(span);
    assert_eq!(
        ls.iter().map(|l| l.0).collect::<Vec<_>>(),
        (0..N as u64).collect::<Vec<_>>()
    );
    assert!(ls[0].1.is_empty() && ls[20].1.is_empty() && ls[39].1.is_empty());
    let disc = frames_of(span, "disc");
    let sq = frames_of(span, "sq");
    assert!(disc.iter().all(|f| (7..=13).contains(f)), "{disc:?}");
    assert!(sq.iter().all(|f| (27..=33).contains(f)), "{sq:?}");
    assert!(disc.contains(&10) && sq.contains(&30));
    // The default tracks both objects over the whole video.
    assert!(frames_of(video, "disc").len() > 20);
    // Idle frames are neither decoded nor encoded.
    assert_eq!(run["span"], "prompts");
    assert_eq!(run["params"]["span"]["margin_frames"], 3);
    assert_eq!(run["active_frames"], 14);
    assert_eq!(run["this_run"]["encoded_frames"], 17, "{}", run["this_run"]);
    assert_eq!(run["this_run"]["decoded_frames"], 17, "{}", run["this_run"]);
    assert_eq!(
        vrun["this_run"]["encoded_frames"], 43,
        "{}",
        vrun["this_run"]
    );
    assert_eq!(vrun["active_frames"], 40);
    assert!(vrun["params"].get("span").is_none());
    let objs = run["objects"].as_array().unwrap();
    assert_eq!(objs[0]["span_frames"], serde_json::json!([7, 13]));
    assert_eq!(objs[1]["span_frames"], serde_json::json!([27, 33]));
    // Where an object reads the same memories in both modes (the forward stretch from its own
    // prompt, before anything outside its span could be read), its masks are the same.
    let (mv, ms) = (masks_of(video), masks_of(span));
    for n in 10..=13u64 {
        let k = (n, "disc".to_string());
        assert_eq!(mv.get(&k), ms.get(&k), "disc on frame {n}");
    }
}

#[test]
fn span_covering_the_video_equals_span_video() {
    let _g = one_heavy_run();
    let f = fixture();
    let (video, _) = video_result();
    let out = tempfile::tempdir().unwrap();
    let args = with(
        base_args(f, out.path()),
        &["--span", "prompts", "--span-margin", "100"],
    );
    let (bytes, run) = complete(&args, out.path(), "frames");
    assert!(
        bytes == *video,
        "a span over the whole video changed the result"
    );
    assert_eq!(run["this_run"]["encoded_frames"], 43);
}

#[test]
#[cfg_attr(
    not(feature = "fault-injection"),
    ignore = "needs the test hooks: --features fault-injection"
)]
fn span_kill_and_sigterm_then_rerun_equals_uninterrupted() {
    let _g = one_heavy_run();
    let f = fixture();
    let (want, _) = span_result();
    let out = tempfile::tempdir().unwrap();
    // Windows of 6 frames and a checkpoint after every frame (idle ones included).
    let args = span_args(
        f,
        out.path(),
        &["--window-duration", "0.2", "--checkpoint-every", "0"],
    );
    // Killed while tracking `sq` (after the checkpoint at frame 30).
    killed_at(&args, 31);
    assert!(out.path().join(".densam-checkpoint").exists());
    // Another margin against the checkpoint: refused.
    let mut other = args.clone();
    let i = other.iter().position(|a| a == "0.1").unwrap();
    other[i] = "0.2".into();
    let o = densam(&other, &[]);
    assert_exit_says(&o, Some(4), "span");
    // Resumed, then stopped by SIGTERM on an idle frame.
    let o = densam(&args, &[("DENSAM_TEST_SIGTERM_AT_FRAME", "36")]);
    assert_eq!(code(&o), Some(75), "{}", stderr(&o));
    assert_eq!(run_json(out.path())["interrupted"]["at"]["Rest"], 37);
    let (bytes, run) = complete(&args, out.path(), "frames");
    assert!(bytes == *want, "resumed output differs");
    assert_eq!(run["windows"].as_array().unwrap().len(), 7);
    // Resumed at 37: only idle frames were left, nothing decoded but the pre-pass.
    assert_eq!(run["this_run"]["resumed_at"]["Rest"], 37);
    assert_eq!(run["this_run"]["encoded_frames"], 2);
}

#[test]
fn span_with_frame_interval_and_window_parallel() {
    let _g = one_heavy_run();
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    // The seed script's --frame_interval 3 (docs/ARCHITECTURE.md §5): processed and written
    // every third frame (and the prompted frames): disc on 9 and 12, sq on 27, 30 and 33 at most.
    let out = dir.path().join("fi");
    let args = span_args(f, &out, &["--frame_interval", "3"]);
    let (bytes, run) = complete(&args, &out, "frames");
    assert_eq!(
        frame_numbers(&bytes),
        (0..N as u64).step_by(3).collect::<Vec<_>>()
    );
    assert!(frames_of(&bytes, "disc").is_subset(&[9, 12].into()));
    assert!(frames_of(&bytes, "sq").is_subset(&[27, 30, 33].into()));
    // processed 0,3,...,39 + 10: active 9,10,12 (disc) and 27,30,33 (sq).
    assert_eq!(run["active_frames"], 6);
    // Window 1 of 2 (frames 20..40, warm-up from 10): spans stay those of the whole video, so
    // disc (7..=13) is never tracked in the window's own frames.
    let out = dir.path().join("w1");
    let args = span_args(
        f,
        &out,
        &[
            "--window-duration",
            "0.6666667",
            "--window-overlap",
            "0.3333334",
            "--window",
            "1",
        ],
    );
    let (bytes, run) = complete(&args, &out, "frames");
    assert_eq!(frame_numbers(&bytes), (20..N as u64).collect::<Vec<_>>());
    assert!(frames_of(&bytes, "disc").is_empty());
    let sq = frames_of(&bytes, "sq");
    assert!(
        sq.contains(&30) && sq.iter().all(|f| (27..=33).contains(f)),
        "{sq:?}"
    );
    assert_eq!(run["active_frames"], 4 + 7);
}

/// A binary PNG of the disc on frame `t` (at `w` x `h`; empty if `empty`).
fn disc_png(path: &Path, t: u32, w: u32, h: u32, empty: bool) {
    let (cx, cy) = disc_center(t);
    image::GrayImage::from_fn(w, h, |x, y| {
        let inside = (x as i32 - cx).pow(2) + (y as i32 - cy).pow(2) < 14 * 14;
        image::Luma([if inside && !empty { 255 } else { 0 }])
    })
    .save(path)
    .unwrap();
}

#[test]
fn hd_epic_mask_prompts() {
    let _g = one_heavy_run();
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let id = "P01-20240202-171220";
    let masks = dir.path().join("masks");
    std::fs::create_dir_all(&masks).unwrap();
    disc_png(&masks.join("m1.png"), 10, W, H, false);
    disc_png(&masks.join("m-empty.png"), 20, W, H, true);
    disc_png(&masks.join("m-small.png"), 12, W / 2, H / 2, false);
    std::fs::write(masks.join("m-bad.png"), b"\x89PNG garbage").unwrap();
    let assoc = serde_json::json!({id: {
        "a1": {"name": "red disc", "tracks": [{"track_id": "t1", "masks": ["m1", "m-empty"]}]},
        "a2": {"name": "green square", "tracks": [{"track_id": "t2",
               "masks": ["m-gone", "m-small", "m-bad"]}]}
    }});
    let info = serde_json::json!({id: {
        "m1": {"frame_number": 10, "bbox": [34.0, 34.0, 66.0, 66.0]},
        "m-empty": {"frame_number": 20, "bbox": [54.0, 36.0, 86.0, 64.0]},
        "m-gone": {"frame_number": 12, "bbox": [101.0, 18.0, 129.0, 46.0]},
        "m-small": {"frame_number": 16, "bbox": [101.0, 22.0, 129.0, 50.0]},
        "m-bad": {"frame_number": 30, "bbox": [101.0, 36.0, 129.0, 64.0]}
    }});
    let a = dir.path().join("assoc_info.json");
    let m = dir.path().join("mask_info.json");
    std::fs::write(&a, serde_json::to_vec(&assoc).unwrap()).unwrap();
    std::fs::write(&m, serde_json::to_vec(&info).unwrap()).unwrap();
    let hd = |out: &Path, extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = ["annotate", "--hd-epic-assoc"].map(String::from).to_vec();
        v.push(a.display().to_string());
        v.extend(["--hd-epic-masks".into(), m.display().to_string()]);
        v.extend(["--video_id".into(), id.into()]);
        v.extend(["--video".into(), f.frames.display().to_string()]);
        v.extend(["--checkpoint".into(), f.ckpt.display().to_string()]);
        v.extend(["--out".into(), out.display().to_string()]);
        v.extend(
            [
                "--image-size",
                "256",
                "--device",
                "cpu",
                "--frame-interval",
                "2",
                "--track-stride",
                "2",
            ]
            .map(String::from),
        );
        with(v, extra)
    };
    let mask_dir = masks.display().to_string();
    // mask: a1 by its PNG on frame 10; every a2 PNG unusable, so a2 is left out.
    let out = dir.path().join("mask");
    let o = densam(
        &hd(
            &out,
            &["--hd-epic-mask-dir", &mask_dir, "--hd-epic-prompt", "mask"],
        ),
        &[],
    );
    assert_eq!(code(&o), Some(0), "{}", stderr(&o));
    let err = stderr(&o);
    for (mid, frame, why) in [
        ("m-empty", 20, "mask is empty"),
        ("m-gone", 12, "m-gone.png"),
        (
            "m-small",
            16,
            "declares 80x60 pixels where 160x120 (the video's) are expected",
        ),
        ("m-bad", 30, "m-bad.png"),
    ] {
        let want = format!("mask `{mid}`, frame {frame}: ");
        let line = err.lines().find(|l| l.contains(&want));
        assert!(
            line.is_some_and(|l| l.contains(why) && l.contains("mask prompt skipped")),
            "{want} {why}:\n{err}"
        );
    }
    assert!(err.contains("association `a2`: no masks, skipped"), "{err}");
    let bytes = output_of(&out, id);
    let run = run_json(&out);
    let objs = run["objects"].as_array().unwrap();
    assert_eq!(objs.len(), 1);
    assert_eq!(objs[0]["id"], "a1");
    assert_eq!(objs[0]["prompted_frames"], serde_json::json!([10]));
    // On its prompted frame the output is the mask given (SAM 2's add_new_mask).
    let got = masks_of(&bytes)
        .remove(&(10, "a1".to_string()))
        .expect("a1 on frame 10");
    let want: Vec<u8> = image::open(masks.join("m1.png"))
        .unwrap()
        .to_luma8()
        .pixels()
        .map(|p| u8::from(p.0[0] > 0))
        .collect();
    let inter = got
        .iter()
        .zip(&want)
        .filter(|(x, y)| **x & **y == 1)
        .count();
    let union = got
        .iter()
        .zip(&want)
        .filter(|(x, y)| (**x | **y) == 1)
        .count();
    assert!(
        inter as f64 / union as f64 > 0.8,
        "IoU {inter}/{union} with the prompt mask"
    );
    // --strict: the PNG problems are errors.
    let o = densam(
        &hd(
            &dir.path().join("strict"),
            &[
                "--hd-epic-mask-dir",
                &mask_dir,
                "--hd-epic-prompt",
                "mask",
                "--strict",
            ],
        ),
        &[],
    );
    assert_exit_says(&o, Some(3), "m-small");
    // both: a1 by mask and box on frame 10 (box alone on 20), a2 by its boxes.
    let out = dir.path().join("both");
    let both = hd(
        &out,
        &["--hd-epic-mask-dir", &mask_dir, "--hd-epic-prompt", "both"],
    );
    let o = densam(&both, &[]);
    assert_eq!(code(&o), Some(0), "{}", stderr(&o));
    let run = run_json(&out);
    let objs = run["objects"].as_array().unwrap();
    assert_eq!(objs.len(), 2);
    assert_eq!(objs[0]["prompted_frames"], serde_json::json!([10, 20]));
    assert_eq!(objs[1]["prompted_frames"], serde_json::json!([12, 16, 30]));
    // A changed PNG changes the prompts hash (a checkpoint or result is not reused).
    let prompts_hash = run["params"]["prompts"].clone();
    disc_png(&masks.join("m1.png"), 11, W, H, false);
    let o = densam(&both, &[]);
    assert_exit_says(&o, Some(4), "prompts");
    assert_ne!(prompts_hash, serde_json::Value::Null);
    // Usage: mask prompts need the folder.
    let o = densam(
        &hd(&dir.path().join("usage"), &["--hd-epic-prompt", "mask"]),
        &[],
    );
    assert_exit_says(&o, Some(2), "--hd-epic-mask-dir");
}
