//! The position encodings of SAM 2 (docs/sam2-inference.md §3.2, §3.3), as pure functions of
//! shapes:
//! the 2-D sine encoding of the FPN neck and the memory encoder (`PositionEmbeddingSine`), the
//! random-Fourier encoding of the prompt encoder (`PositionEmbeddingRandom`), the 1-D sine
//! encoding of object-pointer temporal positions (`get_1d_sine_pe`), and the axial rotary
//! encoding of memory attention (`compute_axial_cis` / `apply_rotary_enc`).
//!
//! Each function performs the same float32 tensor operations, in the same order, as the official
//! code, so the results are bit-identical on the same device.

use std::f64::consts::PI;

use tch::{Device, Kind, Tensor};

use super::weights::{Weights, WeightsError};

/// `PositionEmbeddingSine(num_pos_feats, temperature=10000, normalize=True, scale=2π)` for an
/// `h × w` map: `[1, num_pos_feats, h, w]` (expand to the batch as needed).
///
/// Positions start at 1 and are normalised by `(last + 1e-6)`; channels interleave
/// `sin, cos` per frequency, and the `y` half comes before the `x` half.
pub fn sine_pe_2d(num_pos_feats: i64, h: i64, w: i64, device: Device) -> Tensor {
    let opts = (Kind::Float, device);
    let n = num_pos_feats / 2;
    let scale = 2.0 * PI;
    let eps = 1e-6;
    let y = Tensor::arange_start(1, h + 1, opts)
        .view([1, h, 1])
        .repeat([1, 1, w]);
    let x = Tensor::arange_start(1, w + 1, opts)
        .view([1, 1, w])
        .repeat([1, h, 1]);
    let y = &y / (y.narrow(1, h - 1, 1) + eps) * scale;
    let x = &x / (x.narrow(2, w - 1, 1) + eps) * scale;
    let dim_t = sine_dim_t(n, 10000.0, device);
    let interleave = |p: Tensor| -> Tensor {
        let s = p.slice(3, 0, None, 2).sin();
        let c = p.slice(3, 1, None, 2).cos();
        Tensor::stack(&[s, c], 4).flatten(3, 4)
    };
    let pos_x = interleave(x.unsqueeze(-1) / &dim_t);
    let pos_y = interleave(y.unsqueeze(-1) / &dim_t);
    Tensor::cat(&[pos_y, pos_x], 3)
        .permute([0, 3, 1, 2])
        .contiguous()
}

/// `temperature ** (2 * (arange(n) // 2) / n)` in float32.
fn sine_dim_t(n: i64, temperature: f64, device: Device) -> Tensor {
    let d = Tensor::arange(n, (Kind::Float, device));
    let e = d.floor_divide_scalar(2) * 2 / n as f64;
    Tensor::pow_scalar(temperature, &e)
}

/// `get_1d_sine_pe(pos_inds, dim)`: `[..., ] -> [..., dim]`, `cat(sin(p/dim_t), cos(p/dim_t))`
/// with `dim_t[i] = 10000^(2·⌊i/2⌋/(dim/2))` (concatenated, not interleaved).
pub fn sine_pe_1d(pos_inds: &Tensor, dim: i64) -> Tensor {
    let pe_dim = dim / 2;
    let dim_t = sine_dim_t(pe_dim, 10000.0, pos_inds.device());
    let p = pos_inds.unsqueeze(-1) / dim_t;
    Tensor::cat(&[p.sin(), p.cos()], -1)
}

/// `PositionEmbeddingRandom`: random Fourier features with the checkpoint's Gaussian matrix
/// `G [2, num_pos_feats]` (`sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix`).
#[derive(Debug)]
pub struct PositionEmbeddingRandom {
    /// `[2, num_pos_feats]`
    pub gaussian: Tensor,
    /// Its low-precision copy for the autocast matmul, made once (as the layers' weights).
    lowered: std::cell::OnceCell<(Kind, Tensor)>,
}

impl PositionEmbeddingRandom {
    /// `w` is the `pe_layer` path; `num_pos_feats` is 128 in SAM 2 (256 output channels).
    pub fn new(w: &Weights, num_pos_feats: i64) -> Result<Self, WeightsError> {
        Ok(PositionEmbeddingRandom {
            gaussian: w.get("positional_encoding_gaussian_matrix", &[2, num_pos_feats])?,
            lowered: Default::default(),
        })
    }

