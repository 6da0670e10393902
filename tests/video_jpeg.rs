//! Image frames decode to exactly the pixels of SAM 2's loader, `PIL.Image.open(p).convert("RGB")`:
//! JPEGs written by the venv's Pillow (baseline, progressive, optimised, restart markers, 4:4:4 /
//! 4:2:2 / 4:2:0, kept RGB, grayscale, CMYK, EXIF orientation, odd sizes from 1x1 up to 1408²,
//! qualities 50-100), JPEGs written by the `ffmpeg` CLI as SAM 2's README tells users to (when
//! it is installed), and PNGs of every colour type and bit depth, each compared byte for byte
//! with Pillow's decode; frame directories through `VideoSource`; truncated and corrupt JPEGs
//! fail (as in Pillow) or decode (as in Pillow) without a panic.

use std::path::{Path, PathBuf};
use std::process::Command;

use densam::video::{ErrorPolicy, Selection, StreamOptions, VideoError, VideoSource, read_image};

fn venv_python() -> PathBuf {
    match std::env::var_os("DENSAM_VENV_PYTHON") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"),
    }
}

/// Writes the test images into `dir` with Pillow, each with Pillow's decode next to it
/// (`<name>.rgb`, packed RGB24), and a manifest of lines `file width height` (`ERR` for the
/// files Pillow refuses to decode).
const GENERATE: &str = r#"
import io, os, shutil, subprocess, sys, zlib, struct
import numpy as np
from PIL import Image

out = sys.argv[1]
manifest = []

def content(w, h, seed, noise=25):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([127 + 100 * np.sin(x / 7.0 + seed), 127 + 100 * np.cos(y / 5.0),
                    (3 * x + 2 * y + 40 * seed) % 256], -1)
    img = img + rng.normal(0, noise, (h, w, 3))
    img[h // 4: h // 2, w // 4: w // 2] = [255, 0, 40]  # saturated block: chroma edges
    return np.clip(img, 0, 255).astype(np.uint8)

def record(path):
    name = os.path.basename(path)
    try:
        im = Image.open(path).convert("RGB")
    except Exception:
        manifest.append(f"{name} ERR")
        return
    open(path + ".rgb", "wb").write(im.tobytes())
    manifest.append(f"{name} {im.width} {im.height}")

def save(name, im, **kw):
    path = os.path.join(out, name)
    im.save(path, "JPEG", **kw)
    record(path)

n = 0
for (w, h) in [(256, 256), (1, 1), (7, 5), (17, 33), (250, 257), (63, 64), (320, 240)]:
    for q in (50, 75, 95, 100):
        for sub in (0, 1, 2):
            for prog in (False, True):
                n += 1
                # Pillow's output buffer for progressive files holds 2 bytes a pixel: less noise
                # at quality 100.
                im = Image.fromarray(content(w, h, n, noise=8 if prog and q == 100 else 25))
                save(f"rgb_{w}x{h}_q{q}_s{sub}_p{int(prog)}.jpg", im, quality=q, subsampling=sub,
                     progressive=prog)
big = Image.fromarray(content(1408, 1408, 0))
save("rgb_1408_q95.jpg", big, quality=95)
save("rgb_1408_q80_prog.jpg", big, quality=80, progressive=True)
im = Image.fromarray(content(97, 61, 3))
save("optimize.jpg", im, quality=85, optimize=True)
save("restart_blocks.jpg", im, quality=85, restart_marker_blocks=3)
save("restart_rows_prog.jpg", im, quality=85, restart_marker_rows=1, progressive=True)
save("keep_rgb.jpg", im, quality=90, keep_rgb=True)
exif = Image.Exif()
exif[0x0112] = 6  # orientation: rotate 90 (SAM 2's loader ignores it)
save("exif_orientation_6.jpg", im, quality=90, exif=exif)
for prog in (False, True):
    save(f"gray_p{int(prog)}.jpg", im.convert("L"), quality=90, progressive=prog)
    save(f"cmyk_p{int(prog)}.jpg", im.convert("CMYK"), quality=90, progressive=prog)
save("gray_1x1.jpg", Image.new("L", (1, 1), 77), quality=90)
save("gray_31x9.jpg", Image.fromarray(content(31, 9, 5)).convert("L"), quality=60)

# Damaged files: cut short (Pillow: "image file is truncated"), junk before a marker (libjpeg
# warns, Pillow decodes), junk after the end (ignored), a size over Pillow's pixel limit.
buf = io.BytesIO(); im.save(buf, "JPEG", quality=90); clean = buf.getvalue()
buf = io.BytesIO(); im.save(buf, "JPEG", quality=90, progressive=True); clean_p = buf.getvalue()
sof = clean.index(b"\xff\xc0")
bomb = clean[: sof + 5] + struct.pack(">HH", 20000, 20000) + clean[sof + 9:]
for name, data in [("bad_truncated.jpg", clean[: len(clean) // 2]),
                   ("bad_no_eoi.jpg", clean[:-2]),
                   ("bad_truncated_prog.jpg", clean_p[: len(clean_p) // 2]),
                   ("bad_junk_before_eoi.jpg", clean[:-2] + b"\x00\x00\xff\xd9"),
                   ("bad_trailing_junk.jpg", clean + b"trailing bytes"),
                   ("bad_only_soi.jpg", b"\xff\xd8"),
                   ("bad_bomb_20000x20000.jpg", bomb)]:
    path = os.path.join(out, name)
    open(path, "wb").write(data)
    record(path)

# What SAM 2's README tells users to run to make a frame folder.
if shutil.which("ffmpeg"):
    for size in ("96:64", "101:75"):
        for pix in ("yuvj420p", "yuvj422p", "yuvj444p"):
            name = f"ffmpeg_{size.replace(':', 'x')}_{pix}.jpg"
            r = subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", "-f", "lavfi", "-i",
                                "testsrc2=size=128x96:rate=1", "-frames:v", "1", "-vf",
                                f"scale={size}", "-pix_fmt", pix, "-q:v", "2",
                                os.path.join(out, name)])
            if r.returncode == 0:
                record(os.path.join(out, name))

# PNGs of every colour type and depth.
rng = np.random.default_rng(7)
W, H = 37, 23
rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
pngs = {
    "png_rgb": Image.fromarray(rgb),
    "png_rgba": Image.fromarray(rng.integers(0, 256, (H, W, 4), dtype=np.uint8), "RGBA"),
    "png_l": Image.fromarray(rng.integers(0, 256, (H, W), dtype=np.uint8)),
    "png_la": Image.fromarray(rng.integers(0, 256, (H, W, 2), dtype=np.uint8), "LA"),
    "png_p": Image.fromarray(rgb).quantize(50),
    "png_1": Image.fromarray(rng.integers(0, 2, (H, W), dtype=np.uint8) * 255).convert("1"),
    "png_i16": Image.fromarray(rng.integers(0, 65536, (H, W), dtype=np.uint16)),
}
pngs["png_p_trns"] = pngs["png_p"].copy()
pngs["png_p_trns"].info["transparency"] = 3
for name, im in pngs.items():
    im.save(os.path.join(out, name + ".png"))
    record(os.path.join(out, name + ".png"))

def png16(path, arr):
    h, w, c = arr.shape
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))
    def chunk(t, data):
        return struct.pack(">I", len(data)) + t + data + struct.pack(">I", zlib.crc32(t + data))
    ihdr = struct.pack(">IIBBBBB", w, h, 16, {2: 4, 3: 2, 4: 6}[c], 0, 0, 0)
    open(path, "wb").write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) +
                           chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
