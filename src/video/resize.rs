//! Pillow-exact resize: `Image.resize((S, S))` with the default BICUBIC filter on 8-bit RGB,
//! bit for bit (docs/sam2-inference.md §2.1, §6.7): a separable two-pass resample (horizontal,
//! then vertical) with the intermediate image stored as u8, fixed-point weights of 22 fractional
//! bits.

use super::frame::RgbFrame;

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Pillow's bicubic kernel (a = -0.5).
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Fixed-point taps of one resample pass: for output `o`, input `first[o] .. first[o] + len[o]`
/// with weights `weights[o * ksize ..]`.
struct Coeffs {
    ksize: usize,
    first: Vec<usize>,
    len: Vec<usize>,
    weights: Vec<i32>,
}

/// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for the box `[0, in_size)`.
fn coeffs(in_size: usize, out_size: usize) -> Coeffs {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = 2.0 * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let ss = 1.0 / filterscale;
    let mut first = Vec::with_capacity(out_size);
    let mut len = Vec::with_capacity(out_size);
    let mut weights = vec![0i32; out_size * ksize];
    let mut w = vec![0f64; ksize];
    for o in 0..out_size {
        let center = (o as f64 + 0.5) * scale;
        // C truncation toward zero of doubles, as `(int)` does.
        let xmin = ((center - support + 0.5) as i64).max(0);
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) - xmin;
        let (xmin, xmax) = (xmin as usize, xmax.max(0) as usize);
        let mut sum = 0.0;
        for (x, wx) in w.iter_mut().enumerate().take(xmax) {
            *wx = bicubic((x as f64 + xmin as f64 - center + 0.5) * ss);
            sum += *wx;
        }
        for x in 0..xmax {
            let v = if sum != 0.0 { w[x] / sum } else { w[x] };
            let f = v * (1u32 << PRECISION_BITS) as f64;
            weights[o * ksize + x] = if v < 0.0 {
                (-0.5 + f) as i32
            } else {
                (0.5 + f) as i32
            };
        }
        first.push(xmin);
        len.push(xmax);
    }
    Coeffs {
        ksize,
        first,
        len,
        weights,
    }
}

#[inline]
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Horizontal pass over rows `rows` of `src` (packed RGB, width `sw`) into `out_w` columns.
fn horizontal(src: &[u8], sw: usize, rows: std::ops::Range<usize>, out_w: usize) -> Vec<u8> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        return unsafe { horizontal_avx2(src, sw, rows, out_w) };
    }
    horizontal_impl(src, sw, rows, out_w)
}

/// The horizontal pass with one 4-lane i32 multiply-add per tap (pixels widened to RGBx).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn horizontal_avx2(src: &[u8], sw: usize, rows: std::ops::Range<usize>, out_w: usize) -> Vec<u8> {
    use std::arch::x86_64::{
        __m128i, _mm_add_epi32, _mm_loadu_si128, _mm_mullo_epi32, _mm_set1_epi32, _mm_storeu_si128,
    };
    let c = coeffs(sw, out_w);
    let mut out = vec![0u8; rows.len() * out_w * 3];
    let mut wide = vec![[0i32; 4]; sw];
    for (r, y) in rows.enumerate() {
        let row = &src[y * sw * 3..(y + 1) * sw * 3];
        for (w, p) in wide.iter_mut().zip(row.chunks_exact(3)) {
            *w = [p[0] as i32, p[1] as i32, p[2] as i32, 0];
        }
        let orow = &mut out[r * out_w * 3..(r + 1) * out_w * 3];
        for (o, dst) in orow.chunks_exact_mut(3).enumerate() {
            let k = &c.weights[o * c.ksize..o * c.ksize + c.len[o]];
            let px = &wide[c.first[o]..c.first[o] + c.len[o]];
            let mut acc = _mm_set1_epi32(1i32 << (PRECISION_BITS - 1));
            for (p, &kw) in px.iter().zip(k) {
                // SAFETY: `p` is 4 contiguous i32 (16 bytes); unaligned load.
                let v = unsafe { _mm_loadu_si128(p.as_ptr() as *const __m128i) };
                acc = _mm_add_epi32(acc, _mm_mullo_epi32(v, _mm_set1_epi32(kw)));
            }
            let mut a = [0i32; 4];
            // SAFETY: `a` is 16 bytes; unaligned store.
            unsafe { _mm_storeu_si128(a.as_mut_ptr() as *mut __m128i, acc) };
            dst[0] = clip8(a[0]);
            dst[1] = clip8(a[1]);
            dst[2] = clip8(a[2]);
        }
    }
    out
}

