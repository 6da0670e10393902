//! The ViT trunk of SAM 3's image encoder (`sam3/model/vitdet.py`, docs/sam3-tracker.md §2.1):
//! a 14×14 patch embedding without bias, the absolute position embedding pretrained on a 24×24
//! grid (its class-token row dropped) tiled over the patch grid, `ln_pre`, and 32 pre-norm blocks
//! with 2-D axial rotary encoding in every attention, windowed (24×24, zero-padded) except the
//! global blocks. Only the last block's output leaves the trunk.
//!
//! The rotation tables (`freqs_cis`, complex) are not learned: they are computed here for the
//! image size in use (a window block's from its 24×24 window, a global block's from the whole
//! grid, its positions scaled by 24/grid as `use_interp_rope` does) and the checkpoint's copies
//! are never read. Every forward mirrors the official sequence of tensor operations, so fp32
//! results match the official package to rounding.

use tch::Tensor;

use super::config::VitConfig;
use super::hiera::{window_partition, window_unpartition};
use super::layers::{Conv2d, LayerNorm, Linear, gelu, sdpa};
use super::position_encoding::{axial_rope_cis_scaled, rotate};
use super::weights::{Weights, WeightsError};

/// LayerNorm eps of the ViT (`nn.LayerNorm` default).
const NORM_EPS: f64 = 1e-5;
/// `rope_theta`.
const ROPE_THETA: f64 = 10000.0;

/// Attention with fused qkv, rotary q and k, SDPA, output projection.
#[derive(Debug)]
pub struct VitAttention {
    pub qkv: Linear,
    pub proj: Linear,
    pub num_heads: i64,
}

impl VitAttention {
    /// `x [B, H, W, C]` with `freqs_cis [H·W, head_dim/2]` -> `[B, H, W, C]`.
    pub fn forward(&self, x: &Tensor, freqs_cis: &Tensor) -> Tensor {
        let s = x.size();
        let (b, h, w) = (s[0], s[1], s[2]);
        let l = h * w;
        let qkv = self
            .qkv
            .forward(x)
            .reshape([b, l, 3, self.num_heads, -1])
            .permute([2, 0, 3, 1, 4]);
        let parts = qkv.unbind(0);
        let q = rotate(&parts[0], freqs_cis);
        let k = rotate(&parts[1], freqs_cis);
        let y = sdpa(&q, &k, &parts[2], None);
        let y = y
            .view([b, self.num_heads, h, w, -1])
            .permute([0, 2, 3, 1, 4])
            .reshape([b, h, w, -1]);
        self.proj.forward(&y)
    }
}

/// One ViT block: `x + attn(norm1(x))` (in windows unless global), then `x + mlp(norm2(x))`.
#[derive(Debug)]
pub struct VitBlock {
    pub norm1: LayerNorm,
    pub attn: VitAttention,
    pub norm2: LayerNorm,
    pub fc1: Linear,
    pub fc2: Linear,
    /// 0 = global attention.
    pub window_size: i64,
}

impl VitBlock {
    /// `x [B, H, W, C] -> [B, H, W, C]`; `freqs_cis` is the table of this block's attention
    /// extent (the window, or the whole grid for a global block).
    pub fn forward(&self, x: &Tensor, freqs_cis: &Tensor) -> Tensor {
        let s = x.size();
        let (h, w) = (s[1], s[2]);
        let y = self.norm1.forward(x);
        let y = if self.window_size > 0 {
            let (win, pad_hw) = window_partition(&y, self.window_size);
            let a = self.attn.forward(&win, freqs_cis);
            window_unpartition(&a, self.window_size, pad_hw, (h, w))
        } else {
            self.attn.forward(&y, freqs_cis)
        };
        let x = x + y;
        let m = self
            .fc2
            .forward(&gelu(&self.fc1.forward(&self.norm2.forward(&x))));
        x + m
    }
}

/// The ViT trunk.
#[derive(Debug)]
pub struct Vit {
    pub config: VitConfig,
    /// `[C, 3, p, p]`, no bias.
    pub patch_embed: Conv2d,
    /// `[1, 1 + g0², C]` (class token first; `g0` = the pretraining grid).
    pub pos_embed: Tensor,
    pub ln_pre: LayerNorm,
    pub blocks: Vec<VitBlock>,
    /// The tables and position embedding of one patch grid, computed once.
    cached: Option<GridTables>,
}

/// What depends only on the patch grid `g × g`.
#[derive(Debug)]
struct GridTables {
    grid: i64,
    /// Rotation of a window block (`[ws², hd/2]`).
    window_cis: Tensor,
    /// Rotation of a global block (`[g², hd/2]`).
    global_cis: Tensor,
    /// Tiled position embedding, NHWC `[1, g, g, C]`.
    pos: Tensor,
}

