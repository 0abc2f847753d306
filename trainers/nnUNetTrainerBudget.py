"""nnU-Net's own trainer at a budget set by COSAM_EPOCHS, COSAM_ITERS and COSAM_VAL_ITERS.

The baseline every comparison of this project trains at the same budget. This folder is found by
nnU-Net through `export nnUNet_extTrainer=$(cosam_trainer_dir)`; its modules are imported by their
own names, so they use absolute imports only.
"""
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from cosam_nn.budget import apply_budget


class nnUNetTrainerBudget(nnUNetTrainer):
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        apply_budget(self)
