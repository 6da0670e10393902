//! The DAVIS 2017 metrics (davis2017-evaluation): region similarity J (IoU), boundary
//! F-measure (`seg2bmap` boundaries, tolerance `ceil(0.008 * diagonal)` pixels, disk
//! dilation), the per-sequence statistics mean / recall / decay, and box IoU.
//!
//! Same definitions and edge cases as the reference: J = 1 when both masks are empty; F with
//! an empty boundary on one side is 0, on both sides 1. The reference's decay indexes frames
//! through `uint8` (wrong past 256 frames); here they are plain integers. The dilation is not
//! materialised: a boundary pixel is matched when the other boundary has a pixel within the
//! disk, found with per-row prefix sums.

/// Masks are row-major `u8` (nonzero = foreground) of `height` x `width`.
#[derive(Debug, Clone, Copy)]
pub struct Dims {
    pub height: usize,
    pub width: usize,
}

/// Region similarity (Jaccard index); 1 when both masks are empty.
pub fn region_j(gt: &[u8], res: &[u8]) -> f64 {
    let (mut inter, mut union) = (0u64, 0u64);
    for (&a, &b) in gt.iter().zip(res) {
        let (a, b) = (a != 0, b != 0);
        inter += u64::from(a && b);
        union += u64::from(a || b);
    }
    if union == 0 {
        1.0
    } else {
        inter as f64 / union as f64
    }
}

/// The one-pixel boundary map of a mask (DAVIS `_seg2bmap` at full resolution): a pixel is
/// on the boundary when it differs from its right, lower or lower-right neighbour; in the
/// last row only the right neighbour counts, in the last column only the lower one, and the
/// bottom-right pixel never.
pub fn seg2bmap(mask: &[u8], d: Dims) -> Vec<u8> {
    let (h, w) = (d.height, d.width);
    let at = |y: usize, x: usize| mask[y * w + x] != 0;
    let mut b = vec![0u8; h * w];
    for y in 0..h {
        for x in 0..w {
            let s = at(y, x);
            let v = if y + 1 < h && x + 1 < w {
                s != at(y, x + 1) || s != at(y + 1, x) || s != at(y + 1, x + 1)
            } else if y + 1 == h && x + 1 < w {
                s != at(y, x + 1)
            } else if x + 1 == w && y + 1 < h {
                s != at(y + 1, x)
            } else {
                false
            };
            b[y * w + x] = u8::from(v);
        }
    }
    b
}

/// The boundary tolerance in pixels: `bound_th` itself when >= 1, else
/// `ceil(bound_th * sqrt(h^2 + w^2))`.
pub fn bound_pixels(bound_th: f64, d: Dims) -> usize {
    // A tolerance wider than the image diagonal counts every pixel as every other's neighbour:
    // clamped there (a huge one would otherwise size the search disk beyond memory).
    let diag_px = ((d.height as f64).hypot(d.width as f64)).ceil();
    let bound_th = if bound_th.is_nan() { 0.0 } else { bound_th };
    if bound_th >= 1.0 {
        bound_th.min(diag_px.max(1.0)) as usize
    } else {
        let diag = ((d.height * d.height + d.width * d.width) as f64).sqrt();
        (bound_th * diag).ceil() as usize
    }
}

/// Per-row prefix sums of a 0/1 map, for "any pixel in row y between x0 and x1" queries.
struct RowSums {
    w: usize,
    sums: Vec<u32>, // (w + 1) per row
}

impl RowSums {
    fn new(map: &[u8], d: Dims) -> Self {
        let w = d.width;
        let mut sums = Vec::with_capacity(d.height * (w + 1));
        for y in 0..d.height {
            let mut acc = 0u32;
            sums.push(0);
            for &v in &map[y * w..(y + 1) * w] {
                acc += u32::from(v != 0);
                sums.push(acc);
            }
        }
        Self { w, sums }
    }

