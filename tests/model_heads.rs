//! Parity of the SAM 2 heads (prompt encoder, mask decoder, SAM-heads wrapper, mask-as-output,
//! memory encoder, memory assembly, memory attention, tracking step) with the official `sam2`
//! package, on seeded random checkpoints, each module fed the official inputs of its step
//! (reference dumps by tools/parity/dump_heads.py). Also the hole filler against scipy.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use densam::model::config::{ModelSize, Sam2Config, Sam2Version};
use densam::model::fill_holes::fill_holes;
use densam::model::sam2::{
    BackboneOut, MemoryEntry, ObjectMemory, PointInputs, PointerEntry, Sam2Model, StepOutput,
};
use densam::model::weights::Weights;
use tch::{Device, Kind, Tensor};

/// Features (embeddings, pointers, memories): absolute tolerance.
const TOL_FEAT: f64 = 1e-4;
/// Logits (masks, object scores): absolute tolerance.
const TOL_LOGIT: f64 = 1e-3;

struct Ref {
    t: BTreeMap<String, Tensor>,
}

impl Ref {
    fn get(&self, k: &str) -> &Tensor {
        self.t
            .get(k)
            .unwrap_or_else(|| panic!("reference has no `{k}`"))
    }
    fn has(&self, k: &str) -> bool {
        self.t.contains_key(k)
    }
}

