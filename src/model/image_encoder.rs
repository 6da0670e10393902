//! The image encoder (`backbones/image_encoder.py`, docs/sam2-inference.md §3.1–§3.2): for SAM 2
//! the Hiera trunk, the FPN neck (1×1 lateral convolutions, nearest ×2 top-down fusion into
//! levels 2 and 3 only) and the scalp that drops the coarsest level; for SAM 3 the ViT trunk and
//! its simple FPN ([`super::vit`], [`super::vit_neck`]). Both give three 256-channel levels at
//! 4×, 2× and 1× the embedding size, plus the 2-D sine position encoding of the level that
//! memory attention and the mask decoder use (L2, stride 16 or 14).
//!
//! `conv_s0` / `conv_s1` (the mask decoder's projections of L0 / L1) are applied by
//! `Sam2Model::encode_image`, which owns the mask decoder; [`ImageEncoder::forward_with`]
//! takes them as arguments for callers (tests, benches) that hold them separately.

use tch::Tensor;

use super::config::{BackboneConfig, D_MODEL, HieraConfig, Sam2Config};
use super::hiera::Hiera;
use super::layers::{Conv2d, ConvCfg};
use super::position_encoding::sine_pe_2d;
use super::vit::Vit;
use super::vit_neck::SimpleFpn;
use super::weights::{Weights, WeightsError};

/// `FpnNeck(d_model=256, kernel 1, nearest, sum, top-down levels [2, 3])`.
#[derive(Debug)]
pub struct FpnNeck {
    /// `convs[j]` projects trunk level `3 - j` (coarsest first, as in the checkpoint).
    pub convs: Vec<Conv2d>,
}

