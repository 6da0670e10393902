//! The memory encoder (`memory_encoder`, official `modeling/memory_encoder.py`,
//! docs/sam2-inference.md §3.7): MaskDownSampler (4× conv3x3 s2 + LN2d + GELU, conv1x1),
//! `pix_feat_proj`, a fuser of 2 CXBlocks, `out_proj` to 64 channels, and the 64-channel sine
//! position encoding of the result.

use std::cell::RefCell;

use tch::Tensor;

use super::config::{D_MODEL, MEM_DIM};
use super::layers::{Conv2d, ConvCfg, LayerNorm2d, Linear, gelu};
use super::position_encoding;
use super::weights::{Weights, WeightsError};

/// `MaskDownSampler(kernel 3, stride 2, padding 1, total_stride 16)`.
#[derive(Debug)]
pub struct MaskDownSampler {
    pub convs: Vec<Conv2d>,
    pub norms: Vec<LayerNorm2d>,
    pub out: Conv2d,
}

impl MaskDownSampler {
    fn new(w: &Weights) -> Result<Self, WeightsError> {
        let e = w.pp("encoder");
        let cfg = ConvCfg {
            stride: 2,
            padding: 1,
            groups: 1,
        };
        let (mut convs, mut norms) = (Vec::new(), Vec::new());
        let mut cin = 1;
        for i in 0..4 {
            let cout = cin * 4;
            convs.push(Conv2d::new(&e.pp(3 * i), cin, cout, 3, cfg)?);
            norms.push(LayerNorm2d::new(&e.pp(3 * i + 1), cout, 1e-6)?);
            cin = cout;
        }
        Ok(MaskDownSampler {
            convs,
            norms,
            out: Conv2d::new(&e.pp(12), cin, D_MODEL, 1, ConvCfg::default())?,
        })
    }

    /// `[B, 1, S, S] -> [B, 256, S/16, S/16]`
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let mut x = x.shallow_clone();
        for (c, n) in self.convs.iter().zip(&self.norms) {
            x = gelu(&n.forward(&c.forward(&x)));
        }
        self.out.forward(&x)
    }
}

/// ConvNeXt block: dwconv 7×7 → LN2d → Linear 256→1024 → GELU → Linear → ×gamma, residual.
#[derive(Debug)]
pub struct CxBlock {
    pub dwconv: Conv2d,
    pub norm: LayerNorm2d,
    pub pwconv1: Linear,
    pub pwconv2: Linear,
    pub gamma: Tensor,
}

impl CxBlock {
    fn new(w: &Weights, dim: i64) -> Result<Self, WeightsError> {
        Ok(CxBlock {
            dwconv: Conv2d::new(
                &w.pp("dwconv"),
                dim,
                dim,
                7,
                ConvCfg {
                    stride: 1,
                    padding: 3,
                    groups: dim,
                },
            )?,
            norm: LayerNorm2d::new(&w.pp("norm"), dim, 1e-6)?,
            pwconv1: Linear::new(&w.pp("pwconv1"), dim, 4 * dim)?,
            pwconv2: Linear::new(&w.pp("pwconv2"), 4 * dim, dim)?,
            gamma: w.get("gamma", &[dim])?,
        })
    }

    /// `[B, C, H, W] -> [B, C, H, W]`
    pub fn forward(&self, input: &Tensor) -> Tensor {
        let x = self.norm.forward(&self.dwconv.forward(input));
        let x = x.permute([0, 2, 3, 1]);
        let x = self.pwconv2.forward(&gelu(&self.pwconv1.forward(&x)));
        let x = (&self.gamma * x).permute([0, 3, 1, 2]);
        input + x
    }
}

/// The memory encoder.
#[derive(Debug)]
pub struct MemoryEncoder {
    pub mask_downsampler: MaskDownSampler,
    pub pix_feat_proj: Conv2d,
    pub fuser: Vec<CxBlock>,
    pub out_proj: Conv2d,
    /// The f32 sine PE of the last output grid `(h, w)`: the same every call, built once.
    pos: RefCell<Option<((i64, i64), Tensor)>>,
    /// The mask side the downsampler takes (16× the embedding): masks of another size are
    /// resized to it first (bilinear, antialiased), as SAM 3's `SimpleMaskDownSampler(
    /// interpol_size)` does; SAM 2's masks already have it.
    mask_size: Option<i64>,
}

impl MemoryEncoder {
    /// `w` = `memory_encoder`.
    pub fn new(w: &Weights) -> Result<Self, WeightsError> {
        Ok(MemoryEncoder {
            mask_downsampler: MaskDownSampler::new(&w.pp("mask_downsampler"))?,
            pix_feat_proj: Conv2d::new(
                &w.pp("pix_feat_proj"),
                D_MODEL,
                D_MODEL,
                1,
                ConvCfg::default(),
            )?,
            fuser: (0..2)
                .map(|i| CxBlock::new(&w.pp("fuser").pp("layers").pp(i), D_MODEL))
                .collect::<Result<Vec<_>, _>>()?,
            out_proj: Conv2d::new(&w.pp("out_proj"), D_MODEL, MEM_DIM, 1, ConvCfg::default())?,
            pos: RefCell::new(None),
            mask_size: None,
        })
    }

    /// Masks are resized to `side` before the downsampler when they have another size.
    pub fn with_mask_size(mut self, side: i64) -> Self {
        self.mask_size = Some(side);
        self
    }

    /// `pix_feat [B, 256, f, f]` (raw L2 features), `masks [B, 1, S, S]` already scaled
    /// (`skip_mask_sigmoid=True`) -> `(features [B, 64, f, f], pos [B, 64, f, f])`.
    pub fn forward(&self, pix_feat: &Tensor, masks: &Tensor) -> (Tensor, Tensor) {
        let sz = masks.size();
        let m = match self.mask_size {
            Some(side) if sz[2] != side || sz[3] != side => {
                let resized = masks
                    .to_kind(tch::Kind::Float)
                    .internal_upsample_bilinear2d_aa([side, side], false, None, None);
                self.mask_downsampler.forward(&resized)
            }
            _ => self.mask_downsampler.forward(masks),
        };
        let mut x = self.pix_feat_proj.forward(pix_feat) + m;
        for blk in &self.fuser {
            x = blk.forward(&x);
        }
        let x = self.out_proj.forward(&x);
        let sz = x.size();
        let pos = self
            .sine_pe(sz[2], sz[3], x.device())
            .to_kind(x.kind())
            .expand([sz[0], -1, -1, -1], false);
        (x, pos)
    }

    /// `sine_pe_2d(64, h, w)` (docs/sam2-inference.md §3.3), built once per grid size rather
    /// than per call (a constant; the same values).
    fn sine_pe(&self, h: i64, w: i64, device: tch::Device) -> Tensor {
        let mut c = self.pos.borrow_mut();
        match &*c {
            Some((hw, t)) if *hw == (h, w) && t.device() == device => t.shallow_clone(),
            _ => {
                let t = position_encoding::sine_pe_2d(MEM_DIM, h, w, device);
                *c = Some(((h, w), t.shallow_clone()));
                t
            }
        }
    }
}
