//! `densam review` against injected defects: synthetic result files (two discs moving smoothly
//! over 300 frames) with a mask that vanishes, an area jump, fragments, a shifted box, low
//! predicted IoUs and a swap of the two objects give the flags expected, with their primary
//! reasons (precision and recall printed, both 1 here); a clean track gives none; the report
//! files are written whole; a malformed result is an input error naming its line.

mod common;

use std::path::Path;

use densam::mask::Rle;
use densam::output::jsonl::{FrameRecord, ObjectRecord};
use densam::review::{Reason, Thresholds, review_file};

const W: u32 = 320;
const H: u32 = 240;
const FRAMES: u64 = 300;

/// One object's drawing on a frame: discs (centre, radius) and its predicted IoU.
struct Draw {
    discs: Vec<(f64, f64, f64)>,
    iou: f32,
}

fn record(id: &str, d: &Draw) -> Option<ObjectRecord> {
    let mut m = vec![0u8; (W * H) as usize];
    for &(cx, cy, r) in &d.discs {
        for y in 0..H {
            for x in 0..W {
                let (dx, dy) = (x as f64 - cx, y as f64 - cy);
                if dx * dx + dy * dy <= r * r {
                    m[(y * W + x) as usize] = 1;
                }
            }
        }
    }
    let rle = Rle::encode_row_major(&m, H, W).unwrap();
    ObjectRecord::from_rle(id, "disc", &rle, 0.99, d.iou)
}

/// The clean positions: `a` moves right, `b` moves down.
fn clean(id: &str, f: u64) -> (f64, f64) {
    let t = f as f64;
    match id {
        "a" => (40.0 + 0.8 * t, 80.0),
        _ => (240.0, 30.0 + 0.5 * t),
    }
}

/// An injected defect: object, frames (inclusive) and the reason expected first.
struct Defect {
    object: &'static str,
    first: u64,
    last: u64,
    reason: Reason,
}

const DEFECTS: &[Defect] = &[
    Defect {
        object: "a",
        first: 40,
        last: 59,
        reason: Reason::Lost,
    },
    Defect {
        object: "a",
        first: 60,
        last: 60,
        reason: Reason::Reappeared,
    },
    Defect {
        object: "a",
        first: 100,
        last: 104,
        reason: Reason::AreaJump,
    },
    Defect {
        object: "a",
        first: 140,
        last: 144,
        reason: Reason::Fragmented,
    },
    Defect {
        object: "a",
        first: 180,
        last: 180,
        reason: Reason::BoxJump,
    },
    Defect {
        object: "a",
        first: 220,
        last: 224,
        reason: Reason::LowIou,
    },
    // The swap: both jump, for as long as the motion baseline takes to relearn.
    Defect {
        object: "a",
        first: 260,
        last: 269,
        reason: Reason::BoxJump,
    },
    Defect {
        object: "b",
        first: 260,
        last: 269,
        reason: Reason::BoxJump,
    },
];

fn draw(id: &str, f: u64, defects: bool) -> Draw {
    let (mut cx, mut cy) = clean(id, f);
    let mut r = 15.0;
    let mut iou = 0.9;
    let mut discs = Vec::new();
    if defects {
        if f >= 260 {
            // The swap: each object is drawn where the other would be.
            (cx, cy) = clean(if id == "a" { "b" } else { "a" }, f);
        }
        if id == "a" {
            match f {
                40..=59 => return Draw { discs, iou },
                100..=104 => r *= 2.0,
                140..=144 => discs.push((cx + 80.0, cy + 60.0, 12.0)),
                180 => cx += 60.0,
                220..=224 => iou = 0.3,
                _ => {}
            }
        }
    }
    discs.push((cx, cy, r));
    Draw { discs, iou }
}

fn write_result(path: &Path, defects: bool) {
    let mut out = String::new();
    for f in 0..FRAMES {
        let objects = ["a", "b"]
            .iter()
            .filter_map(|id| record(id, &draw(id, f, defects)))
            .collect();
        let rec = FrameRecord {
            frame_number: f,
            time_s: f as f64 / 30.0,
            objects,
        };
        out.push_str(&serde_json::to_string(&rec).unwrap());
        out.push('\n');
    }
    std::fs::write(path, out).unwrap();
}

