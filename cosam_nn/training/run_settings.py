"""Run settings: what every trainer of this project reads from the environment besides nnU-Net's own.

COSAM_EPOCHS, COSAM_ITERS and COSAM_VAL_ITERS set the number of epochs, training iterations per
epoch and validation iterations per epoch; unset, the trainer keeps nnU-Net's own values.
COSAM_SEED seeds Python, NumPy and torch before the network is built, which also fixes nnU-Net's
patch sampling and augmentation when they run in the main process (nnUNet_n_proc_DA=0).
COSAM_SNAPSHOTS="1,2,4" keeps a copy of the model after those numbers of epochs
(checkpoint_epoch1.pth, ...), for learning curves. `RunSettingsMixin` applies them to an nnU-Net
trainer.
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


class RunSettingsMixin:
    """Reads COSAM_EPOCHS / COSAM_ITERS / COSAM_VAL_ITERS, COSAM_SEED and COSAM_SNAPSHOTS; goes before
    nnUNetTrainer in the bases. A bad value stops with one line naming the variable before
    nnUNetTrainer.__init__ creates the output folder and its log; the settings apply after it."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        self.read_run_settings()
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.apply_run_settings()

    def read_run_settings(self, environ=None):
        try:
            self._run_settings = (read_budget(environ), read_snapshots(environ), read_seed(environ))
        except ValueError as e:
            raise SystemExit(f"{type(self).__name__}: {e}") from None

    def apply_run_settings(self, environ=None):
        if environ is not None or not hasattr(self, "_run_settings"):
            self.read_run_settings(environ)
        budget, self.snapshot_epochs, self.seed = self._run_settings
        for attribute, value in budget.items():
            setattr(self, attribute, value)
        self.save_every = checkpoint_interval(self.num_epochs, self.save_every)
        if self.seed is not None:
            seed_everything(self.seed)

    def on_train_start(self):
        super().on_train_start()
        self.print_to_log_file(f"seed: {'not set (COSAM_SEED)' if self.seed is None else self.seed}; checkpoint "
                               f"every {self.save_every} epoch(s)"
                               + (f"; snapshots after epochs {sorted(self.snapshot_epochs)}" if self.snapshot_epochs else ""))

    def load_checkpoint(self, filename_or_checkpoint):
        super().load_checkpoint(filename_or_checkpoint)
        name = filename_or_checkpoint if isinstance(filename_or_checkpoint, str) else "a checkpoint"
        self.print_to_log_file(f"resuming from {name}: {self.current_epoch} epoch(s) done")

    def on_epoch_end(self):
        super().on_epoch_end()  # counts the epoch: current_epoch is now the number of finished epochs
        if self.current_epoch in self.snapshot_epochs:
            self.save_snapshot(self.current_epoch)

    def save_after_epoch(self, filename):
        """save_checkpoint, called after nnU-Net counted the epoch: it stores current_epoch + 1 as the
        epoch to resume at, so the count is stepped back while it writes."""
        self.current_epoch -= 1
        try:
            self.save_checkpoint(os.path.join(self.output_folder, filename))
        finally:
            self.current_epoch += 1

    def save_snapshot(self, epochs_done):
        self.save_after_epoch(f"checkpoint_epoch{epochs_done}.pth")
