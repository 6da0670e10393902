#!/usr/bin/env python3
"""SAM 3's tracker: densam against the official predictor, and densam's memory against video length.

Two benchmarks, run by hand (they assert nothing), on the CPU with the seeded random `sam3.pt`
of the SAM 3 tracker oracle (`$DENSAM_ORACLES/sam3/run_tracker.py make-checkpoint`, made once
under --work):

  vs-official  the oracle's clip (JPEG frames 320x240, a box on frame 0), the same weights and
               prompt: the official `Sam3TrackerPredictor` (the oracle's `track`: model build,
               checkpoint load, init_state, forward then reverse propagation) against
               `densam annotate` on the same folder, whole processes, runs alternated A B A B;
               prints wall seconds and peak RSS of each and the ratios densam / official pair by
               pair, whose median is the figure to quote.
  memory       densam alone on a short and a long synthetic video (testsrc2, H.264, --size px,
               --track-stride frames apart, one box): peak RSS long / short, which stays near 1
               when memory does not grow with the video.

    scripts/bench-sam3 vs-official [--frames 8] [--runs 2] [--size 336]
    scripts/bench-sam3 memory [--short-min 2] [--long-min 30] [--track-stride 150] [--size 336]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PYTHON = str(REPO / ".venv/bin/python")


@dataclass
class Measure:
    wall_s: float
    peak_rss_mib: float


def oracles() -> Path:
    env = os.environ.get("DENSAM_ORACLES")
    p = Path(env) if env else REPO.parent / "shared" / "oracles"
    if not (p / "sam3" / "run_tracker.py").is_file():
        sys.exit(f"no SAM 3 tracker oracle under {p} (set DENSAM_ORACLES)")
    return p


def measured(cmd: list[str], env: dict[str, str]) -> Measure:
    """Runs `cmd` to completion; its wall time and peak resident set (from wait4's rusage)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{err[-3000:]}")
    return Measure(wall, usage.ru_maxrss / 1024.0)


def checkpoint(work: Path, threads: int) -> Path:
    ck = work / "sam3_random.pt"
    if not ck.exists():
        work.mkdir(parents=True, exist_ok=True)
        subprocess.run([PYTHON, str(oracles() / "sam3/run_tracker.py"), "make-checkpoint", "--out", str(ck),
                        "--seed", "0", "--threads", str(threads)], check=True, stdout=subprocess.DEVNULL)
    return ck


def thread_env(threads: int) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def vs_official(a: argparse.Namespace) -> int:
    ck = checkpoint(a.work, a.threads)
    clip = a.work / f"clip{a.frames}"
    if not clip.exists():
        subprocess.run([PYTHON, str(oracles() / "sam3/run_tracker.py"), "make-clip", "--out", str(clip),
                        "--frames", str(a.frames)], check=True, stdout=subprocess.DEVNULL)
    prompts = clip / "prompts.json"
    data = json.loads(prompts.read_text())
    one = clip / "prompts-a.json"
    one.write_text(json.dumps({"objects": [o for o in data["objects"] if o["id"] == "a"]}))
    env = thread_env(a.threads)
    official = [PYTHON, str(oracles() / "sam3/run_tracker.py"), "track", "--checkpoint", str(ck),
                "--frames", str(clip), "--prompts", str(one), "--object", "a", "--image-size", str(a.size),
                "--threads", str(a.threads), "--out", str(a.work / "official.json")]
    out = a.work / "out-densam"
    densam = [str(a.densam), "annotate", "--video", str(clip), "--prompts", str(one), "--checkpoint", str(ck),
              "--image-size", str(a.size), "--device", "cpu", "--quiet", "--restart", "--out", str(out)]
    pairs: list[tuple[Measure, Measure]] = []
    for i in range(a.runs):
        o = measured(official, env)
        d = measured(densam, env)
        pairs.append((o, d))
        print(f"run {i}: official {o.wall_s:7.1f} s {o.peak_rss_mib:7.0f} MiB | densam {d.wall_s:7.1f} s "
              f"{d.peak_rss_mib:7.0f} MiB", flush=True)
    med = statistics.median
    wall = [d.wall_s / o.wall_s for o, d in pairs]
    rss = [d.peak_rss_mib / o.peak_rss_mib for o, d in pairs]
    print(f"densam / official ({a.frames} frames at {a.size}, {a.threads} threads): wall "
          f"{', '.join(f'{x:.3f}' for x in wall)} (median {med(wall):.3f}); peak RSS "
          f"{', '.join(f'{x:.3f}' for x in rss)} (median {med(rss):.3f})")
    return 0


def memory(a: argparse.Namespace) -> int:
    ck = checkpoint(a.work, a.threads)
    env = thread_env(a.threads)
    prompts = a.work / "prompts-memory.json"
    prompts.write_text(json.dumps({"objects": [{"id": "o", "prompts": [{"frame": 0, "box": [60, 60, 200, 200]}]}]}))
    result: dict[float, Measure] = {}
    for minutes in (a.short_min, a.long_min):
        video = a.work / f"testsrc2-{minutes}min.mp4"
        if not video.exists():
            subprocess.run(["ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i",
                            f"testsrc2=size={a.video_size}x{a.video_size}:rate=30", "-t", str(int(minutes * 60)),
                            "-c:v", "libx264", "-preset", "veryfast", "-g", "60", "-pix_fmt", "yuv420p", str(video)],
                           check=True)
        out = a.work / f"out-memory-{minutes}"
        shutil.rmtree(out, ignore_errors=True)
        cmd = [str(a.densam), "annotate", "--video", str(video), "--prompts", str(prompts), "--checkpoint", str(ck),
               "--image-size", str(a.size), "--track-stride", str(a.track_stride), "--frame-interval",
               str(a.track_stride), "--device", "cpu", "--quiet", "--out", str(out)]
        m = measured(cmd, env)
        result[minutes] = m
        frames = json.loads((out / "run.json").read_text()).get("processed_frames")
        print(f"{minutes} min: {frames} processed frames, {m.wall_s:.1f} s, peak RSS {m.peak_rss_mib:.0f} MiB",
              flush=True)
    ratio = result[a.long_min].peak_rss_mib / result[a.short_min].peak_rss_mib
    print(f"peak RSS {a.long_min} min / {a.short_min} min at {a.size} px, stride {a.track_stride}: {ratio:.3f}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--densam", type=Path, default=REPO / "target/release/densam")
    ap.add_argument("--threads", type=int, default=2, help="torch/OpenMP threads of both")
    ap.add_argument("--size", type=int, default=336, help="model input size (a multiple of 14)")
    ap.add_argument("--work", type=Path, default=Path(os.environ.get("BENCH_WORK", "/tmp/densam-bench-sam3")))
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("vs-official", help="densam against the official predictor")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--runs", type=int, default=2, help="pairs of runs")
    p = sub.add_parser("memory", help="peak RSS of a long against a short video")
    p.add_argument("--short-min", type=float, default=2.0)
    p.add_argument("--long-min", type=float, default=30.0)
    p.add_argument("--track-stride", type=int, default=150, help="frames between processed frames")
    p.add_argument("--video-size", type=int, default=1408, help="side of the synthetic video")
    a = ap.parse_args()
    return vs_official(a) if a.cmd == "vs-official" else memory(a)


if __name__ == "__main__":
    sys.exit(main())
