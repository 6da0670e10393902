//! End-to-end parity of the streaming tracker with the official `SAM2VideoPredictor` (fp32 CPU,
//! random tiny 2.1 weights at image size 256, hole filling off as in a CPU-only official run)
//! on a generated lossless 32-frame 320x240 PNG clip: three objects (a box and a mask prompt,
//! a positive + negative point pair, an object prompted later than the others with a second
//! prompt on another frame), forward then reverse from the earliest prompt.
//!
//! Judged by per object-frame mask IoU against the official run, next to the noise floor of
//! the official predictor against itself at 1 vs 2 threads, plus the max abs difference of the
//! stored low-res logits. Also: stride > 1 with prompts off the stride grid; objects batched
//! equals one by one (within fp32 tolerance); save/load of the memory banks equals an
//! uninterrupted run (bit for bit).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use densam::model::device::DeviceChoice;
use densam::model::sam2::Sam2Model;
use densam::output::jsonl::FrameRecord;
use densam::output::rle::Rle;
use densam::prompts::{self, PromptSet, VideoGeometry};
use densam::tracker::annotate::{self, AnnotateArgs, VideoFrames};
use densam::tracker::{FrameResult, Plan, ResultSink, TrackError, Tracker, TrackerConfig};
use densam::video::VideoSource;
use tch::Device;

const IMAGE_SIZE: i64 = 256;
const GOAL_IOU: f64 = 0.99;

/// Masks per (frame, object id), row-major 0/1.
type Masks = BTreeMap<(u64, String), Vec<u8>>;

fn fixture() -> PathBuf {
    let scripts = [
        "tools/parity/make_checkpoint.py",
        "tools/parity/reference_video.py",
    ];
    let args: Vec<String> = [
        "tiny",
        "2.1",
        "256",
        "seed0",
        "32x320x240",
        "s1_t1 s1_t2 s3_t1 mc2_t1",
    ]
    .map(String::from)
    .to_vec();
    common::fixture_dir("tracker-video", &scripts, &args, |tmp| {
        let t = |p: &str| tmp.join(p).display().to_string();
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let mut a = s(&["--size", "tiny", "--version", "2.1", "--image-size", "256"]);
        a.extend(s(&["--seed", "0", "--out"]));
        a.push(t("ckpt"));
        common::run_python(scripts[0], &a);
        common::run_python(
            scripts[1],
            &[s(&["make-clip", "--out"]), vec![t("")]].concat(),
        );
        let runs = [
            ("s1_t1", "1", "1", "-1"),
            ("s1_t2", "2", "1", "-1"),
            ("s3_t1", "1", "3", "-1"),
            ("mc2_t1", "1", "1", "2"),
        ];
        for (tag, threads, stride, max_cond) in runs {
            let mut r = s(&["run", "--checkpoint"]);
            r.extend([t("ckpt/model.pt"), "--frames".into(), t("frames")]);
            r.extend(["--prompts".into(), t("prompts.json"), "--out".into()]);
            r.push(t(&format!("ref_{tag}.json")));
            r.extend(s(&[
                "--threads",
                threads,
                "--track-stride",
                stride,
                "--frame-interval",
                stride,
            ]));
            r.extend(["--max-cond-frames".into(), max_cond.into()]);
            r.extend(["--lowres-out".into(), t(&format!("low_{tag}.f32"))]);
            common::run_python(scripts[1], &r);
        }
    })
}

fn decode(size: [u32; 2], counts: &str) -> Vec<u8> {
    Rle::from_counts_string(counts, size[0], size[1])
        .expect("rle")
        .decode_row_major()
}

/// The official masks of a reference JSON.
fn reference_masks(path: &Path) -> Masks {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let mut out = Masks::new();
    for f in v["frames"].as_array().unwrap() {
        let n = f["frame_number"].as_u64().unwrap();
        for (id, rle) in f["objects"].as_object().unwrap() {
            let size = [
                rle["size"][0].as_u64().unwrap() as u32,
                rle["size"][1].as_u64().unwrap() as u32,
            ];
            out.insert(
                (n, id.clone()),
                decode(size, rle["counts"].as_str().unwrap()),
            );
        }
    }
    out
}

