//! Conversion of a frame to SAM 2's model input, exactly as the official video predictor
//! prepares JPEG frames (spec §2.1): Pillow bicubic resize to S×S on 8-bit data, `x / 255`
//! computed in f64 and stored as f32 (numpy, then a float32 tensor), then `(x - mean) / std` in
//! f32 with ImageNet mean/std, channel order RGB, layout CHW.

use super::frame::RgbFrame;
use super::resize::resize_bicubic;

/// SAM 2's default model input size.
pub const DEFAULT_IMAGE_SIZE: usize = 1024;
/// ImageNet mean (RGB), as float32.
pub const IMG_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet std (RGB), as float32.
pub const IMG_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// The S×S uint8 RGB image the model sees (before normalisation): Pillow's
/// `Image.resize((S, S))`, bicubic, aspect ratio not preserved.
pub fn model_input_rgb(rgb: &RgbFrame, size: usize) -> RgbFrame {
    resize_bicubic(rgb, size, size)
}

/// Normalises an already resized S×S RGB image to the CHW f32 buffer (length `3 * S * S`).
pub fn normalize_chw(rgb: &RgbFrame) -> Vec<f32> {
    let plane = rgb.width * rgb.height;
    let mut out = vec![0f32; 3 * plane];
    // The 256 possible values per channel, computed once.
    let mut lut = [[0f32; 256]; 3];
    for (c, table) in lut.iter_mut().enumerate() {
        for (v, t) in table.iter_mut().enumerate() {
            let x = (v as f64 / 255.0) as f32;
            *t = (x - IMG_MEAN[c]) / IMG_STD[c];
        }
    }
    for (i, px) in rgb.data.chunks_exact(3).enumerate() {
        out[i] = lut[0][px[0] as usize];
        out[plane + i] = lut[1][px[1] as usize];
        out[2 * plane + i] = lut[2][px[2] as usize];
    }
    out
}

/// The model input of a frame: resize to `size`×`size` (Pillow bicubic, bit-exact), `/255`,
/// normalise; CHW f32, length `3 * size * size`.
pub fn model_input(rgb: &RgbFrame, size: usize) -> Vec<f32> {
    normalize_chw(&model_input_rgb(rgb, size))
}

/// The S×S uint8 model image as an `[S, S, 3]` uint8 tensor on the CPU (3 bytes per pixel:
/// a quarter of the normalised f32 input to copy and send to a GPU).
pub fn model_rgb_tensor(rgb: &RgbFrame) -> tch::Tensor {
    tch::Tensor::from_slice(&rgb.data).view([rgb.height as i64, rgb.width as i64, 3])
}

/// Normalises an `[S, S, 3]` uint8 image tensor to the `[3, S, S]` f32 model input on the
/// tensor's device with the same arithmetic as [`normalize_chw`] (x / 255 in f64, rounded to
/// f32, then `(x - mean) / std` in f32: every step correctly rounded, so the result is
/// bit-identical on any device).
pub fn normalize_tensor(hwc: &tch::Tensor) -> tch::Tensor {
    let dev = hwc.device();
    let mean = tch::Tensor::from_slice(&IMG_MEAN)
        .view([3, 1, 1])
        .to_device(dev);
    let std = tch::Tensor::from_slice(&IMG_STD)
        .view([3, 1, 1])
        .to_device(dev);
    let x = hwc.permute([2, 0, 1]).to_kind(tch::Kind::Double) / 255.0;
    (x.to_kind(tch::Kind::Float) - mean) / std
}

/// [`model_input`] as a `[3, S, S]` f32 tensor on `device`.
pub fn model_input_tensor(rgb: &RgbFrame, size: usize, device: tch::Device) -> tch::Tensor {
    let s = size as i64;
    tch::Tensor::from_slice(&model_input(rgb, size))
        .view([3, s, s])
        .to_device(device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensor_normalisation_is_bit_identical() {
        // Every byte value in every channel, at an odd size.
        let (w, h) = (29usize, 31usize);
        let data: Vec<u8> = (0..w * h * 3).map(|i| ((i * 7919) % 256) as u8).collect();
        let rgb = RgbFrame::new(w, h, data).expect("size");
        let host = normalize_chw(&rgb);
        let t = normalize_tensor(&model_rgb_tensor(&rgb));
        assert_eq!(t.size(), vec![3, h as i64, w as i64]);
        let dev: Vec<f32> = Vec::try_from(t.flatten(0, -1)).expect("f32");
        let same = host
            .iter()
            .zip(&dev)
            .all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same && host.len() == dev.len());
    }
}
