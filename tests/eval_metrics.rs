//! J / F / J&F / box IoU against the davis2017-evaluation formulas computed in Python
//! (tests/eval_reference.py, run in the venv) on the same generated masks: a short sequence
//! with void pixels, a late object, a missing and a full-frame result; a 300-frame sequence
//! (where the reference's uint8 frame indices would overflow the decay); a 480x854 one (8-pixel
//! tolerance); and an HD-EPIC layout with held-out masks. Also the errors on bad input.

use densam::eval::{EvalOptions, GtFormat, evaluate};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

fn venv_python() -> PathBuf {
    match std::env::var_os("DENSAM_VENV_PYTHON") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"),
    }
}

/// Generates the fixtures once per test process (about 2 s) into a temporary directory.
fn fixtures() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/eval_reference.py");
        let out = Command::new(venv_python())
            .arg(script)
            .arg(dir.path())
            .env("OMP_NUM_THREADS", "1")
            .output()
            .expect("run venv python");
        assert!(
            out.status.success(),
            "eval_reference.py failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    })
    .path()
}

fn reference() -> Value {
    serde_json::from_slice(&std::fs::read(fixtures().join("ref.json")).unwrap()).unwrap()
}

fn close(a: f64, b: f64, what: &str) {
    assert!((a - b).abs() <= 1e-6, "{what}: ours {a} vs reference {b}");
}

