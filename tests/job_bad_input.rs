//! `densam annotate` against bad options (issue 14), through the binary: option values out of
//! range are usage errors (exit 2) before anything is created.
//!
//! Fixture: the job clip (tests/common), 12 frames of 160x120, one object prompted on frame 2.

mod common;

use common::{assert_exit_says, densam, with};

use std::path::Path;
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
