//! The Hiera trunk of the SAM 2 image encoder (`backbones/hieradet.py`,
//! docs/sam2-inference.md §3.1): patch embedding, the interpolated background + tiled window
//! positional embedding, and the multi-scale blocks (windowed or global attention, query pooling
//! at stage changes).
//!
//! Every forward mirrors the official sequence of tensor operations, layouts included (the
//! NHWC views of NCHW tensors decide which convolution kernels run), so that fp32 results match
//! the official package to rounding. Windows are zero-padded after `norm1` and attend to the
//! padding without a mask, as the official code does.

use tch::Tensor;

use super::config::HieraConfig;
use super::layers::{Conv2d, ConvCfg, LayerNorm, Linear, gelu, sdpa};
use super::weights::{Weights, WeightsError};

/// LayerNorm eps of the Hiera blocks.
const NORM_EPS: f64 = 1e-6;

/// `[B, C, H, W] -> [B, C, H/2, W/2]`, `nn.MaxPool2d(2, 2)` applied to an NHWC tensor (`do_pool`).
fn pool_nhwc(x: &Tensor) -> Tensor {
    x.permute([0, 3, 1, 2])
        .max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false)
        .permute([0, 2, 3, 1])
}

/// Pads `x [B, H, W, C]` with zeros at the bottom/right to multiples of `ws` and cuts it into
/// windows `[B·nW, ws, ws, C]` (row-major over windows, then tokens). Returns the padded size.
pub fn window_partition(x: &Tensor, ws: i64) -> (Tensor, (i64, i64)) {
    let s = x.size();
    let (b, h, w, c) = (s[0], s[1], s[2], s[3]);
    let pad_h = (ws - h % ws) % ws;
    let pad_w = (ws - w % ws) % ws;
    let x = if pad_h > 0 || pad_w > 0 {
        x.constant_pad_nd([0, 0, 0, pad_w, 0, pad_h])
    } else {
        x.shallow_clone()
    };
    let (hp, wp) = (h + pad_h, w + pad_w);
    let windows = x
        .reshape([b, hp / ws, ws, wp / ws, ws, c])
        .permute([0, 1, 3, 2, 4, 5])
        .reshape([-1, ws, ws, c]);
    (windows, (hp, wp))
}

/// The inverse of [`window_partition`]: `[B·nW, ws, ws, C] -> [B, H, W, C]`, padding cropped.
pub fn window_unpartition(windows: &Tensor, ws: i64, pad_hw: (i64, i64), hw: (i64, i64)) -> Tensor {
    let (hp, wp) = pad_hw;
    let (h, w) = hw;
    let b = windows.size()[0] / (hp * wp / ws / ws);
    let x = windows
        .reshape([b, hp / ws, wp / ws, ws, ws, -1])
        .permute([0, 1, 3, 2, 4, 5])
        .reshape([b, hp, wp, -1]);
    if hp > h || wp > w {
        x.slice(1, 0, h, 1).slice(2, 0, w, 1)
    } else {
        x
    }
}

/// `MultiScaleAttention`: fused qkv projection, optional 2×2 query max-pooling, SDPA, output
/// projection.
#[derive(Debug)]
pub struct MultiScaleAttention {
    pub qkv: Linear,
    pub proj: Linear,
    pub num_heads: i64,
    pub q_pool: bool,
}

impl MultiScaleAttention {
    /// `[B, H, W, dim] -> [B, H', W', dim_out]` (H' = H/2 with query pooling).
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let s = x.size();
        let (b, mut h, mut w) = (s[0], s[1], s[2]);
        let qkv = self
            .qkv
            .forward(x)
            .reshape([b, h * w, 3, self.num_heads, -1]);
        let parts = qkv.unbind(2);
        let (mut q, k, v) = (parts[0].shallow_clone(), &parts[1], &parts[2]);
        if self.q_pool {
            let pooled = pool_nhwc(&q.reshape([b, h, w, -1]));
            let ps = pooled.size();
            (h, w) = (ps[1], ps[2]);
            q = pooled.reshape([b, h * w, self.num_heads, -1]);
        }
        let x = sdpa(
            &q.transpose(1, 2),
            &k.transpose(1, 2),
            &v.transpose(1, 2),
            None,
        );
        let x = x.transpose(1, 2).reshape([b, h, w, -1]);
        self.proj.forward(&x)
    }
}