    fn any(&self, y: usize, x0: usize, x1: usize) -> bool {
        let row = &self.sums[y * (self.w + 1)..(y + 1) * (self.w + 1)];
        row[x1 + 1] > row[x0]
    }
}

/// Counts the pixels of `a` that have a pixel of `b` within the disk of radius `r`
/// (`dx^2 + dy^2 <= r^2`, as skimage's `disk`): `sum(a * dilate(b, disk(r)))`.
fn matched(a: &[u8], b_sums: &RowSums, d: Dims, half: &[usize]) -> u64 {
    let r = half.len() - 1;
    let (h, w) = (d.height, d.width);
    let mut n = 0u64;
    for y in 0..h {
        for x in 0..w {
            if a[y * w + x] == 0 {
                continue;
            }
            let y0 = y.saturating_sub(r);
            let y1 = (y + r).min(h - 1);
            let hit = (y0..=y1).any(|yy| {
                let k = half[yy.abs_diff(y)];
                b_sums.any(yy, x.saturating_sub(k), (x + k).min(w - 1))
            });
            n += u64::from(hit);
        }
    }
    n
}

/// The box `[y0, y1) x [x0, x1)` of the pixels set in either mask.
fn union_box(a: &[u8], b: &[u8], d: Dims) -> Option<(usize, usize, usize, usize)> {
    let (mut y0, mut x0, mut y1, mut x1) = (usize::MAX, usize::MAX, 0, 0);
    for y in 0..d.height {
        let ra = &a[y * d.width..(y + 1) * d.width];
        let rb = &b[y * d.width..(y + 1) * d.width];
        let first = ra.iter().zip(rb).position(|(&p, &q)| p != 0 || q != 0);
        if let Some(f) = first {
            let last = ra
                .iter()
                .zip(rb)
                .rposition(|(&p, &q)| p != 0 || q != 0)
                .unwrap_or(f);
            y0 = y0.min(y);
            y1 = y + 1;
            x0 = x0.min(f);
            x1 = x1.max(last + 1);
        }
    }
    (y1 > 0).then_some((y0, x0, y1, x1))
}

/// Boundary F-measure of `res` (the result, "foreground") against `gt`, DAVIS `f_measure`.
pub fn boundary_f(gt: &[u8], res: &[u8], d: Dims, bound_th: f64) -> f64 {
    if d.height == 0 || d.width == 0 {
        return 1.0;
    }
    let r = bound_pixels(bound_th, d);
    // half[dy] = largest dx with dx^2 + dy^2 <= r^2.
    let half: Vec<usize> = (0..=r)
        .map(|dy| {
            let rem = r * r - dy * dy;
            let mut k = (rem as f64).sqrt() as usize;
            while k * k > rem {
                k -= 1;
            }
            while (k + 1) * (k + 1) <= rem {
                k += 1;
            }
            k
        })
        .collect();
    // Work on the union box of both masks grown by one pixel (clipped to the image): the
    // boundary maps are zero outside it and equal inside it (the margin row / column is
    // background on both sides, so the last-row / last-column rules give the same result).
    let Some((y0, x0, y1, x1)) = union_box(gt, res, d) else {
        return 1.0; // both empty
    };
    let (y0, x0) = (y0.saturating_sub(1), x0.saturating_sub(1));
    let (y1, x1) = ((y1 + 1).min(d.height), (x1 + 1).min(d.width));
    let c = Dims {
        height: y1 - y0,
        width: x1 - x0,
    };
    let crop = |m: &[u8]| -> Vec<u8> {
        (y0..y1)
            .flat_map(|y| m[y * d.width + x0..y * d.width + x1].iter().copied())
            .collect()
    };
    let (res_c, gt_c) = (crop(res), crop(gt));
    let fg = seg2bmap(&res_c, c);
    let gtb = seg2bmap(&gt_c, c);
    let d = c;
    let n_fg: u64 = fg.iter().map(|&v| u64::from(v)).sum();
    let n_gt: u64 = gtb.iter().map(|&v| u64::from(v)).sum();
    let (precision, recall) = match (n_fg, n_gt) {
        (0, 0) => (1.0, 1.0),
        (0, _) => (1.0, 0.0),
        (_, 0) => (0.0, 1.0),
        _ => {
            let fg_match = matched(&fg, &RowSums::new(&gtb, d), d, &half);
            let gt_match = matched(&gtb, &RowSums::new(&fg, d), d, &half);
            (fg_match as f64 / n_fg as f64, gt_match as f64 / n_gt as f64)
        }
    };
    if precision + recall == 0.0 {
        0.0
    } else {
        2.0 * precision * recall / (precision + recall)
    }
}

