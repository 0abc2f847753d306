"""Does a short CPU training of a trainer beat the same network untrained on held-out synthetic cases?

    python bench/learning_check.py [-tr CoSAMTrainerSmall] [--epochs 8] [--iters 50] [--cases 24]

Fold 0 trains for the budget; fold 1 for a single iteration (the untrained reference). Both predict
the same held-out test cases (never seen in training). Prints, per model, the mean Dice, the share
of reference nodes touched by the prediction and the false-positive components.
"""
import argparse
import os
import platform
import time

import numpy as np
import SimpleITK as sitk

from cosam_nn.demo import Pipeline
from cosam_nn.evaluation.evaluate import evaluate_folders
from cosam_nn.node_geometry import label_nodes


def node_hits(raw, pred):
    """(nodes touched, nodes, predicted components touching no node) over the test cases."""
    hit = total = false = 0
    for f in sorted(os.listdir(os.path.join(raw, "labelsTs"))):
        ref = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(raw, "labelsTs", f))) > 0
        seg = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(pred, f))) > 0
        ref_nodes, n_ref = label_nodes(ref)
        seg_nodes, n_seg = label_nodes(seg)
        hit += len(set(np.unique(ref_nodes[seg])) - {0})
        total += n_ref
        false += len(set(range(1, n_seg + 1)) - set(np.unique(seg_nodes[ref])))
    return hit, total, false


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-tr", default="CoSAMTrainerSmall", dest="trainer")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--iters", type=int, default=50)
    p.add_argument("--cases", type=int, default=24)
    p.add_argument("--shape", type=int, nargs=3, default=(32, 96, 96))
    p.add_argument("--work", default="bench_work/learning_check")
    a = p.parse_args()
    pipe = Pipeline(a.work, log=lambda *_: None)
    pipe.prepare(a.cases, a.shape, seed=7)
    results = {}
    for name, fold, epochs, iters in (("untrained", 1, 1, 1), ("trained", 0, a.epochs, a.iters)):
        seconds = pipe.train(a.trainer, epochs, iters, val_iters=1, fold=fold)
        pred = os.path.join(pipe.work, f"pred_{name}")
        pipe.predict(a.trainer, pred, fold=fold)
        summary, _ = evaluate_folders(os.path.join(pipe.raw, "labelsTs"), pred, log=lambda *_: None)
        results[name] = (summary, node_hits(pipe.raw, pred), seconds)
    print(f"{platform.node()}, {time.strftime('%Y-%m-%d')}: {a.trainer}, {a.cases} cases {a.shape}, "
          f"trained {a.epochs} x {a.iters} iterations")
    for name, (summary, (hit, total, false), seconds) in results.items():
        scored = summary["cases"] - summary["cases_empty_reference_and_prediction"]
        dice = "n/a" if summary["dice_mean"] is None else f"{summary['dice_mean']:.3f}"  # every case empty
        print(f"{name:<10} mean Dice {dice} over {scored} test cases; nodes touched "
              f"{hit}/{total}; false-positive components {false}; training + validation {seconds:.0f} s")


if __name__ == "__main__":
    main()
