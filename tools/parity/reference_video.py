#!/usr/bin/env python3
"""End-to-end reference for the densam tracker: the official `SAM2VideoPredictor` (sam2 1.1.0,
fp32 CPU) on a generated lossless clip, with the prompts of a densam prompts file.

  reference_video.py make-clip --out DIR [--frames 32 --width 320 --height 240]
      writes DIR/frames/00000.png ... (RGB, lossless) and DIR/prompts.json: three objects, one
      prompted later than the others, a negative point, boxes, mask prompts (COCO RLE), a mask
      and a click on the same frame, an object with three conditioning frames.

  reference_video.py run --checkpoint model.pt --frames DIR --prompts P.json --out R.json
      [--version 2.1 --image-size 256 --threads 1 --track-stride 1 --frame-interval 1
       --max-cond-frames -1 --memory-temporal-stride 1 --fill-hole-area 0]
      The processed frames (every track-stride-th, every frame-interval-th and every prompted
      frame, as densam plans them) are the video the predictor sees; prompts are added per
      object in file order, frames ascending (mask first, then box + points in one call);
      `propagate_in_video` forward from the earliest prompt, then reverse=True, the last result
      kept per frame. Writes the masks (logits > 0 at video resolution) of the written frames
      as COCO RLE: {"frames": [{"frame_number", "objects": {id: rle}}]}, plus "holes": the
      number of low-res pixels hole filling changed (over every call); with --lowres-out, the
      stored low-res logits of every processed frame and object.

Hole filling (--fill-hole-area N > 0): the official `fill_holes_in_mask_scores` needs the CUDA
extension `sam2._C` for its connected components; a CPU-only install has none, and the official
code then silently skips hole filling. Here `sam2.utils.misc.get_connected_components` is
replaced by a CPU version with the kernel's semantics (`sam2/csrc/connected_components.cu`):
8-connectivity components of the nonzero pixels of each [1, H, W] map (H, W even, as the kernel
asserts), labels = 1 + the smallest 2x2-block origin index of the component (the root its
atomicMin union-find ends at), 0 elsewhere; counts = the component's area at each of its pixels,
0 elsewhere. With 0, hole filling is off (what the official package does on a CPU).

The official code raises a dtype error when an object is tracked before its own first prompt
without autocast (bf16 memories and no object pointer, docs/sam2-inference.md §4.4, last
paragraph); memory attention's memory input is upcast to f32 here, which changes no value.
"""

import argparse
import json
import os
import sys

import numpy as np


