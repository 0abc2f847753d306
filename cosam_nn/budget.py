"""What every trainer of this project reads from the environment besides nnU-Net's own settings.

COSAM_EPOCHS, COSAM_ITERS and COSAM_VAL_ITERS set the number of epochs, training iterations per
epoch and validation iterations per epoch; unset, the trainer keeps nnU-Net's own values.
COSAM_SEED seeds Python, NumPy and torch before the network is built, which also fixes nnU-Net's
patch sampling and augmentation when they run in the main process (nnUNet_n_proc_DA=0).
COSAM_SNAPSHOTS="1,2,4" keeps a copy of the model after those numbers of epochs
(checkpoint_epoch1.pth, ...), for learning curves.
"""
import os
import random

import numpy as np
import torch

BUDGET_VARIABLES = {
    "COSAM_EPOCHS": "num_epochs",
    "COSAM_ITERS": "num_iterations_per_epoch",
    "COSAM_VAL_ITERS": "num_val_iterations_per_epoch",
}
SEED_VARIABLE = "COSAM_SEED"
SNAPSHOT_VARIABLE = "COSAM_SNAPSHOTS"


def _whole_number(variable, text, least):
    try:
        value = int(text)
    except ValueError:
        value = least - 1
    if value < least:
        raise ValueError(f"{variable}={text!r}: must be a whole number of at least {least}")
    return value


def read_budget(environ=None):
    """{trainer attribute: value} for each budget variable that is set; a clear error if not a positive int."""
    environ = os.environ if environ is None else environ
    budget = {}
    for variable, attribute in BUDGET_VARIABLES.items():
        text = environ.get(variable, "").strip()
        if text:
            budget[attribute] = _whole_number(variable, text, 1)
    return budget


def read_seed(environ=None):
    """COSAM_SEED as an int, or None when unset."""
    text = (os.environ if environ is None else environ).get(SEED_VARIABLE, "").strip()
    return _whole_number(SEED_VARIABLE, text, 0) if text else None


def read_snapshots(environ=None):
    """COSAM_SNAPSHOTS as a set of epoch counts (after how many finished epochs a copy is kept)."""
    text = (os.environ if environ is None else environ).get(SNAPSHOT_VARIABLE, "").strip()
    return {_whole_number(SNAPSHOT_VARIABLE, t.strip(), 1) for t in text.split(",") if t.strip()}


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def checkpoint_interval(num_epochs, save_every):
    """nnU-Net writes checkpoint_latest.pth every `save_every` (50) epochs: a short budget would never
    write one, and an interrupted run could only resume from checkpoint_best.pth. At least every
    tenth of the run."""
    return max(1, min(save_every, num_epochs // 10))


def apply_budget(trainer, environ=None):
    """Set the budget attributes on an nnU-Net trainer."""
    for attribute, value in read_budget(environ).items():
        setattr(trainer, attribute, value)
