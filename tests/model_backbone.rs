//! Parity of the checkpoint loader, the image encoder (Hiera trunk + FPN neck + conv_s0/s1) and
//! the position encodings against the official `sam2` package, on seeded random checkpoints
//! made by tools/parity/make_checkpoint.py and references dumped by tools/parity/dump_backbone.py
//! (fp32, CPU). Every dump point must agree within 1e-4 absolute.

mod common;

use std::path::{Path, PathBuf};

use densam::model::checkpoint::{self, CheckpointError};
use densam::model::config::{ModelSize, Sam2Version};
use densam::model::image_encoder::ImageEncoder;
use densam::model::layers::{Conv2d, ConvCfg};
use densam::model::position_encoding::{
    PositionEmbeddingRandom, apply_rotary_enc, axial_rope_cis, sine_pe_1d,
};
use densam::model::weights::{Weights, WeightsError};
use tch::{Device, Tensor};

const TOL: f64 = 1e-4;
const DUMP_BACKBONE: &str = "tools/parity/dump_backbone.py";

fn dump(ckpt: &Path, seed: u64, batch: i64) -> PathBuf {
    let args: Vec<String> = vec![
        "--ckpt".into(),
        ckpt.display().to_string(),
        "--seed".into(),
        seed.to_string(),
        "--batch".into(),
        batch.to_string(),
    ];
    let name = format!(
        "backbone-{}-b{batch}-s{seed}",
        ckpt.file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default()
    );
    common::python_fixture(&name, DUMP_BACKBONE, &[common::MAKE_CHECKPOINT], &args)
        .join("backbone.safetensors")
}

fn size_of(name: &str) -> ModelSize {
    match name {
        "tiny" => ModelSize::Tiny,
        "small" => ModelSize::Small,
        "base_plus" => ModelSize::BasePlus,
        _ => ModelSize::Large,
    }
}

/// Loads the checkpoint, runs the image encoder on the dumped images and compares every
/// dump point. Returns the reference tensors for further checks.
fn backbone_case(
    size: &str,
    version: &str,
    image_size: i64,
    batch: i64,
    use_safetensors: bool,
) -> std::collections::BTreeMap<String, Tensor> {
    tch::set_num_threads(common::test_threads() as i32);
    let ckpt = common::checkpoint(size, version, image_size, 0);
    let reference = common::read_safetensors(&dump(&ckpt, 1, batch));
    let file = if use_safetensors {
        "model.safetensors"
    } else {
        "model.pt"
    };
    let (w, config) = checkpoint::load(&ckpt.join(file), Device::Cpu, image_size).unwrap();
    assert_eq!(config.size, Some(size_of(size)));
    let want_version = if version == "2.1" {
        Sam2Version::V2_1
    } else {
        Sam2Version::V2_0
    };
    assert_eq!(config.version, want_version);
    assert_eq!(config.image_size, image_size);

    let enc = ImageEncoder::new(&w.pp("image_encoder"), &config).unwrap();
    let dec = w.pp("sam_mask_decoder");
    let conv_s0 = Conv2d::new(&dec.pp("conv_s0"), 256, 32, 1, ConvCfg::default()).unwrap();
    let conv_s1 = Conv2d::new(&dec.pp("conv_s1"), 256, 64, 1, ConvCfg::default()).unwrap();

    let tag = format!("{size} {version} @{image_size} b{batch}");
    let images = &reference["images"];
    let _guard = tch::no_grad_guard();
    let trunk = enc.trunk_forward(images);
    assert_eq!(trunk.len(), 4);
    for (i, t) in trunk.iter().enumerate() {
        common::assert_close(
            &format!("{tag} trunk.{i}"),
            t,
            &reference[&format!("trunk.{i}")],
            TOL,
        );
    }
    let out = enc.forward_from_trunk(&trunk);
    assert_eq!(out.fpn.len(), 3);
    common::assert_close(
        &format!("{tag} fpn.2"),
        &out.fpn[2],
        &reference["fpn.2"],
        TOL,
    );
    common::assert_close(
        &format!("{tag} vision_pos.2"),
        &out.pos,
        &reference["vision_pos.2"],
        TOL,
    );
    let (feat, pos, s0, s1) = enc.forward_with(images, &conv_s0, &conv_s1);
    common::assert_close(
        &format!("{tag} fpn.0 (conv_s0)"),
        &s0,
        &reference["fpn.0"],
        TOL,
    );
    common::assert_close(
        &format!("{tag} fpn.1 (conv_s1)"),
        &s1,
        &reference["fpn.1"],
        TOL,
    );
    common::assert_close(
        &format!("{tag} vision_feat"),
        &feat,
        &reference["fpn.2"],
        TOL,
    );
    common::assert_close(
        &format!("{tag} vision_pos"),
        &pos,
        &reference["vision_pos.2"],
        TOL,
    );
    reference
}

#[test]
fn backbone_tiny_21_256_batch2() {
    backbone_case("tiny", "2.1", 256, 2, false);
}