    /// Encodes coordinates normalised to `[0,1]`: `[..., 2] (x, y) -> [..., 2·num_pos_feats]`,
    /// `cat(sin(2π(2c−1)G), cos(2π(2c−1)G))`.
    pub fn pe_encoding(&self, coords: &Tensor) -> Tensor {
        let c = coords * 2.0 - 1.0;
        let g = match super::layers::autocast_kind() {
            Some(k) if self.gaussian.kind() != k => {
                let (ck, g) = self.lowered.get_or_init(|| {
                    let _g = tch::no_grad_guard();
                    (k, self.gaussian.to_kind(k))
                });
                if *ck == k {
                    g.shallow_clone()
                } else {
                    self.gaussian.to_kind(k)
                }
            }
            _ => self.gaussian.shallow_clone(),
        };
        let c = super::layers::matmul(&c, &g);
        let c = c * (2.0 * PI);
        Tensor::cat(&[c.sin(), c.cos()], -1)
    }

    /// The dense encoding of an `h × w` grid at pixel centres: `[1, 2·num_pos_feats, h, w]`
    /// (`get_dense_pe`).
    pub fn dense(&self, h: i64, w: i64) -> Tensor {
        let device = self.gaussian.device();
        let opts = (Kind::Float, device);
        let y = (Tensor::arange_start(1, h + 1, opts)
            .view([h, 1])
            .expand([h, w], true)
            - 0.5)
            / h as f64;
        let x = (Tensor::arange_start(1, w + 1, opts)
            .view([1, w])
            .expand([h, w], true)
            - 0.5)
            / w as f64;
        let pe = self.pe_encoding(&Tensor::stack(&[x, y], -1));
        pe.permute([2, 0, 1]).unsqueeze(0).contiguous()
    }

    /// `forward_with_coords`: `[B, N, 2]` pixel coordinates (x, y) divided by the image size
    /// `(h, w)` and encoded: `[B, N, 2·num_pos_feats]`. (The prompt encoder adds 0.5 first.)
    pub fn encode_coords(&self, coords: &Tensor, image_hw: (i64, i64)) -> Tensor {
        let x = coords.select(-1, 0) / image_hw.1 as f64;
        let y = coords.select(-1, 1) / image_hw.0 as f64;
        self.pe_encoding(&Tensor::stack(&[x, y], -1).to_kind(Kind::Float))
    }
}

/// `compute_axial_cis(dim, end_x, end_y, theta)`: the complex (`ComplexFloat`) rotation table
/// `[end_x·end_y, dim/2]`. Token `n` is at column `n % end_x`, row `n / end_x`; the first `dim/4`
/// pairs rotate by `column·f_k`, the last `dim/4` by `row·f_k`, `f_k = 1/θ^(4k/dim)`.
pub fn axial_rope_cis(dim: i64, end_x: i64, end_y: i64, theta: f64, device: Device) -> Tensor {
    axial_rope_cis_impl(dim, end_x, end_y, theta, None, device)
}

/// [`axial_rope_cis`] with positions scaled by `scale_pos` (`compute_axial_cis(...,
/// scale_pos)` of SAM 3's ViT, which interpolates a global block's table to the window's
/// frequency range).
pub fn axial_rope_cis_scaled(
    dim: i64,
    end_x: i64,
    end_y: i64,
    theta: f64,
    scale_pos: f64,
    device: Device,
) -> Tensor {
    axial_rope_cis_impl(dim, end_x, end_y, theta, Some(scale_pos), device)
}

fn axial_rope_cis_impl(
    dim: i64,
    end_x: i64,
    end_y: i64,
    theta: f64,
    scale_pos: Option<f64>,
    device: Device,
) -> Tensor {
    let opts = (Kind::Float, device);
    let k = Tensor::arange_start_step(0, dim, 4, (Kind::Int64, device)).narrow(0, 0, dim / 4);
    let freqs = Tensor::pow_scalar(theta, &(k.to_kind(Kind::Float) / dim as f64)).reciprocal();
    let t = Tensor::arange(end_x * end_y, opts);
    let mut t_x = t.remainder(end_x as f64);
    let mut t_y = t.divide_scalar_mode(end_x as f64, "floor");
    if let Some(sc) = scale_pos {
        // `t * scale + offset` with offset 0 (adding an integer 0 changes no bit).
        t_x *= sc;
        t_y *= sc;
    }
    let fx = t_x.outer(&freqs);
    let fy = t_y.outer(&freqs);
    let cx = Tensor::polar(&fx.ones_like(), &fx);
    let cy = Tensor::polar(&fy.ones_like(), &fy);
    Tensor::cat(&[cx, cy], -1)
}

