//! A bounded-time fuzz of the prompts file parser and its validation against a video (64x48,
//! 50 frames): seeded byte-level mutations (byte flips, inserted JSON tokens and extreme numbers, deletions, duplications,
//! truncations) of valid prompts files in their three forms, and random bytes. For every
//! input: no panic, no single allocation above 16 MiB (the test's allocator refuses it, so a
//! mask decoded from an unchecked size would abort the test), and every error says where: a
//! malformed file names `fuzz.json:line:column`, an unusable prompt names its object (and
//! frame). Also structural mutations of the parsed documents (nodes replaced by extreme
//! values, other types, a mask declaring 200000x200000 pixels whose counts add up to exactly
//! that; nodes removed or duplicated). Deterministic (fixed seed); it stops after
//! `DENSAM_FUZZ_SECONDS` (default 8) or a million inputs.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use densam::mask::Rle;
use densam::prompts::{PromptError, VideoGeometry, parse_prompts_file, validate};

/// The largest single allocation the code under test may make.
const MAX_ALLOC: usize = 16 << 20;

/// The system allocator, refusing (and recording) any single allocation above [`MAX_ALLOC`].
struct Bounded;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

/// Mask prompts refused for declaring a size larger than the video.
static TOO_LARGE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Bounded {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        if layout.size() > MAX_ALLOC {
            return std::ptr::null_mut();
        }
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        if layout.size() > MAX_ALLOC {
            return std::ptr::null_mut();
        }
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        if new_size > MAX_ALLOC {
            return std::ptr::null_mut();
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Bounded = Bounded;

const GEO: VideoGeometry = VideoGeometry {
    num_frames: 50,
    width: 64,
    height: 48,
};

/// xorshift64*: a small deterministic generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Valid prompts files: the three forms, boxes, points, masks in both counts forms.
fn seeds() -> Vec<Vec<u8>> {
    let disc: Vec<u8> = (0..48 * 64i32)
        .map(|i| {
            let (y, x) = (i / 64, i % 64);
            u8::from((x - 20).pow(2) + (y - 24).pow(2) < 81)
        })
        .collect();
    let rle = Rle::encode_row_major(&disc, 48, 64).unwrap();
    let s = rle.to_counts_string();
    let runs: Vec<String> = rle.counts.iter().map(u32::to_string).collect();
    let runs = runs.join(", ");
    let cup = format!(
        r#"{{"id": "cup-1", "label": "cup", "prompts": [
  {{"frame": 12, "box": [10, 10, 40, 30]}},
  {{"frame": 12, "points": [[20, 20], [30, 25.5]], "labels": [1, 0]}},
  {{"frame": 40, "mask": {{"size": [48, 64], "counts": "{s}"}}}}]}}"#
    );
    let seven = format!(
        r#"{{"id": 7, "prompts": [{{"frame": 3, "mask": {{"size": [48, 64], "counts": [{runs}]}}}},
  {{"frame": 49, "box": [-5, -5, 70, 50]}}]}}"#
    );
    vec![
        format!("{{\"objects\": [\n{cup},\n{seven}]}}\n").into_bytes(),
        format!("{}\n{}\n", cup.replace('\n', " "), seven.replace('\n', " ")).into_bytes(),
        format!("[{cup}, {seven}]").into_bytes(),
        format!("\u{feff}{{\"objects\": [{cup}]}}").into_bytes(),
    ]
}

/// Tokens worth inserting: JSON structure, extreme and out-of-range numbers, other types.
const TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    "\"",
    ",",
    ":",
    " ",
    "\n",
    "-",
    "e",
    ".",
    "0",
    "9",
    "null",
    "true",
    "[]",
    "{}",
    "\"x\"",
    "1e400",
    "-1e400",
    "1e308",
    "-1",
    "-0",
    "0.5",
    "4294967295",
    "4294967296",
    "18446744073709551615",
    "18446744073709551616",
    "9223372036854775808",
    "200000",
    "65536",
    "[200000, 200000]",
    "[4294967295, 4294967295]",
    "[0, 4000000000, 4000000000]",
    "\"mask\"",
    "\"box\"",
    "\"points\"",
    "\"labels\"",
    "\"frame\"",
    "\"objects\"",
    "\"id\"",
    "\"size\"",
    "\"counts\"",
    "\u{feff}",
    "\u{0}",
    "\\u0000",
    "\\ud800",
    "o",
    "\u{ff}",
];

