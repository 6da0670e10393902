#!/usr/bin/env python3
"""Cost of a memory policy against `sam2`, per tracked object-frame, on the CPU.

Runs `densam annotate --profile` on one generated clip (a 1408x1408 30 fps H.264 test pattern,
several box-prompted objects, SAM 2.1 tiny random weights) under each policy in turn, A B A B ...,
and prints per run the seconds of tracking (memory attention, mask decoder, memory encoder and the
step's bookkeeping, where the policies' selection and retention run) per tracked object-frame and
the whole run's wall seconds; then the medians and the ratios policy / sam2 of each pair, whose
median is the figure to quote (the machines are shared and noisy). A benchmark, run by hand: it
asserts nothing.

    scripts/bench-policy [--policy sam3] [--runs 3] [--seconds 10] [--objects 4] [--size 256]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TRACKING = ("memory_attention", "mask_decoder", "memory_encoder", "step_post")


@dataclass
class Run:
    policy: str
    tracking_s: float
    wall_s: float
    object_frames: int

    @property
    def per_object_frame_ms(self) -> float:
        return 1000.0 * self.tracking_s / max(self.object_frames, 1)


def make_inputs(work: Path, seconds: int, objects: int, size: int, python: str) -> tuple[Path, Path, Path]:
    work.mkdir(parents=True, exist_ok=True)
    ckpt = work / f"ckpt-{size}" / "model.pt"
    if not ckpt.exists():
        subprocess.run(
            [python, str(REPO / "tools/parity/make_checkpoint.py"), "--size", "tiny", "--version", "2.1",
             "--image-size", str(size), "--seed", "0", "--out", str(ckpt.parent)],
            check=True, stdout=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
    video = work / f"testsrc2-{seconds}s.mp4"
    if not video.exists():
        subprocess.run(
            ["ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=1408x1408:rate=30",
             "-t", str(seconds), "-c:v", "libx264", "-preset", "veryfast", "-g", "60", "-pix_fmt",
             "yuv420p", str(video)],
            check=True,
        )
    boxes = [[100, 100, 400, 400], [700, 200, 1000, 600], [200, 900, 500, 1300], [900, 900, 1300, 1300],
             [500, 500, 900, 900], [300, 600, 700, 1000]]
    prompts = {"objects": [
        {"id": f"o{i}", "label": "x", "prompts": [{"frame": 0, "box": boxes[i % len(boxes)]}]}
        for i in range(objects)
    ]}
    pfile = work / f"prompts-{objects}.json"
    pfile.write_text(json.dumps(prompts))
    return ckpt, video, pfile


def run_once(densam: Path, policy: str, ckpt: Path, video: Path, prompts: Path, out: Path, size: int,
             threads: int) -> Run:
    subprocess.run(["rm", "-rf", str(out)], check=True)
    cmd = [str(densam), "annotate", "--video", str(video), "--prompts", str(prompts), "--checkpoint",
           str(ckpt), "--out", str(out), "--image-size", str(size), "--device", "cpu",
           "--memory-policy", policy, "--quiet", "--profile"]
    subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    manifest = json.loads((out / "run.json").read_text())
    this = manifest["this_run"]
    stages = this.get("stage_seconds") or {}
    n_obj = len(json.loads(prompts.read_text())["objects"])
    return Run(
        policy=policy,
        tracking_s=sum(stages.get(k, 0.0) for k in TRACKING),
        wall_s=this["wall_seconds"],
        object_frames=n_obj * max(manifest["processed_frames"] - 1, 1),
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--densam", type=Path, default=REPO / "target/release/densam")
    ap.add_argument("--policy", default="sam3", help="the policy compared with sam2")
    ap.add_argument("--runs", type=int, default=3, help="pairs of runs")
    ap.add_argument("--seconds", type=int, default=10, help="clip length")
    ap.add_argument("--objects", type=int, default=4)
    ap.add_argument("--size", type=int, default=256, help="--image-size")
    ap.add_argument("--threads", type=int, default=2, help="torch/OpenMP threads")
    ap.add_argument("--work", type=Path, default=Path(os.environ.get("BENCH_WORK", "/tmp/densam-bench-policy")))
    a = ap.parse_args()
    python = str(REPO / ".venv/bin/python")
    ckpt, video, prompts = make_inputs(a.work, a.seconds, a.objects, a.size, python)
    pairs: list[tuple[Run, Run]] = []
    for i in range(a.runs):
        base = run_once(a.densam, "sam2", ckpt, video, prompts, a.work / "out-sam2", a.size, a.threads)
        other = run_once(a.densam, a.policy, ckpt, video, prompts, a.work / "out-policy", a.size, a.threads)
        pairs.append((base, other))
        for r in (base, other):
            print(f"run {i}: {r.policy:<24} tracking {r.tracking_s:7.2f} s = {r.per_object_frame_ms:6.2f} ms "
                  f"per object-frame ({r.object_frames}); wall {r.wall_s:7.2f} s", flush=True)
    med = statistics.median
    track = [o.per_object_frame_ms / b.per_object_frame_ms for b, o in pairs]
    wall = [o.wall_s / b.wall_s for b, o in pairs]
    print(f"median tracking per object-frame: sam2 {med(b.per_object_frame_ms for b, _ in pairs):.2f} ms, "
          f"{a.policy} {med(o.per_object_frame_ms for _, o in pairs):.2f} ms")
    print(f"{a.policy} / sam2, pair by pair: tracking {', '.join(f'{x:.3f}' for x in track)} "
          f"(median {med(track):.3f}); wall {', '.join(f'{x:.3f}' for x in wall)} (median {med(wall):.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
