"""Which small nodes do trained models find, and what do the missed ones have in common?

    python bench/diagnostics/small_nodes.py --images IMAGES --labels LABELS PRED_FOLDER [PRED_FOLDER ...]
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

from cosam_nn.benchmark.small_nodes import band_name, share_table, small_nodes


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
