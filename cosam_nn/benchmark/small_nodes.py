"""Per node under a size, its voxels, contrast, position and which runs found it
(bench/diagnostics/small_nodes.py)."""
import os

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
