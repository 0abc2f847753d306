"""How well the model's own U-SAM segments a node from a reader's box: the Dice of box-prompted masks
for the reference nodes a trained model missed.

    python bench/box_prompts.py --work WORK --run RUN_ID [--grow 2] [--draws 2000]

WORK is a compare.py work folder and RUN_ID one of its finished runs (a CoSAM model, its test cases
predicted there). A reference node is missed when no predicted component matches it (3D box IoU
0.1, the benchmark's rule). Each missed node's box (its bounding box, grown in-plane by --grow
voxels, as a reader would draw it) is segmented as `cosam_segment` segments it, alone, and scored
against that node's mask; beside it, the Dice of a mask that knows only the box (the ellipse
inscribed in it on each slice), which says how much of the score the box alone gives. Printed for
the missed nodes and, for comparison, for every node: mean Dice with a 95% bootstrap interval over
nodes, and by short-axis size. Writes WORK/box_prompts_RUN_ID.json.
"""
import argparse
import json
import os
import sys

import numpy as np
import SimpleITK as sitk
import torch

from cosam_nn.data.fileio import json_text, load_foreground_probabilities, write_text_atomic
from cosam_nn.evaluation.evaluate import evaluate_case
from cosam_nn.evaluation.node_measures import node_diameters
from cosam_nn.inference.model import load_predictor
from cosam_nn.inference.segment import BoxSegmenter
from cosam_nn.node_geometry import label_nodes

SIZES = (("< 5 mm", 0.0, 5.0), ("5-10 mm", 5.0, 10.0), ("> 10 mm", 10.0, float("inf")))


def node_box(mask):
    """(lo, hi) voxel box (z, y, x, hi exclusive) of a node mask."""
    where = np.nonzero(mask)
    return np.array([w.min() for w in where]), np.array([w.max() + 1 for w in where])


def dice(a, b):
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else 2.0 * float((a & b).sum()) / float(total)


def interval(values, draws, seed=0):
    values = np.asarray(values, float)
    if not len(values):
        return None, None, None
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (draws, len(values)))].mean(1)
    return float(values.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def box_ellipse(shape, lo, hi):
    """(Z, Y, X) bool: on each slice of the box, the ellipse inscribed in its in-plane rectangle."""
    mask = np.zeros(shape, bool)
    yy, xx = np.mgrid[0:shape[1], 0:shape[2]]
    cy, cx = (lo[1] + hi[1] - 1) / 2, (lo[2] + hi[2] - 1) / 2
    ry, rx = (hi[1] - lo[1]) / 2, (hi[2] - lo[2]) / 2
    mask[int(lo[0]):int(hi[0])] = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    return mask


def case_rows(segmenter, reference, prediction, probabilities, spacing, grow):
    """One row per reference node: short axis, whether the model found it, Dice of its box's mask and
    of the box's inscribed ellipse."""
    result = evaluate_case(reference, prediction, spacing, probabilities)
    found = result["matches"][0.1].found
    instances, n = label_nodes(reference)
    rows = []
    for k in range(1, n + 1):
        node = instances == k
        lo, hi = node_box(node)
        mask = segmenter.mask([(lo, hi)], grow)
        drawn = (np.maximum(lo - [0, grow, grow], 0), np.minimum(hi + [0, grow, grow], reference.shape))
        rows.append({"short_axis_mm": float(node_diameters(node, spacing)[1]), "found": bool(found[k - 1]),
                     "dice": dice(mask, node), "ellipse_dice": dice(box_ellipse(reference.shape, *drawn), node),
                     "voxels": int(node.sum())})
    return rows


def summary(rows, draws):
    out = {"nodes": len(rows), "dice": interval([r["dice"] for r in rows], draws),
           "ellipse_dice": interval([r["ellipse_dice"] for r in rows], draws)}
    for name, lo, hi in SIZES:
        part = [r["dice"] for r in rows if lo <= r["short_axis_mm"] < hi]
        out[name] = {"nodes": len(part), "dice": interval(part, draws)}
    return out


def _line(title, s):
    def cell(v):
        return "n/a" if v[0] is None else f"{v[0]:.3f} [{v[1]:.3f}, {v[2]:.3f}]"
    sizes = "; ".join(f"{name} {s[name]['nodes']} nodes {cell(s[name]['dice'])}" for name, _, _ in SIZES)
    return (f"{title}: {s['nodes']} nodes, Dice {cell(s['dice'])} ({sizes}); the box's inscribed ellipse "
            f"{cell(s['ellipse_dice'])}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", required=True)
    p.add_argument("--run", required=True, help="a finished run of the work folder, e.g. CoSAMTrainerSmall_it128x15_s0")
    p.add_argument("--grow", type=float, default=2.0, help="voxels added to each box in-plane (default 2)")
    p.add_argument("--draws", type=int, default=2000)
    a = p.parse_args()
    runs = json.load(open(os.path.join(a.work, "runs.json")))["runs"]
    if a.run not in runs:
        sys.exit(f"box_prompts: {a.work}/runs.json holds no finished run {a.run!r}")
    trainer = runs[a.run]["row"].split()[0]
    raw = os.path.join(a.work, "nnUNet_raw", "Dataset501_Meply")
    model = os.path.join(a.work, "results", a.run, "Dataset501_Meply", f"{trainer}__nnUNetPlans__3d_fullres")
    predictions = os.path.join(a.work, "predictions", a.run, "checkpoint_final")
    predictor = load_predictor(model, ["0"], torch.device("cpu"), tta=False)
    reader = predictor.plans_manager.image_reader_writer_class()
    rows = []
    cases = sorted(f[: -len(".nii.gz")] for f in os.listdir(os.path.join(raw, "labelsTs")) if f.endswith(".nii.gz"))
    for i, case in enumerate(cases, start=1):
        label = sitk.ReadImage(os.path.join(raw, "labelsTs", case + ".nii.gz"))
        reference = sitk.GetArrayFromImage(label) > 0
        if not reference.any():
            continue
        prediction = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(predictions, case + ".nii.gz"))) > 0
        probabilities = load_foreground_probabilities(os.path.join(predictions, case + ".npz"), reference.shape)
        image, properties = reader.read_images([os.path.join(raw, "imagesTs", case + "_0000.nii.gz")])
        segmenter = BoxSegmenter(predictor, image, properties)
        rows += [dict(r, case=case) for r in case_rows(segmenter, reference, prediction, probabilities,
                                                        label.GetSpacing()[::-1], a.grow)]
        print(f"[{i}/{len(cases)}] {case}: {sum(1 for r in rows if r['case'] == case)} node(s)", flush=True)
    missed = [r for r in rows if not r["found"]]
    result = {"run": a.run, "grow": a.grow, "missed": summary(missed, a.draws), "all": summary(rows, a.draws),
              "rows": rows}
    write_text_atomic(os.path.join(a.work, f"box_prompts_{a.run}.json"), json_text(result))
    print(_line("nodes the model missed", result["missed"]))
    print(_line("every node", result["all"]))


if __name__ == "__main__":
    main()
