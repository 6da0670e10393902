//! Bad prompt input through `densam annotate`, table-driven: each case is a prompts file (its
//! name and bytes) with the exit code and the message fragment it must give: file:line:column
//! for a malformed file, object and frame for an unusable prompt. None may crash (a mask
//! prompt declaring 200000x200000 pixels used to abort allocating 40 GB), and none gets as far
//! as writing a result. Also the HD-EPIC files: a problem in mask_info names mask_info.

mod common;

use common::{annotate_args, assert_exit_says, densam, stderr};

/// A case: the prompts file's name and bytes, extra options, the exit code and a fragment of
/// the message.
type Case = (
    &'static str,
    Vec<u8>,
    &'static [&'static str],
    i32,
    &'static str,
);

/// A mask prompt on frame 1 of object `a`.
fn mask_prompt(size: [u64; 2], counts: &[u64]) -> Vec<u8> {
    let counts: Vec<String> = counts.iter().map(u64::to_string).collect();
    format!(
        r#"{{"objects":[{{"id":"a","prompts":[{{"frame":1,"mask":{{"size":[{},{}],"counts":[{}]}}}}]}}]}}"#,
        size[0],
        size[1],
        counts.join(",")
    )
    .into_bytes()
}

/// Runs annotate on the clip with the prompts file `dir/name` holding `bytes`.
fn annotate(
    clip: &common::DiscClip,
    name: &str,
    bytes: &[u8],
    extra: &[&str],
) -> std::process::Output {
    let dir = clip.dir.path();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    let out = dir.join(format!("out-{name}"));
    let mut opts = vec!["--quiet", "--device", "cpu", "--image-size", "256"];
    opts.extend_from_slice(extra);
    let o = densam(
        &annotate_args(&clip.frames, &path, &clip.ckpt, &out, &opts),
        &[],
    );
    assert!(
        !out.join("dense_annotations_frames.jsonl").exists(),
        "{name}: a result was written"
    );
    o
}

