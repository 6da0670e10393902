#!/usr/bin/env python3
"""The installed wheel against the release binary (run by scripts/test-wheel with the Python of
a fresh venv where only torch, numpy and the densam wheel are installed, as an unprivileged user,
LD_LIBRARY_PATH empty).

Usage: wheel_check.py WORKDIR (holding clip.mp4, prompts.json, model.pt and ref/, the release
binary's output on the same inputs and options)

Checks: the console script's CLI; every FFmpeg library (every library but glibc's, libstdc++,
libgcc_s, zlib and expat) comes from the wheel or torch, by ldd and by a running job's
/proc/PID/maps; `densam annotate` and `densam.annotate` (prompts as dicts) write the release
binary's bytes and resume (a finished run is left alone); `densam.track` yields the same frames
and masks as the reference, read by `densam.read_results`; errors map to their exit codes;
closing `track` early stops the job and removes its folder; the Python options match
`densam annotate --help`.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

import densam
import numpy as np

W = Path(sys.argv[1])
CLIP, PROMPTS, CKPT, REF = W / "clip.mp4", W / "prompts.json", W / "model.pt", W / "ref"
OPTS = {"image_size": 256, "device": "cpu", "reverse_chunk": 4}
CLI_OPTS = ["--image-size", "256", "--device", "cpu", "--reverse-chunk", "4"]
REF_JSONL = REF / "dense_annotations_clip.jsonl"
SITE = Path(densam.__file__).resolve().parent.parent
EXE = SITE / "densam" / "_bin" / "densam"
# what may come from the system: glibc's libraries, the C++ runtime, zlib, expat
SYSTEM_OK = re.compile(
    r"^(linux-vdso|ld-linux-x86-64|libc|libm|libdl|libpthread|librt|libresolv|libutil|"
    r"libstdc\+\+|libgcc_s|libz|libexpat)\.so"
)

T0 = time.time()
passed = failed = 0


def check(name: str, fn) -> None:  # noqa: ANN001
    global passed, failed
    t = time.time()
    try:
        fn()
    except Exception:
        failed += 1
        print(f"[wheel {time.time() - T0:5.1f}s] FAIL {name}", flush=True)
        traceback.print_exc()
    else:
        passed += 1
        print(f"[wheel {time.time() - T0:5.1f}s] PASS {name} ({time.time() - t:.1f} s)", flush=True)


def densam_cli(*args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "densam"
    return subprocess.run([str(exe), *args], capture_output=True, text=True)


def foreign(paths: list[str]) -> list[str]:
    """Libraries loaded from outside the venv that are not in SYSTEM_OK."""
    bad = []
    for p in paths:
        name = os.path.basename(p)
        inside = Path(p).resolve().is_relative_to(SITE) if p.startswith("/") else False
        if not inside and not SYSTEM_OK.match(name):
            bad.append(p)
    return bad


def t_requirements() -> None:
    import importlib.metadata as md

    reqs = md.requires("densam") or []
    assert "torch==2.11.*" in reqs and any(r.startswith("numpy") for r in reqs), reqs
    assert md.version("torch").startswith("2.11."), md.version("torch")
    assert md.version("densam") == densam.__version__


def t_cli() -> None:
    v = densam_cli("--version")
    assert v.returncode == 0 and v.stdout.startswith("densam "), v
    u = densam_cli("annotate", "--span", "sideways")
    assert u.returncode == 2, u  # clap's usage error, through the console script's exec


def t_ldd() -> None:
    env = dict(os.environ, LD_LIBRARY_PATH="")
    out = subprocess.run(["ldd", str(EXE)], capture_output=True, text=True, env=env, check=True)
    libs: dict[str, str] = {}
    for line in out.stdout.splitlines():
        m = re.match(r"\s*(\S+) => (\S+)", line)
        if m:
            libs[m.group(1)] = m.group(2)
    missing = [k for k, v in libs.items() if v == "not"]
    assert not missing, f"unresolved: {missing}"
    ff = {k: v for k, v in libs.items() if re.match(r"lib(av|sw|postproc)", k)}
    assert len(ff) >= 4, ff
    assert all("/densam.libs/" in v for v in ff.values()), ff
    torch_cpu = Path(libs["libtorch_cpu.so"]).resolve()
    assert torch_cpu.parent == SITE / "torch" / "lib", torch_cpu
    bad = foreign(list(libs.values()))
    assert not bad, f"from the system: {bad}"


def t_cli_annotate() -> None:
    out = W / "cli-out"
    args = ["annotate", "--video", str(CLIP), "--prompts", str(PROMPTS), "--checkpoint", str(CKPT)]
    r = densam_cli(*args, "--out", str(out), *CLI_OPTS)
    assert r.returncode == 0, r.stderr
    assert (out / REF_JSONL.name).read_bytes() == REF_JSONL.read_bytes(), "JSONL differs"


def t_api_annotate() -> None:
    out = W / "api-out"
    prompts = json.loads(PROMPTS.read_text())["objects"]  # as dicts
    run = densam.annotate(CLIP, prompts, CKPT, out, log=False, **OPTS)
    assert run["status"] == "complete", run["status"]
    assert (out / REF_JSONL.name).read_bytes() == REF_JSONL.read_bytes(), "JSONL differs"
    mtime = (out / REF_JSONL.name).stat().st_mtime_ns
    again = densam.annotate(CLIP, {"objects": prompts}, CKPT, out, log=False, **OPTS)
    assert again["status"] == "complete"
    assert (out / REF_JSONL.name).stat().st_mtime_ns == mtime, "a finished run was redone"


def t_api_resume() -> None:
    # a Ctrl-C (SIGINT to Python) once the job has checkpointed: passed on to the job, which
    # checkpoints and exits 75; KeyboardInterrupt; the same call resumes, same bytes
    out = W / "resume-out"
    opts = {**OPTS, "checkpoint_every": 0}  # a checkpoint after every frame

    def interrupt_when_checkpointed() -> None:
        for _ in range(6000):
            if (out / ".densam-checkpoint").exists():
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.01)

    threading.Thread(target=interrupt_when_checkpointed, daemon=True).start()
    try:
        densam.annotate(CLIP, PROMPTS, CKPT, out, log=False, **opts)
    except KeyboardInterrupt:
        pass
    else:
        raise AssertionError("not interrupted")
    assert (out / ".densam-checkpoint").exists() and not (out / REF_JSONL.name).exists()
    assert json.loads((out / "run.json").read_text())["status"] == "interrupted"
    run = densam.annotate(CLIP, PROMPTS, CKPT, out, log=False, **opts)
    assert run["status"] == "complete"
    assert (out / REF_JSONL.name).read_bytes() == REF_JSONL.read_bytes(), "JSONL differs"


def same_frames(got: list[densam.Frame], want_lines: list[dict]) -> None:
    assert [f.frame_number for f in got] == [d["frame_number"] for d in want_lines]
    n = 0
    for f, d in zip(got, want_lines, strict=True):
        assert f.time_s == d["time_s"] and f.video_id == d.get("video_id")
        assert [o.id for o in f.objects] == [o["id"] for o in d["objects"]]
        for o, w in zip(f.objects, d["objects"], strict=True):
            assert (o.label, o.bbox, o.score, o.iou, o.area) == (
                w["label"],
                w["bbox"],
                w["score"],
                w["iou"],
                w["area"],
            ), (f.frame_number, o.id)
            assert o.segmentation == w["segmentation"]
            m = o.mask
            assert m.dtype == np.bool_ and m.shape == tuple(w["segmentation"]["size"])
            assert int(m.sum()) == w["area"]
            ys, xs = np.nonzero(m)
            assert [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] == w["bbox"]
            n += 1
    assert n > 0


def t_track() -> None:
    want = [json.loads(x) for x in REF_JSONL.read_text().splitlines()]
    prompts = json.loads(PROMPTS.read_text())
    got = []
    maps_checked = False
    with densam.track(CLIP, prompts, CKPT, **OPTS) as frames:
        tmp = frames.out.parent
        for f in frames:
            if not maps_checked:
                pid = frames._child.proc.pid  # the running job's loaded libraries
                maps = Path(f"/proc/{pid}/maps").read_text()
                libs = sorted({ln.split()[-1] for ln in maps.splitlines() if ".so" in ln})
                assert any("/densam.libs/libavcodec" in p for p in libs), libs
                bad = foreign(libs)
                assert not bad, f"loaded from the system: {bad}"
                maps_checked = True
            got.append(f)
        assert frames.run is not None and frames.run["status"] == "complete"
    assert maps_checked or not want
    assert not tmp.exists(), "temporary folder left behind"
    same_frames(got, want)
    same_frames(list(densam.read_results(REF_JSONL)), want)
    same_frames(list(densam.read_results(REF)), want)  # the output folder works too


def t_track_close() -> None:
    # closed while the job runs (the clip takes seconds): stopped, folder removed
    frames = densam.track(CLIP, str(PROMPTS), CKPT, **OPTS)
    proc, tmp = frames._child.proc, frames.out.parent
    time.sleep(1.0)
    assert proc.poll() is None, "the job ended too soon for this check"
    frames.close()
    assert proc.returncode in (75, -15, -9), proc.returncode
    assert not tmp.exists()
    # left with `break` after the first frame
    with densam.track(CLIP, str(PROMPTS), CKPT, **OPTS) as frames:
        proc, tmp = frames._child.proc, frames.out.parent
        first = next(frames)
    assert proc.poll() is not None and not tmp.exists()
    assert first.frame_number == json.loads(REF_JSONL.read_text().splitlines()[0])["frame_number"]


def t_errors() -> None:
    def raises(exc, fn):  # noqa: ANN001, ANN202
        try:
            fn()
        except exc as e:
            return e
        raise AssertionError(f"no {exc.__name__}")

    e = raises(
        densam.InputError,
        lambda: densam.annotate(W / "missing.mp4", PROMPTS, CKPT, W / "err1", log=False, **OPTS),
    )
    assert e.exit_code == 3 and "missing.mp4" in str(e), e
    e = raises(
        densam.ModelError,
        lambda: densam.annotate(CLIP, PROMPTS, W / "none.pt", W / "err2", log=False, **OPTS),
    )
    assert e.exit_code == 6 and "none.pt" in str(e), e
    e = raises(
        densam.OptionsError,
        lambda: densam.annotate(CLIP, PROMPTS, CKPT, W / "err3", log=False, span="sideways"),
    )
    assert e.exit_code == 2, e
    e = raises(TypeError, lambda: densam.annotate(CLIP, PROMPTS, CKPT, W / "err4", imagesize=1))
    assert "image_size" in str(e), e
    e = raises(
        densam.CheckpointRefusedError,
        lambda: densam.annotate(
            CLIP, PROMPTS, CKPT, W / "api-out", log=False, **OPTS, fill_hole_area=0
        ),
    )
    assert e.exit_code == 4 and e.run is not None, e
    it = densam.track(W / "missing.mp4", PROMPTS, CKPT, **OPTS)
    raises(densam.InputError, lambda: list(it))


def t_review() -> None:
    flags = densam.review(REF_JSONL, W / "review", low_iou=0.5)
    assert isinstance(flags, list) and (W / "review" / "summary.json").is_file()
    lines = (W / "review" / "flags.jsonl").read_text().splitlines()
    assert [json.loads(x) for x in lines] == flags
    try:
        densam.review(REF_JSONL, W / "review2", lowiou=1)
        raise AssertionError("no TypeError")
    except TypeError:
        pass
    try:
        densam.review(W / "missing.jsonl", W / "review3")
        raise AssertionError("no InputError")
    except densam.InputError as e:
        assert e.exit_code == 3 and "missing.jsonl" in str(e), e


def t_options_match_help() -> None:
    text = densam_cli("annotate", "--help").stdout
    flags = set(re.findall(r"^\s+(?:-\w, )?(--[a-z][a-z0-9_-]*)", text, re.M))
    # the arguments of annotate(), and the seed script's spellings (docs/ARCHITECTURE.md §5; not
    # mapped: `_` names the same)
    own = {"--video", "--prompts", "--checkpoint", "--out", "--help"}
    flags = {f for f in flags if "_" not in f}
    mapped = {flag for flag, _ in densam.OPTIONS.values()}
    assert mapped <= flags, f"not in --help: {sorted(mapped - flags)}"
    assert flags - own <= mapped, f"no Python option for: {sorted(flags - own - mapped)}"


for name, fn in [
    ("metadata: requires torch 2.11 and numpy, which are installed", t_requirements),
    ("console script: --version, exit codes", t_cli),
    ("ldd: FFmpeg from the wheel, libtorch from torch", t_ldd),
    ("densam annotate: the release binary's bytes", t_cli_annotate),
    ("densam.annotate: same bytes, prompts as dicts, finished run kept", t_api_annotate),
    ("densam.annotate: interrupted by Ctrl-C, resumed, same bytes", t_api_resume),
    ("densam.track: frames and masks as the reference; loaded libraries", t_track),
    ("densam.track closed early: job stopped, folder removed", t_track_close),
    ("errors: exceptions per exit code", t_errors),
    ("densam.review: the flags of a result, its errors", t_review),
    ("options: the Python names cover `densam annotate --help`", t_options_match_help),
]:
    check(name, fn)
print(f"wheel: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