for c, name in [(2, "png_la16"), (3, "png_rgb16"), (4, "png_rgba16")]:
    path = os.path.join(out, name + ".png")
    png16(path, rng.integers(0, 65536, (H, W, c), dtype=np.uint16))
    record(path)

# A frame directory of same-size JPEGs, named as SAM 2 names them.
frames = os.path.join(out, "frames")
os.makedirs(frames)
for i in range(5):
    p = os.path.join(frames, f"{i:05d}.jpg")
    Image.fromarray(content(250, 257, 100 + i)).save(p, "JPEG", quality=90,
                                                     progressive=(i % 2 == 1))
    open(os.path.join(out, f"frame{i}.rgb"), "wb").write(Image.open(p).convert("RGB").tobytes())

open(os.path.join(out, "manifest"), "w").write("\n".join(manifest) + "\n")
"#;

/// The generated images, generated once per test process.
fn fixtures() -> &'static Path {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(venv_python())
            .args(["-c", GENERATE])
            .arg(dir.path())
            .env("OMP_NUM_THREADS", "1")
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", venv_python().display()));
        assert!(
            out.status.success(),
            "fixture generation failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    })
    .path()
}

/// Manifest entries: (file name, Some((w, h)) or None where Pillow fails).
fn manifest() -> Vec<(String, Option<(usize, usize)>)> {
    std::fs::read_to_string(fixtures().join("manifest"))
        .unwrap()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let size = (f[1] != "ERR").then(|| (f[1].parse().unwrap(), f[2].parse().unwrap()));
            (f[0].to_string(), size)
        })
        .collect()
}

