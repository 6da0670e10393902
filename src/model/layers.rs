//! The building blocks shared by the SAM 2 modules: linear and convolution layers, LayerNorm
//! over the last dimension, the channel-wise `LayerNorm2d`, and the ReLU MLP of the heads.
//! Each is built from a [`Weights`] path holding `weight` (and `bias`) as in the checkpoint.
//!
//! Also the mixed-precision policy ([`Precision`], [`autocast`]): an emulation of
//! `torch.autocast("cuda", torch.bfloat16)` by explicit casts. While an [`AutocastGuard`] is
//! alive on the current thread, the ops of autocast's lower-precision list that the model uses
//! (linear, conv2d, conv_transpose2d, matmul, SDPA) cast their floating inputs (weights
//! included) to bf16 and return bf16, the ops of its fp32 list (layer_norm, pow) cast to f32,
//! and every other op follows PyTorch's ordinary type promotion, as under autocast. The bf16
//! copies of the fp32 master weights are made once per layer and cached (autocast re-casts them
//! per region; the values are the same). Without a guard every op runs in f32, as the official
//! fp32 model does (bit-exact with it except the memory attention's cross-attention on the CPU,
//! which weighs the memory before projecting it: see `memory_attention`).

use std::cell::{Cell, OnceCell};

use tch::{Kind, Tensor};

use super::weights::{Weights, WeightsError};

/// The compute precision of the model (`--dtype`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in f32, as the official fp32 model.
    #[default]
    Fp32,
    /// The official `torch.autocast("cuda", torch.bfloat16)` regions in bf16.
    Bf16,
}

impl Precision {
    /// The kind the lower-precision ops run in, `None` for f32 everywhere.
    pub fn autocast_kind(self) -> Option<Kind> {
        match self {
            Precision::Fp32 => None,
            Precision::Bf16 => Some(Kind::BFloat16),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Bf16 => "bf16",
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fp32" | "f32" | "float32" => Ok(Precision::Fp32),
            "bf16" | "bfloat16" => Ok(Precision::Bf16),
            other => Err(format!("unknown dtype `{other}` (expected fp32 or bf16)")),
        }
    }
}

thread_local! {
    static AUTOCAST: Cell<Option<Kind>> = const { Cell::new(None) };
}

/// Restores the previous autocast state of the thread when dropped.
#[derive(Debug)]
#[must_use = "autocast ends when the guard is dropped"]
pub struct AutocastGuard {
    prev: Option<Kind>,
}

impl Drop for AutocastGuard {
    fn drop(&mut self) {
        AUTOCAST.with(|a| a.set(self.prev));
    }
}

/// Enters (or, with `Precision::Fp32`, leaves) the autocast region on this thread until the
/// guard is dropped. Nested guards restore the outer state.
pub fn autocast(precision: Precision) -> AutocastGuard {
    let prev = AUTOCAST.with(|a| a.replace(precision.autocast_kind()));
    AutocastGuard { prev }
}

/// The current thread's autocast kind (`None` outside autocast).
pub fn autocast_kind() -> Option<Kind> {
    AUTOCAST.with(|a| a.get())
}

/// An input of a lower-precision op: cast to the autocast kind when autocast is on and `x` is
/// a floating tensor of another kind.
pub fn lower(x: &Tensor) -> Tensor {
    match autocast_kind() {
        Some(k) if x.kind() != k && x.is_floating_point() => x.to_kind(k),
        _ => x.shallow_clone(),
    }
}

/// An input of an fp32-list op (layer_norm, pow): cast to f32 when autocast is on.
pub fn fp32(x: &Tensor) -> Tensor {
    match autocast_kind() {
        Some(_) if x.kind() != Kind::Float && x.is_floating_point() => x.to_kind(Kind::Float),
        _ => x.shallow_clone(),
    }
}

/// `a @ b` under autocast.
pub fn matmul(a: &Tensor, b: &Tensor) -> Tensor {
    lower(a).matmul(&lower(b))
}