/// densam's masks from its JSONL (objects absent from a line have an empty mask).
fn jsonl_masks(path: &Path) -> Masks {
    let mut out = Masks::new();
    for line in std::fs::read_to_string(path).unwrap().lines() {
        let rec: FrameRecord = serde_json::from_str(line).unwrap();
        for o in rec.objects {
            let s = o.segmentation.size;
            let rle = o.rle().unwrap();
            assert_eq!(rle.height, s[0]);
            out.insert((rec.frame_number, o.id.clone()), rle.decode_row_major());
        }
    }
    out
}

fn iou(a: Option<&Vec<u8>>, b: Option<&Vec<u8>>) -> f64 {
    let empty = Vec::new();
    let (a, b) = (a.unwrap_or(&empty), b.unwrap_or(&empty));
    let n = a.len().max(b.len());
    let (mut i, mut u) = (0u64, 0u64);
    for k in 0..n {
        let x = a.get(k).copied().unwrap_or(0) != 0;
        let y = b.get(k).copied().unwrap_or(0) != 0;
        i += (x && y) as u64;
        u += (x || y) as u64;
    }
    if u == 0 { 1.0 } else { i as f64 / u as f64 }
}

/// (min IoU, where, mean IoU, number of object-frames) of `b` against the keys of `a`.
fn compare(a: &Masks, b: &Masks) -> (f64, String, f64, usize) {
    let mut min = (1.0f64, String::new());
    let mut sum = 0.0;
    for (k, m) in a {
        let v = iou(Some(m), b.get(k));
        sum += v;
        if v < min.0 {
            min = (v, format!("frame {} object {}", k.0, k.1));
        }
    }
    (min.0, min.1, sum / a.len().max(1) as f64, a.len())
}

fn annotate_args(
    dir: &Path,
    out: &Path,
    stride: u64,
    batch: usize,
    max_cond_frames: i64,
) -> AnnotateArgs {
    AnnotateArgs {
        video: dir.join("frames"),
        prompts: dir.join("prompts.json"),
        checkpoint: dir.join("ckpt/model.pt"),
        out: out.to_path_buf(),
        image_size: IMAGE_SIZE,
        fill_hole_area: 0,
        track_stride: stride,
        frame_interval: stride,
        max_cond_frames,
        device: DeviceChoice::Cpu,
        strict: true,
        batch_objects: batch,
        reverse_chunk: 5,
    }
}

fn load_prompts(dir: &Path, video: &VideoSource) -> PromptSet {
    let geo = VideoGeometry {
        num_frames: video.frame_count() as u64,
        width: video.width() as u32,
        height: video.height() as u32,
    };
    let raw = prompts::read_prompts_file(&dir.join("prompts.json")).unwrap();
    prompts::validate(raw, geo, true).unwrap().0
}

struct Collect(Vec<FrameResult>, Vec<u64>);
impl ResultSink for Collect {
    fn encode(&mut self, r: FrameResult) -> Result<Vec<u8>, TrackError> {
        let n = r.number;
        self.0.push(r);
        Ok(n.to_le_bytes().to_vec())
    }
    fn write(&mut self, number: u64, _bytes: &[u8]) -> Result<(), TrackError> {
        self.1.push(number);
        Ok(())
    }
}