fn fixtures(version: &str, image_size: i64) -> (PathBuf, Ref) {
    let ckpt = common::checkpoint("tiny", version, image_size, 0);
    let args: Vec<String> = [
        "--ckpt",
        &ckpt.join("model.pt").display().to_string(),
        "--size",
        "tiny",
        "--version",
        version,
        "--image-size",
        &image_size.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let dir = common::python_fixture(
        &format!("heads-tiny-{version}-{image_size}"),
        "tools/parity/dump_heads.py",
        &[common::MAKE_CHECKPOINT],
        &args,
    );
    let t = common::read_safetensors(&dir.join("heads.safetensors"));
    (ckpt, Ref { t })
}

fn load_model(ckpt: &std::path::Path, version: &str, image_size: i64) -> Sam2Model {
    let v = if version == "2.1" {
        Sam2Version::V2_1
    } else {
        Sam2Version::V2_0
    };
    let mut config = Sam2Config::new(ModelSize::Tiny, v);
    config.image_size = image_size;
    let w =
        Weights::from_safetensors(&ckpt.join("model.safetensors"), Device::Cpu).expect("weights");
    Sam2Model::from_weights(&w, config, Device::Cpu).expect("model")
}

fn frame(r: &Ref, t: usize) -> BackboneOut {
    let g = |k: &str| r.get(&format!("frame{t}.{k}")).shallow_clone();
    BackboneOut {
        vision_feat: g("vision_feat"),
        vision_pos: g("vision_pos"),
        feat_s0: g("feat_s0"),
        feat_s1: g("feat_s1"),
    }
}

fn points(r: &Ref, step: &str) -> PointInputs {
    PointInputs {
        coords: r.get(&format!("{step}.points")).shallow_clone(),
        labels: r.get(&format!("{step}.labels")).to_kind(Kind::Int),
    }
}

/// Max errors per dump point, printed at the end of a test.
#[derive(Default)]
struct Report {
    rows: Vec<(String, f64)>,
}

impl Report {
    fn check(&mut self, name: &str, got: &Tensor, want: &Tensor, tol: f64) {
        let e = common::assert_close(name, got, want, tol);
        self.rows.push((name.to_string(), e));
    }
    fn print(&self, title: &str) {
        eprintln!("== {title}: max abs errors");
        for (n, e) in &self.rows {
            eprintln!("  {n:32} {e:.3e}");
        }
    }
}

fn check_step(rep: &mut Report, r: &Ref, step: &str, out: &StepOutput) {
    check_step_as(rep, r, step, step, out);
}

/// Compares a step's outputs with the reference of `step`, reported under `label`.
fn check_step_as(rep: &mut Report, r: &Ref, step: &str, label: &str, out: &StepOutput) {
    let k = |s: &str| format!("{step}.{s}");
    let l = |s: &str| format!("{label}.{s}");
    rep.check(
        &l("low_res"),
        &out.low_res_masks,
        r.get(&k("low_res")),
        TOL_LOGIT,
    );
    rep.check(
        &l("high_res"),
        &out.high_res_masks,
        r.get(&k("high_res")),
        TOL_LOGIT,
    );
    rep.check(&l("obj_ptr"), &out.obj_ptr, r.get(&k("obj_ptr")), TOL_FEAT);
    rep.check(
        &l("osl"),
        &out.object_score_logits,
        r.get(&k("osl")),
        TOL_LOGIT,
    );
}

/// Prompt encoder and decoder on the official inputs of `step`.
fn check_heads_modules(
    rep: &mut Report,
    m: &Sam2Model,
    r: &Ref,
    step: &str,
    pts: Option<&PointInputs>,
    mask: Option<&Tensor>,
    multimask: bool,
) {
    let b = 1;
    let (coords, labels) = match pts {
        Some(p) => (p.coords.shallow_clone(), p.labels.shallow_clone()),
        None => (
            Tensor::zeros([b, 1, 2], (Kind::Float, Device::Cpu)),
            Tensor::full([b, 1], -1, (Kind::Int, Device::Cpu)),
        ),
    };
    let (sparse, dense) = m.prompt_encoder.forward(&coords, &labels, mask);
    rep.check(
        &format!("{step}.sparse"),
        &sparse,
        r.get(&format!("{step}.sparse")),
        TOL_FEAT,
    );
    rep.check(
        &format!("{step}.dense"),
        &dense,
        r.get(&format!("{step}.dense")),
        TOL_FEAT,
    );
    let f = frame(r, 0);
    let dec = m.mask_decoder.forward(
        r.get(&format!("{step}.pix")),
        &m.prompt_encoder.dense_pe(),
        r.get(&format!("{step}.sparse")),
        r.get(&format!("{step}.dense")),
        multimask,
        &f.feat_s0,
        &f.feat_s1,
    );
    let k = |s: &str| format!("{step}.{s}");
    rep.check(
        &k("dec_masks"),
        &dec.masks,
        r.get(&k("dec_masks")),
        TOL_LOGIT,
    );
    rep.check(&k("dec_ious"), &dec.ious, r.get(&k("dec_ious")), TOL_FEAT);
    rep.check(
        &k("dec_tokens"),
        &dec.sam_tokens,
        r.get(&k("dec_tokens")),
        TOL_FEAT,
    );
    rep.check(
        &k("dec_osl"),
        &dec.object_score_logits,
        r.get(&k("dec_osl")),
        TOL_LOGIT,
    );
}

fn mem_entry(r: &Ref, step: &str, tpos_index: i64) -> MemoryEntry {
    MemoryEntry {
        features: r.get(&format!("{step}.mem_feat_bf16")).shallow_clone(),
        pos_enc: r.get(&format!("{step}.mem_pos")).shallow_clone(),
        tpos_index,
    }
}

fn parity(version: &str, image_size: i64) {
    let _g = tch::no_grad_guard();
    tch::set_num_threads(1);
    let (ckpt, r) = fixtures(version, image_size);
    let mut m = load_model(&ckpt, version, image_size);
    let mut rep = Report::default();
    let f0 = frame(&r, 0);

    // The image encoder + conv_s0/s1 of the full model (model-core's parity tests cover the
    // trunk in detail; here: the wiring of `encode_image`).
    let enc = m.encode_image(r.get("frame0.image"));
    rep.check(
        "frame0.vision_feat",
        &enc.vision_feat,
        &f0.vision_feat,
        TOL_FEAT,
    );
    rep.check(
        "frame0.vision_pos",
        &enc.vision_pos,
        &f0.vision_pos,
        TOL_FEAT,
    );
    rep.check("frame0.feat_s0", &enc.feat_s0, &f0.feat_s0, TOL_FEAT);
    rep.check("frame0.feat_s1", &enc.feat_s1, &f0.feat_s1, TOL_FEAT);

    // Prompted steps on the conditioning frame 0 (decoder on frame 0's high-res features).
    for step in ["box", "neg", "click"] {
        let p = points(&r, step);
        let mm = Sam2Model::use_multimask(Some(&p));
        check_heads_modules(&mut rep, &m, &r, step, Some(&p), None, mm);
        let out = m.prompt_frame(&f0, Some(&p), None);
        check_step(&mut rep, &r, step, &out);
    }
    {
        let p = points(&r, "prev");
        let prev = r.get("prev.prev_logits");
        check_heads_modules(&mut rep, &m, &r, "prev", Some(&p), Some(prev), true);
        let out = m.prompt_frame(&f0, Some(&p), Some(prev));
        check_step(&mut rep, &r, "prev", &out);
    }
    for step in ["mask", "empty"] {
        let mask01 = if step == "mask" {
            r.get("mask.mask01").shallow_clone()
        } else {
            Tensor::zeros([1, 1, image_size, image_size], (Kind::Float, Device::Cpu))
        };
        let down = m.mask_downsample.forward(&mask01);
        check_heads_modules(&mut rep, &m, &r, step, None, Some(&down), false);
        let out = m.mask_as_output(&f0, &mask01);
        check_step(&mut rep, &r, step, &out);
    }

    // Memory encoder on the official preflight masks (binarised).
    for step in ["box", "mask", "empty"] {
        let k = |s: &str| format!("{step}.{s}");
        let (feat, pos) =
            m.encode_memory_unrounded(&f0, r.get(&k("mem_high")), r.get(&k("osl")), true);
        rep.check(&k("mem_feat"), &feat, r.get(&k("mem_feat")), TOL_FEAT);
        rep.check(&k("mem_pos"), &pos, r.get(&k("mem_pos")), TOL_FEAT);
        let (fb, _) = m.encode_memory(&f0, r.get(&k("mem_high")), r.get(&k("osl")), true);
        // bf16 rounding of values equal to 1e-4 can land one bf16 step apart; compare in ulps.
        check_bf16(
            &mut rep,
            &k("mem_feat_bf16"),
            &fb,
            r.get(&k("mem_feat_bf16")),
            &feat,
            r.get(&k("mem_feat")),
        );
    }

    // Tracked frames 1..3: cond memory of frame 0 + previous tracked frames, pointers.
    let num_frames: i64 = 4;
    let max_ptr = num_frames.min(16);
    for t in 1..num_frames {
        let step = format!("track{t}");
        let k = |s: &str| format!("{step}.{s}");
        let ft = frame(&r, t as usize);
        let mut memories = vec![mem_entry(&r, "box", 6)];
        for p in 1..t {
            memories.push(mem_entry(&r, &format!("track{p}"), t - p - 1));
        }
        let mut pointers = vec![PointerEntry {
            ptr: r.get("box.obj_ptr").shallow_clone(),
            pos: t,
        }];
        for d in 1..t {
            pointers.push(PointerEntry {
                ptr: r.get(&format!("track{}.obj_ptr", t - d)).shallow_clone(),
                pos: d,
            });
        }
        let mem = m
            .assemble_memory(&memories, &pointers, max_ptr)
            .expect("memory");
        rep.check(&k("memory"), &mem.memory, r.get(&k("memory")), TOL_FEAT);
        rep.check(
            &k("memory_pos"),
            &mem.memory_pos,
            r.get(&k("memory_pos")),
            TOL_FEAT,
        );
        assert_eq!(
            mem.num_obj_ptr_tokens,
            r.get(&k("num_ptr")).int64_value(&[0]),
            "{step}.num_ptr"
        );
        // Memory attention on the official memory.
        let official = densam::model::sam2::AssembledMemory {
            memory: r.get(&k("memory")).shallow_clone(),
            memory_pos: r.get(&k("memory_pos")).shallow_clone(),
            num_obj_ptr_tokens: mem.num_obj_ptr_tokens,
        };
        let pix = m.attend_memory(&ft, &official, None);
        rep.check(&k("pix"), &pix, r.get(&k("pix")), TOL_FEAT);
        // Heads on the official pix.
        let heads = m.forward_sam_heads(r.get(&k("pix")), &ft, None, None, true);
        check_step(&mut rep, &r, &step, &heads.step);
        // The whole tracking step and its memory.
        let out = m.track_frame(&ft, &memories, &pointers, max_ptr);
        check_step_as(&mut rep, &r, &step, &format!("{step}(full)"), &out);
        let (feat, pos) =
            m.encode_memory_unrounded(&ft, r.get(&k("high_res")), r.get(&k("osl")), false);
        rep.check(&k("mem_feat"), &feat, r.get(&k("mem_feat")), TOL_FEAT);
        rep.check(&k("mem_pos"), &pos, r.get(&k("mem_pos")), TOL_FEAT);
    }

    // A click correcting tracked frame 2.
    {
        let f2 = frame(&r, 2);
        let memories = vec![mem_entry(&r, "box", 6), mem_entry(&r, "track1", 0)];
        let pointers = vec![
            PointerEntry {
                ptr: r.get("box.obj_ptr").shallow_clone(),
                pos: 2,
            },
            PointerEntry {
                ptr: r.get("track1.obj_ptr").shallow_clone(),
                pos: 1,
            },
        ];
        let p = points(&r, "correct");
        let out = m.prompt_tracked_frame(&f2, &memories, &pointers, max_ptr, Some(&p), None);
        check_step(&mut rep, &r, "correct", &out);
    }

    // Object judged absent (object-score head forced to −10), frame 1 tracked.
    m.mask_decoder.obj_score_head.layers[2].bias =
        Some(Tensor::full([1], -10.0, (Kind::Float, Device::Cpu)));
    {
        let f1 = frame(&r, 1);
        let memories = vec![mem_entry(&r, "box", 6)];
        let pointers = vec![PointerEntry {
            ptr: r.get("box.obj_ptr").shallow_clone(),
            pos: 1,
        }];
        let heads = m.forward_sam_heads(r.get("absent.pix"), &f1, None, None, true);
        check_step(&mut rep, &r, "absent", &heads.step);
        let (feat, _) =
            m.encode_memory_unrounded(&f1, r.get("absent.high_res"), r.get("absent.osl"), false);
        rep.check("absent.mem_feat", &feat, r.get("absent.mem_feat"), TOL_FEAT);
        let out = m.track_frame(&f1, &memories, &pointers, max_ptr);
        check_step_as(&mut rep, &r, "absent", "absent(full)", &out);
    }
    assert!(r.has("track3.memory"));
    rep.print(&format!("tiny {version} @ {image_size}"));
}

/// After bf16 rounding, values must agree exactly except where the f32 inputs straddle a
/// rounding boundary (then one bf16 step apart).
fn check_bf16(
    rep: &mut Report,
    name: &str,
    got: &Tensor,
    want: &Tensor,
    got_f32: &Tensor,
    want_f32: &Tensor,
) {
    let d = (got - want).abs();
    // one bf16 ulp at the value: 2^(exponent - 7)
    let ulp = (want.abs().clamp_min(1e-30).log2().floor() - 7.0).exp2();
    let off = d.gt_tensor(&(ulp * 1.0001));
    let n_bad = off.sum(Kind::Int64).int64_value(&[]);
    let n_diff = d.gt(0.0).sum(Kind::Int64).int64_value(&[]);
    let pre = common::max_abs_diff(got_f32, want_f32);
    eprintln!("{name}: {n_diff} values one bf16 step apart (f32 err {pre:.2e}), {n_bad} further");
    assert_eq!(n_bad, 0, "{name}: values more than one bf16 step apart");
    rep.rows
        .push((name.to_string(), common::max_abs_diff(got, want)));
}

/// B objects with memory banks of different sizes on one frame, batched (padding + attention
/// mask), against one call per object.
#[test]
fn batched_tracking_matches_per_object() {
    let _g = tch::no_grad_guard();
    tch::set_num_threads(1);
    let (ckpt, r) = fixtures("2.1", 256);
    let m = load_model(&ckpt, "2.1", 256);
    let f3 = frame(&r, 3);
    let max_ptr = 4;
    // object k has the memory bank of tracked frame k+1 (1, 2, 3 spatial memories / pointers),
    // plus one object with the largest bank again (no padding needed for it).
    let banks: Vec<(Vec<MemoryEntry>, Vec<PointerEntry>)> = [1i64, 3, 2, 3]
        .iter()
        .map(|&t| {
            let mut mems = vec![mem_entry(&r, "box", 6)];
            for p in 1..t {
                mems.push(mem_entry(&r, &format!("track{p}"), t - p - 1));
            }
            let mut ptrs = vec![PointerEntry {
                ptr: r.get("box.obj_ptr").shallow_clone(),
                pos: t,
            }];
            for d in 1..t {
                ptrs.push(PointerEntry {
                    ptr: r.get(&format!("track{}.obj_ptr", t - d)).shallow_clone(),
                    pos: d,
                });
            }
            (mems, ptrs)
        })
        .collect();
    let objects: Vec<ObjectMemory> = banks
        .iter()
        .map(|(m, p)| ObjectMemory {
            memories: m,
            pointers: p,
        })
        .collect();
    let n = objects.len() as i64;
    let batched = m.track_frame_batched(&f3.expand_item(0, n), &objects, max_ptr);
    let mut rep = Report::default();
    for (i, (mems, ptrs)) in banks.iter().enumerate() {
        let single = m.track_frame(&f3, mems, ptrs, max_ptr);
        let i = i as i64;
        let b = |t: &Tensor| t.narrow(0, i, 1);
        rep.check(
            &format!("obj{i}.low_res"),
            &b(&batched.low_res_masks),
            &single.low_res_masks,
            TOL_LOGIT,
        );
        rep.check(
            &format!("obj{i}.high_res"),
            &b(&batched.high_res_masks),
            &single.high_res_masks,
            TOL_LOGIT,
        );
        rep.check(
            &format!("obj{i}.ious"),
            &b(&batched.ious),
            &single.ious,
            TOL_FEAT,
        );
        rep.check(
            &format!("obj{i}.obj_ptr"),
            &b(&batched.obj_ptr),
            &single.obj_ptr,
            TOL_FEAT,
        );
        rep.check(
            &format!("obj{i}.osl"),
            &b(&batched.object_score_logits),
            &single.object_score_logits,
            TOL_LOGIT,
        );
    }
    rep.print("batched tracking vs per object");
}

#[test]
fn heads_parity_tiny_v2_1_256() {
    parity("2.1", 256);
}

#[test]
fn heads_parity_tiny_v2_0_256() {
    parity("2.0", 256);
}

#[test]
fn heads_parity_tiny_v2_1_512() {
    parity("2.1", 512);
}

/// The official model size S = 1024 (docs/sam2-inference.md §1.2): 64×64 features, 256² low-res
/// masks, 4096-token RoPE tables.
#[test]
fn heads_parity_tiny_v2_1_1024() {
    parity("2.1", 1024);
}

/// Image sizes the official config cannot take are refused with an error, not a panic.
#[test]
fn load_rejects_bad_image_size() {
    let ckpt = common::checkpoint("tiny", "2.1", 256, 0);
    for s in [0, 200, 300, 1088] {
        let e = Sam2Model::load(&ckpt.join("model.pt"), Device::Cpu, s).err();
        assert!(
            e.is_some_and(|e| e.to_string().contains(&s.to_string())),
            "image size {s}"
        );
    }
}

const FILL_HOLES_PY: &str = r#"
import sys, numpy as np, scipy.ndimage as ndi
rng = np.random.default_rng(int(sys.argv[1]))
h, w, max_area = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
x = rng.standard_normal((h, w)).astype(np.float32)
# blobs of different sizes so that holes of every area appear
x += 1.2 * (ndi.uniform_filter(rng.standard_normal((h, w)), 3) > 0)
lab, n = ndi.label(x <= 0, structure=np.ones((3, 3)))
areas = np.bincount(lab.ravel())
hole = (lab > 0) & (areas[lab] <= max_area)
y = np.where(hole, np.float32(0.1), x).astype(np.float32)
sys.stdout.buffer.write(x.tobytes() + y.tobytes())
"#;

#[test]
fn fill_holes_matches_scipy() {
    for (seed, h, w, area) in [
        (0u64, 64i64, 64i64, 8i64),
        (1, 256, 256, 8),
        (2, 37, 53, 20),
        (3, 64, 64, 1),
    ] {
        let out = std::process::Command::new(common::venv_python())
            .args([
                "-c",
                FILL_HOLES_PY,
                &seed.to_string(),
                &h.to_string(),
                &w.to_string(),
                &area.to_string(),
            ])
            .output()
            .expect("python");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let n = (h * w) as usize;
        let vals: Vec<f32> = out
            .stdout
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        assert_eq!(vals.len(), 2 * n);
        let x = Tensor::from_slice(&vals[..n]).view([1, 1, h, w]);
        let want = Tensor::from_slice(&vals[n..]).view([1, 1, h, w]);
        let got = fill_holes(&x, area);
        let changed = want.ne_tensor(&x).sum(Kind::Int64).int64_value(&[]);
        assert!(changed > 0, "seed {seed}: the test image has no holes");
        assert_eq!(
            common::max_abs_diff(&got, &want),
            0.0,
            "seed {seed} {h}x{w} area {area}"
        );
        // 0 disables
        assert_eq!(common::max_abs_diff(&fill_holes(&x, 0), &x), 0.0);
    }
}

const BENCH_PY: &str = r#"
import json, os, sys, time, torch
sys.path.insert(0, "tools/parity")
from make_checkpoint import build
ckpt, size, version, S, iters, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
torch.set_num_threads(threads)
model = build(size, version, S)
model.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True)["model"], strict=True)
g = torch.Generator().manual_seed(0)
img = torch.randn(1, 3, S, S, generator=g)
def timed(fn):
    # (min wall ms, min process-CPU ms) over the iterations, after one warm-up call
    fn()
    ws, cs = [], []
    for _ in range(iters):
        t0, c0 = time.perf_counter(), time.process_time(); fn()
        ws.append(time.perf_counter() - t0); cs.append(time.process_time() - c0)
    return [1000 * min(ws), 1000 * min(cs)]
