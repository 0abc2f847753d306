"""nnU-Net's own trainer with the run settings of cosam_nn.budget (budget, seed, snapshots).

The baseline every comparison of this project trains at the same budget. This folder is found by
nnU-Net through `export nnUNet_extTrainer=$(cosam_trainer_dir)`; its modules are imported by their
own names, so they use absolute imports only.
"""
import os

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from cosam_nn.budget import apply_budget, checkpoint_interval, read_seed, read_snapshots, seed_everything


class RunSettingsMixin:
    """Reads COSAM_EPOCHS / COSAM_ITERS / COSAM_VAL_ITERS, COSAM_SEED and COSAM_SNAPSHOTS; goes before
    nnUNetTrainer in the bases, and `apply_run_settings` is called at the end of __init__."""

    def apply_run_settings(self, environ=None):
        apply_budget(self, environ)
        self.save_every = checkpoint_interval(self.num_epochs, self.save_every)
        self.snapshot_epochs = read_snapshots(environ)
        self.seed = read_seed(environ)
        if self.seed is not None:
            seed_everything(self.seed)

    def on_train_start(self):
        super().on_train_start()
        self.print_to_log_file(f"seed: {'not set (COSAM_SEED)' if self.seed is None else self.seed}; checkpoint "
                               f"every {self.save_every} epoch(s)"
                               + (f"; snapshots after epochs {sorted(self.snapshot_epochs)}" if self.snapshot_epochs else ""))

    def on_epoch_end(self):
        super().on_epoch_end()  # counts the epoch: current_epoch is now the number of finished epochs
        if self.current_epoch in self.snapshot_epochs:
            self.save_snapshot(self.current_epoch)

    def save_snapshot(self, epochs_done):
        # save_checkpoint stores current_epoch + 1 as the epoch to resume at; here the epoch is done
        self.current_epoch -= 1
        try:
            self.save_checkpoint(os.path.join(self.output_folder, f"checkpoint_epoch{epochs_done}.pth"))
        finally:
            self.current_epoch += 1


class nnUNetTrainerBudget(RunSettingsMixin, nnUNetTrainer):
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.apply_run_settings()