/// The official low-res logits `[P, N, r, r]`.
fn reference_lowres(path: &Path) -> Vec<f32> {
    std::fs::read(path)
        .unwrap()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// A whole run through the Tracker API (`batch` objects at a time): the masks of every written
/// frame and the final low-res logits `[P, N, r, r]` of every processed frame.
fn run_api(dir: &Path, batch: usize) -> (Masks, Vec<f32>) {
    let video = VideoSource::open(&dir.join("frames")).unwrap();
    let set = load_prompts(dir, &video);
    let plan = Plan::new(32, &set.prompted_frames(), 1, 1, 1).unwrap();
    let model = Sam2Model::load(&dir.join("ckpt/model.pt"), Device::Cpu, IMAGE_SIZE).unwrap();
    let spool = tempfile::tempdir().unwrap();
    let cfg = TrackerConfig {
        fill_hole_area: 0,
        batch_objects: batch,
        reverse_chunk: 5,
        spool_dir: spool.path().to_path_buf(),
        ..TrackerConfig::default()
    };
    let n_obj = set.objects.len();
    let p = plan.len();
    let r = (IMAGE_SIZE / 4) as usize;
    let low = Arc::new(Mutex::new(vec![f32::NAN; p * n_obj * r * r]));
    let mut tracker = Tracker::new(&model, cfg, plan, set.clone(), 320, 240).unwrap();
    let low2 = low.clone();
    tracker.set_observer(Box::new(move |t, outs| {
        let mut l = low2.lock().unwrap();
        for (o, out) in outs.iter().enumerate() {
            let v = Vec::<f32>::try_from(out.low_res.flatten(0, -1)).unwrap();
            let base = (t * n_obj + o) * r * r;
            l[base..base + r * r].copy_from_slice(&v);
        }
    }));
    let mut frames = VideoFrames {
        video: &video,
        image_size: IMAGE_SIZE as usize,
    };
    let mut sink = Collect(Vec::new(), Vec::new());
    tracker.run(&mut frames, &mut sink, &mut |_| {}).unwrap();
    // Bounded state: at the end only the read-set of a (virtual) next frame is left: pointers
    // of at most 15 tracked frames, memories of at most 6.
    for b in tracker.banks() {
        assert!(b.tracked.len() <= 15, "{} tracked entries", b.tracked.len());
        assert!(b.tracked.values().filter(|e| e.features.is_some()).count() <= 6);
    }
    drop(tracker);
    // Output order: ascending, every frame once.
    assert_eq!(sink.1, (0..32).collect::<Vec<u64>>());
    let mut masks = Masks::new();
    for fr in &sink.0 {
        for o in &fr.objects {
            let rle = Rle::from_counts(o.mask.height, o.mask.width, o.mask.counts.clone()).unwrap();
            masks.insert(
                (fr.number, set.objects[o.object].id.clone()),
                rle.decode_row_major(),
            );
        }
    }
    let low = low.lock().unwrap().clone();
    (masks, low)
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

#[test]
fn official_parity_end_to_end() {
    tch::set_num_threads(1);
    let dir = fixture();
    let t0 = std::time::Instant::now();
    let (one_by_one, low) = run_api(&dir, 1);
    let reference = reference_masks(&dir.join("ref_s1_t1.json"));
    let floor = compare(&reference, &reference_masks(&dir.join("ref_s1_t2.json")));
    let ours = compare(&reference, &one_by_one);
    let ref_low = reference_lowres(&dir.join("low_s1_t1.f32"));
    let ref_low_t2 = reference_lowres(&dir.join("low_s1_t2.f32"));
    let d_ours = max_abs_diff(&ref_low, &low);
    let d_floor = max_abs_diff(&ref_low, &ref_low_t2);
    eprintln!(
        "official 1 vs 2 threads: min IoU {:.6} ({}), mean {:.7}, max |dlogit| {d_floor:.3e}",
        floor.0, floor.1, floor.2
    );
    eprintln!(
        "densam one by one vs official: min IoU {:.6} ({}), mean {:.7} over {} object-frames, \
         max |dlogit| {d_ours:.3e}",
        ours.0, ours.1, ours.2, ours.3
    );
    assert!(ours.0 >= GOAL_IOU, "min IoU {} at {}", ours.0, ours.1);
    assert!(d_ours < 1e-2, "low-res logits differ by {d_ours}");

    // Objects batched (padding + key mask): equal to one by one within fp32 tolerance, which
    // the bf16 rounding of stored memories lets compound over frames.
    let (batched_api, low_b) = run_api(&dir, 16);
    let d_batch = max_abs_diff(&low, &low_b);
    let bi = compare(&one_by_one, &batched_api);
    eprintln!(
        "batched vs one by one (API): max |dlogit| {d_batch:.3e}, min IoU {:.6} ({})",
        bi.0, bi.1
    );
    assert!(d_batch < 1e-2 && bi.0 >= GOAL_IOU);

    // The CLI path (JSONL, manifest), objects batched.
    let out = tempfile::tempdir().unwrap();
    let s = annotate::run(&annotate_args(&dir, out.path(), 1, 16, -1)).unwrap();
    assert_eq!(s.written_frames, 32);
    let batched = jsonl_masks(&s.output);
    let b = compare(&reference, &batched);
    let bo = compare(&one_by_one, &batched);
    eprintln!(
        "densam batched vs official: min IoU {:.6} ({}); batched vs one by one: min IoU {:.6} ({})",
        b.0, b.1, bo.0, bo.1
    );
    assert!(b.0 >= GOAL_IOU && bo.0 >= GOAL_IOU);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&s.manifest).unwrap()).unwrap();
    assert_eq!(manifest["written_frames"], 32);
    assert!(manifest["peak_rss_bytes"].as_u64().unwrap() > 0);
    let names: Vec<String> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let mut names = names;
    names.sort();
    assert_eq!(names, vec!["dense_annotations_frames.jsonl", "run.json"]);
    eprintln!(
        "official_parity_end_to_end: {:.1} s (fixture excluded)",
        t0.elapsed().as_secs_f64()
    );
}

