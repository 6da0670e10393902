//! Hole filling of low-res mask logits (official `utils/misc.fill_holes_in_mask_scores`,
//! docs/sam2-inference.md §4.7): 8-connected components of the background (`logit <= 0`),
//! border-touching ones included, whose area is at most `max_area` pixels are set to 0.1. Runs
//! on the CPU with a union-find; the result is returned on the input's device.

use tch::{Device, Kind, Tensor};

fn find(parent: &mut [u32], mut i: u32) -> u32 {
    while parent[i as usize] != i {
        let p = parent[parent[i as usize] as usize];
        parent[i as usize] = p;
        i = p;
    }
    i
}

fn union(parent: &mut [u32], a: u32, b: u32) {
    let (ra, rb) = (find(parent, a), find(parent, b));
    if ra != rb {
        let (lo, hi) = if ra < rb { (ra, rb) } else { (rb, ra) };
        parent[hi as usize] = lo;
    }
}

/// Fills, in place, the background holes of one `h×w` logit map.
pub fn fill_holes_slice(data: &mut [f32], h: usize, w: usize, max_area: i64) {
    if max_area <= 0 || data.len() != h * w {
        return;
    }
    let n = h * w;
    let bg: Vec<bool> = data.iter().map(|&v| v <= 0.0).collect();
    let mut parent: Vec<u32> = (0..n as u32).collect();
    for y in 0..h {
        for x in 0..w {
            let i = y * w + x;
            if !bg[i] {
                continue;
            }
            // Earlier neighbours in raster order: W, NW, N, NE.
            if x > 0 && bg[i - 1] {
                union(&mut parent, i as u32, (i - 1) as u32);
            }
            if y > 0 {
                let up = i - w;
                if bg[up] {
                    union(&mut parent, i as u32, up as u32);
                }
                if x > 0 && bg[up - 1] {
                    union(&mut parent, i as u32, (up - 1) as u32);
                }
                if x + 1 < w && bg[up + 1] {
                    union(&mut parent, i as u32, (up + 1) as u32);
                }
            }
        }
    }
    let mut area = vec![0i64; n];
    let mut root = vec![0u32; n];
    for i in 0..n {
        if bg[i] {
            let r = find(&mut parent, i as u32);
            root[i] = r;
            area[r as usize] += 1;
        }
    }
    for i in 0..n {
        if bg[i] && area[root[i] as usize] <= max_area {
            data[i] = 0.1;
        }
    }
}

/// `low_res_logits [B, 1, h, w]` (any float kind) -> same shape, f32, holes of area ≤ `max_area`
/// filled with 0.1. `max_area <= 0` returns the input unchanged (as f32).
pub fn fill_holes(low_res_logits: &Tensor, max_area: i64) -> Tensor {
    let x = low_res_logits.to_kind(Kind::Float);
    if max_area <= 0 || x.dim() < 2 {
        return x;
    }
    let size = x.size();
    let (h, w) = (size[size.len() - 2] as usize, size[size.len() - 1] as usize);
    let device = x.device();
    let cpu = x.to_device(Device::Cpu).contiguous();
    let numel = cpu.numel();
    let mut data = vec![0f32; numel];
    cpu.copy_data(&mut data, numel);
    if h * w > 0 {
        for chunk in data.chunks_mut(h * w) {
            fill_holes_slice(chunk, h, w, max_area);
        }
    }
    Tensor::from_slice(&data)
        .reshape(size.as_slice())
        .to_device(device)
}
