"""``annotate`` and ``track``: ``densam annotate`` run as a child process with the options given
as keyword arguments, its exit code turned into a :mod:`densam.errors` exception.

``track`` runs the job into a temporary output folder and reads the result file while it grows
(complete lines only): the job writes its JSONL in frame order, first to
``.dense_annotations_<id>.jsonl.partial`` and, when done, renames it to the final name.
"""

from __future__ import annotations

import atexit
import collections
import difflib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, cast

from . import errors
from ._runtime import binary, environment
from .results import Frame, PathLike, parse_line

#: Prompts: a path to a prompts file, ``{"objects": [...]}``, or the list of object dicts.
Prompts = PathLike | Mapping[str, Any] | Sequence[Mapping[str, Any]] | None

# Keyword options -> flags of `densam annotate` (see `densam annotate --help` and the README).
# kind: "flag" (bool), "value" (number or string), "path".
OPTIONS: dict[str, tuple[str, str]] = {
    # input
    "video_id": ("--video-id", "value"),
    "videos_root": ("--videos-root", "path"),
    "hd_epic_assoc": ("--hd-epic-assoc", "path"),
    "hd_epic_masks": ("--hd-epic-masks", "path"),
    "hd_epic_mask_dir": ("--hd-epic-mask-dir", "path"),
    "hd_epic_prompt": ("--hd-epic-prompt", "value"),
    # tracking
    "image_size": ("--image-size", "value"),
    "fill_hole_area": ("--fill-hole-area", "value"),
    "track_stride": ("--track-stride", "value"),
    "frame_interval": ("--frame-interval", "value"),
    "video_scale_factor": ("--video-scale-factor", "value"),
    "max_cond_frames": ("--max-cond-frames", "value"),
    "span": ("--span", "value"),
    "span_margin": ("--span-margin", "value"),
    "memory_temporal_stride": ("--memory-temporal-stride", "value"),
    "memory_policy": ("--memory-policy", "value"),
    "device": ("--device", "value"),
    "dtype": ("--dtype", "value"),
    "batch_objects": ("--batch-objects", "value"),
    "reverse_chunk": ("--reverse-chunk", "value"),
    "static_shapes": ("--static-shapes", "flag"),
    "strict": ("--strict", "flag"),
    # job
    "window_duration": ("--window-duration", "value"),
    "window_overlap": ("--window-overlap", "value"),
    "window": ("--window", "value"),
    "checkpoint_every": ("--checkpoint-every", "value"),
    "restart": ("--restart", "flag"),
    "keep_checkpoints": ("--keep-checkpoints", "flag"),
    "quiet": ("--quiet", "flag"),
    "verbose": ("--verbose", "flag"),
    "profile": ("--profile", "flag"),
    "trace": ("--trace", "path"),
}

# Children still running when the interpreter exits are stopped (SIGTERM: they checkpoint).
_LIVE: weakref.WeakSet[subprocess.Popen[bytes]] = weakref.WeakSet()


@atexit.register
def _stop_children() -> None:
    for p in list(_LIVE):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in list(_LIVE):
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()


