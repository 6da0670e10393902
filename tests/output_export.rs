//! Export round trips: DAVIS PNGs read back equal the masks (and score J = F = 1 against the
//! result through `densam eval`'s code with the exported id map); COCO JSON annotations decode
//! to the same masks and load in pycocotools; the boxes CSV holds every object-frame.

use densam::eval::{EvalOptions, GtFormat, evaluate};
use densam::mask::png::read_index_png;
use densam::output::export::{CocoCategories, export_boxes_csv, export_coco, export_davis};
use densam::output::{FrameRecord, JsonlWriter, ObjectRecord, Rle};
use std::path::{Path, PathBuf};
use std::process::Command;

const H: u32 = 20;
const W: u32 = 30;

fn venv_python() -> PathBuf {
    match std::env::var_os("DENSAM_VENV_PYTHON") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"),
    }
}

fn rect(y0: u32, x0: u32, y1: u32, x1: u32) -> Vec<u8> {
    (0..H)
        .flat_map(|y| (0..W).map(move |x| u8::from(y >= y0 && y < y1 && x >= x0 && x < x1)))
        .collect()
}

/// Per frame: (frame number, [(object id, row-major mask)]).
type Frames = Vec<(u64, Vec<(String, Vec<u8>)>)>;

/// Writes frames 0, 2, .., 10; objects "b" (label "cup, big"), "a", "c" appearing in that order;
/// frame 6 has no objects; masks overlap when `overlap`.
fn write_result(path: &Path, overlap: bool) -> Frames {
    let mut w = JsonlWriter::create(path).unwrap();
    let mut all = Vec::new();
    for n in (0..12u64).step_by(2) {
        let t = n as u32;
        let mut objs = vec![("b".to_string(), rect(1, t, 6, t + 5))];
        if n >= 2 {
            objs.push(("a".to_string(), rect(8, 2 + t, 14, 6 + t)));
        }
        if n >= 4 {
            let m = if overlap {
                rect(3, t + 2, 10, t + 9)
            } else {
                rect(15, 20, 20, 30)
            };
            objs.push(("c".to_string(), m));
        }
        if n == 6 {
            objs.clear();
        }
        let objects = objs
            .iter()
            .map(|(id, m)| {
                let rle = Rle::encode_row_major(m, H, W).unwrap();
                let label = if id == "b" { "cup, big" } else { "thing" };
                ObjectRecord::from_rle(id.clone(), label, &rle, 0.5, 0.25).unwrap()
            })
            .collect();
        w.write_frame(&FrameRecord {
            frame_number: n,
            time_s: n as f64 / 10.0,
            objects,
        })
        .unwrap();
        all.push((n, objs));
    }
    w.close().unwrap();
    all
}

#[test]
fn davis_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    for overlap in [false, true] {
        let result = tmp
            .path()
            .join(format!("dense_annotations_vid{overlap}.jsonl"));
        let frames = write_result(&result, overlap);
        let (dir, sum) = export_davis(&result, &tmp.path().join("davis"), None).unwrap();
        assert_eq!(dir, tmp.path().join("davis").join(format!("vid{overlap}")));
        assert_eq!((sum.frames, sum.objects), (6, 3));
        let map: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("objects.json")).unwrap()).unwrap();
        assert_eq!(map["1"]["id"], "b");
        assert_eq!(map["1"]["label"], "cup, big");
        assert_eq!(map["2"]["id"], "a");
        assert_eq!(map["3"]["id"], "c");
        let index = |id: &str| match id {
            "b" => 1u8,
            "a" => 2,
            _ => 3,
        };
        for (n, objs) in &frames {
            let p = read_index_png(&dir.join(format!("{n:05}.png")), None).unwrap();
            assert_eq!((p.height, p.width), (H, W));
            let mut want = vec![0u8; (H * W) as usize];
            let mut sorted: Vec<_> = objs.iter().collect();
            sorted.sort_by_key(|(id, _)| index(id));
            for (id, m) in sorted {
                for (o, &v) in want.iter_mut().zip(m) {
                    if v != 0 {
                        *o = index(id);
                    }
                }
            }
            assert_eq!(p.data, want, "frame {n}");
        }
        if !overlap {
            let mut opts = EvalOptions::new(&dir, GtFormat::Davis);
            opts.all_frames = true;
            opts.id_map = Some(dir.join("objects.json"));
            let rep = evaluate(&result, &opts).unwrap();
            assert_eq!(rep.objects.len(), 3);
            assert_eq!(rep.jf_mean, Some(1.0));
        }
    }
}

