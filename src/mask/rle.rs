//! COCO run-length encoding of binary masks, byte-identical to pycocotools.
//!
//! A mask of `height` x `width` pixels is read in column-major order (down the first column,
//! then the next); `counts` holds the lengths of alternating runs, starting with a run of
//! zeros (which may be empty). The compressed string form is pycocotools' `rleToString`:
//! from the fourth count on, each count is stored as the difference to the count two places
//! before it, and every value is written as a little-endian sequence of 5-bit groups with a
//! continuation bit, offset into printable ASCII (`'0'` = 48).
//!
//! Encoders take row-major masks (what images and tensors hold) and produce the column-major
//! runs without transposing a copy: a run boundary sits at every pixel whose value differs
//! from the pixel before it in column-major order, which for row `y > 0` is the pixel above
//! it, so boundaries are found by comparing each row with the previous one (word at a time
//! where they are equal) and then sorted.

use thiserror::Error;

/// Errors from building or parsing an RLE.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RleError {
    /// The mask buffer does not hold `height * width` values.
    #[error("mask buffer has {len} values, expected {height}x{width} = {expected}")]
    BufferSize {
        len: usize,
        height: u32,
        width: u32,
        expected: u64,
    },
    /// The counts do not add up to `height * width`.
    #[error("RLE counts sum to {sum}, expected {height}x{width} = {expected}")]
    CountsSum {
        sum: u64,
        height: u32,
        width: u32,
        expected: u64,
    },
    /// A compressed counts string that is not valid.
    #[error("malformed RLE counts string at byte {pos}: {reason}")]
    BadString { pos: usize, reason: &'static str },
    /// A declared size above the limit of its use (checked before anything is allocated).
    #[error("mask size {height}x{width} is larger than {max_height}x{max_width}")]
    TooLarge {
        height: u32,
        width: u32,
        max_height: u32,
        max_width: u32,
    },
}

/// A COCO RLE: mask size and the column-major run lengths (zeros first).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rle {
    pub height: u32,
    pub width: u32,
    pub counts: Vec<u32>,
}

fn pixel_count(height: u32, width: u32) -> u64 {
    u64::from(height) * u64::from(width)
}

fn check_len(len: usize, height: u32, width: u32) -> Result<(), RleError> {
    let expected = pixel_count(height, width);
    if len as u64 != expected {
        return Err(RleError::BufferSize {
            len,
            height,
            width,
            expected,
        });
    }
    Ok(())
}

/// Turns sorted column-major boundary positions into run counts (zeros first).
fn counts_from_boundaries(boundaries: &mut [u64], total: u64) -> Vec<u32> {
    boundaries.sort_unstable();
    let mut counts = Vec::with_capacity(boundaries.len() + 1);
    let mut prev = 0u64;
    for &b in boundaries.iter() {
        counts.push((b - prev) as u32);
        prev = b;
    }
    counts.push((total - prev) as u32);
    counts
}

/// Finds column-major run boundaries of a row-major mask, with `on(i)` the value of pixel `i`
/// (row-major index) and `rows_equal(a, b)` a fast check that two whole rows are equal.
fn boundaries_row_major(
    height: usize,
    width: usize,
    on: impl Fn(usize) -> bool,
    rows_equal: impl Fn(usize, usize) -> bool,
) -> Vec<u64> {
    let h = height as u64;
    let mut out = Vec::new();
    if height == 0 || width == 0 {
        return out;
    }
    // Row 0: pixel (0, x) follows (h-1, x-1) in column-major order; (0, 0) follows "zero".
    let last_row = (height - 1) * width;
    for x in 0..width {
        let prev = if x == 0 { false } else { on(last_row + x - 1) };
        if on(x) != prev {
            out.push(x as u64 * h);
        }
    }
    for y in 1..height {
        let row = y * width;
        let above = row - width;
        if rows_equal(row, above) {
            continue;
        }
        for x in 0..width {
            if on(row + x) != on(above + x) {
                out.push(x as u64 * h + y as u64);
            }
        }
    }
    out
}