/// Rotates `x [B, heads, N, dim]` by `freqs_cis [N, dim/2]`, pairing channels `(2j, 2j+1)`
/// as complex numbers; computed in float32 and returned in `x`'s kind.
pub fn rotate(x: &Tensor, freqs_cis: &Tensor) -> Tensor {
    let size = x.size();
    let mut pairs = size.clone();
    let last = pairs.pop().unwrap_or(0);
    pairs.extend_from_slice(&[last / 2, 2]);
    let xc = x.to_kind(Kind::Float).reshape(&pairs).view_as_complex();
    (xc * freqs_cis)
        .view_as_real()
        .flatten(3, -1)
        .to_kind(x.kind())
}

/// `apply_rotary_enc(q, k, freqs_cis, repeat_freqs_k)` with `num_k_exclude_rope`, as
/// `RoPEAttention.forward` applies it: `q [B, h, Nq, d]` is rotated by `freqs_cis [Nq, d/2]`;
/// the first `Nk − num_k_exclude` keys of `k [B, h, Nk, d]` are rotated by `freqs_cis` tiled
/// `(Nk − num_k_exclude)/Nq` times when `repeat_freqs_k` (memory frames), and the last
/// `num_k_exclude` keys (object pointers) are left as they are.
pub fn apply_rotary_enc(
    q: &Tensor,
    k: &Tensor,
    freqs_cis: &Tensor,
    repeat_freqs_k: bool,
    num_k_exclude: i64,
) -> (Tensor, Tensor) {
    let table = key_rope_table(freqs_cis, k.size()[2], repeat_freqs_k, num_k_exclude);
    (rotate(q, freqs_cis), rotate(k, &table))
}