def option_args(options: Mapping[str, Any], caller: str = "annotate") -> list[str]:
    """The command-line flags for keyword ``options`` (``None`` values are left out).

    Raises ``TypeError`` for an unknown name (naming the closest known one) or a flag given a
    value that is not a bool."""
    out: list[str] = []
    for name, value in options.items():
        if name not in OPTIONS:
            close = difflib.get_close_matches(name, OPTIONS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise TypeError(
                f"{caller}() got an unknown option {name!r}{hint} (options: {', '.join(OPTIONS)})"
            )
        if value is None:
            continue
        flag, kind = OPTIONS[name]
        if kind == "flag":
            if not isinstance(value, bool):
                raise TypeError(f"{caller}(): option {name!r} takes True or False, not {value!r}")
            if value:
                out.append(flag)
        elif isinstance(value, bool):
            raise TypeError(f"{caller}(): option {name!r} takes a value, not {value!r}")
        else:
            out += [flag, os.fspath(value) if kind == "path" else str(value)]
    return out


def _prompts_arg(prompts: Prompts, tmp: Path) -> list[str]:
    """``--prompts PATH``: the path given, or the dicts written to ``tmp/prompts.json``. The job
    identifies prompts by their bytes, so the same dicts give the same file (resume works)."""
    if prompts is None:
        return []
    if isinstance(prompts, (str, os.PathLike)):
        return ["--prompts", os.fspath(prompts)]
    if isinstance(prompts, Mapping):
        doc = dict(prompts)
    elif isinstance(prompts, Sequence):
        doc = {"objects": list(prompts)}
    else:
        raise TypeError(
            "prompts: a path, {'objects': [...]} or a list of object dicts, not "
            f"{type(prompts).__name__}"
        )
    path = tmp / "prompts.json"
    path.write_text(json.dumps(doc, ensure_ascii=False) + "\n", encoding="utf-8")
    return ["--prompts", os.fspath(path)]


def _command(
    video: PathLike | None,
    prompts: Prompts,
    checkpoint: PathLike,
    out: PathLike,
    options: Mapping[str, Any],
    tmp: Path,
    caller: str,
) -> list[str]:
    args = [os.fspath(binary()), "annotate"]
    if video is not None:
        args += ["--video", os.fspath(video)]
    args += _prompts_arg(prompts, tmp)
    args += ["--checkpoint", os.fspath(checkpoint), "--out", os.fspath(out)]
    return args + option_args(options, caller)


class _Child:
    """A running ``densam annotate``: its stderr forwarded line by line to ``log`` (when given)
    and its last lines kept for the error message."""

    def __init__(self, argv: list[str], log: bool | IO[str]) -> None:
        env = environment()
        self.tail: collections.deque[str] = collections.deque(maxlen=200)
        self._log = sys.stderr if log is True else (log or None)
        # Its own session: a Ctrl-C in a terminal reaches Python only, which passes it on once
        # (the job would take a second SIGINT from the terminal as "stop at once").
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
        _LIVE.add(self.proc)
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()

    def _pump(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace")
            self.tail.append(line)
            out = self._log
            if out is not None:
                try:
                    out.write(line)
                    out.flush()
                except Exception:  # a closed log stream must not break the run
                    self._log = None

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(sig)
            except ProcessLookupError:
                pass

    def wait(self) -> int:
        """Waits for the exit; a KeyboardInterrupt passes SIGINT on (the job checkpoints and
        exits 75; a second one stops it at once), waits, and is raised again."""
        interrupted = 0
        while True:
            try:
                # short waits: a pending KeyboardInterrupt (e.g. a notebook's interrupt, which
                # may reach another thread) is raised between them
                code = self.proc.wait(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                continue
            except KeyboardInterrupt:
                interrupted += 1
                self.signal(signal.SIGINT)
        self._reader.join()
        if interrupted:
            raise KeyboardInterrupt
        return code

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; waits for the exit."""
        self.signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout=5)

    def error(self, code: int, run: dict[str, Any] | None = None) -> errors.DensamError:
        text = "".join(self.tail)
        lines = [ln.strip() for ln in self.tail if ln.strip()]
        said = [ln for ln in lines if "error:" in ln or " ERROR " in ln]
        message = (said or lines or [f"densam annotate exited with {code}"])[-1]
        return errors.error_for(code, message, text, run)


def _read_run(out: Path) -> dict[str, Any] | None:
    try:
        with open(out / "run.json", encoding="utf-8") as f:
            return cast(dict[str, Any], json.load(f))
    except (OSError, ValueError):
        return None


def annotate(
    video: PathLike | None,
    prompts: Prompts,
    checkpoint: PathLike,
    out: PathLike,
    *,
    log: bool | IO[str] = True,
    **options: Any,
) -> dict[str, Any]:
    """Run ``densam annotate`` into the folder ``out`` and return its ``run.json``.

    The same job as the command line: ``out`` gets ``dense_annotations_<video id>.jsonl`` and
    ``run.json``; calling again with the same arguments resumes an interrupted run from its
    checkpoint (the result is byte-identical to an uninterrupted run) or, when it is complete,
    changes nothing. Read the result with :func:`densam.read_results`.

    Args:
        video: a video file, a folder of numbered frames or an image (``None`` with HD-EPIC's
            ``videos_root``).
        prompts: a prompts file's path, or its content as ``{"objects": [...]}`` or as the list
            of object dicts (``{"id", "label", "prompts": [{"frame", "box" | "points" +
            "labels" | "mask"}]}``); ``None`` with ``hd_epic_assoc``. Dicts are written to a
            temporary file; the job recognises prompts by content, so resuming works with the
            same dicts (not with a file of other formatting).
        checkpoint: a SAM 2 / 2.1 checkpoint or SAM 3's ``sam3.pt`` (official ``.pt`` or
            safetensors); options left out take the model's own defaults.
        out: the output folder.
        log: where the job's log goes: ``True`` (``sys.stderr``), ``False`` (nowhere) or a
            text stream.
        **options: ``densam annotate``'s options with ``_`` for ``-``, e.g.
            ``image_size=512, device="cuda", span="prompts", strict=True`` (see
            :data:`OPTIONS`; ``True`` turns a flag on).

    Raises:
        densam.errors.DensamError: a subclass per exit code (:class:`~densam.errors.InputError`
            for bad input, :class:`~densam.errors.FramesFailedError` when frames could not be
            decoded, with ``run.json`` as ``.run``, ...).
        TypeError: an unknown option.
        KeyboardInterrupt: after the job checkpointed (call again to continue).
    """
    outp = Path(out)
    with tempfile.TemporaryDirectory(prefix="densam-prompts-") as tmp:
        argv = _command(video, prompts, checkpoint, out, options, Path(tmp), "annotate")
        child = _Child(argv, log)
        code = child.wait()
    run = _read_run(outp)
    if code == 0 and run is not None:
        return run
    if code == 0:
        raise errors.OutputError(f"{outp / 'run.json'}: missing or unreadable after the run")
    raise child.error(code, run)


class Tracking(Iterator[Frame]):
    """The frames of a running ``densam annotate`` as they are written (see :func:`track`).

    An iterator; use it in a ``with`` block or call :meth:`close` when leaving early, which
    stops the job (otherwise that happens when the object is garbage-collected). After the last
    frame, :attr:`run` holds the job's ``run.json``."""

    def __init__(
        self,
        argv_of: Callable[[Path, Path], list[str]],
        workdir: PathLike | None,
        log: bool | IO[str],
    ) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="densam-track-", dir=workdir))
        #: The job's (temporary) output folder.
        self.out = self._dir / "out"
        #: ``run.json`` once the job has finished (``None`` before).
        self.run: dict[str, Any] | None = None
        self._file: IO[bytes] | None = None
        self._final = False  # reading the renamed, final result (the job has exited)
        self._buf = b""
        self._offset = 0  # bytes of the complete lines consumed
        self._lines = 0
        self._done = False
        self._child: _Child | None = None
        try:
            self._child = _Child(argv_of(self._dir, self.out), log)
        except BaseException:
            self._cleanup()
            raise

    def __iter__(self) -> Tracking:
        return self

    def __enter__(self) -> Tracking:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def _open(self) -> bool:
        """Opens the result being written (the partial), or the final one once the job ended."""
        final, partial = "dense_annotations_*.jsonl", ".dense_annotations_*.jsonl.partial"
        pattern = final if self._final else partial
        found = sorted(self.out.glob(pattern))
        if not found:
            return False
        self._file = open(found[0], "rb")
        self._file.seek(self._offset)
        self._buf = b""
        return True

    def _next_line(self) -> bytes | None:
        """The next complete line, or ``None`` when none is there (yet)."""
        while True:
            nl = self._buf.find(b"\n")
            if nl >= 0:
                line, self._buf = self._buf[: nl + 1], self._buf[nl + 1 :]
                self._offset += len(line)
                return line
            if self._file is None and not self._open():
                return None
            assert self._file is not None
            chunk = self._file.read(1 << 20)
            if not chunk:
                return None
            self._buf += chunk

    def __next__(self) -> Frame:
        if self._done:
            raise StopIteration
        try:
            while True:
                line = self._next_line()
                if line is not None:
                    self._lines += 1
                    if line.strip():
                        return parse_line(line, f"{self.out} (line {self._lines})")
                    continue
                if self._final:
                    break
                assert self._child is not None
                if self._child.proc.poll() is None:
                    time.sleep(0.05)
                    continue
                code = self._child.wait()
                self.run = _read_run(self.out)
                if code not in (0, errors.FramesFailedError.code):
                    raise self._child.error(code, self.run)
                # Done: the partial was renamed; go on in the final file where we stopped.
                self._final = True
                if self._file is not None:
                    self._file.close()
                    self._file = None
            assert self._child is not None
            code = self._child.proc.returncode
            if code != 0:
                raise self._child.error(code, self.run)
            self.close()
            raise StopIteration
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Stops the job if it still runs (SIGTERM, then SIGKILL after 10 s), waits for it and
        removes the temporary folder."""
        child = self._child
        if child is not None and child.proc.poll() is None:
            child.stop()
        self._done = True
        self._cleanup()

    def _cleanup(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        shutil.rmtree(self._dir, ignore_errors=True)


def track(
    video: PathLike | None,
    prompts: Prompts,
    checkpoint: PathLike,
    *,
    workdir: PathLike | None = None,
    log: bool | IO[str] = False,
    **options: Any,
) -> Tracking:
    """Track the prompted objects through the video and yield each written frame as it comes.

    Runs ``densam annotate`` (same options, same results as :func:`annotate`) into a temporary
    folder under ``workdir`` (default: the system's temporary folder) and streams its result:
    one :class:`~densam.Frame` per written frame in frame order, each object with ``id``,
    ``label``, ``bbox``, ``score``, ``iou``, ``area`` and ``mask`` (a boolean numpy array,
    decoded on first use). SAM 2 tracks backwards from the first prompt too, so the frames
    before it arrive in one burst once that reverse pass is done.

    The folder is removed when the iterator is exhausted, fails or is closed; closing it early
    (``break`` inside ``with densam.track(...) as frames:``, or :meth:`Tracking.close`) stops
    the job. Nothing is resumable: for long jobs use :func:`annotate` and
    :func:`densam.read_results`.

    Args: as :func:`annotate`; ``log`` defaults to ``False`` (no log).

    Raises:
        densam.errors.DensamError: when the job fails (a subclass per exit code), raised by the
            iteration; :class:`~densam.errors.FramesFailedError` after the last frame when some
            frames could not be decoded.
        TypeError: an unknown option (at once).
    """
    option_args(options, "track")  # unknown names fail here, before anything starts

    def argv_of(tmp: Path, out: Path) -> list[str]:
        return _command(video, prompts, checkpoint, out, options, tmp, "track")

    return Tracking(argv_of, workdir, log)