/// `F.scaled_dot_product_attention(q, k, v, mask)` under autocast (bf16 q/k/v; the mask, bool
/// or additive, is passed as is).
pub fn sdpa(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>) -> Tensor {
    Tensor::scaled_dot_product_attention(
        &lower(q),
        &lower(k),
        &lower(v),
        mask,
        0.0,
        false,
        None,
        false,
    )
}

/// A layer's (weight, bias) for the current autocast state: the f32 masters outside autocast,
/// their cached low-precision copies inside.
fn params(
    weight: &Tensor,
    bias: Option<&Tensor>,
    cache: &OnceCell<(Kind, Tensor, Option<Tensor>)>,
) -> (Tensor, Option<Tensor>) {
    match autocast_kind() {
        Some(k) if weight.kind() != k => {
            let (ck, w, b) = cache.get_or_init(|| {
                let _g = tch::no_grad_guard();
                (k, weight.to_kind(k), bias.map(|b| b.to_kind(k)))
            });
            if *ck == k {
                (w.shallow_clone(), b.as_ref().map(Tensor::shallow_clone))
            } else {
                (weight.to_kind(k), bias.map(|b| b.to_kind(k)))
            }
        }
        _ => (weight.shallow_clone(), bias.map(Tensor::shallow_clone)),
    }
}

/// `nn.Linear`: weight `[out, in]`, `y = x Wᵀ + b`.
#[derive(Debug)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    lowered: OnceCell<(Kind, Tensor, Option<Tensor>)>,
}

impl Linear {
    pub fn new(w: &Weights, in_dim: i64, out_dim: i64) -> Result<Self, WeightsError> {
        Ok(Linear {
            weight: w.get("weight", &[out_dim, in_dim])?,
            bias: Some(w.get("bias", &[out_dim])?),
            lowered: OnceCell::new(),
        })
    }

    /// `[..., in] -> [..., out]` (bf16 under autocast).
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let (w, b) = params(&self.weight, self.bias.as_ref(), &self.lowered);
        lower(x).linear(&w, b.as_ref())
    }
}

/// `nn.Conv2d` with square kernel, stride, padding and groups.
#[derive(Debug)]
pub struct Conv2d {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub stride: i64,
    pub padding: i64,
    pub groups: i64,
    lowered: OnceCell<(Kind, Tensor, Option<Tensor>)>,
}

/// Options of a [`Conv2d`].
#[derive(Debug, Clone, Copy)]
pub struct ConvCfg {
    pub stride: i64,
    pub padding: i64,
    pub groups: i64,
}

impl Default for ConvCfg {
    fn default() -> Self {
        ConvCfg {
            stride: 1,
            padding: 0,
            groups: 1,
        }
    }
}

impl Conv2d {
    pub fn new(
        w: &Weights,
        in_ch: i64,
        out_ch: i64,
        kernel: i64,
        cfg: ConvCfg,
    ) -> Result<Self, WeightsError> {
        Ok(Conv2d {
            weight: w.get("weight", &[out_ch, in_ch / cfg.groups, kernel, kernel])?,
            bias: Some(w.get("bias", &[out_ch])?),
            stride: cfg.stride,
            padding: cfg.padding,
            groups: cfg.groups,
            lowered: OnceCell::new(),
        })
    }

    /// A convolution without bias (SAM 3's patch embedding), no padding.
    pub fn new_no_bias(
        w: &Weights,
        in_ch: i64,
        out_ch: i64,
        kernel: i64,
        stride: i64,
    ) -> Result<Self, WeightsError> {
        Ok(Conv2d {
            weight: w.get("weight", &[out_ch, in_ch, kernel, kernel])?,
            bias: None,
            stride,
            padding: 0,
            groups: 1,
            lowered: OnceCell::new(),
        })
    }

    /// `[B, in, H, W] -> [B, out, H', W']` (bf16 under autocast).
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let (w, b) = params(&self.weight, self.bias.as_ref(), &self.lowered);
        lower(x).conv2d(
            &w,
            b.as_ref(),
            [self.stride, self.stride],
            [self.padding, self.padding],
            [1, 1],
            self.groups,
        )
    }
}