def make_clip(out: str, n: int, width: int, height: int) -> None:
    from PIL import Image
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(1234)
    os.makedirs(os.path.join(out, "frames"), exist_ok=True)
    yy, xx = np.mgrid[0:height, 0:width]
    bg = rng.integers(0, 256, size=(height // 8 + 1, width // 8 + 1, 3)).astype(np.float64)
    bg = np.kron(bg, np.ones((8, 8, 1)))[:height, :width]
    first_masks = {}
    for t in range(n):
        img = 0.6 * bg + 0.4 * np.stack(
            [128 + 100 * np.sin((xx + 3 * t) / 17.0), 128 + 100 * np.cos((yy - 2 * t) / 23.0),
             128 + 60 * np.sin((xx + yy) / 31.0)], -1)
        # A red disc moving right, a green square moving down, a blue ellipse appearing at 10.
        cx, cy = 60 + 4 * t, 80 + int(10 * np.sin(t / 5))
        disc = (xx - cx) ** 2 + (yy - cy) ** 2 < 28 ** 2
        sq = (abs(xx - 220) < 25) & (abs(yy - (40 + 3 * t)) < 25)
        ell = ((xx - 160 - 2 * t) / 40.0) ** 2 + ((yy - 180) / 22.0) ** 2 < 1
        img[disc] = [220, 30, 30]
        img[sq] = [30, 200, 40]
        if t >= 8:
            img[ell] = [40, 50, 210]
        first_masks[t] = ell
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(
            os.path.join(out, "frames", f"{t:05d}.png"))
    t_mask = 11
    rle = mask_utils.encode(np.asfortranarray(first_masks[t_mask].astype(np.uint8)))
    cx25, cy25 = 60 + 4 * 25, 80 + int(10 * np.sin(25 / 5))
    disc25 = (xx - cx25) ** 2 + (yy - cy25) ** 2 < 28 ** 2
    rle25 = mask_utils.encode(np.asfortranarray(disc25.astype(np.uint8)))
    prompts = {"objects": [
        # A box; later a mask refined by a click on the same frame (add_new_mask, then
        # add_new_points_or_box with the mask's logits as the previous mask).
        {"id": "disc", "label": "disc", "prompts": [
            {"frame": 3, "box": [60 + 12 - 30, 80 + int(10 * np.sin(3 / 5)) - 30, 60 + 12 + 30,
                                 80 + int(10 * np.sin(3 / 5)) + 30]},
            {"frame": 25, "mask": {"size": [height, width],
                                   "counts": rle25["counts"].decode("ascii")}},
            {"frame": 25, "points": [[cx25, cy25]], "labels": [1]}]},
        # Positive + negative points; one click (multimask); a box: three conditioning frames.
        {"id": "square", "label": "square", "prompts": [
            {"frame": 3, "points": [[220, 49], [60, 200]], "labels": [1, 0]},
            {"frame": 20, "points": [[222, 100]], "labels": [1]},
            {"frame": 27, "box": [195, 96, 245, 146]}]},
        {"id": "ellipse", "label": "ellipse", "prompts": [
            {"frame": t_mask, "mask": {"size": [height, width],
                                       "counts": rle["counts"].decode("ascii")}}]},
    ]}
    with open(os.path.join(out, "prompts.json"), "w") as f:
        json.dump(prompts, f, indent=1)


def connected_components_like_cuda(mask):
    """`sam2._C.get_connected_componnets` on the CPU: (labels, counts), int32 [N, 1, H, W]."""
    import torch
    from scipy import ndimage

    m = mask.to(torch.uint8).cpu().numpy()
    n, c, h, w = m.shape
    assert c == 1 and h % 2 == 0 and w % 2 == 0, "inputs must be [N, 1, H, W], H and W even"
    labels = np.zeros(m.shape, np.int32)
    counts = np.zeros(m.shape, np.int32)
    rows, cols = np.mgrid[0:h, 0:w]
    block = (rows // 2 * 2) * w + (cols // 2 * 2)
    for i in range(n):
        lab, k = ndimage.label(m[i, 0] != 0, structure=np.ones((3, 3), bool))
        if k == 0:
            continue
        ids = np.arange(1, k + 1)
        root = np.asarray(ndimage.minimum(block, lab, ids), np.int64)
        area = np.bincount(lab.ravel(), minlength=k + 1)
        fg = lab > 0
        labels[i, 0][fg] = root[lab[fg] - 1] + 1
        counts[i, 0][fg] = area[lab[fg]]
    return torch.from_numpy(labels).to(mask.device), torch.from_numpy(counts).to(mask.device)


def processed_frames(num_frames, prompted, stride, interval):
    return sorted({f for f in range(num_frames) if f % stride == 0 or f % interval == 0}
                  | set(prompted))


def run(args) -> None:
    import torch
    from PIL import Image
    from pycocotools import mask as mask_utils

    torch.set_num_threads(args.threads)
    import sam2.sam2_video_predictor as svp
    from sam2.build_sam import build_sam2_video_predictor
    from sam2.utils.misc import _load_img_as_tensor

    with open(args.prompts) as f:
        prompts = json.load(f)["objects"]
    names = sorted((p for p in os.listdir(args.frames) if p.endswith(".png")),
                   key=lambda p: int(os.path.splitext(p)[0]))
    num_frames = len(names)
    prompted = sorted({p["frame"] for o in prompts for p in o["prompts"]})
    proc = processed_frames(num_frames, prompted, args.track_stride, args.frame_interval)
    index = {f: i for i, f in enumerate(proc)}

    def load_frames(video_path, image_size, offload_video_to_cpu, **kw):
        # load_video_frames_from_jpg_images for the processed PNG frames.
        img_mean = torch.tensor((0.485, 0.456, 0.406), dtype=torch.float32)[:, None, None]
        img_std = torch.tensor((0.229, 0.224, 0.225), dtype=torch.float32)[:, None, None]
        images = torch.zeros(len(proc), 3, image_size, image_size, dtype=torch.float32)
        for n, f in enumerate(proc):
            images[n], h, w = _load_img_as_tensor(os.path.join(video_path, names[f]), image_size)
        images -= img_mean
        images /= img_std
        return images, h, w

    svp.load_video_frames = load_frames
    if args.version == "2.0":
        cfg = "configs/sam2/sam2_hiera_t.yaml"
    else:
        cfg = "configs/sam2.1/sam2.1_hiera_t.yaml"
    pred = build_sam2_video_predictor(
        cfg, ckpt_path=args.checkpoint, device="cpu", mode="eval",
        hydra_overrides_extra=[f"++model.image_size={args.image_size}"])
    # build_sam2_video_predictor appends fill_hole_area=8 after our overrides: set it here.
    pred.fill_hole_area = args.fill_hole_area
    pred.max_cond_frames_in_attn = args.max_cond_frames
    pred.memory_temporal_stride_for_eval = args.memory_temporal_stride
    holes = [0]
    if args.fill_hole_area > 0:
        import sam2.utils.misc as misc

        def get_connected_components(mask):
            labels, counts = connected_components_like_cuda(mask)
            holes[0] += int(((labels > 0) & (counts <= args.fill_hole_area)).sum())
            return labels, counts

        misc.get_connected_components = get_connected_components
    orig_fwd = pred.memory_attention.forward

    def fwd(curr, memory, curr_pos=None, memory_pos=None, num_obj_ptr_tokens=0):
        return orig_fwd(curr=curr, memory=memory.float(), curr_pos=curr_pos,
                        memory_pos=memory_pos, num_obj_ptr_tokens=num_obj_ptr_tokens)

    pred.memory_attention.forward = fwd
    with torch.inference_mode():
        state = pred.init_state(args.frames)
        H, W = state["video_height"], state["video_width"]
        for o in prompts:
            by_frame = {}
            for p in o["prompts"]:
                e = by_frame.setdefault(p["frame"], {"box": None, "points": [], "labels": [],
                                                     "mask": None})
                if "box" in p:
                    e["box"] = p["box"]
                if "points" in p:
                    e["points"] += p["points"]
                    e["labels"] += p["labels"]
                if "mask" in p:
                    m = p["mask"]
                    e["mask"] = mask_utils.decode(
                        {"size": m["size"], "counts": m["counts"].encode("ascii")}).astype(bool)
            for f in sorted(by_frame):
                e = by_frame[f]
                t = index[f]
                if e["mask"] is not None:
                    pred.add_new_mask(state, t, o["id"], e["mask"])
                if e["box"] is not None or e["points"]:
                    pred.add_new_points_or_box(
                        state, t, o["id"],
                        points=np.array(e["points"], np.float32) if e["points"] else None,
                        labels=np.array(e["labels"], np.int32) if e["points"] else None,
                        box=np.array(e["box"], np.float32) if e["box"] is not None else None)
        results = {}
        for reverse in (False, True):
            for t, obj_ids, logits in pred.propagate_in_video(state, reverse=reverse):
                results[t] = (list(obj_ids), (logits > 0).cpu().numpy())
        if args.lowres_out:
            # The stored low-res logits of every processed frame and object: [P, N, r, r] f32.
            n_obj = len(state["obj_ids"])
            r = args.image_size // 4
            low = np.zeros((len(proc), n_obj, r, r), np.float32)
            for i in range(n_obj):
                od = state["output_dict_per_obj"][i]
                for t in range(len(proc)):
                    out = od["cond_frame_outputs"].get(t) or od["non_cond_frame_outputs"].get(t)
                    low[t, i] = out["pred_masks"][0, 0].float().numpy()
            low.astype("<f4").tofile(args.lowres_out)
    frames = []
    for t in sorted(results):
        f = proc[t]
        if f % args.frame_interval != 0:
            continue
        ids, masks = results[t]
        objs = {}
        for i, oid in enumerate(ids):
            rle = mask_utils.encode(np.asfortranarray(masks[i, 0].astype(np.uint8)))
            objs[oid] = {"size": [H, W], "counts": rle["counts"].decode("ascii")}
        frames.append({"frame_number": f, "objects": objs})
    with open(args.out, "w") as fh:
        json.dump({"processed": proc, "holes": holes[0], "frames": frames}, fh)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("make-clip")
    c.add_argument("--out", required=True)
    c.add_argument("--frames", type=int, default=32)
    c.add_argument("--width", type=int, default=320)
    c.add_argument("--height", type=int, default=240)
    r = sub.add_parser("run")
    r.add_argument("--checkpoint", required=True)
    r.add_argument("--version", default="2.1", choices=["2.0", "2.1"])
    r.add_argument("--frames", required=True)
    r.add_argument("--prompts", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--image-size", type=int, default=256)
    r.add_argument("--threads", type=int, default=1)
    r.add_argument("--track-stride", type=int, default=1)
    r.add_argument("--frame-interval", type=int, default=1)
    r.add_argument("--max-cond-frames", type=int, default=-1)
    r.add_argument("--memory-temporal-stride", type=int, default=1,
                   help="memory_temporal_stride_for_eval")
    r.add_argument("--fill-hole-area", type=int, default=0,
                   help="hole filling up to this area (CPU connected components, see above)")
    r.add_argument("--lowres-out", help="also write the low-res logits [P, N, r, r] as raw f32")
    args = ap.parse_args()
    if args.cmd == "make-clip":
        make_clip(args.out, args.frames, args.width, args.height)
    else:
        run(args)


if __name__ == "__main__":
    sys.exit(main())
