"""`cosam_report`: what the model found in each patient, node by node.

    cosam_report IMAGE PRED [--probs FILE] [-o report.json] [--threshold 0.5] [--short-axis 5] [--plots DIR]
                 [--instances DIR]
    cosam_report IMAGES_DIR PRED_DIR [-o report.json]          (every case; --probs from PRED_DIR/*.npz)

Per predicted node (a 26-connected component): centroid in voxels (z, y, x) and in world millimetres
(the image's origin, spacing and direction, ITK's physical frame), voxel count, volume in mm^3, long
and short axis in mm measured on its axial slice of largest area, confidence (mean foreground
probability, or 1.0 without probabilities) and whether the short axis meets the size criterion.
Then the number of nodes at or above the confidence threshold (and of at least --min-volume mm^3,
so that specks of a few voxels are listed but not counted) and the N category that count
implies for rectal cancer (AJCC: N0 0, N1a 1, N1b 2-3, N2a 4-6, N2b 7+): an estimate from CT, not a
diagnosis. Written as JSON and, beside it, CSV; --plots DIR draws each node on its axial slice;
--instances DIR writes each case's instance map and detections (cosam_nn.evaluation.detections).
"""
import argparse
import csv
import io
import os
import sys

import numpy as np
import SimpleITK as sitk
from skimage.measure import regionprops

from cosam_nn.cli_types import non_negative, probability
from cosam_nn.evaluation import plots
from cosam_nn.data.fileio import json_text, load_foreground_probabilities, write_text_atomic
from cosam_nn.data.image_geometry import geometry_mismatch
from cosam_nn.evaluation.detections import write_instances_and_detections
from cosam_nn.node_geometry import label_nodes
from cosam_nn.evaluation.node_measures import node_diameters

N_CATEGORY_NOTE = "estimate from CT node count only, not a diagnosis"
CSV_COLUMNS = ("case", "node", "z", "y", "x", "world_x_mm", "world_y_mm", "world_z_mm", "voxels", "volume_mm3",
               "long_axis_mm", "short_axis_mm", "confidence", "meets_short_axis")


class ReportError(ValueError):
    """A fault in the inputs; the message names the file."""


def n_category(count):
    """AJCC N category of rectal cancer implied by the number of metastatic nodes."""
    if count <= 0:
        return "N0"
    if count == 1:
        return "N1a"
    if count <= 3:
        return "N1b"
    if count <= 6:
        return "N2a"
    return "N2b"


CONFIDENCE_SOURCES = {
    "scores": "final detection score (sqrt(detector score x CCM probability), the value the model's threshold "
              "compares; for a node no unflipped window detected, its mean foreground probability)",
    "probs": "mean foreground probability",
    None: "1.0 (no probabilities)",
}


def report_case(image, seg, probs=None, threshold=0.5, short_axis_mm=5.0, case="", min_volume_mm3=10.0, scores=None,
                threshold_source="--threshold"):
    """Report dict of one case; image: SimpleITK image (geometry), seg: (Z, Y, X) bool, probs: (Z, Y, X) or None;
    scores: a detection-score volume (Z, Y, X) (cosam_predict), whose highest value inside a node is its
    confidence. A node counts when its confidence reaches `threshold` and its volume `min_volume_mm3`."""
    spacing_zyx = image.GetSpacing()[::-1]
    voxel_mm3 = float(np.prod(spacing_zyx))
    instances, n = label_nodes(seg)
    nodes = []
    for region in regionprops(instances, intensity_image=probs):
        node = instances == region.label
        cz, cy, cx = (float(c) for c in region.centroid)
        world = image.TransformContinuousIndexToPhysicalPoint((cx, cy, cz))
        long_axis, short_axis = node_diameters(node, spacing_zyx)
        confidence = float(region.intensity_mean) if probs is not None else 1.0
        best_score = float(scores[node].max()) if scores is not None else 0.0
        if best_score > 0:
            confidence = best_score
        nodes.append({"node": int(region.label), "centroid_voxel_zyx": [round(cz, 2), round(cy, 2), round(cx, 2)],
                      "centroid_world_mm_xyz": [round(v, 2) for v in world], "voxels": int(region.area),
                      "volume_mm3": round(region.area * voxel_mm3, 2), "long_axis_mm": round(long_axis, 2),
                      "short_axis_mm": round(short_axis, 2), "confidence": round(confidence, 4),
                      "meets_short_axis": bool(short_axis >= short_axis_mm)})
    count = sum(1 for nd in nodes if nd["confidence"] >= threshold and nd["volume_mm3"] >= min_volume_mm3)
    source = "scores" if scores is not None else "probs" if probs is not None else None
    return {"case": case, "nodes": nodes, "confidence_threshold": threshold, "threshold_source": threshold_source,
            "short_axis_criterion_mm": short_axis_mm, "min_volume_mm3": min_volume_mm3,
            "nodes_at_or_above_threshold": count, "n_category": n_category(count), "n_category_note": N_CATEGORY_NOTE,
            "confidence_source": CONFIDENCE_SOURCES[source]}