with torch.inference_mode():
    enc_ms = timed(lambda: model._prepare_backbone_features(model.forward_image(img)))
    _, vf, vp, fs = model._prepare_backbone_features(model.forward_image(img))
    f = S // 16
    def entry():
        return {"maskmem_features": torch.randn(1, 64, f, f, generator=g).to(torch.bfloat16),
                "maskmem_pos_enc": [torch.randn(1, 64, f, f, generator=g)],
                "obj_ptr": torch.randn(1, 256, generator=g), "object_score_logits": torch.ones(1, 1)}
    # frame 20 of 32: the conditioning frame 0 + 6 previous frames as memories, 16 pointers
    od = {"cond_frame_outputs": {0: entry()}, "non_cond_frame_outputs": {t: entry() for t in range(5, 20)}}
    def step():
        model.track_step(frame_idx=20, is_init_cond_frame=False, current_vision_feats=vf,
                         current_vision_pos_embeds=vp, feat_sizes=fs, point_inputs=None, mask_inputs=None,
                         output_dict=od, num_frames=32, track_in_reverse=False, run_mem_encoder=True)
    track_ms = timed(step)
    # breakdown: memory conditioning, heads, memory encoder
    pix = model._prepare_memory_conditioned_features(20, False, vf[-1:], vp[-1:], fs[-1:], od, 32)
    ma_ms = timed(lambda: model._prepare_memory_conditioned_features(20, False, vf[-1:], vp[-1:], fs[-1:], od, 32))
    hr = [x.permute(1, 2, 0).view(x.size(1), x.size(2), *s) for x, s in zip(vf[:-1], fs[:-1])]
    heads_ms = timed(lambda: model._forward_sam_heads(pix, high_res_features=hr, multimask_output=True))
    high = model._forward_sam_heads(pix, high_res_features=hr, multimask_output=True)[4]
    me_ms = timed(lambda: model._encode_new_memory(vf, fs, high, torch.ones(1, 1), False))