/// Checks every manifest file whose name passes `pick`; returns how many were checked.
fn check_against_pillow(pick: impl Fn(&str) -> bool) -> usize {
    let mut failures = Vec::new();
    let mut checked = 0;
    for (name, size) in manifest().into_iter().filter(|(n, _)| pick(n)) {
        checked += 1;
        let path = fixtures().join(&name);
        let got = read_image(&path, None);
        match (size, got) {
            (Some((w, h)), Ok(frame)) => {
                let want = std::fs::read(fixtures().join(format!("{name}.rgb"))).unwrap();
                if (frame.width, frame.height) != (w, h) {
                    failures.push(format!(
                        "{name}: {}x{}, Pillow {w}x{h}",
                        frame.width, frame.height
                    ));
                } else if frame.data != want {
                    let differ = frame
                        .data
                        .chunks(3)
                        .zip(want.chunks(3))
                        .filter(|(a, b)| a != b)
                        .count();
                    let max = frame
                        .data
                        .iter()
                        .zip(&want)
                        .map(|(&a, &b)| a.abs_diff(b))
                        .max()
                        .unwrap_or(0);
                    failures.push(format!(
                        "{name}: {differ} of {} pixels differ from Pillow (max |d| {max})",
                        w * h
                    ));
                }
            }
            (None, Ok(_)) => failures.push(format!("{name}: decoded, but Pillow fails")),
            (Some(_), Err(e)) => failures.push(format!("{name}: {e}, but Pillow decodes")),
            (None, Err(e)) => assert!(matches!(e, VideoError::Image { .. }), "{name}: {e}"),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    checked
}

#[test]
fn jpeg_bit_exact_with_pillow() {
    let n = check_against_pillow(|n| n.ends_with(".jpg") && !n.starts_with("bad_"));
    assert!(n >= 180, "only {n} JPEGs checked");
}

#[test]
fn png_bit_exact_with_pillow() {
    let n = check_against_pillow(|n| n.ends_with(".png"));
    assert_eq!(n, 11);
}

#[test]
fn damaged_jpegs_fail_or_decode_as_in_pillow() {
    let n = check_against_pillow(|n| n.starts_with("bad_"));
    assert_eq!(n, 7);
    // The ones Pillow refuses are errors that name the file, not panics.
    let e = read_image(&fixtures().join("bad_truncated.jpg"), None).unwrap_err();
    assert!(e.to_string().contains("bad_truncated.jpg"), "{e}");
    assert!(e.to_string().contains("truncated"), "{e}");
}

#[test]
fn jpeg_frame_directory_through_video_source() {
    let video = VideoSource::open(&fixtures().join("frames")).unwrap();
    assert_eq!(
        (video.frame_count(), video.width(), video.height()),
        (5, 250, 257)
    );
    let mut seen = 0;
    for f in video
        .frames(Selection::All, StreamOptions::default())
        .unwrap()
    {
        let f = f.unwrap();
        let want = std::fs::read(fixtures().join(format!("frame{}.rgb", f.info.number))).unwrap();
        assert!(f.rgb.data == want, "frame {} differs", f.info.number);
        seen += 1;
    }
    assert_eq!(seen, 5);
    let want = std::fs::read(fixtures().join("frame3.rgb")).unwrap();
    assert!(video.read_frame(3).unwrap().rgb.data == want);
    // A truncated frame is a frame error that a stream may skip.
    let dir = tempfile::tempdir().unwrap();
    for i in 0..3 {
        std::fs::copy(
            fixtures().join(format!("frames/{i:05}.jpg")),
            dir.path().join(format!("{i:05}.jpg")),
        )
        .unwrap();
    }
    let bytes = std::fs::read(dir.path().join("00001.jpg")).unwrap();
    std::fs::write(dir.path().join("00001.jpg"), &bytes[..bytes.len() / 2]).unwrap();
    let video = VideoSource::open(dir.path()).unwrap();
    let options = StreamOptions {
        on_error: ErrorPolicy::Skip,
        ..Default::default()
    };
    let results: Vec<_> = video.frames(Selection::All, options).unwrap().collect();
    assert_eq!(results.len(), 3);
    assert!(results[0].is_ok() && results[2].is_ok());
    assert!(matches!(
        results[1],
        Err(VideoError::CorruptFrame { frame: 1, .. })
    ));
}

/// Decode speed of a 1408² q95 4:2:0 JPEG (SAM 2's frame size for 1024 inputs is irrelevant
/// here; 1408² is the team's benchmark size): densam's libjpeg-turbo path against the `image`
/// crate's JPEG decoder that it replaced, in the same process. Run by hand:
/// `cargo test --release --test video_jpeg -- --ignored --nocapture decode_speed`.
#[test]
#[ignore]
fn decode_speed_1408() {
    let path = fixtures().join("rgb_1408_q95.jpg");
    let bytes = std::fs::read(&path).unwrap();
    let reps = 20;
    let best = |f: &dyn Fn()| {
        (0..reps)
            .map(|_| {
                let t = std::time::Instant::now();
                f();
                t.elapsed().as_secs_f64() * 1000.0
            })
            .fold(f64::INFINITY, f64::min)
    };
    let turbo = best(&|| {
        std::hint::black_box(read_image(&path, None).unwrap());
    });
    let image_crate = best(&|| {
        std::hint::black_box(image::load_from_memory(&bytes).unwrap().into_rgb8());
    });
    println!(
        "1408x1408 q95 4:2:0 JPEG, best of {reps}: densam (libjpeg-turbo, incl. file read) \
         {turbo:.2} ms, image crate {image_crate:.2} ms"
    );
}
