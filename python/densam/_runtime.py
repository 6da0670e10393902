"""Where the bundled ``densam`` binary is and how to start it: the environment that lets it find
the libtorch of the installed ``torch`` package.

The binary in ``densam/_bin/`` carries an rpath to ``$ORIGIN/../../torch/lib``: the ``torch``
package installed next to ``densam`` in the same ``site-packages``, CPU or CUDA build alike. Its
FFmpeg libraries are vendored in ``densam.libs/`` (rpath ``$ORIGIN/../../densam.libs``). Only when
``torch`` lives elsewhere (another ``site-packages`` on ``sys.path``, e.g. a venv with
``--system-site-packages`` or ``PYTHONPATH``) is its ``lib`` folder put on ``LD_LIBRARY_PATH``,
located with ``importlib.util.find_spec`` without importing torch.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from pathlib import Path

from .errors import ModelError

#: The torch release whose libtorch the binary was built against (C++ ABI: same minor version).
TORCH_SERIES = "2.11"

_PKG_DIR = Path(__file__).resolve().parent


class RuntimeSetupError(ModelError):
    """densam cannot start: the binary is missing or no usable torch is installed."""


def binary() -> Path:
    """The bundled ``densam`` executable."""
    exe = _PKG_DIR / "_bin" / "densam"
    if not exe.is_file():
        raise RuntimeSetupError(
            f"{exe} is missing: this densam package has no binary (install the wheel built by "
            "scripts/build-wheel)"
        )
    return exe


def _torch_lib_from_spec() -> Path | None:
    """``torch/lib`` of the ``torch`` package Python would import, without importing it."""
    try:
        spec = importlib.util.find_spec("torch")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        lib = Path(loc) / "lib"
        if (lib / "libtorch_cpu.so").exists():
            return lib
    return None


def _check_torch_version() -> None:
    try:
        version = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return  # a torch without metadata (e.g. a source tree on PYTHONPATH): let it try
    base = version.split("+")[0]
    if not (base == TORCH_SERIES or base.startswith(TORCH_SERIES + ".")):
        raise RuntimeSetupError(
            f"densam needs torch {TORCH_SERIES}.* (its libtorch is linked at run time), but "
            f"torch {version} is installed: pip install 'torch=={TORCH_SERIES}.*'"
        )


def environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment to run the binary in: ``base`` (default ``os.environ``), with torch's
    ``lib`` folder prepended to ``LD_LIBRARY_PATH`` only when the rpath does not reach it."""
    env = dict(os.environ if base is None else base)
    _check_torch_version()
    beside = _PKG_DIR.parent / "torch" / "lib"
    found = _torch_lib_from_spec()
    if found is None:
        if (beside / "libtorch_cpu.so").exists():
            return env
        raise RuntimeSetupError(
            f"torch {TORCH_SERIES} is not installed in this Python environment (densam links "
            f"its libtorch at run time): pip install 'torch=={TORCH_SERIES}.*'"
        )
    try:
        same = beside.exists() and os.path.samefile(found, beside)
    except OSError:
        same = False
    if not same:
        old = env.get("LD_LIBRARY_PATH", "")
        env["LD_LIBRARY_PATH"] = str(found) + (os.pathsep + old if old else "")
    return env
