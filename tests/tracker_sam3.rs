//! SAM 3's tracker end to end against Meta's own `Sam3TrackerPredictor` (the SAM 3 tracker
//! oracle, `sam3/run_tracker.py` of the shared oracles folder: `sam3` 0.1.4 on the CPU, one
//! object per run, forward then reverse), at 336 px with the seeded random `sam3.pt`, on the
//! oracle's own clip (8 JPEG frames 320×240: a bright ellipse moving right, a dark box moving
//! down; decoded by PIL and handed to densam losslessly as PNG):
//! box on frame 0, a late box (reverse pass), clicks with a negative, a mask prompt with a second
//! conditioning frame, and two objects in one densam run, each equal to its own oracle run.
//! Every object-frame's mask must reach IoU 0.99 with the oracle's, and every tracked frame's
//! read-set (memories and pointers, SAM 3's memory selection) must be the oracle's.
//! Oracle outputs are cached under `.cache/` keyed by the scripts and arguments.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use densam::job::io::JobFrames;
use densam::mask::Rle;
use densam::model::sam2::Sam2Model;
use densam::prompts::{self, VideoGeometry};
use densam::tracker::policy::MemoryPolicy;
use densam::tracker::{
    FrameNo, FrameResult, Observer, Pass, ProcIdx, RawOutput, ReadFrames, ResultSink, RunEnd,
    Schedule, TrackError, Tracker, TrackerConfig, schedule::FrameRange,
};
use densam::video::VideoSource;
use tch::Device;

const RUN_TRACKER: &str = "sam3/run_tracker.py";
const IMAGE_SIZE: i64 = 336;
const FRAMES: u64 = 8;
const GOAL_IOU: f64 = 0.99;
const W: f64 = 320.0;
const H: f64 = 240.0;

/// Object `a` (the ellipse) on frame `i` of the oracle's clip: centre and radii.
fn ellipse(i: u64) -> (f64, f64, f64, f64) {
    (
        0.30 * W + 8.0 * i as f64,
        0.55 * H + 2.0 * i as f64,
        0.15 * W,
        0.14 * H,
    )
}

fn box_a(i: u64) -> String {
    let (cx, cy, rx, ry) = ellipse(i);
    format!(
        "[{}, {}, {}, {}]",
        (cx - rx).round(),
        (cy - ry).round(),
        (cx + rx).round(),
        (cy + ry).round()
    )
}

/// Object `b` (the box) on frame `i`.
fn box_b(i: u64) -> String {
    let (x0, y0) = ((0.62 * W) as i64, (0.10 * H) as i64 + 6 * i as i64);
    format!(
        "[{x0}, {y0}, {}, {}]",
        x0 + (0.22 * W) as i64,
        y0 + (0.25 * H) as i64
    )
}

/// Object `a`'s mask on frame `i` as a COCO RLE (the ellipse the clip paints).
fn mask_a(i: u64) -> String {
    let (cx, cy, rx, ry) = ellipse(i);
    let (w, h) = (W as usize, H as usize);
    let mut m = vec![0u8; w * h];
    for y in 0..h {
        for x in 0..w {
            let (dx, dy) = ((x as f64 - cx) / rx, (y as f64 - cy) / ry);
            m[y * w + x] = (dx * dx + dy * dy <= 1.0) as u8;
        }
    }
    let rle = Rle::encode_row_major(&m, h as u32, w as u32).unwrap();
    format!(
        r#"{{"size": [{h}, {w}], "counts": "{}"}}"#,
        rle.to_counts_string()
    )
}

/// The cases: a prompts file and the objects compared.
struct Case {
    name: &'static str,
    prompts: String,
    objects: &'static [&'static str],
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "box0",
            prompts: format!(
                r#"{{"objects": [{{"id": "a", "prompts": [{{"frame": 0, "box": {}}}]}},
                 {{"id": "b", "prompts": [{{"frame": 0, "box": {}}}]}}]}}"#,
                box_a(0),
                box_b(0)
            ),
            objects: &["a", "b"],
        },
        Case {
            name: "late",
            prompts: format!(
                r#"{{"objects": [{{"id": "a", "prompts": [{{"frame": 4, "box": {}}}]}}]}}"#,
                box_a(4)
            ),
            objects: &["a"],
        },
        Case {
            name: "points",
            prompts: {
                let (cx, cy, rx, _) = ellipse(2);
                let (bx, by) = (0.62 * W + 0.11 * W, 0.10 * H + 12.0 + 0.125 * H);
                format!(
                    r#"{{"objects": [{{"id": "a", "prompts": [{{"frame": 2, "points": [[{cx}, {cy}], [{}, {cy}], [{bx}, {by}]], "labels": [1, 1, 0]}}]}}]}}"#,
                    cx - 0.5 * rx
                )
            },
            objects: &["a"],
        },
        Case {
            name: "mask",
            prompts: format!(
                r#"{{"objects": [{{"id": "a", "prompts": [{{"frame": 1, "mask": {}}}, {{"frame": 5, "box": {}}}]}}]}}"#,
                mask_a(1),
                box_a(5)
            ),
            objects: &["a"],
        },
    ]
}

