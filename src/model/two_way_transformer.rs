//! The SAM mask decoder's `TwoWayTransformer` (official `sam/transformer.py`,
//! docs/sam2-inference.md §3.5): 2 blocks of token self-attention, token→image and image→token
//! cross-attention, and a final token→image attention. Also the plain multi-head `Attention` it
//! is built of.

use tch::Tensor;

use super::layers::{LayerNorm, Linear, Mlp};
use super::weights::{Weights, WeightsError};

/// `Attention(embedding_dim, num_heads, downsample_rate)`: q/k/v projections to
/// `embedding_dim / downsample_rate`, heads split contiguously, SDPA, out projection.
#[derive(Debug)]
pub struct Attention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub out_proj: Linear,
    pub num_heads: i64,
}

/// `[B, N, C] -> [B, heads, N, C/heads]`
pub(crate) fn separate_heads(x: &Tensor, heads: i64) -> Tensor {
    let s = x.size();
    x.reshape([s[0], s[1], heads, s[2] / heads]).transpose(1, 2)
}

/// `[B, heads, N, c] -> [B, N, heads·c]`
pub(crate) fn recombine_heads(x: &Tensor) -> Tensor {
    let s = x.size();
    x.transpose(1, 2).reshape([s[0], s[2], s[1] * s[3]])
}

/// `softmax(q kᵀ / √d) v` through PyTorch's SDPA (same kernels as the official code).
/// `mask`, when given, is a boolean `[B, 1, Nq, Nk]` (true = attend) or an additive float mask.
/// In bf16 under autocast ([`super::layers::sdpa`]).
pub(crate) fn sdpa(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>) -> Tensor {
    super::layers::sdpa(q, k, v, mask)
}

impl Attention {
    pub fn new(
        w: &Weights,
        dim: i64,
        heads: i64,
        downsample: i64,
        kv_in_dim: i64,
    ) -> Result<Self, WeightsError> {
        let internal = dim / downsample;
        Ok(Attention {
            q_proj: Linear::new(&w.pp("q_proj"), dim, internal)?,
            k_proj: Linear::new(&w.pp("k_proj"), kv_in_dim, internal)?,
            v_proj: Linear::new(&w.pp("v_proj"), kv_in_dim, internal)?,
            out_proj: Linear::new(&w.pp("out_proj"), internal, dim)?,
            num_heads: heads,
        })
    }

    /// `q [B, Nq, dim]`, `k`/`v [B, Nk, kv_in_dim]` -> `[B, Nq, dim]`.
    pub fn forward(&self, q: &Tensor, k: &Tensor, v: &Tensor) -> Tensor {
        let q = separate_heads(&self.q_proj.forward(q), self.num_heads);
        let k = separate_heads(&self.k_proj.forward(k), self.num_heads);
        let v = separate_heads(&self.v_proj.forward(v), self.num_heads);
        let out = sdpa(&q, &k, &v, None);
        self.out_proj.forward(&recombine_heads(&out))
    }
}

/// `TwoWayAttentionBlock`.
#[derive(Debug)]
pub struct TwoWayBlock {
    pub self_attn: Attention,
    pub norm1: LayerNorm,
    pub cross_attn_token_to_image: Attention,
    pub norm2: LayerNorm,
    pub mlp: Mlp,
    pub norm3: LayerNorm,
    pub norm4: LayerNorm,
    pub cross_attn_image_to_token: Attention,
    pub skip_first_layer_pe: bool,
}

