"""CoSAM trainer variants in nnU-Net's manner: each changes one setting of CoSAMTrainer.

Small*: the CPU-size networks. noCCM / noE2E: the paper's Table 4 ablations. windowN: Table 3.
USAMTrainer: U-SAM alone without prompts, the paper's baseline row.
"""
from dataclasses import replace

from cosam_nn.modeling.usam_baseline import USAMSegmenter
from cosam_nn.trainers.CoSAMTrainer import CoSAMTrainer

SMALL_LEARNING_RATES = {"detector": 2e-3, "usam_encoder": 1e-3, "usam_decoder": 2e-3, "ccm": 2e-3}


class CoSAMTrainerSmall(CoSAMTrainer):
    cosam_size = "small"
    max_inplane = 128
    learning_rates = SMALL_LEARNING_RATES
    max_windows_per_batch = 16  # as many voxels per step as nnU-Net's 3D batch (7 windows on 32 x 96 x 96)


class CoSAMTrainer_noCCM(CoSAMTrainer):
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


class CoSAMTrainerSmall_plainMatch(CoSAMTrainerSmall):
    """Ablation: proposals match nodes by plain IoU and no jittered true tubes are added."""

    @classmethod
    def cosam_config(cls):
        cfg = super().cosam_config()
        return replace(cfg, detector=replace(cfg.detector, match_margin=0.0, true_tube_copies=0))


class CoSAMTrainerSmall_centreMatch(CoSAMTrainerSmall):
    """Nodes under 10 px (long side of the union box) also match proposals centred on them and at most
    two strides larger (`centre_match_below`): stage 1's 10 px boxes around 3-8 px nodes become
    positives for stage 2, the CCM and U-SAM. Level with CoSAMTrainerSmall on every measure over five
    seeds (best FROC of any run on three of them, a slow learner on one); trained again on another day,
    behind on FROC and AP (the same seed a slow learner; bench/RESULTS.md). Not adopted."""

    @classmethod
    def cosam_config(cls):
        cfg = super().cosam_config()
        return replace(cfg, detector=replace(cfg.detector, centre_match_below=10.0))


class CoSAMTrainerSmall_fineRoI(CoSAMTrainerSmall):
    """Proposals under 16 px (long side of the union box) are RoI-pooled from a stride-2 level (the
    backbone's top-down path continued to stride 2, `fine_roi_below`): at stride 4 a 6 px node covers
    1-2 cells of the 5 x 5 RoI grid. Level with CoSAMTrainerSmall over five seeds, its point estimates
    behind on FROC, AP and the nodes under 5 mm (one seed found 1 of 36; bench/RESULTS.md); not adopted."""

    @classmethod
    def cosam_config(cls):
        cfg = super().cosam_config()
        return replace(cfg, detector=replace(cfg.detector, fine_roi_below=16.0))


class CoSAMTrainerSmall_matchMargin4(CoSAMTrainerSmall):
    """Proposals match nodes by the IoU of boxes grown by 4 px (one stride) instead of 2: stage 1's
    8 px box around a 3 px node (grown IoU 0.47) becomes a positive for stage 2, the CCM and U-SAM,
    which then learn to keep and shrink it rather than reject it. Over three seeds FROC and AP@0.1
    ahead, Dice behind on intervals over cases, all level once seeds are resampled too
    (bench/RESULTS.md); not adopted."""

    @classmethod
    def cosam_config(cls):
        cfg = super().cosam_config()
        return replace(cfg, detector=replace(cfg.detector, match_margin=4.0))


class CoSAMTrainerSmall_sizeWeighted(CoSAMTrainerSmall):
    """Ablation: windows centred on foreground voxels drawn uniformly and stage-1 positives unweighted,
    so large nodes dominate both, as in plain nnU-Net."""
    node_balanced_sampling = False

    @classmethod
    def cosam_config(cls):
        cfg = super().cosam_config()
        return replace(cfg, detector=replace(cfg.detector, node_balanced_objectness=False))


class CoSAMTrainerSmall_nodeBalancedBoxes(CoSAMTrainerSmall):
    """Stage 1's box and presence losses weighted per node like its objectness: a small node's one or
    two positive locations teach the box size as much as a large node's block of them. Level with
    CoSAMTrainerSmall on every measure over three seeds (bench/RESULTS.md); not adopted."""

    @classmethod
    def cosam_config(cls):
        cfg = super().cosam_config()
        return replace(cfg, detector=replace(cfg.detector, node_balanced_boxes=True))