fn check_davis(name: &str, all_frames: bool) {
    let dir = fixtures().join(name);
    let mut opts = EvalOptions::new(dir.join("gt"), GtFormat::Davis);
    opts.all_frames = all_frames;
    let rep = evaluate(&dir.join("result.jsonl"), &opts).unwrap();
    let r = &reference()[name];
    let frames: Vec<u64> = r["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(rep.frames, frames.len());
    let robjs = r["objects"].as_object().unwrap();
    assert_eq!(rep.objects.len(), robjs.len(), "{name}: objects");
    let (mut jm, mut fm) = (0.0, 0.0);
    for o in &rep.objects {
        let ro = &robjs[&o.gt_object];
        let rj = ro["J"].as_array().unwrap();
        let rf = ro["F"].as_array().unwrap();
        assert_eq!(
            o.per_frame.len(),
            rj.len(),
            "{name}/{}: frames",
            o.gt_object
        );
        for (i, &(fr, j, f)) in o.per_frame.iter().enumerate() {
            assert_eq!(fr, frames[i]);
            let w = format!("{name} object {} frame {fr}", o.gt_object);
            close(j, rj[i].as_f64().unwrap(), &format!("{w} J"));
            close(f, rf[i].as_f64().unwrap(), &format!("{w} F"));
        }
        for (s, key) in [(o.j.unwrap(), "Jstats"), (o.f.unwrap(), "Fstats")] {
            let w = format!("{name} object {} {key}", o.gt_object);
            close(s.mean, ro[key]["mean"].as_f64().unwrap(), &w);
            close(s.recall, ro[key]["recall"].as_f64().unwrap(), &w);
            close(s.decay, ro[key]["decay"].as_f64().unwrap(), &w);
        }
        let rb: Vec<f64> = ro["box"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(o.box_frames, rb.len(), "{name}/{}: box frames", o.gt_object);
        match o.box_iou {
            Some(b) => close(
                b,
                rb.iter().sum::<f64>() / rb.len() as f64,
                &format!("{name} object {} box IoU", o.gt_object),
            ),
            None => assert!(rb.is_empty()),
        }
        jm += ro["Jstats"]["mean"].as_f64().unwrap();
        fm += ro["Fstats"]["mean"].as_f64().unwrap();
    }
    let n = rep.objects.len() as f64;
    close(rep.j_mean.unwrap(), jm / n, "J mean");
    close(rep.f_mean.unwrap(), fm / n, "F mean");
    close(rep.jf_mean.unwrap(), (jm + fm) / (2.0 * n), "J&F");
    close(
        rep.box_iou_mean.unwrap(),
        r["box_mean"].as_f64().unwrap(),
        "box IoU mean",
    );
    eprintln!("{}", rep.table());
    serde_json::to_string(&rep).unwrap();
}

#[test]
fn davis_short_sequence_matches_reference() {
    // Includes object 9, present only on the unscored first frame.
    check_davis("short", false);
}

#[test]
fn davis_long_sequence_matches_reference() {
    // 298 scored frames: the decay bins index past 255.
    check_davis("long", false);
    let rep = evaluate(
        &fixtures().join("long/result.jsonl"),
        &EvalOptions::new(fixtures().join("long/gt"), GtFormat::Davis),
    )
    .unwrap();
    assert!(
        rep.objects[0].j.unwrap().decay.abs() > 1e-3,
        "decay is exercised"
    );
}

#[test]
fn davis_large_frames_match_reference() {
    check_davis("wide", true);
}

#[test]
fn hd_epic_held_out_masks_and_boxes_match_reference() {
    let d = fixtures().join("hdepic");
    let mut opts = EvalOptions::new(d.join("masks"), GtFormat::HdEpic);
    opts.mask_info = Some(d.join("mask_info.json"));
    opts.assoc_info = Some(d.join("assoc_info.json"));
    opts.hold_out = Some(d.join("hold_out.json"));
    let rep = evaluate(
        &d.join("dense_annotations_P01-20240202-171220.jsonl"),
        &opts,
    )
    .unwrap();
    let r = &reference()["hdepic"];
    close(
        rep.box_iou_mean.unwrap(),
        r["box_mean"].as_f64().unwrap(),
        "box mean",
    );
    assert_eq!(rep.box_count, 4);
    for o in &rep.objects {
        let ro = &r["objects"][&o.gt_object];
        let rb: Vec<f64> = ro["box"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        close(
            o.box_iou.unwrap(),
            rb.iter().sum::<f64>() / rb.len() as f64,
            "box",
        );
        let rj = ro["J"].as_array().unwrap();
        let rf = ro["F"].as_array().unwrap();
        assert_eq!(o.per_frame.len(), rj.len());
        for (i, &(_, j, f)) in o.per_frame.iter().enumerate() {
            close(j, rj[i].as_f64().unwrap(), "hd-epic J");
            close(f, rf[i].as_f64().unwrap(), "hd-epic F");
        }
    }
    assert_eq!(rep.objects[0].id, "obj-a1");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn bad_input_is_a_clear_error() {
    let src = fixtures().join("short");
    let tmp = tempfile::tempdir().unwrap();
    let gt = tmp.path().join("gt");
    copy_dir(&src.join("gt"), &gt);
    let text = std::fs::read_to_string(src.join("result.jsonl")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let opts = EvalOptions::new(&gt, GtFormat::Davis);

    // A frame missing from the result.
    let missing = tmp.path().join("missing.jsonl");
    let kept: Vec<&str> = lines
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 4)
        .map(|(_, l)| *l)
        .collect();
    std::fs::write(&missing, kept.join("\n")).unwrap();
    let e = evaluate(&missing, &opts).unwrap_err().to_string();
    assert!(
        e.contains("no result line for frame 4") && e.contains("00004.png"),
        "{e}"
    );

    // A mask of another size.
    let sized = tmp.path().join("sized.jsonl");
    let mut v: Value = serde_json::from_str(lines[3]).unwrap();
    v["objects"][0]["segmentation"]["size"] = serde_json::json!([160, 120]);
    let mut ls: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
    ls[3] = v.to_string();
    std::fs::write(&sized, ls.join("\n")).unwrap();
    let e = evaluate(&sized, &opts).unwrap_err().to_string();
    assert!(
        e.contains("sized.jsonl:4: frame 3, object \"1\"") && e.contains("size"),
        "{e}"
    );

    // Ids that match no ground-truth object.
    let ids = tmp.path().join("ids.jsonl");
    std::fs::write(&ids, text.replace("\"id\": \"", "\"id\": \"x")).unwrap();
    let e = evaluate(&ids, &opts).unwrap_err().to_string();
    assert!(
        e.contains("no result object matches") && e.contains("x1"),
        "{e}"
    );

    // A malformed line.
    let bad = tmp.path().join("bad.jsonl");
    std::fs::write(&bad, format!("{}\n{{oops\n", lines[0])).unwrap();
    let e = evaluate(&bad, &opts).unwrap_err().to_string();
    assert!(e.contains("bad.jsonl:2"), "{e}");

    // An id map renames objects; a missing ground-truth folder is named.
    let map = tmp.path().join("map.json");
    std::fs::write(&map, r#"{"1": "x1", "2": {"id": "x2"}, "3": "x3"}"#).unwrap();
    let mut o = opts.clone();
    o.id_map = Some(map);
    let rep = evaluate(&ids, &o).unwrap();
    assert_eq!(rep.objects[0].id, "x1");
    let e = evaluate(
        &ids,
        &EvalOptions::new(tmp.path().join("nope"), GtFormat::Davis),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("nope"), "{e}");
}