impl TwoWayBlock {
    fn new(
        w: &Weights,
        dim: i64,
        heads: i64,
        mlp_dim: i64,
        skip_pe: bool,
    ) -> Result<Self, WeightsError> {
        Ok(TwoWayBlock {
            self_attn: Attention::new(&w.pp("self_attn"), dim, heads, 1, dim)?,
            norm1: LayerNorm::new(&w.pp("norm1"), dim, 1e-5)?,
            cross_attn_token_to_image: Attention::new(
                &w.pp("cross_attn_token_to_image"),
                dim,
                heads,
                2,
                dim,
            )?,
            norm2: LayerNorm::new(&w.pp("norm2"), dim, 1e-5)?,
            mlp: Mlp::new(&w.pp("mlp"), dim, mlp_dim, dim, 2, false)?,
            norm3: LayerNorm::new(&w.pp("norm3"), dim, 1e-5)?,
            norm4: LayerNorm::new(&w.pp("norm4"), dim, 1e-5)?,
            cross_attn_image_to_token: Attention::new(
                &w.pp("cross_attn_image_to_token"),
                dim,
                heads,
                2,
                dim,
            )?,
            skip_first_layer_pe: skip_pe,
        })
    }

    /// `(queries [B, Nt, 256], keys [B, HW, 256])` -> updated `(queries, keys)`.
    fn forward(
        &self,
        queries: &Tensor,
        keys: &Tensor,
        query_pe: &Tensor,
        key_pe: &Tensor,
    ) -> (Tensor, Tensor) {
        let queries = if self.skip_first_layer_pe {
            self.self_attn.forward(queries, queries, queries)
        } else {
            let q = queries + query_pe;
            queries + self.self_attn.forward(&q, &q, queries)
        };
        let queries = self.norm1.forward(&queries);

        let q = &queries + query_pe;
        let k = keys + key_pe;
        let queries = &queries + self.cross_attn_token_to_image.forward(&q, &k, keys);
        let queries = self.norm2.forward(&queries);

        let queries = &queries + self.mlp.forward(&queries);
        let queries = self.norm3.forward(&queries);

        let q = &queries + query_pe;
        let k = keys + key_pe;
        let keys = keys + self.cross_attn_image_to_token.forward(&k, &q, &queries);
        let keys = self.norm4.forward(&keys);
        (queries, keys)
    }
}

/// `TwoWayTransformer(depth 2, dim 256, heads 8, mlp 2048, downsample 2)`.
#[derive(Debug)]
pub struct TwoWayTransformer {
    pub layers: Vec<TwoWayBlock>,
    pub final_attn_token_to_image: Attention,
    pub norm_final_attn: LayerNorm,
}

impl TwoWayTransformer {
    /// `w` = `sam_mask_decoder.transformer`.
    pub fn new(w: &Weights) -> Result<Self, WeightsError> {
        let (dim, heads, mlp) = (256, 8, 2048);
        let layers = (0..2)
            .map(|i| TwoWayBlock::new(&w.pp("layers").pp(i), dim, heads, mlp, i == 0))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TwoWayTransformer {
            layers,
            final_attn_token_to_image: Attention::new(
                &w.pp("final_attn_token_to_image"),
                dim,
                heads,
                2,
                dim,
            )?,
            norm_final_attn: LayerNorm::new(&w.pp("norm_final_attn"), dim, 1e-5)?,
        })
    }

    /// `image_embedding [B, 256, h, w]`, `image_pe [B, 256, h, w]`, `point_embedding [B, Nt, 256]`
    /// -> `(hs [B, Nt, 256], src [B, hw, 256])`.
    pub fn forward(
        &self,
        image_embedding: &Tensor,
        image_pe: &Tensor,
        point_embedding: &Tensor,
    ) -> (Tensor, Tensor) {
        let keys0 = image_embedding.flatten(2, -1).permute([0, 2, 1]);
        let key_pe = image_pe.flatten(2, -1).permute([0, 2, 1]);
        let mut queries = point_embedding.shallow_clone();
        let mut keys = keys0;
        for layer in &self.layers {
            let (q, k) = layer.forward(&queries, &keys, point_embedding, &key_pe);
            queries = q;
            keys = k;
        }
        let q = &queries + point_embedding;
        let k = &keys + &key_pe;
        let queries = &queries + self.final_attn_token_to_image.forward(&q, &k, &keys);
        (self.norm_final_attn.forward(&queries), keys)
    }
}