#[test]
fn bad_prompt_files_exit_3_with_a_located_message() {
    // 4 frames of 160x120.
    let clip = common::disc_clip(4, 160, 120, "{}");
    // A mask declaring 200000 x 200000 pixels (40 GB as bytes) with counts that sum to exactly
    // that (4e10): valid RLE, refused by the size check before anything is allocated.
    let mut huge_runs = vec![0u64];
    huge_runs.extend([4_000_000_000u64; 10]);
    let huge = mask_prompt([200_000, 200_000], &huge_runs);
    let cases: Vec<Case> = vec![
        (
            "huge.json",
            huge.clone(),
            &[],
            3,
            "object `a`, frame 1: mask size 200000x200000 is larger than the video (120x160), skipped",
        ),
        (
            "huge-strict.json",
            huge,
            &["--strict"],
            3,
            "prompts (strict): object `a`, frame 1: mask size 200000x200000",
        ),
        (
            "sum.json",
            mask_prompt([120, 160], &[5, 7]),
            &[],
            3,
            "object `a`, frame 1: bad mask RLE (RLE counts sum to 12, expected 120x160 = 19200)",
        ),
        (
            "things.json",
            br#"{"things": [{"id": "a", "prompts": [{"frame": 1, "box": [1, 1, 9, 9]}]}]}"#.to_vec(),
            &[],
            3,
            "things.json:1:1: no `objects` list",
        ),
        (
            "big.json",
            b"{\"objects\": [\n {\"id\": \"a\", \"prompts\": [{\"frame\": 1, \"box\": [1e400, 0, 5, 5]}]}]}"
                .to_vec(),
            &[],
            3,
            "big.json:2:51: number out of range",
        ),
        (
            "cut.json",
            b"{\"objects\": [\n {\"id\": \"a\",\n  \"prompts\": [{\"frame\": 1, \"bo".to_vec(),
            &[],
            3,
            "cut.json:3:30: EOF while parsing",
        ),
        (
            "type.json",
            b"{\"objects\": [\n {\"id\": \"a\", \"prompts\": [{\"frame\": \"1\", \"box\": [0, 0, 5, 5]}]}]}"
                .to_vec(),
            &[],
            3,
            "type.json:2:38: invalid type: string \"1\", expected i64",
        ),
        (
            "lines.json",
            b"{\"id\": \"a\", \"prompts\": [{\"frame\": 1, \"box\": [1, 1, 9, 9]}]}\n{\"id\": \"b\", \"prompts\": [{\"frame\": 1, \"boxx\": []}]}\n"
                .to_vec(),
            &[],
            3,
            "lines.json:2:",
        ),
        ("empty.json", Vec::new(), &[], 3, "empty.json: the prompts file is empty"),
        (
            "bom.json",
            b"\xef\xbb\xbf{\"objects\": []}".to_vec(),
            &[],
            3,
            "prompts: the file lists no objects",
        ),
        (
            "utf8.json",
            b"{\"objects\": [\n{\"id\": \"\xff\"}]}".to_vec(),
            &[],
            3,
            "utf8.json:2:9: not UTF-8",
        ),
        (
            "late.json",
            br#"{"objects": [{"id": "a", "prompts": [{"frame": 99, "box": [1, 1, 9, 9]}]}]}"#.to_vec(),
            &[],
            3,
            "object `a`, frame 99: frame is outside the video (0..4)",
        ),
        // Unknown keys on an object: a warning naming them (here with nothing usable: exit 3),
        // an error with --strict; every form of the file.
        (
            "keys.json",
            br#"{"objects": [{"id": "a", "colour": "red", "prompt": [], "prompts": [{"frame": 99, "box": [1, 1, 9, 9]}]}]}"#.to_vec(),
            &[],
            3,
            r#"object `a`: unknown key(s) ["colour", "prompt"] ignored"#,
        ),
        (
            "keys-strict.json",
            br#"[{"id": "a", "colour": "red", "prompts": [{"frame": 1, "box": [1, 1, 9, 9]}]}]"#.to_vec(),
            &["--strict"],
            3,
            r#"object `a`: unknown key(s) ["colour"] ignored"#,
        ),
        (
            "keys-lines.jsonl",
            b"{\"id\": \"a\", \"prompts\": [{\"frame\": 1, \"box\": [1, 1, 9, 9]}]}\n{\"id\": \"b\", \"x\": 1, \"prompts\": [{\"frame\": 1, \"box\": [1, 1, 9, 9]}]}\n".to_vec(),
            &["--strict"],
            3,
            r#"object `b`: unknown key(s) ["x"] ignored"#,
        ),
        // Finite in f64, +inf in the f32 the model takes: refused, naming object and frame.
        (
            "f32-box.json",
            br#"{"objects": [{"id": "a", "prompts": [{"frame": 1, "box": [0, 0, 1e39, 50]}]}]}"#.to_vec(),
            &[],
            3,
            "object `a`, frame 1: box [0.0, 0.0, 1e39, 50.0] has a coordinate that is not a finite single-precision (f32) number",
        ),
        (
            "f32-points.json",
            br#"{"objects": [{"id": "a", "prompts": [{"frame": 1, "points": [[5, -1e39]], "labels": [1]}]}]}"#.to_vec(),
            &[],
            3,
            "object `a`, frame 1: point coordinates that are not finite single-precision (f32) numbers",
        ),
        // Distinct in f64, equal corners in f32: an empty box.
        (
            "f32-equal.json",
            br#"{"objects": [{"id": "a", "prompts": [{"frame": 1, "box": [100000000, 0, 100000001, 50]}]}]}"#.to_vec(),
            &[],
            3,
            "object `a`, frame 1: box [100000000.0, 0.0, 100000001.0, 50.0] is not [x0,y0,x1,y1]",
        ),
    ];
    for (name, bytes, extra, exit, says) in cases {
        let o = annotate(&clip, name, &bytes, extra);
        assert!(!stderr(&o).contains("panicked"), "{name}: {}", stderr(&o));
        assert_exit_says(&o, Some(exit), says);
    }
}