def _read(path, what):
    if not os.path.isfile(path):
        raise ReportError(f"{path}: {what} not found")
    try:
        return sitk.ReadImage(path)
    except RuntimeError as e:
        raise ReportError(f"{path}: unreadable {what} ({str(e).strip().splitlines()[-1]})") from None


def _load_case(image_path, pred_path, probs_path):
    image = _read(image_path, "image")
    _, seg, probs = load_prediction(pred_path, probs_path, image)
    return image, seg, probs


def load_prediction(pred_path, probs_path=None, image=None):
    """(prediction image, (Z, Y, X) bool, foreground probabilities or None) of one case, checked: readable,
    of `image`'s geometry when given, binary, probabilities of its shape. Raises ReportError."""
    pred = _read(pred_path, "prediction")
    fault = geometry_mismatch(image, pred, "image", "prediction") if image is not None else None
    if fault:
        raise ReportError(f"{pred_path}: does not match the image: {fault}")
    seg = sitk.GetArrayFromImage(pred)
    if not set(np.unique(seg).tolist()) <= {0, 1}:
        raise ReportError(f"{pred_path}: prediction is not binary (0 background, 1 node)")
    probs = None
    if probs_path:
        try:
            probs = load_foreground_probabilities(probs_path, seg.shape).astype(np.float64)
        except ValueError as e:
            raise ReportError(str(e)) from None
    return pred, seg > 0, probs


def _cases(image_arg, pred_arg, probs_arg):
    """(case, image path, prediction path, probabilities path or None) for a file pair or two folders."""
    if os.path.isdir(image_arg):
        if not os.path.isdir(pred_arg):
            raise ReportError(f"{pred_arg}: with an image folder, PRED must be a folder")
        out = []
        for f in sorted(os.listdir(pred_arg)):
            if not f.endswith(".nii.gz"):
                continue
            case = f[: -len(".nii.gz")]
            image = os.path.join(image_arg, case + "_0000.nii.gz")
            if not os.path.isfile(image):
                image = os.path.join(image_arg, f)
            npz = os.path.join(pred_arg, case + ".npz")
            out.append((case, image, os.path.join(pred_arg, f), npz if os.path.isfile(npz) else None))
        if not out:
            raise ReportError(f"{pred_arg}: no .nii.gz predictions")
        return out
    case = os.path.basename(pred_arg).split(".")[0]
    return [(case, image_arg, pred_arg, probs_arg)]


def _node_pictures(report, image, seg, folder):
    instances, _ = label_nodes(seg)
    for nd in report["nodes"]:
        z = plots.busiest_slice(instances == nd["node"])
        nd["picture"] = plots.overlay(image, None, seg, z, os.path.join(folder, f"{report['case']}_node{nd['node']}.png"),
                                      f"{report['case']} node {nd['node']}: {nd['short_axis_mm']:.1f} mm short axis, "
                                      f"confidence {nd['confidence']:.2f}")


