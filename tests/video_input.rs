//! Video input tests: small videos generated with the `ffmpeg` command line at test time (H.264
//! with B-frames, HEVC at a size that is no multiple of 8, VFR, an edit list, rotation, a
//! truncated and a corrupt file, non-videos), compared pixel for pixel with the ffmpeg CLI's own
//! RGB output; seek against sequential decoding; Pillow-exact resize and numpy/torch-exact
//! normalisation against the venv's Pillow/torch; every error path, in the library and the CLI.

// Without the `ffmpeg` feature only the tests that need no video file run.
#![cfg_attr(not(feature = "ffmpeg"), allow(dead_code, unused_imports))]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use densam::model::image_input::{normalize_chw, normalize_tensor};
use densam::video::{
    ErrorPolicy, Frame, ModelRgb, RgbFrame, Selection, StreamOptions, VideoError, VideoSource,
    model_input_rgb, model_rgb_tensor, resize_bicubic,
};

/// Bump when the fixture commands change.
const FIXTURE_VERSION: &str = "v5";

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn ffmpeg(args: &[&str]) {
    run(Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin", "-y"])
        .args(args));
}

fn testsrc(size: &str, rate: u32) -> String {
    format!("testsrc2=size={size}:rate={rate}")
}

/// Overwrites the 4-byte NAL length prefix of the packet with pts index `k` (decode order) so
/// the decoder rejects it.
fn corrupt_packet(file: &Path, k: usize) {
    let csv = run(Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0"])
        .args(["-show_entries", "packet=pos", "-of", "csv=p=0"])
        .arg(file));
    let pos: u64 = String::from_utf8_lossy(&csv)
        .lines()
        .nth(k)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut data = std::fs::read(file).unwrap();
    data[pos as usize..pos as usize + 4].copy_from_slice(&[0xff; 4]);
    std::fs::write(file, data).unwrap();
}

