//! Overlays: pixel colours inside a known mask region (translucent object colour over the
//! frame), untouched pixels outside, an H.264 MP4 with one frame per result line, and clear
//! errors for frames past the video's end and masks of another size.

use densam::output::png_io::write_rgb_png;
use densam::output::render::{RenderOptions, RenderTarget, object_colour, render};
use densam::output::{FrameRecord, JsonlWriter, ObjectRecord, Rle};
use std::path::Path;

const H: u32 = 48;
const W: u32 = 64;
const GREY: u8 = 100;

fn frames_dir(dir: &Path, n: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let data = vec![GREY; (H * W * 3) as usize];
    for i in 0..n {
        write_rgb_png(&dir.join(format!("{i:05}.png")), W, H, &data).unwrap();
    }
}

fn result(path: &Path, frames: &[u64], size: (u32, u32)) {
    let mut w = JsonlWriter::create(path).unwrap();
    for &n in frames {
        let m: Vec<u8> = (0..size.0)
            .flat_map(|y| {
                (0..size.1).map(move |x| u8::from((20..40).contains(&y) && (10..40).contains(&x)))
            })
            .collect();
        let rle = Rle::encode_row_major(&m, size.0, size.1).unwrap();
        let objects = if n == 4 {
            vec![]
        } else {
            vec![ObjectRecord::from_rle("cup-1", "cup", &rle, 0.9, 0.8).unwrap()]
        };
        w.write_frame(&FrameRecord {
            frame_number: n,
            time_s: n as f64 / 30.0,
            objects,
        })
        .unwrap();
    }
    w.close().unwrap();
}

fn blend(c: u8) -> u8 {
    (f32::from(GREY) * 0.5 + f32::from(c) * 0.5).round() as u8
}

#[test]
fn png_overlay_colours() {
    let tmp = tempfile::tempdir().unwrap();
    let video = tmp.path().join("frames");
    frames_dir(&video, 6);
    let res = tmp.path().join("r.jsonl");
    result(&res, &[0, 2, 4], (H, W));
    let out = tmp.path().join("png");
    let s = render(
        &res,
        &video,
        &RenderTarget::PngDir(out.clone()),
        &RenderOptions::default(),
    )
    .unwrap();
    assert_eq!(s.frames, 3);
    let c = object_colour("cup-1");
    assert_eq!(c, object_colour("cup-1"));
    assert_ne!(c, object_colour("cup-2"));
    let img = image::open(out.join("00000.png")).unwrap().to_rgb8();
    let inside = img.get_pixel(30, 25).0;
    assert_eq!(
        inside,
        c.map(blend),
        "translucent object colour inside the mask"
    );
    assert_eq!(img.get_pixel(60, 45).0, [GREY; 3], "outside untouched");
    assert_eq!(img.get_pixel(10, 30).0, c, "box edge in the object colour");
    // Frame 4 has no objects: only the frame number is drawn.
    let img = image::open(out.join("00004.png")).unwrap().to_rgb8();
    assert_eq!(img.get_pixel(30, 25).0, [GREY; 3]);
    assert!(!out.join("00001.png").exists());
}

#[test]
fn mp4_has_one_frame_per_line() {
    if std::process::Command::new("ffmpeg")
        .arg("-version")
        .output()
        .is_err()
    {
        eprintln!("no ffmpeg program: skipped");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let video = tmp.path().join("frames");
    frames_dir(&video, 6);
    let res = tmp.path().join("r.jsonl");
    result(&res, &[0, 2, 4], (H, W));
    let mp4 = tmp.path().join("o/overlay.mp4");
    let opts = RenderOptions {
        crf: 0,
        ..RenderOptions::default()
    };
    render(&res, &video, &RenderTarget::Mp4(mp4.clone()), &opts).unwrap();
    let src = densam::video::VideoSource::open(&mp4).unwrap();
    assert_eq!(src.frame_count(), 3);
    assert!(
        (src.info().fps_avg - 15.0).abs() < 0.01,
        "{}",
        src.info().fps_avg
    );
    let f = src.read_frame(0).unwrap();
    let i = (25 * W as usize + 30) * 3;
    let want = object_colour("cup-1").map(blend);
    for (ch, &w) in want.iter().enumerate() {
        let got = f.rgb.data[i + ch];
        assert!(got.abs_diff(w) <= 12, "channel {ch}: {got} vs {w}");
    }
}

#[test]
fn render_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let video = tmp.path().join("frames");
    frames_dir(&video, 3);
    let res = tmp.path().join("r.jsonl");
    result(&res, &[0, 5], (H, W));
    let t = RenderTarget::PngDir(tmp.path().join("png"));
    let e = render(&res, &video, &t, &RenderOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("r.jsonl:2: frame 5") && e.contains("only 3 frames"),
        "{e}"
    );
    result(&res, &[0], (H, W + 2));
    let e = render(&res, &video, &t, &RenderOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("r.jsonl:1: frame 0, object \"cup-1\"") && e.contains("differs"),
        "{e}"
    );
}

#[cfg(feature = "ffmpeg")]
#[test]
fn mp4_writer_in_process_odd_size() {
    use densam::output::mp4::Mp4Writer;
    use densam::video::RgbFrame;
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("odd.mp4");
    let (w, h) = (33usize, 17usize);
    let mut m = Mp4Writer::create(&path, w, h, 25.0, 0).unwrap();
    for i in 0..5u8 {
        let f = RgbFrame::new(w, h, vec![40 + 30 * i; w * h * 3]).unwrap();
        m.write(&f).unwrap();
    }
    assert!(m.write(&RgbFrame::new(2, 2, vec![0; 12]).unwrap()).is_err());
    m.finish().unwrap();
    let src = densam::video::VideoSource::open(&path).unwrap();
    assert_eq!(src.frame_count(), 5);
    assert_eq!((src.width(), src.height()), (34, 18), "padded to even");
    assert!((src.info().fps_avg - 25.0).abs() < 0.01);
    let f = src.read_frame(4).unwrap();
    assert!(f.rgb.data[0].abs_diff(160) <= 4, "{}", f.rgb.data[0]);
}