#[cfg_attr(all(target_arch = "x86_64", not(test)), allow(dead_code))]
fn horizontal_impl(src: &[u8], sw: usize, rows: std::ops::Range<usize>, out_w: usize) -> Vec<u8> {
    let c = coeffs(sw, out_w);
    let mut out = vec![0u8; rows.len() * out_w * 3];
    for (r, y) in rows.enumerate() {
        let row = &src[y * sw * 3..(y + 1) * sw * 3];
        let orow = &mut out[r * out_w * 3..(r + 1) * out_w * 3];
        for o in 0..out_w {
            let k = &c.weights[o * c.ksize..o * c.ksize + c.len[o]];
            let px = &row[c.first[o] * 3..(c.first[o] + c.len[o]) * 3];
            let mut acc = [1i32 << (PRECISION_BITS - 1); 3];
            for (p, &kw) in px.chunks_exact(3).zip(k) {
                acc[0] += p[0] as i32 * kw;
                acc[1] += p[1] as i32 * kw;
                acc[2] += p[2] as i32 * kw;
            }
            orow[o * 3] = clip8(acc[0]);
            orow[o * 3 + 1] = clip8(acc[1]);
            orow[o * 3 + 2] = clip8(acc[2]);
        }
    }
    out
}

/// Vertical pass: `src` has `sh` rows of `w` packed RGB pixels, starting at input row `row0`
/// of the full-height coefficient space `full_h`.
fn vertical(src: &[u8], w: usize, row0: usize, full_h: usize, out_h: usize) -> Vec<u8> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        return unsafe { vertical_avx2(src, w, row0, full_h, out_h) };
    }
    vertical_impl(src, w, row0, full_h, out_h)
}

/// The vertical pass compiled for AVX2 (the row accumulation vectorises 8 lanes wide).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn vertical_avx2(src: &[u8], w: usize, row0: usize, full_h: usize, out_h: usize) -> Vec<u8> {
    vertical_impl(src, w, row0, full_h, out_h)
}

#[inline(always)]
fn vertical_impl(src: &[u8], w: usize, row0: usize, full_h: usize, out_h: usize) -> Vec<u8> {
    let c = coeffs(full_h, out_h);
    let stride = w * 3;
    let mut out = vec![0u8; out_h * stride];
    let mut acc = vec![0i32; stride];
    for o in 0..out_h {
        let k = &c.weights[o * c.ksize..o * c.ksize + c.len[o]];
        acc.fill(1i32 << (PRECISION_BITS - 1));
        for (i, &kw) in k.iter().enumerate() {
            let y = c.first[o] + i - row0;
            let row = &src[y * stride..(y + 1) * stride];
            for (a, &p) in acc.iter_mut().zip(row) {
                *a += p as i32 * kw;
            }
        }
        for (d, &a) in out[o * stride..(o + 1) * stride].iter_mut().zip(&acc) {
            *d = clip8(a);
        }
    }
    out
}

/// `PIL.Image.fromarray(rgb).resize((out_w, out_h))` (BICUBIC), bit-exact.
///
/// Either output size may be larger or smaller than the input. Sizes of 0 give an empty
/// frame.
pub fn resize_bicubic(src: &RgbFrame, out_w: usize, out_h: usize) -> RgbFrame {
    let (sw, sh) = (src.width, src.height);
    if out_w == 0 || out_h == 0 || sw == 0 || sh == 0 {
        return RgbFrame {
            width: out_w,
            height: out_h,
            data: vec![0; out_w * out_h * 3],
        };
    }
    if (sw, sh) == (out_w, out_h) {
        return src.clone();
    }
    let need_h = sw != out_w;
    let need_v = sh != out_h;
    match (need_h, need_v) {
        (true, false) => RgbFrame {
            width: out_w,
            height: sh,
            data: horizontal(&src.data, sw, 0..sh, out_w),
        },
        (false, true) => RgbFrame {
            width: sw,
            height: out_h,
            data: vertical(&src.data, sw, 0, sh, out_h),
        },
        _ => {
            // Like Pillow, resample horizontally only the rows the vertical pass reads.
            let cv = coeffs(sh, out_h);
            let row0 = cv.first[0];
            let row1 = cv.first[out_h - 1] + cv.len[out_h - 1];
            let tmp = horizontal(&src.data, sw, row0..row1, out_w);
            RgbFrame {
                width: out_w,
                height: out_h,
                data: vertical(&tmp, out_w, row0, sh, out_h),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The portable passes agree with the AVX2 ones (which the integration tests check against
    /// Pillow), so builds for other CPUs are exact too.
    #[test]
    fn portable_passes_equal_dispatched_ones() {
        let (w, h) = (181, 67);
        let mut s = 7u64;
        let src: Vec<u8> = (0..w * h * 3)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (s >> 56) as u8
            })
            .collect();
        for out in [1, 50, 128, 181, 400] {
            assert_eq!(
                horizontal(&src, w, 0..h, out),
                horizontal_impl(&src, w, 0..h, out)
            );
            assert_eq!(
                vertical(&src, w, 0, h, out),
                vertical_impl(&src, w, 0, h, out)
            );
        }
    }
}
