//! Memory policies against their references (docs/sam2-inference.md §7.14).
//!
//! `sam3`: SAM 3's frame filter, checked against the official SAM 2.1 predictor with SAM 3's own
//! selection code grafted on (the oracle `memsel/official_oracle.py --sam3-filter` of the shared
//! oracles folder: `$DENSAM_ORACLES`, else `../shared/oracles` beside the repository), on random
//! SAM 2.1 tiny weights whose heads are calibrated so that the filter drops frames (object-score
//! logits straddling 0, IoU estimates spread), a 12-frame clip with one box on frame 0 and a
//! 28-frame clip with two objects boxed on frame 3, batched in one densam run and each compared
//! with its own single-object oracle run (a reverse pass whose scan reaches past the least head,
//! so that densam must extend its head), 1 thread on both sides. Judged per frame: the read-set (memories in attention order, pointers in
//! order) equal to the oracle's, the memory score within 1e-4 of the oracle's (a decision whose
//! score lies within 1e-4 of the threshold is inconclusive, not a failure), and mask IoU ≥ 0.99.
//! The oracle outputs are cached under `.cache/` keyed by the oracle scripts and arguments.

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
    Flow, FrameNo, FrameRange, FrameResult, Observer, Pass, ProcIdx, RawOutput, ReadFrames,
    ResultSink, RunEnd, Schedule, Stage, TrackError, Tracker, TrackerConfig,
};
use densam::video::VideoSource;
use tch::Device;

const IMAGE_SIZE: i64 = 256;
const THRESHOLD: f32 = 0.01;
const GOAL_IOU: f64 = 0.99;
/// Score decisions this close to the threshold may flip between two fp32 implementations.
const MARGIN: f64 = 1e-4;

/// The shared oracles folder.
fn oracles() -> PathBuf {
    common::oracles("memsel/official_oracle.py")
}

/// A test clip of `make_inputs.py` (its moving square) with one box prompt, and optionally a
/// second object (its static distractor square) prompted on the same frame.
struct Clip {
    name: &'static str,
    frames: u64,
    /// The prompted frame (the box is the square's there).
    prompt_frame: u64,
    /// Object `b`, the distractor, tracked in the same run (batched with `a`).
    two_objects: bool,
}

/// Box on frame 0: no reverse pass.
const FIRST: Clip = Clip {
    name: "clip12",
    frames: 12,
    prompt_frame: 0,
    two_objects: false,
};
/// Boxes on frame 3 of 28 (two objects, each compared with its own single-object oracle run):
/// the reverse pass reads forward frames beyond 3 + 15.
const LATE: Clip = Clip {
    name: "clip28",
    frames: 28,
    prompt_frame: 3,
    two_objects: true,
};

impl Clip {
    /// The densam prompts file of the clip's box (video pixels, as make_clip draws it).
    fn prompts_json(&self) -> String {
        let t = self.prompt_frame;
        let (x0, y0) = (40 + 8 * t, 60 + 2 * t);
        let mut objects = vec![serde_json::json!({"id": "a", "label": "a", "prompts": [
            {"frame": t, "box": [x0, y0, x0 + 48, y0 + 48]}]})];
        if self.two_objects {
            objects.push(serde_json::json!({"id": "b", "label": "b", "prompts": [
                {"frame": t, "box": [220, 150, 268, 198]}]}));
        }
        serde_json::json!({ "objects": objects }).to_string()
    }

    /// The object ids and the files of their `--sam3-filter` oracle runs.
    fn objects(&self) -> Vec<(&'static str, &'static str)> {
        let mut v = vec![("a", "sam3filter.json")];
        if self.two_objects {
            v.push(("b", "sam3filter_b.json"));
        }
        v
    }
}

struct Fixture {
    /// `frames/` (PNG, the pixels the oracle decoded), `prompts.json`, `ck_kf.pt`,
    /// `sam3filter.json`, `official.json`.
    dir: PathBuf,
}

