"""The final-score threshold of a trained CoSAM, picked on its fold's validation cases.

The score a detection needs (sqrt(detector x CCM) with the CCM, the detector's alone without)
is not a calibrated probability, and its scale differs between the two: a fixed 0.5 favours one
variant over the other. After training, each validation volume is cut into non-overlapping
windows, every candidate that could pass the lowest threshold is segmented once (as in prediction,
near-copies of a better one are not: `segment_nms_iou`), and each threshold of the grid is scored by the mean per-case Dice of the masks it keeps (an empty
reference and an empty prediction count as Dice 1) plus the F-beta score of node detection pooled
over the cases (a node is found when a kept component touches it; a component touching none is
false). Dice alone barely notices a few false specks in a case with nodes, so it drifts to the
lowest threshold of the grid; the F-score makes every false node count. The trainers use beta 2
(`calibration_recall_weight`): a missed node costs as much as four false candidates, since N staging
counts the nodes and a reader dismisses a false candidate more easily than finds a missed node.
Of thresholds within 0.01 of the best score the lowest wins, since it keeps more candidates
(sensitivity, FROC) at the same score.
"""
import numpy as np
import torch

from cosam_nn.modeling.cosam import BACKGROUND_LOGIT
from cosam_nn.node_geometry import label_nodes


def tile_starts(size, patch):
    """Starts of non-overlapping tiles of length patch covering 0..size (the last one flush with the end)."""
    if size <= patch:
        return [0]
    starts = list(range(0, size - patch + 1, patch))
    return starts if starts[-1] == size - patch else starts + [size - patch]


def _tiles(shape, patch):
    """Slices (z, y, x) of tiles covering a volume of shape (Z, Y, X); overlaps only where the last tile
    of an axis moves back to fit, and those voxels are counted once (the first tile owns them)."""
    out = []
    for z in tile_starts(shape[0], patch[0]):
        for y in tile_starts(shape[1], patch[1]):
            for x in tile_starts(shape[2], patch[2]):
                out.append(tuple(slice(s, s + p) for s, p in zip((z, y, x), patch)))
    return out


def _padded(image, patch):
    """image (1, Z, Y, X) padded at the end to at least patch on each axis (edge values)."""
    pad = [max(0, p - s) for p, s in zip(patch, image.shape[1:])]
    if not any(pad):
        return image
    return torch.nn.functional.pad(image[None], (0, pad[2], 0, pad[1], 0, pad[0]), mode="replicate")[0]


@torch.no_grad()
def case_counts(model, image, label, patch, thresholds):
    """{threshold: (true positive, predicted, reference) voxel counts} of one case.

    image (1, Z, Y, X) normalised CT, label (Z, Y, X) bool, patch (L, h, w) the training window.
    """
    original_shape = label.shape
    image = _padded(image, patch)
    inside = tuple(slice(0, n) for n in label.shape)
    padded = torch.zeros(image.shape[1:], dtype=torch.bool, device=label.device)
    padded[inside] = label
    label = padded
    owned = torch.ones(label.shape, dtype=torch.bool, device=label.device)  # padding: never counted
    owned[inside] = False
    counts = {t: [0, 0, int(label.sum())] for t in thresholds}
    levels = torch.zeros(label.shape, dtype=torch.uint8, device=label.device)
    for region in _tiles(label.shape, patch):
        cand = model.candidates(image[(slice(None),) + region][None], min(thresholds))[0]
        new = ~owned[region]
        owned[region] = True
        ref = label[region]
        for level, t in enumerate(sorted(thresholds), start=1):
            fg = torch.full(new.shape, BACKGROUND_LOGIT, device=image.device, dtype=image.dtype)
            model.paste(fg, cand, model.keep(cand, t))
            pred = (fg > 0) & new
            counts[t][0] += int((pred & ref).sum())
            counts[t][1] += int(pred.sum())
            levels[region][pred] = level
    inside = tuple(slice(0, n) for n in original_shape)
    return {t: tuple(c) for t, c in counts.items()}, node_counts(levels[inside], label[inside], thresholds)


def node_counts(levels, label, thresholds):
    """{threshold: (nodes found, nodes, false components)} of one case. levels (Z, Y, X): how many of
    the sorted thresholds keep each voxel; a node is found when a predicted component touches it, a
    component touching no node is false."""
    ref, n_ref = label_nodes(label.cpu().numpy())
    levels = levels.cpu().numpy()
    out = {}
    for level, t in enumerate(sorted(thresholds), start=1):
        pred, n_pred = label_nodes(levels >= level)
        touched = np.unique(ref[pred > 0])
        hit = np.unique(pred[ref > 0])
        out[t] = (int(np.count_nonzero(touched)), n_ref, n_pred - int(np.count_nonzero(hit)))
    return out


def dice_from_counts(tp, predicted, reference):
    """Dice of one case; 1 when both are empty."""
    return 1.0 if predicted + reference == 0 else 2.0 * tp / (predicted + reference)


DICE_TOLERANCE = 0.01


def pick_threshold(mean_dice, tolerance=DICE_TOLERANCE):
    """The lowest threshold whose mean Dice is within `tolerance` of the best: at the same Dice,
    the one that keeps more candidates finds more nodes (sensitivity, FROC)."""
    best = max(mean_dice.values())
    return min(t for t, d in mean_dice.items() if d >= best - tolerance)


def node_f_score(found, nodes, false, beta=1.0):
    """F-beta of node detection pooled over cases (beta 1: F1; beta 2 weighs a missed node as four
    false ones); 1 when there is nothing to find and nothing found."""
    weight = beta ** 2
    total = (1 + weight) * found + weight * (nodes - found) + false
    return 1.0 if total == 0 else (1 + weight) * found / total


def calibrate(model, cases, patch, thresholds, recall_weight=1.0):
    """(best threshold, {threshold: (mean per-case Dice, node F-score)}, {threshold: (node sensitivity,
    false components per case, cases)}) over cases, an iterable of (image, label). The best: the
    highest mean Dice + node F-score (F-beta, beta = recall_weight; within the tolerance, the lowest
    threshold); the F-score counts each false component, which Dice on cases with nodes barely sees.
    The third item is each threshold's operating point on these cases, which travels with the model."""
    per_case = [case_counts(model, image, label, patch, thresholds) for image, label in cases]
    if not per_case:
        raise ValueError("no validation cases to calibrate the score threshold on")
    mean_dice = {t: sum(dice_from_counts(*c[t]) for c, _ in per_case) / len(per_case) for t in thresholds}
    pooled = {t: [sum(n[t][i] for _, n in per_case) for i in range(3)] for t in thresholds}
    f_score = {t: node_f_score(*pooled[t], recall_weight) for t in thresholds}
    operating = {t: (found / nodes if nodes else float("nan"), false / len(per_case), len(per_case))
                 for t, (found, nodes, false) in pooled.items()}
    return (pick_threshold({t: mean_dice[t] + f_score[t] for t in thresholds}),
            {t: (mean_dice[t], f_score[t]) for t in thresholds}, operating)