print(json.dumps({"image_encoder_ms": enc_ms, "track_step_ms": track_ms, "memory_attention_ms": ma_ms, "heads_ms": heads_ms, "memory_encoder_ms": me_ms}))
"#;

/// The benchmark behind scripts/bench-model (ignored; run by hand): image encoder per frame and
/// one object's tracking step (memory attention over the cond frame + 6 memories and 16
/// pointers, heads, memory encoder), densam vs the official package, same weights, input size
/// and thread count. Prints one JSON line tagged `"bench"`.
#[test]
#[ignore]
fn bench_model() {
    let env = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_string());
    let size = env("DENSAM_BENCH_SIZE", "tiny");
    let version = env("DENSAM_BENCH_VERSION", "2.1");
    let s: i64 = env("DENSAM_BENCH_IMAGE_SIZE", "1024")
        .parse()
        .expect("image size");
    let iters: usize = env("DENSAM_BENCH_ITERS", "5").parse().expect("iters");
    let threads = common::test_threads();
    let _g = tch::no_grad_guard();
    tch::set_num_threads(threads as i32);
    let ckpt = common::checkpoint(&size, &version, s, 0);

    let out = std::process::Command::new(common::venv_python())
        .current_dir(common::repo_root())
        .env("OMP_NUM_THREADS", threads.to_string())
        .env("MKL_NUM_THREADS", threads.to_string())
        .args([
            "-c",
            BENCH_PY,
            &ckpt.join("model.pt").display().to_string(),
            &size,
            &version,
        ])
        .args([s.to_string(), iters.to_string(), threads.to_string()])
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or("{}");
    let py: serde_json::Value = serde_json::from_str(line).expect("python json");

    let m = Sam2Model::load(&ckpt.join("model.pt"), Device::Cpu, s).expect("model");
    // (min wall ms, min process-CPU ms) over the iterations, after one warm-up call; the CPU
    // time is less sensitive to other processes competing for the cores.
    let timed = |f: &mut dyn FnMut()| -> [f64; 2] {
        f();
        let (mut w, mut c) = (f64::INFINITY, f64::INFINITY);
        for _ in 0..iters {
            let (t0, c0) = (std::time::Instant::now(), process_cpu_ms());
            f();
            w = w.min(t0.elapsed().as_secs_f64() * 1000.0);
            c = c.min(process_cpu_ms() - c0);
        }
        [w, c]
    };
    let img = Tensor::randn([1, 3, s, s], (Kind::Float, Device::Cpu));
    let enc_ms = timed(&mut || {
        let _ = m.encode_image(&img);
    });
    let feats = m.encode_image(&img);
    let f = m.config.feat_size();
    let rnd = |shape: &[i64]| Tensor::randn(shape, (Kind::Float, Device::Cpu));
    let mem = |tpos_index| MemoryEntry {
        features: rnd(&[1, 64, f, f])
            .to_kind(Kind::BFloat16)
            .to_kind(Kind::Float),
        pos_enc: rnd(&[1, 64, f, f]),
        tpos_index,
    };
    let mut memories = vec![mem(6)];
    memories.extend((0..6).rev().map(mem));
    let pointers: Vec<PointerEntry> = (0..16)
        .map(|d| PointerEntry {
            ptr: rnd(&[1, 256]),
            pos: if d == 0 { 20 } else { d },
        })
        .collect();
    let track_ms = timed(&mut || {
        let o = m.track_frame(&feats, &memories, &pointers, 16);
        let _ = m.encode_memory(&feats, &o.high_res_masks, &o.object_score_logits, false);
    });
    let mem = m.assemble_memory(&memories, &pointers, 16).expect("memory");
    let ma_ms = timed(&mut || {
        let mem = m.assemble_memory(&memories, &pointers, 16).expect("memory");
        let _ = m.attend_memory(&feats, &mem, None);
    });
    let pix = m.attend_memory(&feats, &mem, None);
    let heads_ms = timed(&mut || {
        let _ = m.forward_sam_heads(&pix, &feats, None, None, true);
    });
    let o = m.forward_sam_heads(&pix, &feats, None, None, true).step;
    let me_ms = timed(&mut || {
        let _ = m.encode_memory(&feats, &o.high_res_masks, &o.object_score_logits, false);
    });
    let py_ms = |k: &str, i: usize| py[k][i].as_f64().unwrap_or(f64::NAN);
    let pair = |ours: [f64; 2], k: &str| {
        serde_json::json!({
            "densam_ms": ours[0], "official_ms": py_ms(k, 0), "ratio": ours[0] / py_ms(k, 0),
            "densam_cpu_ms": ours[1], "official_cpu_ms": py_ms(k, 1),
            "cpu_ratio": ours[1] / py_ms(k, 1),
        })
    };
    println!(
        "{}",
        serde_json::json!({
            "bench": "model", "size": size, "version": version, "image_size": s, "threads": threads,
            "iters": iters,
            "image_encoder": pair(enc_ms, "image_encoder_ms"),
            "track_step": pair(track_ms, "track_step_ms"),
            "breakdown": {
                "memory_attention": pair(ma_ms, "memory_attention_ms"),
                "heads": pair(heads_ms, "heads_ms"),
                "memory_encoder": pair(me_ms, "memory_encoder_ms"),
            },
        })
    );
}

/// CPU time of this process (user + system) in ms, from /proc/self/stat (Linux; NaN elsewhere).
fn process_cpu_ms() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return f64::NAN;
    };
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        f.get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    // after the parenthesised command name, field 3 (state) is index 0: utime (14) and stime
    // (15) are indices 11 and 12, in clock ticks (100 per second on Linux)
    (ticks(11) + ticks(12)) * 10.0
}
