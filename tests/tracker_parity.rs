//! End-to-end parity of `densam annotate` with the official `SAM2VideoPredictor` (fp32 CPU,
//! random tiny weights at image size 256) on a generated lossless 32-frame 320x240 PNG clip:
//! three objects (a box and a mask prompt, a positive + negative point pair, an object prompted
//! later than the others with a second prompt on another frame), forward then reverse from the
//! earliest prompt.
//!
//! Every mask comparison runs the production path: the `densam` binary (`densam annotate`, the
//! job of `src/job/`), read back from its JSONL. Cases: the base case (SAM 2.1, hole filling off
//! as in a CPU-only official run), stride > 1 with prompts off the stride grid,
//! `--max-cond-frames 2`, a SAM 2.0 checkpoint, `--memory-temporal-stride 2`, and hole filling
//! on (`--fill-hole-area 8`; the official side gets a CPU version of its CUDA connected-components
//! kernel, see `tools/parity/reference_video.py`); bad prompts (warnings, `--strict`) and
//! deterministic bytes. Judged by per object-frame mask IoU against the official run (goal
//! ≥ 0.99), next to each case's noise floor: the official predictor against itself at 1 vs 2
//! threads.
//!
//! What the job hides stays at the tracker API (`Tracker`, with the job's own frame source): the
//! stored low-res logits of every processed frame against the official ones, objects batched
//! against one by one (within fp32 tolerance), the bounded bank, and runs stopped and resumed
//! in each pass (also stopped inside a frame, between objects) equal to an uninterrupted run (bit
//! for bit).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use densam::job::io::JobFrames;
use densam::mask::Rle;
use densam::model::sam2::Sam2Model;
use densam::output::jsonl::FrameRecord;
use densam::prompts::{self, VideoGeometry};
use densam::tracker::{
    Flow, FrameNo, FrameRange, FrameResult, Observer, Pass, ProcIdx, PromptSet, RawOutput,
    ResultSink, RunEnd, Schedule, Stage, TrackError, Tracker, TrackerConfig,
};
use densam::video::VideoSource;
use tch::Device;

const IMAGE_SIZE: i64 = 256;
const GOAL_IOU: f64 = 0.99;
const FRAMES: u64 = 32;

/// Masks per (frame, object id), row-major 0/1.
type Masks = BTreeMap<(u64, String), Vec<u8>>;

/// The official runs of the fixture: (tag, version, threads, track stride = frame interval,
/// max cond frames, memory temporal stride, fill hole area). `_t2` runs are the noise floors.
const RUNS: [(&str, &str, &str, &str, &str, &str, &str); 10] = [
    ("s1_t1", "2.1", "1", "1", "-1", "1", "0"),
    ("s1_t2", "2.1", "2", "1", "-1", "1", "0"),
    ("s3_t1", "2.1", "1", "3", "-1", "1", "0"),
    ("mc2_t1", "2.1", "1", "1", "2", "1", "0"),
    ("v20_t1", "2.0", "1", "1", "-1", "1", "0"),
    ("v20_t2", "2.0", "2", "1", "-1", "1", "0"),
    ("ms2_t1", "2.1", "1", "1", "-1", "2", "0"),
    ("ms2_t2", "2.1", "2", "1", "-1", "2", "0"),
    ("fh8_t1", "2.1", "1", "1", "-1", "1", "8"),
    ("fh8_t2", "2.1", "2", "1", "-1", "1", "8"),
];

struct Fixture {
    /// Clip (`frames/`), `prompts.json`, `ref_<tag>.json`, `low_s1_t{1,2}.f32`.
    dir: PathBuf,
    /// Seeded random tiny checkpoints (`model.pt`) of SAM 2.1 and SAM 2.0.
    ckpt21: PathBuf,
    ckpt20: PathBuf,
}