class CoSAMTrainerSmall_nodeBalancedDense(CoSAMTrainerSmall):
    """The auxiliary dense loss weighted per node like stage 1's objectness: a 4 px node's one or two
    cells a slice weigh as much in total as a 20 px node's 25. Its head ranks stage 1's proposals at
    inference (dense ranking), and small nodes rank below false candidates. Level over five seeds,
    small-node measures behind on intervals over cases only (FROC < 5 mm -0.050; bench/RESULTS.md);
    not adopted."""

    @classmethod
    def cosam_config(cls):
        cfg = super().cosam_config()
        return replace(cfg, detector=replace(cfg.detector, node_balanced_dense=True))


class CoSAMTrainerSmall_nodeBalancedClass(CoSAMTrainerSmall):
    """Stage 2's class loss weighted per node: the proposals matched to one node share the same total
    weight, so the one or two that match a small node teach the proposal score as much as the dozen
    around a large one. Level over ten seeds, behind on FROC, AP@0.1 and sensitivity under 5 mm on
    intervals over cases only, and small-node results three times as variable between seeds (one seed
    kept no small node; bench/RESULTS.md); not adopted."""

    @classmethod
    def cosam_config(cls):
        cfg = super().cosam_config()
        return replace(cfg, detector=replace(cfg.detector, node_balanced_class=True))


class CoSAMTrainerSmall_threeAnchorSizes(CoSAMTrainerSmall):
    """Stage 1 with anchors of 4, 8 and 16 px at each location instead of one of 8 px; each node trains
    the anchors of the size nearest its own. Stage 1's boxes barely leave their anchor's size in a
    short training, so a 3 px node's best candidate was an 8 px box that stage 2 learns to reject.
    Behind on Dice and small nodes over three seeds (FROC too on intervals over cases only): the 16 px
    anchors outrank the small ones (bench/RESULTS.md); not adopted."""

    @classmethod
    def cosam_config(cls):
        cfg = super().cosam_config()
        return replace(cfg, detector=replace(cfg.detector, anchor_sizes=(4, 8, 16)))


class CoSAMTrainerSmall_twoAnchorSizes(CoSAMTrainerSmall):
    """Anchors of 4 and 8 px, each size with an equal share of stage 1's proposals after NMS within
    the size (`anchor_size_quota`), so that the small anchors' boxes of small nodes reach stage 2.
    FROC and AP@0.1 behind over three seeds, small nodes level (bench/RESULTS.md); not adopted."""

    @classmethod
    def cosam_config(cls):
        cfg = super().cosam_config()
        return replace(cfg, detector=replace(cfg.detector, anchor_sizes=(4, 8), anchor_size_quota=True))


class CoSAMTrainerSmall_windowsInside(CoSAMTrainerSmall):
    """Foreground training windows moved to lie inside the image instead of centred on their voxel
    with zero padding (nnU-Net's way), so that they show whole planes as at inference. Over ten seeds
    ahead of CoSAMTrainerSmall on Dice, FROC and AP and behind on the nodes under 5 mm (bench/RESULTS.md,
    2026-12-07; with the F2 calibration too, by 0.11 over cases); not adopted while small nodes lose."""
    windows_inside_image = True


class CoSAMTrainerSmall_moreProposals(CoSAMTrainerSmall):
    """Inference: 96 stage-1 proposals per window instead of 48, and up to 96 of them sent to U-SAM;
    training unchanged (so it can predict with CoSAMTrainerSmall's weights)."""

    @classmethod
    def cosam_config(cls):
        cfg = super().cosam_config()
        return replace(cfg, max_boxes=96, detector=replace(cfg.detector, test_proposals=96))


class CoSAMTrainerSmall_moreStage2Proposals(CoSAMTrainerSmall):
    """Inference: 96 stage-1 proposals per window reach stage 2 instead of 48, still at most 24 boxes sent
    to U-SAM; training unchanged. More small nodes on the models of 2026-11-28, level (small-node point
    estimates behind) on five models trained 2026-12-06; 1.24x the prediction time of a large volume
    (bench/RESULTS.md)."""

    @classmethod
    def cosam_config(cls):
        cfg = super().cosam_config()
        return replace(cfg, detector=replace(cfg.detector, test_proposals=96))


