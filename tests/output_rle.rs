//! COCO RLE against pycocotools (run in the venv at test time): the compressed counts string,
//! area and box of generated masks must be byte-identical / equal, and pycocotools must decode
//! our strings back to the same masks.

use densam::output::Rle;
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;

/// The venv Python with pycocotools: `$DENSAM_VENV_PYTHON`, else `.venv/bin/python`.
fn venv_python() -> PathBuf {
    match std::env::var_os("DENSAM_VENV_PYTHON") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"),
    }
}

const PY: &str = r#"
import json, sys
import numpy as np
from pycocotools import mask as M
d = sys.argv[1]
specs = json.load(open(d + "/specs.json"))
raw = open(d + "/masks.bin", "rb").read()
out = []
off = 0
for s in specs:
    h, w = s["h"], s["w"]
    m = np.frombuffer(raw, dtype=np.uint8, count=h * w, offset=off).reshape(h, w)
    off += h * w
    r = M.encode(np.asfortranarray(m))
    dec = M.decode({"size": [h, w], "counts": s["ours"].encode()})
    unc = M.frPyObjects({"size": [h, w], "counts": s["ours_counts"]}, h, w)
    out.append({
        "counts": r["counts"].decode(),
        "area": int(M.area(r)),
        "bbox": [float(v) for v in M.toBbox(r)],
        "decodes_equal": bool((dec == m).all()),
        "uncompressed_to_string": unc["counts"].decode(),
    })
json.dump(out, open(d + "/py.json", "w"))
"#;

struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

fn masks() -> Vec<(String, u32, u32, Vec<u8>)> {
    let mut v = Vec::new();
    let mut rng = Lcg(7);
    let mut add = |name: &str, h: u32, w: u32, f: &mut dyn FnMut(u32, u32) -> bool| {
        let m: Vec<u8> = (0..h)
            .flat_map(|y| (0..w).map(move |x| (y, x)))
            .map(|(y, x)| u8::from(f(y, x)))
            .collect();
        v.push((name.to_string(), h, w, m));
    };
    add("empty", 5, 7, &mut |_, _| false);
    add("full", 5, 7, &mut |_, _| true);
    add("one_on", 1, 1, &mut |_, _| true);
    add("one_off", 1, 1, &mut |_, _| false);
    add("pixel_origin", 6, 4, &mut |y, x| y == 0 && x == 0);
    add("pixel_last", 6, 4, &mut |y, x| y == 5 && x == 3);
    add("pixel_mid", 6, 4, &mut |y, x| y == 2 && x == 3);
    add("pixel_bottom_left", 6, 4, &mut |y, x| y == 5 && x == 0);
    add("border_frame", 9, 11, &mut |y, x| {
        y == 0 || x == 0 || y == 8 || x == 10
    });
    add("wrap_runs", 4, 5, &mut |y, x| {
        (y == 3 && x == 1) || (y == 0 && x == 2)
    });
    add("row", 1, 37, &mut |_, x| x.is_multiple_of(3));
    add("column", 41, 1, &mut |y, _| y % 4 < 2);
    add("checker", 13, 17, &mut |y, x| (y + x).is_multiple_of(2));
    for (i, p) in [2u64, 5, 50].iter().enumerate() {
        let mut r = Lcg(100 + i as u64);
        add(&format!("random_{p}"), 37, 23, &mut |_, _| {
            r.next().is_multiple_of(*p)
        });
    }
    let mut r = Lcg(rng.next());
    add("random_1408", 1408, 1408, &mut |_, _| {
        r.next().is_multiple_of(2)
    });
    add("disk_1408", 1408, 1408, &mut |y, x| {
        let (dy, dx) = (y as i64 - 700, x as i64 - 650);
        dy * dy + dx * dx < 400 * 400
    });
    add("full_1408", 1408, 1408, &mut |_, _| true);
    add("empty_1408", 1408, 1408, &mut |_, _| false);
    add("border_1408", 1408, 1408, &mut |y, x| {
        y >= 1000 || x >= 1300
    });
    v
}

