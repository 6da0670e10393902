#!/usr/bin/env python3
"""GPU benchmark: densam against the official SAM 2.1 video predictor, eager and compiled
(issue 13's measure; see scripts/bench-gpu for how to run it and what each figure means).

Every figure comes from one call, on one card, with the same seeded random tiny 2.1 weights, the
same generated 1408x1408 JPEG clip and the same box prompts on frame 0, bf16 on both sides
(densam `--dtype bf16`, the official predictor under `torch.autocast(bfloat16)`), TF32 off on
both sides:

- steady-state object-frames/s at each `--objects` count: densam as the extra object-frames over
  the extra whole-process time between a clip and one twice (8 objects: three times) as long,
  which cancels start-up, pre-pass and head; the official predictor (eager, and compiled with
  `vos_optimized=True`) as the median gap between consecutive frames of `propagate_in_video`
  after the first 8 (the compiled one on a run after its warm-up run);
- whole-process time on the `--frames` clip at `--iou-objects` objects: densam's process wall
  time; the official predictor's build + `init_state` + propagation (the compiled one's first
  run, compile included, and its compile time as the warm-up run's time over what that run takes
  once compiled, reported separately);
- peak GPU memory at `--frames` and `--long-frames` (densam: the caching allocator's peak from
  run.json, and the process's memory polled from nvidia-smi; official: its allocator's peak);
- mask IoU per object-frame, densam against the official eager bf16 masks, at `--iou-objects`;
- densam's `--profile` split per stage (ms/frame, synchronised: an upper bound) and the GPU
  utilisation nvidia-smi reported while the long run ran.

The official predictor runs in worker processes (this script with `official ...`), so each
starts clean and a compile that overruns the time left is cut off without losing the rest.
Results are appended to OUT/results.jsonl as they come; a table is printed last.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

# The package's own numpy COCO RLE decoder (python/densam/rle.py; plain Python, importable from
# the checkout without the wheel).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
from densam.rle import decode as decode_rle  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def log(*a):
    print(*a, flush=True)


# ---------------------------------------------------------------------------------------------
# The clip and prompts


def shapes_for(k, side, seed=0):
    """`k` textured discs spread over the frame, each on a slow elliptic path (they stay in
    the frame however long the clip)."""
    rng = np.random.default_rng(seed)
    grid = int(np.ceil(np.sqrt(k)))
    cell = side / grid
    out = []
    for i in range(k):
        gx, gy = i % grid, i // grid
        c = np.array([(gx + 0.5) * cell, (gy + 0.5) * cell])
        r = float(rng.uniform(0.22, 0.32) * cell)
        amp = rng.uniform(0.05, 0.15, 2) * cell
        period = float(rng.uniform(40, 90))
        phase = float(rng.uniform(0, 2 * np.pi))
        col = rng.integers(0, 256, 3)
        out.append((c, amp, period, phase, r, col))
    return out


def center(shape, t):
    c, amp, period, phase, _r, _col = shape
    a = 2 * np.pi * t / period + phase
    return c + amp * np.array([np.cos(a), np.sin(a)])


def boxes_for(shapes, k, side):
    out = []
    for s in shapes[:k]:
        cx, cy = center(s, 0)
        r = s[4]
        out.append([float(max(cx - r, 0)), float(max(cy - r, 0)),
                    float(min(cx + r, side - 1)), float(min(cy + r, side - 1))])
    return out


_CLIP = {}


def _draw(t):
    from PIL import Image

    d, side, shapes, seed = _CLIP["d"], _CLIP["side"], _CLIP["shapes"], _CLIP["seed"]
    rng = np.random.default_rng(seed)
    img = (rng.integers(0, 256, (side // 32 + 1, side // 32 + 1, 3), dtype=np.uint8)
           .repeat(32, 0).repeat(32, 1)[:side, :side]).copy()
    for s in shapes:
        cx, cy = center(s, t)
        r = s[4]
        y0, y1 = int(max(cy - r - 1, 0)), int(min(cy + r + 2, side))
        x0, x1 = int(max(cx - r - 1, 0)), int(min(cx + r + 2, side))
        yy, xx = np.mgrid[y0:y1, x0:x1]
        m = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
        # A texture inside the disc, so that it is not a flat colour.
        tex = ((xx // 8 + yy // 8) % 2 * 40).astype(np.int16)
        patch = img[y0:y1, x0:x1].astype(np.int16)
        patch[m] = np.clip(np.asarray(s[5], np.int16) + tex[m][:, None] - 20, 0, 255)
        img[y0:y1, x0:x1] = patch.astype(np.uint8)
    Image.fromarray(img).save(os.path.join(d, f"{t:05d}.jpg"), quality=95)
    return t


def make_clip(d, n, side, shapes, seed=0):
    """`n` JPEG frames `00000.jpg`... in `d` (generated on all cores; kept if already there)."""
    os.makedirs(d, exist_ok=True)
    todo = [t for t in range(n) if not os.path.exists(os.path.join(d, f"{t:05d}.jpg"))]
    if not todo:
        return
    _CLIP.update(d=d, side=side, shapes=shapes, seed=seed)
    import multiprocessing as mp

    with mp.get_context("fork").Pool(min(os.cpu_count() or 1, 16)) as pool:
        pool.map(_draw, todo, chunksize=4)


def linked_clip(src, src_n, d, n):
    """A folder of `n` frames linking to the `src_n` frames of `src` (looped past its end)."""
    os.makedirs(d, exist_ok=True)
    for t in range(n):
        dst = os.path.join(d, f"{t:05d}.jpg")
        if not os.path.lexists(dst):
            os.symlink(os.path.join(src, f"{t % src_n:05d}.jpg"), dst)
    return d


# ---------------------------------------------------------------------------------------------
# Masks


def iou(a, b):
    u = np.logical_or(a, b).sum()
    return 1.0 if u == 0 else float(np.logical_and(a, b).sum() / u)


def read_densam_masks(path):
    """{frame: {object index: bool [h, w]}} from a densam JSONL (ids are the indices)."""
    out = {}
    with open(path) as f:
        for line in f:
            rec = json.loads(line)
            fr = {}
            for o in rec["objects"]:
                seg = o["segmentation"]
                fr[int(o["id"])] = decode_rle(seg)
            out[rec["frame_number"]] = fr
    return out


# ---------------------------------------------------------------------------------------------
# The official predictor (worker process)


def official_worker(a):
    """Runs the official predictor (eager or compiled) over `a.runs` (a JSON list) in this
    process, appending one JSON record per run to `a.out` as soon as it is done."""
    import torch
    from sam2.build_sam import build_sam2_video_predictor

    dev = a.device
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False

    def sync():
        if dev == "cuda":
            torch.cuda.synchronize()

    t0 = time.perf_counter()
    pred = build_sam2_video_predictor(
        "configs/sam2.1/sam2.1_hiera_t.yaml", a.ckpt, device=dev,
        hydra_overrides_extra=[f"++model.image_size={a.image_size}"],
        vos_optimized=(a.mode == "compiled"))
    sync()
    build_s = time.perf_counter() - t0
    ctx = (torch.autocast(dev, dtype=torch.bfloat16) if a.dtype == "bf16"
           else torch.autocast(dev, enabled=False))
    for run in json.loads(a.runs):
        if time.time() > a.deadline:
            emit(a.out, {"side": f"official-{a.mode}", "label": run["label"], "skipped": "out of time"})
            continue
        if dev == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        keep = bool(run.get("compare"))
        masks = {}
        with torch.inference_mode(), ctx:
            t1 = time.perf_counter()
            state = pred.init_state(run["frames_dir"])
            sync()
            t2 = time.perf_counter()
            for i, b in enumerate(run["boxes"]):
                pred.add_new_points_or_box(state, frame_idx=0, obj_id=i, box=np.array(b, np.float32))
            stamps = []
            for t, _ids, logits in pred.propagate_in_video(state):
                m = (logits[:, 0] > 0).cpu().numpy()
                if keep:
                    masks[t] = m
                stamps.append(time.perf_counter())
            sync()
            t3 = time.perf_counter()
        n, k = len(stamps), len(run["boxes"])
        gaps = np.diff(np.array(stamps))[8:]
        steady_ms = float(np.median(gaps)) * 1e3 if len(gaps) else None
        rec = {
            "side": f"official-{a.mode}", "label": run["label"], "objects": k, "frames": n,
            "build_s": round(build_s, 3), "init_state_s": round(t2 - t1, 3),
            "track_s": round(t3 - t2, 3), "run_s": round(t3 - t1, 3),
            "whole_s": round(build_s + t3 - t1, 3),
            "steady_frame_ms": None if steady_ms is None else round(steady_ms, 3),
            "steady_obj_frames_per_s": None if steady_ms is None else round(k * 1e3 / steady_ms, 2),
            "peak_gpu_allocated_MiB": round(torch.cuda.max_memory_allocated() / 2**20, 1) if dev == "cuda" else None,
            "peak_gpu_reserved_MiB": round(torch.cuda.max_memory_reserved() / 2**20, 1) if dev == "cuda" else None,
        }
        build_s = 0.0  # counted once, in the first run's whole time
        del state
        if keep:
            d = read_densam_masks(run["compare"])
            ious = []
            for t in range(n):
                for i in range(k):
                    o = masks[t][i]
                    ious.append(iou(o, d.get(t, {}).get(i, np.zeros_like(o))))
            ious = np.array(ious)
            worst = int(ious.argmin())
            rec.update({"iou_vs": "densam", "iou_min": round(float(ious.min()), 5),
                        "iou_mean": round(float(ious.mean()), 5),
                        "iou_frac_ge_0.99": round(float((ious >= 0.99).mean()), 4),
                        "iou_min_at": {"frame": worst // k, "object": worst % k}})
            del masks, d
        emit(a.out, rec)


def emit(path, rec):
    with open(path, "a") as f:
        f.write(json.dumps(rec) + "\n")


# ---------------------------------------------------------------------------------------------
# densam


def run_densam(a, frames_dir, boxes, out, extra=(), poll=True):
    """One `densam annotate` process over `frames_dir` with box prompts on frame 0; returns its
    wall time, run.json and what nvidia-smi saw (process memory, GPU utilisation)."""
    prompts = {"objects": [{"id": str(i), "prompts": [{"frame": 0, "box": b}]} for i, b in enumerate(boxes)]}
    # A fresh output folder: densam resumes (and skips) a finished run in an existing one.
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    p = os.path.join(out, "prompts.json")
    with open(p, "w") as f:
        json.dump(prompts, f)
    cmd = [a.densam, "annotate", "--video", frames_dir, "--prompts", p, "--checkpoint", a.ckpt,
           "--out", out, "--device", a.device, "--fill-hole-area", "0", "--image-size",
           str(a.image_size), "--dtype", a.dtype, "--batch-objects", a.batch_objects, *extra]
    # Logs to files beside the output folder: a pipe nobody reads while polling would block
    # densam once its log outgrows the pipe buffer.
    lo, le = open(out + ".stdout", "w+"), open(out + ".stderr", "w+")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=lo, stderr=le, text=True)
    peak_smi, util = 0, []
    while proc.poll() is None:
        if time.time() > a.deadline_at + 30:
            proc.kill()
        if poll and a.device == "cuda":
            q = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory",
                                "--format=csv,noheader,nounits"], capture_output=True, text=True)
            for line in q.stdout.splitlines():
                parts = [x.strip() for x in line.split(",")]
                if len(parts) == 2 and parts[0] == str(proc.pid) and parts[1].isdigit():
                    peak_smi = max(peak_smi, int(parts[1]))
            q = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu",
                                "--format=csv,noheader,nounits"], capture_output=True, text=True)
            if q.stdout.strip().isdigit():
                util.append(int(q.stdout.strip()))
        time.sleep(0.05)
    wall = time.perf_counter() - t0
    le.seek(0)
    err = le.read()
    lo.close()
    le.close()
    if proc.returncode != 0:
        log(err[-3000:])
        raise RuntimeError(f"densam exited {proc.returncode}: {' '.join(cmd)}")
    with open(os.path.join(out, "run.json")) as f:
        manifest = json.load(f)
    jl = [f for f in os.listdir(out) if f.endswith(".jsonl")][0]
    return {"wall_s": wall, "manifest": manifest, "jsonl": os.path.join(out, jl),
            "peak_smi_MiB": peak_smi, "gpu_util": util, "stderr": err}


def densam_record(label, k, n, r):
    m = r["manifest"]
    tr = m.get("this_run", {})
    peak = m.get("peak_gpu_bytes")
    rec = {"side": "densam", "label": label, "objects": k, "frames": n,
           "whole_s": round(r["wall_s"], 3), "run_wall_s": round(tr.get("wall_seconds", 0.0), 3),
           "obj_frames_per_s_whole": round(n * k / r["wall_s"], 2),
           "batch_objects": m.get("params", {}).get("batch_objects"),
           "peak_gpu_allocated_MiB": None if peak is None else round(peak / 2**20, 1),
           "process_gpu_MiB_nvidia_smi": r["peak_smi_MiB"]}
    if r["gpu_util"]:
        u = np.array(r["gpu_util"])
        rec["gpu_util_mean_pct"] = round(float(u.mean()), 1)
        rec["gpu_util_samples"] = len(u)
    st = tr.get("stage_seconds")
    if st:
        rec["stage_ms_per_frame"] = {kk: round(v * 1e3 / n, 2) for kk, v in st.items()}
    return rec


# ---------------------------------------------------------------------------------------------
# The whole measure


class Bench:
    def __init__(self, a):
        self.a = a
        self.results = []
        self.path = os.path.join(a.out, "results.jsonl")
        os.makedirs(a.out, exist_ok=True)
        open(self.path, "w").close()

    def left(self):
        return self.a.deadline_at - time.time()

    def add(self, rec):
        self.results.append(rec)
        emit(self.path, rec)
        log(json.dumps(rec))

    def step(self, name, fn):
        if self.left() <= 0:
            self.add({"step": name, "skipped": "out of time"})
            return None
        t = time.perf_counter()
        try:
            out = fn()
        except Exception as e:  # noqa: BLE001 -- one failed step must not lose the others
            self.add({"step": name, "error": f"{type(e).__name__}: {e}"})
            return None
        log(f"-- {name}: {time.perf_counter() - t:.1f} s ({self.left():.0f} s left)")
        return out

    def official(self, mode, runs, budget):
        """The official predictor in a worker process, cut off after `budget` seconds."""
        a = self.a
        out = os.path.join(a.work, f"official-{mode}.jsonl")
        open(out, "w").close()
        budget = max(1.0, min(budget, self.left()))
        cmd = [sys.executable, os.path.abspath(__file__), "official", "--mode", mode, "--ckpt", a.ckpt,
               "--image-size", str(a.image_size), "--device", a.device, "--dtype", a.dtype,
               "--runs", json.dumps(runs), "--out", out, "--deadline", str(time.time() + budget)]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        logf = open(out + ".log", "w")
        try:
            subprocess.run(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env, timeout=budget + 5,
                           check=False)
        except subprocess.TimeoutExpired:
            self.add({"side": f"official-{mode}", "cut_off_after_s": round(budget, 1)})
        logf.close()
        recs = [json.loads(l) for l in open(out) if l.strip()]
        for r in recs:
            self.add(r)
        if not recs:
            with open(out + ".log") as f:
                log(f.read()[-3000:])
        return recs


def main_bench(a):
    a.deadline_at = time.time() + a.deadline_s
    os.makedirs(a.work, exist_ok=True)
    a.densam = os.path.abspath(a.densam)
    b = Bench(a)
    # (No torch here: a CUDA context in this process would hold GPU memory through every run.)
    from importlib.metadata import version

    gpu = "none (cpu)"
    if a.device == "cuda":
        q = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                           capture_output=True, text=True)
        gpu = q.stdout.strip() or "unknown"
    objs = sorted({int(x) for x in a.objects.split(",")} | {a.iou_objects})
    b.add({"setup": True, "gpu": gpu, "torch": version("torch"), "frames": a.frames,
           "long_frames": a.long_frames, "short_frames": a.short_frames, "side": a.size,
           "image_size": a.image_size, "dtype": a.dtype, "objects": objs,
           "batch_objects": a.batch_objects})
    t = time.perf_counter()
    ckdir = os.path.join(a.work, f"ckpt-{a.image_size}")
    if not os.path.exists(os.path.join(ckdir, "model.pt")):
        subprocess.run([sys.executable, os.path.join(ROOT, "tools/parity/make_checkpoint.py"), "--size", "tiny",
                        "--version", "2.1", "--image-size", str(a.image_size), "--seed", "0",
                        "--out", ckdir], check=True, stdout=subprocess.DEVNULL)
    a.ckpt = os.path.join(ckdir, "model.pt")
    shapes = shapes_for(max(objs), a.size)
    clip = os.path.join(a.work, f"frames-{a.size}-{a.frames}")
    make_clip(clip, a.frames, a.size, shapes)
    clips = {}

    def frames(n):
        if n not in clips:
            clips[n] = clip if n == a.frames else linked_clip(
                clip, a.frames, os.path.join(a.work, f"frames-{a.size}-{a.frames}-as-{n}"), n)
        return clips[n]

    log(f"-- setup (checkpoint, {a.frames} frames): {time.perf_counter() - t:.1f} s")
    K = a.iou_objects
    boxes = {k: boxes_for(shapes, k, a.size) for k in objs}
    short = {k: (a.short_frames if k <= 8 else max(a.short_frames // 2, 8)) for k in objs}

    def densam(k, n, label, extra=(), poll=True):
        r = run_densam(a, frames(n), boxes[k], os.path.join(a.work, f"out-{label}"), extra, poll)
        b.add(densam_record(label, k, n, r))
        return r

    # 1. densam on the clip at K objects: whole process, peak memory, the masks for the IoU.
    main = b.step(f"densam {K} objects x {a.frames}", lambda: densam(K, a.frames, f"k{K}-n{a.frames}"))
    # 2. The official eager predictor: K objects on the clip (whole, steady, IoU against 1.),
    #    then the other object counts on short clips (steady).
    runs = [{"label": f"k{K}-n{a.frames}", "frames_dir": frames(a.frames), "boxes": boxes[K],
             "compare": main["jsonl"] if main else None}]
    runs += [{"label": f"k{k}-n{short[k]}", "frames_dir": frames(short[k]), "boxes": boxes[k]}
             for k in objs if k != K]
    b.step("official eager", lambda: b.official("eager", runs, b.left()))
    # 3. densam steady state at each object count: the clip and one twice as long (K: the
    #    clip and the long clip, which also gives the peak memory at both lengths).
    b.step(f"densam {K} objects x {a.long_frames}", lambda: densam(K, a.long_frames, f"k{K}-n{a.long_frames}"))
    for k in objs:
        if k == K:
            continue
        for n in (short[k], 2 * short[k]):
            b.step(f"densam {k} objects x {n}", lambda k=k, n=n: densam(k, n, f"k{k}-n{n}"))
    # 4. densam's stage split (--profile synchronises at each stage: an upper bound).
    b.step(f"densam --profile {K} objects x {short[K]}",
           lambda: densam(K, short[K], f"profile-k{K}-n{short[K]}", ["--profile"], poll=False))
    # 5. The official compiled predictor, last (its compile time is the least predictable), in
    #    the time left: a warm-up run (compile), the steady state at K objects on a short clip,
    #    the other object counts, then K objects on the clip (whole process).
    if not a.skip_compiled:
        warm = [{"label": f"warmup-k1-n{a.compile_warmup_frames}", "frames_dir": frames(a.compile_warmup_frames),
                 "boxes": boxes[objs[0]][:1]}]
        steady_k = [{"label": f"k{K}-n{short[K]}", "frames_dir": frames(short[K]), "boxes": boxes[K]}]
        cruns = warm + steady_k + [dict(r, compare=None) for r in runs[1:] + runs[:1]]
        b.step("official compiled", lambda: b.official("compiled", cruns, a.compiled_budget_s))
    summary(b, objs, K, short)


def steady_densam(b, k, n1, n2):
    r1 = next((r for r in b.results if r.get("side") == "densam" and r.get("label") == f"k{k}-n{n1}"), None)
    r2 = next((r for r in b.results if r.get("side") == "densam" and r.get("label") == f"k{k}-n{n2}"), None)
    if not (r1 and r2) or r2["whole_s"] <= r1["whole_s"]:
        return None
    return round((n2 - n1) * k / (r2["whole_s"] - r1["whole_s"]), 2)


def official_steady(b, side, k):
    """The official side's steady rate at `k` objects: from its longest run with one."""
    runs = [r for r in b.results if r.get("side") == side and r.get("objects") == k
            and r.get("steady_obj_frames_per_s") and not str(r.get("label", "")).startswith("warmup")]
    return max(runs, key=lambda r: r["frames"])["steady_obj_frames_per_s"] if runs else None