fn generate(dir: &Path) {
    let p = |n: &str| dir.join(n).to_str().unwrap().to_string();
    let x264 = [
        "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
    ];
    let mut a: Vec<&str> = vec!["-f", "lavfi", "-i"];
    let src = testsrc("96x64", 25);
    a.extend([src.as_str(), "-frames:v", "40"]);
    a.extend(x264);
    let out = p("h264_bf.mp4");
    a.extend(["-bf", "3", "-g", "12", out.as_str()]);
    ffmpeg(&a);
    // HEVC, open GOP with B-frames, 98x66 (no multiple of 8: cropped coded size).
    let src = testsrc("98x66", 24);
    let out = p("hevc.mkv");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        &src,
        "-frames:v",
        "40",
        "-c:v",
        "libx265",
        "-pix_fmt",
        "yuv420p",
        "-x265-params",
        "log-level=error:keyint=10:min-keyint=10:open-gop=1:bframes=3",
        &out,
    ]);
    // VFR: 84 frames with irregular gaps (a CFR conversion would give 407).
    let src = testsrc("64x48", 30);
    let out = p("vfr.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        &src,
        "-frames:v",
        "84",
        "-vf",
        "setpts='(N+floor(N/3)*N/7)/30/TB'",
        "-fps_mode",
        "passthrough",
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-bf",
        "2",
        "-g",
        "20",
        &out,
    ]);
    // An edit list: a stream copy cut mid-GOP (leading packets flagged to be discarded).
    ffmpeg(&[
        "-ss",
        "0.5",
        "-i",
        &p("h264_bf.mp4"),
        "-c",
        "copy",
        &p("cut.mp4"),
    ]);
    // Rotation metadata (90°): displayed 64x96.
    ffmpeg(&[
        "-i",
        &p("h264_bf.mp4"),
        "-c",
        "copy",
        "-metadata:s:v",
        "rotate=90",
        &p("rot90.mp4"),
    ]);
    // No B-frames, keyframe every 10: frame 9's packet corrupted.
    let src = testsrc("96x64", 25);
    let out = p("corrupt.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        &src,
        "-frames:v",
        "30",
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-bf",
        "0",
        "-g",
        "10",
        &out,
    ]);
    corrupt_packet(&dir.join("corrupt.mp4"), 9);
    // Truncated: moov first (faststart), data cut at 60 %.
    let out = p("faststart.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        &src,
        "-frames:v",
        "40",
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-bf",
        "3",
        "-g",
        "12",
        "-movflags",
        "+faststart",
        &out,
    ]);
    let data = std::fs::read(&out).unwrap();
    std::fs::write(dir.join("truncated.mp4"), &data[..data.len() * 6 / 10]).unwrap();
    // Truncated without an index (moov at the end, cut off).
    let data = std::fs::read(dir.join("h264_bf.mp4")).unwrap();
    std::fs::write(dir.join("no_moov.mp4"), &data[..data.len() / 2]).unwrap();
    // Audio only, zero frames, not a video.
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:duration=0.5",
        &p("audio.m4a"),
    ]);
    let out = p("zero.mkv");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        &src,
        "-frames:v",
        "0",
        "-c:v",
        "libx264",
        &out,
    ]);
    std::fs::write(dir.join("text.mp4"), "not a video\n").unwrap();
    // Frame directories (PNG and JPEG), named by number.
    for (sub, ext) in [("frames_png", "png"), ("frames_jpg", "jpg")] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
        let pattern = p(&format!("{sub}/%05d.{ext}"));
        ffmpeg(&[
            "-i",
            &p("h264_bf.mp4"),
            "-frames:v",
            "12",
            "-start_number",
            "0",
            "-pix_fmt",
            if ext == "png" { "rgb24" } else { "yuvj420p" },
            &pattern,
        ]);
    }
    // Colour: a BT.709-tagged limited-range file, a full-range (yuvj420p) file, 10-bit HEVC.
    let src = testsrc("64x48", 25);
    let out = p("bt709.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        &src,
        "-frames:v",
        "8",
        "-vf",
        "scale=out_color_matrix=bt709",
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-pix_fmt",
        "yuv420p",
        "-colorspace",
        "bt709",
        "-color_primaries",
        "bt709",
        "-color_trc",
        "bt709",
        "-color_range",
        "tv",
        &out,
    ]);
    let out = p("fullrange.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        &src,
        "-frames:v",
        "8",
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-pix_fmt",
        "yuvj420p",
        &out,
    ]);
    let out = p("hevc10.mkv");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        &src,
        "-frames:v",
        "8",
        "-c:v",
        "libx265",
        "-pix_fmt",
        "yuv420p10le",
        "-x265-params",
        "log-level=error",
        &out,
    ]);
    // RGB-coded (lossless FFV1 bgr0 and x264rgb) from the PNG frames.
    let pngs = p("frames_png/%05d.png");
    ffmpeg(&[
        "-framerate",
        "25",
        "-i",
        &pngs,
        "-c:v",
        "ffv1",
        "-pix_fmt",
        "bgr0",
        &p("ffv1_rgb.mkv"),
    ]);
    ffmpeg(&[
        "-framerate",
        "25",
        "-i",
        &pngs,
        "-c:v",
        "libx264rgb",
        "-qp",
        "0",
        "-preset",
        "veryfast",
        "-pix_fmt",
        "rgb24",
        &p("x264rgb.mkv"),
    ]);
    // Packets without pts: AVI with B-frames, raw Annex B H.264.
    ffmpeg(&["-i", &p("h264_bf.mp4"), "-c", "copy", &p("bframes.avi")]);
    ffmpeg(&[
        "-i",
        &p("h264_bf.mp4"),
        "-c",
        "copy",
        "-bsf:v",
        "h264_mp4toannexb",
        &p("raw.h264"),
    ]);
    std::fs::create_dir_all(dir.join("empty_dir")).unwrap();
    std::fs::create_dir_all(dir.join("bad_names")).unwrap();
    std::fs::copy(
        dir.join("frames_png/00000.png"),
        dir.join("bad_names/frame_a.png"),
    )
    .unwrap();
}

/// The fixture directory (generated once per test binary run, reused across runs).
fn fx() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir =
            PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("video-{FIXTURE_VERSION}"));
        if !dir.join("done").exists() {
            let tmp = dir.with_extension(format!("tmp{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&tmp);
            std::fs::create_dir_all(&tmp).unwrap();
            generate(&tmp);
            std::fs::write(tmp.join("done"), "").unwrap();
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::rename(&tmp, &dir).unwrap();
        }
        dir
    })
}

fn f(name: &str) -> PathBuf {
    fx().join(name)
}

/// Every frame as the ffmpeg CLI converts it by default (passthrough timing, rgb24).
fn ffmpeg_frames(file: &Path, w: usize, h: usize) -> Vec<Vec<u8>> {
    let raw = run(Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin", "-i"])
        .arg(file)
        .args([
            "-fps_mode",
            "passthrough",
            "-pix_fmt",
            "rgb24",
            "-f",
            "rawvideo",
            "-",
        ]));
    assert_eq!(raw.len() % (w * h * 3), 0, "{}", file.display());
    raw.chunks(w * h * 3).map(|c| c.to_vec()).collect()
}

fn stream_all(
    v: &VideoSource,
    sel: Selection,
    policy: ErrorPolicy,
) -> Vec<Result<Frame, VideoError>> {
    let opts = StreamOptions {
        queue_frames: 2,
        on_error: policy,
        threads: 2,
        ..StreamOptions::default()
    };
    v.frames(sel, opts).unwrap().collect()
}

