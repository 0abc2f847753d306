"""Where does a trained CoSAM lose nodes? Stage by stage, on the validation cases of its fold.

    python bench/diagnostics/diagnose.py RESULTS_FOLD_FOLDER [-tr CoSAMTrainerSmall] [--step 4] [--small-mm 5]
                             [--test IMAGES_FOLDER LABELS_FOLDER] [--max-cases N] [-chk CHECKPOINT]

RESULTS_FOLD_FOLDER is nnU-Net's .../<trainer>__<plans>__3d_fullres/fold_N with checkpoint_final.pth.
Windows of L slices (step --step) over the preprocessed validation cases of that fold (or, with
--test, over raw test cases preprocessed as nnU-Net's prediction does); for every
node cross-cut by a window (present on its centre slice), prints the share found at each stage:
stage-1 proposals, stage-2 boxes, detector score above thresholds, CCM probability, the final
score, and U-SAM's Dice when prompted with the true box; and the false boxes per window; and, by
node size, the size and IoU of stage 1's best-fitting box among all its anchors. Then,
for the cross-cuts of nodes under --small-mm short axis (measured on the whole node), the stage at
which each is lost: never proposed (stage 1), rejected at stage 2, scored below the threshold
(detector x CCM), dropped by NMS or the box limit, or kept. (NMS: before U-SAM, `segment_nms_iou`, on
the detector's score, or after it on the final score; a matched proposal whose final score would pass
lands there either way.)
For the small cross-cuts never proposed, the stage-1 candidates before the cut to `test_proposals`
tell why: the rank (after NMS, in the detector's inference ranking) of the best-placed candidate at
union IoU >= 0.3, or that no candidate of the window has one (every anchor decoded, no NMS); and how
many have a kept proposal centred on them, at most two strides larger (too loose for IoU 0.3).
"""
import argparse
import os

import numpy as np
import torch
from torchvision.ops import box_iou

from cosam_nn.benchmark.trained import load_model, test_cases, validation_cases
from cosam_nn.modeling.crops import crop_slices
from cosam_nn.node_geometry import label_nodes, node_boxes_and_instances, union_boxes
from cosam_nn.evaluation.node_measures import node_diameters

THRESHOLDS = (0.1, 0.25, 0.5)


def centred_on_small_node(boxes, targets, below, stride):
    """(N, T) bool: box n is centred on target t, a node whose long side is under `below` px: the
    centres lie within max(stride / 2, half the node's size) on each axis and the box is at most
    two strides larger than the node."""
    targets = targets.to(boxes.device)
    size = (targets[:, 2:] - targets[:, :2]).amax(1)  # (T,)
    box_size = (boxes[:, 2:] - boxes[:, :2]).amax(1)  # (N,)
    offset = (((boxes[:, None, :2] + boxes[:, None, 2:]) - (targets[None, :, :2] + targets[None, :, 2:])) / 2).abs().amax(-1)
    reach = torch.clamp(size / 2, min=stride / 2)
    return (size < below) & (offset <= reach) & (box_size[:, None] <= size + 2 * stride)


def short_axes(label, spacing):
    """(instance map of the whole case, {instance id: short axis in mm})."""
    instances, n = label_nodes(label)
    return instances, {i: node_diameters(instances == i, spacing)[1] for i in range(1, n + 1)}


@torch.no_grad()
def stage1_pools(detector, window):
    """Stage 1's candidates of one window, each best first in the inference ranking: (screened: after
    NMS, before the cut to test_proposals; every: each anchor's decoded box, no NMS)."""
    _, objectness, deltas, presence, anchors, rank = detector._stage1(window)
    hw, everything = window.shape[-2:], objectness[0].numel()
    screened = detector._screen(rank, deltas, presence, anchors, hw, everything)[0]
    every = detector._screen(rank, deltas, presence, anchors, hw, everything, pre_nms_top_k=everything, nms_iou=1.0)[0]
    return screened, every