def summary(b, objs, K, short):
    a = b.a
    get = lambda side, label: next((r for r in b.results if r.get("side") == side and r.get("label") == label), None)  # noqa: E731
    rows = []
    for k in objs:
        n1, n2 = (a.frames, a.long_frames) if k == K else (short[k], 2 * short[k])
        d = steady_densam(b, k, n1, n2)
        es = official_steady(b, "official-eager", k)
        cs = official_steady(b, "official-compiled", k)
        rows.append({"objects": k, "densam_steady_obj_frames_per_s": d, "official_eager_steady": es,
                     "official_compiled_steady": cs,
                     "densam_vs_eager": round(d / es, 3) if d and es else None,
                     "densam_vs_compiled": round(d / cs, 3) if d and cs else None})
    dm, dl = get("densam", f"k{K}-n{a.frames}"), get("densam", f"k{K}-n{a.long_frames}")
    e, c = get("official-eager", f"k{K}-n{a.frames}"), get("official-compiled", f"k{K}-n{a.frames}")
    cw = next((r for r in b.results if r.get("side") == "official-compiled" and str(r.get("label", "")).startswith("warmup")), None)
    comp = None
    if cw and cw.get("steady_frame_ms") is not None:
        # The warm-up run's time over what its frames take once compiled.
        comp = round(cw["build_s"] + cw["run_s"] - cw["frames"] * (cw["steady_frame_ms"] / 1e3), 1)
    whole = {"frames": a.frames, "objects": K,
             "densam_whole_s": dm and dm["whole_s"], "official_eager_whole_s": e and e["whole_s"],
             "official_compiled_whole_s_incl_compile": c and cw and round(cw["whole_s"] + c["run_s"], 2),
             "official_compiled_run_s_after_warmup": c and c["run_s"],
             "official_compiled_compile_s_estimate": comp}
    mem = {"objects": K, "densam_peak_gpu_MiB": {a.frames: dm and dm["peak_gpu_allocated_MiB"],
                                                 a.long_frames: dl and dl["peak_gpu_allocated_MiB"]},
           "densam_process_gpu_MiB_nvidia_smi": {a.frames: dm and dm["process_gpu_MiB_nvidia_smi"],
                                                 a.long_frames: dl and dl["process_gpu_MiB_nvidia_smi"]},
           "official_eager_peak_gpu_MiB": e and e["peak_gpu_allocated_MiB"],
           "densam_gpu_util_mean_pct_long_run": dl and dl.get("gpu_util_mean_pct")}
    q = {"objects": K, "iou_min": e and e.get("iou_min"), "iou_mean": e and e.get("iou_mean"),
         "iou_frac_ge_0.99": e and e.get("iou_frac_ge_0.99"), "iou_min_at": e and e.get("iou_min_at")}
    prof = next((r for r in b.results if r.get("side") == "densam" and str(r.get("label", "")).startswith("profile")), None)
    out = {"steady": rows, "whole_process": whole, "memory": mem, "iou": q,
           "densam_stage_ms_per_frame": prof and prof.get("stage_ms_per_frame")}
    emit(b.path, {"summary": out})
    log("SUMMARY " + json.dumps(out))
    log("objects | densam steady | official eager | official compiled | vs eager | vs compiled")
    for r in rows:
        log(f"{r['objects']:>7} | {r['densam_steady_obj_frames_per_s']} | {r['official_eager_steady']} | "
            f"{r['official_compiled_steady']} | {r['densam_vs_eager']} | {r['densam_vs_compiled']}")
    log(f"whole process, {a.frames} frames x {K} objects: {json.dumps(whole)}")
    log(f"memory: {json.dumps(mem)}")
    log(f"IoU densam vs official eager: {json.dumps(q)}")


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "official":
        ap = argparse.ArgumentParser()
        ap.add_argument("cmd")
        for k in ("--mode", "--ckpt", "--device", "--dtype", "--runs", "--out"):
            ap.add_argument(k, required=True)
        ap.add_argument("--image-size", type=int, required=True)
        ap.add_argument("--deadline", type=float, required=True)
        return official_worker(ap.parse_args())
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--densam", required=True, help="the densam binary")
    ap.add_argument("--device", default=os.environ.get("BENCH_DEVICE", "cuda"), choices=["cuda", "cpu"])
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"])
    ap.add_argument("--size", type=int, default=1408, help="frame side (px)")
    ap.add_argument("--image-size", type=int, default=1024, help="model input size")
    ap.add_argument("--frames", type=int, default=300, help="the clip: whole process, IoU, memory")
    ap.add_argument("--long-frames", type=int, default=None, help="the long clip (default 3 x --frames)")
    ap.add_argument("--short-frames", type=int, default=64,
                    help="steady-state clips of the other object counts (halved above 8 objects)")
    ap.add_argument("--objects", default="1,8,32", help="object counts for the steady state")
    ap.add_argument("--iou-objects", type=int, default=8, help="objects on the clip (IoU, whole, memory)")
    ap.add_argument("--batch-objects", default="auto", help="densam --batch-objects")
    ap.add_argument("--skip-compiled", action="store_true", help="no official compiled predictor")
    ap.add_argument("--compiled-budget-s", type=float, default=240,
                    help="wall time for the compiled predictor (compile included)")
    ap.add_argument("--compile-warmup-frames", type=int, default=24)
    ap.add_argument("--deadline-s", type=float, default=460,
                    help="steps still to start after this many seconds are skipped")
    ap.add_argument("--work", default=os.environ.get("BENCH_WORK", "/tmp/densam-bench-gpu"))
    ap.add_argument("--out", default=None, help="results folder (default WORK/results)")
    a = ap.parse_args()
    a.long_frames = a.long_frames or 3 * a.frames
    a.out = a.out or os.path.join(a.work, "results")
    main_bench(a)


if __name__ == "__main__":
    main()