/// Compares two rows of `width` bytes for equality of their on/off values; equal bytes are a
/// fast accept, differing bytes are checked as booleans (1 and 255 are both "on").
fn u8_rows_equal(mask: &[u8], a: usize, b: usize, width: usize) -> bool {
    let ra = &mask[a..a + width];
    let rb = &mask[b..b + width];
    if ra == rb {
        return true;
    }
    ra.iter().zip(rb).all(|(&p, &q)| (p != 0) == (q != 0))
}

/// Appends the compressed counts string of `counts` (pycocotools' `rleToString`, see the module
/// doc) to `out`: bytes in `'0'..='o'` (48..=111). What [`Rle::to_counts_string`] returns,
/// without a `String` in between (the JSONL sink writes it straight into the line).
///
/// A value of `k` 5-bit groups is the shortest `k` whose `5k` bits hold it as a signed number.
/// Values of one or two groups (a mask's run differences, nearly always) are written without a
/// branch on the group count: two bytes are stored and the end advanced by one or two.
pub fn append_counts_string(counts: &[u32], out: &mut Vec<u8>) {
    let mut n = out.len();
    out.resize(n + 2 * counts.len() + 2, 0);
    for (i, &c) in counts.iter().enumerate() {
        let mut x = i64::from(c);
        if i > 2 {
            x -= i64::from(counts[i - 2]);
        }
        // Significant bits of |x| (of !x when negative): k groups hold up to 5k - 1 of them.
        let bits = 64 - (x ^ (x >> 63)).leading_zeros() as usize;
        let groups = (bits + 5) / 5;
        if groups <= 2 {
            let more = u8::from(groups == 2) << 5;
            out[n] = ((x & 0x1f) as u8 | more) + 48;
            out[n + 1] = ((x >> 5) & 0x1f) as u8 + 48;
            n += groups;
            continue;
        }
        // Room for this value's groups and two bytes for each value after it.
        let need = n + groups + 2 * (counts.len() - i) + 2;
        if out.len() < need {
            out.resize(need, 0);
        }
        for g in 0..groups {
            let more = u8::from(g + 1 < groups) << 5;
            out[n] = (((x >> (5 * g)) & 0x1f) as u8 | more) + 48;
            n += 1;
        }
    }
    out.truncate(n);
}

impl Rle {
    /// Builds an RLE from counts, checking that they cover the mask exactly.
    pub fn from_counts(height: u32, width: u32, counts: Vec<u32>) -> Result<Self, RleError> {
        let sum: u64 = counts.iter().map(|&c| u64::from(c)).sum();
        let expected = pixel_count(height, width);
        if sum != expected {
            return Err(RleError::CountsSum {
                sum,
                height,
                width,
                expected,
            });
        }
        Ok(Self {
            height,
            width,
            counts,
        })
    }

    /// An all-zero mask.
    pub fn empty(height: u32, width: u32) -> Self {
        Self {
            height,
            width,
            counts: vec![pixel_count(height, width) as u32],
        }
    }

    /// Encodes a row-major mask (`mask[y * width + x]`, nonzero = foreground).
    pub fn encode_row_major(mask: &[u8], height: u32, width: u32) -> Result<Self, RleError> {
        check_len(mask.len(), height, width)?;
        let w = width as usize;
        let mut b = boundaries_row_major(
            height as usize,
            w,
            |i| mask[i] != 0,
            |a, b| u8_rows_equal(mask, a, b, w),
        );
        Ok(Self {
            height,
            width,
            counts: counts_from_boundaries(&mut b, pixel_count(height, width)),
        })
    }