def best_fit(proposals, target_unions):
    """For each node's union box (T, 4): (IoU, long side in px) of the proposal whose union box
    overlaps it best, two (T,) tensors (zeros where there is no proposal)."""
    if not len(proposals.scores):
        return torch.zeros(len(target_unions)), torch.zeros(len(target_unions))
    union = union_boxes(proposals.boxes, proposals.present)
    iou, best = box_iou(union, target_unions).max(0)
    return iou, (union[best, 2:] - union[best, :2]).amax(1)


def first_rank(proposals, target_union, min_iou=0.3):
    """1-based rank of the first proposal whose union box reaches min_iou with the node's, or None."""
    if not len(proposals.scores):
        return None
    hit = torch.nonzero(box_iou(union_boxes(proposals.boxes, proposals.present), target_union)[:, 0] >= min_iou)
    return int(hit[0]) + 1 if len(hit) else None


@torch.no_grad()
def window_stats(model, window, labels, case_instances=None):
    """Per node present on the window's centre slice: dict of its best values at each stage
    (`case_id`: the node's id in `case_instances`, the case's instance map over the window)."""
    boxes, inst = node_boxes_and_instances(labels)
    length = labels.shape[0]
    centre = length // 2
    nodes = torch.nonzero(boxes.present[:, centre]).squeeze(1)
    det = model.detector(window)
    _, kept = model.detect(window)
    kept = kept[0]
    t_union = union_boxes(boxes.boxes, boxes.present)
    valid = det["valid"][0]
    present = det["presence"][0].sigmoid() > model.cfg.presence_threshold
    present[:, centre] |= ~present.any(1)
    score = det["scores"][0].sigmoid()
    s1 = det["proposals"][0]
    out = {"nodes": [], "false": {}}
    iou2 = box_iou(union_boxes(det["boxes"][0], present), t_union) if len(t_union) else None
    ccm = None
    if model.ccm is not None and valid.any():
        idx = torch.nonzero(valid).squeeze(1)
        owner, sl = torch.nonzero(present[idx], as_tuple=True)
        masks, _, tokens, regions = model.segment_boxes(window, sl, det["boxes"][0][idx][owner, sl])
        ccm = torch.zeros_like(score)
        ccm[idx] = model.ccm_logits(tokens, owner, det["seq_features"][0][idx]).softmax(-1)[:, 1]
    matched_any = torch.zeros_like(valid)
    pools = stage1_pools(model.detector, window) if len(nodes) else None
    fit_iou, fit_px = best_fit(pools[1], t_union) if len(nodes) else (None, None)
    s1_union = union_boxes(s1.boxes, s1.present)
    iou1 = box_iou(s1_union, t_union)  # (P, T), P = 0 when stage 1 kept nothing
    centred = centred_on_small_node(s1_union, t_union, float("inf"), model.cfg.detector.stride).any(0)  # (T,)
    for n in nodes.tolist():
        row = {"voxels": int(boxes.voxels[n])}
        if case_instances is not None:
            row["case_id"] = int(case_instances[inst == n + 1].max())
        row["stage1_iou"] = float(iou1[:, n].max()) if len(iou1) else 0.0
        row["stage1_centred"] = bool(centred[n])
        row["stage1_rank"] = first_rank(pools[0], t_union[n:n + 1])
        row["node_px"] = float((t_union[n, 2:] - t_union[n, :2]).max())
        row["fit_iou"], row["fit_px"] = float(fit_iou[n]), float(fit_px[n])
        row["any_candidate"] = row["fit_iou"] >= 0.3  # some anchor's box of the window reaches IoU 0.3
        match = (iou2[:, n] >= 0.3) & valid
        matched_any |= match
        row["stage2_iou"] = float(iou2[:, n][valid].max()) if valid.any() else 0.0
        row["det_score"] = float(score[match].max()) if match.any() else 0.0
        row["ccm"] = float(ccm[match].max()) if ccm is not None and match.any() else None
        kiou = box_iou(union_boxes(kept.boxes, kept.present), t_union[n:n + 1])[:, 0] if len(kept.scores) else torch.zeros(0)
        row["final_score"] = float(kept.scores[kiou >= 0.3].max()) if (kiou >= 0.3).any() else 0.0
        final = (score * ccm).sqrt() if ccm is not None else score
        row["final_score_before_nms"] = float(final[match].max()) if match.any() else 0.0
        masks, _, _, regions = model.segment_boxes(window, torch.tensor([centre]), boxes.boxes[n, centre:centre + 1])
        row["usam_true_box_dice"] = _crop_dice(inst[centre] == n + 1, regions, masks)
        out["nodes"].append(row)
    unmatched = valid & ~matched_any
    for t in THRESHOLDS:
        out["false"][t] = int((score[unmatched] >= t).sum())
    out["false_final"] = len(kept.scores)
    out["kept_true"] = sum(r["final_score"] > 0 for r in out["nodes"])
    return out


