"""Does a short CPU training of a trainer beat the same network untrained on held-out synthetic cases?

    python bench/diagnostics/learning_check.py [-tr CoSAMTrainerSmall] [--epochs 8] [--iters 50] [--cases 24]

Fold 0 trains for the budget; fold 1 for a single iteration (the untrained reference). Both predict
the same held-out test cases (never seen in training). Prints, per model, the mean Dice, the share
of reference nodes touched by the prediction and the false-positive components, the seconds per
training iteration and the largest process's peak memory, then the trained run's curve by epoch
(training loss, validation loss, nnU-Net's pseudo Dice on the validation windows, phase).
"""
import argparse
import glob
import os
import platform
import re
import time

import numpy as np
import SimpleITK as sitk

from cosam_nn.benchmark.workfolder import training_log_text
from cosam_nn.demo import Pipeline
from cosam_nn.evaluation.evaluate import evaluate_folders, fmt_value
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


def epoch_curve(fold_dir):
    """(epoch, train loss, val loss, pseudo Dice, phase) per finished epoch, from nnU-Net's training log."""
    rows, phase, epoch = [], "", None
    for line in training_log_text(fold_dir).splitlines():
        if m := re.search(r": Epoch (\d+)\s*$", line):
            epoch, values = int(m.group(1)), {}
        elif m := re.search(r"phase: (\w+)", line):
            phase = m.group(1)
        elif epoch is not None and (m := re.search(r": (train_loss|val_loss) (\S+)", line)):
            values[m.group(1)] = float(m.group(2))
        elif epoch is not None and (m := re.search(r"Pseudo dice \[(?:np\.float64\()?([\d.e-]+)", line)):
            rows.append((epoch, values.get("train_loss"), values.get("val_loss"), float(m.group(1)), phase))
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-tr", default="CoSAMTrainerSmall", dest="trainer")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--iters", type=int, default=50)
    p.add_argument("--cases", type=int, default=24)
    p.add_argument("--shape", type=int, nargs=3, default=(32, 96, 96))
    p.add_argument("--val-iters", type=int, default=1, help="validation iterations per epoch (the curve's pseudo Dice)")
    p.add_argument("--seed", type=int, default=0, help="COSAM_SEED of both trainings")
    p.add_argument("--work", default="bench_work/learning_check")
    a = p.parse_args()
    pipe = Pipeline(a.work, log=lambda *_: None)
    pipe.prepare(a.cases, a.shape, seed=7)
    results = {}
    for name, fold, epochs, iters, val_iters in (("untrained", 1, 1, 1, 1), ("trained", 0, a.epochs, a.iters, a.val_iters)):
        seconds = pipe.train(a.trainer, epochs, iters, val_iters=val_iters, fold=fold, seed=a.seed)
        peak = pipe.last_peak_mib
        pred = os.path.join(pipe.work, f"pred_{name}")
        pipe.predict(a.trainer, pred, fold=fold)
        summary, _ = evaluate_folders(os.path.join(pipe.raw, "labelsTs"), pred, log=lambda *_: None)
        results[name] = (summary, node_hits(pipe.raw, pred), seconds, peak, epochs * iters)
    print(f"{platform.node()}, {time.strftime('%Y-%m-%d')}: {a.trainer}, {a.cases} cases {a.shape}, "
          f"trained {a.epochs} x {a.iters} iterations")
    for name, (summary, (hit, total, false), seconds, peak, its) in results.items():
        scored = summary["cases"] - summary["cases_empty_reference_and_prediction"]
        dice, froc = fmt_value(summary["dice_mean"]), fmt_value(summary["froc_score"])  # n/a: every case empty
        print(f"{name:<10} mean Dice {dice} over {scored} test cases; FROC score {froc}; nodes touched "
              f"{hit}/{total}; false-positive components {false}; training + validation {seconds:.0f} s "
              f"({seconds / its:.1f} s/iteration); training peak {peak:.0f} MiB")
    fold_dir = glob.glob(os.path.join(pipe.work, "nnUNet_results", "*", f"{a.trainer}__*", "fold_0"))[0]
    print("epoch | train loss | val loss | pseudo Dice (validation windows) | phase")
    for epoch, train, val, dice, phase in epoch_curve(fold_dir):
        print(f"{epoch} | {train:.3f} | {val:.3f} | {dice:.3f} | {phase}")


if __name__ == "__main__":
    main()
