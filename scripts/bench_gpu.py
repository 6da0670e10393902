#!/usr/bin/env python3
"""GPU benchmark: densam vs the official SAM2VideoPredictor (see scripts/bench-gpu)."""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import torch
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def log(*a):
    print(*a, flush=True)


def make_clip(d, n, side, seed=0):
    """A synthetic clip: textured background, a few moving textured discs/squares."""
    os.makedirs(d, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side]
    bg = (rng.integers(0, 256, (side // 32 + 1, side // 32 + 1, 3), dtype=np.uint8)
          .repeat(32, 0).repeat(32, 1)[:side, :side])
    shapes = [(rng.uniform(0.2, 0.8, 2) * side, rng.uniform(-6, 6, 2), rng.uniform(0.05, 0.12) * side,
               rng.integers(0, 256, 3)) for _ in range(8)]
    for t in range(n):
        img = bg.copy()
        for (c, v, r, col) in shapes:
            cx, cy = c + v * t
            m = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
            img[m] = col
        Image.fromarray(img).save(os.path.join(d, f"{t:05d}.jpg"), quality=95)
    return shapes


def boxes_for(shapes, k):
    out = []
    for (c, _v, r, _col) in shapes[:k]:
        out.append([float(c[0] - r), float(c[1] - r), float(c[0] + r), float(c[1] + r)])
    return out


DEV = os.environ.get("BENCH_DEVICE", "cuda")


def sync():
    if DEV == "cuda":
        torch.cuda.synchronize()


def run_official(ckpt, frames, boxes, dtype, n_frames):
    from sam2.build_sam import build_sam2_video_predictor

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    pred = build_sam2_video_predictor(
        "configs/sam2.1/sam2.1_hiera_t.yaml", ckpt, device=DEV,
        hydra_overrides_extra=[f"++model.image_size={os.environ.get('BENCH_IMAGE_SIZE', '1024')}"])
    sync()
    if DEV == "cuda":
        torch.cuda.reset_peak_memory_stats()
    ctx = torch.autocast(DEV, dtype=torch.bfloat16) if dtype == "bf16" else torch.autocast(DEV, enabled=False)
    masks = {}
    with torch.inference_mode(), ctx:
        t0 = time.perf_counter()
        state = pred.init_state(frames)
        sync()
        t1 = time.perf_counter()
        for i, b in enumerate(boxes):
            pred.add_new_points_or_box(state, frame_idx=0, obj_id=i, box=np.array(b, dtype=np.float32))
        stamps = []
        for t, ids, logits in pred.propagate_in_video(state):
            masks[t] = (logits[:, 0] > 0).cpu().numpy()
            stamps.append(time.perf_counter())
        sync()
        t2 = time.perf_counter()
    # Steady state: the median time between consecutive frames after the first 8 (warm-up).
    gaps = np.diff(np.array(stamps))[8:]
    steady_ms = float(np.median(gaps)) * 1e3 if len(gaps) else float("nan")
    peak = torch.cuda.max_memory_allocated() if DEV == "cuda" else 0
    peak_res = torch.cuda.max_memory_reserved() if DEV == "cuda" else 0
    del state, pred
    if DEV == "cuda":
        torch.cuda.empty_cache()
    return masks, {"init_s": t1 - t0, "track_s": t2 - t1, "total_s": t2 - t0, "peak_gpu_bytes": peak,
                   "steady_frame_ms": steady_ms,
                 "peak_reserved_bytes": peak_res}


def run_densam(binary, ckpt, frames, boxes, dtype, out, profile=False):
    prompts = {"objects": [{"id": str(i), "prompts": [{"frame": 0, "box": b}]} for i, b in enumerate(boxes)]}
    # A fresh output folder: densam resumes (and skips) a finished run in an existing one.
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out, exist_ok=True)
    p = os.path.join(out, "prompts.json")
    with open(p, "w") as f:
        json.dump(prompts, f)
    cmd = [binary, "annotate", "--video", frames, "--prompts", p, "--checkpoint", ckpt, "--out", out,
           "--device", DEV, "--fill-hole-area", "0"]
    if os.environ.get("BENCH_IMAGE_SIZE"):
        cmd += ["--image-size", os.environ["BENCH_IMAGE_SIZE"]]
    if dtype != "fp32":
        cmd += ["--dtype", dtype]
    if profile:
        cmd += ["--profile"]
    t0 = time.perf_counter()
    # Logs to files beside the output folder: a pipe nobody reads while polling would block
    # densam once its log outgrows the pipe buffer.
    log_out, log_err = open(out + ".stdout", "w+"), open(out + ".stderr", "w+")
    proc = subprocess.Popen(cmd, stdout=log_out, stderr=log_err, text=True)
    peak_smi = 0
    if DEV == "cuda":
        # Whole-process device memory (CUDA context included), polled from nvidia-smi.
        while proc.poll() is None:
            q = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory",
                                "--format=csv,noheader,nounits"], capture_output=True, text=True)
            for line in q.stdout.splitlines():
                parts = [x.strip() for x in line.split(",")]
                if len(parts) == 2 and parts[0] == str(proc.pid) and parts[1].isdigit():
                    peak_smi = max(peak_smi, int(parts[1]))
            time.sleep(0.05)
    proc.wait()
    log_out.seek(0)
    log_err.seek(0)
    out_s, err_s = log_out.read(), log_err.read()
    log_out.close()
    log_err.close()
    wall = time.perf_counter() - t0
    r = subprocess.CompletedProcess(cmd, proc.returncode, out_s, err_s)
    if r.returncode != 0:
        log(r.stdout[-3000:], r.stderr[-3000:])
        raise SystemExit(f"densam failed: {r.returncode}")
    from pycocotools import mask as mask_utils

    jl = [f for f in os.listdir(out) if f.endswith(".jsonl")][0]
    masks = {}
    with open(os.path.join(out, jl)) as f:
        for line in f:
            rec = json.loads(line)
            fr = {}
            for o in rec["objects"]:
                seg = o["segmentation"]
                fr[int(o["id"])] = mask_utils.decode({"size": seg["size"], "counts": seg["counts"].encode()}) > 0
            masks[rec["frame_number"]] = fr
    manifest = {}
    mp = os.path.join(out, "run.json")
    if os.path.exists(mp):
        with open(mp) as f:
            manifest = json.load(f)
    return masks, {"total_s": wall, "manifest": manifest, "peak_smi_mib": peak_smi, "stderr_tail": r.stderr[-600:]}