/// Mean, recall (fraction > 0.5) and decay of per-frame values, DAVIS `db_statistics` (NaN
/// values skipped; decay over four bins, first minus last), without the reference's `uint8`
/// frame indices.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Stats {
    pub mean: f64,
    pub recall: f64,
    pub decay: f64,
}

fn nanmean(v: &[f64]) -> f64 {
    let (s, n) = v
        .iter()
        .filter(|x| !x.is_nan())
        .fold((0.0, 0usize), |(s, n), &x| (s + x, n + 1));
    if n == 0 { f64::NAN } else { s / n as f64 }
}

/// The [`Stats`] of per-frame values (DAVIS `db_statistics`).
pub fn statistics(values: &[f64]) -> Stats {
    let n = values.len();
    let mean = nanmean(values);
    // As `np.nanmean(values > 0.5)`: NaN compares false and counts as 0.
    let above: Vec<f64> = values
        .iter()
        .map(|&x| f64::from(u8::from(x > 0.5)))
        .collect();
    let recall = nanmean(&above);
    if n == 0 {
        return Stats {
            mean,
            recall,
            decay: f64::NAN,
        };
    }
    // np.round(np.linspace(1, n, 5) + 1e-10) - 1
    let step = (n as f64 - 1.0) / 4.0;
    let ids: Vec<usize> = (0..5)
        .map(|i| {
            let v = if i == 4 {
                n as f64
            } else {
                1.0 + i as f64 * step
            };
            ((v + 1e-10).round_ties_even() - 1.0) as usize
        })
        .collect();
    let bin = |i: usize| &values[ids[i]..(ids[i + 1] + 1).min(n)];
    let decay = nanmean(bin(0)) - nanmean(bin(3));
    Stats {
        mean,
        recall,
        decay,
    }
}

/// IoU of two `[xmin, ymin, xmax, ymax]` boxes (continuous coordinates); 0 when both are
/// degenerate.
pub fn box_iou(a: [f64; 4], b: [f64; 4]) -> f64 {
    let area = |r: [f64; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    let union = area(a) + area(b) - inter;
    if union <= 0.0 { 0.0 } else { inter / union }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edge_cases() {
        let d = Dims {
            height: 4,
            width: 5,
        };
        let empty = vec![0u8; 20];
        let mut one = empty.clone();
        one[7] = 1;
        assert_eq!(region_j(&empty, &empty), 1.0);
        assert_eq!(region_j(&one, &empty), 0.0);
        assert_eq!(boundary_f(&empty, &empty, d, 0.008), 1.0);
        assert_eq!(boundary_f(&one, &empty, d, 0.008), 0.0);
        assert_eq!(boundary_f(&one, &one, d, 0.008), 1.0);
        assert_eq!(
            box_iou([0.0, 0.0, 2.0, 2.0], [1.0, 0.0, 3.0, 2.0]),
            1.0 / 3.0
        );
        let s = statistics(&[1.0; 300]);
        assert_eq!((s.mean, s.recall, s.decay), (1.0, 1.0, 0.0));
        assert!(statistics(&[]).mean.is_nan());
    }
}
