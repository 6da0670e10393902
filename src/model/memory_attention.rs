//! Memory attention (`memory_attention`, official `modeling/memory_attention.py` and
//! `RoPEAttention` in `sam/transformer.py`, docs/sam2-inference.md §3.8): 4 layers of RoPE
//! self-attention over the current frame's tokens, RoPE cross-attention to the memory (spatial
//! memories with the RoPE table repeated per memory frame, object-pointer tokens without RoPE),
//! and a ReLU FFN. On the CPU in fp32 the cross-attention takes the values-first order
//! (`attend_values_first`, docs/sam2-inference.md §7.12).

use tch::{Device, Kind, Tensor};

use super::config::{D_MODEL, MEM_DIM};
use super::layers::{LayerNorm, Linear, autocast_kind};
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

    /// `q [B, Nq, 256]`, `k`/`v [B, Nk, kv_in]` -> `[B, Nq, 256]`. RoPE rotates q by
    /// `q_rope [Nq, 128]` (complex) and k by `k_rope [Nk, 128]`
    /// ([`position_encoding::key_rope_table`]: the table tiled per memory frame, `1 + 0i` on the
    /// object-pointer tokens). `mask` (bool `[B, 1, Nq, Nk]`, true = attend) is only used by the
    /// batched path.
    pub fn forward(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        q_rope: &Tensor,
        k_rope: &Tensor,
        mask: Option<&Tensor>,
    ) -> Tensor {
        let q = position_encoding::rotate(&separate_heads(&self.q_proj.forward(q), 1), q_rope);
        let k = position_encoding::rotate(&separate_heads(&self.k_proj.forward(k), 1), k_rope);
        // Values narrower than the attention (the cross-attention's 64-channel memory): on the
        // CPU in fp32, attend first and project after (see [`attend_values_first`]).
        let value_first = v.size().last().is_some_and(|&c| c < D_MODEL)
            && v.device() == Device::Cpu
            && autocast_kind().is_none();
        let out = if value_first {
            self.v_proj.forward(&attend_values_first(
                &q.select(1, 0),
                &k.select(1, 0),
                v,
                mask,
            ))
        } else {
            let v = separate_heads(&self.v_proj.forward(v), 1);
            recombine_heads(&sdpa(&q, &k, &v, mask))
        };
        self.out_proj.forward(&out)
    }
}

/// Query rows per score block of [`attend_values_first`]: a 256 × 7232 fp32 block (7 memories at
/// 512 px) is 7 MB.
const QUERY_BLOCK: i64 = 256;

/// `softmax(q kᵀ / √256) · x` for `q [B, Nq, 256]`, `k [B, Nk, 256]` and the raw memory
/// `x [B, Nk, 64]`, one object and one block of queries at a time; keys whose `mask`
/// (`[B, 1, 1, Nk]`, true = attend) is false are left out. Returns `[B, Nq, 64]`.
///
/// The cross-attention's values are `v_proj(x) = x Wᵀ + b` and every row of the softmax sums to
/// one, so `softmax(·) v_proj(x) = v_proj(softmax(·) x)`: applying `v_proj` after the weighted
/// sum gives the official result up to fp32 rounding (differences of the size SDPA's own choice
/// of kernel makes: ~5e-6 in a tracked frame's logits), while the weighted sum runs over 64
/// channels instead of 256. On the CPU this takes about a quarter off the memory attention, the
/// dominant cost of tracking (`scripts/bench-tracker-speed`); on CUDA the fused SDPA kernels
/// are kept.
fn attend_values_first(q: &Tensor, k: &Tensor, x: &Tensor, mask: Option<&Tensor>) -> Tensor {
    let (b, nq) = (q.size()[0], q.size()[1]);
    // 1/√256 is a power of two: scaling q first is exact.
    let q = q * (1.0 / (D_MODEL as f64).sqrt());
    let out = Tensor::empty([b, nq, MEM_DIM], (Kind::Float, q.device()));
    for i in 0..b {
        let (mut kb, mut xb) = (k.get(i), x.get(i));
        if let Some(m) = mask {
            let keep = m.get(i).reshape([-1]).nonzero().squeeze_dim(1);
            kb = kb.index_select(0, &keep);
            xb = xb.index_select(0, &keep);
        }
        let kt = kb.tr();
        let (qb, ob) = (q.get(i), out.get(i));
        for start in (0..nq).step_by(QUERY_BLOCK as usize) {
            let len = QUERY_BLOCK.min(nq - start);
            let w = qb.narrow(0, start, len).mm(&kt).softmax(-1, Kind::Float);
            ob.narrow(0, start, len).copy_(&w.mm(&xb));
        }
    }
    out
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
        let b = curr.size()[0];
        // Objects batched on one frame share its features (expanded, batch stride 0): the first
        // layer's self-attention then sees the same input for every object and runs once.
        let shared = b > 1 && curr.stride()[0] == 0 && curr_pos.stride()[0] == 0;
        let (curr, curr_pos) = if shared {
            (curr.narrow(0, 0, 1), curr_pos.narrow(0, 0, 1))
        } else {
            (curr.shallow_clone(), curr_pos.shallow_clone())
        };
        let mut x = &curr + &curr_pos * 0.1;
        let k_in = memory + memory_pos;
        let nm = memory.size()[1];
        let k_rope = position_encoding::key_rope_table(
            &self.freqs_cis,
            nm,
            nm != curr.size()[1],
            num_obj_ptr_tokens,
        );
        let f = &self.freqs_cis;
        for l in &self.layers {
            let t = l.norm1.forward(&x);
            x = &x + l.self_attn.forward(&t, &t, &t, f, f, None);
            if x.size()[0] != b {
                x = x.expand([b, -1, -1], false);
            }
            let t = l.norm2.forward(&x);
            x = &x
                + l.cross_attn_image
                    .forward(&t, &k_in, memory, f, &k_rope, mask);
            let t = l.norm3.forward(&x);
            x = &x + l.linear2.forward(&l.linear1.forward(&t).relu());
        }
        self.norm.forward(&x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Attending over the raw 64-channel memory and projecting after equals SDPA over the
    /// projected values, with and without a key mask (padding in the middle and at the end, as
    /// the batched memory lays it out), over more than one query block.
    #[test]
    fn values_first_equals_sdpa_over_projected_values() {
        tch::manual_seed(7);
        let opts = (Kind::Float, Device::Cpu);
        let (b, nq, nk) = (3, QUERY_BLOCK + 37, 300);
        let q = Tensor::randn([b, nq, D_MODEL], opts);
        let k = Tensor::randn([b, nk, D_MODEL], opts);
        let x = Tensor::randn([b, nk, MEM_DIM], opts);
        let w = Tensor::randn([D_MODEL, MEM_DIM], opts) * 0.2;
        let bias = Tensor::randn([D_MODEL], opts);
        let mask = Tensor::ones([b, 1, 1, nk], (Kind::Bool, Device::Cpu));
        let _ = mask.get(1).narrow(2, 200, 50).fill_(0);
        let _ = mask.get(2).narrow(2, 280, 20).fill_(0);
        for m in [None, Some(&mask)] {
            let v = x.linear(&w, Some(&bias)).unsqueeze(1);
            let want = sdpa(&q.unsqueeze(1), &k.unsqueeze(1), &v, m).squeeze_dim(1);
            let got = attend_values_first(&q, &k, &x, m).linear(&w, Some(&bias));
            let err = (&got - &want).abs().max().double_value(&[]);
            assert!(err < 1e-5, "max abs error {err} (mask: {})", m.is_some());
        }
    }
}