fn fixture(clip: &Clip) -> Fixture {
    let orc = oracles();
    let scripts: Vec<String> = ["make_inputs.py", "official_oracle.py", "common.py"]
        .iter()
        .map(|s| orc.join("memsel").join(s).display().to_string())
        .collect();
    let script_refs: Vec<&str> = scripts.iter().map(String::as_str).collect();
    let prompts = clip.prompts_json();
    let clip_arg = format!("{} {}", clip.name, clip.frames);
    let args: Vec<String> = [
        clip_arg.as_str(),
        prompts.as_str(),
        "ckpt densam",
        "calibrate --obj 0.5 0.8 --iou 0.6 0.5 0.45 0.6 --hyper 0 -0.3 -0.6",
        "sam3-filter 0.01",
        "png v1",
    ]
    .map(String::from)
    .to_vec();
    let dir = common::fixture_dir("tracker-policy", &script_refs, &args, |tmp| {
        let t = |p: &str| tmp.join(p).display().to_string();
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let (mk, orcl) = (script_refs[0], script_refs[1]);
        std::fs::write(tmp.join("prompts.json"), &prompts).unwrap();
        let prompt_args = vec![
            "--prompts".to_string(),
            t("prompts.json"),
            "--object".into(),
            "a".into(),
        ];
        common::run_python(
            mk,
            &[
                s(&["clip", "--out"]),
                vec![t(clip.name)],
                vec!["--frames".into(), clip.frames.to_string()],
            ]
            .concat(),
        );
        common::run_python(
            mk,
            &[
                s(&["ckpt", "--out"]),
                vec![t("ck_densam.pt")],
                s(&["--profile", "densam"]),
            ]
            .concat(),
        );
        common::run_python(
            mk,
            &[
                s(&["calibrate", "--ckpt-in"]),
                vec![
                    t("ck_densam.pt"),
                    "--clip".into(),
                    t(clip.name),
                    "--out".into(),
                    t("ck_kf.pt"),
                ],
                prompt_args.clone(),
                s(&[
                    "--obj", "0.5", "0.8", "--iou", "0.6", "0.5", "0.45", "0.6", "--hyper", "0",
                    "-0.3", "-0.6",
                ]),
            ]
            .concat(),
        );
        for (extra, out) in [
            (&["--sam3-filter"][..], "sam3filter.json"),
            (&[][..], "official.json"),
        ] {
            let mut a = vec![
                "--frames".into(),
                t(clip.name),
                "--ckpt".into(),
                t("ck_kf.pt"),
            ];
            a.extend(prompt_args.clone());
            a.extend(s(extra));
            a.extend(["--threads".into(), "1".into(), "--out".into(), t(out)]);
            common::run_python(orcl, &a);
        }
        for (id, out) in clip.objects().into_iter().skip(1) {
            let a: Vec<String> = [
                vec![
                    "--frames".into(),
                    t(clip.name),
                    "--ckpt".into(),
                    t("ck_kf.pt"),
                ],
                vec![
                    "--prompts".into(),
                    t("prompts.json"),
                    "--object".into(),
                    id.into(),
                ],
                s(&["--sam3-filter", "--threads", "1", "--out"]),
                vec![t(out)],
            ]
            .concat();
            common::run_python(orcl, &a);
        }
        // The frames as the oracle decoded them (PIL), losslessly for densam.
        let code = r#"
import json, os, sys
from PIL import Image
src, dst = sys.argv[1], sys.argv[2]
os.makedirs(os.path.join(dst, "frames"))
for n in sorted(f for f in os.listdir(src) if f.endswith(".jpg")):
    Image.open(os.path.join(src, n)).convert("RGB").save(os.path.join(dst, "frames", n[:-4] + ".png"))
"#;
        let out = Command::new(common::venv_python())
            .args(["-c", code, &t(clip.name), &t("")])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
    Fixture { dir }
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// "[0,1,noobj]" -> [Some(0), Some(1), None].
fn parse_list(v: &serde_json::Value) -> Option<Vec<Option<i64>>> {
    let s = v.as_str()?;
    let inner = s.trim_start_matches('[').trim_end_matches(']');
    if inner.is_empty() {
        return Some(Vec::new());
    }
    Some(inner.split(',').map(|x| x.trim().parse().ok()).collect())
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

/// Per (object, frame).
type Masks = BTreeMap<(usize, usize), Vec<u8>>;

/// A Tracker API run of the fixture with `policy`, all objects batched on every frame: per
/// object and frame the read-set and the mask. The masks are keyed by frame number: results are
/// formatted in processing order (the head, then the reverse pass), and on the first prompted
/// frame the later one is the output's.
fn run_api(fx: &Fixture, policy: MemoryPolicy) -> (BTreeMap<(usize, usize), ReadFrames>, Masks) {
    let video = VideoSource::open(&fx.dir.join("frames")).unwrap();
    let geo = VideoGeometry {
        num_frames: video.frame_count() as u64,
        width: video.width() as u32,
        height: video.height() as u32,
    };
    let raw = prompts::read_prompts_file(&fx.dir.join("prompts.json")).unwrap();
    let set = prompts::validate(raw, geo, true).unwrap().0;
    let plan = Schedule::new(
        FrameRange::video(geo.num_frames),
        &set.prompted_frames(),
        1,
        1,
        1,
    )
    .unwrap();
    let model = Sam2Model::load(&fx.dir.join("ck_kf.pt"), Device::Cpu, IMAGE_SIZE).unwrap();
    let spool = tempfile::tempdir().unwrap();
    let cfg = TrackerConfig {
        fill_hole_area: 0,
        batch_objects: set.objects.len(),
        spool_dir: spool.path().to_path_buf(),
        memory_policy: policy,
        ..TrackerConfig::default()
    };
    let (w, h) = (geo.width, geo.height);
    let mut tracker = Tracker::new(&model, cfg, plan, set, w, h).unwrap();
    let mut frames = JobFrames::new(&video, IMAGE_SIZE as usize, 1.0);
    let mut sink = Collect(Vec::new());
    let mut obs = Reads::default();
    let end = tracker.run(&mut frames, &mut sink, None, &mut obs).unwrap();
    assert_eq!(end, RunEnd::Finished);
    for b in tracker.banks() {
        assert!(b.tracked.len() <= 16, "{} tracked entries", b.tracked.len());
        assert!(b.tracked.values().filter(|e| e.features.is_some()).count() <= 7);
    }
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

fn iou(a: &[u8], b: &[u8]) -> f64 {
    common::mask_iou(a, b)
}

#[test]
fn sam3_filter_matches_the_grafted_official_predictor() {
    compare_with_oracle(&FIRST);
}

/// A prompt after frame 0: SAM 3's reverse scan reads the nearest valid forward frames after
/// the prompt however far they are; densam's head goes on until it holds them.
#[test]
fn sam3_reverse_pass_reads_past_the_least_head() {
    let reference = compare_with_oracle(&LATE);
    let s = LATE.prompt_frame as i64;
    let least_head_end = s + 15;
    let reaches = reference["frames"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["frame"].as_i64().unwrap() < s)
        .flat_map(|r| parse_list(&r["read_ptr"]).unwrap())
        .flatten()
        .max()
        .unwrap();
    eprintln!("the reverse pass reads pointers up to frame {reaches}");
    assert!(
        reaches > least_head_end,
        "the fixture must make the reverse scan reach past frame {least_head_end}"
    );
}

/// Runs the clip under `sam3` (its objects batched in one run) and checks each object against
/// its own single-object run of the grafted oracle; returns object `a`'s oracle record.
fn compare_with_oracle(clip: &Clip) -> serde_json::Value {
    let _heavy = common::one_heavy_run();
    let fx = fixture(clip);
    let policy = MemoryPolicy::Sam3 {
        mf_threshold: THRESHOLD,
        use_memory_selection: true,
    };
    let (reads, masks) = run_api(&fx, policy);
    let mut first = None;
    for (oi, (id, file)) in clip.objects().into_iter().enumerate() {
        let reference = read_json(&fx.dir.join(file));
        let dropped = check_object(&reference, oi, id, &reads, &masks);
        if oi == 0 {
            assert!(
                dropped > 0,
                "the calibration must make the filter drop frames"
            );
            first = Some(reference);
        }
    }
    first.unwrap()
}

/// One object's read-sets, scores and masks against its oracle record; returns how many of
/// its frames the filter dropped.
fn check_object(
    reference: &serde_json::Value,
    oi: usize,
    id: &str,
    reads: &BTreeMap<(usize, usize), ReadFrames>,
    masks: &Masks,
) -> usize {
    assert_eq!(reference["mf_threshold"].as_f64(), Some(0.01));
    let recs = reference["frames"].as_array().unwrap();
    let osl: BTreeMap<i64, f64> = recs
        .iter()
        .map(|r| (r["frame"].as_i64().unwrap(), r["osl"].as_f64().unwrap()))
        .collect();
    let (mut matched, mut inconclusive, mut tracked, mut min_iou) = (0, 0, 0, 1.0f64);
    let mut near_threshold = false;
    let mut dropped = 0;
    for r in recs {
        let f = r["frame"].as_u64().unwrap() as usize;
        let m = iou(&masks[&(oi, f)], &decode_rle(&r["segmentation"]));
        min_iou = min_iou.min(m);
        assert!(m >= GOAL_IOU, "object {id} frame {f}: mask IoU {m}");
        if r["cond"].as_bool().unwrap() {
            assert!(
                !reads.contains_key(&(oi, f)),
                "frame {f} is a conditioning frame"
            );
            continue;
        }
        tracked += 1;
        let ours = &reads[&(oi, f)];
        let want = r["eff_iou_score"].as_f64().unwrap();
        let got = ours.score.expect("sam3 stores a score") as f64;
        assert!(
            (got - want).abs() < 2e-5,
            "object {id} frame {f}: score {got} vs {want}"
        );
        let mems = parse_list(&r["read_mem"]).unwrap();
        let ptrs = parse_list(&r["read_ptr"]).unwrap();
        let same_mem = mems.len() == ours.memories.len()
            && mems.iter().zip(&ours.memories).all(|(a, b)| *a == Some(*b));
        // `noobj`: the learned no-object pointer, stored by every absent frame.
        let same_ptr = ptrs.len() == ours.pointers.len()
            && ptrs.iter().zip(&ours.pointers).all(|(a, b)| match a {
                Some(x) => x == b,
                None => osl.get(b).is_some_and(|&o| o <= 0.0),
            });
        eprintln!(
            "{id} frame {f}: score {got:.5} (oracle {want:.5}) memories {:?} pointers {:?} IoU {m:.6}{}",
            ours.memories,
            ours.pointers,
            if same_mem && same_ptr {
                ""
            } else {
                "  DIFFERS"
            }
        );
        if same_mem && same_ptr {
            matched += 1;
        } else if near_threshold {
            inconclusive += 1;
        } else {
            panic!(
                "object {id} frame {f}: read-set memories {:?} pointers {:?}, oracle {} {}",
                ours.memories, ours.pointers, r["read_mem"], r["read_ptr"]
            );
        }
        near_threshold |= (want - THRESHOLD as f64).abs() < MARGIN;
        dropped += (want <= THRESHOLD as f64) as usize;
    }
    eprintln!(
        "object {id}: sam3 filter vs oracle: read-sets matched {matched}/{tracked} tracked \
         frames ({inconclusive} inconclusive), {dropped} frames filtered out, min mask IoU \
         {min_iou:.6}"
    );
    assert_eq!(matched + inconclusive, tracked);
    dropped
}

/// The same through the binary: `--memory-policy sam3` is recorded resolved in run.json and
/// gives the oracle's masks; an invalid policy is a usage error before anything is created.
#[test]
fn annotate_memory_policy_option() {
    let _heavy = common::one_heavy_run();
    let fx = fixture(&FIRST);
    let reference = read_json(&fx.dir.join("sam3filter.json"));
    let work = tempfile::tempdir().unwrap();
    let trace = work.path().join("trace.jsonl");
    let run = |out: &Path, policy: &str| {
        let d = |p: &str| fx.dir.join(p).display().to_string();
        Command::new(env!("CARGO_BIN_EXE_densam"))
            .env("OMP_NUM_THREADS", "1")
            .args([
                "annotate",
                "--video",
                &d("frames"),
                "--prompts",
                &d("prompts.json"),
            ])
            .args([
                "--checkpoint",
                &d("ck_kf.pt"),
                "--image-size",
                "256",
                "--device",
                "cpu",
            ])
            .args(["--fill-hole-area", "0", "--batch-objects", "1", "--quiet"])
            .args(["--memory-policy", policy, "--out"])
            .arg(out)
            .args(if policy == "sam3" {
                vec!["--trace".to_string(), trace.display().to_string()]
            } else {
                vec![]
            })
            .output()
            .unwrap()
    };
    for bad in [
        "sam4",
        "sam3:foo=1",
        "sam3:mf_threshold=x",
        "sam2:mf_threshold=1",
    ] {
        let out = work.path().join("bad");
        let o = run(&out, bad);
        assert_eq!(
            o.status.code(),
            Some(2),
            "{bad}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(!out.exists(), "{bad}: the output folder was created");
    }
    let out = work.path().join("sam3");
    let o = run(&out, "sam3");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let man = common::run_json(&out);
    assert_eq!(
        man["params"]["memory_policy"], "sam3:mf_threshold=0.01,use_memory_selection=true",
        "{man}"
    );
    let ours =
        common::masks_of(&std::fs::read(out.join("dense_annotations_frames.jsonl")).unwrap());
    let mut min_iou = 1.0f64;
    for r in reference["frames"].as_array().unwrap() {
        let f = r["frame"].as_u64().unwrap();
        let m = iou(
            ours.get(&(f, "a".to_string()))
                .map_or(&[][..], |v| v.as_slice()),
            &decode_rle(&r["segmentation"]),
        );
        min_iou = min_iou.min(m);
    }
    eprintln!("densam annotate --memory-policy sam3 vs oracle: min mask IoU {min_iou:.6}");
    // --trace: the oracle's read memories, frame by frame.
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&trace)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let recs = reference["frames"].as_array().unwrap();
    let tracked: Vec<_> = recs.iter().filter(|r| r["cond"] == false).collect();
    assert_eq!(lines.len(), tracked.len());
    for (l, r) in lines.iter().zip(tracked) {
        assert_eq!(l["frame"], r["frame"]);
        assert_eq!(l["object"], "a");
        let mems: Vec<Option<i64>> = l["memories"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64())
            .collect();
        assert_eq!(Some(mems), parse_list(&r["read_mem"]), "{l}");
        assert!((l["score"].as_f64().unwrap() - r["eff_iou_score"].as_f64().unwrap()).abs() < 2e-5);
        assert_eq!(l["mask"], r["chosen"], "{l}");
    }
    assert!(min_iou >= GOAL_IOU);
    // sam2 is the default and is not recorded (run.json as before).
    let out2 = work.path().join("sam2");
    let o = run(&out2, "sam2");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let man = common::run_json(&out2);
    assert!(man["params"].get("memory_policy").is_none(), "{man}");
    // SAM 3's selection switched off is SAM 2.1's reading: the same output bytes.
    let out3 = work.path().join("sam3-off");
    let o = run(&out3, "sam3:use_memory_selection=false");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let name = "dense_annotations_frames.jsonl";
    assert!(
        std::fs::read(out3.join(name)).unwrap() == std::fs::read(out2.join(name)).unwrap(),
        "sam3:use_memory_selection=false differs from sam2"
    );
    // A resume of the sam3 output with sam2 is a parameter change: refused (or redone), never
    // kept as it is.
    let o = run(&out, "sam2");
    let s = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() || s.contains("memory_policy"),
        "re-running a sam3 output with sam2 went unnoticed: {s}"
    );
}

/// Logs the raw outputs (low-res logits and read-sets) and saves the state at `save_at`.
#[derive(Default)]
struct Saver {
    raw: Vec<(usize, Vec<f32>, Option<ReadFrames>)>,
    save_at: Option<Stage>,
    saved: Option<(Vec<u8>, usize)>,
}

impl Observer for Saver {
    fn raw_outputs(&mut self, _pass: Pass, t: ProcIdx, outs: &[RawOutput]) {
        for o in outs {
            let v = Vec::<f32>::try_from(o.low_res.flatten(0, -1)).unwrap();
            self.raw.push((t.get(), v, o.read.clone()));
        }
    }

    fn at_resume_point(&mut self, tracker: &Tracker<'_>, stage: Stage) -> Result<Flow, TrackError> {
        if self.save_at == Some(stage) {
            self.saved = Some((tracker.save_state()?, self.raw.len()));
        }
        Ok(Flow::Continue)
    }
}

/// The policy's per-object state (the stored frames' scores) is in the saved state: a run
/// resumed from it goes on exactly as the uninterrupted run (raw outputs and read-sets bit for
/// bit).
#[test]
fn sam3_resumed_run_equals_uninterrupted() {
    resume_case(&FIRST, Stage::Head(ProcIdx(9)));
    // Inside the extended head (the least head ends at 18), and inside the reverse pass.
    resume_case(&LATE, Stage::Head(ProcIdx(22)));
    resume_case(&LATE, Stage::Reverse(ProcIdx(1)));
}

fn resume_case(clip: &Clip, stage: Stage) {
    let _heavy = common::one_heavy_run();
    tch::set_num_threads(1);
    let fx = fixture(clip);
    let video = VideoSource::open(&fx.dir.join("frames")).unwrap();
    let geo = VideoGeometry {
        num_frames: video.frame_count() as u64,
        width: video.width() as u32,
        height: video.height() as u32,
    };
    let raw = prompts::read_prompts_file(&fx.dir.join("prompts.json")).unwrap();
    let set = prompts::validate(raw, geo, true).unwrap().0;
    let plan = Schedule::new(
        FrameRange::video(geo.num_frames),
        &set.prompted_frames(),
        1,
        1,
        1,
    )
    .unwrap();
    let model = Sam2Model::load(&fx.dir.join("ck_kf.pt"), Device::Cpu, IMAGE_SIZE).unwrap();
    let work = tempfile::tempdir().unwrap();
    let cfg = |spool: &str| TrackerConfig {
        fill_hole_area: 0,
        batch_objects: 1,
        spool_file: Some(work.path().join(spool)),
        memory_policy: "sam3".parse().unwrap(),
        ..TrackerConfig::default()
    };
    let mut frames = JobFrames::new(&video, IMAGE_SIZE as usize, 1.0);
    let mut full = Saver {
        save_at: Some(stage),
        ..Saver::default()
    };
    let mut t = Tracker::new(
        &model,
        cfg("a"),
        plan.clone(),
        set.clone(),
        geo.width,
        geo.height,
    )
    .unwrap();
    let mut sink = Collect(Vec::new());
    assert_eq!(
        t.run(&mut frames, &mut sink, None, &mut full).unwrap(),
        RunEnd::Finished
    );
    drop(t);
    let (state, n) = full.saved.clone().expect("state saved");
    let mut resumed = Saver::default();
    let mut t = Tracker::new(&model, cfg("a"), plan, set, geo.width, geo.height).unwrap();
    let mut sink = Collect(Vec::new());
    assert_eq!(
        t.run(&mut frames, &mut sink, Some(&state), &mut resumed)
            .unwrap(),
        RunEnd::Finished
    );
    assert!(n > 0 && resumed.raw.len() == full.raw.len() - n);
    assert!(
        resumed.raw == full.raw[n..],
        "resumed outputs differ from the uninterrupted run"
    );
    eprintln!(
        "sam3 resumed at {stage:?}: {} raw outputs equal, state {} bytes",
        resumed.raw.len(),
        state.len()
    );
}