def _crop_dice(node_mask, regions, mask_logits):
    """Dice of U-SAM's mask (1, 1, S, S) against the node's (H, W) mask cropped to the same region."""
    size = mask_logits.shape[-1]
    target = crop_slices(torch.from_numpy(node_mask).float()[None, None], torch.tensor([0]), regions, size) > 0.5
    pred = mask_logits[0, 0] > 0
    t = target[0, 0]
    total = int(pred.sum() + t.sum())
    return 2 * int((pred & t).sum()) / total if total else 1.0


def lost_at(row, threshold):
    """The stage at which a node cross-cut is lost, or 'kept'."""
    if row["final_score"] > 0:
        return "kept"
    if row["stage1_iou"] < 0.3:
        return "never proposed (stage 1)"
    if row["stage2_iou"] < 0.3:
        return "rejected at stage 2"
    if row["final_score_before_nms"] < threshold:
        return "score below threshold (detector x CCM)"
    return "dropped by NMS or the box limit"


def report(model, cases, step=4, name="CoSAM", small_mm=5.0):
    """Print the stage-by-stage shares over (case, image, label, spacing) tuples."""
    length = model.cfg.detector.window
    rows, false, false_final, windows = [], {t: 0 for t in THRESHOLDS}, 0, 0
    for case, image, label, spacing in cases:
        instances, axes = short_axes(label, spacing)
        for z in range(0, image.shape[0] - length + 1, step):
            window = torch.from_numpy(image[z:z + length])[None, None]
            stats = window_stats(model, window, label[z:z + length], instances[z:z + length])
            for r in stats["nodes"]:
                r["short_axis_mm"] = axes[r["case_id"]]
            rows += stats["nodes"]
            for t in THRESHOLDS:
                false[t] += stats["false"][t]
            false_final += stats["false_final"] - stats["kept_true"]
            windows += 1
    n = max(1, len(rows))
    share = lambda f: sum(map(f, rows)) / n
    print(f"{name}: {windows} windows, {len(rows)} node cross-cuts (node on the centre slice)")
    print(f"stage 1 proposal union IoU >= 0.3: {share(lambda r: r['stage1_iou'] >= 0.3):.2f}; "
          f">= 0.5: {share(lambda r: r['stage1_iou'] >= 0.5):.2f}")
    print(f"stage 2 box union IoU >= 0.3: {share(lambda r: r['stage2_iou'] >= 0.3):.2f}")
    for t in THRESHOLDS:
        print(f"detector score >= {t}: found {share(lambda r: r['det_score'] >= t):.2f}; "
              f"false proposals per window {false[t] / max(1, windows):.2f}")
    if rows and rows[0]["ccm"] is not None:
        print(f"CCM probability of the matched proposal: median {np.median([r['ccm'] or 0 for r in rows]):.2f}")
    print(f"kept (final score >= threshold): found {share(lambda r: r['final_score'] > 0):.2f}; "
          f"other kept boxes per window {false_final / max(1, windows):.2f}")
    print(f"U-SAM Dice with the true box, centre slice: mean {share(lambda r: r['usam_true_box_dice']):.3f}")
    print_box_fit(rows)
    small = [r for r in rows if r["short_axis_mm"] < small_mm]
    threshold = float(model.score_threshold)
    print(f"\nnodes under {small_mm:g} mm short axis: {len(small)} cross-cuts; where each is lost "
          f"(score threshold {threshold:g}):")
    stages = [lost_at(r, threshold) for r in small]
    for stage in ("never proposed (stage 1)", "rejected at stage 2", "score below threshold (detector x CCM)",
                  "dropped by NMS or the box limit", "kept"):
        print(f"  {stage:<42} {stages.count(stage):4d}")
    never = [r for r, stage in zip(small, stages) if stage == "never proposed (stage 1)"]
    if never:
        keep = model.cfg.detector.test_proposals
        ranks = [r["stage1_rank"] for r in never if r["stage1_rank"] is not None]
        print("  never proposed: the best-ranked stage-1 candidate at union IoU >= 0.3 (after NMS) was")
        for label, count in ((f"ranked {keep + 1}-{2 * keep}", sum(keep < k <= 2 * keep for k in ranks)),
                             (f"ranked beyond {2 * keep}", sum(k > 2 * keep for k in ranks)),
                             ("removed by the pre-NMS top-k or NMS", sum(r["any_candidate"] for r in never) - len(ranks)),
                             ("none: no anchor's box reaches IoU 0.3", sum(not r["any_candidate"] for r in never))):
            print(f"    {label:<40} {count:4d}")
        print(f"  never proposed, yet a kept stage-1 proposal is centred on the node (`centred_on_small_node`): "
              f"{sum(r['stage1_centred'] for r in never)}")
    if small:
        print(f"  U-SAM Dice with the true box, centre slice: mean {np.mean([r['usam_true_box_dice'] for r in small]):.3f}")


