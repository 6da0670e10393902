//! The `export`, `eval` and `render` subcommands through the binary: a DAVIS export scored
//! against its own result gives J&F = 1, and bad input ends with a message naming file and
//! line, printed once (exit status 3 = bad input, as `annotate` and `merge`; 5 when the output
//! cannot be written; no panic).

use densam::output::png_io::write_rgb_png;
use densam::output::{FrameRecord, JsonlWriter, ObjectRecord, Rle};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn densam(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_densam"));
    for a in args {
        c.arg(a);
    }
    c.output().expect("run densam")
}

/// A folder `frames/` under `dir` with `n` grey 24x16 PNG frames (the video of `render`).
fn grey_frames(dir: &Path, n: usize) -> PathBuf {
    let frames = dir.join("frames");
    std::fs::create_dir_all(&frames).unwrap();
    for i in 0..n {
        write_rgb_png(
            &frames.join(format!("{i:05}.png")),
            24,
            16,
            &[7u8; 24 * 16 * 3],
        )
        .unwrap();
    }
    frames
}

fn write_result(path: &Path) {
    let mut w = JsonlWriter::create(path).unwrap();
    for n in 0..4u64 {
        let m: Vec<u8> = (0..16u32)
            .flat_map(|y| {
                (0..24u32).map(move |x| u8::from(y > 2 && y < 9 && x > n as u32 && x < 12))
            })
            .collect();
        let rle = Rle::encode_row_major(&m, 16, 24).unwrap();
        let o = ObjectRecord::from_rle("obj", "thing", &rle, 1.0, 1.0).unwrap();
        w.write_frame(&FrameRecord {
            frame_number: n,
            time_s: n as f64 / 30.0,
            objects: vec![o],
        })
        .unwrap();
    }
    w.close().unwrap();
}