class CoSAMTrainerSmall_roiSampling1(CoSAMTrainerSmall):
    """Stage 2 pools each RoI bin from one bilinear sample instead of 2 x 2, in training and inference:
    RoI align at about half the cost, meant to make room for more stage-2 proposals. Behind on Dice,
    FROC and AP over three seeds, one of which collapsed (bench/RESULTS.md); not adopted."""

    @classmethod
    def cosam_config(cls):
        cfg = super().cosam_config()
        return replace(cfg, detector=replace(cfg.detector, roi_sampling_ratio=1))


class CoSAMTrainerSmall_objectnessRanking(CoSAMTrainerSmall):
    """Inference as before dense ranking: stage-1 proposals ranked by their objectness alone; training
    unchanged."""

    @classmethod
    def cosam_config(cls):
        cfg = super().cosam_config()
        return replace(cfg, detector=replace(cfg.detector, dense_ranking=False))


class CoSAMTrainerSmall_segmentAll(CoSAMTrainerSmall):
    """Inference as before `segment_nms_iou`: every proposal that may reach the threshold is sent to
    U-SAM, near-copies included (the same results within 0.003 on every measure, up to 1.7x the CPU
    prediction time at threshold 0.3; bench/RESULTS.md); training unchanged."""

    @classmethod
    def cosam_config(cls):
        return replace(super().cosam_config(), segment_nms_iou=1.0)


class CoSAMTrainer_cpuCheck(CoSAMTrainer):
    """The paper-size networks (ViT-B U-SAM on 224-pixel crops, 256-channel detector) with a training
    step a CPU can take, for bench/learning_check.py; not a training recipe. Per window U-SAM segments
    2 jittered true boxes and 2 proposals on one slice each, not 8 + 8 x 2 (a pretrain step of two
    9 x 96 x 96 windows: 16 s on 2 CPU cores instead of 126 s). The learning rates are
    CoSAMTrainer's: at the small trainer's 2e-3 the 256-wide detector's stage-2 scores collapse to one
    value for every proposal (bench/RESULTS.md, the paper-size learning check). The score threshold
    stays at the configured 0.5: calibrating it segments the proposals over 0.3^2, up to max_boxes = 20
    a window on up to 9 slices each, at about 1 s per ViT-B crop on 2 CPU cores: some 15 minutes per
    validation case."""

    calibration_thresholds = ()

    @classmethod
    def cosam_config(cls):
        return replace(super().cosam_config(), train_true_boxes=2, train_proposals_per_window=2,
                       train_slices_per_proposal=1)


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


class USAMTrainer(CoSAMTrainer):
    """U-SAM segmenting whole slices without prompts; windows only batch the slices."""
    window = 5
    calibration_thresholds = ()  # no detections, no score to threshold

    @classmethod
    def build_network_architecture(cls, plans_manager, configuration_manager, num_input_channels,
                                   num_output_channels, enable_deep_supervision=True):
        if num_input_channels != 1 or num_output_channels != 2:
            raise ValueError(f"{cls.__name__} segments one CT channel into background/node")
        return USAMSegmenter(cls.cosam_config().usam)


class USAMTrainerSmall(USAMTrainer):
    """Whole slices at U-SAM's input of 128 (the small CoSAM's 64 is for 32-pixel crops around a box:
    a 96-pixel slice shrunk to 64 leaves nodes of 2-4 pixels)."""
    cosam_size = "small"
    max_inplane = 128
    learning_rates = SMALL_LEARNING_RATES

    @classmethod
    def cosam_config(cls):
        cfg = super().cosam_config()
        return replace(cfg, usam=replace(cfg.usam, img_size=128))


class CoSAMTrainerSmall_backgroundFloor(CoSAMTrainerSmall):
    """Ablation: each pasted mask's background side is floored at the background logit, which grows the
    outline when nnU-Net resamples and averages the logits (the behaviour before symmetric masks)."""

    @classmethod
    def cosam_config(cls):
        return replace(super().cosam_config(), symmetric_masks=False)


