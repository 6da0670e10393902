//! SAM 3 checkpoints and SAM 3's image encoder against Meta's own `sam3` package (0.1.4, in the
//! venv), on the seeded random checkpoint in the released `sam3.pt` layout that the SAM 3
//! tracker oracle writes (`sam3/run_tracker.py make-checkpoint` of the shared oracles folder,
//! 1.9 GB, made once and cached under `.cache/`):
//! - the reader finds SAM 3 from the keys, keeps exactly the tracker's tensors under densam's
//!   names, skips the detector and text encoder, and the model built from them uses every one;
//! - the RoPE tables densam computes equal the stored ones bit for bit (window and global blocks);
//! - trunk, neck (+ conv_s0/conv_s1) and the position encoding agree with the official modules
//!   at 336 px (tools/parity/dump_sam3_backbone.py).

mod common;

use std::path::PathBuf;

use densam::model::checkpoint;
use densam::model::config::{Family, Sam2Version};
use densam::model::image_encoder::ImageEncoder;
use densam::model::layers::{Conv2d, ConvCfg};
use densam::model::position_encoding::axial_rope_cis_scaled;
use densam::model::sam2::Sam2Model;
use tch::{Device, Kind, Tensor};

const DUMP: &str = "tools/parity/dump_sam3_backbone.py";
const IMAGE_SIZE: i64 = 336;

/// The random `sam3.pt` (flat state dict), cached.
fn sam3_checkpoint() -> PathBuf {
    common::sam3_checkpoint(None)
}

#[test]
fn sam3_checkpoint_is_read_as_the_tracker() {
    let _heavy = common::one_heavy_run();
    let ckpt = sam3_checkpoint();
    assert_eq!(checkpoint::family_of(&ckpt).unwrap(), Family::Sam3);
    let w = checkpoint::read_weights(&ckpt, Device::Cpu).unwrap();
    let config = checkpoint::detect_config(&w).unwrap();
    assert_eq!(config.family(), Family::Sam3);
    assert_eq!(config.version, Sam2Version::V3);
    assert_eq!(config.size, None);
    // The default size is SAM 3's; SAM 2's rule does not apply, SAM 3's does.
    let (_, c) = checkpoint::load(&ckpt, Device::Cpu, None).unwrap();
    assert_eq!(
        (c.image_size, c.fill_hole_area, c.max_cond_frames_in_attn),
        (1008, 0, 4)
    );
    let e = checkpoint::load(&ckpt, Device::Cpu, 1024)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("1024") && e.contains("multiple of 14") && e.contains("SAM 3"),
        "{e}"
    );
    // Every tensor the model takes is there and every one read is taken (strict build), at 336.
    let model = Sam2Model::load(&ckpt, Device::Cpu, IMAGE_SIZE).unwrap();
    assert_eq!(model.config.feat_size(), 24);
    assert_eq!(model.config.describe(), "SAM 3");
}

/// The rotation tables are recomputed, not read: they equal the stored ones (made at 1008) bit
/// for bit, a window block's [576, 32] and a global block's [5184, 32] (positions scaled 24/72).
#[test]
fn sam3_rope_tables_equal_the_stored_ones() {
    let ckpt = sam3_checkpoint();
    let p = "detector.backbone.vision_backbone.trunk.blocks";
    let (win, glob) = (
        format!("{p}.0.attn.freqs_cis"),
        format!("{p}.7.attn.freqs_cis"),
    );
    let raw = checkpoint::read_raw(&ckpt, &[&win, &glob]).unwrap();
    let stored_w = &raw[&win];
    let stored_g = &raw[&glob];
    assert_eq!(stored_w.kind(), Kind::ComplexFloat);
    assert_eq!(stored_g.size(), [5184, 32]);
    let ours_w = axial_rope_cis_scaled(64, 24, 24, 10000.0, 1.0, Device::Cpu);
    let ours_g = axial_rope_cis_scaled(64, 72, 72, 10000.0, 24.0 / 72.0, Device::Cpu);
    for (name, a, b) in [("window", &ours_w, stored_w), ("global", &ours_g, stored_g)] {
        let d = (a.view_as_real() - b.view_as_real())
            .abs()
            .max()
            .double_value(&[]);
        assert_eq!(d, 0.0, "{name} table differs by {d}");
    }
}

#[test]
fn sam3_image_encoder_matches_official_at_336() {
    let _heavy = common::one_heavy_run();
    tch::set_num_threads(common::test_threads() as i32);
    let ckpt = sam3_checkpoint();
    let orc = common::oracles(common::SAM3_ORACLE);
    let args: Vec<String> = vec![
        "--oracles".into(),
        orc.display().to_string(),
        "--ckpt".into(),
        ckpt.display().to_string(),
        "--image-size".into(),
        IMAGE_SIZE.to_string(),
        "--seed".into(),
        "1".into(),
        "--batch".into(),
        "1".into(),
    ];
    let script = common::sam3_oracle_script();
    let dump = common::python_fixture(
        "sam3-backbone",
        DUMP,
        &[&script, common::MAKE_CHECKPOINT],
        &args,
    );
    let reference = common::read_safetensors(&dump.join("backbone.safetensors"));
    let (w, config) = checkpoint::load(&ckpt, Device::Cpu, IMAGE_SIZE).unwrap();
    let enc = ImageEncoder::new(&w.pp("image_encoder"), &config).unwrap();
    let dec = w.pp("sam_mask_decoder");
    let conv_s0 = Conv2d::new(&dec.pp("conv_s0"), 256, 32, 1, ConvCfg::default()).unwrap();
    let conv_s1 = Conv2d::new(&dec.pp("conv_s1"), 256, 64, 1, ConvCfg::default()).unwrap();
    let _g = tch::no_grad_guard();
    let images = &reference["images"];
    let trunk = enc.trunk_forward(images);
    let scale = |t: &Tensor| t.abs().max().double_value(&[]);
    let report = |name: &str, got: &Tensor, want: &Tensor| {
        let d = common::max_abs_diff(got, want);
        eprintln!("{name}: max |diff| {d:.3e} (max |ref| {:.3e})", scale(want));
        d
    };
    let d_trunk = report("trunk", &trunk[0], &reference["trunk"]);
    let (feat, pos, s0, s1) = enc.forward_with(images, &conv_s0, &conv_s1);
    let d = [
        report("fpn.0 (conv_s0)", &s0, &reference["fpn.0"]),
        report("fpn.1 (conv_s1)", &s1, &reference["fpn.1"]),
        report("fpn.2", &feat, &reference["fpn.2"]),
        report("vision_pos.2", &pos, &reference["vision_pos.2"]),
    ];
    let tol = 1e-4;
    assert!(d_trunk <= tol, "trunk {d_trunk}");
    for (i, x) in d.iter().enumerate() {
        assert!(*x <= tol, "level {i}: {x}");
    }
}
