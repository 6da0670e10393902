//! The JSONL result lines: exact bytes, round trips, resume after a checkpoint, and clear
//! errors (file, line, frame, object) on bad input.

use densam::output::{FrameRecord, JsonlReader, JsonlWriter, ObjectRecord, OutputError, Rle};
use std::io::Write;

fn frame(n: u64, objs: &[(&str, u32)]) -> FrameRecord {
    let objects = objs
        .iter()
        .filter_map(|&(id, x)| {
            let mut m = vec![0u8; 6 * 8];
            m[2 * 8 + x as usize] = 1;
            m[3 * 8 + x as usize] = 1;
            let rle = Rle::encode_row_major(&m, 6, 8).unwrap();
            ObjectRecord::from_rle(id, "cup", &rle, 0.875, 0.5)
        })
        .collect();
    FrameRecord {
        frame_number: n,
        time_s: n as f64 / 30.0,
        objects,
    }
}

#[test]
fn exact_bytes_and_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.jsonl");
    let mut w = JsonlWriter::create(&path).unwrap();
    let mut f0 = frame(0, &[("a", 1)]);
    f0.objects[0].assoc_id = Some("as-1".into());
    f0.objects[0].assoc_name = Some("plate".into());
    let frames = vec![f0, frame(3, &[("a", 2), ("b", 7)]), frame(4, &[])];
    for f in &frames {
        w.write_frame(f).unwrap();
    }
    let n = w.bytes_written();
    w.close().unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.len() as u64, n);
    let first = text.lines().next().unwrap();
    assert_eq!(
        first,
        r#"{"frame_number":0,"time_s":0.0,"objects":[{"id":"a","label":"cup","assoc_id":"as-1","assoc_name":"plate","bbox":[1,2,2,4],"score":0.875,"iou":0.5,"area":2,"segmentation":{"size":[6,8],"counts":"82V1"}}]}"#
    );
    let back: Vec<FrameRecord> = JsonlReader::open(&path)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(back, frames);
    // Same inputs, same bytes.
    let mut again = Vec::new();
    let mut w2 = JsonlWriter::new(&mut again, "mem");
    for f in &frames {
        w2.write_frame(f).unwrap();
    }
    drop(w2);
    assert_eq!(again, text.as_bytes());
}

#[test]
fn resume_gives_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let full = dir.path().join("full.jsonl");
    let cut = dir.path().join("cut.jsonl");
    let frames: Vec<_> = (0..5).map(|i| frame(i * 2, &[("x", i as u32)])).collect();
    let mut w = JsonlWriter::create(&full).unwrap();
    frames.iter().for_each(|f| w.write_frame(f).unwrap());
    w.close().unwrap();

    let mut w = JsonlWriter::create(&cut).unwrap();
    w.write_frame(&frames[0]).unwrap();
    w.write_frame(&frames[1]).unwrap();
    let (offset, last) = (w.bytes_written(), w.last_frame());
    w.write_frame(&frames[2]).unwrap(); // written after the checkpoint, then "killed"
    w.close().unwrap();
    let mut w = JsonlWriter::resume(&cut, offset, last).unwrap();
    assert!(w.write_frame(&frames[1]).is_err(), "frame order is kept");
    frames[2..].iter().for_each(|f| w.write_frame(f).unwrap());
    w.close().unwrap();
    assert_eq!(std::fs::read(&full).unwrap(), std::fs::read(&cut).unwrap());
}

fn read_err(text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.jsonl");
    std::fs::File::create(&path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let mut r = JsonlReader::open(&path).unwrap();
    loop {
        match r.next() {
            Some(Ok(rec)) => {
                for o in &rec.objects {
                    if let Err(e) = r.decode(rec.frame_number, o) {
                        return e.to_string();
                    }
                }
            }
            Some(Err(e)) => return e.to_string(),
            None => panic!("no error for {text:?}"),
        }
    }
}

#[test]
fn bad_input_errors_name_line_frame_object() {
    let good = serde_json::to_string(&frame(1, &[("a", 1)])).unwrap();
    let e = read_err(&format!(
        "{good}\n{{\"frame_number\": 2, \"objects\": 7}}\n"
    ));
    assert!(e.contains("bad.jsonl:2:"), "{e}");
    let e = read_err(&format!("{good}\n\n{good}\n"));
    assert!(e.contains("bad.jsonl:3:") && e.contains("frame 1"), "{e}");
    let dup = serde_json::to_string(&frame(5, &[("a", 1), ("a", 2)])).unwrap();
    let e = read_err(&dup);
    assert!(
        e.contains(":1:") && e.contains("object \"a\"") && e.contains("twice"),
        "{e}"
    );
    let bad_rle = good.replace("[6,8]", "[6,9]");
    let e = read_err(&bad_rle);
    assert!(
        e.contains(":1: frame 1, object \"a\"") && e.contains("counts"),
        "{e}"
    );
    let e = read_err("not json\n");
    assert!(e.contains("bad.jsonl:1: malformed"), "{e}");
    // The writer refuses non-finite numbers and reversed frames.
    let mut sink = Vec::new();
    let mut w = JsonlWriter::new(&mut sink, "out.jsonl");
    let mut f = frame(3, &[("a", 1)]);
    f.objects[0].score = f32::NAN;
    let e = w.write_frame(&f).unwrap_err();
    assert!(matches!(e, OutputError::Invalid { .. }), "{e}");
    w.write_frame(&frame(3, &[])).unwrap();
    assert!(w.write_frame(&frame(2, &[])).is_err());
    assert!(JsonlReader::open("/nonexistent/x.jsonl").is_err());
}

#[test]
fn uncompressed_counts_are_read() {
    let line = r#"{"frame_number":0,"time_s":0,"objects":[{"id":"a","bbox":[0,0,1,1],"score":1,"iou":1,"area":1,"segmentation":{"size":[2,2],"counts":[0,1,3]}}]}"#;
    let rec: FrameRecord = serde_json::from_str(line).unwrap();
    let rle = rec.objects[0].rle().unwrap();
    assert_eq!(rle.decode_row_major(), vec![1, 0, 0, 0]);
}
