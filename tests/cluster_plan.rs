//! `densam plan` through the binary: the task list of frame directories (whole videos, split
//! into windows, split only above a duration), its window bounds equal to the job module's
//! `WindowRange`, prompts found per video, HD-EPIC video ids, and the error paths (missing
//! videos, missing prompts, duplicate ids, a folder without videos) with exit code 3.
//! No model, no FFmpeg: frame directories only.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn frames(dir: &Path, n: u32) {
    std::fs::create_dir_all(dir).unwrap();
    for t in 0..n {
        let img = image::RgbImage::from_fn(32, 24, |x, y| {
            image::Rgb([(x * 8) as u8, (y * 8) as u8, t as u8])
        });
        img.save(dir.join(format!("{t:05}.png"))).unwrap();
    }
}

fn plan(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_densam"))
        .arg("plan")
        .args(args)
        .output()
        .unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The task lines, split into columns.
fn tasks(path: &Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split('\t').map(String::from).collect())
        .collect()
}

struct Videos {
    _dir: tempfile::TempDir,
    root: PathBuf,
    long: PathBuf,
    short: PathBuf,
}

/// Two frame directories at 30 fps: `long` (25 frames), `short` (12 frames).
fn videos() -> Videos {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let long = root.join("long");
    let short = root.join("short");
    frames(&long, 25);
    frames(&short, 12);
    Videos {
        _dir: dir,
        root,
        long,
        short,
    }
}

