//! Connected components (4-connected) of a run-length mask, computed on the runs themselves:
//! the foreground runs of each column are joined with the overlapping runs of the previous
//! column (union-find), so the cost follows the number of runs, not of pixels. Used by the
//! review report to find fragmented masks on every object-frame of a long result.

use super::Rle;

/// The sizes of a mask's connected components (4-connectivity), largest first; empty for an
/// empty mask.
pub fn component_sizes(rle: &Rle) -> Vec<u64> {
    let h = u64::from(rle.height);
    if h == 0 {
        return Vec::new();
    }
    // Foreground runs as (column, first row, last row exclusive), in column order.
    let mut runs: Vec<(u64, u64, u64)> = Vec::new();
    let mut pos = 0u64;
    for (i, &c) in rle.counts.iter().enumerate() {
        let c = u64::from(c);
        if i % 2 == 1 && c > 0 {
            // A run may wrap over column ends: split it at each.
            let (mut start, end) = (pos, pos + c);
            while start < end {
                let col = start / h;
                let col_end = (col + 1) * h;
                let stop = end.min(col_end);
                runs.push((col, start - col * h, stop - col * h));
                start = stop;
            }
        }
        pos += c;
    }
    let mut parent: Vec<usize> = (0..runs.len()).collect();
    fn find(p: &mut [usize], mut i: usize) -> usize {
        while p[i] != i {
            p[i] = p[p[i]];
            i = p[i];
        }
        i
    }
    // Runs of column c-1 are [prev_lo, prev_hi) in `runs`; both lists are sorted by row.
    let (mut prev_lo, mut prev_hi) = (0usize, 0usize);
    let mut i = 0;
    while i < runs.len() {
        let col = runs[i].0;
        let mut j = i;
        while j < runs.len() && runs[j].0 == col {
            j += 1;
        }
        if prev_hi > prev_lo && runs[prev_lo].0 + 1 == col {
            let mut k = prev_lo;
            for a in i..j {
                let (_, lo, hi) = runs[a];
                while k < prev_hi && runs[k].2 <= lo {
                    k += 1;
                }
                let mut m = k;
                while m < prev_hi && runs[m].1 < hi {
                    let (ra, rb) = (find(&mut parent, a), find(&mut parent, m));
                    if ra != rb {
                        parent[ra] = rb;
                    }
                    m += 1;
                }
            }
        }
        (prev_lo, prev_hi) = (i, j);
        i = j;
    }
    let mut sizes = std::collections::HashMap::<usize, u64>::new();
    for (a, &(_, lo, hi)) in runs.iter().enumerate() {
        let r = find(&mut parent, a);
        *sizes.entry(r).or_default() += hi - lo;
    }
    let mut out: Vec<u64> = sizes.into_values().collect();
    out.sort_unstable_by(|a, b| b.cmp(a));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rle(rows: &[&str]) -> Rle {
        let h = rows.len();
        let w = rows[0].len();
        let mut m = vec![0u8; h * w];
        for (y, r) in rows.iter().enumerate() {
            for (x, c) in r.bytes().enumerate() {
                m[y * w + x] = (c == b'#') as u8;
            }
        }
        Rle::encode_row_major(&m, h as u32, w as u32).unwrap()
    }

    #[test]
    fn counts_components_with_4_connectivity() {
        assert_eq!(component_sizes(&rle(&["....", "...."])), Vec::<u64>::new());
        assert_eq!(component_sizes(&rle(&["##..", "##.."])), vec![4]);
        // Diagonal neighbours are separate components.
        assert_eq!(component_sizes(&rle(&["#...", ".#.."])), vec![1, 1]);
        assert_eq!(
            component_sizes(&rle(&["###.#", "..#.#", "###.#", "....."])),
            vec![7, 3]
        );
        // A U shape joined only at the bottom: one component.
        assert_eq!(component_sizes(&rle(&["#.#", "#.#", "###"])), vec![7]);
        // Runs that wrap from one column into the next are split there.
        assert_eq!(component_sizes(&rle(&["##", "##", "##"])), vec![6]);
        assert_eq!(component_sizes(&rle(&[".#", "..", "#."])), vec![1, 1]);
    }
}
