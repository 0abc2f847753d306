"""`cosam_evaluate`: segmentation and lesion-level detection metrics of nnU-Net predictions.

    cosam_evaluate -ref LABELS -pred PRED [-o DIR] [--probs] [--plots DIR] [--images DIR]

All on the binary node class. Per case: Dice and IoU in 3D (a case with empty reference and empty
prediction is left out of the means and counted, as nnU-Net does). The paper's protocol: Dice and
IoU pooled over all reference slices that hold a node (sums over the test set). Lesion level:
nodes are 26-connected components of the reference, detections the components of the prediction,
scored by their mean foreground probability (with --probs, from nnU-Net's .npz files) or 1.0;
greedy matching by score at a 3D box IoU threshold; AP at IoU 0.1 and 0.5, FROC at 1/8..8 false
positives per scan and its mean; the per-slice 2D AP50 of the paper's Table 3 (each node's
cross-section per slice is a box); sensitivity by short-axis size (< 5, 5-10, > 10 mm), and the FROC
score of each size (sensitivity to the nodes of that size, every false positive counted), which
ranks how early a model finds them among all its detections instead of at one operating point.
--plots DIR draws the FROC curve, a histogram of node sizes found and missed, and for the worst and
best case an axial slice with reference and prediction outlined (on the CT from --images, by
default the imagesTs beside a labelsTs folder).
"""
import argparse
import os
import sys

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from cosam_nn.evaluation import plots
from cosam_nn.evaluation.detection_metrics import average_precision, froc, froc_curve, greedy_match
from cosam_nn.data.fileio import json_text, load_foreground_probabilities, write_text_atomic
from cosam_nn.data.image_geometry import geometry_mismatch
from cosam_nn.node_geometry import cross_section_boxes, label_nodes
from cosam_nn.evaluation.node_measures import node_diameters

SIZE_BINS = (("< 5 mm", 0.0, 5.0), ("5-10 mm", 5.0, 10.0), ("> 10 mm", 10.0, float("inf")))


class EvaluationError(ValueError):
    """A fault in the inputs; the message names the case."""


def _read_binary(path, case, what):
    try:
        image = sitk.ReadImage(path)
    except RuntimeError as e:
        raise EvaluationError(f"case {case}: unreadable {what} {path} ({str(e).strip().splitlines()[-1]})") from None
    array = sitk.GetArrayFromImage(image)
    values = np.unique(array)
    if not set(values.tolist()) <= {0, 1}:
        raise EvaluationError(f"case {case}: {what} is not binary (values {values[:6].tolist()}...); "
                              f"expected 0 = background, 1 = node")
    return image, array.astype(bool)


def components(mask, probs=None):
    """(instance map, boxes (N, 6) z,y,x lo then hi exclusive, scores (N,)) of a binary volume."""
    instances, n = label_nodes(mask)
    boxes = np.zeros((n, 6))
    for i, sl in enumerate(ndimage.find_objects(instances)):
        boxes[i] = [s.start for s in sl] + [s.stop for s in sl]
    if probs is None or n == 0:
        scores = np.ones(n)
    else:
        scores = np.asarray(ndimage.mean(probs, instances, index=np.arange(1, n + 1)), float)
    return instances, boxes, scores


def slice_boxes(instances, scores=None):
    """Per slice z: (boxes (K, 4) x,y lo then hi, scores (K,)) of each component's cross-section."""
    boxes, present, _ = cross_section_boxes(instances)
    scores = np.ones(len(boxes)) if scores is None else np.asarray(scores, float)
    out = {}
    for z in np.flatnonzero(present.any(0)):
        on = np.flatnonzero(present[:, z])
        out[int(z)] = (boxes[on, z].astype(float), scores[on])
    return out