#[test]
fn stride_with_prompts_off_the_grid() {
    tch::set_num_threads(1);
    let dir = fixture();
    let out = tempfile::tempdir().unwrap();
    let s = annotate::run(&annotate_args(&dir, out.path(), 3, 1, -1)).unwrap();
    // Written: multiples of 3 below 32; processed adds prompted frames 11, 20 and 25.
    assert_eq!(s.written_frames, 11);
    assert_eq!(s.processed_frames, 14);
    let reference = reference_masks(&dir.join("ref_s3_t1.json"));
    let ours = compare(&reference, &jsonl_masks(&s.output));
    eprintln!(
        "stride 3 (prompts on 11, 20, 25 off the grid): min IoU {:.6} ({}), mean {:.7} over {}",
        ours.0, ours.1, ours.2, ours.3
    );
    assert!(ours.0 >= GOAL_IOU, "min IoU {} at {}", ours.0, ours.1);
}

#[test]
fn max_cond_frames_matches_official() {
    tch::set_num_threads(1);
    let dir = fixture();
    let out = tempfile::tempdir().unwrap();
    // `square` has three conditioning frames; with 2 the temporally closest are attended and
    // the third is read as a recent frame when it is one.
    let s = annotate::run(&annotate_args(&dir, out.path(), 1, 16, 2)).unwrap();
    let reference = reference_masks(&dir.join("ref_mc2_t1.json"));
    let ours = compare(&reference, &jsonl_masks(&s.output));
    let all_cond = compare(&reference, &reference_masks(&dir.join("ref_s1_t1.json")));
    eprintln!(
        "max_cond_frames 2: min IoU {:.6} ({}), mean {:.7} over {}; official max 2 vs all: min \
         IoU {:.6}",
        ours.0, ours.1, ours.2, ours.3, all_cond.0
    );
    assert!(ours.0 >= GOAL_IOU, "min IoU {} at {}", ours.0, ours.1);
}