#[test]
fn backbone_tiny_20_256_safetensors() {
    backbone_case("tiny", "2.0", 256, 1, true);
}

#[test]
fn backbone_tiny_21_512() {
    backbone_case("tiny", "2.1", 512, 1, false);
}

#[test]
fn backbone_small_20_320() {
    backbone_case("small", "2.0", 320, 1, false);
}

/// Large: windows 16/8 (no padding at 256), 48 blocks, 2 heads.
#[test]
fn backbone_large_21_256() {
    backbone_case("large", "2.1", 256, 1, false);
}

#[test]
fn backbone_base_plus_21_1024() {
    backbone_case("base_plus", "2.1", 1024, 1, false);
}

#[test]
fn position_encodings_match_official() {
    let s = 256;
    let f = s / 16;
    let ckpt = common::checkpoint("tiny", "2.1", s, 0);
    let r = common::read_safetensors(&dump(&ckpt, 1, 2));
    let (w, _) = checkpoint::load(&ckpt.join("model.pt"), Device::Cpu, s).unwrap();
    let pe = PositionEmbeddingRandom::new(&w.pp("sam_prompt_encoder").pp("pe_layer"), 128).unwrap();
    common::assert_close(
        "pe.random_dense",
        &pe.dense(f, f),
        &r["pe.random_dense"],
        1e-5,
    );
    common::assert_close(
        "pe.random_coords",
        &pe.encode_coords(&r["pe.coords"], (s, s)),
        &r["pe.random_coords"],
        1e-5,
    );
    common::assert_close(
        "pe.sine1d_64",
        &sine_pe_1d(&r["pe.pos1d"], 64),
        &r["pe.sine1d_64"],
        1e-6,
    );
    common::assert_close(
        "pe.sine1d_256",
        &sine_pe_1d(&r["pe.pos1d"], 256),
        &r["pe.sine1d_256"],
        1e-6,
    );
    let cis = axial_rope_cis(256, f, f, 10000.0, Device::Cpu);
    let (q, k) = apply_rotary_enc(&r["pe.q"], &r["pe.k"], &cis, true, 4);
    common::assert_close("pe.q_rot", &q, &r["pe.q_rot"], 1e-5);
    common::assert_close("pe.k_rot", &k, &r["pe.k_rot"], 1e-5);
}

#[test]
fn checkpoint_pt_and_safetensors_agree() {
    let ckpt = common::checkpoint("tiny", "2.1", 256, 0);
    let a = checkpoint::read_weights(&ckpt.join("model.pt"), Device::Cpu).unwrap();
    let b = checkpoint::read_weights(&ckpt.join("model.safetensors"), Device::Cpu).unwrap();
    let ta = common::read_safetensors(&ckpt.join("model.safetensors"));
    assert_eq!(ta.len(), 471, "tiny 2.1 has 471 tensors");
    for (name, t) in &ta {
        let x = a.get(name, &t.size()).unwrap();
        let y = b.get(name, &t.size()).unwrap();
        assert_eq!(common::max_abs_diff(&x, t), 0.0, "{name} (.pt)");
        assert_eq!(common::max_abs_diff(&y, t), 0.0, "{name} (.safetensors)");
    }
    a.check_all_used().unwrap();

    let v20 = common::checkpoint("tiny", "2.0", 256, 0);
    let (w, c) = checkpoint::load(&v20.join("model.pt"), Device::Cpu, 256).unwrap();
    assert_eq!(c.version, Sam2Version::V2_0);
    assert_eq!(c.size, Some(ModelSize::Tiny));
    assert!(!w.contains("no_obj_embed_spatial") && !w.contains("obj_ptr_tpos_proj.weight"));
}