/// `nn.ConvTranspose2d(in, out, k, stride=k)`: weight layout `[in, out, k, k]`.
#[derive(Debug)]
pub struct ConvTranspose2d {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub stride: i64,
    lowered: OnceCell<(Kind, Tensor, Option<Tensor>)>,
}

impl ConvTranspose2d {
    pub fn new(
        w: &Weights,
        in_ch: i64,
        out_ch: i64,
        kernel: i64,
        stride: i64,
    ) -> Result<Self, WeightsError> {
        Ok(ConvTranspose2d {
            weight: w.get("weight", &[in_ch, out_ch, kernel, kernel])?,
            bias: Some(w.get("bias", &[out_ch])?),
            stride,
            lowered: OnceCell::new(),
        })
    }

    /// `[B, in, H, W] -> [B, out, H·s, W·s]` (bf16 under autocast).
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let (w, b) = params(&self.weight, self.bias.as_ref(), &self.lowered);
        lower(x).conv_transpose2d(
            &w,
            b.as_ref(),
            [self.stride, self.stride],
            [0, 0],
            [0, 0],
            1,
            [1, 1],
        )
    }
}

/// `nn.LayerNorm(dim, eps)` over the last dimension.
#[derive(Debug)]
pub struct LayerNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub dim: i64,
    pub eps: f64,
}

impl LayerNorm {
    pub fn new(w: &Weights, dim: i64, eps: f64) -> Result<Self, WeightsError> {
        Ok(LayerNorm {
            weight: w.get("weight", &[dim])?,
            bias: w.get("bias", &[dim])?,
            dim,
            eps,
        })
    }

    /// `[..., dim] -> [..., dim]` (f32 under autocast, whatever the input kind).
    pub fn forward(&self, x: &Tensor) -> Tensor {
        fp32(x).layer_norm(
            [self.dim],
            Some(&self.weight),
            Some(&self.bias),
            self.eps,
            false,
        )
    }
}

/// SAM's `LayerNorm2d`: per-pixel normalisation over channels of an NCHW tensor,
/// `(x - mean) / sqrt(var_biased + eps) * w + b`, computed exactly as the official module does.
#[derive(Debug)]
pub struct LayerNorm2d {
    pub weight: Tensor,
    pub bias: Tensor,
    pub eps: f64,
}

impl LayerNorm2d {
    pub fn new(w: &Weights, channels: i64, eps: f64) -> Result<Self, WeightsError> {
        Ok(LayerNorm2d {
            weight: w.get("weight", &[channels])?,
            bias: w.get("bias", &[channels])?,
            eps,
        })
    }

    /// `[B, C, H, W] -> [B, C, H, W]`. Under autocast the mean and difference keep the input's
    /// kind, `pow` runs in f32 and promotion makes the output f32, as in the official module.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let u = x.mean_dim(1, true, None);
        let d = x - &u;
        let s = fp32(&d).pow_tensor_scalar(2).mean_dim(1, true, None);
        let y = d / (s + self.eps).sqrt();
        self.weight.view([-1, 1, 1]) * y + self.bias.view([-1, 1, 1])
    }
}

/// The heads' `MLP(input, hidden, output, num_layers)`: Linear layers under `layers.{i}` with ReLU
/// between them, and an optional sigmoid on the output.
#[derive(Debug)]
pub struct Mlp {
    pub layers: Vec<Linear>,
    pub sigmoid_output: bool,
}

impl Mlp {
    pub fn new(
        w: &Weights,
        input: i64,
        hidden: i64,
        output: i64,
        num_layers: usize,
        sigmoid_output: bool,
    ) -> Result<Self, WeightsError> {
        let mut layers = Vec::with_capacity(num_layers);
        for i in 0..num_layers {
            let d_in = if i == 0 { input } else { hidden };
            let d_out = if i + 1 == num_layers { output } else { hidden };
            layers.push(Linear::new(&w.pp("layers").pp(i), d_in, d_out)?);
        }
        Ok(Mlp {
            layers,
            sigmoid_output,
        })
    }

