"""U-SAM alone, segmenting whole slices without prompts: the paper's baseline row."""
from cosam_nn.training.recipe import SMALL_LEARNING_RATES
from cosam_nn.training.trainer import CoSAMTrainerBase


class USAMTrainer(CoSAMTrainerBase):
    """Windows only batch the slices; no detections, so no score threshold to calibrate."""
    network = "usam"
    window = 5
    calibration_thresholds = ()


class USAMTrainerSmall(USAMTrainer):
    """Whole slices at U-SAM's input of 128 (the small CoSAM's 64 is for 32-pixel crops around a box:
    a 96-pixel slice shrunk to 64 leaves nodes of 2-4 pixels)."""
    cosam_size = "small"
    max_inplane = 128
    learning_rates = SMALL_LEARNING_RATES
    usam_settings = {"img_size": 128}
