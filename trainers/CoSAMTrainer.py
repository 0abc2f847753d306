"""CoSAM at the paper's size (GPU) and at CPU size; the same code (cosam_nn.training.trainer)."""
from cosam_nn.training.recipe import SMALL_LEARNING_RATES
from cosam_nn.training.trainer import CoSAMTrainerBase


class CoSAMTrainer(CoSAMTrainerBase):
    """The paper's model: a ViT-B U-SAM on 224 x 224 crops (initialised from SAM's weights, set
    COSAM_SAM_CHECKPOINT), a 256-channel detector on windows of 9 slices, and the CCM; for a GPU."""


class CoSAMTrainerSmall(CoSAMTrainer):
    """The same code with CPU-size networks (about 0.8 M parameters), higher learning rates, and as
    many voxels per step as nnU-Net's 3D batch (7 windows on 32 x 96 x 96)."""
    cosam_size = "small"
    max_inplane = 128
    learning_rates = SMALL_LEARNING_RATES
    max_windows_per_batch = 16