#[cfg(feature = "ffmpeg")]
#[test]
fn pooled_stream_equals_plain_stream() {
    // The same items in the same order (frames, model images, frame errors) with the model
    // images computed on the decoding thread or on a pool of preparing threads.
    let key = |r: &Result<Frame, VideoError>| match r {
        Ok(fr) => (
            fr.info.number,
            fr.rgb.data.clone(),
            fr.model_rgb.as_ref().map(|m| m.data.clone()),
        ),
        Err(e) => (e.frame().unwrap_or(usize::MAX), Vec::new(), None),
    };
    let run = |v: &VideoSource, sel: Selection, policy: ErrorPolicy, pool: usize| {
        let opts = StreamOptions {
            queue_frames: 2,
            on_error: policy,
            threads: 2,
            model_rgb: Some(ModelRgb {
                size: 24,
                pre_resize: Some((40, 30)),
            }),
            prepare_threads: pool,
        };
        v.frames(sel, opts)
            .unwrap()
            .map(|r| key(&r))
            .collect::<Vec<_>>()
    };
    let v = VideoSource::open(&f("corrupt.mp4")).unwrap();
    for policy in [ErrorPolicy::Skip, ErrorPolicy::Stop] {
        let plain = run(&v, Selection::All, policy, 0);
        let pooled = run(&v, Selection::All, policy, 3);
        assert!(plain.iter().any(|k| k.2.is_some()));
        assert_eq!(plain, pooled, "{policy:?}");
    }
    let v = VideoSource::open(&f("h264_bf.mp4")).unwrap();
    let sel = Selection::List(vec![0, 3, 4, 17, 30, 39]);
    let plain = run(&v, sel.clone(), ErrorPolicy::Stop, 0);
    assert_eq!(plain.len(), 6);
    assert_eq!(plain, run(&v, sel, ErrorPolicy::Stop, 4));
    // Dropping a pooled stream part-way stops its threads (no hang).
    let opts = StreamOptions {
        queue_frames: 2,
        model_rgb: Some(ModelRgb {
            size: 24,
            pre_resize: None,
        }),
        prepare_threads: 3,
        ..StreamOptions::default()
    };
    let mut s = v.frames(Selection::All, opts).unwrap();
    assert!(s.next().is_some() && s.next().is_some());
    drop(s);
}

#[cfg(feature = "ffmpeg")]
#[test]
fn frame_counts_fps_and_vfr() {
    // (file, frames, width, height, vfr)
    let cases = [
        ("h264_bf.mp4", 40, 96, 64, false),
        ("hevc.mkv", 40, 98, 66, false),
        ("vfr.mp4", 84, 64, 48, true),
        ("rot90.mp4", 40, 64, 96, false),
    ];
    for (name, n, w, h, vfr) in cases {
        let v = VideoSource::open(&f(name)).unwrap();
        let i = v.info();
        assert_eq!(
            (i.frame_count, i.width, i.height, i.vfr),
            (n, w, h, vfr),
            "{name}"
        );
        assert_eq!(v.count_decoded_frames(0).unwrap(), n, "{name}");
        assert_eq!(v.pts().len(), n);
        assert!(v.pts().windows(2).all(|p| p[0] < p[1]));
        assert_eq!(v.frame_info(0).unwrap().seconds, 0.0);
    }
    let v = VideoSource::open(&f("h264_bf.mp4")).unwrap();
    assert_eq!((v.info().fps_avg, v.info().fps_nominal), (25.0, 25.0));
    let last = v.frame_info(39).unwrap();
    assert!((last.seconds - 39.0 / 25.0).abs() < 1e-9, "{last:?}");
    // `rotate=90` as FFmpeg 5.1's mov muxer writes it: the CLI displays it with
    // transpose=cclock (pixels checked in `sequential_equals_ffmpeg_cli`).
    let rot = VideoSource::open(&f("rot90.mp4")).unwrap();
    assert_eq!(rot.info().rotation, 270);
    // The edit list: as many frames as the ffmpeg CLI decodes.
    let cut = VideoSource::open(&f("cut.mp4")).unwrap();
    let reference = ffmpeg_frames(&f("cut.mp4"), 96, 64);
    assert_eq!(cut.frame_count(), reference.len());
    assert!(cut.frame_count() < 40);
}