impl FpnNeck {
    /// `w` is the `image_encoder.neck` path.
    pub fn new(w: &Weights, cfg: &HieraConfig) -> Result<Self, WeightsError> {
        let convs = cfg
            .backbone_channel_list()
            .iter()
            .enumerate()
            .map(|(j, &c)| {
                Conv2d::new(
                    &w.pp("convs").pp(j).pp("conv"),
                    c,
                    D_MODEL,
                    1,
                    ConvCfg::default(),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(FpnNeck { convs })
    }

    /// Trunk outputs (finest first) -> the four FPN levels (finest first), each 256 channels.
    /// Levels 3 and 2 get the top-down path; levels 1 and 0 are lateral only.
    pub fn forward(&self, xs: &[Tensor]) -> Vec<Tensor> {
        let n = self.convs.len() - 1;
        let mut out: Vec<Option<Tensor>> = (0..=n).map(|_| None).collect();
        let mut prev: Option<Tensor> = None;
        for i in (0..=n).rev() {
            let lateral = self.convs[n - i].forward(&xs[i]);
            let cur = match (&prev, i >= 2) {
                (Some(p), true) => {
                    let s = p.size();
                    let top = p.to_kind(tch::Kind::Float).upsample_nearest2d(
                        [s[2] * 2, s[3] * 2],
                        2.0,
                        2.0,
                    );
                    lateral + top
                }
                _ => lateral,
            };
            out[i] = Some(cur.shallow_clone());
            prev = Some(cur);
        }
        out.into_iter().flatten().collect()
    }
}

/// A trunk and its neck.
#[derive(Debug)]
pub enum Backbone {
    Hiera {
        trunk: Hiera,
        neck: FpnNeck,
    },
    Vit {
        trunk: Box<Vit>,
        neck: Box<SimpleFpn>,
    },
}

/// The image encoder: trunk, neck, scalp 1.
#[derive(Debug)]
pub struct ImageEncoder {
    pub backbone: Backbone,
    /// Sine PE of L2 `[1, 256, f, f]` for the configured image size (a constant).
    pos_l2: Tensor,
    image_size: i64,
}

/// The outputs of [`ImageEncoder::forward`] for a batch of B images.
#[derive(Debug)]
pub struct ImageEncoderOut {
    /// `backbone_fpn` after the scalp, finest first: `L0 [B,256,4f,4f]`, `L1 [B,256,2f,2f]`,
    /// `L2 [B,256,f,f]` (`vision_features` = L2). L0/L1 are *before* `conv_s0` / `conv_s1`.
    pub fpn: Vec<Tensor>,
    /// `[B, 256, f, f]` sine PE of L2 (`vision_pos_enc[2]`), an expanded view of a constant.
    pub pos: Tensor,
}

impl ImageEncoder {
    /// `w` is the `image_encoder` path; the image size comes from `config`.
    pub fn new(w: &Weights, config: &Sam2Config) -> Result<Self, WeightsError> {
        let s = config.image_size;
        let (backbone, device) = match &config.backbone {
            BackboneConfig::Hiera(h) => {
                let trunk = Hiera::new(&w.pp("trunk"), h)?.with_image_size(s);
                let device = trunk.pos_embed.device();
                let neck = FpnNeck::new(&w.pp("neck"), h)?;
                (Backbone::Hiera { trunk, neck }, device)
            }
            BackboneConfig::Vit(v) => {
                let trunk = Box::new(Vit::new(&w.pp("trunk"), v)?.with_image_size(s));
                let device = trunk.pos_embed.device();
                let neck = Box::new(SimpleFpn::new(&w.pp("neck"), v.embed_dim)?);
                (Backbone::Vit { trunk, neck }, device)
            }
        };
        let f = config.feat_size();
        let pos_l2 = sine_pe_2d(D_MODEL, f, f, device);
        Ok(ImageEncoder {
            backbone,
            pos_l2,
            image_size: s,
        })
    }

    /// The trunk's outputs: Hiera's four stages (finest first) or the ViT's one map.
    pub fn trunk_forward(&self, images: &Tensor) -> Vec<Tensor> {
        match &self.backbone {
            Backbone::Hiera { trunk, .. } => trunk.forward(images),
            Backbone::Vit { trunk, .. } => vec![trunk.forward(images)],
        }
    }

    /// The configured input size S.
    pub fn image_size(&self) -> i64 {
        self.image_size
    }

    /// `images [B, 3, S, S]` (normalised) -> FPN levels L0..L2 and the PE of L2.
    pub fn forward(&self, images: &Tensor) -> ImageEncoderOut {
        self.forward_from_trunk(&self.trunk_forward(images))
    }

    /// The neck, scalp and PE on given trunk outputs ([`Self::trunk_forward`]).
    pub fn forward_from_trunk(&self, trunk: &[Tensor]) -> ImageEncoderOut {
        let fpn = match &self.backbone {
            Backbone::Hiera { neck, .. } => {
                let mut fpn = neck.forward(trunk);
                fpn.truncate(fpn.len() - 1); // scalp = 1
                fpn
            }
            // The simple FPN's fourth level is the one the scalp drops: never computed.
            Backbone::Vit { neck, .. } => neck.forward(&trunk[0]),
        };
        let l2 = &fpn[fpn.len() - 1];
        let s = l2.size();
        let pos = if s[2] == self.pos_l2.size()[2] && s[3] == self.pos_l2.size()[3] {
            self.pos_l2
                .to_kind(l2.kind())
                .expand([s[0], -1, -1, -1], false)
        } else {
            sine_pe_2d(D_MODEL, s[2], s[3], l2.device())
                .to_kind(l2.kind())
                .expand([s[0], -1, -1, -1], false)
        };
        ImageEncoderOut { fpn, pos }
    }

    /// `forward_image`: [`ImageEncoder::forward`] followed by the mask decoder's `conv_s0` on
    /// L0 and `conv_s1` on L1. Returns `(vision_feat L2, vision_pos, feat_s0, feat_s1)`.
    pub fn forward_with(
        &self,
        images: &Tensor,
        conv_s0: &Conv2d,
        conv_s1: &Conv2d,
    ) -> (Tensor, Tensor, Tensor, Tensor) {
        let ImageEncoderOut { fpn, pos } = self.forward(images);
        let s0 = conv_s0.forward(&fpn[0]);
        let s1 = conv_s1.forward(&fpn[1]);
        (fpn[2].shallow_clone(), pos, s0, s1)
    }
}
