//! Conversion of a frame to SAM 2's model image, exactly as the official video predictor
//! prepares JPEG frames (docs/sam2-inference.md §2.1): Pillow bicubic resize to S×S on 8-bit
//! data, aspect ratio not preserved. The video layer yields this uint8 RGB image; its
//! normalisation to the f32 model input is the model's (`crate::model::image_input`).

use super::frame::RgbFrame;
use super::resize::resize_bicubic;

/// SAM 2's default model input size.
pub const DEFAULT_IMAGE_SIZE: usize = 1024;

/// The S×S uint8 RGB image the model sees (before normalisation): Pillow's
/// `Image.resize((S, S))`, bicubic, aspect ratio not preserved.
pub fn model_input_rgb(rgb: &RgbFrame, size: usize) -> RgbFrame {
    resize_bicubic(rgb, size, size)
}

/// The S×S uint8 model image as an `[S, S, 3]` uint8 tensor on the CPU (3 bytes per pixel:
/// a quarter of the normalised f32 input to copy and send to a GPU).
pub fn model_rgb_tensor(rgb: &RgbFrame) -> tch::Tensor {
    tch::Tensor::from_slice(&rgb.data).view([rgb.height as i64, rgb.width as i64, 3])
}