#[cfg(feature = "ffmpeg")]
#[test]
fn probe_cli_json() {
    let out = Command::new(env!("CARGO_BIN_EXE_densam"))
        .args(["probe", "--decode-count"])
        .arg(f("vfr.mp4"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["frame_count"], 84);
    assert_eq!(j["decoded_frame_count"], 84);
    assert_eq!(j["vfr"], true);
    assert_eq!(j["width"], 64);
    assert_eq!(j["codec"], "h264");
    assert_eq!(j["first_pts"], 0);
    for key in ["fps_avg", "fps_nominal", "duration_s", "last_pts", "height"] {
        assert!(j.get(key).is_some(), "{key} missing in {j}");
    }
}

#[cfg(feature = "ffmpeg")]
#[test]
fn sequential_equals_ffmpeg_cli() {
    let names = [
        "h264_bf.mp4",
        "hevc.mkv",
        "vfr.mp4",
        "cut.mp4",
        "rot90.mp4",
        "bt709.mp4",
        "fullrange.mp4",
        "hevc10.mkv",
        "bframes.avi",
        "raw.h264",
    ];
    for name in names {
        let v = VideoSource::open(&f(name)).unwrap();
        let reference = ffmpeg_frames(&f(name), v.width(), v.height());
        let frames = stream_all(&v, Selection::All, ErrorPolicy::Stop);
        assert_eq!(frames.len(), reference.len(), "{name}");
        for (i, (fr, r)) in frames.into_iter().zip(&reference).enumerate() {
            let fr = fr.unwrap();
            assert_eq!(fr.info.number, i);
            assert_eq!(fr.info.pts, v.pts()[i]);
            assert_eq!((fr.rgb.width, fr.rgb.height), (v.width(), v.height()));
            assert!(
                fr.rgb.data == *r,
                "{name}: frame {i} differs from the ffmpeg CLI"
            );
        }
    }
}

#[cfg(feature = "ffmpeg")]
#[test]
fn seek_equals_sequential() {
    for name in [
        "h264_bf.mp4",
        "hevc.mkv",
        "vfr.mp4",
        "cut.mp4",
        "bframes.avi",
    ] {
        let v = VideoSource::open(&f(name)).unwrap();
        let reference = ffmpeg_frames(&f(name), v.width(), v.height());
        let n = v.frame_count();
        let picks = [
            0,
            1,
            5,
            11,
            12,
            13,
            n / 2,
            n - 1,
            2,
            n - 2,
            19,
            9,
            30 % n,
            31 % n,
        ];
        for k in picks {
            let fr = v.read_frame(k).unwrap();
            assert_eq!(fr.info.number, k);
            assert!(fr.rgb.data == reference[k], "{name}: seek to {k} differs");
        }
        // Backward and forward jumps inside one stream (an explicit list).
        let mut sorted: Vec<usize> = vec![3, 4, 17, 18, 19, 33 % n + 1, n - 1];
        sorted.sort();
        sorted.dedup();
        for fr in stream_all(&v, Selection::List(sorted.clone()), ErrorPolicy::Stop) {
            let fr = fr.unwrap();
            assert!(
                fr.rgb.data == reference[fr.info.number],
                "{name}: list frame differs"
            );
        }
    }
}

#[cfg(feature = "ffmpeg")]
#[test]
fn stride_range_and_list() {
    let v = VideoSource::open(&f("hevc.mkv")).unwrap();
    let reference = ffmpeg_frames(&f("hevc.mkv"), 98, 66);
    let check = |sel: Selection, expect: Vec<usize>| {
        let got = stream_all(&v, sel.clone(), ErrorPolicy::Stop);
        let nums: Vec<usize> = got
            .iter()
            .map(|r| r.as_ref().unwrap().info.number)
            .collect();
        assert_eq!(nums, expect, "{sel:?}");
        for r in got {
            let fr = r.unwrap();
            assert!(fr.rgb.data == reference[fr.info.number]);
            assert_eq!(fr.info, v.frame_info(fr.info.number).unwrap());
        }
    };
    check(
        Selection::Stride {
            start: 1,
            end: None,
            step: 7,
        },
        vec![1, 8, 15, 22, 29, 36],
    );
    check(
        Selection::Range {
            start: 17,
            end: Some(23),
        },
        (17..23).collect(),
    );
    check(
        Selection::Range {
            start: 35,
            end: Some(400),
        },
        (35..40).collect(),
    );
    check(
        Selection::List(vec![0, 9, 10, 25, 39]),
        vec![0, 9, 10, 25, 39],
    );
    // Model images computed on the decoding thread equal the consumer-side conversion.
    let opts = StreamOptions {
        model_rgb: Some(ModelRgb {
            size: 32,
            pre_resize: None,
        }),
        ..Default::default()
    };
    for r in v.frames(Selection::List(vec![2, 30]), opts).unwrap() {
        let fr = r.unwrap();
        assert_eq!(fr.model_rgb, Some(model_input_rgb(&fr.rgb, 32)));
    }
    // A stream dropped half-way stops its thread.
    let mut s = v.frames(Selection::All, StreamOptions::default()).unwrap();
    assert_eq!(s.len(), 40);
    assert!(s.next().unwrap().is_ok());
    drop(s);
    // Bad selections.
    assert!(matches!(
        v.frames(Selection::List(vec![3, 2]), StreamOptions::default()),
        Err(VideoError::InvalidArgument { .. })
    ));
    assert!(matches!(
        v.frames(Selection::List(vec![3, 40]), StreamOptions::default()),
        Err(VideoError::PastEnd {
            frame: 40,
            count: 40,
            ..
        })
    ));
    assert!(matches!(
        v.frames(
            Selection::Stride {
                start: 0,
                end: None,
                step: 0
            },
            StreamOptions::default()
        ),
        Err(VideoError::InvalidArgument { .. })
    ));
}

#[cfg(feature = "ffmpeg")]
#[test]
fn frame_directories_and_images() {
    let video = VideoSource::open(&f("h264_bf.mp4")).unwrap();
    let reference = ffmpeg_frames(&f("h264_bf.mp4"), 96, 64);
    let d = VideoSource::open(&f("frames_png")).unwrap();
    assert_eq!((d.frame_count(), d.width(), d.height()), (12, 96, 64));
    assert_eq!(d.info().source, "frames_dir");
    for r in stream_all(&d, Selection::All, ErrorPolicy::Stop) {
        let fr = r.unwrap();
        assert!(fr.rgb.data == reference[fr.info.number]);
        assert_eq!(fr.info.seconds, fr.info.number as f64 / 30.0);
    }
    assert_eq!(
        d.read_frame(7).unwrap().rgb,
        video.read_frame(7).unwrap().rgb
    );
    let j = VideoSource::open(&f("frames_jpg")).unwrap();
    assert_eq!(j.frame_count(), 12);
    assert_eq!(j.read_frame(11).unwrap().rgb.width, 96);
    let img = VideoSource::open(&f("frames_png/00003.png")).unwrap();
    assert_eq!(
        (img.frame_count(), img.info().source.as_str()),
        (1, "image")
    );
    assert!(img.read_frame(0).unwrap().rgb.data == reference[3]);
    assert!(matches!(
        img.read_frame(1),
        Err(VideoError::PastEnd {
            frame: 1,
            count: 1,
            ..
        })
    ));
}

/// Runs Pillow on raw RGB inputs: each case (w, h, S_w, S_h, data) -> resized bytes.
fn pillow_resize(cases: &[(usize, usize, usize, usize, &[u8])]) -> Vec<Vec<u8>> {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = String::new();
    for (i, (w, h, ow, oh, data)) in cases.iter().enumerate() {
        std::fs::write(dir.path().join(format!("{i}.in")), data).unwrap();
        spec.push_str(&format!("{i} {w} {h} {ow} {oh}\n"));
    }
    std::fs::write(dir.path().join("spec"), spec).unwrap();
    let script = r#"
import sys, os
from PIL import Image
d = sys.argv[1]
for line in open(os.path.join(d, "spec")):
    i, w, h, ow, oh = map(int, line.split())
    img = Image.frombytes("RGB", (w, h), open(os.path.join(d, f"{i}.in"), "rb").read())
    open(os.path.join(d, f"{i}.out"), "wb").write(img.resize((ow, oh)).tobytes())
"#;
    run(Command::new(venv_python())
        .args(["-c", script])
        .arg(dir.path()));
    (0..cases.len())
        .map(|i| std::fs::read(dir.path().join(format!("{i}.out"))).unwrap())
        .collect()
}

fn venv_python() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python")
}

