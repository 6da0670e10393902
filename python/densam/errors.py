"""Exceptions of the densam Python API: one class per documented exit code of ``densam annotate``.

Every error carries the exit code (``exit_code``), the message the command printed
(``message``, its ``error:`` line) and the tail of its log (``stderr``).
"""

from __future__ import annotations

from typing import Any


class DensamError(RuntimeError):
    """A densam run failed. Subclasses name the documented exit codes."""

    #: The exit code this class stands for (``None``: any other, e.g. killed by a signal).
    code: int | None = None

    def __init__(
        self,
        message: str,
        *,
        exit_code: int | None = None,
        stderr: str = "",
        run: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code if exit_code is not None else self.code
        self.stderr = stderr
        #: ``run.json`` of the output folder when there is one (e.g. for
        #: :class:`FramesFailedError`), else ``None``.
        self.run = run

    def __str__(self) -> str:
        code = "" if self.exit_code is None else f" (exit {self.exit_code})"
        return f"{self.message}{code}"


class TrackingError(DensamError):
    """Exit 1: a failure while tracking, or an internal error."""

    code = 1


class OptionsError(DensamError, ValueError):
    """Exit 2: bad options (an option's value, or options that do not go together)."""

    code = 2


class InputError(DensamError):
    """Exit 3: bad input: the video missing or undecodable, the prompts malformed or unusable,
    an unknown video id, a prompt warning under ``strict=True``, an undecodable frame under
    ``strict=True``."""

    code = 3


class CheckpointRefusedError(DensamError):
    """Exit 4: the output folder holds a checkpoint or a finished result made with other
    parameters (pass ``restart=True`` to replace it), or an invalid checkpoint."""

    code = 4


class OutputError(DensamError):
    """Exit 5: the output folder is not writable, or writing failed (e.g. the disk is full;
    what was written up to the last checkpoint stays valid: free space and run again)."""

    code = 5


class ModelError(DensamError):
    """Exit 6: the model checkpoint is missing or invalid, or the device is unusable; also
    raised when the installed torch cannot be used."""

    code = 6


class FramesFailedError(DensamError):
    """Exit 7: the run finished, but some frames could not be decoded: their results are
    missing (``run["failures"]`` lists them). The results of every other frame are valid."""

    code = 7


class OutputBusyError(DensamError):
    """Exit 8: another densam run is using the output folder (it holds the folder's lock);
    nothing was changed. Wait for it to end, or use another output folder."""

    code = 8


class InterruptedRunError(DensamError):
    """Exit 75: stopped by a signal after checkpointing; run the same call again to continue."""

    code = 75


_BY_CODE: dict[int, type[DensamError]] = {
    c.code: c
    for c in (
        TrackingError,
        OptionsError,
        InputError,
        CheckpointRefusedError,
        OutputError,
        ModelError,
        FramesFailedError,
        OutputBusyError,
        InterruptedRunError,
    )
}


def error_for(
    exit_code: int, message: str, stderr: str = "", run: dict[str, Any] | None = None
) -> DensamError:
    """The exception for a run that exited with ``exit_code`` (negative: killed by a signal)."""
    cls = _BY_CODE.get(exit_code, DensamError)
    if exit_code < 0:
        message = f"{message} (killed by signal {-exit_code})"
    return cls(message, exit_code=exit_code, stderr=stderr, run=run)
