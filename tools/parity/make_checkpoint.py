#!/usr/bin/env python3
"""Build an official SAM 2 / 2.1 model with seeded random weights and save it as a checkpoint.

The model is instantiated by the official `sam2` package exactly as `build_sam2_video_predictor`
does (same Hydra config and overrides, `++model.image_size=S`), its parameters are re-drawn from a
seeded generator so that nothing is a constant (zero biases, unit LayerNorm weights, zero
positional embeddings would hide indexing bugs), and the object-score head is biased to say
"present" so that masks are not all NO_OBJ_SCORE.

Writes, under --out:
  model.pt           `torch.save({"model": state_dict})`, the format Meta publishes
  model.safetensors  the same flat state dict
  meta.json          size, version, image size, seed, number of tensors

Usage: make_checkpoint.py --size tiny --version 2.1 --image-size 256 --seed 0 --out DIR

`--variant` writes a deliberately broken `model.pt` instead (for the loader's error tests):
  missing-key     `image_encoder.trunk.blocks.1.proj.weight` removed
  wrong-shape     `image_encoder.neck.convs.0.conv.bias` has 255 elements
  unexpected-key  an extra `image_encoder.trunk.extra.weight`
  no-model-key    `torch.save({"state_dict": ...})`
  not-sam2        `{"model": {"fc.weight": ...}}`, a state dict of something else
  legacy          the pre-zip `torch.save` format
"""

import argparse
import json
import math
import os
import struct
import sys

import torch

SIZES = {"tiny": "t", "small": "s", "base_plus": "b+", "large": "l"}


def config_name(size: str, version: str) -> str:
    s = SIZES[size]
    if version == "2.0":
        return f"configs/sam2/sam2_hiera_{s}.yaml"
    return f"configs/sam2.1/sam2.1_hiera_{s}.yaml"


def build(size: str, version: str, image_size: int):
    from sam2.build_sam import build_sam2_video_predictor

    return build_sam2_video_predictor(
        config_name(size, version),
        ckpt_path=None,
        device="cpu",
        mode="eval",
        hydra_overrides_extra=[f"++model.image_size={image_size}"],
    )


def randomize(state: dict, seed: int) -> dict:
    """Re-draws every tensor from a generator seeded by `seed`, in sorted key order.

    Matrices and kernels keep a fan-in scaled uniform init (as nn.Linear does) so that deep stacks
    stay well conditioned; vectors (biases, norms, embeddings) get N(0, 0.1) noise around their
    default value (1 for norm weights), layer-scale gammas get N(0.1, 0.05) so the CXBlocks matter.
    """
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name in sorted(state):
        t = state[name]
        if not t.is_floating_point():
            out[name] = t.clone()
            continue
        shape = t.shape
        if name.endswith(".gamma"):
            v = 0.1 + 0.05 * torch.randn(shape, generator=g)
        elif (
            t.dim() >= 2
            and not name.endswith("pos_embed")
            and not name.endswith("pos_embed_window")
            and "positional_encoding_gaussian_matrix" not in name
            and name
            not in (
                "maskmem_tpos_enc",
                "no_mem_embed",
                "no_mem_pos_enc",
                "no_obj_ptr",
                "no_obj_embed_spatial",
            )
            and not name.endswith("tokens.weight")
            and not name.endswith("token.weight")
            and not name.endswith("embed.weight")
            and "point_embeddings" not in name
        ):
            fan_in = math.prod(shape[1:])
            if name.endswith("output_upscaling.0.weight") or name.endswith(
                "output_upscaling.3.weight"
            ):
                fan_in = shape[0] * math.prod(shape[2:])  # ConvTranspose: [in, out, k, k]
            bound = 1.0 / math.sqrt(fan_in)
            v = (torch.rand(shape, generator=g) * 2 - 1) * bound * math.sqrt(3.0)
        elif "positional_encoding_gaussian_matrix" in name:
            v = torch.randn(shape, generator=g)
        elif name.endswith("norm1.weight") or name.endswith("norm2.weight") or (
            ".norm" in name and name.endswith(".weight")
        ) or name.endswith("norm_final_attn.weight") or (
            t.dim() == 1 and name.endswith(".weight") and bool((t == 1).all())
        ):
            v = 1.0 + 0.1 * torch.randn(shape, generator=g)
        else:
            v = 0.1 * torch.randn(shape, generator=g)
        out[name] = v.to(torch.float32).contiguous()
    # Object-score head says "present" (logit ~ +10), or every mask is NO_OBJ_SCORE.
    k = "sam_mask_decoder.pred_obj_score_head.layers.2.bias"
    if k in out:
        out[k] = torch.full_like(out[k], 10.0)
    return out


def save_safetensors(state: dict, path: str) -> None:
    """Writes a flat f32 state dict in the safetensors layout (no external package needed)."""
    header = {}
    offset = 0
    blobs = []
    for name in sorted(state):
        t = state[name].contiguous()
        dtype = {torch.float32: "F32", torch.int64: "I64", torch.int32: "I32"}[t.dtype]
        data = t.numpy().tobytes()
        header[name] = {
            "dtype": dtype,
            "shape": list(t.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        offset += len(data)
        blobs.append(data)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def write_broken(state: dict, variant: str, path: str) -> None:
    from collections import OrderedDict

    sd = OrderedDict(state)
    if variant == "missing-key":
        del sd["image_encoder.trunk.blocks.1.proj.weight"]
    elif variant == "wrong-shape":
        sd["image_encoder.neck.convs.0.conv.bias"] = torch.zeros(255)
    elif variant == "unexpected-key":
        sd["image_encoder.trunk.extra.weight"] = torch.zeros(3)
    if variant == "no-model-key":
        torch.save({"state_dict": sd}, path)
    elif variant == "not-sam2":
        torch.save({"model": OrderedDict(fc=torch.zeros(2, 3))}, path)
    elif variant == "legacy":
        torch.save({"model": OrderedDict(fc=torch.zeros(2, 3))}, path, _use_new_zipfile_serialization=False)
    else:
        torch.save({"model": sd}, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=sorted(SIZES), default="tiny")
    ap.add_argument("--version", choices=["2.0", "2.1"], default="2.1")
    ap.add_argument("--image-size", type=int, default=1024)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    ap.add_argument(
        "--variant",
        default="ok",
        choices=["ok", "missing-key", "wrong-shape", "unexpected-key", "no-model-key", "not-sam2", "legacy"],
    )
    args = ap.parse_args()
    if args.image_size % 64 or not 256 <= args.image_size <= 1024:
        sys.exit("--image-size must be a multiple of 64 in 256..=1024")

    torch.manual_seed(args.seed)
    model = build(args.size, args.version, args.image_size)
    state = randomize(model.state_dict(), args.seed)
    # Strict round trip through the official model: same keys, same shapes.
    model.load_state_dict(state, strict=True)

    os.makedirs(args.out, exist_ok=True)
    if args.variant != "ok":
        write_broken(state, args.variant, os.path.join(args.out, "model.pt"))
        return
    torch.save({"model": model.state_dict()}, os.path.join(args.out, "model.pt"))
    save_safetensors(state, os.path.join(args.out, "model.safetensors"))
    with open(os.path.join(args.out, "meta.json"), "w") as f:
        json.dump(
            {
                "size": args.size,
                "version": args.version,
                "image_size": args.image_size,
                "seed": args.seed,
                "num_tensors": len(state),
            },
            f,
            indent=1,
        )


if __name__ == "__main__":
    main()
