//! The SAM mask decoder (`sam_mask_decoder`, official `sam/mask_decoder.py`,
//! docs/sam2-inference.md §3.5): output tokens (object score, IoU, 4 mask tokens) + prompt tokens
//! through the two-way transformer, upscaling with the high-res features, hypernetwork masks, IoU
//! and object-score heads, and the multimask / single-mask (dynamic stability fallback)
//! selection.

use tch::{Kind, Tensor};

use super::config::D_MODEL;
use super::layers::{self, Conv2d, ConvCfg, ConvTranspose2d, LayerNorm2d, Mlp, gelu};
use super::two_way_transformer::TwoWayTransformer;
use super::weights::{Weights, WeightsError};

/// Number of mask tokens (1 single-mask + 3 multimask).
pub const NUM_MASK_TOKENS: i64 = 4;
const STABILITY_DELTA: f64 = 0.05;
const STABILITY_THRESH: f64 = 0.98;

/// Outputs of [`MaskDecoder::forward`].
#[derive(Debug)]
pub struct DecoderOutput {
    /// `[B, M, 4f, 4f]` mask logits, M = 3 (multimask) or 1.
    pub masks: Tensor,
    /// `[B, M]` predicted IoUs (sigmoid).
    pub ious: Tensor,
    /// `[B, M', 256]` tokens for the object pointer: `mask_tokens_out[:, 1:4]` with multimask,
    /// `mask_tokens_out[:, 0:1]` otherwise (even when the stability fallback picked another mask).
    pub sam_tokens: Tensor,
    /// `[B, 1]`.
    pub object_score_logits: Tensor,
}

/// The mask decoder.
#[derive(Debug)]
pub struct MaskDecoder {
    pub transformer: TwoWayTransformer,
    /// `obj_score_token | iou_token | mask_tokens` concatenated, `[6, 256]`.
    pub output_tokens: Tensor,
    pub upscale_conv1: ConvTranspose2d,
    pub upscale_norm: LayerNorm2d,
    pub upscale_conv2: ConvTranspose2d,
    pub conv_s0: Conv2d,
    pub conv_s1: Conv2d,
    pub hypernetworks: Vec<Mlp>,
    pub iou_head: Mlp,
    pub obj_score_head: Mlp,
}

impl MaskDecoder {
    /// `w` = `sam_mask_decoder`.
    pub fn new(w: &Weights) -> Result<Self, WeightsError> {
        let d = D_MODEL;
        let output_tokens = Tensor::cat(
            &[
                w.pp("obj_score_token").get("weight", &[1, d])?,
                w.pp("iou_token").get("weight", &[1, d])?,
                w.pp("mask_tokens").get("weight", &[NUM_MASK_TOKENS, d])?,
            ],
            0,
        );
        let up = w.pp("output_upscaling");
        Ok(MaskDecoder {
            transformer: TwoWayTransformer::new(&w.pp("transformer"))?,
            output_tokens,
            upscale_conv1: ConvTranspose2d::new(&up.pp(0), d, d / 4, 2, 2)?,
            upscale_norm: LayerNorm2d::new(&up.pp(1), d / 4, 1e-6)?,
            upscale_conv2: ConvTranspose2d::new(&up.pp(3), d / 4, d / 8, 2, 2)?,
            conv_s0: Conv2d::new(&w.pp("conv_s0"), d, d / 8, 1, ConvCfg::default())?,
            conv_s1: Conv2d::new(&w.pp("conv_s1"), d, d / 4, 1, ConvCfg::default())?,
            hypernetworks: (0..NUM_MASK_TOKENS)
                .map(|i| {
                    Mlp::new(
                        &w.pp("output_hypernetworks_mlps").pp(i),
                        d,
                        d,
                        d / 8,
                        3,
                        false,
                    )
                })
                .collect::<Result<Vec<_>, _>>()?,
            iou_head: Mlp::new(
                &w.pp("iou_prediction_head"),
                d,
                256,
                NUM_MASK_TOKENS,
                3,
                true,
            )?,
            obj_score_head: Mlp::new(&w.pp("pred_obj_score_head"), d, d, 1, 3, false)?,
        })
    }

