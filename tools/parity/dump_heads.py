#!/usr/bin/env python3
"""Reference dumps of the SAM 2 heads for densam's parity tests (tests/model_heads.rs).

Loads a checkpoint made by make_checkpoint.py into the official model (as
`build_sam2_video_predictor` builds it, fp32 CPU), runs the official `track_step` /
`_encode_new_memory` exactly as `SAM2VideoPredictor` calls them on a few random frames, and
captures, through wrappers around the official modules, the dump points of
docs/sam2-inference.md §6.18:

  frame{t}.{image,vision_feat,vision_pos,feat_s0,feat_s1}  input, backbone features (inputs of the heads)
  {step}.{sparse,dense}                                  prompt-encoder outputs
  {step}.{pix,dec_masks,dec_ious,dec_tokens,dec_osl}     decoder input / raw outputs
  {step}.{low_res,high_res,obj_ptr,osl}                  track_step outputs
  {step}.{mem_in_mask,mem_feat,mem_feat_bf16,mem_pos}    memory encoder (input mask, features
                                                         before/after bf16, pos)
  {step}.{memory,memory_pos,num_ptr,ma_out}              tracked frames: assembled memory and
                                                         pix_feat_with_mem

Steps (frame 0 is the conditioning frame):
  box       box prompt (2 points, labels 2/3; single mask + stability) -> cond memory of frame 0
  neg       3 clicks incl. a negative one (single mask)
  click     1 positive click (multimask)
  prev      1 click + previous mask logits (dense mask prompt at r×r)
  mask      add_new_mask (mask-as-output path) with a disc
  empty     add_new_mask with an empty mask (object absent: no_obj_ptr, no_obj_embed_spatial)
  track1..3 tracked frames 1..3 (memories of the cond frame + previous frames, pointers)
  correct   a click on tracked frame 2 (memory of frames 0 and 1 + the prompt)
  absent    frame 1 tracked with the object-score head forced to "absent" (bias −10)

Usage: dump_heads.py --ckpt DIR/model.pt --size tiny --version 2.1 --image-size 256 --out DIR
"""

import argparse
import json
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_checkpoint import build, save_safetensors  # noqa: E402

