"""Documented alternatives to CoSAMTrainer's defaults: another operating point, fewer test-time flips."""
from cosam_nn.trainers.CoSAMTrainer import CoSAMTrainer, CoSAMTrainerSmall


class CoSAMTrainer_f1Calibration(CoSAMTrainer):
    """The score threshold picked on mean Dice + node F1 instead of F2: a missed node costs as much as
    a false candidate. Fewer false candidates and shorter CPU runs, fewer small nodes found
    (docs/method.md)."""
    calibration_recall_weight = 1.0


class CoSAMTrainerSmall_f1Calibration(CoSAMTrainerSmall):
    calibration_recall_weight = 1.0


class CoSAMTrainerSmall_ttaSlices(CoSAMTrainerSmall):
    """`nnUNetv2_predict`'s test-time flips of the slice order only: 2 passes instead of nnU-Net's 8.
    The flips are saved in the checkpoint, so they are chosen at training time."""
    inference_mirror_axes = (0,)


class CoSAMTrainerSmall_ttaInPlane(CoSAMTrainerSmall):
    """Test-time flips in the plane only: 4 passes instead of 8."""
    inference_mirror_axes = (1, 2)