/// Deterministic pseudo-random bytes (noise is the hardest case for rounding).
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 56) as u8
        })
        .collect()
}

fn rgb(w: usize, h: usize, data: Vec<u8>) -> RgbFrame {
    RgbFrame::new(w, h, data).unwrap()
}

#[test]
fn resize_bit_exact_with_pillow() {
    // (w, h, out_w, out_h): SAM 2's 1408 -> 1024, 320x240 -> 256, upscaling, one axis only,
    // odd sizes, extreme ratios.
    let sizes = [
        (1408, 1408, 1024, 1024),
        (320, 240, 256, 256),
        (50, 30, 256, 256),
        (97, 61, 64, 64),
        (64, 48, 64, 100),
        (120, 48, 37, 48),
        (1, 1, 5, 5),
        (300, 7, 16, 16),
    ];
    let mut frames = Vec::new();
    for (k, &(w, h, _, _)) in sizes.iter().enumerate() {
        let mut data = noise(w * h * 3, k as u64 + 1);
        // Half noise, half smooth gradient with hard edges.
        for y in h / 2..h {
            for x in 0..w {
                for c in 0..3 {
                    data[(y * w + x) * 3 + c] = if (x / 7 + y / 5) % 2 == 0 {
                        (x * 255 / w.max(1)) as u8
                    } else {
                        255 - c as u8 * 100
                    };
                }
            }
        }
        frames.push(rgb(w, h, data));
    }
    let cases: Vec<_> = sizes
        .iter()
        .zip(&frames)
        .map(|(&(w, h, ow, oh), fr)| (w, h, ow, oh, fr.data.as_slice()))
        .collect();
    let expected = pillow_resize(&cases);
    for ((&(w, h, ow, oh), fr), e) in sizes.iter().zip(&frames).zip(expected) {
        let got = resize_bicubic(fr, ow, oh);
        assert_eq!((got.width, got.height), (ow, oh));
        let diff = got.data.iter().zip(&e).filter(|(a, b)| a != b).count();
        assert_eq!(
            diff, 0,
            "{w}x{h} -> {ow}x{oh}: {diff} bytes differ from Pillow"
        );
    }
}

