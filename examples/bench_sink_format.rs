//! Micro benchmark (run by hand, not a test) of the job sink's `format`: the bytes of one JSONL
//! line from a frame's mask runs, on the tracking thread (docs/ARCHITECTURE.md §1 step 10).
//!
//!   cargo run --release --example bench_sink_format [-- OBJECTS SIDE MEAN_RUN FRAMES]
//!
//! Defaults: 8 objects, 1408×1408 masks, runs of 1..=2·64 pixels (random weights' speckled
//! masks: ~30k runs and a ~50 KB counts string per object), 40 frames. `MEAN_RUN 0` gives a
//! smooth mask instead (a disc per object: two runs per column, as trained weights give).
//! Prints the median and mean ms per frame of `format` and of `write`, and the line size.

use std::time::Instant;

use densam::job::io::JobSink;
use densam::mask::{MaskRuns, Rle};
use densam::tracker::{FrameNo, FrameResult, ObjectPrompts, ObjectResult, PromptSet, ResultSink};

/// Column-major COCO runs of a `side`×`side` mask: random runs of 1..=2·mean (xorshift, seeded),
/// or a disc when `mean` is 0.
fn runs(side: u32, mean: u32, seed: u64) -> Vec<u32> {
    let total = u64::from(side) * u64::from(side);
    if mean == 0 {
        let mut m = vec![0u8; total as usize];
        let (c, r) = (f64::from(side) / 2.0, f64::from(side) / 4.0 + seed as f64);
        for x in 0..side as usize {
            for y in 0..side as usize {
                let (dx, dy) = (x as f64 - c, y as f64 - c);
                m[y * side as usize + x] = u8::from(dx * dx + dy * dy < r * r);
            }
        }
        return Rle::encode_row_major(&m, side, side).unwrap().counts;
    }
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::new();
    let mut left = total;
    while left > 0 {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        let r = (1 + s % (2 * u64::from(mean))).min(left);
        out.push(r as u32);
        left -= r;
    }
    out
}

fn main() {
    let a: Vec<u64> = std::env::args()
        .skip(1)
        .map(|s| s.parse().expect("numbers: OBJECTS SIDE MEAN_RUN FRAMES"))
        .collect();
    let get = |i: usize, d: u64| a.get(i).copied().unwrap_or(d);
    let (objects, side, mean, frames) = (
        get(0, 8) as usize,
        get(1, 1408) as u32,
        get(2, 64) as u32,
        get(3, 40) as usize,
    );
    let prompts = PromptSet {
        objects: (0..objects)
            .map(|i| ObjectPrompts {
                id: format!("object-{i}"),
                label: Some(format!("label \"{i}\"")),
                frames: Default::default(),
            })
            .collect(),
    };
    let masks: Vec<MaskRuns> = (0..objects)
        .map(|i| {
            MaskRuns::from(Rle::from_counts(side, side, runs(side, mean, i as u64 + 1)).unwrap())
        })
        .collect();

    let dir = std::env::temp_dir().join(format!("densam-bench-format-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("out.jsonl.partial");
    let mut sink = JobSink::open(&path, 0, 0, &prompts, "video-1", false).unwrap();
    let (mut fmt_ms, mut write_ms, mut bytes) = (Vec::new(), Vec::new(), 0usize);
    for f in 0..frames {
        let r = FrameResult {
            number: FrameNo(f as u64),
            seconds: f as f64 / 30.0,
            objects: masks
                .iter()
                .enumerate()
                .map(|(o, m)| ObjectResult {
                    object: o,
                    mask: m.clone(),
                    score: 0.9 - o as f64 * 0.01,
                    iou: 0.5 + o as f64 * 0.03,
                })
                .collect(),
        };
        let t = Instant::now();
        let line = sink.format(r).unwrap();
        fmt_ms.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        sink.write(FrameNo(f as u64), &line).unwrap();
        write_ms.push(t.elapsed().as_secs_f64() * 1e3);
        bytes = line.len();
    }
    let runs_per_object = masks.iter().map(|m| m.counts.len()).sum::<usize>() / objects.max(1);
    let stat = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[v.len() / 2], v.iter().sum::<f64>() / v.len() as f64)
    };
    let (fm, fa) = stat(&mut fmt_ms);
    let (wm, wa) = stat(&mut write_ms);
    println!(
        "{objects} objects, {side}x{side}, {runs_per_object} runs/object, line {bytes} bytes, \
         {frames} frames: format median {fm:.3} ms (mean {fa:.3}), write median {wm:.3} ms \
         (mean {wa:.3})"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