/// The rotation of every one of `nk` keys as [`apply_rotary_enc`] applies it, complex
/// `[nk, d/2]`: `freqs_cis` (tiled when `repeat_freqs_k`) for the first `nk − num_k_exclude`
/// keys, `1 + 0i` for the excluded ones. Multiplying by `1 + 0i` returns a value bit for bit
/// (`a·1 − b·0 = a`), so one pass over all keys equals rotating the head and concatenating the
/// untouched tail, without the two copies; a layer stack builds the table once per frame.
pub fn key_rope_table(
    freqs_cis: &Tensor,
    nk: i64,
    repeat_freqs_k: bool,
    num_k_exclude: i64,
) -> Tensor {
    let num_rope = (nk - num_k_exclude).max(0);
    let nq = freqs_cis.size()[0];
    let head = if num_rope == 0 {
        freqs_cis.narrow(0, 0, 0)
    } else if repeat_freqs_k {
        freqs_cis.repeat([num_rope / nq, 1])
    } else {
        freqs_cis.shallow_clone()
    };
    let tail_len = nk - head.size()[0];
    if tail_len == 0 {
        return head;
    }
    let half = freqs_cis.size()[1];
    let ones = Tensor::ones([tail_len, half], (Kind::Float, freqs_cis.device()));
    let tail = Tensor::complex(&ones, &ones.zeros_like());
    Tensor::cat(&[head, tail], 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-5
    }

    #[test]
    fn sine_2d_layout() {
        let pe = sine_pe_2d(256, 4, 6, Device::Cpu);
        assert_eq!(pe.size(), [1, 256, 4, 6]);
        // channel 0: sin(y·2π/(H+1e-6)) with dim_t 1; channel 1: cos of the same; channel 128: x.
        let y1 = 2.0 * std::f64::consts::PI * 2.0 / 4.0;
        assert!(close(pe.double_value(&[0, 0, 1, 3]), y1.sin()));
        assert!(close(pe.double_value(&[0, 1, 1, 3]), y1.cos()));
        let x = 2.0 * std::f64::consts::PI * 4.0 / 6.0;
        assert!(close(pe.double_value(&[0, 128, 1, 3]), x.sin()));
        assert!(close(pe.double_value(&[0, 129, 1, 3]), x.cos()));
        // channels 2, 3 use dim_t = 10000^(2/128)
        let d = 10000f64.powf(2.0 / 128.0);
        assert!(close(pe.double_value(&[0, 3, 1, 3]), (y1 / d).cos()));
    }

    #[test]
    fn sine_1d_concatenates() {
        let p = Tensor::from_slice(&[0f32, 3.0]);
        let pe = sine_pe_1d(&p, 8);
        assert_eq!(pe.size(), [2, 8]);
        let d = 10000f64.powf(2.0 / 4.0);
        assert!(close(pe.double_value(&[1, 0]), 3f64.sin()));
        assert!(close(pe.double_value(&[1, 2]), (3.0 / d).sin()));
        assert!(close(pe.double_value(&[1, 4]), 3f64.cos()));
        assert!(close(pe.double_value(&[0, 5]), 1.0));
    }

    #[test]
    fn random_dense_matches_coords() {
        let g = Tensor::randn([2, 8], (Kind::Float, Device::Cpu));
        let pe = PositionEmbeddingRandom {
            gaussian: g,
            lowered: Default::default(),
        };
        let dense = pe.dense(4, 4);
        assert_eq!(dense.size(), [1, 16, 4, 4]);
        // pixel centre (col 2, row 1) of a 4x4 grid == coords (2.5, 1.5) of a 4x4 image
        let c = Tensor::from_slice(&[2.5f32, 1.5]).view([1, 1, 2]);
        let e = pe.encode_coords(&c, (4, 4));
        let d = dense.select(2, 1).select(2, 2).view([1, 1, 16]);
        assert!((e - d).abs().max().double_value(&[]) < 1e-6);
    }

    #[test]
    fn rope_pairs_and_axes() {
        let cis = axial_rope_cis(8, 3, 2, 10000.0, Device::Cpu);
        assert_eq!(cis.size(), [6, 4]);
        // token 4: column 1, row 1. Pair 0 rotates by column·1, pair 2 by row·1.
        let q = Tensor::zeros([1, 1, 6, 8], (Kind::Float, Device::Cpu));
        let _ = q.get(0).get(0).get(4).fill_(1.0);
        let (qr, kr) = apply_rotary_enc(&q, &q, &cis, false, 0);
        let v = |t: &Tensor, c: i64| t.double_value(&[0, 0, 4, c]);
        // (a, b) = (1, 1) rotated by angle 1: (cos1 − sin1, sin1 + cos1)
        assert!(close(v(&qr, 0), 1f64.cos() - 1f64.sin()));
        assert!(close(v(&qr, 1), 1f64.sin() + 1f64.cos()));
        assert!(close(v(&qr, 4), 1f64.cos() - 1f64.sin()));
        // pair 1 uses f_1 = 1/10000^(4/8)
        let a: f64 = 1.0 / 100.0;
        assert!(close(v(&qr, 2), a.cos() - a.sin()));
        assert!(close(v(&kr, 2), a.cos() - a.sin()));
    }

    #[test]
    fn rope_repeat_and_exclude() {
        let cis = axial_rope_cis(8, 2, 2, 10000.0, Device::Cpu);
        let q = Tensor::randn([1, 1, 4, 8], (Kind::Float, Device::Cpu));
        let k = Tensor::randn([1, 1, 11, 8], (Kind::Float, Device::Cpu));
        let (_, kr) = apply_rotary_enc(&q, &k, &cis, true, 3);
        assert_eq!(kr.size(), [1, 1, 11, 8]);
        // the last 3 tokens are untouched; frame 2 is rotated like frame 1
        let tail = (kr.narrow(2, 8, 3) - k.narrow(2, 8, 3))
            .abs()
            .max()
            .double_value(&[]);
        assert_eq!(tail, 0.0);
        let (_, k1) = apply_rotary_enc(&q, &k.narrow(2, 4, 4), &cis, false, 0);
        let d = (kr.narrow(2, 4, 4) - k1).abs().max().double_value(&[]);
        assert!(d < 1e-7);
    }
}
