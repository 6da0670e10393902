#!/usr/bin/env python3
"""Reference tensors of the SAM 2 image encoder (docs/sam2-inference.md §6.18), fp32 on the CPU.

Loads a checkpoint made by make_checkpoint.py into the official model (built exactly as
`build_sam2_video_predictor` does, with `++model.image_size=S`), feeds it a seeded random
normalised image batch and writes to <out>/backbone.safetensors:

  images                    [B,3,S,S]   the input
  trunk.{0..3}              the Hiera stage outputs (NCHW)
  fpn.{0,1,2}               backbone_fpn after forward_image (L0 = conv_s0, L1 = conv_s1, L2 raw)
  vision_pos.2              sine PE of L2
  pe.*                      position-encoding checks: random-Fourier dense PE and point coords,
                            1-D sine PE, axial RoPE applied to random q/k (with repeat + exclude)

Usage: dump_backbone.py --ckpt DIR --seed N --batch B --out DIR
       dump_backbone.py --ckpt DIR --bench N   (prints the official forward_image time per frame)
"""

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_checkpoint import build, save_safetensors  # noqa: E402


def bench(model, images, n: int, meta: dict) -> None:
    import time

    with torch.no_grad():
        model.forward_image(images)  # warm-up
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            model.forward_image(images)
            times.append(time.perf_counter() - t0)
    times.sort()
    per_frame = times[len(times) // 2] / images.shape[0]
    print(
        json.dumps(
            {
                "impl": "official",
                "size": meta["size"],
                "version": meta["version"],
                "image_size": meta["image_size"],
                "threads": torch.get_num_threads(),
                "median_ms_per_frame": per_frame * 1e3,
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True, help="directory with model.pt and meta.json")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--out")
    ap.add_argument("--bench", type=int, default=0, help="time N forward_image calls instead")
    args = ap.parse_args()
    if not args.out and not args.bench:
        ap.error("--out is required unless --bench is given")
    torch.set_num_threads(int(os.environ.get("DENSAM_TORCH_THREADS", "1")))
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False

    with open(os.path.join(args.ckpt, "meta.json")) as f:
        meta = json.load(f)
    S = meta["image_size"]
    model = build(meta["size"], meta["version"], S)
    sd = torch.load(os.path.join(args.ckpt, "model.pt"), map_location="cpu", weights_only=True)["model"]
    model.load_state_dict(sd, strict=True)
    model.eval()

    g = torch.Generator().manual_seed(args.seed)
    images = torch.randn(args.batch, 3, S, S, generator=g)
    if args.bench:
        bench(model, images, args.bench, meta)
        return
    out = {"images": images}
    with torch.no_grad():
        trunk = model.image_encoder.trunk(images)
        for i, t in enumerate(trunk):
            out[f"trunk.{i}"] = t
        bo = model.forward_image(images)
        for i, t in enumerate(bo["backbone_fpn"]):
            out[f"fpn.{i}"] = t
        out["vision_pos.2"] = bo["vision_pos_enc"][2]

        # Position encodings (pure functions of shapes and the checkpoint's Gaussian matrix).
        from sam2.modeling.position_encoding import apply_rotary_enc, compute_axial_cis
        from sam2.modeling.sam2_utils import get_1d_sine_pe

        f = S // 16
        pe = model.sam_prompt_encoder.pe_layer
        out["pe.random_dense"] = pe((f, f)).unsqueeze(0)
        coords = torch.rand(2, 5, 2, generator=g) * S
        out["pe.coords"] = coords
        out["pe.random_coords"] = pe.forward_with_coords(coords, (S, S))
        pos = torch.tensor([0.0, 1.0, 7.0, -3.0, 40.0 / 15.0])
        out["pe.pos1d"] = pos
        out["pe.sine1d_64"] = get_1d_sine_pe(pos, 64)
        out["pe.sine1d_256"] = get_1d_sine_pe(pos, 256)
        cis = compute_axial_cis(dim=256, end_x=f, end_y=f, theta=10000.0)
        q = torch.randn(1, 1, f * f, 256, generator=g)
        k = torch.randn(1, 1, 2 * f * f + 4, 256, generator=g)
        out["pe.q"] = q
        out["pe.k"] = k
        nk = k.shape[-2] - 4
        qr, kr = apply_rotary_enc(q, k[:, :, :nk], freqs_cis=cis, repeat_freqs_k=True)
        out["pe.q_rot"] = qr
        out["pe.k_rot"] = torch.cat([kr, k[:, :, nk:]], dim=2)

    os.makedirs(args.out, exist_ok=True)
    save_safetensors(
        {k: v.detach().to(torch.float32).contiguous() for k, v in out.items()},
        os.path.join(args.out, "backbone.safetensors"),
    )


if __name__ == "__main__":
    main()