    /// Encodes a row-major boolean mask.
    pub fn encode_row_major_bool(mask: &[bool], height: u32, width: u32) -> Result<Self, RleError> {
        check_len(mask.len(), height, width)?;
        let w = width as usize;
        let mut b = boundaries_row_major(
            height as usize,
            w,
            |i| mask[i],
            |a, b| mask[a..a + w] == mask[b..b + w],
        );
        Ok(Self {
            height,
            width,
            counts: counts_from_boundaries(&mut b, pixel_count(height, width)),
        })
    }

    /// Encodes row-major logits thresholded as `logit > threshold` (SAM 2 uses 0.0), without
    /// building a binary copy. NaN counts as background.
    pub fn encode_logits_row_major(
        logits: &[f32],
        height: u32,
        width: u32,
        threshold: f32,
    ) -> Result<Self, RleError> {
        check_len(logits.len(), height, width)?;
        let (h, w) = (height as usize, width as usize);
        let mut b = Vec::new();
        if h > 0 && w > 0 {
            // Threshold one row at a time into small buffers, then compare rows as bytes.
            let row = |y: usize, out: &mut [u8]| {
                for (o, &v) in out.iter_mut().zip(&logits[y * w..(y + 1) * w]) {
                    *o = u8::from(v > threshold);
                }
            };
            let (mut prev, mut cur) = (vec![0u8; w], vec![0u8; w]);
            row(h - 1, &mut prev);
            row(0, &mut cur);
            for x in 0..w {
                let before = if x == 0 { 0 } else { prev[x - 1] };
                if cur[x] != before {
                    b.push(x as u64 * h as u64);
                }
            }
            for y in 1..h {
                std::mem::swap(&mut prev, &mut cur);
                row(y, &mut cur);
                if cur == prev {
                    continue;
                }
                for x in 0..w {
                    if cur[x] != prev[x] {
                        b.push(x as u64 * h as u64 + y as u64);
                    }
                }
            }
        }
        Ok(Self {
            height,
            width,
            counts: counts_from_boundaries(&mut b, pixel_count(height, width)),
        })
    }

    /// Encodes a column-major mask (`mask[x * height + y]`, nonzero = foreground), as
    /// pycocotools' `rleEncode` reads it.
    pub fn encode_col_major(mask: &[u8], height: u32, width: u32) -> Result<Self, RleError> {
        check_len(mask.len(), height, width)?;
        let mut counts = Vec::new();
        let mut cur = false;
        let mut run = 0u32;
        for &v in mask {
            let on = v != 0;
            if on != cur {
                counts.push(run);
                run = 0;
                cur = on;
            }
            run += 1;
        }
        counts.push(run);
        Ok(Self {
            height,
            width,
            counts,
        })
    }

    /// Decodes into a row-major mask of 0/1 bytes.
    pub fn decode_row_major(&self) -> Vec<u8> {
        let h = self.height as u64;
        let w = self.width as usize;
        let mut out = vec![0u8; pixel_count(self.height, self.width) as usize];
        let mut pos = 0u64;
        for (i, &c) in self.counts.iter().enumerate() {
            let end = pos + u64::from(c);
            if i % 2 == 1 {
                // Walk the run column by column.
                let mut p = pos;
                while p < end {
                    let x = (p / h) as usize;
                    let y0 = p % h;
                    let y1 = (end - x as u64 * h).min(h);
                    for y in y0..y1 {
                        out[y as usize * w + x] = 1;
                    }
                    p = x as u64 * h + y1;
                }
            }
            pos = end;
        }
        out
    }

    /// Decodes into a column-major mask of 0/1 bytes (pycocotools' `rleDecode`).
    pub fn decode_col_major(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(pixel_count(self.height, self.width) as usize);
        for (i, &c) in self.counts.iter().enumerate() {
            out.resize(out.len() + c as usize, (i % 2) as u8);
        }
        out
    }

    /// Number of foreground pixels (pycocotools' `area`).
    pub fn area(&self) -> u64 {
        self.counts
            .iter()
            .skip(1)
            .step_by(2)
            .map(|&c| u64::from(c))
            .sum()
    }