/// One mutation of `data`.
fn mutate(rng: &mut Rng, data: &mut Vec<u8>) {
    let n = data.len();
    match rng.below(7) {
        0 if n > 0 => {
            let i = rng.below(n);
            data[i] = rng.next() as u8;
        }
        1 if n > 0 => {
            let i = rng.below(n);
            data[i] ^= 1 << rng.below(8);
        }
        2 => {
            let t = TOKENS[rng.below(TOKENS.len())].as_bytes();
            let i = rng.below(n + 1);
            data.splice(i..i, t.iter().copied());
        }
        3 if n > 0 => {
            let i = rng.below(n);
            let len = 1 + rng.below(16.min(n - i));
            data.drain(i..i + len);
        }
        4 if n > 0 => {
            // Duplicate a range (nesting, repeated entries).
            let i = rng.below(n);
            let len = 1 + rng.below(64.min(n - i));
            let copy: Vec<u8> = data[i..i + len].to_vec();
            let j = rng.below(data.len() + 1);
            data.splice(j..j, copy);
        }
        5 => data.truncate(rng.below(n + 1)),
        _ => {
            // Replace a number with an extreme one.
            let digits: Vec<usize> = (0..n).filter(|&i| data[i].is_ascii_digit()).collect();
            if let Some(&i) = digits.get(rng.below(digits.len())) {
                let end = (i..n).find(|&k| !data[k].is_ascii_digit()).unwrap_or(n);
                let t = [
                    "0",
                    "4294967295",
                    "200000",
                    "1e400",
                    "99999999999999999999",
                    "-7",
                ][rng.below(6)];
                data.splice(i..end, t.bytes());
            }
        }
    }
}

/// Values worth putting anywhere: extreme numbers, other types, a mask declaring 200000x200000
/// pixels whose counts add up to exactly that.
fn values() -> Vec<serde_json::Value> {
    let mut huge_runs = vec![0u64];
    huge_runs.extend([4_000_000_000u64; 10]);
    [
        "0",
        "-1",
        "1.5",
        "4294967295",
        "4294967296",
        "18446744073709551615",
        "1e300",
        "-1e300",
        "9007199254740993",
        "null",
        "true",
        "\"\"",
        "\"x\"",
        "[]",
        "{}",
        "[0, 0]",
        "[200000, 200000]",
        "[48, 64]",
        "[[1, 2], [3]]",
        "[1, 1, 1, 1, 1]",
        "{\"size\": [48, 64], \"counts\": [3072]}",
        "{\"size\": [48, 64], \"counts\": \"\"}",
        "{\"size\": [4294967295, 4294967295], \"counts\": [1]}",
        "{\"frame\": 1, \"box\": [1, 1, 2, 2]}",
        "{\"id\": \"z\", \"prompts\": []}",
    ]
    .iter()
    .map(|t| serde_json::from_str(t).unwrap())
    .chain(std::iter::once(serde_json::json!({
        "size": [200000, 200000], "counts": huge_runs
    })))
    .collect()
}

/// Every node of `v`, as JSON pointers.
fn pointers(v: &serde_json::Value, at: String, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                pointers(x, format!("{at}/{i}"), out);
            }
        }
        serde_json::Value::Object(o) => {
            for (k, x) in o {
                pointers(
                    x,
                    format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")),
                    out,
                );
            }
        }
        _ => {}
    }
    out.push(at);
}

/// One structural mutation of a parsed prompts document: a node replaced by one of
/// [`values`], removed, or duplicated in its array.
fn mutate_value(rng: &mut Rng, v: &mut serde_json::Value, vals: &[serde_json::Value]) {
    let mut ps = Vec::new();
    pointers(v, String::new(), &mut ps);
    let p = ps[rng.below(ps.len())].clone();
    let (parent, last) = p.rsplit_once('/').unwrap_or(("", ""));
    match rng.below(4) {
        0 | 1 => {
            if let Some(x) = v.pointer_mut(&p) {
                *x = vals[rng.below(vals.len())].clone();
            }
        }
        2 => match v.pointer_mut(parent) {
            Some(serde_json::Value::Array(a)) => {
                if let Ok(i) = last.parse::<usize>() {
                    a.remove(i);
                }
            }
            Some(serde_json::Value::Object(o)) => {
                o.remove(&last.replace("~1", "/").replace("~0", "~"));
            }
            _ => {}
        },
        _ => {
            if let Some(serde_json::Value::Array(a)) = v.pointer_mut(parent)
                && let Ok(i) = last.parse::<usize>()
            {
                let x = a[i].clone();
                a.insert(i, x);
            }
        }
    }
}