#[test]
fn model_input_matches_numpy_and_torch() {
    let (w, h, s) = (320, 240, 256);
    let src = rgb(w, h, noise(w * h * 3, 99));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("in"), &src.data).unwrap();
    // SAM 2's load_video_frames_from_jpg_images, from the PIL image on.
    let script = r#"
import sys, numpy as np, torch
from PIL import Image
d, w, h, s = sys.argv[1], *map(int, sys.argv[2:])
img = Image.frombytes("RGB", (w, h), open(d + "/in", "rb").read())
img_np = np.array(img.resize((s, s))) / 255.0
images = torch.zeros(1, 3, s, s, dtype=torch.float32)
images[0] = torch.from_numpy(img_np).permute(2, 0, 1)
mean = torch.tensor((0.485, 0.456, 0.406), dtype=torch.float32)[:, None, None]
std = torch.tensor((0.229, 0.224, 0.225), dtype=torch.float32)[:, None, None]
images -= mean
images /= std
open(d + "/out", "wb").write(images[0].numpy().tobytes())
"#;
    run(Command::new(venv_python())
        .env("OMP_NUM_THREADS", "1")
        .args(["-c", script])
        .arg(dir.path())
        .args([w.to_string(), h.to_string(), s.to_string()]));
    let expected: Vec<f32> = std::fs::read(dir.path().join("out"))
        .unwrap()
        .chunks(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let got = normalize_chw(&model_input_rgb(&src, s).data);
    assert_eq!(got.len(), 3 * s * s);
    let diff = got
        .iter()
        .zip(&expected)
        .filter(|(a, b)| a.to_bits() != b.to_bits())
        .count();
    assert_eq!(diff, 0, "{diff} values differ from numpy/torch");
    let t = normalize_tensor(&model_rgb_tensor(&model_input_rgb(&src, s)));
    assert_eq!(t.size(), vec![3, s as i64, s as i64]);
}

fn densam(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_densam"))
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .output()
        .unwrap()
}

fn read_png(p: &Path) -> RgbFrame {
    densam::video::read_image(p, None).unwrap()
}

