#!/usr/bin/env python3
"""`densam review` at HD-EPIC's scale: peak RSS and time on a synthetic 90-minute result.

Writes (once, under --work) a result JSONL of --minutes of video at 30 fps, 1408x1408, with
--objects rectangular masks moving on every written frame (a few vanishing for a second now and
then, so that flags are found), then runs `densam review` on it and prints its wall seconds, its
peak resident set (wait4's rusage) and the flags found. A benchmark, run by hand: it asserts
nothing.

    scripts/bench-review [--minutes 90] [--objects 45] [--frame-interval 1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SIDE = 1408
FPS = 30


def rle_string(counts: list[int]) -> str:
    """COCO's compressed RLE string of `counts` (pycocotools' rleToString)."""
    out = []
    for i, c in enumerate(counts):
        x = c
        if i > 2:
            x -= counts[i - 2]
        more = True
        while more:
            ch = x & 0x1F
            x >>= 5
            more = (x != -1) if (ch & 0x10) else (x != 0)
            if more:
                ch |= 0x20
            out.append(chr(ch + 48))
    return "".join(out)


def rect_counts(x0: int, y0: int, x1: int, y1: int) -> list[int]:
    """Column-major runs (zeros first) of the rectangle [x0, x1) x [y0, y1) in a SIDE² mask."""
    h = y1 - y0
    counts = [x0 * SIDE + y0]
    for col in range(x0, x1):
        counts.append(h)
        counts.append(SIDE - h if col + 1 < x1 else (SIDE - x1) * SIDE + (SIDE - y1))
    return counts


def write_result(path: Path, minutes: float, objects: int, interval: int) -> None:
    frames = int(minutes * 60 * FPS)
    cycle = 40  # positions per object, repeated
    shapes: list[list[str]] = []
    for k in range(objects):
        w = 60 + (k * 7) % 80
        base_x, base_y = 40 + (k * 97) % (SIDE - 300), 40 + (k * 61) % (SIDE - 300)
        per = []
        for p in range(cycle):
            x0 = base_x + 3 * (p if p < cycle // 2 else cycle - p)
            y0 = base_y + 2 * (p if p < cycle // 2 else cycle - p)
            x1, y1 = x0 + w, y0 + w
            seg = json.dumps({"size": [SIDE, SIDE], "counts": rle_string(rect_counts(x0, y0, x1, y1))})
            per.append(f'"bbox":[{x0},{y0},{x1},{y1}],"score":0.98,"iou":0.9,"area":{w * w},"segmentation":{seg}')
        shapes.append(per)
    with open(path, "w") as f:
        for n in range(0, frames, interval):
            objs = []
            for k in range(objects):
                # each object vanishes for one second every 10 minutes (offset per object)
                if (n + k * 1000) % (10 * 60 * FPS) < FPS:
                    continue
                objs.append(f'{{"id":"o{k}","label":"thing",{shapes[k][(n // interval) % cycle]}}}')
            f.write(f'{{"frame_number":{n},"time_s":{n / FPS:.6f},"objects":[{",".join(objs)}]}}\n')


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--densam", type=Path, default=REPO / "target/release/densam")
    ap.add_argument("--minutes", type=float, default=90.0)
    ap.add_argument("--objects", type=int, default=45)
    ap.add_argument("--frame-interval", type=int, default=1)
    ap.add_argument("--work", type=Path, default=Path(os.environ.get("BENCH_WORK", "/tmp/densam-bench-review")))
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    result = a.work / f"dense_annotations_{a.minutes:g}min_{a.objects}obj_i{a.frame_interval}.jsonl"
    if not result.exists():
        t0 = time.perf_counter()
        tmp = result.with_suffix(".tmp")
        write_result(tmp, a.minutes, a.objects, a.frame_interval)
        tmp.rename(result)
        print(f"wrote {result} ({result.stat().st_size / 2**30:.2f} GiB) in {time.perf_counter() - t0:.0f} s")
    out = a.work / "report"
    t0 = time.perf_counter()
    proc = subprocess.Popen([str(a.densam), "review", str(result), "--out", str(out)], stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(err)
    print(err.strip())
    print(f"review of {a.minutes:g} min x {a.objects} objects (every {a.frame_interval}. frame): "
          f"{wall:.1f} s, peak RSS {usage.ru_maxrss / 1024:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
