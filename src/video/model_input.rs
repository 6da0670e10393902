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

/// [`model_input`] as a `[3, S, S]` f32 tensor on `device`.
pub fn model_input_tensor(rgb: &RgbFrame, size: usize, device: tch::Device) -> tch::Tensor {
    let s = size as i64;
    tch::Tensor::from_slice(&model_input(rgb, size))
        .view([3, s, s])
        .to_device(device)
}