#[test]
fn export_then_eval_then_render() {
    let tmp = tempfile::tempdir().unwrap();
    let res = tmp.path().join("dense_annotations_clip.jsonl");
    write_result(&res);
    let out = tmp.path().join("davis");
    let o = densam(&[&"export", &res, &"--format", &"davis", &"--out", &out]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let gt = out.join("clip");
    let o = densam(&[
        &"eval",
        &res,
        &"--gt",
        &gt,
        &"--id-map",
        &gt.join("objects.json"),
        &"--all-frames",
        &"--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rep: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rep["jf_mean"], 1.0);
    assert_eq!(rep["objects"][0]["id"], "obj");
    let o = densam(&[
        &"eval",
        &res,
        &"--gt",
        &gt,
        &"--id-map",
        &gt.join("objects.json"),
    ]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("ALL"));
    let csv = tmp.path().join("b.csv");
    let o = densam(&[&"export", &res, &"--format", &"boxes-csv", &"--out", &csv]);
    assert!(o.status.success());
    assert_eq!(std::fs::read_to_string(&csv).unwrap().lines().count(), 5);
    let frames = grey_frames(tmp.path(), 4);
    let png = tmp.path().join("png");
    let o = densam(&[&"render", &res, &"--video", &frames, &"--png-dir", &png]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(png.join("00003.png").is_file());
}

#[test]
fn bad_input_exits_with_a_message() {
    let tmp = tempfile::tempdir().unwrap();
    let res = tmp.path().join("bad.jsonl");
    write_result(&res);
    let mut text = std::fs::read_to_string(&res).unwrap();
    text.push_str("{\"frame_number\": 9, \"objects\": [}\n");
    std::fs::write(&res, text).unwrap();
    let o = densam(&[
        &"export",
        &res,
        &"--format",
        &"coco",
        &"--out",
        &tmp.path().join("c.json"),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("bad.jsonl:5") && !err.contains("panicked"),
        "{err}"
    );
}

/// A result line declaring a mask far larger than any frame (a 40 GB DAVIS plane) is refused
/// before anything is allocated: exit 3 naming the line, frame and object, no output left.
#[test]
fn huge_mask_size_in_a_result_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let res = tmp.path().join("huge.jsonl");
    std::fs::write(
        &res,
        "{\"frame_number\": 0, \"time_s\": 0.0, \"objects\": [{\"id\": \"a\", \"label\": \"a\", \
         \"bbox\": [0, 0, 1, 1], \"score\": 1.0, \"iou\": 1.0, \"area\": 1, \
         \"segmentation\": {\"size\": [200000, 200000], \"counts\": \"0\"}}]}\n",
    )
    .unwrap();
    let out = tmp.path().join("davis");
    let o = densam(&[&"export", &res, &"--format", &"davis", &"--out", &out]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(
        err.contains("huge.jsonl:1")
            && err.contains("200000x200000")
            && err.contains("object \"a\""),
        "{err}"
    );
    assert!(!out.exists() || std::fs::read_dir(&out).unwrap().next().is_none());
}

#[test]
fn exit_codes_and_one_message() {
    let tmp = tempfile::tempdir().unwrap();
    let res = tmp.path().join("bad.jsonl");
    write_result(&res);
    let mut text = std::fs::read_to_string(&res).unwrap();
    let bad_line = "{\"frame_number\": 9, \"objects\": [}";
    text.push_str(bad_line);
    text.push('\n');
    std::fs::write(&res, text).unwrap();
    let serde_msg = serde_json::from_str::<serde_json::Value>(bad_line)
        .unwrap_err()
        .to_string();
    let serde_msg = serde_msg.split(" at line").next().unwrap().to_string();
    let frames = grey_frames(tmp.path(), 10);
    // Ground truth for eval: the DAVIS export of a good result; the bad line comes first there.
    let good = tmp.path().join("good.jsonl");
    write_result(&good);
    let o = densam(&[
        &"export",
        &good,
        &"--format",
        &"davis",
        &"--out",
        &tmp.path().join("gt"),
    ]);
    assert!(o.status.success());
    let bad1 = tmp.path().join("bad1.jsonl");
    std::fs::write(&bad1, format!("{bad_line}\n")).unwrap();
    let runs: Vec<(Output, &str)> = vec![
        (
            densam(&[
                &"export",
                &res,
                &"--format",
                &"coco",
                &"--out",
                &tmp.path().join("c.json"),
            ]),
            "bad.jsonl:5: malformed result line",
        ),
        (
            densam(&[
                &"export",
                &res,
                &"--format",
                &"boxes-csv",
                &"--out",
                &tmp.path().join("b.csv"),
            ]),
            "bad.jsonl:5: malformed result line",
        ),
        (
            densam(&[
                &"export",
                &res,
                &"--format",
                &"davis",
                &"--out",
                &tmp.path().join("d"),
            ]),
            "bad.jsonl:5: malformed result line",
        ),
        (
            densam(&[
                &"render",
                &res,
                &"--video",
                &frames,
                &"--png-dir",
                &tmp.path().join("p"),
            ]),
            "bad.jsonl:5: malformed result line",
        ),
        (
            densam(&[
                &"eval",
                &bad1,
                &"--gt",
                &tmp.path().join("gt/good"),
                &"--all-frames",
            ]),
            "bad1.jsonl:1: malformed result line",
        ),
    ];
    for (o, says) in &runs {
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(3), "{err}");
        assert!(err.contains(says), "{err}");
        assert_eq!(err.matches(&serde_msg).count(), 1, "{err}");
    }
    // A missing result is bad input too; an output that cannot be written is 5.
    let none = tmp.path().join("none.jsonl");
    let o = densam(&[
        &"export",
        &none,
        &"--format",
        &"coco",
        &"--out",
        &tmp.path().join("n.json"),
    ]);
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let blocker = tmp.path().join("file");
    std::fs::write(&blocker, b"x").unwrap();
    let o = densam(&[
        &"export",
        &good,
        &"--format",
        &"boxes-csv",
        &"--out",
        &blocker.join("b.csv"),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(5), "{err}");
    assert!(err.contains("file"), "{err}");
}

/// The names in a folder, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn failures_leave_no_partial_output() {
    let tmp = tempfile::tempdir().unwrap();
    // 40 frames; in one result line 40 is malformed (a 39-line CSV was left behind), in the
    // other line 20's mask counts do not cover its size (found while drawing or painting,
    // after 19 frames were written).
    let good = tmp.path().join("good.jsonl");
    let mut w = JsonlWriter::create(&good).unwrap();
    for n in 0..40u64 {
        let m: Vec<u8> = (0..16u32 * 24)
            .map(|i| u8::from(i % 24 > 3 && i % 24 < 9 + (n % 5) as u32))
            .collect();
        let rle = Rle::encode_row_major(&m, 16, 24).unwrap();
        let o = ObjectRecord::from_rle("obj", "thing", &rle, 1.0, 1.0).unwrap();
        w.write_frame(&FrameRecord {
            frame_number: n,
            time_s: n as f64 / 30.0,
            objects: vec![o],
        })
        .unwrap();
    }
    w.close().unwrap();
    let text = std::fs::read_to_string(&good).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let cut = tmp.path().join("cut.jsonl");
    std::fs::write(
        &cut,
        format!("{}\n{{\"frame_number\": 39, \n", lines[..39].join("\n")),
    )
    .unwrap();
    let mut v: serde_json::Value = serde_json::from_str(lines[19]).unwrap();
    v["objects"][0]["segmentation"]["counts"] = "0".into();
    let mut ls: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
    ls[19] = v.to_string();
    let counts = tmp.path().join("counts.jsonl");
    std::fs::write(&counts, ls.join("\n") + "\n").unwrap();
    let frames = grey_frames(tmp.path(), 40);
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    // An earlier CSV of the same name stays as it was.
    std::fs::write(out.join("b.csv"), "old\n").unwrap();
    let runs: Vec<Output> = vec![
        densam(&[
            &"export",
            &cut,
            &"--format",
            &"boxes-csv",
            &"--out",
            &out.join("b.csv"),
        ]),
        densam(&[
            &"export",
            &cut,
            &"--format",
            &"coco",
            &"--out",
            &out.join("c.json"),
        ]),
        densam(&[
            &"export",
            &counts,
            &"--format",
            &"davis",
            &"--out",
            &out.join("davis"),
        ]),
        densam(&[
            &"render",
            &counts,
            &"--video",
            &frames,
            &"--png-dir",
            &out.join("pngs"),
        ]),
        densam(&[
            &"render",
            &counts,
            &"--video",
            &frames,
            &"--out",
            &out.join("o.mp4"),
        ]),
    ];
    for o in &runs {
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(3), "{err}");
        assert!(
            err.contains("cut.jsonl:40") || err.contains("counts.jsonl:20"),
            "{err}"
        );
    }
    // The davis export made its parent folder, nothing in it.
    assert_eq!(names(&out), ["b.csv", "davis"]);
    assert!(names(&out.join("davis")).is_empty());
    assert_eq!(std::fs::read_to_string(out.join("b.csv")).unwrap(), "old\n");
    // The same commands on the good result write their outputs, and nothing else.
    for (fmt, name) in [
        ("boxes-csv", "b.csv"),
        ("coco", "c.json"),
        ("davis", "davis"),
    ] {
        let o = densam(&[
            &"export",
            &good,
            &"--format",
            &fmt,
            &"--out",
            &out.join(name),
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    assert_eq!(
        std::fs::read_to_string(out.join("b.csv"))
            .unwrap()
            .lines()
            .count(),
        41
    );
    assert_eq!(names(&out.join("davis/good")).len(), 41);
    for target in [
        &[
            &"--png-dir" as &dyn AsRef<std::ffi::OsStr>,
            &out.join("pngs"),
        ],
        &[&"--out", &out.join("o.mp4")],
    ] {
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> =
            vec![&"render", &good, &"--video", &frames];
        args.extend_from_slice(target);
        let o = densam(&args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    assert_eq!(names(&out.join("pngs")).len(), 40);
    assert_eq!(names(&out), ["b.csv", "c.json", "davis", "o.mp4", "pngs"]);
}

#[test]
fn option_values_out_of_range_are_usage_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let res = tmp.path().join("r.jsonl");
    write_result(&res);
    let frames = grey_frames(tmp.path(), 10);
    let png = tmp.path().join("p");
    let gt = tmp.path().join("gt");
    let render = |k: &str, v: &str| -> Vec<std::ffi::OsString> {
        let mut a: Vec<std::ffi::OsString> = vec!["render".into(), res.clone().into()];
        a.extend(["--video".into(), frames.clone().into()]);
        a.extend([
            "--png-dir".into(),
            png.clone().into(),
            format!("{k}={v}").into(),
        ]);
        a
    };
    let eval = |v: &str| -> Vec<std::ffi::OsString> {
        vec![
            "eval".into(),
            res.clone().into(),
            "--gt".into(),
            gt.clone().into(),
            format!("--bound-th={v}").into(),
        ]
    };
    let cases = [
        (render("--alpha", "NaN"), "--alpha"),
        (render("--alpha", "1.5"), "--alpha"),
        (render("--alpha", "-0.1"), "--alpha"),
        (render("--crf", "99"), "--crf"),
        (render("--crf", "52"), "--crf"),
        (eval("1e30"), "--bound-th"),
        (eval("NaN"), "--bound-th"),
        (eval("-1"), "--bound-th"),
        (eval("0"), "--bound-th"),
        (eval("inf"), "--bound-th"),
    ];
    for (args, option) in cases {
        let a: Vec<&dyn AsRef<std::ffi::OsStr>> = args
            .iter()
            .map(|s| s as &dyn AsRef<std::ffi::OsStr>)
            .collect();
        let o = densam(&a);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(option), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    assert!(!png.exists());
}

/// A symlink planted under an export's temporary name is never written through: the export
/// replaces the link, and the file it pointed to stays as it was.
#[test]
fn planted_symlinks_are_not_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let res = tmp.path().join("r.jsonl");
    write_result(&res);
    let victim = tmp.path().join("victim.txt");
    std::fs::write(&victim, "keep me\n").unwrap();
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    std::os::unix::fs::symlink(&victim, out.join(".b.partial.csv")).unwrap();
    let o = densam(&[
        &"export",
        &res,
        &"--format",
        &"boxes-csv",
        &"--out",
        &out.join("b.csv"),
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me\n");
    assert!(
        std::fs::read_to_string(out.join("b.csv"))
            .unwrap()
            .starts_with("frame_number,")
    );
    assert_eq!(names(&out), ["b.csv"]);
}
