//! `densam annotate --dtype bf16` against `--dtype fp32` on the CPU, through the binary, on the
//! tracker parity clip (`reference_video.py make-clip`: 32 frames 320x240, three objects with
//! boxes, points, a negative point, mask prompts; seeded random tiny 2.1 weights at 256): the
//! bf16 regions of the official autocast (emulated by explicit casts) must give masks with
//! IoU >= 0.98 per object-frame against fp32, and `run.json` records the dtype. Also the autocast
//! regions of the image encoder and its ~1e-2 relative error, and that `--device cuda` on a
//! machine without a usable GPU is a clear error (exit 6, message naming the flag).

mod common;

use common::{densam, mask_iou, masks_of, output_of, run_json};

use std::path::{Path, PathBuf};

/// Per object-frame mask IoU, bf16 vs fp32: the bound the project requires of `--dtype bf16`
/// (docs/sam2-inference.md §7.11). Measured on this clip: min 0.9912, mean 0.9943 over 96
/// object-frames (the official predictor itself, fp32 vs its bf16 autocast emulated on the CPU:
/// min 0.9908, mean 0.9944).
const MIN_IOU: f64 = 0.98;

/// The parity clip's frames and prompts (generated once into .cache).
fn clip() -> (PathBuf, PathBuf) {
    let script = "tools/parity/reference_video.py";
    let dir = common::fixture_dir("gpu-dtype-clip", &[script], &["32x320x240".into()], |tmp| {
        common::run_python(
            script,
            &[
                "make-clip".into(),
                "--out".into(),
                tmp.display().to_string(),
            ],
        );
    });
    (dir.join("frames"), dir.join("prompts.json"))
}

/// `densam annotate` on `frames` with `prompts` at image size 256, hole filling off.
fn annotate_args(frames: &Path, prompts: &Path, ckpt: &Path, out: &Path) -> Vec<String> {
    common::annotate_args(
        frames,
        prompts,
        ckpt,
        out,
        &["--image-size", "256", "--fill-hole-area", "0", "--quiet"],
    )
}

#[test]
fn bf16_matches_fp32_masks_on_cpu() {
    let dir = tempfile::tempdir().unwrap();
    let (frames, prompts) = clip();
    let ckpt = common::checkpoint("tiny", "2.1", 256, 0).join("model.pt");
    let mut results = Vec::new();
    for dtype in ["fp32", "bf16"] {
        let out = dir.path().join(format!("out-{dtype}"));
        let mut args = annotate_args(&frames, &prompts, &ckpt, &out);
        args.extend(["--device", "cpu", "--dtype", dtype].map(String::from));
        let t = std::time::Instant::now();
        let o = densam(&args, &[]);
        assert!(
            o.status.success(),
            "{dtype}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        eprintln!("{dtype}: {:.1} s", t.elapsed().as_secs_f64());
        let m = run_json(&out);
        assert_eq!(m["dtype"], dtype, "run.json dtype");
        assert_eq!(m["params"]["dtype"], dtype, "run.json params.dtype");
        assert!(m["peak_gpu_bytes"].is_null(), "no GPU peak on the CPU");
        results.push(masks_of(&output_of(&out, "frames")));
    }
    let (a, b) = (&results[0], &results[1]);
    let mut keys: Vec<_> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    assert!(keys.len() >= 90, "{} object-frames", keys.len());
    let empty = Vec::new();
    let (mut min, mut sum, mut nonempty) = (1.0f64, 0.0, 0);
    for k in &keys {
        let (x, y) = (a.get(*k).unwrap_or(&empty), b.get(*k).unwrap_or(&empty));
        if x.iter().any(|&v| v != 0) {
            nonempty += 1;
        }
        let v = mask_iou(x, y);
        assert!(
            v >= MIN_IOU,
            "object-frame {k:?}: bf16 vs fp32 IoU {v:.4} < {MIN_IOU}"
        );
        min = min.min(v);
        sum += v;
    }
    eprintln!(
        "bf16 vs fp32: {} object-frames ({nonempty} non-empty in fp32), IoU min {min:.4}, \
         mean {:.4}",
        keys.len(),
        sum / keys.len() as f64
    );
    assert!(nonempty > 0, "the fp32 run found no object at all");
}

/// The autocast regions of docs/sam2-inference.md §6.1 on the image encoder: L0/L1 (so
/// feat_s0/s1) bf16, L2 and its PE f32, and the bf16 features within a few 1e-2 (relative) of
/// fp32; fp32 unchanged by a bf16 run in between (no state leaks out of the autocast guard).
#[test]
fn bf16_regions_and_relative_error() {
    use densam::model::layers::Precision;
    use densam::model::sam2::Sam2Model;
    use tch::{Device, Kind, Tensor};
    let _g = tch::no_grad_guard();
    tch::set_num_threads(1);
    let ckpt = common::checkpoint("tiny", "2.1", 256, 0).join("model.pt");
    let mut model = Sam2Model::load(&ckpt, Device::Cpu, 256).unwrap();
    tch::manual_seed(0);
    let img = Tensor::randn([1, 3, 256, 256], (Kind::Float, Device::Cpu));
    let a = model.encode_image(&img);
    model.set_precision(Precision::Bf16);
    let b = model.encode_image(&img);
    assert_eq!(b.vision_feat.kind(), Kind::Float);
    assert_eq!(b.vision_pos.kind(), Kind::Float);
    assert_eq!(b.feat_s0.kind(), Kind::BFloat16);
    assert_eq!(b.feat_s1.kind(), Kind::BFloat16);
    let rel = |x: &Tensor, y: &Tensor| {
        let d = (x.to_kind(Kind::Float) - y.to_kind(Kind::Float))
            .norm()
            .double_value(&[]);
        d / y.to_kind(Kind::Float).norm().double_value(&[])
    };
    for (name, x, y) in [
        ("vision_feat", &b.vision_feat, &a.vision_feat),
        ("feat_s0", &b.feat_s0, &a.feat_s0),
        ("feat_s1", &b.feat_s1, &a.feat_s1),
    ] {
        let r = rel(x, y);
        eprintln!("{name}: bf16 vs fp32 relative L2 error {r:.2e}");
        assert!(r > 1e-4 && r < 5e-2, "{name}: {r}");
    }
    let (mem_b, pos_b) = model.encode_memory(
        &b,
        &Tensor::zeros([1, 1, 256, 256], (Kind::Float, Device::Cpu)),
        &Tensor::ones([1, 1], (Kind::Float, Device::Cpu)),
        true,
    );
    assert_eq!(mem_b.kind(), Kind::Float);
    assert_eq!(pos_b.kind(), Kind::Float);
    model.set_precision(Precision::Fp32);
    let c = model.encode_image(&img);
    assert_eq!(rel(&c.vision_feat, &a.vision_feat), 0.0);
    assert_eq!(rel(&c.feat_s0, &a.feat_s0), 0.0);
}

#[test]
fn cuda_without_gpu_is_a_clear_error() {
    if tch::Cuda::is_available() {
        eprintln!("a CUDA GPU is usable here: nothing to test");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (frames, prompts) = clip();
    let ckpt = common::checkpoint("tiny", "2.1", 256, 0).join("model.pt");
    let out = dir.path().join("out");
    let mut args = annotate_args(&frames, &prompts, &ckpt, &out);
    args.extend(["--device", "cuda", "--dtype", "bf16"].map(String::from));
    let o = densam(&args, &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(6), "{err}");
    assert!(err.contains("--device cuda"), "{err}");
    assert!(err.contains("no usable CUDA GPU"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(!out.join("dense_annotations_frames.jsonl").exists());
}