#[test]
fn windows_match_the_job_window_arithmetic() {
    let v = videos();
    let list = v.root.join("plan/tasks.tsv");
    let prompts = v.root.join("prompts");
    std::fs::create_dir_all(&prompts).unwrap();
    std::fs::write(prompts.join("long.json"), "{\"objects\": []}").unwrap();
    std::fs::write(prompts.join("short.jsonl"), "").unwrap();
    let o = plan(&[
        s(&v.long),
        s(&v.short),
        "--frame-dirs",
        "--split-windows",
        "--window-duration",
        "0.5",
        "--window-overlap",
        "0.2",
        "--prompts-dir",
        s(&prompts),
        "--out",
        s(&list),
        "--out-root",
        "/results",
        "--max-running",
        "3",
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let t = tasks(&list);
    assert_eq!(t.len(), 3, "{t:?}");
    assert!(
        t.iter()
            .all(|c| c.len() == densam::cluster::plan::COLUMNS.len())
    );
    // 30 fps, 0.5 s windows: 15 frames; long = windows 0..15, 15..25; short = 0..12.
    let (wf, of) = densam::job::window::window_frames(0.5, 0.2, 30.0);
    assert_eq!((wf, of), (15, 6));
    for (i, (id, k, n)) in [("long", 0, 25), ("long", 1, 25), ("short", 0, 12)]
        .into_iter()
        .enumerate()
    {
        let c = &t[i];
        let w = densam::job::window::WindowRange::new(k, wf, of, n, 1).unwrap();
        assert_eq!(c[0], i.to_string());
        assert_eq!(c[1], id);
        assert_eq!(c[3], k.to_string());
        assert_eq!(c[4], densam::job::window::window_count(n, wf).to_string());
        assert_eq!(c[5], n.to_string());
        assert_eq!(
            (c[8].parse::<u64>().unwrap(), c[9].parse::<u64>().unwrap()),
            (w.own_from, w.end)
        );
        assert_eq!((c[10].as_str(), c[11].as_str()), ("0.5", "0.2"));
        assert_eq!(c[13], format!("{id}/window-{k}"));
    }
    assert!(t[0][12].ends_with("prompts/long.json"), "{}", t[0][12]);
    assert!(t[2][12].ends_with("prompts/short.jsonl"), "{}", t[2][12]);
    assert!(stdout.contains("--array=0-2%3"), "{stdout}");
    assert!(stdout.contains("merge.sbatch"), "{stdout}");
    assert!(v.root.join("plan/logs").is_dir());

    // Whole videos, and splitting only the videos longer than 0.5 s.
    let o = plan(&[s(&v.long), s(&v.short), "--frame-dirs", "--out", s(&list)]);
    assert_eq!(o.status.code(), Some(0));
    let t = tasks(&list);
    assert_eq!(t.len(), 2);
    assert_eq!(
        (t[0][3].as_str(), t[0][9].as_str(), t[0][13].as_str()),
        ("-", "25", "long")
    );
    assert_eq!(t[0][12], "-");
    let o = plan(&[
        s(&v.long),
        s(&v.short),
        "--frame-dirs",
        "--split-longer-than",
        "0.5",
        "--window-duration",
        "0.5",
        "--out",
        s(&list),
    ]);
    assert_eq!(o.status.code(), Some(0));
    let t = tasks(&list);
    let kinds: Vec<(&str, &str)> = t.iter().map(|c| (c[1].as_str(), c[3].as_str())).collect();
    assert_eq!(kinds, [("long", "0"), ("long", "1"), ("short", "-")]);
}

#[test]
fn hd_epic_ids_list_files_and_errors() {
    let v = videos();
    let list = v.root.join("tasks.tsv");
    // HD-EPIC: ids from assoc_info.json, videos at ROOT/P0x/<id>.mp4; both missing here.
    let assoc = v.root.join("assoc_info.json");
    std::fs::write(
        &assoc,
        r#"{"P02-20240101-000000": {}, "P01-20240202-171220": {}}"#,
    )
    .unwrap();
    let o = plan(&[
        "--hd-epic-assoc",
        s(&assoc),
        "--videos-root",
        s(&v.root.join("videos")),
        "--out",
        s(&list),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains("2 problem(s)"), "{err}");
    assert!(err.contains("videos/P01/P01-20240202-171220.mp4"), "{err}");
    assert!(!list.exists());
    // An assoc file that is not an object keyed by video id: the file, line and column.
    std::fs::write(&assoc, "{\"P01-20240202-171220\": {},\n [1]}").unwrap();
    let o = plan(&[
        "--hd-epic-assoc",
        s(&assoc),
        "--videos-root",
        s(&v.root.join("videos")),
        "--out",
        s(&list),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains("assoc_info.json:2:"), "{err}");
    assert!(!list.exists());
    // Video ids that are paths (the keys of assoc_info): refused as annotate refuses them.
    for bad in ["../evil", "..", "-x", "a\\b", "a\nb", ""] {
        let key = serde_json::to_string(bad).unwrap();
        std::fs::write(&assoc, format!("{{{key}: {{}}}}")).unwrap();
        let o = plan(&[
            "--hd-epic-assoc",
            s(&assoc),
            "--videos-root",
            s(&v.root.join("videos")),
            "--out",
            s(&list),
        ]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(3), "{bad:?}: {err}");
        assert!(err.contains("cannot name a file"), "{bad:?}: {err}");
        assert!(!list.exists());
    }

    // A list file (relative paths from its folder, optional prompts column).
    let lf = v.root.join("videos.txt");
    std::fs::write(&lf, "# videos\nlong\tp.json\n\nshort\n").unwrap();
    let o = plan(&["--list", s(&lf), "--out", s(&list)]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let t = tasks(&list);
    assert_eq!(t.len(), 2);
    assert!(t[0][12].ends_with("p.json"));
    assert_eq!(t[1][12], "-");

    // The same id twice.
    let lf2 = v.root.join("dup.txt");
    std::fs::create_dir_all(v.root.join("other")).unwrap();
    std::fs::rename(v.root.join("short"), v.root.join("other/long")).unwrap();
    std::fs::write(&lf2, "long\nother/long\n").unwrap();
    let o = plan(&["--list", s(&lf2), "--out", s(&list)]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains("two videos have the id `long`"), "{err}");

    // A folder without video files (frame directories need --frame-dirs).
    let o = plan(&[s(&v.long), "--out", s(&list)]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains("--frame-dirs"), "{err}");

    // Missing prompts under --prompts-dir.
    let o = plan(&[
        s(&v.long),
        "--frame-dirs",
        "--prompts-dir",
        s(&v.root),
        "--out",
        s(&list),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains("no prompts for video `long`"), "{err}");
}

/// A video whose name is not UTF-8: no panic, and no task line naming another file (written
/// lossily, the path would): refused, exit 3.
#[test]
fn a_path_that_is_not_utf8_is_refused_not_mangled() {
    use std::os::unix::ffi::OsStrExt;
    let v = videos();
    let odd = v.root.join(std::ffi::OsStr::from_bytes(b"sh\xffort"));
    std::fs::rename(&v.short, &odd).unwrap();
    let list = v.root.join("tasks.tsv");
    let o = Command::new(env!("CARGO_BIN_EXE_densam"))
        .arg("plan")
        .arg(&odd)
        .args(["--frame-dirs", "--out"])
        .arg(&list)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains("is not UTF-8"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(!list.exists());
}