fn oracle_script() -> String {
    common::oracles(RUN_TRACKER)
        .join(RUN_TRACKER)
        .display()
        .to_string()
}

/// The random `sam3.pt` (the same fixture as tests/model_sam3.rs).
fn sam3_checkpoint() -> PathBuf {
    let script = oracle_script();
    let args: Vec<String> = vec!["make-checkpoint".into(), "--seed".into(), "0".into()];
    let dir = common::fixture_dir("sam3-ckpt", &[&script], &args, |tmp| {
        let mut a = args.clone();
        a.push("--out".into());
        a.push(tmp.join("sam3.pt").display().to_string());
        common::run_python(&script, &a);
    });
    dir.join("sam3.pt")
}

/// The clip (`clip/` JPEG for the oracle, `frames/` PNG for densam), each case's prompts and
/// the oracle's run of each of its objects (`<case>.<object>.json`).
fn fixture(ckpt: &Path) -> PathBuf {
    let script = oracle_script();
    let cs = cases();
    let mut args = vec![format!("frames {FRAMES}"), format!("size {IMAGE_SIZE}")];
    for c in &cs {
        args.push(format!("{} {} {:?}", c.name, c.prompts, c.objects));
    }
    common::fixture_dir("tracker-sam3", &[&script], &args, |tmp| {
        let t = |p: &str| tmp.join(p).display().to_string();
        common::run_python(
            &script,
            &[
                "make-clip".into(),
                "--out".into(),
                t("clip"),
                "--frames".into(),
                FRAMES.to_string(),
            ],
        );
        for c in &cs {
            let pf = format!("{}.prompts.json", c.name);
            std::fs::write(tmp.join(&pf), &c.prompts).unwrap();
            for o in c.objects {
                common::run_python(
                    &script,
                    &[
                        "track".into(),
                        "--checkpoint".into(),
                        ckpt.display().to_string(),
                        "--frames".into(),
                        t("clip"),
                        "--prompts".into(),
                        t(&pf),
                        "--object".into(),
                        o.to_string(),
                        "--image-size".into(),
                        IMAGE_SIZE.to_string(),
                        "--out".into(),
                        t(&format!("{}.{o}.json", c.name)),
                    ],
                );
            }
        }
        let code = r#"
import os, sys
from PIL import Image
src, dst = sys.argv[1], sys.argv[2]
os.makedirs(dst)
for n in sorted(f for f in os.listdir(src) if f.endswith(".jpg")):
    Image.open(os.path.join(src, n)).convert("RGB").save(os.path.join(dst, n[:-4] + ".png"))
"#;
        let out = Command::new(common::venv_python())
            .args(["-c", code, &t("clip"), &t("frames")])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    })
}

struct Collect(Vec<FrameResult>);
impl ResultSink for Collect {
    fn format(&mut self, r: FrameResult) -> Result<Vec<u8>, TrackError> {
        self.0.push(r);
        Ok(Vec::new())
    }
    fn write(&mut self, _number: FrameNo, _bytes: &[u8]) -> Result<(), TrackError> {
        Ok(())
    }
}

#[derive(Default)]
struct Reads(BTreeMap<(usize, usize), ReadFrames>);
impl Observer for Reads {
    fn raw_outputs(&mut self, _pass: Pass, t: ProcIdx, outs: &[RawOutput]) {
        for o in outs {
            if let Some(r) = &o.read {
                self.0.insert((o.object, t.get()), r.clone());
            }
        }
    }
}

type Masks = BTreeMap<(usize, usize), Vec<u8>>;