fn broken(variant: &str) -> PathBuf {
    let args: Vec<String> = ["--variant", variant, "--image-size", "256", "--seed", "0"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    common::python_fixture(
        &format!("ckpt-broken-{variant}"),
        common::MAKE_CHECKPOINT,
        &[],
        &args,
    )
    .join("model.pt")
}

/// Builds the image encoder (and the conv_s0/s1 it needs) from a checkpoint, then requires
/// every image-encoder key to have been used.
fn build_encoder(path: &Path) -> Result<(), CheckpointError> {
    let (w, config) = checkpoint::load(path, Device::Cpu, 256)?;
    ImageEncoder::new(&w.pp("image_encoder"), &config).map_err(CheckpointError::from)?;
    let only_encoder: std::collections::BTreeMap<String, Tensor> = common::read_safetensors(
        &common::checkpoint("tiny", "2.1", 256, 0).join("model.safetensors"),
    )
    .into_iter()
    .filter(|(k, _)| !k.starts_with("image_encoder."))
    .collect();
    // Mark every non-encoder key as used, so that check_all_used reports encoder keys only.
    for (k, t) in &only_encoder {
        if w.contains(k) {
            let _ = w.get(k, &t.size()).map_err(CheckpointError::from)?;
        }
    }
    w.check_all_used().map_err(CheckpointError::from)
}

#[test]
fn checkpoint_errors_name_file_and_key() {
    let err = |v: &str| build_encoder(&broken(v)).unwrap_err();

    let e = err("missing-key");
    assert!(
        matches!(&e, CheckpointError::Weights(WeightsError::Missing { key, .. })
            if key == "image_encoder.trunk.blocks.1.proj.weight"),
        "{e}"
    );
    assert!(e.to_string().contains("model.pt"), "{e}");

    let e = err("wrong-shape");
    assert!(
        matches!(&e, CheckpointError::Weights(WeightsError::Shape { key, found, .. })
            if key == "image_encoder.neck.convs.0.conv.bias" && found == &[255]),
        "{e}"
    );

    let e = err("unexpected-key");
    assert!(
        matches!(&e, CheckpointError::Weights(WeightsError::Unexpected { keys, .. })
            if keys == "image_encoder.trunk.extra.weight"),
        "{e}"
    );

    for (variant, needle) in [
        (
            "no-model-key",
            "neither a state dict nor {\"model\": state_dict}",
        ),
        ("not-sam2", "image_encoder.trunk.pos_embed"),
        ("legacy", "legacy"),
    ] {
        let e = err(variant);
        let msg = e.to_string();
        assert!(
            matches!(
                &e,
                CheckpointError::Weights(WeightsError::NotACheckpoint { .. })
            ),
            "{variant}: {msg}"
        );
        assert!(
            msg.contains(needle) && msg.contains("model.pt"),
            "{variant}: {msg}"
        );
    }

    let e = checkpoint::load(&broken("legacy"), Device::Cpu, 300).unwrap_err();
    assert!(
        matches!(e, CheckpointError::ImageSize(ref s) if s.size == 300 && s.family.is_none()),
        "{e}"
    );
}

#[test]
fn weights_from_state_dict_are_strict() {
    // An in-memory state dict without the trunk: a clear missing-key error, no panic.
    let w = Weights::new("memory", Default::default(), Device::Cpu);
    assert!(checkpoint::detect_config(&w).is_err());
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| default.to_string())
}

/// Image-encoder time per frame, densam vs the official package, same weights, input and
/// thread count (`DENSAM_TEST_THREADS`). Run by scripts/bench-image-encoder; settings:
/// `DENSAM_BENCH_SIZE` (tiny), `DENSAM_BENCH_VERSION` (2.1), `DENSAM_BENCH_IMAGE_SIZE` (1024),
/// `DENSAM_BENCH_ITERS` (5).
#[test]
#[ignore = "benchmark; run scripts/bench-image-encoder"]
fn bench_image_encoder() {
    let size = env_or("DENSAM_BENCH_SIZE", "tiny");
    let version = env_or("DENSAM_BENCH_VERSION", "2.1");
    let s: i64 = env_or("DENSAM_BENCH_IMAGE_SIZE", "1024")
        .parse()
        .expect("image size");
    let iters: usize = env_or("DENSAM_BENCH_ITERS", "5")
        .parse()
        .expect("iterations");
    let threads = common::test_threads();
    tch::set_num_threads(threads as i32);
    let ckpt = common::checkpoint(&size, &version, s, 0);

    let out = common::python_command(DUMP_BACKBONE)
        .args([
            "--ckpt",
            &ckpt.display().to_string(),
            "--bench",
            &iters.to_string(),
        ])
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let official: serde_json::Value =
        serde_json::from_slice(out.stdout.trim_ascii()).expect("bench json");
    let official_ms = official["median_ms_per_frame"].as_f64().expect("ms");

    let (w, config) = checkpoint::load(&ckpt.join("model.pt"), Device::Cpu, s).unwrap();
    let enc = ImageEncoder::new(&w.pp("image_encoder"), &config).unwrap();
    let dec = w.pp("sam_mask_decoder");
    let conv_s0 = Conv2d::new(&dec.pp("conv_s0"), 256, 32, 1, ConvCfg::default()).unwrap();
    let conv_s1 = Conv2d::new(&dec.pp("conv_s1"), 256, 64, 1, ConvCfg::default()).unwrap();
    let images = Tensor::randn([1, 3, s, s], (tch::Kind::Float, Device::Cpu));
    let _guard = tch::no_grad_guard();
    let _ = enc.forward_with(&images, &conv_s0, &conv_s1); // warm-up
    let mut times: Vec<f64> = (0..iters)
        .map(|_| {
            let t0 = std::time::Instant::now();
            let r = enc.forward_with(&images, &conv_s0, &conv_s1);
            let _ = r.0.sum(tch::Kind::Float).double_value(&[]);
            t0.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    let densam_ms = times[times.len() / 2];
    println!(
        "{}",
        serde_json::json!({
            "bench": "image_encoder",
            "size": size,
            "version": version,
            "image_size": s,
            "threads": threads,
            "device": "cpu",
            "densam_ms_per_frame": densam_ms,
            "official_ms_per_frame": official_ms,
            "ratio": densam_ms / official_ms,
        })
    );
}
