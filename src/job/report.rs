//! The JSONL line of a tracked frame: the objects with a non-empty mask, in prompt-file order.
//! [`append_line`] writes it straight from the tracker's runs, which is what the job's sink does
//! on the tracking thread (docs/ARCHITECTURE.md §1 step 10); the tests hold it to the bytes of
//! the output format's serde types ([`crate::output::jsonl::FrameRecord`] through
//! [`super::io::line_bytes`]), on random masks and strings.

use std::io::Write;

use crate::mask::rle::{RleError, append_counts_string};
use crate::tracker::{FrameResult, PromptSet, TrackError};

/// Appends the job's output line of `r` (with its newline) to `out`: byte for byte what
/// [`super::io::line_bytes`] gives for `video_id` and the frame's
/// [`crate::output::jsonl::FrameRecord`] (its objects with a non-empty mask, in prompt-file
/// order, with HD-EPIC's `assoc_id` / `assoc_name` set to id and label when `hd_epic`),
/// without building the serde record: the COCO counts string goes straight into the line, and area and box are the ones
/// [`crate::mask::MaskRuns`] carries (computed from the same runs by the same
/// [`crate::mask::Rle::area`] / [`crate::mask::Rle::bbox_xyxy`] when it was built). `scratch` is a buffer kept between
/// calls. Same errors as the serde path: an unknown object index, counts that do not cover the
/// mask.
///
/// Strings and floats go through `serde_json` (its escaping, `ryu`'s shortest form, `null` for
/// a non-finite number); integers are written in decimal, as `serde_json` writes them. The
/// counts string needs no escaping but for `\`, its one byte that JSON escapes.
pub fn append_line(
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
    video_id: &str,
    r: &FrameResult,
    prompts: &PromptSet,
    hd_epic: bool,
) -> Result<(), TrackError> {
    out.extend_from_slice(b"{\"video_id\":");
    json(out, video_id)?;
    write_int(out, b",\"frame_number\":", r.number.get());
    out.extend_from_slice(b",\"time_s\":");
    json(out, &r.seconds)?;
    out.extend_from_slice(b",\"objects\":[");
    let mut first = true;
    for o in &r.objects {
        let m = &o.mask;
        if m.area == 0 {
            continue;
        }
        let p = prompts
            .objects
            .get(o.object)
            .ok_or_else(|| TrackError::Invalid(format!("object index {}", o.object)))?;
        let sum: u64 = m.counts.iter().map(|&c| u64::from(c)).sum();
        let expected = u64::from(m.height) * u64::from(m.width);
        if sum != expected {
            let e = RleError::CountsSum {
                sum,
                height: m.height,
                width: m.width,
                expected,
            };
            return Err(TrackError::Sink(e.to_string()));
        }
        // A non-empty mask has a box (the serde record leaves out a mask without one).
        let Some(bbox) = m.bbox else { continue };
        if !first {
            out.push(b',');
        }
        first = false;
        let label = p.label.as_deref().unwrap_or_default();
        out.extend_from_slice(b"{\"id\":");
        json(out, p.id.as_str())?;
        out.extend_from_slice(b",\"label\":");
        json(out, label)?;
        if hd_epic {
            out.extend_from_slice(b",\"assoc_id\":");
            json(out, p.id.as_str())?;
            out.extend_from_slice(b",\"assoc_name\":");
            json(out, label)?;
        }
        write_int(out, b",\"bbox\":[", bbox[0].into());
        for v in &bbox[1..] {
            write_int(out, b",", (*v).into());
        }
        out.extend_from_slice(b"],\"score\":");
        json(out, &(o.score as f32))?;
        out.extend_from_slice(b",\"iou\":");
        json(out, &(o.iou as f32))?;
        write_int(out, b",\"area\":", m.area);
        write_int(out, b",\"segmentation\":{\"size\":[", m.height.into());
        write_int(out, b",", m.width.into());
        out.extend_from_slice(b"],\"counts\":\"");
        scratch.clear();
        append_counts_string(&m.counts, scratch);
        let mut parts = scratch.split(|&b| b == b'\\');
        if let Some(p) = parts.next() {
            out.extend_from_slice(p);
        }
        for p in parts {
            out.extend_from_slice(b"\\\\");
            out.extend_from_slice(p);
        }
        out.extend_from_slice(b"\"}}");
    }
    out.extend_from_slice(b"]}\n");
    Ok(())
}

/// `prefix` then `v` in decimal.
fn write_int(out: &mut Vec<u8>, prefix: &[u8], v: u64) {
    out.extend_from_slice(prefix);
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{v}");
}

