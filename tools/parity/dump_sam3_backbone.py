#!/usr/bin/env python3
"""Reference tensors of SAM 3's tracker image encoder (ViT trunk + the tracker's simple FPN +
conv_s0/conv_s1), fp32 on the CPU, from Meta's own `sam3` package.

The model is built and loaded by the SAM 3 tracker oracle (`run_tracker.py` of the oracles
folder: the tracker-only builder at image size S and its tracker-only loader of a `sam3.pt`
layout checkpoint), fed a seeded random normalised image batch, and these are written to
<out>/backbone.safetensors:

  images          [B,3,S,S]      the input
  trunk           [B,1024,g,g]   the ViT's output (g = S/14)
  fpn.{0,1,2}     backbone_fpn of forward_image (L0 after conv_s0, L1 after conv_s1, L2 raw)
  vision_pos.2    the sine PE of L2

Usage: dump_sam3_backbone.py --oracles DIR --ckpt sam3.pt --image-size S --seed N --batch B --out DIR
"""

from __future__ import annotations

import argparse
import os
import sys

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--oracles", required=True, help="the shared oracles folder")
    ap.add_argument("--ckpt", required=True, help="a checkpoint in the sam3.pt layout")
    ap.add_argument("--image-size", type=int, default=336)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    sys.path.insert(0, os.path.join(args.oracles, "sam3"))
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import run_tracker  # the oracle: builder, CPU patches, tracker-only loader
    from make_checkpoint import save_safetensors

    mb = run_tracker.import_sam3()
    S = args.image_size
    model = run_tracker.build(mb, S)
    run_tracker.load_checkpoint_tracker_only(model, args.ckpt)

    g = torch.Generator().manual_seed(args.seed)
    images = torch.randn(args.batch, 3, S, S, generator=g)
    out: dict[str, torch.Tensor] = {"images": images}
    with torch.inference_mode():
        out["trunk"] = model.backbone.vision_backbone.trunk(images)[-1]
        bo = model.forward_image(images)
        for i, t in enumerate(bo["backbone_fpn"]):
            out[f"fpn.{i}"] = t
        out["vision_pos.2"] = bo["vision_pos_enc"][2]
    os.makedirs(args.out, exist_ok=True)
    save_safetensors(
        {k: v.detach().to(torch.float32).contiguous() for k, v in out.items()},
        os.path.join(args.out, "backbone.safetensors"),
    )


if __name__ == "__main__":
    main()