def evaluate_case(ref, pred, spacing_zyx, probs=None, iou_thresholds=(0.1, 0.5)):
    """Everything one case contributes; ref and pred boolean (Z, Y, X) arrays."""
    inter, total, union = int((ref & pred).sum()), int(ref.sum() + pred.sum()), int((ref | pred).sum())
    node_slices = np.flatnonzero(ref.reshape(ref.shape[0], -1).any(1))
    ref_inst, ref_boxes, _ = components(ref)
    pred_inst, pred_boxes, pred_scores = components(pred, probs)
    matches = {t: greedy_match(pred_boxes, pred_scores, ref_boxes, t) for t in iou_thresholds}
    ref_slices, pred_slices = slice_boxes(ref_inst), slice_boxes(pred_inst, pred_scores)
    slice_groups = []
    for z in sorted(set(ref_slices) | set(pred_slices)):
        rb, _ = ref_slices.get(z, (np.zeros((0, 4)), None))
        pb, ps = pred_slices.get(z, (np.zeros((0, 4)), np.zeros(0)))
        slice_groups.append(greedy_match(pb, ps, rb, 0.5))
    short_axes = [node_diameters(ref_inst == i + 1, spacing_zyx)[1] for i in range(len(ref_boxes))]
    return {
        "dice": 2 * inter / total if total else None,
        "iou": inter / union if union else None,
        "pooled": (int((ref[node_slices] & pred[node_slices]).sum()), int(ref[node_slices].sum() + pred[node_slices].sum()),
                   int((ref[node_slices] | pred[node_slices]).sum())),
        "matches": matches, "slice_groups": slice_groups,
        "reference_nodes": len(ref_boxes), "predicted_nodes": len(pred_boxes),
        "reference_voxels": int(ref.sum()), "predicted_voxels": int(pred.sum()),
        "short_axes_mm": short_axes,
    }


def summarise(cases, iou_thresholds=(0.1, 0.5), detection_iou=0.1):
    """Aggregate per-case results (dict case -> evaluate_case output) into the summary dict."""
    dices = [c["dice"] for c in cases.values() if c["dice"] is not None]
    ious = [c["iou"] for c in cases.values() if c["iou"] is not None]
    inter, size, union = (sum(c["pooled"][k] for c in cases.values()) for k in range(3))
    groups = {t: [c["matches"][t] for c in cases.values()] for t in iou_thresholds}
    froc_points, froc_score = froc(groups[detection_iou], len(cases))
    found = np.concatenate([c["matches"][detection_iou].found for c in cases.values()]) if cases else np.zeros(0, bool)
    axes = np.array([a for c in cases.values() for a in c["short_axes_mm"]])
    by_size = {}
    for name, lo, hi in SIZE_BINS:
        sel = (axes >= lo) & (axes < hi)
        counted = [(np.asarray(c["short_axes_mm"]) >= lo) & (np.asarray(c["short_axes_mm"]) < hi) for c in cases.values()]
        by_size[name] = {"nodes": int(sel.sum()),
                         "sensitivity": float(found[sel].mean()) if sel.any() else None,
                         "froc_score": froc(groups[detection_iou], len(cases), counted=counted)[1] if sel.any() else None}
    return {
        "cases": len(cases),
        "cases_empty_reference_and_prediction": sum(1 for c in cases.values() if c["dice"] is None),
        "dice_mean": float(np.mean(dices)) if dices else None,
        "iou_mean": float(np.mean(ious)) if ious else None,
        "pooled_slice_dice": 2 * inter / size if size else None,
        "pooled_slice_iou": inter / union if union else None,
        "reference_nodes": int(sum(c["reference_nodes"] for c in cases.values())),
        "predicted_nodes": int(sum(c["predicted_nodes"] for c in cases.values())),
        "ap": {str(t): average_precision(groups[t]) for t in iou_thresholds},
        "ap50_2d_per_slice": average_precision([g for c in cases.values() for g in c["slice_groups"]]),
        "froc_iou": detection_iou,
        "froc": {f"{r:g}": v for r, v in froc_points.items()},
        "froc_score": froc_score,
        "sensitivity_by_short_axis": by_size,
        "per_case": {k: {"dice": c["dice"], "iou": c["iou"], "reference_nodes": c["reference_nodes"],
                         "predicted_nodes": c["predicted_nodes"], "reference_voxels": c["reference_voxels"],
                         "predicted_voxels": c["predicted_voxels"],
                         "nodes_found": int(c["matches"][detection_iou].found.sum())} for k, c in cases.items()},
    }