#[test]
fn rle_matches_pycocotools() {
    let dir = tempfile::tempdir().unwrap();
    let masks = masks();
    let mut specs = Vec::new();
    let mut bin = std::fs::File::create(dir.path().join("masks.bin")).unwrap();
    let mut ours = Vec::new();
    for (name, h, w, m) in &masks {
        bin.write_all(m).unwrap();
        let r = Rle::encode_row_major(m, *h, *w).unwrap();
        specs.push(serde_json::json!({
            "name": name, "h": h, "w": w,
            "ours": r.to_counts_string(), "ours_counts": r.counts,
        }));
        ours.push(r);
    }
    drop(bin);
    std::fs::write(
        dir.path().join("specs.json"),
        serde_json::to_vec(&specs).unwrap(),
    )
    .unwrap();
    let out = Command::new(venv_python())
        .arg("-c")
        .arg(PY)
        .arg(dir.path())
        .env("OMP_NUM_THREADS", "1")
        .output()
        .expect("run venv python");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let py: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(dir.path().join("py.json")).unwrap()).unwrap();
    assert_eq!(py.len(), masks.len());
    for (((name, h, w, m), r), p) in masks.iter().zip(&ours).zip(&py) {
        let s = r.to_counts_string();
        assert_eq!(s, p["counts"].as_str().unwrap(), "{name}: counts string");
        assert_eq!(
            s,
            p["uncompressed_to_string"].as_str().unwrap(),
            "{name}: uncompressed counts"
        );
        assert!(p["decodes_equal"].as_bool().unwrap(), "{name}: decode");
        assert_eq!(r.area(), p["area"].as_u64().unwrap(), "{name}: area");
        let pb: Vec<f64> = p["bbox"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let ob = r.bbox_xywh().map(f64::from);
        assert_eq!(ob.to_vec(), pb, "{name}: bbox xywh");
        match r.bbox_xyxy() {
            Some([x0, y0, x1, y1]) => {
                assert_eq!([x0, y0, x1 - x0, y1 - y0].map(f64::from).to_vec(), pb);
                // Exact pixel-edge box from the mask itself.
                let on = |y: u32, x: u32| m[(y * w + x) as usize] != 0;
                assert!((0..*h).any(|y| on(y, x0)) && (0..*h).any(|y| on(y, x1 - 1)));
                assert!((0..*w).any(|x| on(y0, x)) && (0..*w).any(|x| on(y1 - 1, x)));
                assert!((0..*h).all(|y| (0..x0).all(|x| !on(y, x))));
            }
            None => assert_eq!(r.area(), 0, "{name}"),
        }
        let back = Rle::from_counts_string(&s, *h, *w).unwrap();
        assert_eq!(&back, r, "{name}: parse");
        assert_eq!(&back.decode_row_major(), m, "{name}: decode");
    }
}

#[test]
fn encoder_speed_1408() {
    // A disk on a 1408x1408 frame, encoded from logits: must be fast (the tracker calls it per
    // object-frame). Loose bound so a loaded machine still passes.
    let (h, w) = (1408u32, 1408u32);
    let logits: Vec<f32> = (0..h * w)
        .map(|i| {
            let (y, x) = ((i / w) as f32, (i % w) as f32);
            300.0 - ((y - 700.0).powi(2) + (x - 650.0).powi(2)).sqrt()
        })
        .collect();
    let t = std::time::Instant::now();
    let n = 20;
    let mut area = 0;
    for _ in 0..n {
        area = Rle::encode_logits_row_major(&logits, h, w, 0.0)
            .unwrap()
            .area();
    }
    let per = t.elapsed().as_secs_f64() / n as f64;
    eprintln!(
        "encode_logits_row_major 1408x1408 disk: {:.2} ms",
        per * 1e3
    );
    assert!(area > 0);
    assert!(per < 0.1, "encoder too slow: {per} s");
    let mask: Vec<u8> = logits.iter().map(|&v| u8::from(v > 0.0)).collect();
    let t = std::time::Instant::now();
    for _ in 0..n {
        assert_eq!(Rle::encode_row_major(&mask, h, w).unwrap().area(), area);
    }
    let per = t.elapsed().as_secs_f64() / n as f64;
    eprintln!("encode_row_major 1408x1408 disk: {:.2} ms", per * 1e3);
    assert!(per < 0.1, "encoder too slow: {per} s");
}
