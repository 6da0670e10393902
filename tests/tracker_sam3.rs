//! SAM 3's tracker end to end against Meta's own `Sam3TrackerPredictor` (the SAM 3 tracker
//! oracle, `sam3/run_tracker.py` of the shared oracles folder: `sam3` 0.1.4 on the CPU, one
//! object per run, forward then reverse), at 336 px with the seeded random `sam3.pt`, on the
//! oracle's own clip (8 JPEG frames 320×240: a bright ellipse moving right, a dark box moving
//! down; decoded by PIL and handed to densam losslessly as PNG):
//! box on frame 0, a late box (reverse pass), clicks with a negative, a mask prompt with a second
//! conditioning frame, two objects in one densam run, each equal to its own oracle run, and an
//! object the model finds absent after its mask prompt (a second checkpoint whose object-score
//! head is biased to −10: empty masks, no-object pointers, every tracked frame filtered out).
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

/// The cases: a prompts file, the objects compared and the checkpoint's object-score bias.
struct Case {
    name: &'static str,
    prompts: String,
    objects: &'static [&'static str],
    obj_bias: &'static str,
}

/// The object-score bias of the standard checkpoint (every object present).
const PRESENT: &str = "10";
/// The bias of the checkpoint of the absent-object case.
const ABSENT: &str = "-10";

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
            obj_bias: PRESENT,
        },
        Case {
            name: "late",
            prompts: format!(
                r#"{{"objects": [{{"id": "a", "prompts": [{{"frame": 4, "box": {}}}]}}]}}"#,
                box_a(4)
            ),
            objects: &["a"],
            obj_bias: PRESENT,
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
            obj_bias: PRESENT,
        },
        Case {
            name: "mask",
            prompts: format!(
                r#"{{"objects": [{{"id": "a", "prompts": [{{"frame": 1, "mask": {}}}, {{"frame": 5, "box": {}}}]}}]}}"#,
                mask_a(1),
                box_a(5)
            ),
            objects: &["a"],
            obj_bias: PRESENT,
        },
        Case {
            name: "absent",
            prompts: format!(
                r#"{{"objects": [{{"id": "a", "prompts": [{{"frame": 2, "mask": {}}}]}}]}}"#,
                mask_a(2)
            ),
            objects: &["a"],
            obj_bias: ABSENT,
        },
    ]
}

/// The random `sam3.pt` with the object-score head's bias `obj_bias` (`PRESENT`: the
/// oracle's default, the fixture of tests/model_sam3.rs).
fn sam3_checkpoint(obj_bias: &str) -> PathBuf {
    common::sam3_checkpoint((obj_bias != PRESENT).then_some(obj_bias))
}