def iou(a, b):
    u = np.logical_or(a, b).sum()
    return 1.0 if u == 0 else np.logical_and(a, b).sum() / u


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--densam", required=True)
    args = ap.parse_args()
    n = int(os.environ.get("BENCH_FRAMES", "48"))
    side = int(os.environ.get("BENCH_SIZE", "1408"))
    objs = [int(x) for x in os.environ.get("BENCH_OBJECTS", "1 8").split()]
    dtypes = os.environ.get("BENCH_DTYPES", "bf16").split()
    work = os.environ.get("BENCH_WORK", "/tmp/densam-bench-gpu")
    os.makedirs(work, exist_ok=True)
    gpu = torch.cuda.get_device_name(0) if DEV == "cuda" else "none (cpu)"
    log(f"GPU: {gpu}; torch {torch.__version__}; frames {n} of {side}x{side}")
    ckdir = os.path.join(work, "ckpt")
    if not os.path.exists(os.path.join(ckdir, "model.pt")):
        subprocess.run([sys.executable, os.path.join(ROOT, "tools/parity/make_checkpoint.py"), "--size", "tiny",
                        "--version", "2.1", "--image-size", os.environ.get("BENCH_IMAGE_SIZE", "1024"), "--seed", "0",
                        "--out", ckdir], check=True)
    ckpt = os.path.join(ckdir, "model.pt")
    frames = os.path.join(work, "frames")
    shapes = make_clip(frames, n, side)
    results = []
    for dtype in dtypes:
        for k in objs:
            boxes = boxes_for(shapes, k)
            om, ot = run_official(ckpt, frames, boxes, dtype, n)
            dm, dt = run_densam(args.densam, ckpt, frames, boxes, dtype, os.path.join(work, f"out-{dtype}-{k}"))
            ious = []
            for t in range(n):
                for i in range(k):
                    a = om[t][i]
                    b = dm.get(t, {}).get(i, np.zeros_like(a))
                    ious.append(iou(a, b))
            ious = np.array(ious)
            ofs_off_track = n * k / ot["track_s"]
            ofs_off_total = n * k / ot["total_s"]
            ofs_dens = n * k / dt["total_s"]
            peak_d = dt["manifest"].get("peak_gpu_bytes") or dt["manifest"].get("memory", {}).get("peak_gpu_bytes")
            row = {
                "dtype": dtype, "objects": k, "frames": n,
                "official_obj_frames_per_s_tracking_only": round(ofs_off_track, 2),
                "official_obj_frames_per_s_whole": round(ofs_off_total, 2),
                "densam_obj_frames_per_s_whole_process": round(ofs_dens, 2),
                "speedup_whole_vs_whole": round(ofs_dens / ofs_off_total, 3),
                "speedup_whole_vs_official_tracking_only": round(ofs_dens / ofs_off_track, 3),
                "official_peak_gpu_allocated_MiB": round(ot["peak_gpu_bytes"] / 2**20, 1),
                "official_peak_gpu_reserved_MiB": round(ot["peak_reserved_bytes"] / 2**20, 1),
                "densam_process_gpu_MiB_nvidia_smi": dt["peak_smi_mib"],
                "densam_peak_gpu_MiB": None if peak_d is None else round(peak_d / 2**20, 1),
                "iou_mean": round(float(ious.mean()), 5), "iou_min": round(float(ious.min()), 5),
                "iou_frac_ge_0.99": round(float((ious >= 0.99).mean()), 4),
            }
            row["official_steady_frame_ms"] = round(ot["steady_frame_ms"], 2)
            row["official_steady_obj_frames_per_s"] = round(k * 1e3 / ot["steady_frame_ms"], 2)
            r = dt["manifest"].get("this_run", {})
            row["densam_startup_s"] = round(dt["total_s"] - r.get("wall_seconds", 0.0), 2)
            row["densam_run_wall_s"] = round(r.get("wall_seconds", 0.0), 2)
            results.append(row)
            log(json.dumps(row))
            if os.environ.get("BENCH_PROFILE", "1") == "1":
                _, pt = run_densam(args.densam, ckpt, frames, boxes, dtype,
                                   os.path.join(work, f"out-prof-{dtype}-{k}"), profile=True)
                st = pt["manifest"].get("this_run", {}).get("stage_seconds") or {}
                prow = {"profile": True, "dtype": dtype, "objects": k, "frames": n,
                        "whole_s": round(pt["total_s"], 2),
                        "run_wall_s": round(pt["manifest"].get("this_run", {}).get("wall_seconds", 0.0), 2),
                        "stage_ms_per_frame": {kk: round(v * 1e3 / n, 2) for kk, v in st.items()}}
                results.append(prow)
                log(json.dumps(prow))
    # Peak device memory against clip length: the same clip looped to BENCH_LONG_FRAMES frames,
    # densam only (the official predictor would hold every frame).
    long_n = int(os.environ.get("BENCH_LONG_FRAMES", str(3 * n)))
    if long_n > n:
        k = max(objs)
        boxes = boxes_for(shapes, k)
        long_dir = os.path.join(work, f"frames-{long_n}")
        os.makedirs(long_dir, exist_ok=True)
        for t in range(long_n):
            dst = os.path.join(long_dir, f"{t:05d}.jpg")
            if not os.path.exists(dst):
                os.symlink(os.path.join(frames, f"{t % n:05d}.jpg"), dst)
        for dtype in dtypes:
            mem = {}
            for length, d in ((n, frames), (long_n, long_dir)):
                _, dt = run_densam(args.densam, ckpt, d, boxes, dtype,
                                   os.path.join(work, f"out-len-{dtype}-{length}"))
                peak_d = dt["manifest"].get("peak_gpu_bytes")
                mem[length] = {"peak_gpu_allocated_MiB": None if peak_d is None else round(peak_d / 2**20, 1),
                               "process_gpu_MiB_nvidia_smi": dt["peak_smi_mib"],
                               "obj_frames_per_s": round(length * k / dt["total_s"], 2)}
            row = {"length_check": True, "dtype": dtype, "objects": k, "by_frames": mem}
            # Steady state from the two lengths: the extra frames over the extra time.
            t_short = n * k / mem[n]["obj_frames_per_s"]
            t_long = long_n * k / mem[long_n]["obj_frames_per_s"]
            row["densam_steady_obj_frames_per_s"] = round((long_n - n) * k / max(t_long - t_short, 1e-9), 2)
            results.append(row)
            log(json.dumps(row))
    log("SUMMARY " + json.dumps(results))


if __name__ == "__main__":
    main()