/// `MultiScaleBlock(dim, dim_out, heads, window, q_stride)`.
#[derive(Debug)]
pub struct MultiScaleBlock {
    pub dim: i64,
    pub dim_out: i64,
    pub norm1: LayerNorm,
    pub attn: MultiScaleAttention,
    pub norm2: LayerNorm,
    pub mlp0: Linear,
    pub mlp1: Linear,
    /// The shortcut projection of a stage change (`dim != dim_out`).
    pub proj: Option<Linear>,
    /// 0 = global attention.
    pub window_size: i64,
    /// Query pooling (the first block of stages 2–4).
    pub q_stride: bool,
}

impl MultiScaleBlock {
    pub fn new(
        w: &Weights,
        dim: i64,
        dim_out: i64,
        num_heads: i64,
        window_size: i64,
        q_stride: bool,
    ) -> Result<Self, WeightsError> {
        Ok(MultiScaleBlock {
            dim,
            dim_out,
            norm1: LayerNorm::new(&w.pp("norm1"), dim, NORM_EPS)?,
            attn: MultiScaleAttention {
                qkv: Linear::new(&w.pp("attn").pp("qkv"), dim, 3 * dim_out)?,
                proj: Linear::new(&w.pp("attn").pp("proj"), dim_out, dim_out)?,
                num_heads,
                q_pool: q_stride,
            },
            norm2: LayerNorm::new(&w.pp("norm2"), dim_out, NORM_EPS)?,
            mlp0: Linear::new(&w.pp("mlp").pp("layers").pp(0), dim_out, 4 * dim_out)?,
            mlp1: Linear::new(&w.pp("mlp").pp("layers").pp(1), 4 * dim_out, dim_out)?,
            proj: if dim != dim_out {
                Some(Linear::new(&w.pp("proj"), dim, dim_out)?)
            } else {
                None
            },
            window_size,
            q_stride,
        })
    }

    /// `[B, H, W, dim] -> [B, H', W', dim_out]`.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let s = x.size();
        let (mut h, mut w) = (s[1], s[2]);
        let mut shortcut = x.shallow_clone();
        let xn = self.norm1.forward(x);
        if let Some(proj) = &self.proj {
            let p = proj.forward(&xn);
            shortcut = if self.q_stride { pool_nhwc(&p) } else { p };
        }
        let mut window_size = self.window_size;
        let mut pad_hw = (h, w);
        let mut y = xn;
        if window_size > 0 {
            let (win, p) = window_partition(&y, window_size);
            y = win;
            pad_hw = p;
        }
        y = self.attn.forward(&y);
        if self.q_stride {
            window_size = self.window_size / 2;
            let ss = shortcut.size();
            (h, w) = (ss[1], ss[2]);
            if window_size > 0 {
                let pad_h = (window_size - h % window_size) % window_size;
                let pad_w = (window_size - w % window_size) % window_size;
                pad_hw = (h + pad_h, w + pad_w);
            }
        }
        if self.window_size > 0 {
            y = window_unpartition(&y, window_size, pad_hw, (h, w));
        }
        let x = shortcut + y;
        let m = self
            .mlp1
            .forward(&gelu(&self.mlp0.forward(&self.norm2.forward(&x))));
        x + m
    }
}

/// The Hiera trunk.
#[derive(Debug)]
pub struct Hiera {
    pub patch_embed: Conv2d,
    /// `[1, C, bh, bw]`, interpolated (bicubic) to the patch grid.
    pub pos_embed: Tensor,
    /// `[1, C, w0, w0]`, tiled over the patch grid.
    pub pos_embed_window: Tensor,
    pub blocks: Vec<MultiScaleBlock>,
    /// Index of the last block of each stage.
    pub stage_ends: Vec<usize>,
    /// [`Hiera::pos_embed_for`] of the expected patch grid (a constant), computed once.
    cached_pos: Option<((i64, i64), Tensor)>,
}

