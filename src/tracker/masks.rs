//! From low-res mask logits to what is written per object-frame: the official video-resolution
//! output (bilinear resize of the hole-filled low-res logits to H×W, `align_corners=False`, no
//! antialias, then `> 0`), as COCO run lengths (column-major, zeros first), area and the
//! pixel-edge bounding box. A failed device-to-host copy is an error, never an empty mask.

use tch::{Device, Kind, Tensor};

use super::TrackError;
pub use crate::mask::MaskRuns;
use crate::mask::Rle;

/// Resizes low-res logits `[N, 1, r, r]` to `[N, H, W]` booleans (`> 0`) on their device.
fn binary_masks(low_res: &Tensor, height: u32, width: u32) -> Tensor {
    let up = low_res.to_kind(Kind::Float).upsample_bilinear2d(
        [height as i64, width as i64],
        false,
        None,
        None,
    );
    up.gt(0.0).squeeze_dim(1)
}

/// Resizes low-res logits `[N, 1, r, r]` to `[N, H, W]` booleans (`> 0`) on the CPU.
pub fn video_masks(low_res: &Tensor, height: u32, width: u32) -> Tensor {
    binary_masks(low_res, height, width).to_device(Device::Cpu)
}

/// Video-resolution masks of all objects on a frame, run-length encoded: the same result as
/// [`video_masks`] then [`mask_runs`] per object. On a CUDA device the run boundaries are found
/// on the device (column-major change points of all masks in one pass), so only the boundary
/// positions cross to the host instead of `N × H × W` bytes, and the host does no per-pixel
/// work; on the CPU the row-major encoder is faster and is used as before.
pub fn frame_mask_runs(
    low_res: &Tensor,
    height: u32,
    width: u32,
) -> Result<Vec<MaskRuns>, TrackError> {
    if low_res.device() == Device::Cpu {
        let masks = video_masks(low_res, height, width);
        return (0..masks.size()[0])
            .map(|i| mask_runs(&masks.get(i)))
            .collect();
    }
    device_mask_runs(low_res, height, width)
}

/// [`frame_mask_runs`] computed with tensor ops on `low_res`'s device (any device; public for
/// the equality test on the CPU).
pub fn device_mask_runs(
    low_res: &Tensor,
    height: u32,
    width: u32,
) -> Result<Vec<MaskRuns>, TrackError> {
    let n = low_res.size()[0];
    let (h, w) = (height as i64, width as i64);
    let total = (h * w) as u32;
    // Column-major order per object: [N, W, H] flattened to [N, W*H].
    let cm = binary_masks(low_res, height, width)
        .view([n, h, w])
        .transpose(1, 2)
        .contiguous()
        .view([n, h * w]);
    // Positions p (1..HW-1) where the value differs from the one before: a new run starts there.
    let change = cm
        .narrow(1, 1, h * w - 1)
        .ne_tensor(&cm.narrow(1, 0, h * w - 1));
    let idx = change.nonzero(); // [K, 2]: (object, p - 1), in row-major = (object, p) order
    let first = Vec::<u8>::try_from(cm.select(1, 0).to_kind(Kind::Uint8).to_device(Device::Cpu))
        .map_err(|e| to_host("mask starts", e))?;
    let pairs = Vec::<i64>::try_from(idx.flatten(0, -1).to_device(Device::Cpu))
        .map_err(|e| to_host("mask run boundaries", e))?;
    if first.len() != n as usize {
        return Err(TrackError::Device(format!(
            "mask starts: {} values for {n} masks",
            first.len()
        )));
    }
    let mut starts: Vec<Vec<u32>> = vec![Vec::new(); n as usize];
    for pr in pairs.chunks_exact(2) {
        let v = usize::try_from(pr[0])
            .ok()
            .and_then(|o| starts.get_mut(o))
            .ok_or_else(|| TrackError::Device(format!("mask run of object {}", pr[0])))?;
        v.push(pr[1] as u32 + 1);
    }
    starts
        .into_iter()
        .enumerate()
        .map(|(i, st)| {
            let mut counts = Vec::with_capacity(st.len() + 2);
            if first[i] != 0 {
                counts.push(0);
            }
            let mut prev = 0u32;
            for p in st.into_iter().chain(std::iter::once(total)) {
                counts.push(p - prev);
                prev = p;
            }
            Rle::from_counts(height, width, counts)
                .map(MaskRuns::from)
                .map_err(|e| TrackError::Invalid(format!("mask runs: {e}")))
        })
        .collect()
}

