//! The building blocks shared by the SAM 2 modules: linear and convolution layers, LayerNorm
//! over the last dimension, the channel-wise `LayerNorm2d`, and the ReLU MLP of the heads.
//! Each is built from a [`Weights`] path holding `weight` (and `bias`) as in the checkpoint.

use tch::Tensor;

use super::weights::{Weights, WeightsError};

/// `nn.Linear`: weight `[out, in]`, `y = x Wᵀ + b`.
#[derive(Debug)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    pub fn new(w: &Weights, in_dim: i64, out_dim: i64) -> Result<Self, WeightsError> {
        Ok(Linear {
            weight: w.get("weight", &[out_dim, in_dim])?,
            bias: Some(w.get("bias", &[out_dim])?),
        })
    }

    /// `[..., in] -> [..., out]`
    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.linear(&self.weight, self.bias.as_ref())
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
        })
    }

    /// `[B, in, H, W] -> [B, out, H', W']`
    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.conv2d(
            &self.weight,
            self.bias.as_ref(),
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
        })
    }

    /// `[B, in, H, W] -> [B, out, H·s, W·s]`
    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.conv_transpose2d(
            &self.weight,
            self.bias.as_ref(),
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

    /// `[..., dim] -> [..., dim]`
    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.layer_norm(
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

    /// `[B, C, H, W] -> [B, C, H, W]`
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let u = x.mean_dim(1, true, None);
        let d = x - &u;
        let s = d.pow_tensor_scalar(2).mean_dim(1, true, None);
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
