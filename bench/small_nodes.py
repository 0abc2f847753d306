"""Which small nodes do trained models find, and what do the missed ones have in common?

    python bench/small_nodes.py --images IMAGES --labels LABELS PRED_FOLDER [PRED_FOLDER ...]
                                [--small-mm 5] [--bands 20 30] [--edge-slices 2] [--edge-px 6]

Each PRED_FOLDER holds one run's predictions of the test cases (nnU-Net's output; where its .npz
probabilities are present they order the greedy matching, as `cosam_evaluate --probs` does). For
each node under --small-mm short axis: its voxels, its mean image value inside the reference mask
(HU for CT; blur and partial volume make a small node dimmer than its tissue), where it lies
(touching the first or last --edge-slices slices, within --edge-px of the in-plane border, or
inside), and which runs found it (3D box IoU >= 0.1, the benchmark's rule). Then the share found
by contrast band (--bands: the edges, in image units) and by position, over nodes and runs. Run
over several seeds of one model, it tells the nodes no seed finds from those a seed finds by luck.
"""
import argparse
import glob
import os
import sys

import numpy as np
import SimpleITK as sitk

from cosam_nn.evaluation.evaluate import evaluate_case, load_foreground_probabilities
from cosam_nn.node_geometry import label_nodes


def node_position(mask, edge_slices, edge_px):
    """'top' or 'bottom' (touches the first or last edge_slices slices), 'in-plane edge', or 'inside'."""
    z = np.flatnonzero(mask.any((1, 2)))
    y = np.flatnonzero(mask.any((0, 2)))
    x = np.flatnonzero(mask.any((0, 1)))
    depth, height, width = mask.shape
    if z.min() < edge_slices:
        return "top"
    if z.max() >= depth - edge_slices:
        return "bottom"
    if min(y.min(), x.min()) < edge_px or y.max() >= height - edge_px or x.max() >= width - edge_px:
        return "in-plane edge"
    return "inside"


def band_name(value, edges):
    """'< a', 'a-b', ..., '>= z' for the band of edges that holds value."""
    for i, edge in enumerate(edges):
        if value < edge:
            return f"< {edge:g}" if i == 0 else f"{edges[i - 1]:g}-{edge:g}"
    return f">= {edges[-1]:g}"


def small_nodes(image_path, label_path, pred_paths, small_mm, edge_slices, edge_px):
    """Rows (voxels, mean value, position, found per run) of one case's nodes under small_mm short axis
    (as the evaluation measures it); pred_paths: one prediction per run, at least one."""
    label = sitk.ReadImage(label_path)
    ref = sitk.GetArrayFromImage(label) > 0
    image = sitk.GetArrayFromImage(sitk.ReadImage(image_path)).astype(float)
    spacing = label.GetSpacing()[::-1]
    results = []
    for path in pred_paths:
        pred = sitk.GetArrayFromImage(sitk.ReadImage(path)) > 0
        npz = path[: -len(".nii.gz")] + ".npz"
        probs = load_foreground_probabilities(npz, ref.shape) if os.path.isfile(npz) else None
        results.append(evaluate_case(ref, pred, spacing, probs))
    found = [r["matches"][0.1].found for r in results]
    instances, _ = label_nodes(ref)  # numbered as evaluate_case numbers the reference nodes
    rows = []
    for k, short_axis in enumerate(results[0]["short_axes_mm"]):
        if short_axis >= small_mm:
            continue
        mask = instances == k + 1
        rows.append((int(mask.sum()), float(image[mask].mean()), node_position(mask, edge_slices, edge_px),
                     [bool(f[k]) for f in found]))
    return rows


def share_table(rows, key, title):
    groups = {}
    for row in rows:
        groups.setdefault(key(row), []).append(row)
    lines = [f"| {title} | nodes | found (node x run) | share |", "|---|---|---|---|"]
    for name in sorted(groups):
        hits = sum(sum(r[-1]) for r in groups[name])
        total = sum(len(r[-1]) for r in groups[name])
        lines.append(f"| {name} | {len(groups[name])} | {hits} of {total} | {hits / total:.2f} |")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", metavar="PRED_FOLDER")
    p.add_argument("--images", required=True, help="the test images (CASE_0000.nii.gz)")
    p.add_argument("--labels", required=True, help="the test labels (CASE.nii.gz)")
    p.add_argument("--small-mm", type=float, default=5.0)
    p.add_argument("--bands", type=float, nargs="+", default=[20.0, 30.0], help="contrast band edges")
    p.add_argument("--edge-slices", type=int, default=2)
    p.add_argument("--edge-px", type=int, default=6)
    a = p.parse_args()
    labels = sorted(glob.glob(os.path.join(a.labels, "*.nii.gz")))
    if not labels:
        sys.exit(f"small_nodes: no .nii.gz labels in {a.labels}")
    rows = []
    for label in labels:
        case = os.path.basename(label)[: -len(".nii.gz")]
        image = os.path.join(a.images, f"{case}_0000.nii.gz")
        preds = [os.path.join(run, f"{case}.nii.gz") for run in a.runs]
        missing = [path for path in [image] + preds if not os.path.isfile(path)]
        if missing:
            sys.exit(f"small_nodes: case {case}: {missing[0]} not found")
        rows += [(case,) + row for row in small_nodes(image, label, preds, a.small_mm, a.edge_slices, a.edge_px)]
    print(f"{len(rows)} nodes under {a.small_mm:g} mm short axis, {len(a.runs)} run(s)\n")
    print("| case | voxels | mean value | position | found by |\n|---|---|---|---|---|")
    for case, voxels, value, position, found in sorted(rows, key=lambda r: r[2]):
        print(f"| {case} | {voxels} | {value:.1f} | {position} | {''.join('x' if f else '.' for f in found)} |")
    print()
    print(share_table(rows, lambda r: band_name(r[2], a.bands), "mean value"))
    print()
    print(share_table(rows, lambda r: r[3], "position"))


if __name__ == "__main__":
    main()
