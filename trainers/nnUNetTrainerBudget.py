"""nnU-Net's own trainer with the run settings of cosam_nn.budget (budget, seed, snapshots).

The baseline every comparison of this project trains at the same budget. This folder is found by
nnU-Net through `export nnUNet_extTrainer=$(cosam_trainer_dir)`; its modules are imported by their
own names, so they use absolute imports only.
"""
import os

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from cosam_nn.budget import checkpoint_interval, read_budget, read_seed, read_snapshots, seed_everything


class RunSettingsMixin:
    """Reads COSAM_EPOCHS / COSAM_ITERS / COSAM_VAL_ITERS, COSAM_SEED and COSAM_SNAPSHOTS; goes before
    nnUNetTrainer in the bases. `read_run_settings` is called before nnUNetTrainer.__init__ (which
    creates the output folder and its log), `apply_run_settings` at the end of __init__."""

    def read_run_settings(self, environ=None):
        """A bad value stops here with one line naming the variable, before any folder is made."""
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


class nnUNetTrainerBudget(RunSettingsMixin, nnUNetTrainer):
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        self.read_run_settings()
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.apply_run_settings()
