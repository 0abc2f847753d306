"""Does a detector of a given size learn at a given learning rate? A minute-scale check before a long run.

    python bench/diagnostics/detector_probe.py PREPROCESSED_DATASET_FOLDER [-tr CoSAMTrainer_cpuCheck]
                                   [--lr 2e-4] [--steps 30] [--windows 6] [--seed 0]

Cuts one 9-slice window (96 x 96 in-plane) around a node of each of the first --windows training
cases of fold 0 of an nnU-Net preprocessed dataset (e.g. one that bench/diagnostics/learning_check.py made),
then trains only the trainer's detector on them, two windows a step, with AdamW at --lr (weight
decay 3e-5, nnU-Net's default; CoSAMTrainer uses 1e-4) and the trainers' gradient clipping. Prints the detector's losses every 5 steps and, at the end, the
spread of the stage-2 score logits across the proposals of each window: a detector that has
collapsed gives every proposal the same score (spread near 0) whatever its losses say.
"""
import argparse
import os
import time

import numpy as np
import torch
from batchgenerators.utilities.file_and_folder_operations import load_json
from nnunetv2.utilities.find_class_by_name import recursive_find_python_class

from cosam_nn.benchmark.trained import preprocessed_cases
from cosam_nn.modeling.sequence_detector import SequenceDetector
from cosam_nn.modeling.training_step import window_targets
from cosam_nn.trainer_dir import trainer_dir
from cosam_nn.training.recipe import GRADIENT_CLIP_NORM

WINDOW_INPLANE = 96


def node_windows(dataset_folder, count, length):
    """(count, 1, L, 96, 96) windows and their (count, L, 96, 96) node masks, one per case."""
    plans = load_json(os.path.join(dataset_folder, "nnUNetPlans.json"))
    keys = load_json(os.path.join(dataset_folder, "splits_final.json"))[0]["train"][:count]
    windows, labels = [], []
    for key, image, nodes in preprocessed_cases(dataset_folder, plans, keys):
        if not nodes.any():
            raise SystemExit(f"detector_probe: training case {key} holds no node; pick a dataset whose cases all do")
        z, y, x = (int(c[len(c) // 2]) for c in np.nonzero(nodes))
        corner = [int(np.clip(c - s // 2, 0, dim - s)) for c, s, dim in
                  zip((z, y, x), (length, WINDOW_INPLANE, WINDOW_INPLANE), image.shape)]
        box = tuple(slice(c, c + s) for c, s in zip(corner, (length, WINDOW_INPLANE, WINDOW_INPLANE)))
        windows.append(image[box])
        labels.append(nodes[box])
    return torch.from_numpy(np.stack(windows))[:, None], torch.from_numpy(np.stack(labels))


def train(detector, windows, labels, lr, steps):
    optimizer = torch.optim.AdamW(detector.parameters(), lr=lr, weight_decay=3e-5)
    start = time.time()
    for step in range(steps):
        pick = [(2 * step) % len(windows), (2 * step + 1) % len(windows)]
        targets = [t for t, _ in window_targets(labels[pick])]
        losses = detector(windows[pick], targets)["losses"]
        loss = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(detector.parameters(), GRADIENT_CLIP_NORM)
        optimizer.step()
        if step % 5 == 0 or step == steps - 1:
            parts = " ".join(f"{k} {v.item():.3f}" for k, v in losses.items())
            print(f"step {step:3d} ({time.time() - start:.0f} s) loss {loss.item():.3f}, "
                  f"gradient norm {float(norm):.1f}: {parts}", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dataset_folder", help="nnU-Net preprocessed dataset folder (nnUNetPlans.json, splits_final.json)")
    p.add_argument("-tr", default="CoSAMTrainer_cpuCheck", dest="trainer")
    p.add_argument("--lr", type=float, default=None, help="default: the trainer's detector learning rate")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--windows", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    torch.manual_seed(a.seed)
    trainer = recursive_find_python_class(trainer_dir(), a.trainer, "cosam_nn.trainers")
    if trainer is None:
        p.error(f"no trainer class {a.trainer} in {trainer_dir()}")
    cfg = trainer.cosam_config().detector
    lr = a.lr if a.lr is not None else trainer.learning_rates["detector"]
    windows, labels = node_windows(a.dataset_folder, a.windows, cfg.window)
    print(f"{a.trainer} detector (channels {cfg.channels}, token_dim {cfg.token_dim}), lr {lr:g}, "
          f"{a.steps} steps of 2 windows from {len(windows)} cases")
    detector = SequenceDetector(cfg).train()
    train(detector, windows, labels, lr, a.steps)
    with torch.no_grad():
        scores = detector.eval()(windows[:2])["scores"]
    print("stage-2 score logits, std across each window's proposals:",
          " ".join(f"{float(s):.3f}" for s in scores.std(1)),
          f"(top probability {float(scores.sigmoid().max()):.3f})")


if __name__ == "__main__":
    main()
