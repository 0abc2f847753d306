"""Lesion-level detection metrics: greedy matching, average precision and FROC.

Detections carry a score; they are matched greedily, best score first, each to the unmatched
reference of highest IoU if that IoU reaches the threshold (the rule of nnDetection and the VOC/COCO
evaluations). AP is the area under the precision-recall curve with precision made monotone
(all-point interpolation). FROC: sensitivity at given mean false positives per scan.
"""
from dataclasses import dataclass

import numpy as np

FROC_RATES = (1 / 8, 1 / 4, 1 / 2, 1, 2, 4, 8)


def box_iou(a, b):
    """IoU of axis-aligned boxes a (N, 2k) and b (M, 2k) given as (lo..., hi...) with exclusive ends."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    k = a.shape[1] // 2
    lo = np.maximum(a[:, None, :k], b[None, :, :k])
    hi = np.minimum(a[:, None, k:], b[None, :, k:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=-1)
    vol_a = np.prod(a[:, k:] - a[:, :k], axis=-1)
    vol_b = np.prod(b[:, k:] - b[:, :k], axis=-1)
    return inter / (vol_a[:, None] + vol_b[None, :] - inter)


@dataclass
class Matched:
    """One group's matching (a scan, or a slice): per detection its score and whether it is a TP;
    per reference whether it was found."""
    scores: np.ndarray
    true_positive: np.ndarray
    found: np.ndarray


def greedy_match(det_boxes, det_scores, ref_boxes, iou_threshold):
    order = np.argsort(-np.asarray(det_scores, float), kind="stable")
    iou = box_iou(det_boxes, ref_boxes)
    found = np.zeros(len(ref_boxes), bool)
    tp = np.zeros(len(det_boxes), bool)
    for d in order:
        if len(ref_boxes) == 0:
            break
        candidates = np.where(~found, iou[d], -1.0)
        r = int(np.argmax(candidates))
        if candidates[r] >= iou_threshold:
            found[r] = True
            tp[d] = True
    return Matched(np.asarray(det_scores, float), tp, found)


def average_precision(groups):
    """AP over all detections of all groups (all-point interpolated); NaN without any reference."""
    n_ref = sum(len(g.found) for g in groups)
    if n_ref == 0:
        return float("nan")
    scores = np.concatenate([g.scores for g in groups]) if groups else np.zeros(0)
    tp = np.concatenate([g.true_positive for g in groups]) if groups else np.zeros(0, bool)
    if len(scores) == 0:
        return 0.0
    order = np.argsort(-scores, kind="stable")
    tp = tp[order]
    cum_tp = np.cumsum(tp)
    recall = cum_tp / n_ref
    precision = cum_tp / np.arange(1, len(tp) + 1)
    recall = np.concatenate([[0.0], recall])
    precision = np.concatenate([[1.0], precision])
    precision = np.maximum.accumulate(precision[::-1])[::-1]  # monotone envelope
    return float(np.sum((recall[1:] - recall[:-1]) * precision[1:]))


def froc_curve(groups, n_scans):
    """(false positives per scan, sensitivity) after each detection, best score first, from (0, 0)."""
    n_ref = sum(len(g.found) for g in groups)
    scores = np.concatenate([g.scores for g in groups]) if groups else np.zeros(0)
    tp = np.concatenate([g.true_positive for g in groups]) if groups else np.zeros(0, bool)
    tp = tp[np.argsort(-scores, kind="stable")]
    sens = np.concatenate([[0.0], np.cumsum(tp) / max(n_ref, 1)])
    fps = np.concatenate([[0.0], np.cumsum(~tp) / max(n_scans, 1)])
    return fps, sens


def froc(groups, n_scans, rates=FROC_RATES):
    """Sensitivity at each mean number of false positives per scan in `rates`, and their mean.

    Sweeping the score threshold down through the detections: at each rate r, the highest sensitivity
    reached while the false positives per scan stay at or below r.
    """
    if sum(len(g.found) for g in groups) == 0:
        return {float(r): float("nan") for r in rates}, float("nan")
    fps, sens = froc_curve(groups, n_scans)
    values = [float(sens[fps <= r].max()) for r in rates]
    return dict(zip([float(r) for r in rates], values)), float(np.mean(values))
