//! The SAM prompt encoder (`sam_prompt_encoder`, official `sam/prompt_encoder.py`,
//! docs/sam2-inference.md §3.4): point/box-corner tokens from the random-Fourier position
//! encoding plus learned label embeddings, and the dense embedding (`no_mask_embed`, or a
//! downscaled mask prompt).

use tch::{Kind, Tensor};

use super::config::D_MODEL;
use super::layers::{Conv2d, ConvCfg, LayerNorm2d, gelu};
use super::position_encoding::PositionEmbeddingRandom;
use super::weights::{Weights, WeightsError};

/// The prompt encoder of the SAM heads.
#[derive(Debug)]
pub struct PromptEncoder {
    pub pe_layer: PositionEmbeddingRandom,
    /// `point_embeddings.{0..3}.weight`, each `[1, 256]` (neg, pos, box TL, box BR).
    pub point_embeddings: Vec<Tensor>,
    pub not_a_point_embed: Tensor,
    pub no_mask_embed: Tensor,
    pub mask_convs: [Conv2d; 3],
    pub mask_norms: [LayerNorm2d; 2],
    /// Model input size S (`input_image_size`).
    pub image_size: i64,
    /// Image embedding side f = S/16.
    pub embed_size: i64,
}

impl PromptEncoder {
    /// `w` = `sam_prompt_encoder`; `embed_size` the image embedding's side (S/16 for SAM 2,
    /// S/14 for SAM 3).
    pub fn new(w: &Weights, image_size: i64, embed_size: i64) -> Result<Self, WeightsError> {
        let pe_layer = PositionEmbeddingRandom::new(&w.pp("pe_layer"), 128)?;
        let point_embeddings = (0..4)
            .map(|i| w.pp("point_embeddings").pp(i).get("weight", &[1, D_MODEL]))
            .collect::<Result<Vec<_>, _>>()?;
        let md = w.pp("mask_downscaling");
        let k2 = ConvCfg {
            stride: 2,
            ..Default::default()
        };
        Ok(PromptEncoder {
            pe_layer,
            point_embeddings,
            not_a_point_embed: w.pp("not_a_point_embed").get("weight", &[1, D_MODEL])?,
            no_mask_embed: w.pp("no_mask_embed").get("weight", &[1, D_MODEL])?,
            mask_convs: [
                Conv2d::new(&md.pp(0), 1, 4, 2, k2)?,
                Conv2d::new(&md.pp(3), 4, 16, 2, k2)?,
                Conv2d::new(&md.pp(6), 16, D_MODEL, 1, ConvCfg::default())?,
            ],
            mask_norms: [
                LayerNorm2d::new(&md.pp(1), 4, 1e-6)?,
                LayerNorm2d::new(&md.pp(4), 16, 1e-6)?,
            ],
            image_size,
            embed_size,
        })
    }

    /// Side of the mask prompt the dense path takes (4f = S/4).
    pub fn mask_input_size(&self) -> i64 {
        4 * self.embed_size
    }

    /// `get_dense_pe`: `[1, 256, f, f]`.
    pub fn dense_pe(&self) -> Tensor {
        self.pe_layer.dense(self.embed_size, self.embed_size)
    }

    /// Point tokens with the padding point appended (`pad=True`):
    /// `coords [B, N, 2]` in model-input pixels, `labels [B, N]` (-1 pad, 0 neg, 1 pos, 2/3 box)
    /// -> `[B, N+1, 256]`.
    pub fn embed_points(&self, coords: &Tensor, labels: &Tensor) -> Tensor {
        let dev = coords.device();
        let b = coords.size()[0];
        let points = coords.to_kind(Kind::Float) + 0.5;
        let points = Tensor::cat(&[points, Tensor::zeros([b, 1, 2], (Kind::Float, dev))], 1);
        let labels = Tensor::cat(
            &[
                labels.to_kind(Kind::Int64),
                Tensor::full([b, 1], -1, (Kind::Int64, dev)),
            ],
            1,
        );
        let mut pe = self
            .pe_layer
            .encode_coords(&points, (self.image_size, self.image_size));
        let is = |v: i64| labels.eq(v).unsqueeze(-1);
        // torch.where(cond, a, b) == a.where_self(cond, b)
        pe = (pe.zeros_like() + &self.not_a_point_embed).where_self(&is(-1), &pe);
        for (l, emb) in self.point_embeddings.iter().enumerate() {
            pe = (&pe + emb).where_self(&is(l as i64), &pe);
        }
        pe
    }

    /// Dense embedding of a mask prompt `[B, 1, 4f, 4f]` -> `[B, 256, f, f]`.
    pub fn embed_mask(&self, masks: &Tensor) -> Tensor {
        let x = self.mask_convs[0].forward(masks);
        let x = gelu(&self.mask_norms[0].forward(&x));
        let x = self.mask_convs[1].forward(&x);
        let x = gelu(&self.mask_norms[1].forward(&x));
        self.mask_convs[2].forward(&x)
    }

    /// The official forward with `boxes=None`: `(sparse [B, N+1, 256], dense [B, 256, f, f])`.
    /// `masks`, when given, must already be `[B, 1, 4f, 4f]`.
    pub fn forward(
        &self,
        coords: &Tensor,
        labels: &Tensor,
        masks: Option<&Tensor>,
    ) -> (Tensor, Tensor) {
        let b = coords.size()[0];
        let sparse = self.embed_points(coords, labels);
        let dense = match masks {
            Some(m) => self.embed_mask(m),
            None => self
                .no_mask_embed
                .reshape([1, -1, 1, 1])
                .expand([b, -1, self.embed_size, self.embed_size], false),
        };
        (sparse, dense)
    }
}