    /// `predict_masks`: all 4 masks `[B, 4, 4f, 4f]`, ious `[B, 4]`, mask tokens `[B, 4, 256]`,
    /// object score logits `[B, 1]`.
    ///
    /// `image_embeddings [B, 256, f, f]`, `image_pe [1, 256, f, f]`, `sparse [B, Np, 256]`,
    /// `dense [B, 256, f, f]`, `feat_s0 [B, 32, 4f, 4f]`, `feat_s1 [B, 64, 2f, 2f]`.
    pub fn predict_masks(
        &self,
        image_embeddings: &Tensor,
        image_pe: &Tensor,
        sparse: &Tensor,
        dense: &Tensor,
        feat_s0: &Tensor,
        feat_s1: &Tensor,
    ) -> (Tensor, Tensor, Tensor, Tensor) {
        let b = sparse.size()[0];
        let out_tokens = self.output_tokens.unsqueeze(0).expand([b, -1, -1], false);
        let tokens = Tensor::cat(&[out_tokens, sparse.shallow_clone()], 1);
        let src = image_embeddings + dense;
        let pos_src = image_pe.expand([b, -1, -1, -1], false);
        let s = src.size();
        let (hs, src) = self.transformer.forward(&src, &pos_src, &tokens);
        let iou_token_out = hs.select(1, 1);
        let mask_tokens_out = hs.narrow(1, 2, NUM_MASK_TOKENS);

        let src = src.transpose(1, 2).reshape([s[0], s[1], s[2], s[3]]);
        let u = gelu(
            &self
                .upscale_norm
                .forward(&(self.upscale_conv1.forward(&src) + feat_s1)),
        );
        let u = gelu(&(self.upscale_conv2.forward(&u) + feat_s0));
        let hyper: Vec<Tensor> = self
            .hypernetworks
            .iter()
            .enumerate()
            .map(|(i, m)| m.forward(&mask_tokens_out.select(1, i as i64)))
            .collect();
        let hyper_in = Tensor::stack(&hyper, 1);
        let us = u.size();
        let masks = layers::matmul(&hyper_in, &u.reshape([us[0], us[1], us[2] * us[3]]))
            .reshape([us[0], -1, us[2], us[3]]);
        let iou_pred = self.iou_head.forward(&iou_token_out);
        let obj = self.obj_score_head.forward(&hs.select(1, 0));
        (masks, iou_pred, mask_tokens_out, obj)
    }

    /// The decoder forward with mask selection (docs/sam2-inference.md §3.5).
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        image_embeddings: &Tensor,
        image_pe: &Tensor,
        sparse: &Tensor,
        dense: &Tensor,
        multimask_output: bool,
        feat_s0: &Tensor,
        feat_s1: &Tensor,
    ) -> DecoderOutput {
        let (masks, ious, tokens, obj) =
            self.predict_masks(image_embeddings, image_pe, sparse, dense, feat_s0, feat_s1);
        if multimask_output {
            DecoderOutput {
                masks: masks.narrow(1, 1, 3),
                ious: ious.narrow(1, 1, 3),
                sam_tokens: tokens.narrow(1, 1, 3),
                object_score_logits: obj,
            }
        } else {
            let (m, i) = dynamic_multimask_via_stability(&masks, &ious);
            DecoderOutput {
                masks: m,
                ious: i,
                sam_tokens: tokens.narrow(1, 0, 1),
                object_score_logits: obj,
            }
        }
    }
}

/// Stability score `#(l > δ) / #(l > −δ)` over the last two dims (1.0 where the union is empty).
pub fn stability_scores(mask_logits: &Tensor) -> Tensor {
    let l = mask_logits.flatten(-2, -1);
    let inter = l
        .gt(STABILITY_DELTA)
        .sum_dim_intlist(-1, false, Kind::Float);
    let union = l
        .gt(-STABILITY_DELTA)
        .sum_dim_intlist(-1, false, Kind::Float);
    (&inter / &union).where_self(&union.gt(0.0), &inter.ones_like())
}

/// Token 0's mask if its stability is ≥ 0.98, else the best-IoU multimask output (1..3).
/// `masks [B, 4, h, w]`, `ious [B, 4]` -> (`[B, 1, h, w]`, `[B, 1]`).
fn dynamic_multimask_via_stability(masks: &Tensor, ious: &Tensor) -> (Tensor, Tensor) {
    let multi = masks.narrow(1, 1, 3);
    let multi_iou = ious.narrow(1, 1, 3);
    let best = multi_iou.argmax(-1, true); // [B, 1]
    let s = multi.size();
    let idx = best
        .reshape([s[0], 1, 1, 1])
        .expand([s[0], 1, s[2], s[3]], false);
    let best_mask = multi.gather(1, &idx, false);
    let best_iou = multi_iou.gather(1, &best, false);
    let single = masks.narrow(1, 0, 1);
    let single_iou = ious.narrow(1, 0, 1);
    let stable = stability_scores(&single).ge(STABILITY_THRESH); // [B, 1]
    let m = single.where_self(&stable.unsqueeze(-1).unsqueeze(-1), &best_mask);
    let i = single_iou.where_self(&stable, &best_iou);
    (m, i)
}