impl Vit {
    /// `w` is the trunk's path (`backbone.vision_backbone.trunk` in the tracker's names).
    pub fn new(w: &Weights, cfg: &VitConfig) -> Result<Self, WeightsError> {
        let c = cfg.embed_dim;
        let patch_embed = Conv2d::new_no_bias(
            &w.pp("patch_embed").pp("proj"),
            3,
            c,
            cfg.patch_size,
            cfg.patch_size,
        )?;
        let g0 = cfg.pretrain_grid;
        let pos_embed = w.get("pos_embed", &[1, 1 + g0 * g0, c])?;
        let ln_pre = LayerNorm::new(&w.pp("ln_pre"), c, NORM_EPS)?;
        let mut blocks = Vec::with_capacity(cfg.depth);
        for i in 0..cfg.depth {
            let b = w.pp("blocks").pp(i);
            // The stored rotation tables were skipped by the reader (module doc).
            let a = b.pp("attn");
            blocks.push(VitBlock {
                norm1: LayerNorm::new(&b.pp("norm1"), c, NORM_EPS)?,
                attn: VitAttention {
                    qkv: Linear::new(&a.pp("qkv"), c, 3 * c)?,
                    proj: Linear::new(&a.pp("proj"), c, c)?,
                    num_heads: cfg.num_heads,
                },
                norm2: LayerNorm::new(&b.pp("norm2"), c, NORM_EPS)?,
                fc1: Linear::new(&b.pp("mlp").pp("fc1"), c, cfg.mlp_hidden)?,
                fc2: Linear::new(&b.pp("mlp").pp("fc2"), cfg.mlp_hidden, c)?,
                window_size: if cfg.global_att_blocks.contains(&i) {
                    0
                } else {
                    cfg.window_size
                },
            });
        }
        Ok(Vit {
            config: cfg.clone(),
            patch_embed,
            pos_embed,
            ln_pre,
            blocks,
            cached: None,
        })
    }

    /// Precomputes the grid-dependent tables for `image_size` inputs; other sizes still work,
    /// computing theirs on every call.
    pub fn with_image_size(mut self, image_size: i64) -> Self {
        let _guard = tch::no_grad_guard();
        self.cached = Some(self.tables(image_size / self.config.patch_size));
        self
    }

    fn tables(&self, g: i64) -> GridTables {
        let cfg = &self.config;
        let hd = cfg.embed_dim / cfg.num_heads;
        let dev = self.pos_embed.device();
        let ws = cfg.window_size;
        // `rope_pt_size` is the window: positions scaled by window / extent (1 in a window).
        let window_cis = axial_rope_cis_scaled(hd, ws, ws, ROPE_THETA, 1.0, dev);
        let global_cis = axial_rope_cis_scaled(hd, g, g, ROPE_THETA, ws as f64 / g as f64, dev);
        GridTables {
            grid: g,
            window_cis,
            global_cis,
            pos: self.pos_embed_for(g),
        }
    }

    /// `get_abs_pos(pos_embed, has_cls_token, (g, g), tiling=True)`: NHWC `[1, g, g, C]`.
    pub fn pos_embed_for(&self, g: i64) -> Tensor {
        let g0 = self.config.pretrain_grid;
        let abs = self.pos_embed.narrow(1, 1, g0 * g0);
        if g == g0 {
            return abs.reshape([1, g, g, -1]);
        }
        let p = abs.reshape([1, g0, g0, -1]).permute([0, 3, 1, 2]);
        let reps = g / g0 + 1;
        p.tile([1, 1, reps, reps])
            .narrow(2, 0, g)
            .narrow(3, 0, g)
            .permute([0, 2, 3, 1])
    }

    /// `images [B, 3, S, S]` (normalised) -> `[B, C, S/p, S/p]`, the last block's output.
    pub fn forward(&self, images: &Tensor) -> Tensor {
        let x = self.patch_embed.forward(images).permute([0, 2, 3, 1]);
        let g = x.size()[1];
        let owned;
        let t = match &self.cached {
            Some(t) if t.grid == g => t,
            _ => {
                owned = self.tables(g);
                &owned
            }
        };
        let mut x = self.ln_pre.forward(&(&x + &t.pos));
        for blk in &self.blocks {
            let cis = if blk.window_size > 0 {
                &t.window_cis
            } else {
                &t.global_cis
            };
            x = blk.forward(&x, cis);
        }
        x.permute([0, 3, 1, 2])
    }

    /// The output's channel count.
    pub fn channels(&self) -> i64 {
        self.config.embed_dim
    }
}