fn fixture() -> Fixture {
    // The checkpoints are shared fixtures (generated outside `fixture_dir`'s lock).
    let ckpt21 = common::checkpoint("tiny", "2.1", IMAGE_SIZE, 0).join("model.pt");
    let ckpt20 = common::checkpoint("tiny", "2.0", IMAGE_SIZE, 0).join("model.pt");
    let scripts = [common::MAKE_CHECKPOINT, "tools/parity/reference_video.py"];
    let mut args: Vec<String> = ["tiny 2.1 2.0", "256", "seed0", "32x320x240"]
        .map(String::from)
        .to_vec();
    args.extend(RUNS.iter().map(|r| format!("{r:?}")));
    let dir = common::fixture_dir("tracker-video", &scripts, &args, |tmp| {
        let t = |p: &str| tmp.join(p).display().to_string();
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        common::run_python(
            scripts[1],
            &[s(&["make-clip", "--out"]), vec![t("")]].concat(),
        );
        for (tag, version, threads, stride, max_cond, mem_stride, fill) in RUNS {
            let ckpt = if version == "2.0" { &ckpt20 } else { &ckpt21 };
            let mut r = s(&["run", "--version", version, "--checkpoint"]);
            r.extend([ckpt.display().to_string(), "--frames".into(), t("frames")]);
            r.extend(["--prompts".into(), t("prompts.json"), "--out".into()]);
            r.push(t(&format!("ref_{tag}.json")));
            r.extend(s(&[
                "--threads",
                threads,
                "--track-stride",
                stride,
                "--frame-interval",
                stride,
                "--max-cond-frames",
                max_cond,
                "--memory-temporal-stride",
                mem_stride,
                "--fill-hole-area",
                fill,
            ]));
            if tag.starts_with("s1_") {
                r.extend(["--lowres-out".into(), t(&format!("low_{tag}.f32"))]);
            }
            common::run_python(scripts[1], &r);
        }
    });
    Fixture {
        dir,
        ckpt21,
        ckpt20,
    }
}

fn decode(size: [u32; 2], counts: &str) -> Vec<u8> {
    Rle::from_counts_string(counts, size[0], size[1])
        .expect("rle")
        .decode_row_major()
}

fn read_json(path: &Path) -> serde_json::Value {
    let bytes =
        std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap()
}

