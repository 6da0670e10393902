"""COCO run-length encoding, decoded with numpy (no pycocotools needed).

densam writes masks as COCO RLE: ``{"size": [height, width], "counts": "<string>"}``, the runs of
the column-major (Fortran order) mask, alternating background and foreground and starting with
background, each run a signed 5-bit-group varint in characters from ``0`` (48) on, every run
after the second stored as the difference to the run two before. :func:`decode` gives the
same array as ``pycocotools.mask.decode``; uncompressed RLE (``counts`` a list of ints) is read
too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt


def counts_from_string(counts: str | bytes) -> npt.NDArray[np.int64]:
    """The run lengths of a compressed COCO RLE ``counts`` string."""
    raw = counts.encode("ascii") if isinstance(counts, str) else bytes(counts)
    if not raw:
        return np.zeros(0, dtype=np.int64)
    c = np.frombuffer(raw, dtype=np.uint8).astype(np.int64) - 48
    if (c < 0).any() or (c > 63).any():
        raise ValueError("COCO RLE counts: a character outside '0'..'o'")
    more = (c & 0x20) != 0
    if more[-1]:
        raise ValueError("COCO RLE counts: truncated (the last character continues a run)")
    ends = np.flatnonzero(~more)  # the last character of each run
    starts = np.concatenate(([0], ends[:-1] + 1))
    group = np.repeat(np.arange(len(ends)), ends - starts + 1)
    k = np.arange(len(c)) - starts[group]  # position of each character within its run
    if k.max(initial=0) > 12:
        raise ValueError("COCO RLE counts: a run longer than 64 bits")
    x = np.zeros(len(ends), dtype=np.int64)
    np.add.at(x, group, (c & 0x1F) << (5 * k))
    # sign: bit 0x10 of a run's last character extends to the left
    neg = (c[ends] & 0x10) != 0
    x[neg] |= -1 << (5 * (k[ends][neg] + 1))
    # runs after the second are stored as differences to the run two before
    if len(x) > 2:
        x[1::2] = np.cumsum(x[1::2])
        x[2::2] = np.cumsum(x[2::2])
    return x


def decode(rle: Mapping[str, Any]) -> npt.NDArray[np.bool_]:
    """The ``height`` x ``width`` boolean mask of a COCO RLE dict (``size`` and ``counts``)."""
    size = rle["size"]
    h, w = int(size[0]), int(size[1])
    counts = rle["counts"]
    if isinstance(counts, (str, bytes)):
        runs = counts_from_string(counts)
    elif isinstance(counts, Sequence):
        runs = np.asarray(counts, dtype=np.int64)
    else:
        raise ValueError(f"COCO RLE counts: a string or a list, not {type(counts).__name__}")
    if (runs < 0).any() or int(runs.sum()) != h * w:
        raise ValueError(
            f"COCO RLE: the runs cover {int(runs.sum())} pixels, the size {h}x{w} needs {h * w}"
        )
    values = (np.arange(len(runs)) % 2).astype(bool)
    mask: npt.NDArray[np.bool_] = np.repeat(values, runs).reshape(w, h).T
    return mask
