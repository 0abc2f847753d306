"""nnU-Net's own trainer, the baseline of every comparison of this project."""
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from cosam_nn.training.run_settings import RunSettingsMixin


class nnUNetTrainerBudget(RunSettingsMixin, nnUNetTrainer):
    """nnUNetTrainer under this project's run settings: COSAM_EPOCHS / COSAM_ITERS / COSAM_VAL_ITERS,
    COSAM_SEED and COSAM_SNAPSHOTS (cosam_nn.training.run_settings)."""