#[cfg(feature = "ffmpeg")]
#[test]
fn extract_matches_ffmpeg_select_and_pillow() {
    let dir = tempfile::tempdir().unwrap();
    let src = f("hevc.mkv");
    let ours = dir.path().join("ours.png");
    let out = densam(&[
        "extract",
        src.to_str().unwrap(),
        "--frame",
        "13",
        "--out",
        ours.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs = dir.path().join("theirs.png");
    ffmpeg(&[
        "-i",
        src.to_str().unwrap(),
        "-vf",
        r"select=eq(n\,13)",
        "-fps_mode",
        "passthrough",
        "-frames:v",
        "1",
        "-pix_fmt",
        "rgb24",
        theirs.to_str().unwrap(),
    ]);
    let a = read_png(&ours);
    assert_eq!(a, read_png(&theirs));
    // The model input, against Pillow.
    let mi = dir.path().join("mi.png");
    let out = densam(&[
        "extract",
        src.to_str().unwrap(),
        "--frame",
        "13",
        "--out",
        mi.to_str().unwrap(),
        "--model-input",
        "--image-size",
        "48",
    ]);
    assert!(out.status.success());
    let m = read_png(&mi);
    assert_eq!((m.width, m.height), (48, 48));
    let expected = pillow_resize(&[(a.width, a.height, 48, 48, &a.data)]);
    assert!(m.data == expected[0]);
    assert_eq!(m, model_input_rgb(&a, 48));
}

fn err_of<T: std::fmt::Debug>(r: Result<T, VideoError>) -> VideoError {
    r.expect_err("expected an error")
}

#[cfg(feature = "ffmpeg")]
#[test]
fn error_paths() {
    let missing = fx().join("missing.mp4");
    assert!(matches!(
        err_of(VideoSource::open(&missing)),
        VideoError::NotFound { .. }
    ));
    assert!(matches!(
        err_of(VideoSource::open(&f("text.mp4"))),
        VideoError::NotAVideo { .. }
    ));
    assert!(matches!(
        err_of(VideoSource::open(&f("no_moov.mp4"))),
        VideoError::NotAVideo { .. }
    ));
    assert!(matches!(
        err_of(VideoSource::open(&f("audio.m4a"))),
        VideoError::NoVideoStream { .. }
    ));
    let e = err_of(VideoSource::open(&f("zero.mkv")));
    assert!(matches!(e, VideoError::NoFrames { .. }), "{e:?}");
    assert!(matches!(
        err_of(VideoSource::open(&f("empty_dir"))),
        VideoError::NoFrames { .. }
    ));
    assert!(matches!(
        err_of(VideoSource::open(&f("bad_names"))),
        VideoError::FrameDir { .. }
    ));
    let v = VideoSource::open(&f("h264_bf.mp4")).unwrap();
    let e = err_of(v.read_frame(40));
    assert!(
        matches!(
            e,
            VideoError::PastEnd {
                frame: 40,
                count: 40,
                ..
            }
        ),
        "{e}"
    );
    // CLI: one line naming the file, non-zero exit, no panic.
    let cases: [(&str, Vec<String>); 7] = [
        (
            "missing.mp4",
            vec!["probe".into(), missing.display().to_string()],
        ),
        (
            "text.mp4",
            vec!["probe".into(), f("text.mp4").display().to_string()],
        ),
        (
            "audio.m4a",
            vec!["probe".into(), f("audio.m4a").display().to_string()],
        ),
        (
            "zero.mkv",
            vec!["probe".into(), f("zero.mkv").display().to_string()],
        ),
        (
            "no_moov.mp4",
            vec!["probe".into(), f("no_moov.mp4").display().to_string()],
        ),
        (
            "h264_bf.mp4",
            [
                "extract",
                f("h264_bf.mp4").to_str().unwrap(),
                "--frame",
                "40",
                "--out",
                "/tmp/x.png",
            ]
            .map(String::from)
            .to_vec(),
        ),
        (
            "truncated.mp4",
            [
                "extract",
                f("truncated.mp4").to_str().unwrap(),
                "--frame",
                "24",
                "--out",
                "/tmp/x.png",
            ]
            .map(String::from)
            .to_vec(),
        ),
    ];
    for (name, args) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = densam(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(name), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

/// File names that are not UTF-8 are opened as they are (FFmpeg's own path conversion panicked
/// on them, exit 101); FIFOs and devices are refused at once (exit 3) instead of blocking or
/// reading forever.
#[cfg(feature = "ffmpeg")]
#[test]
fn non_utf8_names_fifos_and_devices() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let odd = dir
        .path()
        .join(std::ffi::OsStr::from_bytes(b"v\xff\xfe.mp4"));
    std::fs::copy(f("h264_bf.mp4"), &odd).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_densam"))
        .arg("probe")
        .arg(&odd)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["frame_count"], 40);
    let png = dir.path().join(std::ffi::OsStr::from_bytes(b"f\xff.png"));
    let o = Command::new(env!("CARGO_BIN_EXE_densam"))
        .arg("extract")
        .arg(&odd)
        .args(["--frame", "3", "--out"])
        .arg(&png)
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(png.is_file());
    let fifo = dir.path().join("fifo.mp4");
    let c = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
    // SAFETY: creating a FIFO at a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    for (video, cmd) in [
        (fifo.as_path(), "probe"),
        (Path::new("/dev/zero"), "probe"),
        (fifo.as_path(), "extract"),
    ] {
        let mut c = Command::new(env!("CARGO_BIN_EXE_densam"));
        c.arg(cmd).arg(video);
        if cmd == "extract" {
            c.args(["--frame", "0", "--out"])
                .arg(dir.path().join("x.png"));
        }
        let o = c.output().unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(3), "{video:?}: {stderr}");
        assert!(
            stderr.contains("not a regular file or a folder"),
            "{stderr}"
        );
    }
}

