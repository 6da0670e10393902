#!/usr/bin/env python3
"""densam.rle.decode against pycocotools.mask.decode (run by scripts/test-wheel with the project
venv, which has pycocotools): every mask of the given result JSONL files, seeded random masks of
random sizes and densities, empty and full masks, and uncompressed RLE.

Usage: rle_check.py [RESULT.jsonl ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pycocotools.mask as cocomask

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from densam.rle import decode  # noqa: E402


def same(rle: dict, want: np.ndarray) -> None:
    got = decode(rle)
    assert got.dtype == np.bool_ and got.shape == want.shape, (got.shape, want.shape)
    assert (got == want.astype(bool)).all()


def main() -> None:
    n = 0
    for path in sys.argv[1:]:
        for line in open(path, encoding="utf-8"):
            for o in json.loads(line)["objects"]:
                seg = o["segmentation"]
                want = cocomask.decode({"size": seg["size"], "counts": seg["counts"].encode()})
                same(seg, want)
                n += 1
    rng = np.random.default_rng(0)
    for t in range(400):
        h, w = (int(v) for v in rng.integers(1, 400, 2))
        kind = t % 4
        if kind == 0:
            m = rng.random((h, w)) < rng.random()
        elif kind == 1:  # blobs: long runs
            m = np.zeros((h, w), bool)
            m[rng.integers(0, h) :, rng.integers(0, w) :] = True
        elif kind == 2:
            m = np.zeros((h, w), bool)
        else:
            m = np.ones((h, w), bool)
        rle = cocomask.encode(np.asfortranarray(m.astype(np.uint8)))
        same({"size": rle["size"], "counts": rle["counts"].decode()}, m)
        same(rle, m)  # bytes counts
        flat = m.T.ravel()  # column-major
        edges = np.r_[0, np.flatnonzero(flat[1:] != flat[:-1]) + 1, flat.size]
        runs = [0] * bool(flat[0]) + [int(r) for r in np.diff(edges)]
        same({"size": [h, w], "counts": runs}, m)  # uncompressed
        same(
            {"size": [h, w], "counts": runs},
            cocomask.decode(cocomask.frPyObjects({"size": [h, w], "counts": runs}, h, w)),
        )
        n += 1
    big = np.zeros((1408, 1408), bool)
    big[100:1300, 7:1400] = True
    rle = cocomask.encode(np.asfortranarray(big.astype(np.uint8)))
    same(rle, big)
    for bad in ("", "0?", "1"):
        try:
            decode({"size": [2, 2], "counts": bad})
        except ValueError:
            continue
        raise AssertionError(f"accepted {bad!r}")
    print(f"rle: {n} masks decoded as pycocotools does")


if __name__ == "__main__":
    main()
