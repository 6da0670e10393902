//! Memory attention (`memory_attention`, official `modeling/memory_attention.py` and
//! `RoPEAttention` in `sam/transformer.py`, spec §3.8): 4 layers of RoPE self-attention over the
//! current frame's tokens, RoPE cross-attention to the memory (spatial memories with the RoPE
//! table repeated per memory frame, object-pointer tokens without RoPE), and a ReLU FFN.

use tch::Tensor;

use super::config::{D_MODEL, MEM_DIM};
use super::layers::{LayerNorm, Linear};
use super::position_encoding;
use super::two_way_transformer::{recombine_heads, sdpa, separate_heads};
use super::weights::{Weights, WeightsError};

/// `RoPEAttention(256, heads 1, downsample 1)`, optionally with `kv_in_dim 64` and
/// `rope_k_repeat` (cross-attention).
#[derive(Debug)]
pub struct RopeAttention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub out_proj: Linear,
}

impl RopeAttention {
    fn new(w: &Weights, kv_in_dim: i64) -> Result<Self, WeightsError> {
        Ok(RopeAttention {
            q_proj: Linear::new(&w.pp("q_proj"), D_MODEL, D_MODEL)?,
            k_proj: Linear::new(&w.pp("k_proj"), kv_in_dim, D_MODEL)?,
            v_proj: Linear::new(&w.pp("v_proj"), kv_in_dim, D_MODEL)?,
            out_proj: Linear::new(&w.pp("out_proj"), D_MODEL, D_MODEL)?,
        })
    }

    /// `q [B, Nq, 256]`, `k`/`v [B, Nk, kv_in]` -> `[B, Nq, 256]`. RoPE (complex table
    /// `freqs_cis [Nq, 128]`) is applied to q and to the first `Nk − num_k_exclude_rope` keys, the table
    /// repeated along the keys (`rope_k_repeat`). `mask` (bool `[B, 1, Nq, Nk]`, true = attend)
    /// is only used by the batched path.
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        freqs_cis: &Tensor,
        num_k_exclude_rope: i64,
        mask: Option<&Tensor>,
    ) -> Tensor {
        let q = separate_heads(&self.q_proj.forward(q), 1);
        let k = separate_heads(&self.k_proj.forward(k), 1);
        let v = separate_heads(&self.v_proj.forward(v), 1);
        let repeat = k.size()[2] != q.size()[2];
        let (q, k) =
            position_encoding::apply_rotary_enc(&q, &k, freqs_cis, repeat, num_k_exclude_rope);
        let out = sdpa(&q, &k, &v, mask);
        self.out_proj.forward(&recombine_heads(&out))
    }
}

/// One `MemoryAttentionLayer` (pre-norm; pos only at the cross-attention keys).
#[derive(Debug)]
pub struct MemoryAttentionLayer {
    pub self_attn: RopeAttention,
    pub cross_attn_image: RopeAttention,
    pub linear1: Linear,
    pub linear2: Linear,
    pub norm1: LayerNorm,
    pub norm2: LayerNorm,
    pub norm3: LayerNorm,
}

impl MemoryAttentionLayer {
    fn new(w: &Weights) -> Result<Self, WeightsError> {
        Ok(MemoryAttentionLayer {
            self_attn: RopeAttention::new(&w.pp("self_attn"), D_MODEL)?,
            cross_attn_image: RopeAttention::new(&w.pp("cross_attn_image"), MEM_DIM)?,
            linear1: Linear::new(&w.pp("linear1"), D_MODEL, 2048)?,
            linear2: Linear::new(&w.pp("linear2"), 2048, D_MODEL)?,
            norm1: LayerNorm::new(&w.pp("norm1"), D_MODEL, 1e-5)?,
            norm2: LayerNorm::new(&w.pp("norm2"), D_MODEL, 1e-5)?,
            norm3: LayerNorm::new(&w.pp("norm3"), D_MODEL, 1e-5)?,
        })
    }
}

/// The memory attention stack.
#[derive(Debug)]
pub struct MemoryAttention {
    pub layers: Vec<MemoryAttentionLayer>,
    pub norm: LayerNorm,
    /// RoPE table of the f×f grid, complex `[f·f, 128]`.
    pub freqs_cis: Tensor,
}

impl MemoryAttention {
    /// `w` = `memory_attention`; `feat_size` = f (image_size / 16).
    pub fn new(w: &Weights, feat_size: i64) -> Result<Self, WeightsError> {
        let layers = (0..4)
            .map(|i| MemoryAttentionLayer::new(&w.pp("layers").pp(i)))
            .collect::<Result<Vec<_>, _>>()?;
        let norm = LayerNorm::new(&w.pp("norm"), D_MODEL, 1e-5)?;
        let device = norm.weight.device();
        let freqs_cis =
            position_encoding::axial_rope_cis(D_MODEL, feat_size, feat_size, 10000.0, device);
        Ok(MemoryAttention {
            layers,
            norm,
            freqs_cis,
        })
    }

    /// `curr [B, HW, 256]` and `curr_pos [B, HW, 256]` (the frame's L2 features and sine PE,
    /// batch first), `memory`/`memory_pos [B, Nm, 64]` whose last `num_obj_ptr_tokens` tokens are
    /// object pointers; `mask` (bool `[B, 1, 1, Nm]`, true = attend) for batched objects with
    /// padded memories. Returns `[B, HW, 256]` (normed).
    pub fn forward(
        &self,
        curr: &Tensor,
        curr_pos: &Tensor,
        memory: &Tensor,
        memory_pos: &Tensor,
        num_obj_ptr_tokens: i64,
        mask: Option<&Tensor>,
    ) -> Tensor {
        let mut x = curr + curr_pos * 0.1;
        let k_in = memory + memory_pos;
        for l in &self.layers {
            let t = l.norm1.forward(&x);
            x = &x + l.self_attn.forward(&t, &t, &t, &self.freqs_cis, 0, None);
            let t = l.norm2.forward(&x);
            x = &x
                + l.cross_attn_image.forward(
                    &t,
                    &k_in,
                    memory,
                    &self.freqs_cis,
                    num_obj_ptr_tokens,
                    mask,
                );
            let t = l.norm3.forward(&x);
            x = &x + l.linear2.forward(&l.linear1.forward(&t).relu());
        }
        self.norm.forward(&x)
    }
}