#[test]
fn coco_round_trip_and_pycocotools_loads_it() {
    let tmp = tempfile::tempdir().unwrap();
    let result = tmp.path().join("dense_annotations_v.jsonl");
    let frames = write_result(&result, true);
    let out = tmp.path().join("coco/instances.json");
    let sum = export_coco(&result, &out, CocoCategories::Labels).unwrap();
    assert_eq!(sum.annotations, 12);
    let coco: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(coco["images"].as_array().unwrap().len(), 6);
    assert_eq!(coco["categories"].as_array().unwrap().len(), 2);
    let anns = coco["annotations"].as_array().unwrap();
    let mut k = 0;
    for (n, objs) in &frames {
        for (id, m) in objs {
            let a = &anns[k];
            k += 1;
            assert_eq!(a["image_id"].as_u64(), Some(n + 1));
            assert_eq!(a["object_id"].as_str(), Some(id.as_str()));
            let seg: densam::mask::CocoRle =
                serde_json::from_value(a["segmentation"].clone()).unwrap();
            assert_eq!(&seg.to_rle().unwrap().decode_row_major(), m);
        }
    }
    let per_obj = export_coco(&result, &out, CocoCategories::Objects).unwrap();
    assert_eq!(per_obj.objects, 3);
    let py = r#"
import sys
from pycocotools.coco import COCO
from pycocotools import mask as M
c = COCO(sys.argv[1])
n = 0
for a in c.loadAnns(c.getAnnIds()):
    m = c.annToMask(a)
    assert m.sum() == a["area"], a
    x, y, w, h = M.toBbox(c.annToRLE(a))
    assert [x, y, w, h] == a["bbox"], (a["bbox"], (x, y, w, h))
    n += 1
assert len(c.getCatIds()) == 3 and n == 12
print("ok", n)
"#;
    let o = Command::new(venv_python())
        .arg("-c")
        .arg(py)
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn boxes_csv() {
    let tmp = tempfile::tempdir().unwrap();
    let result = tmp.path().join("r.jsonl");
    write_result(&result, false);
    let out = tmp.path().join("boxes.csv");
    let sum = export_boxes_csv(&result, &out).unwrap();
    assert_eq!((sum.frames, sum.annotations, sum.objects), (6, 12, 3));
    let text = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 13);
    assert_eq!(lines[1], "0,0,b,\"cup, big\",,,0,1,5,6,0.5,0.25,25");
}

#[test]
fn boxes_csv_text_that_a_spreadsheet_would_run_is_text() {
    use densam::output::export::csv_field;
    let cases = [
        (
            "=HYPERLINK(\"http://x\")",
            "\"'=HYPERLINK(\"\"http://x\"\")\"",
        ),
        ("+1+2", "'+1+2"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=1", "'\t=1"),
        ("\r=1", "\"'\r=1\""),
        ("=1,2", "\"'=1,2\""),
        ("cup", "cup"),
        ("a=b", "a=b"),
        ("cup, big", "\"cup, big\""),
        ("", ""),
    ];
    for (field, want) in cases {
        assert_eq!(csv_field(field), want, "{field:?}");
    }
}

#[test]
fn export_errors_name_the_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let result = tmp.path().join("r.jsonl");
    write_result(&result, false);
    let text = std::fs::read_to_string(&result).unwrap();
    let bad = tmp.path().join("bad.jsonl");
    // Line 3 (frame 4): a mask of another size.
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines[2] = lines[2].replacen("\"size\":[20,30]", "\"size\":[30,20]", 1);
    std::fs::write(&bad, lines.join("\n")).unwrap();
    let e = export_davis(&bad, tmp.path(), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("bad.jsonl:3: frame 4, object \"b\""), "{e}");
    let e = export_coco(
        &tmp.path().join("none.jsonl"),
        &tmp.path().join("x.json"),
        CocoCategories::Labels,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("none.jsonl"), "{e}");
}