/// Checks one input; returns what happened, for the summary.
fn check(input: &[u8]) -> &'static str {
    let raw = match parse_prompts_file(Path::new("fuzz.json"), input) {
        Err(e @ PromptError::Syntax { line, .. }) => {
            let msg = e.to_string();
            assert!(
                line >= 1 && msg.starts_with(&format!("fuzz.json:{line}:")),
                "{msg}"
            );
            return "malformed (file:line:column)";
        }
        Err(e @ PromptError::Empty { .. }) => {
            let text = input.strip_prefix(b"\xef\xbb\xbf").unwrap_or(input);
            assert!(text.iter().all(|b| b" \t\n\r".contains(b)), "{e}");
            assert!(e.to_string().starts_with("fuzz.json: "), "{e}");
            return "empty";
        }
        Err(e) => panic!("unexpected parse error kind: {e}"),
        Ok(raw) => raw,
    };
    let was_empty = raw.is_empty();
    match validate(raw.clone(), GEO, true) {
        Ok((_, warnings)) => assert!(
            warnings.iter().all(|w| w.contains("object `")),
            "{warnings:?}"
        ),
        Err(PromptError::Strict(msg)) => assert!(msg.contains("object `"), "{msg}"),
        Err(PromptError::NoObjects) => assert!(was_empty),
        Err(e) => panic!("unexpected strict validation error: {e}"),
    }
    match validate(raw, GEO, false) {
        Ok((set, warnings)) => {
            let large = warnings
                .iter()
                .filter(|w| w.contains("larger than the video"));
            TOO_LARGE.fetch_add(large.count(), Ordering::Relaxed);
            assert!(
                warnings.iter().all(|w| w.contains("object `")),
                "{warnings:?}"
            );
            for o in &set.objects {
                for (f, p) in &o.frames {
                    assert!(f.get() < GEO.num_frames);
                    assert_eq!(p.points.len(), p.labels.len());
                    if let Some(m) = &p.mask {
                        assert!(m.height <= 48 && m.width <= 64 && m.area() > 0);
                        assert_eq!(m.data.len(), m.height * m.width);
                    }
                }
            }
            "valid"
        }
        Err(PromptError::NothingUsable(n)) => {
            assert!(n > 0);
            "nothing usable"
        }
        Err(PromptError::NoObjects) => "no objects",
        Err(e) => panic!("unexpected validation error: {e}"),
    }
}

#[test]
fn mutated_prompts_files_never_panic_and_errors_say_where() {
    let budget = std::env::var("DENSAM_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8.0);
    let deadline = Instant::now() + Duration::from_secs_f64(budget);
    let seeds = seeds();
    for s in &seeds {
        assert_eq!(check(s), "valid", "{}", String::from_utf8_lossy(s));
    }
    let docs: Vec<serde_json::Value> = [&seeds[0], &seeds[2]]
        .iter()
        .map(|s| serde_json::from_slice(s).unwrap())
        .collect();
    let vals = values();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
    let mut n = 0usize;
    while n < 1_000_000 && Instant::now() < deadline {
        let input = if rng.below(20) == 0 {
            (0..rng.below(200)).map(|_| rng.next() as u8).collect()
        } else if rng.below(2) == 0 {
            // Well-formed JSON of the wrong shape or with extreme values, sometimes then
            // damaged too.
            let mut v = docs[rng.below(docs.len())].clone();
            for _ in 0..1 + rng.below(4) {
                mutate_value(&mut rng, &mut v, &vals);
            }
            let mut d = if rng.below(2) == 0 {
                serde_json::to_vec_pretty(&v).unwrap()
            } else {
                serde_json::to_vec(&v).unwrap()
            };
            if rng.below(4) == 0 {
                mutate(&mut rng, &mut d);
            }
            d
        } else {
            let mut d = seeds[rng.below(seeds.len())].clone();
            for _ in 0..1 + rng.below(6) {
                mutate(&mut rng, &mut d);
            }
            d
        };
        let outcome = std::panic::catch_unwind(|| check(&input)).unwrap_or_else(|_| {
            panic!(
                "input {n} failed: {:?}",
                String::from_utf8_lossy(&input).into_owned()
            )
        });
        *counts.entry(outcome).or_default() += 1;
        n += 1;
    }
    let largest = LARGEST.load(Ordering::Relaxed);
    eprintln!(
        "{n} inputs: {counts:?}; {} mask(s) larger than the video refused; largest allocation \
         {largest} bytes",
        TOO_LARGE.load(Ordering::Relaxed)
    );
    assert!(n >= 1000, "only {n} inputs in the time budget");
    // Every kind of outcome was reached, so the mutations do exercise validation.
    for k in ["malformed (file:line:column)", "valid", "nothing usable"] {
        assert!(counts.contains_key(k), "no {k:?} among {counts:?}");
    }
    assert!(
        TOO_LARGE.load(Ordering::Relaxed) > 0,
        "no mask larger than the video"
    );
}
