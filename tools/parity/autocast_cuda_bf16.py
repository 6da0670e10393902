#!/usr/bin/env python3
"""Runs another parity script with the official `torch.autocast("cuda", torch.bfloat16)` casts
emulated on the CPU (where CUDA autocast cannot run and CPU autocast uses other op lists).

The ops of autocast's CUDA lists that SAM 2 calls are patched: `F.linear`, `F.conv2d`,
`F.conv_transpose2d`, `Tensor.__matmul__` and `F.scaled_dot_product_attention` cast their
floating inputs (weights included) to bf16; `F.layer_norm` and `Tensor.pow` cast to f32; every
other op runs as written, with PyTorch's type promotion, as under autocast.

  autocast_cuda_bf16.py SCRIPT.py ARGS...

e.g. `autocast_cuda_bf16.py tools/parity/reference_video.py run --checkpoint ... --out ref.json`
gives the bf16 reference of densam's `--dtype bf16`. Measured on the tracker parity clip (tiny
2.1 random weights at 256, 32 frames, 3 objects): densam bf16 vs this reference, mask IoU per
object-frame min 0.9932, mean 0.9964; the image encoder's outputs are bit-identical.
"""

import os
import runpy
import sys

import torch
import torch.nn.functional as F

BF16 = torch.bfloat16


def _lo(t):
    return t.to(BF16) if isinstance(t, torch.Tensor) and t.is_floating_point() else t


def _hi(t):
    return t.float() if isinstance(t, torch.Tensor) and t.is_floating_point() else t


def patch() -> None:
    lin, c2, ct2 = F.linear, F.conv2d, F.conv_transpose2d
    sdpa, ln = F.scaled_dot_product_attention, F.layer_norm
    mm, pw = torch.Tensor.__matmul__, torch.Tensor.pow
    F.linear = lambda x, w, b=None: lin(_lo(x), _lo(w), _lo(b))
    F.conv2d = lambda x, w, b=None, *a, **k: c2(_lo(x), _lo(w), _lo(b), *a, **k)
    F.conv_transpose2d = lambda x, w, b=None, *a, **k: ct2(_lo(x), _lo(w), _lo(b), *a, **k)
    F.scaled_dot_product_attention = lambda q, k, v, *a, **kw: sdpa(_lo(q), _lo(k), _lo(v), *a, **kw)
    F.layer_norm = lambda x, s, w=None, b=None, eps=1e-5: ln(_hi(x), s, _hi(w), _hi(b), eps)
    torch.Tensor.__matmul__ = lambda a, b: mm(_lo(a), _lo(b))
    torch.Tensor.pow = lambda a, e: pw(_hi(a), e)


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    patch()
    script = sys.argv[1]
    sys.argv = sys.argv[1:]
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