def _case_files(folder, what):
    if not os.path.isdir(folder):
        raise EvaluationError(f"{folder}: {what} folder not found")
    return {f[: -len(".nii.gz")]: os.path.join(folder, f) for f in sorted(os.listdir(folder)) if f.endswith(".nii.gz")}


def evaluate_folders(ref_dir, pred_dir, use_probs=False, log=print):
    refs, preds = _case_files(ref_dir, "reference"), _case_files(pred_dir, "prediction")
    for case in refs:
        if case not in preds:
            raise EvaluationError(f"case {case}: no prediction {case}.nii.gz in {pred_dir}")
    for case in preds:
        if case not in refs:
            raise EvaluationError(f"case {case}: prediction has no reference in {ref_dir}")
    if not refs:
        raise EvaluationError(f"{ref_dir}: no .nii.gz reference files")
    results = {}
    for i, case in enumerate(refs, start=1):
        ref_img, ref = _read_binary(refs[case], case, "reference")
        pred_img, pred = _read_binary(preds[case], case, "prediction")
        fault = geometry_mismatch(ref_img, pred_img, "reference", "prediction")
        if fault:
            raise EvaluationError(f"case {case}: {fault}")
        probs = None
        if use_probs:
            try:
                probs = load_foreground_probabilities(os.path.join(pred_dir, case + ".npz"), ref.shape)
            except ValueError as e:
                raise EvaluationError(f"case {case}: {e}") from None
        results[case] = evaluate_case(ref, pred, ref_img.GetSpacing()[::-1], probs)
        log(f"[{i}/{len(refs)}] {case}")
    summary = summarise(results)
    summary["detection_scores"] = "mean foreground probability" if use_probs else "1.0 (no probabilities given)"
    return summary, results


def write_plots(results, summary, refs_dir, pred_dir, images_dir, out, detection_iou=0.1):
    """The QA pictures; returns their paths."""
    groups = [c["matches"][detection_iou] for c in results.values()]
    fps, sens = froc_curve(groups, len(results))
    paths = [plots.froc_plot(fps, sens, os.path.join(out, "froc.png"), summary["froc_score"])]
    axes = np.array([a for c in results.values() for a in c["short_axes_mm"]])
    found = np.concatenate([g.found for g in groups]) if groups else np.zeros(0, bool)
    paths.append(plots.size_histogram(axes[found], axes[~found], os.path.join(out, "node_sizes.png")))
    scored = sorted((c["dice"], k) for k, c in results.items() if c["dice"] is not None)
    for label, (dice, case) in (("worst", scored[0]), ("best", scored[-1])) if scored else ():
        ref = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(refs_dir, case + ".nii.gz"))) > 0
        pred = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(pred_dir, case + ".nii.gz"))) > 0
        image_path = os.path.join(images_dir or "", case + "_0000.nii.gz")
        image = sitk.GetArrayFromImage(sitk.ReadImage(image_path)) if images_dir and os.path.isfile(image_path) \
            else np.where(ref, 100, -100)
        z = plots.busiest_slice(ref if ref.any() else pred)
        paths.append(plots.overlay(image, ref, pred, z, os.path.join(out, f"{label}_{case}.png"),
                                   f"{label}: {case}, Dice {dice:.3f}, slice {z} (green reference, red prediction)"))
    return paths


def fmt_value(v):
    """A metric for a table: 3 decimals, "n/a" where it is undefined (None or NaN)."""
    return "n/a" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.3f}"


