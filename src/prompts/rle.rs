//! Decoding of COCO run-length encoded masks (the compressed string form pycocotools writes,
//! and the uncompressed list-of-counts form) into a row-major binary mask.
//!
//! COCO RLE runs are counted in column-major (Fortran) order, starting with a run of zeros.

/// A decoded binary mask, row-major, `data[y * width + x]` in {0, 1}.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinaryMask {
    pub height: usize,
    pub width: usize,
    pub data: Vec<u8>,
}

impl BinaryMask {
    /// Number of foreground pixels.
    pub fn area(&self) -> usize {
        self.data.iter().map(|&v| v as usize).sum()
    }
}

/// Decodes the compressed COCO counts string into run lengths.
pub fn decode_counts_string(s: &str) -> Result<Vec<u64>, String> {
    let bytes = s.as_bytes();
    let mut counts: Vec<u64> = Vec::new();
    let mut p = 0usize;
    while p < bytes.len() {
        let mut x: i64 = 0;
        let mut k = 0u32;
        loop {
            if p >= bytes.len() {
                return Err("truncated counts string".into());
            }
            let c = bytes[p] as i64 - 48;
            if !(0..64).contains(&c) {
                return Err(format!(
                    "invalid character {:?} in counts string",
                    bytes[p] as char
                ));
            }
            if k >= 60 {
                return Err("run length too long in counts string".into());
            }
            x |= (c & 0x1f) << (5 * k);
            let more = c & 0x20 != 0;
            p += 1;
            k += 1;
            if !more {
                if c & 0x10 != 0 {
                    x |= -1i64 << (5 * k);
                }
                break;
            }
        }
        let m = counts.len();
        if m > 2 {
            x += counts[m - 2] as i64;
        }
        if x < 0 {
            return Err("negative run length in counts string".into());
        }
        counts.push(x as u64);
    }
    Ok(counts)
}

/// Expands run lengths (column-major, zeros first) into a row-major mask of `height x width`.
pub fn decode_runs(height: usize, width: usize, counts: &[u64]) -> Result<BinaryMask, String> {
    let n = height
        .checked_mul(width)
        .ok_or_else(|| "mask size overflows".to_string())?;
    let total: u64 = counts.iter().sum();
    if total != n as u64 {
        return Err(format!(
            "run lengths sum to {total}, but the mask size {height}x{width} has {n} pixels"
        ));
    }
    let mut data = vec![0u8; n];
    let mut pos = 0usize;
    for (i, &c) in counts.iter().enumerate() {
        let c = c as usize;
        if i % 2 == 1 {
            for j in pos..pos + c {
                // column-major index j -> (y, x)
                let x = j / height;
                let y = j % height;
                data[y * width + x] = 1;
            }
        }
        pos += c;
    }
    Ok(BinaryMask {
        height,
        width,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_pycocotools_string() {
        // pycocotools: encode(asfortranarray([[0,1,1],[0,1,0]] as uint8)) -> counts b"22" style;
        // here runs: column-major [0,0,1,1,1,0] -> zeros 2, ones 3, zeros 1.
        let m = decode_runs(2, 3, &[2, 3, 1]).unwrap();
        assert_eq!(m.data, vec![0, 1, 1, 0, 1, 0]);
        assert_eq!(m.area(), 3);
        // "231" is what pycocotools writes for these runs.
        assert_eq!(decode_counts_string("231").unwrap(), vec![2, 3, 1]);
    }

    #[test]
    fn decodes_long_and_delta_runs() {
        // 100x100 mask with a 10x10 square at rows 20..30, cols 40..50: pycocotools gives
        // "`a04\\28\\28\\28\\28\\28\\28\\28\\28\\28\\2d`0" -- checked by round trip below instead.
        let mut counts = vec![40 * 100 + 20];
        for i in 0..10 {
            counts.push(10);
            counts.push(if i == 9 {
                100 * 100 - (49 * 100 + 30)
            } else {
                90
            });
        }
        let enc = encode_for_test(&counts);
        assert_eq!(decode_counts_string(&enc).unwrap(), counts);
        let m = decode_runs(100, 100, &counts).unwrap();
        assert_eq!(m.area(), 100);
        assert_eq!(m.data[20 * 100 + 40], 1);
        assert_eq!(m.data[29 * 100 + 49], 1);
        assert_eq!(m.data[30 * 100 + 49], 0);
    }

    #[test]
    fn rejects_bad_input() {
        assert!(decode_counts_string("\u{7f}").is_err());
        assert!(decode_counts_string("`").is_err()); // continuation bit set, then nothing
        assert!(decode_runs(2, 2, &[1, 1]).is_err());
    }

    /// The COCO string encoding (test helper only).
    fn encode_for_test(counts: &[u64]) -> String {
        let mut s = String::new();
        for i in 0..counts.len() {
            let mut x = counts[i] as i64;
            if i > 2 {
                x -= counts[i - 2] as i64;
            }
            loop {
                let mut c = x & 0x1f;
                x >>= 5;
                let more = if c & 0x10 != 0 { x != -1 } else { x != 0 };
                if more {
                    c |= 0x20;
                }
                s.push((c as u8 + 48) as char);
                if !more {
                    break;
                }
            }
        }
        s
    }
}
