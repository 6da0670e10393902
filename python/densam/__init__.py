"""densam: dense SAM 2 / SAM 2.1 masks for every frame of long videos, from a few prompts.

The ``densam`` command and this module run the same bundled binary (Rust on the libtorch of the
installed ``torch`` 2.11 package, FFmpeg vendored):

- :func:`annotate` runs a restartable job into an output folder and returns its ``run.json``;
- :func:`track` yields the frames (masks as numpy arrays) while the job runs;
- :func:`read_results` reads a result JSONL as the same frame records.

Errors are :class:`DensamError` subclasses, one per documented exit code.
"""

from __future__ import annotations

from ._api import OPTIONS, Prompts, Tracking, annotate, option_args, track
from .errors import (
    CheckpointRefusedError,
    DensamError,
    FramesFailedError,
    InputError,
    InterruptedRunError,
    OutputBusyError,
    ModelError,
    OptionsError,
    OutputError,
    TrackingError,
)
from ._review import review
from .results import Frame, TrackedObject, read_results
from .rle import decode as decode_rle

__version__ = "0.1.0"

__all__ = [
    "OPTIONS",
    "CheckpointRefusedError",
    "DensamError",
    "Frame",
    "FramesFailedError",
    "InputError",
    "InterruptedRunError",
    "OutputBusyError",
    "ModelError",
    "OptionsError",
    "OutputError",
    "Prompts",
    "TrackedObject",
    "Tracking",
    "TrackingError",
    "annotate",
    "decode_rle",
    "option_args",
    "read_results",
    "review",
    "track",
]