    /// The box `[x, y, w, h]` as pycocotools' `toBbox` gives it (all zeros for an empty mask).
    pub fn bbox_xywh(&self) -> [u32; 4] {
        match self.bbox_xyxy() {
            Some([x0, y0, x1, y1]) => [x0, y0, x1 - x0, y1 - y0],
            None => [0; 4],
        }
    }

    /// The pixel-edge box `[xmin, ymin, xmax, ymax]` (xmax = last foreground column + 1),
    /// or `None` for an empty mask.
    pub fn bbox_xyxy(&self) -> Option<[u32; 4]> {
        let h = u64::from(self.height);
        if h == 0 {
            return None;
        }
        let (mut xs, mut ys, mut xe, mut ye) = (u64::MAX, u64::MAX, 0u64, 0u64);
        let mut pos = 0u64;
        let mut any = false;
        for (i, &c) in self.counts.iter().enumerate() {
            let start = pos;
            pos += u64::from(c);
            if i % 2 == 0 || c == 0 {
                continue;
            }
            any = true;
            let last = pos - 1;
            let (x0, y0) = (start / h, start % h);
            let (x1, y1) = (last / h, last % h);
            xs = xs.min(x0);
            xe = xe.max(x1);
            if x0 != x1 {
                // The run wraps a column: it covers the last row and the first row.
                ys = 0;
                ye = h - 1;
            } else {
                ys = ys.min(y0);
                ye = ye.max(y1);
            }
        }
        any.then(|| [xs as u32, ys as u32, xe as u32 + 1, ye as u32 + 1])
    }

    /// The compressed counts string (pycocotools' `rleToString`).
    pub fn to_counts_string(&self) -> String {
        let mut s = Vec::with_capacity(self.counts.len() * 2);
        append_counts_string(&self.counts, &mut s);
        // Every byte is in 48..=111, so this is ASCII.
        String::from_utf8(s).unwrap_or_default()
    }

