"""Reference for tests/eval_metrics.rs: writes DAVIS / HD-EPIC style ground truth and a densam
result JSONL into OUT, and the metrics of the davis2017-evaluation formulas (re-implemented
here with numpy/scipy; disk dilation as skimage.morphology.disk + cv2.dilate) into OUT/ref.json.
Usage: eval_reference.py OUT"""
import json, os, sys
import numpy as np
from PIL import Image
from pycocotools import mask as M
from scipy.ndimage import binary_dilation

OUT = sys.argv[1]
rng = np.random.default_rng(0)


def disk(r):
    L = np.arange(-r, r + 1)
    X, Y = np.meshgrid(L, L)
    return (X ** 2 + Y ** 2) <= r ** 2


def seg2bmap(seg):
    seg = seg.astype(bool)
    e = np.zeros_like(seg); s = np.zeros_like(seg); se = np.zeros_like(seg)
    e[:, :-1] = seg[:, 1:]
    s[:-1, :] = seg[1:, :]
    se[:-1, :-1] = seg[1:, 1:]
    b = seg ^ e | seg ^ s | seg ^ se
    b[-1, :] = seg[-1, :] ^ e[-1, :]
    b[:, -1] = seg[:, -1] ^ s[:, -1]
    b[-1, -1] = 0
    return b


def f_measure(fg, gt, bound_th=0.008):
    bound_pix = bound_th if bound_th >= 1 else np.ceil(bound_th * np.linalg.norm(fg.shape))
    fgb = seg2bmap(fg); gtb = seg2bmap(gt)
    k = disk(int(bound_pix))
    fg_dil = binary_dilation(fgb, structure=k)
    gt_dil = binary_dilation(gtb, structure=k)
    gt_match = gtb * fg_dil
    fg_match = fgb * gt_dil
    n_fg = np.sum(fgb); n_gt = np.sum(gtb)
    if n_fg == 0 and n_gt > 0:
        p, r = 1, 0
    elif n_fg > 0 and n_gt == 0:
        p, r = 0, 1
    elif n_fg == 0 and n_gt == 0:
        p, r = 1, 1
    else:
        p = np.sum(fg_match) / float(n_fg)
        r = np.sum(gt_match) / float(n_gt)
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def iou(gt, seg):
    inter = np.sum(gt & seg); union = np.sum(gt | seg)
    return 1.0 if np.isclose(union, 0) else inter / union


def stats(v):
    v = np.asarray(v, dtype=np.float64)
    Mn = np.nanmean(v); O = np.nanmean(v > 0.5)
    ids = (np.round(np.linspace(1, len(v), 5) + 1e-10) - 1).astype(np.int64)  # no uint8
    bins = [v[ids[i]:ids[i + 1] + 1] for i in range(4)]
    return {"mean": float(Mn), "recall": float(O), "decay": float(np.nanmean(bins[0]) - np.nanmean(bins[3]))}


def ellipse(h, w, cy, cx, ry, rx):
    y, x = np.mgrid[0:h, 0:w]
    return ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1.0


def rle_obj(id_, m, **extra):
    r = M.encode(np.asfortranarray(m.astype(np.uint8)))
    x, y, bw, bh = [int(v) for v in M.toBbox(r)]
    o = {"id": id_, "label": "thing" + id_}
    o.update(extra)
    o.update({"bbox": [x, y, x + bw, y + bh], "score": 0.9, "iou": 0.8, "area": int(M.area(r)),
              "segmentation": {"size": [int(m.shape[0]), int(m.shape[1])], "counts": r["counts"].decode()}})
    return o


def palette_png(path, arr):
    im = Image.fromarray(arr.astype(np.uint8), mode="P")
    pal = []
    for i in range(256):
        c = i; r = g = b = 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j); g |= ((c >> 1) & 1) << (7 - j); b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    im.putpalette(pal)
    im.save(path)