class CoSAMTrainerSmall_flatMasks(CoSAMTrainerSmall):
    """Inference: every pixel of a kept mask takes its detection's score (as a logit), so that a node's
    mean probability, by which the evaluation and the reports rank nodes, is its score (`flat_masks`).
    Behind CoSAMTrainerSmall on FROC and AP over ten seeds (same weights; bench/RESULTS.md): the soft
    mask's mean also says how solidly U-SAM segmented a candidate, and specks and fragments, low by it,
    rose to their detection's score. Not adopted."""

    @classmethod
    def cosam_config(cls):
        return replace(super().cosam_config(), flat_masks=True)


class CoSAMTrainerSmall_wideCalibration(CoSAMTrainerSmall):
    """The score threshold picked from 0.2 to 0.9 instead of 0.3 to 0.7: the calibration picked either
    end of the default grid for some models (0.3: seed 0; 0.7: seed 8 and a model trained four times
    as long), where the best threshold may lie beyond it. Over ten seeds (same weights) two models moved
    to 0.8 and none below 0.3: level with seeds resampled, behind on FROC, AP and the small nodes over
    these models (bench/RESULTS.md). Not adopted."""
    calibration_thresholds = (0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7, 0.8, 0.9)


class CoSAMTrainer_f1Calibration(CoSAMTrainer):
    """The score threshold picked on mean Dice + node F1, as before F2 became the default: a missed
    node costs as much as a false candidate. For a user who wants fewer candidates and shorter CPU
    runs: on three small models trained four times the benchmark's iterations F1 kept the threshold at
    0.6-0.7 where F2 picked 0.3, with about half the false candidates, Dice +0.04 to +0.14, and 0.25-0.31
    of the nodes under 5 mm found instead of 0.53-0.61; a large volume took 175 s at F1's 0.7 (every
    proposal segmented) against 242 s at F2's 0.3 with `segment_nms_iou` (bench/RESULTS.md)."""
    calibration_recall_weight = 1.0


class CoSAMTrainerSmall_f1Calibration(CoSAMTrainerSmall):
    """CoSAMTrainer_f1Calibration's threshold rule for the small model. Over the benchmark's ten
    120-iteration models F2 moved two thresholds down and found more nodes under 5 mm (+0.022
    [0.009, 0.038] over cases), the other measures level (bench/RESULTS.md)."""
    calibration_recall_weight = 1.0


class CoSAMTrainerSmall_ttaSlices(CoSAMTrainerSmall):
    """`nnUNetv2_predict`'s test-time augmentation flips the slice order only: 2 passes instead of
    nnU-Net's 8. Over the benchmark's ten models (same weights) a fifth to a third of the full TTA's
    gain on Dice, FROC and AP and half to two thirds of its gain on the nodes under 5 mm
    (bench/RESULTS.md). The flips are saved in the checkpoint, so they are chosen by the trainer a
    model was trained with."""
    inference_mirror_axes = (0,)


class CoSAMTrainerSmall_ttaInPlane(CoSAMTrainerSmall):
    """Test-time augmentation by the two in-plane flips: 4 passes instead of 8, about 0.6 of the full
    TTA's CPU time per case, and three quarters of the full TTA's gain or more on every measure over the
    benchmark's ten models (bench/RESULTS.md)."""
    inference_mirror_axes = (1, 2)


class CoSAMTrainerSmall_lowPresence(CoSAMTrainerSmall):
    """A proposal's slice counts as present from presence probability 0.35 instead of 0.5. Measured at
    inference only (the same weights, bench/RESULTS.md): more candidates and slices reach U-SAM, Dice,
    FROC and AP rose by 0.006-0.009 over ten models (within the seeds' spread), the small nodes found
    stayed level. Training with it also lowers the threshold at which training picks proposals'
    slices (not measured)."""

    @classmethod
    def cosam_config(cls):
        return replace(super().cosam_config(), presence_threshold=0.35)


class CoSAMTrainerSmall_ccmImage(CoSAMTrainerSmall):
    """The CCM also reads the image under U-SAM's mask (`ccm_image_features`): the mean inside the
    mask, the mean around it in the crop, and the mask's size. On the phantom a small metastatic node
    differs from a benign node of its size mainly in brightness. Over fifteen seeds the nodes under
    5 mm stayed level; FROC and AP@0.1 rose by 0.04 and 0.06, ahead over cases and level over seeds
    (one seed learned slowly; bench/RESULTS.md). Not adopted."""

    @classmethod
    def cosam_config(cls):
        return replace(super().cosam_config(), ccm_image_features=True)