/// `v` as `serde_json` writes it.
fn json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) -> Result<(), TrackError> {
    serde_json::to_writer(out, v).map_err(|e| TrackError::Sink(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mask::{MaskRuns, Rle};
    use crate::output::jsonl::{FrameRecord, ObjectRecord};
    use crate::tracker::{FrameNo, ObjectPrompts, ObjectResult};

    /// xorshift64: deterministic test data without a dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n.max(1)
        }
    }

    /// A random row-major mask: speckle, blocks, empty or full.
    fn mask(rng: &mut Rng, h: u32, w: u32) -> MaskRuns {
        let n = (h * w) as usize;
        let kind = rng.below(5);
        let mut m = vec![0u8; n];
        match kind {
            0 => {}
            1 => m.fill(1),
            2 => m.iter_mut().for_each(|v| *v = (rng.below(2)) as u8),
            _ => {
                let (x0, y0) = (rng.below(w.into()) as u32, rng.below(h.into()) as u32);
                let (x1, y1) = (
                    x0 + 1 + rng.below((w - x0).into()) as u32,
                    y0 + 1 + rng.below((h - y0).into()) as u32,
                );
                for y in y0..y1.min(h) {
                    for x in x0..x1.min(w) {
                        m[(y * w + x) as usize] = 1;
                    }
                }
            }
        }
        MaskRuns::from(Rle::encode_row_major(&m, h, w).unwrap())
    }

    /// The output line of a frame as the output format's serde types (the objects with a
    /// non-empty mask, in prompt-file order): the reference form [`append_line`] must equal.
    fn frame_record(r: &FrameResult, prompts: &PromptSet) -> Result<FrameRecord, TrackError> {
        let mut objects = Vec::new();
        for o in &r.objects {
            if o.mask.area == 0 {
                continue;
            }
            let p = prompts
                .objects
                .get(o.object)
                .ok_or_else(|| TrackError::Invalid(format!("object index {}", o.object)))?;
            let rle = Rle::from_counts(o.mask.height, o.mask.width, o.mask.counts.clone())
                .map_err(|e| TrackError::Sink(e.to_string()))?;
            let label = p.label.clone().unwrap_or_default();
            if let Some(rec) =
                ObjectRecord::from_rle(&p.id, label, &rle, o.score as f32, o.iou as f32)
            {
                objects.push(rec);
            }
        }
        Ok(FrameRecord {
            frame_number: r.number.get(),
            time_s: r.seconds,
            objects,
        })
    }

    /// The reference bytes: the serde record, as the sink wrote it before.
    fn reference(video_id: &str, r: &FrameResult, prompts: &PromptSet, hd: bool) -> Vec<u8> {
        let mut f = frame_record(r, prompts).unwrap();
        if hd {
            for o in f.objects.iter_mut() {
                o.assoc_id = Some(o.id.clone());
                o.assoc_name = Some(o.label.clone());
            }
        }
        super::super::io::line_bytes(video_id, f).unwrap()
    }

    #[test]
    fn direct_line_equals_the_serde_record() {
        let ids = [
            "a",
            "cup \"1\"",
            "back\\slash",
            "tab\tnew\nline\u{1}",
            "ünï €",
            "",
        ];
        let prompts = PromptSet {
            objects: ids
                .iter()
                .enumerate()
                .map(|(i, id)| ObjectPrompts {
                    id: id.to_string(),
                    label: (i % 2 == 0).then(|| format!("label {id}")),
                    frames: Default::default(),
                })
                .collect(),
        };
        let times = [0.0, 1.0 / 30.0, 12345.678, f64::NAN, f64::INFINITY, 1e-300];
        let scores = [0.0, 0.5, 0.99999994, 1.0 / 3.0, f64::NAN, 1e-8];
        let mut rng = Rng(0x5eed);
        let (mut out, mut scratch) = (Vec::new(), Vec::new());
        let mut backslashes = 0;
        for case in 0..300u64 {
            let (h, w) = (
                1 + rng.below(if case % 3 == 0 { 3 } else { 70 }) as u32,
                1 + rng.below(if case % 4 == 0 { 3 } else { 90 }) as u32,
            );
            let present: Vec<usize> = (0..ids.len()).filter(|_| rng.below(4) != 0).collect();
            let mut objects = Vec::new();
            for o in present {
                objects.push(ObjectResult {
                    object: o,
                    mask: mask(&mut rng, h, w),
                    score: scores[rng.below(6) as usize],
                    iou: scores[rng.below(6) as usize],
                });
            }
            let r = FrameResult {
                number: FrameNo(rng.below(1 << 40)),
                seconds: times[case as usize % times.len()],
                objects,
            };
            for hd in [false, true] {
                let video_id = if hd { "P01-2024\"x\"" } else { "clip" };
                out.clear();
                append_line(&mut out, &mut scratch, video_id, &r, &prompts, hd).unwrap();
                let want = reference(video_id, &r, &prompts, hd);
                assert_eq!(
                    String::from_utf8_lossy(&out),
                    String::from_utf8_lossy(&want),
                    "case {case}"
                );
                backslashes += out.windows(2).filter(|p| p == b"\\\\").count();
            }
        }
        assert!(
            backslashes > 0,
            "no counts string with a backslash was tried"
        );
    }

    #[test]
    fn same_errors_as_the_serde_record() {
        let prompts = PromptSet {
            objects: vec![ObjectPrompts {
                id: "a".into(),
                label: None,
                frames: Default::default(),
            }],
        };
        let mut bad = MaskRuns::from(Rle::encode_row_major(&[0, 1, 1, 0], 2, 2).unwrap());
        bad.counts.push(1);
        let mut r = FrameResult {
            number: FrameNo(3),
            seconds: 0.1,
            objects: vec![ObjectResult {
                object: 0,
                mask: bad,
                score: 0.5,
                iou: 0.5,
            }],
        };
        let (mut out, mut scratch) = (Vec::new(), Vec::new());
        let got = append_line(&mut out, &mut scratch, "v", &r, &prompts, false).unwrap_err();
        let want = frame_record(&r, &prompts).unwrap_err();
        assert_eq!(got.to_string(), want.to_string());
        r.objects[0].object = 5;
        let got = append_line(&mut out, &mut scratch, "v", &r, &prompts, false).unwrap_err();
        let want = frame_record(&r, &prompts).unwrap_err();
        assert_eq!(got.to_string(), want.to_string());
    }
}