    /// `[..., input] -> [..., output]`
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let n = self.layers.len();
        let mut x = x.shallow_clone();
        for (i, l) in self.layers.iter().enumerate() {
            x = l.forward(&x);
            if i + 1 < n {
                x = x.relu();
            }
        }
        if self.sigmoid_output { x.sigmoid() } else { x }
    }
}

/// Exact (erf) GELU, as `nn.GELU()`.
pub fn gelu(x: &Tensor) -> Tensor {
    x.gelu("none")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use tch::Device;

    use super::*;

    /// Under bf16 autocast the layers cast their f32 weights to bf16 once (the first call) and
    /// reuse that copy: the cached copy is the same tensor on every later call, and the outputs
    /// are bit for bit those of casting the weights on every call, as libtorch's autocast does
    /// for weights that do not require grad (casting is deterministic).
    #[test]
    fn bf16_weights_cast_once_and_bit_identical() {
        let _g = tch::no_grad_guard();
        tch::manual_seed(3);
        let opts = (Kind::Float, Device::Cpu);
        let mut t = BTreeMap::new();
        t.insert("lin.weight".to_string(), Tensor::randn([32, 16], opts));
        t.insert("lin.bias".to_string(), Tensor::randn([32], opts));
        t.insert("conv.weight".to_string(), Tensor::randn([8, 4, 3, 3], opts));
        t.insert("conv.bias".to_string(), Tensor::randn([8], opts));
        t.insert("up.weight".to_string(), Tensor::randn([8, 4, 2, 2], opts));
        t.insert("up.bias".to_string(), Tensor::randn([4], opts));
        let w = Weights::new("test", t, Device::Cpu);
        let lin = Linear::new(&w.pp("lin"), 16, 32).unwrap();
        let cfg = ConvCfg {
            stride: 1,
            padding: 1,
            groups: 1,
        };
        let conv = Conv2d::new(&w.pp("conv"), 4, 8, 3, cfg).unwrap();
        let up = ConvTranspose2d::new(&w.pp("up"), 8, 4, 2, 2).unwrap();
        let x = Tensor::randn([2, 5, 16], opts);
        let img = Tensor::randn([2, 4, 6, 6], opts);
        let bf = |t: &Tensor| t.to_kind(Kind::BFloat16);
        let _ac = autocast(Precision::Bf16);
        let per_call_lin = bf(&x).linear(&bf(&lin.weight), Some(&bf(lin.bias.as_ref().unwrap())));
        let per_call_conv = bf(&img).conv2d(
            &bf(&conv.weight),
            Some(&bf(conv.bias.as_ref().unwrap())),
            [1, 1],
            [1, 1],
            [1, 1],
            1,
        );
        let per_call_up = per_call_conv.conv_transpose2d(
            &bf(&up.weight),
            Some(&bf(up.bias.as_ref().unwrap())),
            [2, 2],
            [0, 0],
            [0, 0],
            1,
            [1, 1],
        );
        let cached_ptr = |c: &OnceCell<(Kind, Tensor, Option<Tensor>)>| {
            c.get().map(|(k, w, _)| (*k, w.data_ptr() as usize))
        };
        let mut first = None;
        for _ in 0..2 {
            let y = lin.forward(&x);
            let c = conv.forward(&img);
            let u = up.forward(&c);
            assert_eq!(y.kind(), Kind::BFloat16);
            assert!(y.equal(&per_call_lin), "linear");
            assert!(c.equal(&per_call_conv), "conv2d");
            assert!(u.equal(&per_call_up), "conv_transpose2d");
            let ptrs = [
                cached_ptr(&lin.lowered),
                cached_ptr(&conv.lowered),
                cached_ptr(&up.lowered),
            ];
            assert!(
                ptrs.iter()
                    .all(|p| p.is_some_and(|p| p.0 == Kind::BFloat16))
            );
            // The second call reuses the copies made by the first.
            assert!(first.is_none_or(|f| f == ptrs));
            first = Some(ptrs);
        }
    }
}