def davis_seq(name, n, h, w, n_obj, late=None, all_frames=False, frame_step=1):
    gtdir = os.path.join(OUT, name, "gt"); os.makedirs(gtdir)
    lines = []
    per = {}
    frames = [i * frame_step for i in range(n)]
    for t, fr in enumerate(frames):
        lab = np.zeros((h, w), np.uint8)
        res = {}
        for k in range(1, n_obj + 1):
            if late and k == late[0] and t < late[1]:
                continue
            cy = h * (0.3 + 0.4 * k / (n_obj + 1)) + 3 * np.sin(t / 5 + k)
            cx = w * (0.2 + 0.6 * k / (n_obj + 1)) + 0.1 * t
            g = ellipse(h, w, cy, cx, h * 0.15, w * 0.1)
            lab[g] = k
            drift = 0.02 * t * (1 if n > 100 else 0)
            r = ellipse(h, w, cy + rng.normal() * 1.5 + drift * h / 10, cx + rng.normal() * 1.5, h * 0.15 * (1 + 0.1 * rng.normal()), w * 0.1)
            res[k] = r
        if name == "short" and t == 0:
            lab[:4, :4] = 9  # an object only on the (unscored) first frame
        lab[rng.random((h, w)) < 0.002] = 255  # void pixels: background in the semi-supervised protocol
        if n_obj >= 2 and t in (5, 6):
            res.pop(2, None)  # object 2 missing in the result
        if n_obj >= 1 and t == 3:
            res[1] = np.zeros((h, w), bool); res[1][h - 9:, w - 13:] = True  # touches the corner
        if n_obj >= 2 and t == 8:
            res[2] = np.zeros((h, w), bool); res[2][:, :1] = True  # a one-pixel column on the edge
        if n_obj >= 1 and t == 7:
            res[1] = np.ones((h, w), bool)  # a full-frame result mask
        if late and t == 1:
            res[late[0]] = ellipse(h, w, h / 2, w / 2, 3, 3)  # result before the object's GT appears
        palette_png(os.path.join(gtdir, "%05d.png" % fr), lab)
        objs = [rle_obj(str(k), m) for k, m in sorted(res.items()) if m.any()]
        lines.append({"frame_number": fr, "time_s": fr / 30.0, "objects": objs})
        per[fr] = (lab, res)
    # an extra result line after the last GT frame, and one between
    lines.append({"frame_number": frames[-1] + 1, "time_s": 0.0, "objects": []})
    with open(os.path.join(OUT, name, "result.jsonl"), "w") as f:
        for l in lines:
            f.write(json.dumps(l) + "\n")
    ev = frames if all_frames else frames[1:-1]
    all_k = sorted({int(v) for fr in [frames[0]] + ev for v in np.unique(per[fr][0]) if v not in (0, 255)})
    objs = {}
    all_boxes = []
    for k in all_k:
        J = []; F = []; B = []
        for fr in ev:
            lab, res = per[fr]
            g = lab == k
            r = res.get(k, np.zeros_like(g))
            J.append(float(iou(g, r))); F.append(float(f_measure(r, g)))
            if g.any():
                B.append(box_iou(mask_box(g), mask_box(r)) if r.any() else 0.0)
        all_boxes += B
        objs[str(k)] = {"J": J, "F": F, "Jstats": stats(J), "Fstats": stats(F), "box": B}
    return {"frames": ev, "objects": objs, "box_mean": float(np.mean(all_boxes)) if all_boxes else None}


def mask_box(m):
    ys, xs = np.nonzero(m)
    return [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def box_iou(a, b):
    iw = max(0, min(a[2], b[2]) - max(a[0], b[0])); ih = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return float(inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter))


def hd_epic():
    d = os.path.join(OUT, "hdepic"); gtdir = os.path.join(d, "masks"); os.makedirs(gtdir)
    h, w = 90, 120
    vid = "P01-20240202-171220"
    mask_info = {vid: {}}; assoc = {vid: {}}
    truth = {}
    lines = {}
    spec = {"a1": [(2, "m1"), (5, "m2"), (9, "m3")], "a2": [(5, "m4"), (11, "m5")]}
    for ai, (aid, ms) in enumerate(spec.items()):
        assoc[vid][aid] = {"name": "obj%d" % ai, "tracks": [{"track_id": "t" + aid, "time_segment": [0, 1], "masks": [m for _, m in ms]}]}
        for fr, mid in ms:
            g = ellipse(h, w, 30 + 20 * ai, 40 + 3 * fr, 12, 15)
            r = ellipse(h, w, 31 + 20 * ai, 41 + 3 * fr, 12, 14)
            ys, xs = np.nonzero(g)
            box = [float(xs.min()) + 0.3, float(ys.min()) - 0.2, float(xs.max()) + 0.7, float(ys.max()) + 1.1]
            mask_info[vid][mid] = {"frame_number": fr, "3d_location": [0, 0, 0], "bbox": box, "fixture": None}
            if mid != "m3":
                Image.fromarray((g * 255).astype(np.uint8)).save(os.path.join(gtdir, mid + ".png"))
            if mid == "m5":
                r = np.zeros_like(r)  # object lost: no result object
            lines.setdefault(fr, [])
            if r.any():
                lines[fr].append(rle_obj("obj-" + aid, r, assoc_id=aid, assoc_name="obj%d" % ai))
            truth[mid] = (aid, g, r, box)
    json.dump(mask_info, open(os.path.join(d, "mask_info.json"), "w"))
    json.dump(assoc, open(os.path.join(d, "assoc_info.json"), "w"))
    json.dump(["m2", "m3", "m4", "m5"], open(os.path.join(d, "hold_out.json"), "w"))
    with open(os.path.join(d, "dense_annotations_%s.jsonl" % vid), "w") as f:
        for fr in range(0, 13):
            f.write(json.dumps({"frame_number": fr, "time_s": fr / 30, "objects": lines.get(fr, [])}) + "\n")
    out = {}
    boxes = []
    for mid in ["m2", "m3", "m4", "m5"]:
        aid, g, r, box = truth[mid]
        o = out.setdefault(aid, {"J": [], "F": [], "box": []})
        if r.any():
            ys, xs = np.nonzero(r)
            rb = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            iw = max(0, min(box[2], rb[2]) - max(box[0], rb[0])); ih = max(0, min(box[3], rb[3]) - max(box[1], rb[1]))
            inter = iw * ih
            bi = inter / ((box[2] - box[0]) * (box[3] - box[1]) + (rb[2] - rb[0]) * (rb[3] - rb[1]) - inter)
        else:
            bi = 0.0
        o["box"].append(float(bi)); boxes.append(float(bi))
        if mid != "m3":
            o["J"].append(float(iou(g, r))); o["F"].append(float(f_measure(r, g)))
    return {"objects": out, "box_mean": float(np.mean(boxes))}


ref = {
    "short": davis_seq("short", 12, 120, 160, 3, late=(3, 4)),
    "long": davis_seq("long", 300, 30, 40, 1),
    "wide": davis_seq("wide", 3, 480, 854, 2, all_frames=True, frame_step=7),
    "hdepic": hd_epic(),
}
json.dump(ref, open(os.path.join(OUT, "ref.json"), "w"))