/// The clip (`clip/` JPEG for the oracle, `frames/` PNG for densam), each case's prompts and
/// the oracle's run of each of its objects (`<case>.<object>.json`).
fn fixture() -> PathBuf {
    let script = common::sam3_oracle_script();
    let cs = cases();
    // The checkpoints first: a fixture cannot be made while another one is being made.
    let checkpoints: BTreeMap<&str, PathBuf> = cs
        .iter()
        .map(|c| (c.obj_bias, sam3_checkpoint(c.obj_bias)))
        .collect();
    let mut args = vec![format!("frames {FRAMES}"), format!("size {IMAGE_SIZE}")];
    for c in &cs {
        args.push(format!(
            "{} {} {:?} bias {}",
            c.name, c.prompts, c.objects, c.obj_bias
        ));
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
                        checkpoints[c.obj_bias].display().to_string(),
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

/// "[0,1,noobj]" -> [Some(0), Some(1), None] (`noobj`: the learned no-object pointer, which
/// every absent frame stores).
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
    let fx = fixture();
    let mut models: BTreeMap<&str, Sam2Model> = BTreeMap::new();
    let mut failures = Vec::new();
    for c in cases() {
        let model = models.entry(c.obj_bias).or_insert_with(|| {
            Sam2Model::load(&sam3_checkpoint(c.obj_bias), Device::Cpu, IMAGE_SIZE).unwrap()
        });
        let (reads, masks) = run_case(&fx, model, &fx.join(format!("{}.prompts.json", c.name)));
        for (oi, id) in c.objects.iter().enumerate() {
            let path = fx.join(format!("{}.{id}.json", c.name));
            let reference: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            let recs = reference["frames"].as_array().unwrap();
            let osl: BTreeMap<i64, f64> = recs
                .iter()
                .map(|r| (r["frame"].as_i64().unwrap(), r["osl"].as_f64().unwrap()))
                .collect();
            let mut min_iou = 1.0f64;
            let (mut tracked, mut same, mut absent) = (0, 0, 0);
            for r in recs {
                let f = r["frame"].as_u64().unwrap() as usize;
                // An empty mask is not in the results.
                let ours = masks.get(&(oi, f)).cloned().unwrap_or_default();
                absent += ours.iter().all(|&p| p == 0) as usize;
                let iou = common::mask_iou(&ours, &decode_rle(&r["segmentation"]));
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
                    && ptrs.iter().zip(&rs.pointers).all(|(a, b)| match a {
                        Some(x) => x == b,
                        None => osl.get(b).is_some_and(|&o| o <= 0.0),
                    });
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
                "{} object {id}: read-sets {same}/{tracked}, min mask IoU {min_iou:.6}, \
                 {absent} empty masks",
                c.name
            );
            if c.obj_bias == ABSENT {
                assert!(absent >= tracked, "the absent case must lose the object");
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Through the binary with a SAM 3 checkpoint and only `--image-size`: SAM 3's own defaults
/// (recorded resolved in run.json with the family) and the oracle's masks; an image size of
/// SAM 2's rule is refused naming SAM 3's, before anything is created.
#[test]
fn annotate_runs_sam3_with_its_defaults() {
    let _heavy = common::one_heavy_run();
    let fx = fixture();
    let ckpt = sam3_checkpoint(PRESENT);
    let work = tempfile::tempdir().unwrap();
    let run = |out: &Path, size: &str| {
        Command::new(env!("CARGO_BIN_EXE_densam"))
            .env("OMP_NUM_THREADS", common::test_threads().to_string())
            .arg("annotate")
            .arg("--video")
            .arg(fx.join("frames"))
            .arg("--prompts")
            .arg(fx.join("late.prompts.json"))
            .arg("--checkpoint")
            .arg(&ckpt)
            .args(["--image-size", size, "--device", "cpu", "--quiet", "--out"])
            .arg(out)
            .output()
            .unwrap()
    };
    let bad = work.path().join("bad");
    let o = run(&bad, "1024");
    common::assert_exit_says(&o, Some(2), "multiple of 14 in 336..=1008");
    assert!(
        common::stderr(&o).contains("SAM 3"),
        "{}",
        common::stderr(&o)
    );
    assert!(!bad.exists(), "the output folder was created");

    let out = work.path().join("out");
    let o = run(&out, &IMAGE_SIZE.to_string());
    assert_eq!(o.status.code(), Some(0), "{}", common::stderr(&o));
    let manifest = common::run_json(&out);
    assert_eq!(manifest["model"]["family"], "sam3");
    assert!(manifest["model"].get("size").is_none());
    assert_eq!(manifest["model"]["version"], "3");
    let p = &manifest["params"];
    assert_eq!(p["image_size"], IMAGE_SIZE);
    assert_eq!(p["fill_hole_area"], 0);
    assert_eq!(p["max_cond_frames"], 4);
    assert_eq!(
        p["memory_policy"],
        "sam3:mf_threshold=0.01,use_memory_selection=true"
    );
    let masks = common::masks_of(&common::output_of(&out, "frames"));
    let reference: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fx.join("late.a.json")).unwrap()).unwrap();
    for r in reference["frames"].as_array().unwrap() {
        let f = r["frame"].as_u64().unwrap();
        let ours = masks
            .get(&(f, "a".to_string()))
            .cloned()
            .unwrap_or_default();
        let iou = common::mask_iou(&ours, &decode_rle(&r["segmentation"]));
        assert!(iou >= GOAL_IOU, "frame {f}: mask IoU {iou}");
    }
}
