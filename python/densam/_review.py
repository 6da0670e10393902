"""``review``: ``densam review`` run as a child process; the flags it writes, as dicts."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from . import errors
from ._runtime import binary, environment
from .results import PathLike

#: Thresholds of ``densam review`` (keyword -> flag); defaults and their reasoning in the README.
THRESHOLDS: dict[str, str] = {
    "low_iou": "--low-iou",
    "area_jump": "--area-jump",
    "fragment_share": "--fragment-share",
    "box_jump": "--box-jump",
    "min_present": "--min-present",
    "relearn_after": "--relearn-after",
}


def review(result: PathLike, out: PathLike, **thresholds: float) -> list[dict[str, Any]]:
    """Run ``densam review`` on a result file into the folder ``out`` and return its flags.

    Each flag is one stretch of one object's frames that most likely needs a human, the records
    of ``out/flags.jsonl``: ``object``, ``first_frame``, ``last_frame`` (inclusive),
    ``first_time_s``, ``last_time_s``, ``reason`` (``lost``, ``reappeared``, ``fragmented``,
    ``box_jump``, ``area_jump``, ``low_iou``), ``severity`` (``low``, ``medium``, ``high``),
    ``value`` (the worst value of the stretch), ``threshold`` and ``frames``. ``out`` also
    gets ``flags.csv`` and ``summary.json``.

    Args:
        result: a ``dense_annotations_<id>.jsonl``.
        out: the report folder.
        **thresholds: ``low_iou``, ``area_jump``, ``fragment_share``, ``box_jump``,
            ``min_present``, ``relearn_after`` (see :data:`THRESHOLDS`).

    Raises:
        densam.errors.InputError: the result is missing or malformed (the message names the
            line).
        densam.errors.OutputError: the report cannot be written.
        TypeError: an unknown threshold.
    """
    argv = [os.fspath(binary()), "review", os.fspath(result), "--out", os.fspath(out)]
    for k, v in thresholds.items():
        if k not in THRESHOLDS:
            raise TypeError(f"review() got an unexpected keyword argument {k!r}")
        argv += [THRESHOLDS[k], str(v)]
    p = subprocess.run(argv, env=environment(), capture_output=True, text=True, check=False)
    if p.returncode != 0:
        lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
        message = (lines or [f"densam review exited with {p.returncode}"])[-1]
        raise errors.error_for(p.returncode, message, p.stderr)
    with open(Path(out) / "flags.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