def headline(summary):
    """The headline table as Markdown."""
    rows = [("Dice (mean of cases)", summary["dice_mean"]), ("IoU (mean of cases)", summary["iou_mean"]),
            ("Dice pooled over node slices (paper)", summary["pooled_slice_dice"]),
            ("IoU pooled over node slices (paper)", summary["pooled_slice_iou"]),
            ("AP @ 3D IoU 0.1", summary["ap"]["0.1"]), ("AP @ 3D IoU 0.5", summary["ap"]["0.5"]),
            ("AP50 per slice, 2D (paper Table 3)", summary["ap50_2d_per_slice"]),
            ("FROC score (1/8..8 FP per scan)", summary["froc_score"])]
    rows += [(f"sensitivity, short axis {k} ({v['nodes']} nodes)", v["sensitivity"])
             for k, v in summary["sensitivity_by_short_axis"].items()]
    rows += [(f"FROC score, short axis {k} (every false positive counted)", v["froc_score"])
             for k, v in summary["sensitivity_by_short_axis"].items()]
    lines = ["| metric | value |", "|---|---|"] + [f"| {k} | {fmt_value(v)} |" for k, v in rows]
    lines.append(f"\n{summary['cases']} cases ({summary['cases_empty_reference_and_prediction']} with empty reference "
                 f"and prediction, left out of the means); {summary['reference_nodes']} reference and "
                 f"{summary['predicted_nodes']} predicted nodes; detection scores: {summary['detection_scores']}.")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(prog="cosam_evaluate", description=__doc__.splitlines()[0])
    p.add_argument("-ref", required=True, help="folder of reference labels (.nii.gz)")
    p.add_argument("-pred", required=True, help="nnU-Net prediction folder")
    p.add_argument("-o", default=None, help="output folder for summary.json and summary.md (default: -pred)")
    p.add_argument("--probs", action="store_true", help="score detections with nnU-Net's .npz probabilities")
    p.add_argument("--overwrite", action="store_true", help="replace an existing summary.json / summary.md")
    p.add_argument("--plots", default=None, help="folder for the FROC, size and overlay pictures")
    p.add_argument("--images", default=None, help="CT images ({case}_0000.nii.gz) for the overlays "
                                                  "(default: imagesTs beside a labelsTs folder)")
    a = p.parse_args(argv)
    try:
        summary, results = evaluate_folders(a.ref, a.pred, a.probs)
    except EvaluationError as e:
        print(f"cosam_evaluate: error: {e}", file=sys.stderr)
        return 1
    out = a.o or a.pred
    if os.path.exists(out) and not os.path.isdir(out):
        print(f"cosam_evaluate: error: -o {out}: is a file; -o names the folder for summary.json and summary.md",
              file=sys.stderr)
        return 1
    if os.path.exists(os.path.join(out, "summary.json")) and not a.overwrite:
        print(f"cosam_evaluate: error: {os.path.join(out, 'summary.json')} exists (use --overwrite to replace it)",
              file=sys.stderr)
        return 1
    table = headline(summary)
    try:
        os.makedirs(out, exist_ok=True)
        if a.plots:
            images = a.images or os.path.join(os.path.dirname(os.path.abspath(a.ref)), "imagesTs")
            summary["plots"] = write_plots(results, summary, a.ref, a.pred, images if os.path.isdir(images) else None,
                                           a.plots)
        write_text_atomic(os.path.join(out, "summary.json"), json_text(summary))
        write_text_atomic(os.path.join(out, "summary.md"), "# cosam_evaluate\n\n" + table + "\n")
    except OSError as e:  # an output folder that cannot be made or written
        print(f"cosam_evaluate: error: cannot write {e.filename or out}: {e.strerror}", file=sys.stderr)
        return 1
    print(table)
    print(f"\nwrote {os.path.join(out, 'summary.json')} and summary.md")
    if a.plots:
        print(f"pictures: {', '.join(summary['plots'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
