"""Experiment variants whose settings CoSAM still has; each changes one of them."""
from cosam_nn.trainers.CoSAMTrainer import CoSAMTrainer, CoSAMTrainerSmall


class CoSAMTrainerSmall_matchMargin4(CoSAMTrainerSmall):
    """Proposals match nodes by the IoU of boxes grown by 4 px instead of 2: level over seeds."""
    detector_settings = {"match_margin": 4.0}


class CoSAMTrainerSmall_moreProposals(CoSAMTrainerSmall):
    """Inference: 96 stage-1 proposals per window instead of 48, up to 96 of them sent to U-SAM."""
    model_settings = {"max_boxes": 96}
    detector_settings = {"test_proposals": 96}


class CoSAMTrainerSmall_moreStage2Proposals(CoSAMTrainerSmall):
    """Inference: 96 stage-1 proposals per window reach stage 2 instead of 48; at most 24 go to U-SAM."""
    detector_settings = {"test_proposals": 96}


class CoSAMTrainerSmall_segmentAll(CoSAMTrainerSmall):
    """Inference: every proposal that may reach the threshold is sent to U-SAM, near-copies included."""
    model_settings = {"segment_nms_iou": 1.0}


class CoSAMTrainerSmall_lowPresence(CoSAMTrainerSmall):
    """A proposal's slice counts as present from presence probability 0.35 instead of 0.5."""
    model_settings = {"presence_threshold": 0.35}


class CoSAMTrainerSmall_wideCalibration(CoSAMTrainerSmall):
    """The score threshold picked from 0.2 to 0.9 instead of 0.3 to 0.7."""
    calibration_thresholds = (0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7, 0.8, 0.9)


class CoSAMTrainer_cpuCheck(CoSAMTrainer):
    """The paper-size networks with a training step a CPU can take, for bench/learning_check.py; not a
    training recipe. Per window U-SAM segments 2 jittered true boxes and 2 proposals on one slice
    each, not 8 + 8 x 2. The score threshold stays at the configured 0.5: calibrating it with ViT-B
    on a CPU costs some 15 minutes per validation case."""
    calibration_thresholds = ()
    model_settings = {"train_true_boxes": 2, "train_proposals_per_window": 2, "train_slices_per_proposal": 1}