NUM_FRAMES = 4


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--size", default="tiny")
    ap.add_argument("--version", default="2.1")
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("DENSAM_TORCH_THREADS", "1")))
    torch.manual_seed(args.seed)

    predictor = build(args.size, args.version, args.image_size)
    sd = torch.load(args.ckpt, map_location="cpu", weights_only=True)["model"]
    predictor.load_state_dict(sd, strict=True)
    model = predictor.eval()
    S = args.image_size
    out = {}

    def put(name, t):
        out[name] = t.detach().to(torch.float32).contiguous().clone()

    # --- wrappers capturing the official modules' inputs and outputs -----------------------
    rec = {}

    def wrap(mod, key):
        orig = mod.forward

        def f(*a, **k):
            r = orig(*a, **k)
            rec[key] = (a, k, r)
            return r

        mod.forward = f

    wrap(model.sam_prompt_encoder, "pe")
    wrap(model.sam_mask_decoder, "dec")
    wrap(model.memory_attention, "ma")
    wrap(model.memory_encoder, "me")

    def put_heads(step):
        a, k, (sparse, dense) = rec.pop("pe")
        put(f"{step}.sparse", sparse)
        put(f"{step}.dense", dense)
        a, k, (masks, ious, tokens, osl) = rec.pop("dec")
        put(f"{step}.pix", k["image_embeddings"])
        put(f"{step}.dec_masks", masks)
        put(f"{step}.dec_ious", ious)
        put(f"{step}.dec_tokens", tokens)
        put(f"{step}.dec_osl", osl)

    def put_out(step, o):
        put(f"{step}.low_res", o["pred_masks"])
        put(f"{step}.high_res", o["pred_masks_high_res"])
        put(f"{step}.obj_ptr", o["obj_ptr"])
        put(f"{step}.osl", o["object_score_logits"])

    # --- frames --------------------------------------------------------------------------
    g = torch.Generator().manual_seed(args.seed)
    frames = []
    with torch.no_grad():
        for t in range(NUM_FRAMES):
            img = torch.randn(1, 3, S, S, generator=g)
            bo = model.forward_image(img)
            _, vf, vp, fs = model._prepare_backbone_features(bo)
            frames.append((vf, vp, fs))
            put(f"frame{t}.image", img)
            f = S // 16
            put(f"frame{t}.vision_feat", vf[-1].permute(1, 2, 0).reshape(1, 256, f, f))
            put(f"frame{t}.vision_pos", vp[-1].permute(1, 2, 0).reshape(1, 256, f, f))
            put(f"frame{t}.feat_s0", bo["backbone_fpn"][0])
            put(f"frame{t}.feat_s1", bo["backbone_fpn"][1])

    def step(t, init, points=None, labels=None, mask=None, od=None, run_mem=False, prev=None):
        vf, vp, fs = frames[t]
        pi = None
        if points is not None:
            pi = {
                "point_coords": torch.tensor(points, dtype=torch.float32)[None],
                "point_labels": torch.tensor(labels, dtype=torch.int32)[None],
            }
        od = od or {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
        return model.track_step(
            frame_idx=t,
            is_init_cond_frame=init,
            current_vision_feats=vf,
            current_vision_pos_embeds=vp,
            feat_sizes=fs,
            point_inputs=pi,
            mask_inputs=mask,
            output_dict=od,
            num_frames=NUM_FRAMES,
            track_in_reverse=False,
            run_mem_encoder=run_mem,
            prev_sam_mask_logits=prev,
        )

    def encode_mem(step_name, t, high, osl, from_pts):
        vf, vp, fs = frames[t]
        feat, pos = model._encode_new_memory(vf, fs, high, osl, from_pts)
        a, k, _ = rec.pop("me")
        put(f"{step_name}.mem_in_mask", a[1] if len(a) > 1 else k["masks"])
        put(f"{step_name}.mem_feat", feat)
        bf = feat.to(torch.bfloat16)
        put(f"{step_name}.mem_feat_bf16", bf)
        put(f"{step_name}.mem_pos", pos[-1])
        return bf, pos

    prompts = {}
    meta = {"steps": {}}
    s = S / 1024.0
    with torch.no_grad():
        # box (single mask, stability fallback possible)
        box = [[300 * s, 250 * s], [700 * s, 800 * s]]
        prompts["box"] = (box, [2, 3])
        o = step(0, True, box, [2, 3])
        put_heads("box")
        put_out("box", o)
        # preflight: memory from the (not hole-filled on CPU) low-res mask, binarised
        high = F.interpolate(o["pred_masks"], size=(S, S), mode="bilinear", align_corners=False)
        put("box.mem_high", high)
        bf, pos = encode_mem("box", 0, high, o["object_score_logits"], True)
        o["maskmem_features"], o["maskmem_pos_enc"] = bf, pos
        cond0 = o

        neg = [[500 * s, 500 * s], [600 * s, 420 * s], [200 * s, 820 * s]]
        prompts["neg"] = (neg, [1, 1, 0])
        o = step(0, True, neg, [1, 1, 0])
        put_heads("neg")
        put_out("neg", o)

        click = [[512 * s, 512 * s]]
        prompts["click"] = (click, [1])
        o = step(0, True, click, [1])
        put_heads("click")
        put_out("click", o)

        prev = torch.clamp(cond0["pred_masks"], -32.0, 32.0)
        put("prev.prev_logits", prev)
        prompts["prev"] = (click, [1])
        o = step(0, True, click, [1], prev=prev)
        put_heads("prev")
        put_out("prev", o)

        yy, xx = torch.meshgrid(torch.arange(S), torch.arange(S), indexing="ij")
        disc = (((yy - 0.45 * S) ** 2 + (xx - 0.55 * S) ** 2) < (0.2 * S) ** 2).float()[None, None]
        put("mask.mask01", disc)
        o = step(0, True, mask=disc)
        put_heads("mask")
        put_out("mask", o)
        high = F.interpolate(o["pred_masks"], size=(S, S), mode="bilinear", align_corners=False)
        put("mask.mem_high", high)
        encode_mem("mask", 0, high, o["object_score_logits"], True)

        empty = torch.zeros(1, 1, S, S)
        o = step(0, True, mask=empty)
        put_heads("empty")
        put_out("empty", o)
        high = F.interpolate(o["pred_masks"], size=(S, S), mode="bilinear", align_corners=False)
        put("empty.mem_high", high)
        encode_mem("empty", 0, high, o["object_score_logits"], True)

        # tracking: cond frame 0 (box), then frames 1..3
        od = {"cond_frame_outputs": {0: cond0}, "non_cond_frame_outputs": {}}
        for t in range(1, NUM_FRAMES):
            name = f"track{t}"
            o = step(t, False, od=od, run_mem=True)
            put_heads(name)
            put_out(name, o)
            a, k, r = rec.pop("ma")
            put(f"{name}.memory", k["memory"].transpose(0, 1))
            put(f"{name}.memory_pos", k["memory_pos"].transpose(0, 1))
            out[f"{name}.num_ptr"] = torch.tensor([k["num_obj_ptr_tokens"]], dtype=torch.int64)
            put(f"{name}.ma_out", r.transpose(0, 1))
            _, _, _ = rec.pop("me")
            put(f"{name}.mem_feat", o["maskmem_features"])
            o["maskmem_features"] = o["maskmem_features"].to(torch.bfloat16)
            put(f"{name}.mem_feat_bf16", o["maskmem_features"])
            put(f"{name}.mem_pos", o["maskmem_pos_enc"][-1])
            od["non_cond_frame_outputs"][t] = o

        # a click correcting tracked frame 2 (memory attention + prompt, 1 point: multimask)
        od2 = {"cond_frame_outputs": {0: cond0}, "non_cond_frame_outputs": {1: od["non_cond_frame_outputs"][1]}}
        corr = [[400 * s, 600 * s]]
        prompts["correct"] = (corr, [1])
        o = step(2, False, corr, [1], od=od2)
        put_heads("correct")
        put_out("correct", o)
        rec.pop("ma")

        # object judged absent on a tracked frame (NO_OBJ_SCORE, no_obj_ptr, no_obj_embed_spatial)
        bias = model.sam_mask_decoder.pred_obj_score_head.layers[2].bias
        bias.fill_(-10.0)
        od1 = {"cond_frame_outputs": {0: cond0}, "non_cond_frame_outputs": {}}
        o = step(1, False, od=od1, run_mem=True)
        put_heads("absent")
        put_out("absent", o)
        rec.pop("ma")
        rec.pop("me")
        put("absent.mem_feat", o["maskmem_features"])

    for k2, (p, l) in prompts.items():
        put(f"{k2}.points", torch.tensor(p, dtype=torch.float32)[None])
        out[f"{k2}.labels"] = torch.tensor([l], dtype=torch.int64)
    meta["image_size"] = S
    meta["version"] = args.version
    os.makedirs(args.out, exist_ok=True)
    save_safetensors(out, os.path.join(args.out, "heads.safetensors"))
    with open(os.path.join(args.out, "meta.json"), "w") as f:
        json.dump(meta, f)


if __name__ == "__main__":
    main()