impl Hiera {
    /// `w` is the `image_encoder.trunk` path.
    pub fn new(w: &Weights, cfg: &HieraConfig) -> Result<Self, WeightsError> {
        let c0 = cfg.embed_dim;
        let patch_embed = Conv2d::new(
            &w.pp("patch_embed").pp("proj"),
            3,
            c0,
            7,
            ConvCfg {
                stride: 4,
                padding: 3,
                groups: 1,
            },
        )?;
        let pos_embed = w.get(
            "pos_embed",
            &[1, c0, cfg.bkg_pos_size.0, cfg.bkg_pos_size.1],
        )?;
        let w0 = cfg.window_spec[0];
        let pos_embed_window = w.get("pos_embed_window", &[1, c0, w0, w0])?;

        let depth: usize = cfg.stages.iter().sum();
        let mut stage_ends = Vec::with_capacity(cfg.stages.len());
        let mut acc = 0;
        for &s in &cfg.stages {
            acc += s;
            stage_ends.push(acc - 1);
        }
        // q_pool = 3: the first block of every stage after the first.
        let q_pool_blocks: Vec<usize> = stage_ends[..stage_ends.len() - 1]
            .iter()
            .map(|e| e + 1)
            .collect();

        let mut blocks = Vec::with_capacity(depth);
        let mut embed_dim = c0;
        let mut num_heads = cfg.num_heads;
        let mut cur_stage = 1;
        for i in 0..depth {
            let mut dim_out = embed_dim;
            // The window lags by one block: a stage's first block uses the previous window.
            let mut window = cfg.window_spec[cur_stage - 1];
            if cfg.global_att_blocks.contains(&i) {
                window = 0;
            }
            if i >= 1 && stage_ends.contains(&(i - 1)) {
                dim_out = embed_dim * 2;
                num_heads *= 2;
                cur_stage += 1;
            }
            blocks.push(MultiScaleBlock::new(
                &w.pp("blocks").pp(i),
                embed_dim,
                dim_out,
                num_heads,
                window,
                q_pool_blocks.contains(&i),
            )?);
            embed_dim = dim_out;
        }
        Ok(Hiera {
            patch_embed,
            pos_embed,
            pos_embed_window,
            blocks,
            stage_ends,
            cached_pos: None,
        })
    }

    /// Precomputes the positional embedding for `image_size` inputs (patch grid `S/4`); other
    /// sizes still work, computing theirs on every call as the official code does.
    pub fn with_image_size(mut self, image_size: i64) -> Self {
        let g = image_size / 4;
        let _guard = tch::no_grad_guard();
        self.cached_pos = Some(((g, g), self.pos_embed_for(g, g)));
        self
    }

    /// The positional embedding of an `h × w` patch grid, NHWC `[1, h, w, C]`.
    pub fn pos_embed_for(&self, h: i64, w: i64) -> Tensor {
        let pe = self.pos_embed.upsample_bicubic2d([h, w], false, None, None);
        let ws = self.pos_embed_window.size();
        let tiled = self.pos_embed_window.repeat([1, 1, h / ws[2], w / ws[3]]);
        (pe + tiled).permute([0, 2, 3, 1])
    }

    /// `images [B, 3, S, S]` -> the four stage outputs (NCHW views), finest first:
    /// `[B, C, S/4, S/4], [B, 2C, S/8, S/8], [B, 4C, S/16, S/16], [B, 8C, S/32, S/32]`.
    pub fn forward(&self, images: &Tensor) -> Vec<Tensor> {
        let x = self.patch_embed.forward(images).permute([0, 2, 3, 1]);
        let s = x.size();
        let pos = match &self.cached_pos {
            Some((hw, p)) if *hw == (s[1], s[2]) => p.shallow_clone(),
            _ => self.pos_embed_for(s[1], s[2]),
        };
        // Under autocast the bf16 patch embedding + the f32 embedding promotes to f32, as in
        // the official `x + self._get_pos_embed(...)`.
        let mut x = &x + pos;
        let mut outputs = Vec::with_capacity(self.stage_ends.len());
        for (i, blk) in self.blocks.iter().enumerate() {
            x = blk.forward(&x);
            if self.stage_ends.contains(&i) {
                outputs.push(x.permute([0, 3, 1, 2]));
            }
        }
        outputs
    }

    /// Channel widths of the stage outputs, finest first.
    pub fn channels(&self) -> Vec<i64> {
        self.stage_ends
            .iter()
            .map(|&e| self.blocks[e].dim_out)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn window_roundtrip_with_padding() {
        let x = Tensor::randn([2, 9, 10, 3], (Kind::Float, Device::Cpu));
        let (win, pad) = window_partition(&x, 4);
        assert_eq!(pad, (12, 12));
        assert_eq!(win.size(), [2 * 9, 4, 4, 3]);
        // window 1 of image 0 holds rows 0..4, cols 4..8
        let d = (win.get(1) - x.get(0).slice(0, 0, 4, 1).slice(1, 4, 8, 1))
            .abs()
            .max();
        assert_eq!(d.double_value(&[]), 0.0);
        // the last window of a row is zero-padded on the right
        assert_eq!(
            win.get(2).slice(1, 2, 4, 1).abs().max().double_value(&[]),
            0.0
        );
        let back = window_unpartition(&win, 4, pad, (9, 10));
        assert_eq!((back - &x).abs().max().double_value(&[]), 0.0);
    }
}