def to_csv(reports):
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(CSV_COLUMNS)
    for r in reports:
        for nd in r["nodes"]:
            writer.writerow([r["case"], nd["node"], *nd["centroid_voxel_zyx"], *nd["centroid_world_mm_xyz"], nd["voxels"],
                             nd["volume_mm3"], nd["long_axis_mm"], nd["short_axis_mm"], nd["confidence"],
                             nd["meets_short_axis"]])
    return buf.getvalue()


def report_path(o, reports):
    """-o as given, or inside it when it is a folder (or ends with a separator): CASE.json for one
    case, report.json for several."""
    if os.path.isdir(o) or o.endswith(os.sep):
        return os.path.join(o, f"{reports[0]['case']}.json" if len(reports) == 1 else "report.json")
    return o


def main(argv=None):
    p = argparse.ArgumentParser(prog="cosam_report", description=__doc__.splitlines()[0])
    p.add_argument("image", help="CT image (or folder of nnU-Net inputs {case}_0000.nii.gz)")
    p.add_argument("pred", help="predicted mask (or nnU-Net prediction folder)")
    p.add_argument("--probs", default=None, help="nnU-Net .npz probabilities of this case")
    p.add_argument("-o", default="report.json",
                   help="output JSON, or a folder for CASE.json (one case) or report.json (a CSV is written beside it)")
    p.add_argument("--threshold", type=probability, default=0.5, help="confidence to count a node (default 0.5)")
    p.add_argument("--short-axis", type=non_negative, default=5.0, dest="short_axis",
                   help="short-axis size criterion in mm (default 5)")
    p.add_argument("--min-volume", type=non_negative, default=10.0, dest="min_volume",
                   help="smallest volume in mm^3 a node needs to be counted (default 10)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing report")
    p.add_argument("--plots", default=None, help="folder for one picture per node")
    p.add_argument("--instances", default=None, metavar="DIR",
                   help="also write CASE_instances.nii.gz (node k = k) and CASE_detections.json (boxes in voxels, "
                        "nnDetection's convention and world mm, with scores) per case into DIR")
    a = p.parse_args(argv)
    try:
        reports = []
        for case, image_path, pred_path, probs_path in _cases(a.image, a.pred, a.probs):
            image, seg, probs = _load_case(image_path, pred_path, probs_path)
            reports.append(report_case(image, seg, probs, a.threshold, a.short_axis, case, a.min_volume))
            if a.plots:
                _node_pictures(reports[-1], sitk.GetArrayFromImage(image), seg, a.plots)
            if a.instances:
                write_instances_and_detections(a.instances, image, label_nodes(seg)[0], reports[-1])
        out = report_path(a.o, reports)
        if os.path.exists(out) and not a.overwrite:
            raise ReportError(f"{out} exists (use --overwrite to replace it)")
        write_text_atomic(out, json_text(reports if len(reports) > 1 else reports[0]))
        write_text_atomic(os.path.splitext(out)[0] + ".csv", to_csv(reports))
    except ReportError as e:
        print(f"cosam_report: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # an output path that is a file, a read-only folder, a full disk
        print(f"cosam_report: error: cannot write {e.filename or a.o}: {e.strerror}", file=sys.stderr)
        return 1
    for r in reports:
        print(f"{r['case']}: {len(r['nodes'])} node(s), {r['nodes_at_or_above_threshold']} at confidence >= "
              f"{r['confidence_threshold']}: {r['n_category']} ({N_CATEGORY_NOTE})")
        for nd in r["nodes"]:
            print(f"  node {nd['node']}: {nd['volume_mm3']:.0f} mm3, {nd['long_axis_mm']:.1f} x {nd['short_axis_mm']:.1f} mm, "
                  f"confidence {nd['confidence']:.2f}, world (x, y, z) {nd['centroid_world_mm_xyz']} mm")
    print(f"wrote {out} and {os.path.splitext(out)[0]}.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