/// A Tracker API run of one case (its objects batched) with SAM 3's defaults.
fn run_case(
    fx: &Path,
    model: &Sam2Model,
    prompts_file: &Path,
) -> (BTreeMap<(usize, usize), ReadFrames>, Masks) {
    let video = VideoSource::open(&fx.join("frames")).unwrap();
    let geo = VideoGeometry {
        num_frames: video.frame_count() as u64,
        width: video.width() as u32,
        height: video.height() as u32,
    };
    let raw = prompts::read_prompts_file(prompts_file).unwrap();
    let set = prompts::validate(raw, geo, true).unwrap().0;
    let plan = Schedule::new(
        FrameRange::video(geo.num_frames),
        &set.prompted_frames(),
        1,
        1,
        1,
    )
    .unwrap();
    let spool = tempfile::tempdir().unwrap();
    let cfg = TrackerConfig {
        fill_hole_area: 0,
        max_cond_frames: 4,
        batch_objects: set.objects.len(),
        spool_dir: spool.path().to_path_buf(),
        memory_policy: MemoryPolicy::sam3(),
        ..TrackerConfig::default()
    };
    let mut tracker = Tracker::new(model, cfg, plan, set, geo.width, geo.height).unwrap();
    let mut frames = JobFrames::new(&video, IMAGE_SIZE as usize, 1.0);
    let mut sink = Collect(Vec::new());
    let mut obs = Reads::default();
    let end = tracker.run(&mut frames, &mut sink, None, &mut obs).unwrap();
    assert_eq!(end, RunEnd::Finished);
    let mut masks = Masks::new();
    for fr in &sink.0 {
        for o in &fr.objects {
            let m = Rle::from_counts(o.mask.height, o.mask.width, o.mask.counts.clone())
                .unwrap()
                .decode_row_major();
            masks.insert((o.object, fr.number.get() as usize), m);
        }
    }
    (obs.0, masks)
}

fn decode_rle(v: &serde_json::Value) -> Vec<u8> {
    let (h, w) = (
        v["size"][0].as_u64().unwrap(),
        v["size"][1].as_u64().unwrap(),
    );
    Rle::from_counts_string(v["counts"].as_str().unwrap(), h as u32, w as u32)
        .unwrap()
        .decode_row_major()
}

/// "[0,1,noobj]" -> [Some(0), Some(1), None].
fn parse_list(v: &serde_json::Value) -> Vec<Option<i64>> {
    let s = v.as_str().unwrap_or("[]");
    let inner = s.trim_start_matches('[').trim_end_matches(']');
    if inner.is_empty() {
        return Vec::new();
    }
    inner.split(',').map(|x| x.trim().parse().ok()).collect()
}

#[test]
fn sam3_tracker_matches_the_official_predictor() {
    let _heavy = common::one_heavy_run();
    tch::set_num_threads(common::test_threads() as i32);
    let ckpt = sam3_checkpoint();
    let fx = fixture(&ckpt);
    let model = Sam2Model::load(&ckpt, Device::Cpu, IMAGE_SIZE).unwrap();
    let mut failures = Vec::new();
    for c in cases() {
        let (reads, masks) = run_case(&fx, &model, &fx.join(format!("{}.prompts.json", c.name)));
        for (oi, id) in c.objects.iter().enumerate() {
            let path = fx.join(format!("{}.{id}.json", c.name));
            let reference: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            let mut min_iou = 1.0f64;
            let (mut tracked, mut same) = (0, 0);
            for r in reference["frames"].as_array().unwrap() {
                let f = r["frame"].as_u64().unwrap() as usize;
                let Some(ours) = masks.get(&(oi, f)) else {
                    failures.push(format!("{} {id} frame {f}: no mask", c.name));
                    continue;
                };
                let iou = common::mask_iou(ours, &decode_rle(&r["segmentation"]));
                min_iou = min_iou.min(iou);
                if iou < GOAL_IOU {
                    failures.push(format!("{} {id} frame {f}: mask IoU {iou:.5}", c.name));
                }
                if r["cond"].as_bool().unwrap() {
                    continue;
                }
                tracked += 1;
                let Some(rs) = reads.get(&(oi, f)) else {
                    failures.push(format!("{} {id} frame {f}: no read-set", c.name));
                    continue;
                };
                let mems = parse_list(&r["read_mem"]);
                let ptrs = parse_list(&r["read_ptr"]);
                let ok = mems.len() == rs.memories.len()
                    && mems.iter().zip(&rs.memories).all(|(a, b)| *a == Some(*b))
                    && ptrs.len() == rs.pointers.len()
                    && ptrs.iter().zip(&rs.pointers).all(|(a, b)| *a == Some(*b));
                if ok {
                    same += 1;
                } else {
                    failures.push(format!(
                        "{} {id} frame {f}: read memories {:?} pointers {:?}, oracle {} {}",
                        c.name, rs.memories, rs.pointers, r["read_mem"], r["read_ptr"]
                    ));
                }
            }
            eprintln!(
                "{} object {id}: read-sets {same}/{tracked}, min mask IoU {min_iou:.6}",
                c.name
            );
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