#[cfg(feature = "ffmpeg")]
#[test]
fn truncated_and_corrupt_frames_skip_or_stop() {
    // Truncated with the index up front: the frames whose packets are present, the last one
    // partial and reported by number.
    let v = VideoSource::open(&f("truncated.mp4")).unwrap();
    assert!(v.info().demux_error.is_some());
    let n = v.frame_count();
    assert!(n > 10 && n < 40, "{n}");
    let items = stream_all(&v, Selection::All, ErrorPolicy::Skip);
    let errors: Vec<&VideoError> = items.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        !errors.is_empty() && errors.iter().all(|e| e.is_frame_error()),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .all(|e| e.to_string().contains("truncated.mp4"))
    );
    // Every frame comes once, as a frame or as an error naming it.
    let mut numbers: Vec<usize> = items
        .iter()
        .map(|r| match r {
            Ok(fr) => fr.info.number,
            Err(e) => e.frame().unwrap(),
        })
        .collect();
    numbers.sort();
    assert_eq!(numbers, (0..n).collect::<Vec<_>>());

    // Corrupt packet of frame 9 (no B-frames; keyframes at 0, 10, 20).
    let v = VideoSource::open(&f("corrupt.mp4")).unwrap();
    assert_eq!(v.frame_count(), 30);
    let skip = stream_all(&v, Selection::All, ErrorPolicy::Skip);
    let bad: Vec<usize> = skip
        .iter()
        .filter_map(|r| r.as_ref().err())
        .map(|e| e.frame().unwrap())
        .collect();
    assert_eq!(bad, vec![9], "{skip:?}");
    assert_eq!(skip.len(), 30);
    let ok: Vec<usize> = skip
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .map(|fr| fr.info.number)
        .collect();
    assert_eq!(ok.len(), 29);
    assert!(ok.contains(&10) && ok.contains(&29));
    let stop = stream_all(&v, Selection::All, ErrorPolicy::Stop);
    assert_eq!(stop.len(), 10);
    assert!(stop[..9].iter().all(|r| r.is_ok()));
    let e = stop[9].as_ref().unwrap_err();
    assert_eq!(e.frame(), Some(9));
    assert!(
        e.to_string().contains("corrupt.mp4") && e.to_string().contains("frame 9"),
        "{e}"
    );
    // Seeking past the bad frame works; reading it reports it.
    assert!(v.read_frame(15).is_ok());
    assert_eq!(err_of(v.read_frame(9)).frame(), Some(9));
}

#[cfg(feature = "ffmpeg")]
#[test]
fn rgb_coded_files_are_lossless() {
    let frames = VideoSource::open(&f("frames_png")).unwrap();
    for name in ["ffv1_rgb.mkv", "x264rgb.mkv"] {
        let v = VideoSource::open(&f(name)).unwrap();
        assert_eq!(v.frame_count(), 12, "{name}");
        for r in stream_all(&v, Selection::All, ErrorPolicy::Stop) {
            let fr = r.unwrap();
            let png = frames.read_frame(fr.info.number).unwrap();
            assert!(
                fr.rgb == png.rgb,
                "{name}: frame {} is not lossless",
                fr.info.number
            );
        }
    }
}

/// Frame directories need no FFmpeg: PNG frames written here, read back exactly, in the order
/// of their numbers (not of their names as strings).
#[test]
fn frame_directory_without_ffmpeg() {
    let dir = tempfile::tempdir().unwrap();
    let frames: Vec<RgbFrame> = (0..3)
        .map(|k| rgb(5, 4, noise(5 * 4 * 3, k + 10)))
        .collect();
    for (name, fr) in ["2.png", "10.png", "0.png"]
        .iter()
        .zip([&frames[1], &frames[2], &frames[0]])
    {
        fr.save_png(&dir.path().join(name)).unwrap();
    }
    std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
    let v = VideoSource::open(dir.path()).unwrap();
    assert_eq!((v.frame_count(), v.width(), v.height()), (3, 5, 4));
    let got: Vec<RgbFrame> = v
        .frames(Selection::All, StreamOptions::default())
        .unwrap()
        .map(|r| r.unwrap().rgb)
        .collect();
    assert_eq!(got, frames);
    assert_eq!(v.read_frame(2).unwrap().rgb, frames[2]);
    let e = v.read_frame(3).unwrap_err();
    assert!(
        matches!(
            e,
            VideoError::PastEnd {
                frame: 3,
                count: 3,
                ..
            }
        ),
        "{e}"
    );
    #[cfg(not(feature = "ffmpeg"))]
    {
        let mp4 = dir.path().join("x.mp4");
        std::fs::write(&mp4, "x").unwrap();
        assert!(matches!(
            VideoSource::open(&mp4),
            Err(VideoError::NoFfmpeg { .. })
        ));
    }
}

/// A frame folder whose frame declares a huge size is refused from its header, before any
/// decoding: as the first frame (the folder), and as a later frame (that frame, named).
#[test]
fn png_frames_declaring_huge_sizes_are_refused_before_decoding() {
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("first");
    std::fs::create_dir(&first).unwrap();
    std::fs::write(first.join("00000.png"), common::png_declaring(30000, 30000)).unwrap();
    let e = VideoSource::open(&first).unwrap_err().to_string();
    assert!(
        e.contains("00000.png") && e.contains("declares 30000x30000"),
        "{e}"
    );
    let later = dir.path().join("later");
    std::fs::create_dir(&later).unwrap();
    image::GrayImage::new(32, 24)
        .save(later.join("00000.png"))
        .unwrap();
    std::fs::write(later.join("00001.png"), common::png_declaring(30000, 30000)).unwrap();
    let v = VideoSource::open(&later).unwrap();
    assert!(v.read_frame(0).is_ok());
    let e = v.read_frame(1).unwrap_err().to_string();
    assert!(
        e.contains("declares 30000x30000 pixels where 32x24 (the video's) are expected"),
        "{e}"
    );
}
