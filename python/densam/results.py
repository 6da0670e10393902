"""Frame records of densam's result JSONL (``dense_annotations_<video id>.jsonl``), read as a
stream: one :class:`Frame` per line, each object's mask decoded from COCO RLE on first use."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np
import numpy.typing as npt

from . import rle

#: A file system path.
PathLike = Union[str, os.PathLike[str]]  # noqa: UP007 (a runtime alias, also for 3.10)


@dataclass(eq=False)
class TrackedObject:
    """One object on one frame. ``bbox`` is ``[xmin, ymin, xmax, ymax]`` in original video
    pixels, pixel-edge (``xmax`` = last mask column + 1); ``score`` the object-presence
    probability, ``iou`` the model's own IoU estimate, ``area`` the mask's pixel count."""

    id: str
    label: str | None
    bbox: list[int]
    score: float
    iou: float
    area: int
    #: COCO RLE (``{"size": [h, w], "counts": str}``), as in the file (``pycocotools`` reads it).
    segmentation: dict[str, Any]
    #: Every other field of the object in the file (e.g. HD-EPIC's ``assoc_id``, ``assoc_name``).
    extra: dict[str, Any] = field(default_factory=dict)
    _mask: npt.NDArray[np.bool_] | None = field(default=None, repr=False)

    @property
    def mask(self) -> npt.NDArray[np.bool_]:
        """The ``height`` x ``width`` boolean mask (decoded on first use, then kept)."""
        if self._mask is None:
            self._mask = rle.decode(self.segmentation)
        return self._mask

    @classmethod
    def from_json(cls, o: Mapping[str, Any]) -> TrackedObject:
        known = ("id", "label", "bbox", "score", "iou", "area", "segmentation")
        return cls(
            id=str(o["id"]),
            label=o.get("label"),
            bbox=list(o["bbox"]),
            score=float(o["score"]),
            iou=float(o["iou"]),
            area=int(o["area"]),
            segmentation=dict(o["segmentation"]),
            extra={k: v for k, v in o.items() if k not in known},
        )


@dataclass(eq=False)
class Frame:
    """One written frame: its number (presentation order from 0), time in seconds, and the
    objects with a non-empty mask on it."""

    frame_number: int
    time_s: float
    objects: list[TrackedObject]
    video_id: str | None = None
    #: Every other field of the line.
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Frame:
        known = ("frame_number", "time_s", "objects", "video_id")
        return cls(
            frame_number=int(d["frame_number"]),
            time_s=float(d["time_s"]),
            objects=[TrackedObject.from_json(o) for o in d.get("objects", [])],
            video_id=d.get("video_id"),
            extra={k: v for k, v in d.items() if k not in known},
        )

    def object(self, id: str) -> TrackedObject | None:
        """The object with this id on this frame (``None`` when its mask is empty here)."""
        for o in self.objects:
            if o.id == id:
                return o
        return None


def parse_line(line: str | bytes, where: str = "") -> Frame:
    """One JSONL line as a :class:`Frame` (``where`` names it in errors)."""
    try:
        return Frame.from_json(json.loads(line))
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{where}: not a densam result line: {e}") from None


def result_file(path: PathLike) -> Path:
    """``path`` itself, or the one ``dense_annotations_*.jsonl`` of an output folder."""
    p = Path(path)
    if p.is_dir():
        found = sorted(p.glob("dense_annotations_*.jsonl"))
        if len(found) != 1:
            raise FileNotFoundError(
                f"{p}: expected one dense_annotations_*.jsonl, found {len(found)}"
            )
        return found[0]
    return p


def read_results(path: PathLike) -> Iterator[Frame]:
    """The frames of a result JSONL (or of the output folder holding one), in file order, read
    line by line so that a long video's result need not fit in memory."""
    p = result_file(path)
    with open(p, "rb") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                yield parse_line(line, f"{p}:{n}")