#[test]
fn hd_epic_errors_name_the_file_they_are_in() {
    let clip = common::disc_clip(4, 160, 120, "{}");
    let dir = clip.dir.path();
    let id = "P01-20240202-171220";
    let assoc = dir.join("assoc_info.json");
    std::fs::write(
        &assoc,
        format!(
            "{{\"{id}\": {{\"a1\": {{\"name\": \"cup\", \"tracks\": [{{\"masks\": [\"m1\"]}}]}}}}}}"
        ),
    )
    .unwrap();
    let run = |masks: &str| {
        let m = dir.join("mask_info.json");
        std::fs::write(&m, masks).unwrap();
        let args: Vec<String> = [
            "annotate",
            "--video",
            &clip.frames.display().to_string(),
            "--video-id",
            id,
            "--hd-epic-assoc",
            &assoc.display().to_string(),
            "--hd-epic-masks",
            &m.display().to_string(),
            "--checkpoint",
            &clip.ckpt.display().to_string(),
            "--out",
            &dir.join("out").display().to_string(),
            "--quiet",
        ]
        .map(String::from)
        .to_vec();
        densam(&args, &[])
    };
    // A type error in mask_info: mask_info's name, line and column.
    let o = run(&format!(
        "{{\"{id}\": {{\n  \"m1\": {{\"frame_number\": \"x\"}}}}}}"
    ));
    assert_exit_says(&o, Some(3), "mask_info.json:2:");
    assert!(!stderr(&o).contains("assoc_info.json"), "{}", stderr(&o));
    // mask_info without the video.
    let o = run("{\"P09-x\": {\"m1\": {\"frame_number\": 1}}}");
    assert_exit_says(
        &o,
        Some(3),
        &format!("mask_info.json: no masks of video `{id}`"),
    );
}

/// Prompts and videos that are not regular files (a FIFO would block forever, `/dev/zero` would
/// be read until memory runs out) and a prompts file over the 1 GiB cap (a sparse file) are
/// refused at once, exit 3, naming the file.
#[test]
fn fifos_devices_and_huge_files_are_refused_at_once() {
    use std::os::unix::ffi::OsStrExt;
    let clip = common::disc_clip(4, 160, 120, "{}");
    let dir = clip.dir.path();
    let fifo = dir.join("fifo.json");
    let c = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
    // SAFETY: creating a FIFO at a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let huge = dir.join("huge.json");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len((1 << 30) + 1)
        .unwrap();
    let good = dir.join("good.json");
    std::fs::write(
        &good,
        r#"{"objects": [{"id": "a", "prompts": [{"frame": 1, "box": [1, 1, 9, 9]}]}]}"#,
    )
    .unwrap();
    let zero = std::path::Path::new("/dev/zero");
    let cases = [
        (&clip.frames, &fifo, "fifo.json: not a regular file"),
        (
            &clip.frames,
            &zero.to_path_buf(),
            "/dev/zero: not a regular file",
        ),
        (
            &clip.frames,
            &huge,
            "huge.json: the file is larger than 1073741824 bytes",
        ),
        (&fifo, &good, "fifo.json: not a regular file or a folder"),
        (
            &zero.to_path_buf(),
            &good,
            "/dev/zero: not a regular file or a folder",
        ),
    ];
    for (k, (video, prompts, says)) in cases.iter().enumerate() {
        let out = dir.join(format!("out{k}"));
        let o = densam(
            &annotate_args(video, prompts, &clip.ckpt, &out, &["--quiet"]),
            &[],
        );
        assert_exit_says(&o, Some(3), says);
        assert!(!out.exists(), "{says}: created {}", out.display());
    }
}

/// Mask PNGs (HD-EPIC mask prompts, evaluation ground truth) are checked by the size their
/// header declares before they are decoded: a small file declaring 30000x30000 is refused
/// without allocating for it, naming the file and both sizes.
#[test]
fn mask_pngs_declaring_huge_sizes_are_refused_before_decoding() {
    use densam::mask::png::{read_index_png, read_mask_png};
    let dir = tempfile::tempdir().unwrap();
    let bomb = dir.path().join("bomb.png");
    std::fs::write(&bomb, common::png_declaring(30000, 30000)).unwrap();
    for e in [
        read_mask_png(&bomb, None).unwrap_err(),
        read_index_png(&bomb, None).unwrap_err(),
    ] {
        let m = e.to_string();
        assert!(
            m.contains("bomb.png") && m.contains("declares 30000x30000 pixels, more than"),
            "{m}"
        );
    }
    let m = read_mask_png(&bomb, Some((1408, 1408)))
        .unwrap_err()
        .to_string();
    assert!(m.contains("1408x1408 (the video's) are expected"), "{m}");
    // A declared size that fits is decoded (here its data is cut short: another error).
    let small = dir.path().join("small.png");
    std::fs::write(&small, common::png_declaring(64, 48)).unwrap();
    let m = read_mask_png(&small, Some((64, 48)))
        .unwrap_err()
        .to_string();
    assert!(!m.contains("declares"), "{m}");
}
