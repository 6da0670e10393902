//! SAM 2's image normalisation: the S×S uint8 RGB model image (what the video layer yields,
//! already resized) to the image encoder's `[3, S, S]` f32 input, exactly as the official video
//! predictor prepares its JPEG frames (docs/sam2-inference.md §2.1): `x / 255` computed in f64
//! and stored as f32 (numpy, then a float32 tensor), then `(x - mean) / std` in f32 with the
//! ImageNet mean and std, channel order RGB, layout CHW. On the host ([`normalize_chw`]) and on
//! the model's device ([`normalize_tensor`]), bit-identical: every step is correctly rounded.

use tch::{Device, Kind, Tensor};

/// ImageNet mean (RGB), as float32.
pub const IMG_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet std (RGB), as float32.
pub const IMG_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Normalises interleaved RGB bytes (`hwc[(y * W + x) * 3 + c]`, an S×S model image) to the
/// CHW f32 buffer of the same pixel count (length `hwc.len()`).
pub fn normalize_chw(hwc: &[u8]) -> Vec<f32> {
    let plane = hwc.len() / 3;
    let mut out = vec![0f32; 3 * plane];
    // The 256 possible values per channel, computed once.
    let mut lut = [[0f32; 256]; 3];
    for (c, table) in lut.iter_mut().enumerate() {
        for (v, t) in table.iter_mut().enumerate() {
            let x = (v as f64 / 255.0) as f32;
            *t = (x - IMG_MEAN[c]) / IMG_STD[c];
        }
    }
    for (i, px) in hwc.chunks_exact(3).enumerate() {
        out[i] = lut[0][px[0] as usize];
        out[plane + i] = lut[1][px[1] as usize];
        out[2 * plane + i] = lut[2][px[2] as usize];
    }
    out
}

/// Normalises an `[S, S, 3]` uint8 image tensor to the `[3, S, S]` f32 model input on the
/// tensor's device with the same arithmetic as [`normalize_chw`] (x / 255 in f64, rounded to
/// f32, then `(x - mean) / std` in f32), so the result is bit-identical on any device.
pub fn normalize_tensor(hwc: &Tensor) -> Tensor {
    let (mean, std) = mean_std(hwc.device());
    let x = hwc.permute([2, 0, 1]).to_kind(Kind::Double) / 255.0;
    (x.to_kind(Kind::Float) - mean) / std
}

thread_local! {
    /// [`mean_std`] per device already uploaded on this thread.
    static MEAN_STD: std::cell::RefCell<Vec<(Device, Tensor, Tensor)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// `IMG_MEAN` and `IMG_STD` as `[3, 1, 1]` f32 tensors on `dev`, uploaded once per device and
/// thread rather than per frame (each upload from pageable memory would synchronise a GPU's
/// stream).
fn mean_std(dev: Device) -> (Tensor, Tensor) {
    MEAN_STD.with(|c| {
        let mut c = c.borrow_mut();
        if let Some((_, m, s)) = c.iter().find(|e| e.0 == dev) {
            return (m.shallow_clone(), s.shallow_clone());
        }
        let m = Tensor::from_slice(&IMG_MEAN).view([3, 1, 1]).to_device(dev);
        let s = Tensor::from_slice(&IMG_STD).view([3, 1, 1]).to_device(dev);
        c.push((dev, m.shallow_clone(), s.shallow_clone()));
        (m, s)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensor_normalisation_is_bit_identical() {
        // Every byte value in every channel, at an odd size.
        let (w, h) = (29usize, 31usize);
        let data: Vec<u8> = (0..w * h * 3).map(|i| ((i * 7919) % 256) as u8).collect();
        let host = normalize_chw(&data);
        let t = normalize_tensor(&Tensor::from_slice(&data).view([h as i64, w as i64, 3]));
        assert_eq!(t.size(), vec![3, h as i64, w as i64]);
        let dev: Vec<f32> = Vec::try_from(t.flatten(0, -1)).expect("f32");
        let same = host
            .iter()
            .zip(&dev)
            .all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same && host.len() == dev.len());
    }
}