def print_box_fit(rows, edges=(0, 4, 6, 8, 12, 16, float("inf"))):
    """By the node's size (long side of its union box over the window): stage 1's best-fitting box among
    every anchor of the window, its size and IoU. Stage 1's boxes that never leave their anchors'
    size show here as a flat column of box sizes."""
    print("stage 1's best-fitting box (every anchor of the window) by node size:")
    for lo, hi in zip(edges[:-1], edges[1:]):
        group = [r for r in rows if lo <= r["node_px"] < hi]
        if group:
            size = f"{lo:g}-{hi:g}" if hi < float("inf") else f">= {lo:g}"
            print(f"  node {size:>5} px: {len(group):4d} cross-cuts, box {np.mean([r['fit_px'] for r in group]):5.1f} px, "
                  f"union IoU {np.mean([r['fit_iou'] for r in group]):.2f}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("fold_folder")
    p.add_argument("-tr", default="CoSAMTrainerSmall", dest="trainer")
    p.add_argument("--step", type=int, default=4)
    p.add_argument("--small-mm", type=float, default=5.0, dest="small_mm", help="short axis of a small node (mm)")
    p.add_argument("--test", nargs=2, metavar=("IMAGES_FOLDER", "LABELS_FOLDER"),
                   help="diagnose these raw cases instead of the fold's validation cases")
    p.add_argument("--max-cases", type=int, default=None, dest="max_cases")
    p.add_argument("-chk", default="checkpoint_final.pth", dest="checkpoint", help="checkpoint file in the fold folder")
    a = p.parse_args()
    if a.test:
        cases = test_cases(a.fold_folder, *a.test, max_cases=a.max_cases)
    elif not os.environ.get("nnUNet_preprocessed"):
        p.error("set nnUNet_preprocessed to the folder the fold was trained from (its splits and data are read there)")
    else:
        cases = validation_cases(a.fold_folder)
    report(load_model(a.fold_folder, a.trainer, a.checkpoint), cases, a.step, a.trainer, a.small_mm)


if __name__ == "__main__":
    main()