/// The official masks of a reference JSON.
fn reference_masks(path: &Path) -> Masks {
    let v = read_json(path);
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

/// One `densam annotate` run of the binary.
struct Run {
    code: Option<i32>,
    stderr: String,
    /// `OUT/dense_annotations_frames.jsonl`.
    output: PathBuf,
    /// `OUT/run.json`.
    manifest: PathBuf,
}

impl Run {
    fn ok(self) -> Self {
        assert_eq!(
            self.code,
            Some(0),
            "densam annotate failed:\n{}",
            self.stderr
        );
        self
    }

    fn manifest(&self) -> serde_json::Value {
        read_json(&self.manifest)
    }
}

/// Runs `densam annotate` on the fixture clip with its prompts, the 2.1 checkpoint, image size
/// 256 on the CPU, hole filling off and reverse chunks of 5 frames; `opts` (`--name value`, or
/// `--flag ""`) add to or replace these.
fn annotate(fx: &Fixture, out: &Path, opts: &[(&str, &str)]) -> Run {
    let d = |p: &str| fx.dir.join(p).display().to_string();
    let mut o: BTreeMap<&str, String> = BTreeMap::new();
    o.insert("--video", d("frames"));
    o.insert("--prompts", d("prompts.json"));
    o.insert("--checkpoint", fx.ckpt21.display().to_string());
    o.insert("--out", out.display().to_string());
    o.insert("--image-size", IMAGE_SIZE.to_string());
    o.insert("--device", "cpu".into());
    o.insert("--fill-hole-area", "0".into());
    o.insert("--reverse-chunk", "5".into());
    o.insert("--quiet", String::new());
    for (k, v) in opts {
        o.insert(k, v.to_string());
    }
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_densam"));
    cmd.arg("annotate").env("OMP_NUM_THREADS", "1");
    for (k, v) in &o {
        cmd.arg(k);
        if !v.is_empty() {
            cmd.arg(v);
        }
    }
    let t0 = std::time::Instant::now();
    let r = cmd.output().expect("cannot run densam");
    eprintln!(
        "densam annotate {opts:?}: {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    Run {
        code: r.status.code(),
        stderr: String::from_utf8_lossy(&r.stderr).into_owned(),
        output: out.join("dense_annotations_frames.jsonl"),
        manifest: out.join("run.json"),
    }
}

/// densam's run of a case, its masks and the official ones.
struct Case {
    run: Run,
    ours: Masks,
    reference: Masks,
}

/// Runs densam with `opts` into `out` and compares its masks with the official run `tag`;
/// prints the comparison next to the noise floor (`floor_tag`, the same official run at 2
/// threads) and asserts the goal.
fn official_case(
    fx: &Fixture,
    out: &Path,
    name: &str,
    opts: &[(&str, &str)],
    tag: &str,
    floor_tag: Option<&str>,
) -> Case {
    let run = annotate(fx, out, opts).ok();
    let man = run.manifest();
    assert_eq!(man["status"], "complete");
    let reference = reference_masks(&fx.dir.join(format!("ref_{tag}.json")));
    let ours_masks = jsonl_masks(&run.output);
    let ours = compare(&reference, &ours_masks);
    let floor = floor_tag
        .map(|f| {
            let c = compare(
                &reference,
                &reference_masks(&fx.dir.join(format!("ref_{f}.json"))),
            );
            format!(
                "; noise floor (official 1 vs 2 threads) min IoU {:.6} ({})",
                c.0, c.1
            )
        })
        .unwrap_or_default();
    eprintln!(
        "{name}: densam vs official min IoU {:.6} ({}), mean {:.7} over {} object-frames{floor}",
        ours.0, ours.1, ours.2, ours.3
    );
    assert!(ours.3 > 0, "{name}: no object-frames");
    assert!(
        ours.0 >= GOAL_IOU,
        "{name}: min IoU {} at {}",
        ours.0,
        ours.1
    );
    Case {
        run,
        ours: ours_masks,
        reference,
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

/// The job's frame source over the fixture clip.
fn job_frames(video: &VideoSource) -> JobFrames<'_> {
    JobFrames::new(video, IMAGE_SIZE as usize, 1.0)
}

struct Collect(Vec<FrameResult>, Vec<FrameNo>);
impl ResultSink for Collect {
    fn format(&mut self, r: FrameResult) -> Result<Vec<u8>, TrackError> {
        let n = r.number;
        self.0.push(r);
        Ok(n.get().to_le_bytes().to_vec())
    }
    fn write(&mut self, number: FrameNo, _bytes: &[u8]) -> Result<(), TrackError> {
        self.1.push(number);
        Ok(())
    }
}

/// The schedule of the fixture clip (every frame processed and written).
fn schedule(set: &PromptSet) -> Schedule {
    Schedule::new(FrameRange::video(FRAMES), &set.prompted_frames(), 1, 1, 1).unwrap()
}

/// The low-res logits of every raw output, as (pass, processed index, object, values).
type RawLog = Vec<(Pass, usize, usize, Vec<f32>)>;

fn log_raw(log: &mut RawLog, pass: Pass, t: ProcIdx, outs: &[RawOutput]) {
    for o in outs {
        let v = Vec::<f32>::try_from(o.low_res.flatten(0, -1)).unwrap();
        log.push((pass, t.get(), o.object, v));
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

/// A whole run through the Tracker API (`batch` objects at a time, base case): the masks of
/// every written frame and the final low-res logits `[P, N, r, r]` of every processed frame.
fn run_api(fx: &Fixture, batch: usize) -> (Masks, Vec<f32>) {
    let dir = &fx.dir;
    let video = VideoSource::open(&dir.join("frames")).unwrap();
    let set = load_prompts(dir, &video);
    let plan = schedule(&set);
    let model = Sam2Model::load(&fx.ckpt21, Device::Cpu, IMAGE_SIZE).unwrap();
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
    let mut tracker = Tracker::new(&model, cfg, plan, set.clone(), 320, 240).unwrap();
    // The last outputs of every processed frame (the reverse pass's on `s`).
    struct LastLowRes {
        low: Vec<f32>,
        n_obj: usize,
        r: usize,
    }
    impl Observer for LastLowRes {
        fn raw_outputs(&mut self, _pass: Pass, t: ProcIdx, outs: &[RawOutput]) {
            let r2 = self.r * self.r;
            for (o, out) in outs.iter().enumerate() {
                let v = Vec::<f32>::try_from(out.low_res.flatten(0, -1)).unwrap();
                let base = (t.get() * self.n_obj + o) * r2;
                self.low[base..base + r2].copy_from_slice(&v);
            }
        }
    }
    let mut obs = LastLowRes {
        low: vec![f32::NAN; p * n_obj * r * r],
        n_obj,
        r,
    };
    let mut frames = job_frames(&video);
    let mut sink = Collect(Vec::new(), Vec::new());
    let end = tracker.run(&mut frames, &mut sink, None, &mut obs).unwrap();
    assert_eq!(end, RunEnd::Finished);
    // Bounded state: at the end only the read-set of a (virtual) next frame is left: pointers
    // of at most 15 tracked frames, memories of at most 6.
    for b in tracker.banks() {
        assert!(b.tracked.len() <= 15, "{} tracked entries", b.tracked.len());
        assert!(b.tracked.values().filter(|e| e.features.is_some()).count() <= 6);
    }
    drop(tracker);
    // Output order: ascending, every frame once.
    assert_eq!(sink.1, (0..FRAMES).map(FrameNo).collect::<Vec<_>>());
    let mut masks = Masks::new();
    for fr in &sink.0 {
        for o in &fr.objects {
            let rle = Rle::from_counts(o.mask.height, o.mask.width, o.mask.counts.clone()).unwrap();
            masks.insert(
                (fr.number.get(), set.objects[o.object].id.clone()),
                rle.decode_row_major(),
            );
        }
    }
    (masks, obs.low)
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
    let fx = fixture();
    let t0 = std::time::Instant::now();
    // The tracker API: stored low-res logits, one by one and batched.
    let (one_by_one, low) = run_api(&fx, 1);
    let reference = reference_masks(&fx.dir.join("ref_s1_t1.json"));
    let floor = compare(&reference, &reference_masks(&fx.dir.join("ref_s1_t2.json")));
    let ours = compare(&reference, &one_by_one);
    let ref_low = reference_lowres(&fx.dir.join("low_s1_t1.f32"));
    let ref_low_t2 = reference_lowres(&fx.dir.join("low_s1_t2.f32"));
    let d_ours = max_abs_diff(&ref_low, &low);
    let d_floor = max_abs_diff(&ref_low, &ref_low_t2);
    eprintln!(
        "official 1 vs 2 threads: min IoU {:.6} ({}), mean {:.7}, max |dlogit| {d_floor:.3e}",
        floor.0, floor.1, floor.2
    );
    eprintln!(
        "tracker API one by one vs official: min IoU {:.6} ({}), mean {:.7} over {} \
         object-frames, max |dlogit| {d_ours:.3e}",
        ours.0, ours.1, ours.2, ours.3
    );
    assert!(ours.0 >= GOAL_IOU, "min IoU {} at {}", ours.0, ours.1);
    assert!(d_ours < 1e-2, "low-res logits differ by {d_ours}");

    // Objects batched (padding + key mask): equal to one by one within fp32 tolerance, which
    // the bf16 rounding of stored memories lets compound over frames.
    let (batched_api, low_b) = run_api(&fx, 16);
    let d_batch = max_abs_diff(&low, &low_b);
    let bi = compare(&one_by_one, &batched_api);
    eprintln!(
        "tracker API batched vs one by one: max |dlogit| {d_batch:.3e}, min IoU {:.6} ({})",
        bi.0, bi.1
    );
    assert!(d_batch < 1e-2 && bi.0 >= GOAL_IOU);

    // The production path: `densam annotate` (JSONL, manifest), objects batched.
    let out = tempfile::tempdir().unwrap();
    let case = official_case(
        &fx,
        out.path(),
        "densam annotate (base)",
        &[],
        "s1_t1",
        Some("s1_t2"),
    );
    let bo = compare(&one_by_one, &case.ours);
    eprintln!(
        "densam annotate vs tracker API one by one: min IoU {:.6} ({})",
        bo.0, bo.1
    );
    assert!(bo.0 >= GOAL_IOU);
    let manifest = case.run.manifest();
    assert_eq!(manifest["written_frames"], FRAMES);
    assert_eq!(manifest["processed_frames"], FRAMES);
    assert!(manifest["peak_rss_bytes"].as_u64().unwrap() > 0);
    assert_eq!(
        common::names(out.path()),
        ["dense_annotations_frames.jsonl", "run.json"]
    );
    eprintln!(
        "official_parity_end_to_end: {:.1} s (fixture excluded)",
        t0.elapsed().as_secs_f64()
    );
}

#[test]
fn stride_with_prompts_off_the_grid() {
    let fx = fixture();
    let out = tempfile::tempdir().unwrap();
    let opts = [
        ("--track-stride", "3"),
        ("--frame-interval", "3"),
        ("--batch-objects", "1"),
    ];
    let case = official_case(
        &fx,
        out.path(),
        "stride 3 (prompts on 11, 20, 25 off the grid)",
        &opts,
        "s3_t1",
        None,
    );
    // Written: multiples of 3 below 32; processed adds prompted frames 11, 20 and 25.
    let man = case.run.manifest();
    assert_eq!(man["written_frames"], 11);
    assert_eq!(man["processed_frames"], 14);
}

#[test]
fn max_cond_frames_matches_official() {
    let fx = fixture();
    // `square` has three conditioning frames; with 2 the temporally closest are attended and
    // the third is read as a recent frame when it is one.
    let out = tempfile::tempdir().unwrap();
    let Case { reference, .. } = official_case(
        &fx,
        out.path(),
        "max_cond_frames 2",
        &[("--max-cond-frames", "2")],
        "mc2_t1",
        None,
    );
    let all_cond = compare(&reference, &reference_masks(&fx.dir.join("ref_s1_t1.json")));
    eprintln!(
        "official max_cond_frames 2 vs all: min IoU {:.6}",
        all_cond.0
    );
}

/// SAM 2.0: absolute pointer temporal positions without a projection, no
/// `no_obj_embed_spatial`, 468 tensors.
#[test]
fn sam20_matches_official() {
    let fx = fixture();
    let ckpt = fx.ckpt20.display().to_string();
    let out = tempfile::tempdir().unwrap();
    let Case { ours, .. } = official_case(
        &fx,
        out.path(),
        "SAM 2.0 checkpoint",
        &[("--checkpoint", &ckpt)],
        "v20_t1",
        Some("v20_t2"),
    );
    assert_eq!(
        ours.len() as u64,
        3 * FRAMES,
        "an object-frame without a mask"
    );
}

/// `memory_temporal_stride_for_eval = 2`: recent memories t-1, then t-2 ... t-6 on the grid of
/// every 2nd processed frame (both passes).
#[test]
fn memory_temporal_stride_matches_official() {
    let fx = fixture();
    let out = tempfile::tempdir().unwrap();
    let Case { reference, .. } = official_case(
        &fx,
        out.path(),
        "memory temporal stride 2",
        &[("--memory-temporal-stride", "2")],
        "ms2_t1",
        Some("ms2_t2"),
    );
    // The option changes the official results: a run that ignored it would not pass.
    let stride1 = compare(&reference, &reference_masks(&fx.dir.join("ref_s1_t1.json")));
    eprintln!(
        "official memory stride 2 vs 1: min IoU {:.6} ({})",
        stride1.0, stride1.1
    );
    assert!(
        stride1.0 < GOAL_IOU,
        "stride 2 does not change the official masks enough to test it"
    );
}

/// Hole filling on both sides: densam's own connected components, the official
/// `fill_holes_in_mask_scores` with a CPU version of the CUDA kernel.
#[test]
fn fill_holes_matches_official() {
    let fx = fixture();
    let holes = read_json(&fx.dir.join("ref_fh8_t1.json"))["holes"]
        .as_u64()
        .unwrap();
    assert!(holes > 0, "the official run filled no hole");
    let out = tempfile::tempdir().unwrap();
    let Case { reference, .. } = official_case(
        &fx,
        out.path(),
        "fill hole area 8",
        &[("--fill-hole-area", "8")],
        "fh8_t1",
        Some("fh8_t2"),
    );
    let off = compare(&reference, &reference_masks(&fx.dir.join("ref_s1_t1.json")));
    eprintln!(
        "official: {holes} low-res pixels filled; filled vs not filled: min IoU {:.6} ({})",
        off.0, off.1
    );
    assert!(
        off.0 < GOAL_IOU,
        "hole filling does not change the official masks enough to test it"
    );
}

/// A sink keeping the bytes written (every field of every result, bit for bit).
#[derive(Default)]
struct Bytes(Vec<(FrameNo, Vec<u8>)>);
impl ResultSink for Bytes {
    fn format(&mut self, r: FrameResult) -> Result<Vec<u8>, TrackError> {
        let mut b = Vec::new();
        b.extend(r.number.get().to_le_bytes());
        b.extend(r.seconds.to_bits().to_le_bytes());
        for o in &r.objects {
            b.extend((o.object as u64).to_le_bytes());
            b.extend(o.score.to_bits().to_le_bytes());
            b.extend(o.iou.to_bits().to_le_bytes());
            for c in &o.mask.counts {
                b.extend(c.to_le_bytes());
            }
        }
        Ok(b)
    }
    fn write(&mut self, number: FrameNo, bytes: &[u8]) -> Result<(), TrackError> {
        self.0.push((number, bytes.to_vec()));
        Ok(())
    }
}

/// Logs raw outputs; saves the state at `save_at` (or, with `stop_after`, asks to stop between
/// the objects of the frame after that stage and saves the state it stops at).
#[derive(Default)]
struct Interrupter {
    raw: RawLog,
    save_at: Vec<Stage>,
    /// (stage, state, raw outputs logged before it).
    saved: Vec<(Stage, Vec<u8>, usize)>,
    stop_after: Option<Stage>,
    stopping: bool,
    polls: usize,
}

impl Observer for Interrupter {
    fn raw_outputs(&mut self, pass: Pass, t: ProcIdx, outs: &[RawOutput]) {
        log_raw(&mut self.raw, pass, t, outs);
    }

    fn at_resume_point(&mut self, tracker: &Tracker<'_>, stage: Stage) -> Result<Flow, TrackError> {
        if self.stop_after == Some(stage) && !self.stopping {
            self.stopping = true;
            return Ok(Flow::Continue);
        }
        if self.save_at.contains(&stage) || self.stopping {
            assert!(tracker.can_save());
            let state = tracker.save_state()?;
            self.saved.push((stage, state, self.raw.len()));
        }
        Ok(Flow::Continue)
    }

    fn stop_requested(&mut self) -> bool {
        self.polls += 1;
        self.stopping
    }
}

/// Runs stopped in the forward head, the reverse pass and the rest, each between two objects
/// of a frame (the frame undone), save the same state as an uninterrupted run at that point;
/// resumed from it, they go on exactly as the uninterrupted run (raw outputs bit for bit, the
/// same bytes written). The reverse pass is resumed with other chunk boundaries.
#[test]
fn stopped_and_resumed_runs_equal_uninterrupted() {
    tch::set_num_threads(1);
    let fx = fixture();
    let dir = &fx.dir;
    let video = VideoSource::open(&dir.join("frames")).unwrap();
    let set = load_prompts(dir, &video);
    let model = Sam2Model::load(&fx.ckpt21, Device::Cpu, IMAGE_SIZE).unwrap();
    let plan = schedule(&set);
    let (s, head_end) = (plan.start().get(), plan.head_end().get());
    assert!(s >= 2 && head_end + 4 < plan.len(), "fixture layout");
    let stages = [
        Stage::Head(ProcIdx(s + 6)),
        Stage::Reverse(ProcIdx(1)),
        Stage::Rest(ProcIdx(head_end + 4)),
    ];
    let work = tempfile::tempdir().unwrap();
    let cfg = |spool: &str| TrackerConfig {
        fill_hole_area: 0,
        batch_objects: 1,
        reverse_chunk: 2,
        spool_file: Some(work.path().join(spool)),
        ..TrackerConfig::default()
    };
    let mut frames = job_frames(&video);
    let run = |cfg: TrackerConfig,
               frames: &mut JobFrames,
               resume: Option<&[u8]>,
               obs: &mut Interrupter|
     -> (RunEnd, Bytes) {
        let mut t = Tracker::new(&model, cfg, plan.clone(), set.clone(), 320, 240).unwrap();
        let mut sink = Bytes::default();
        let end = t.run(frames, &mut sink, resume, obs).unwrap();
        (end, sink)
    };
    let mut full = Interrupter {
        save_at: stages.to_vec(),
        ..Interrupter::default()
    };
    let (end, full_out) = run(cfg("full"), &mut frames, None, &mut full);
    assert_eq!(end, RunEnd::Finished);
    assert_eq!(full.saved.len(), 3);
    assert!(full.polls > 0);
    for (k, &stage) in stages.iter().enumerate() {
        let spool = format!("spool-{k}");
        let mut stopped = Interrupter {
            stop_after: Some(stage),
            ..Interrupter::default()
        };
        let (end, _) = run(cfg(&spool), &mut frames, None, &mut stopped);
        assert_eq!(
            end,
            RunEnd::Stopped(stage),
            "stopped inside the frame after {stage:?}"
        );
        let (at, state, n_raw) = &full.saved[k];
        assert_eq!(*at, stage);
        assert_eq!(stopped.saved.len(), 1);
        assert!(
            stopped.saved[0].1 == *state,
            "{stage:?}: the state of a run stopped inside the next frame differs"
        );
        let mut resumed = Interrupter::default();
        let (end, out) = run(cfg(&spool), &mut frames, Some(state), &mut resumed);
        assert_eq!(end, RunEnd::Finished);
        assert_eq!(resumed.raw.len(), full.raw.len() - n_raw, "{stage:?}");
        assert!(
            resumed.raw == full.raw[*n_raw..],
            "{stage:?}: resumed outputs differ from the uninterrupted run"
        );
        let want: Vec<_> = match stage {
            Stage::Rest(next) => {
                let from = plan.frame(next);
                full_out
                    .0
                    .iter()
                    .filter(|(n, _)| *n >= from)
                    .cloned()
                    .collect()
            }
            _ => full_out.0.clone(),
        };
        assert!(out.0 == want, "{stage:?}: resumed results differ");
        eprintln!(
            "stopped inside the frame after {stage:?} ({} polls), resumed: {} raw outputs and {} \
             results equal; state {} bytes",
            stopped.polls,
            resumed.raw.len(),
            out.0.len(),
            state.len()
        );
    }
}

#[test]
fn bad_prompts_are_skipped_with_warnings_or_fail_strict() {
    let fx = fixture();
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
    let p = prompts.display().to_string();
    let strict = annotate(
        &fx,
        &work.path().join("strict"),
        &[("--prompts", &p), ("--strict", "")],
    );
    assert_eq!(
        strict.code,
        Some(densam::exit::EXIT_INPUT),
        "{}",
        strict.stderr
    );
    assert!(
        strict.stderr.contains("object `a`, frame 29") && strict.stderr.contains("wholly outside"),
        "{}",
        strict.stderr
    );
    let s1 = annotate(&fx, &work.path().join("o1"), &[("--prompts", &p)]).ok();
    let man = s1.manifest();
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
    assert_eq!(man["written_frames"], FRAMES);
    // Deterministic bytes.
    let s2 = annotate(&fx, &work.path().join("o2"), &[("--prompts", &p)]).ok();
    assert_eq!(
        std::fs::read(&s1.output).unwrap(),
        std::fs::read(&s2.output).unwrap()
    );
}