    /// Parses a compressed counts string (pycocotools' `rleFrString`) and checks it covers an
    /// `height` x `width` mask.
    pub fn from_counts_string(s: &str, height: u32, width: u32) -> Result<Self, RleError> {
        let bytes = s.as_bytes();
        let mut counts: Vec<u32> = Vec::with_capacity(bytes.len());
        let mut p = 0usize;
        while p < bytes.len() {
            let mut x: i64 = 0;
            let mut k = 0u32;
            loop {
                let Some(&b) = bytes.get(p) else {
                    return Err(RleError::BadString {
                        pos: p,
                        reason: "string ends inside a value",
                    });
                };
                if !(48..=111).contains(&b) {
                    return Err(RleError::BadString {
                        pos: p,
                        reason: "character outside '0'..='o'",
                    });
                }
                if k >= 12 {
                    return Err(RleError::BadString {
                        pos: p,
                        reason: "value too long",
                    });
                }
                let c = i64::from(b - 48);
                x |= (c & 0x1f) << (5 * k);
                p += 1;
                k += 1;
                if c & 0x20 == 0 {
                    if c & 0x10 != 0 {
                        x |= -1i64 << (5 * k);
                    }
                    break;
                }
            }
            let m = counts.len();
            if m > 2 {
                x += i64::from(counts[m - 2]);
            }
            let Ok(v) = u32::try_from(x) else {
                return Err(RleError::BadString {
                    pos: p,
                    reason: "count out of range",
                });
            };
            counts.push(v);
        }
        Self::from_counts(height, width, counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// pycocotools' `rleToString` loop as written there (one byte at a time), the reference
    /// for [`append_counts_string`].
    fn counts_string_reference(counts: &[u32]) -> Vec<u8> {
        let mut s = Vec::new();
        for (i, &c) in counts.iter().enumerate() {
            let mut x = i64::from(c);
            if i > 2 {
                x -= i64::from(counts[i - 2]);
            }
            loop {
                let mut c = (x & 0x1f) as u8;
                x >>= 5;
                let more = if c & 0x10 != 0 { x != -1 } else { x != 0 };
                if more {
                    c |= 0x20;
                }
                s.push(c + 48);
                if !more {
                    break;
                }
            }
        }
        s
    }

    #[test]
    fn counts_string_equals_the_byte_loop() {
        // Differences at every group boundary (±16·32^k), both signs, and extremes.
        let mut edges = vec![0u32, 1, u32::MAX, u32::MAX - 1];
        for k in 0..7 {
            let b = 16u64 << (5 * k);
            for d in [b.saturating_sub(1), b, b + 1] {
                edges.push(d.min(u64::from(u32::MAX)) as u32);
            }
        }
        let mut counts = Vec::new();
        for &a in &edges {
            for &b in &edges {
                counts.extend([a, b, a, b, 7, a]);
            }
        }
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let shift = (x >> 58) as u32 % 33;
            counts.push(((x >> 8) as u32) >> shift.min(31));
        }
        for len in [0, 1, 2, 3, 4, 5, counts.len()] {
            let mut out = b"prefix".to_vec();
            append_counts_string(&counts[..len], &mut out);
            assert_eq!(&out[..6], b"prefix");
            assert_eq!(
                out[6..],
                counts_string_reference(&counts[..len]),
                "{len} counts"
            );
        }
    }

    #[test]
    fn small_known_values() {
        // 2x3 mask, row-major:
        // 0 1 1
        // 0 1 0
        let m = [0, 1, 1, 0, 1, 0];
        let r = Rle::encode_row_major(&m, 2, 3).unwrap();
        assert_eq!(r.counts, vec![2, 3, 1]);
        assert_eq!(r.area(), 3);
        assert_eq!(r.bbox_xyxy(), Some([1, 0, 3, 2]));
        assert_eq!(r.decode_row_major(), m.to_vec());
        let s = r.to_counts_string();
        assert_eq!(Rle::from_counts_string(&s, 2, 3).unwrap(), r);
    }

    #[test]
    fn encoders_agree() {
        let (h, w) = (7u32, 5u32);
        let mut state = 12345u64;
        for _ in 0..200 {
            let m: Vec<u8> = (0..h * w)
                .map(|_| {
                    state = state
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    u8::from((state >> 33).is_multiple_of(3))
                })
                .collect();
            let r = Rle::encode_row_major(&m, h, w).unwrap();
            let mut col = vec![0u8; m.len()];
            for y in 0..h as usize {
                for x in 0..w as usize {
                    col[x * h as usize + y] = m[y * w as usize + x];
                }
            }
            assert_eq!(Rle::encode_col_major(&col, h, w).unwrap(), r);
            let b: Vec<bool> = m.iter().map(|&v| v != 0).collect();
            assert_eq!(Rle::encode_row_major_bool(&b, h, w).unwrap(), r);
            let l: Vec<f32> = m.iter().map(|&v| if v != 0 { 3.0 } else { -2.0 }).collect();
            assert_eq!(Rle::encode_logits_row_major(&l, h, w, 0.0).unwrap(), r);
            assert_eq!(r.decode_row_major(), m);
            assert_eq!(r.decode_col_major(), col);
            let s = r.to_counts_string();
            assert_eq!(Rle::from_counts_string(&s, h, w).unwrap(), r);
        }
    }

    #[test]
    fn bad_inputs_are_errors() {
        assert!(Rle::encode_row_major(&[0, 1], 2, 2).is_err());
        assert!(Rle::from_counts_string("1", 2, 2).is_err());
        assert!(Rle::from_counts_string("\u{7f}", 2, 2).is_err());
        assert!(Rle::from_counts_string("`", 2, 2).is_err());
        assert!(Rle::from_counts(2, 2, vec![1, 2]).is_err());
    }
}