#[test]
fn a_clean_track_gets_no_flags() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("clean.jsonl");
    write_result(&p, false);
    let r = review_file(&p, Thresholds::default()).unwrap();
    assert_eq!(r.frames, FRAMES);
    assert!(r.flags.is_empty(), "{:#?}", r.flags);
    assert!(
        r.objects
            .iter()
            .all(|o| o.flagged == 0 && o.frames == FRAMES)
    );
}

#[test]
fn injected_defects_are_flagged_with_their_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("defects.jsonl");
    write_result(&p, true);
    let r = review_file(&p, Thresholds::default()).unwrap();
    for f in &r.flags {
        eprintln!(
            "{} {:>3}..{:>3} {:<11} {:<6} value {:.3}",
            f.object,
            f.first_frame,
            f.last_frame,
            f.reason.as_str(),
            f.severity.as_str(),
            f.value
        );
    }
    let overlaps = |d: &Defect, f: &densam::review::Flag| {
        f.object == d.object && f.first_frame <= d.last && f.last_frame >= d.first
    };
    let found = DEFECTS
        .iter()
        .filter(|d| {
            r.flags
                .iter()
                .any(|f| overlaps(d, f) && f.reason == d.reason)
        })
        .count();
    let true_flags = r
        .flags
        .iter()
        .filter(|f| {
            DEFECTS
                .iter()
                .any(|d| overlaps(d, f) && f.reason == d.reason)
        })
        .count();
    let recall = found as f64 / DEFECTS.len() as f64;
    let precision = true_flags as f64 / r.flags.len().max(1) as f64;
    eprintln!(
        "recall {recall:.3} ({found}/{}), precision {precision:.3} ({true_flags}/{})",
        DEFECTS.len(),
        r.flags.len()
    );
    assert_eq!(found, DEFECTS.len(), "recall {recall}");
    assert_eq!(true_flags, r.flags.len(), "precision {precision}");
    // One primary reason per stretch: the vanishing mask is `lost`, not also an area jump.
    let lost = r
        .flags
        .iter()
        .find(|f| f.reason == Reason::Lost)
        .expect("a lost flag");
    assert_eq!((lost.first_frame, lost.last_frame), (40, 59));
    assert_eq!(lost.value, 20.0);
    assert!(
        !r.flags
            .iter()
            .any(|f| f.object == "a" && f.reason == Reason::AreaJump && f.first_frame < 100)
    );
}

#[test]
fn review_command_writes_the_report_and_refuses_bad_lines() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("dense_annotations_v.jsonl");
    write_result(&p, true);
    let out = dir.path().join("report");
    let o = common::densam(
        &[
            "review".into(),
            p.display().to_string(),
            "--out".into(),
            out.display().to_string(),
        ],
        &[],
    );
    assert_eq!(common::code(&o), Some(0), "{}", common::stderr(&o));
    let lines = std::fs::read_to_string(out.join("flags.jsonl")).unwrap();
    let csv = std::fs::read_to_string(out.join("flags.csv")).unwrap();
    assert_eq!(lines.lines().count() + 1, csv.lines().count());
    let first: serde_json::Value = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
    for key in [
        "object",
        "first_frame",
        "last_frame",
        "reason",
        "severity",
        "value",
    ] {
        assert!(first.get(key).is_some(), "{key} missing: {first}");
    }
    assert!(csv.starts_with("object,first_frame,last_frame,"));
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["frames"], FRAMES);
    assert_eq!(summary["objects"].as_array().unwrap().len(), 2);
    // No temporary file is left.
    assert!(common::names(&out).iter().all(|n| !n.contains("partial")));

    let bad = dir.path().join("bad.jsonl");
    let mut text = std::fs::read_to_string(&p).unwrap();
    text.push_str("{\"frame_number\": 3, \"time_s\": 0.1, \"objects\": []}\n");
    std::fs::write(&bad, text).unwrap();
    let o = common::densam(
        &[
            "review".into(),
            bad.display().to_string(),
            "--out".into(),
            dir.path().join("r2").display().to_string(),
        ],
        &[],
    );
    common::assert_exit_says(&o, Some(3), &format!("bad.jsonl:{}", FRAMES + 1));
}
