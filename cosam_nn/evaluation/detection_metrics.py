"""Lesion-level detection metrics: greedy matching, average precision and FROC.

Detections carry a score; they are matched greedily, best score first, each to the unmatched
reference of highest IoU if that IoU reaches the threshold (the rule of nnDetection and the VOC/COCO
evaluations). AP is the area under the precision-recall curve with precision made monotone
(all-point interpolation). FROC: sensitivity at given mean false positives per scan; restricted to
some references (e.g. the small nodes), it counts only those as found while every false positive
still counts, so that it ranks how early a model finds them among all its detections.
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
    """One group's matching (a scan, or a slice): per detection its score, whether it is a TP and the
    index of the reference it found (-1 for a false positive); per reference whether it was found."""
    scores: np.ndarray
    true_positive: np.ndarray
    found: np.ndarray
    reference_of: np.ndarray


def greedy_match(det_boxes, det_scores, ref_boxes, iou_threshold):
    order = np.argsort(-np.asarray(det_scores, float), kind="stable")
    iou = box_iou(det_boxes, ref_boxes)
    found = np.zeros(len(ref_boxes), bool)
    reference_of = np.full(len(det_boxes), -1)
    for d in order:
        if len(ref_boxes) == 0:
            break
        candidates = np.where(~found, iou[d], -1.0)
        r = int(np.argmax(candidates))
        if candidates[r] >= iou_threshold:
            found[r] = True
            reference_of[d] = r
    return Matched(np.asarray(det_scores, float), reference_of >= 0, found, reference_of)


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


def _counted(groups, counted):
    """Per group a boolean array over its references: `counted`'s, or all of them."""
    if counted is None:
        return [np.ones(len(g.found), bool) for g in groups]
    return [np.asarray(c, bool) for c in counted]


def _hits(group, counted):
    """Per detection of a group: whether it found a reference that `counted` selects."""
    hit = np.zeros(len(group.scores), bool)
    tp = group.reference_of >= 0
    hit[tp] = counted[group.reference_of[tp]]
    return hit


def froc_curve(groups, n_scans, counted=None):
    """(false positives per scan, sensitivity) after each detection, best score first, from (0, 0).

    counted: per group a boolean array over its references, the ones the sensitivity is of (default
    all); a detection that found a reference left out is neither a hit nor a false positive."""
    counted = _counted(groups, counted)
    n_ref = sum(int(c.sum()) for c in counted)
    scores = np.concatenate([g.scores for g in groups]) if groups else np.zeros(0)
    tp = np.concatenate([g.true_positive for g in groups]) if groups else np.zeros(0, bool)
    hit = np.concatenate([_hits(g, c) for g, c in zip(groups, counted)]) if groups else np.zeros(0, bool)
    order = np.argsort(-scores, kind="stable")
    sens = np.concatenate([[0.0], np.cumsum(hit[order]) / max(n_ref, 1)])
    fps = np.concatenate([[0.0], np.cumsum(~tp[order]) / max(n_scans, 1)])
    return fps, sens


def froc(groups, n_scans, rates=FROC_RATES, counted=None):
    """Sensitivity at each mean number of false positives per scan in `rates`, and their mean.

    Sweeping the score threshold down through the detections: at each rate r, the highest sensitivity
    reached while the false positives per scan stay at or below r. counted: as in `froc_curve`, the
    references (per group) the sensitivity is of; NaN where none is.
    """
    if sum(int(c.sum()) for c in _counted(groups, counted)) == 0:
        return {float(r): float("nan") for r in rates}, float("nan")
    fps, sens = froc_curve(groups, n_scans, counted)
    values = [float(sens[fps <= r].max()) for r in rates]
    return dict(zip([float(r) for r in rates], values)), float(np.mean(values))
