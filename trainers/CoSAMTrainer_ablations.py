"""The paper's ablations (Tables 3 and 4) and this project's own, each one setting of CoSAMTrainer."""
from cosam_nn.trainers.CoSAMTrainer import CoSAMTrainer, CoSAMTrainerSmall


class CoSAMTrainer_noCCM(CoSAMTrainer):
    """Without the collaborative classifier: the detector's score alone keeps a box."""
    use_ccm = False


class CoSAMTrainer_noE2E(CoSAMTrainer):
    """Detector and U-SAM trained separately throughout (no end-to-end phase, hence no CCM)."""
    use_ccm = False
    pretrain_fraction = 1.0


class CoSAMTrainerSmall_noCCM(CoSAMTrainerSmall):
    use_ccm = False


class CoSAMTrainerSmall_noE2E(CoSAMTrainerSmall):
    use_ccm = False
    pretrain_fraction = 1.0


class CoSAMTrainer_window5(CoSAMTrainer):
    window = 5


class CoSAMTrainer_window7(CoSAMTrainer):
    window = 7


class CoSAMTrainer_window11(CoSAMTrainer):
    window = 11


class CoSAMTrainer_window13(CoSAMTrainer):
    window = 13


class CoSAMTrainer_window15(CoSAMTrainer):
    window = 15


class CoSAMTrainerSmall_window5(CoSAMTrainerSmall):
    window = 5


class CoSAMTrainerSmall_plainMatch(CoSAMTrainerSmall):
    """Proposals match nodes by plain IoU, and no jittered true tubes join the proposals in training."""
    detector_settings = {"match_margin": 0.0, "true_tube_copies": 0}


class CoSAMTrainerSmall_sizeWeighted(CoSAMTrainerSmall):
    """Windows centred on foreground voxels drawn uniformly and stage-1 positives unweighted, so large
    nodes dominate both, as in plain nnU-Net."""
    node_balanced_sampling = False
    detector_settings = {"node_balanced_objectness": False}


class CoSAMTrainerSmall_backgroundFloor(CoSAMTrainerSmall):
    """Each pasted mask's background side floored at the background logit, which grows the outline
    when nnU-Net resamples and averages the logits (the behaviour before symmetric masks)."""
    model_settings = {"symmetric_masks": False}