/// Run-length encodes one `[H, W]` boolean mask with the shared COCO RLE encoder
/// (row-major input, no transposed copy).
pub fn mask_runs(mask: &Tensor) -> Result<MaskRuns, TrackError> {
    let size = mask.size();
    let (h, w) = (size[0] as u32, size[1] as u32);
    let bytes = mask
        .to_kind(Kind::Uint8)
        .contiguous()
        .flatten(0, -1)
        .to_device(Device::Cpu);
    let data: Vec<u8> = Vec::<u8>::try_from(&bytes).map_err(|e| to_host("mask", e))?;
    Rle::encode_row_major(&data, h, w)
        .map(MaskRuns::from)
        .map_err(|e| TrackError::Invalid(format!("mask runs: {e}")))
}

fn to_host(what: &str, e: tch::TchError) -> TrackError {
    TrackError::Device(format!("copying the {what} to the host: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_and_bbox() {
        // 2x3 mask rows [0,1,1],[0,1,0] -> column-major 0,0,1,1,1,0.
        let m = Tensor::from_slice(&[0u8, 1, 1, 0, 1, 0]).view([2, 3]).gt(0);
        let r = mask_runs(&m).unwrap();
        assert_eq!(r.counts, vec![2, 3, 1]);
        assert_eq!(r.area, 3);
        assert_eq!(r.bbox, Some([1, 0, 3, 2]));
        let e = mask_runs(&Tensor::zeros([2, 2], (Kind::Bool, Device::Cpu))).unwrap();
        assert_eq!(e.counts, vec![4]);
        assert_eq!(e.bbox, None);
        let f = mask_runs(&Tensor::ones([2, 2], (Kind::Bool, Device::Cpu))).unwrap();
        assert_eq!(f.counts, vec![0, 4]);
    }

    #[test]
    fn device_runs_equal_host_runs() {
        // Random blobs and edge cases (empty, full, first pixel set, last pixel set), odd sizes.
        tch::manual_seed(7);
        let (h, w) = (37u32, 53u32);
        let noise = Tensor::randn([5, 1, 9, 13], (Kind::Float, Device::Cpu));
        let low = noise.copy();
        let _ = low.get(1).fill_(-1.0);
        let _ = low.get(2).fill_(1.0);
        let _ = low.get(3).fill_(-1.0);
        let _ = low.get(3).get(0).get(0).get(0).fill_(50.0);
        let _ = low.get(4).fill_(-1.0);
        let _ = low.get(4).get(0).get(8).get(12).fill_(50.0);
        let masks = video_masks(&low, h, w);
        let host: Vec<MaskRuns> = (0..5).map(|i| mask_runs(&masks.get(i)).unwrap()).collect();
        let dev = device_mask_runs(&low, h, w).unwrap();
        assert_eq!(host, dev);
        assert_eq!(dev[1].counts, vec![h * w]);
        assert_eq!(dev[2].counts, vec![0, h * w]);
        assert!(dev[3].counts[0] == 0 && dev[4].counts.len() >= 2);
    }

    #[test]
    fn resize_is_bilinear_half_pixel() {
        // A 4x4 logit map, one positive pixel, to 8x8: the positive 2x2 block stays interior.
        let mut v = vec![-1.0f32; 16];
        v[5] = 3.0;
        let low = Tensor::from_slice(&v).view([1, 1, 4, 4]);
        let m = video_masks(&low, 8, 8);
        assert_eq!(m.size(), vec![1, 8, 8]);
        let r = mask_runs(&m.get(0)).unwrap();
        assert_eq!(r.bbox, Some([2, 2, 4, 4]));
    }
}