#[test]
fn bank_save_load_equals_uninterrupted() {
    tch::set_num_threads(1);
    let dir = fixture();
    let video = VideoSource::open(&dir.join("frames")).unwrap();
    let set = load_prompts(&dir, &video);
    let model = Sam2Model::load(&dir.join("ckpt/model.pt"), Device::Cpu, IMAGE_SIZE).unwrap();
    let plan = Plan::new(32, &set.prompted_frames(), 1, 1, 1).unwrap();
    let s = plan.start;
    let cfg = TrackerConfig {
        fill_hole_area: 0,
        batch_objects: 1,
        ..TrackerConfig::default()
    };
    let mk = || Tracker::new(&model, cfg.clone(), plan.clone(), set.clone(), 320, 240).unwrap();
    let mut frames = VideoFrames {
        video: &video,
        image_size: IMAGE_SIZE as usize,
    };
    let collect =
        |t: &mut Tracker, frames: &mut VideoFrames, range: std::ops::RangeInclusive<usize>| {
            let mut got: Vec<(u64, Vec<f32>)> = Vec::new();
            t.track_range(frames, range, false, true, &mut |n, outs| {
                for o in outs {
                    got.push((n, Vec::<f32>::try_from(o.low_res.flatten(0, -1)).unwrap()));
                }
            })
            .unwrap();
            got
        };
    let mut a = mk();
    a.prepass(&mut frames, &mut |_| {}).unwrap();
    let full = collect(&mut a, &mut frames, s..=s + 12);
    let mut b = mk();
    b.prepass(&mut frames, &mut |_| {}).unwrap();
    collect(&mut b, &mut frames, s..=s + 5);
    let bytes = b.save_banks().unwrap();
    drop(b);
    let mut c = mk();
    c.prepass(&mut frames, &mut |_| {}).unwrap();
    c.load_banks(&bytes).unwrap();
    let resumed = collect(&mut c, &mut frames, s + 6..=s + 12);
    let tail: Vec<_> = full
        .iter()
        .filter(|(n, _)| *n >= plan.processed[s + 6])
        .cloned()
        .collect();
    assert_eq!(tail.len(), resumed.len());
    assert!(
        tail == resumed,
        "resumed outputs differ from the uninterrupted run"
    );
    eprintln!(
        "bank: {} bytes for {} objects after 6 frames",
        bytes.len(),
        set.objects.len()
    );
}

#[test]
fn bad_prompts_are_skipped_with_warnings_or_fail_strict() {
    tch::set_num_threads(1);
    let dir = fixture();
    let work = tempfile::tempdir().unwrap();
    let prompts = work.path().join("prompts.json");
    std::fs::write(
        &prompts,
        r#"{"objects": [
            {"id": "a", "prompts": [{"frame": 28, "box": [-20, 100, 60, 160]},
                                    {"frame": 29, "box": [400, 300, 500, 400]},
                                    {"frame": 99, "points": [[5, 5]], "labels": [1]}]},
            {"id": "a", "prompts": [{"frame": 1, "box": [1, 1, 5, 5]}]},
            {"id": "nothing", "prompts": []}
        ]}"#,
    )
    .unwrap();
    let args = |out: &Path, strict: bool| AnnotateArgs {
        prompts: prompts.clone(),
        strict,
        ..annotate_args(&dir, out, 1, 16, -1)
    };
    let err = annotate::run(&args(&work.path().join("strict"), true))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("object `a`, frame 29") && err.contains("wholly outside"),
        "{err}"
    );
    let s1 = annotate::run(&args(&work.path().join("o1"), false)).unwrap();
    let man: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&s1.manifest).unwrap()).unwrap();
    let warnings = man["warnings"].to_string();
    for w in [
        "object `a`, frame 28: box",
        "partly outside",
        "object `a`, frame 99",
        "object `a`: duplicate id",
        "object `nothing`: no usable prompts",
    ] {
        assert!(warnings.contains(w), "{w} not in {warnings}");
    }
    assert_eq!(s1.written_frames, 32);
    // Deterministic bytes.
    let s2 = annotate::run(&args(&work.path().join("o2"), false)).unwrap();
    assert_eq!(
        std::fs::read(&s1.output).unwrap(),
        std::fs::read(&s2.output).unwrap()
    );
}
