"""Unit tests of the CoSAM trainer's pieces: targets, phases, schedule, rebuild, DDP rules."""
import os
import socket
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.distributed as dist

from cosam_nn.modeling.crops import crop_regions
from cosam_nn.modeling.config import CoSAMConfig
from cosam_nn.modeling.cosam import CoSAM
from cosam_nn.modeling.usam_baseline import USAMSegmenter
from cosam_nn.modeling.training_step import (_chosen_proposals, _mask_targets, training_losses,
                                             window_targets)
from cosam_nn.trainer_dir import trainer_dir
from cosam_nn.trainers.CoSAMTrainer import CoSAMTrainer
from cosam_nn.training.recipe import (PolyLR, forced_foreground_share, param_group, phase_for_epoch,
                                      voxel_matched_batch, window_patch)
from nnunetv2.utilities.find_class_by_name import recursive_find_python_class


def trainer(name):
    """A trainer class found by name in the trainer folder, as nnU-Net finds it."""
    return recursive_find_python_class(trainer_dir(), name, "cosam_nn.trainers")


def test_the_small_batch_holds_as_many_voxels_as_nnunets():
    assert voxel_matched_batch(2, [32, 96, 96], [9, 96, 96], 16) == 7       # 64 slices -> 7 x 9 = 63
    assert voxel_matched_batch(2, [64, 192, 192], [9, 128, 128], 16) == 16  # capped
    assert voxel_matched_batch(2, [8, 96, 96], [9, 96, 96], 16) == 2        # never below the plans' batch
    assert voxel_matched_batch(7, [9, 96, 96], [9, 96, 96], 16) == 7        # plans already windowed: unchanged
    assert CoSAMTrainer.max_windows_per_batch is None and trainer("CoSAMTrainerSmall").max_windows_per_batch == 16
    assert trainer("CoSAMTrainerSmall_noCCM").max_windows_per_batch == 16     # the ablation trains alike


def test_forced_foreground_share_is_nnunets_rounding():
    # nnU-Net forces the last round(b * p) samples: 2 windows at 66% -> 1, 7 -> 5, 3 -> 2
    assert forced_foreground_share(2, 0.66) == 0.5
    assert forced_foreground_share(7, 0.66) == 5 / 7
    assert forced_foreground_share(3, 0.66) == 2 / 3


def test_window_patch_keeps_inplane_from_plans_within_bounds():
    assert window_patch([48, 160, 160], 9, 256) == [9, 160, 160]
    assert window_patch([48, 300, 200], 7, 256) == [7, 256, 192]
    assert window_patch([16, 40, 50], 5, 128) == [5, 32, 48]
    with pytest.raises(ValueError, match="3D configuration"):
        window_patch([160, 160], 9, 256)


def test_phases_follow_the_pretrain_fraction():
    assert [phase_for_epoch(e, 4, 0.5) for e in range(4)] == ["pretrain", "pretrain", "joint", "joint"]
    assert [phase_for_epoch(e, 3, 1.0) for e in range(3)] == ["pretrain"] * 3
    assert [phase_for_epoch(e, 3, 0.5) for e in range(3)] == ["pretrain", "pretrain", "joint"]  # 1.5 -> 2
    assert phase_for_epoch(0, 1, 0.5) == "pretrain"  # never joint without any pretraining
    assert [phase_for_epoch(e, 2, 0.0) for e in range(2)] == ["joint", "joint"]


def test_poly_schedule_keeps_each_groups_own_rate():
    p1, p2 = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([{"params": [p1], "lr": 1e-3}, {"params": [p2], "lr": 1e-4}])
    sched = PolyLR(opt, 10)
    sched.step(5)
    factor = 0.5 ** 0.9
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3 * factor)
    assert opt.param_groups[1]["lr"] == pytest.approx(1e-4 * factor)


def test_param_groups_separate_the_networks():
    model = CoSAM(CoSAMConfig.small())
    groups = {param_group(n) for n, _ in model.named_parameters()}
    assert groups == {"detector", "usam_encoder", "usam_decoder", "ccm"}
    assert param_group("usam.unet.stages.0.0.weight") == "usam_encoder"
    assert param_group("usam.mask_decoder.up_blocks.0.up.weight") == "usam_decoder"


def test_network_is_rebuilt_from_the_class_alone():
    """nnUNetv2_predict rebuilds the network from the trainer class and loads the weights strictly."""
    for cls, has_ccm, window in ((trainer("CoSAMTrainerSmall"), True, 9), (trainer("CoSAMTrainerSmall_noCCM"), False, 9),
                                 (trainer("CoSAMTrainerSmall_window5"), True, 5), (trainer("CoSAMTrainer_window13"), True, 13),
                                 (trainer("CoSAMTrainer_noE2E"), False, 9)):
        cfg = cls.cosam_config()
        assert cfg.detector.window == window and cfg.use_ccm == has_ccm
    a = trainer("CoSAMTrainerSmall").build_network_architecture(None, None, 1, 2)
    b = trainer("CoSAMTrainerSmall").build_network_architecture(None, None, 1, 2)
    b.load_state_dict(a.state_dict(), strict=True)
    assert trainer("CoSAMTrainerSmall_noE2E").pretrain_fraction == 1.0
    check, paper = trainer("CoSAMTrainer_cpuCheck").cosam_config(), CoSAMTrainer.cosam_config()
    assert (check.detector, check.usam) == (paper.detector, paper.usam)  # the paper's networks, fewer crops a step
    assert check.train_true_boxes < paper.train_true_boxes
    assert trainer("CoSAMTrainer_cpuCheck").learning_rates == CoSAMTrainer.learning_rates  # 2e-3 collapses its detector
    assert isinstance(trainer("USAMTrainerSmall").build_network_architecture(None, None, 1, 2), USAMSegmenter)
    with pytest.raises(ValueError, match="one CT channel"):
        CoSAMTrainer.build_network_architecture(None, None, 2, 2)


def test_targets_come_from_the_label_node_by_node():
    labels = torch.zeros(1, 5, 32, 32, dtype=torch.bool)
    labels[0, 1:3, 4:8, 4:8] = True      # node 1
    labels[0, 2:5, 10:13, 9:15] = True   # node 2, separate
    (t, instances), = window_targets(labels)
    assert len(t) == 2 and t.present.tolist() == [[False, True, True, False, False], [False, False, True, True, True]]
    assert t.boxes[1, 3].tolist() == [9, 10, 15, 13]
    # a prompt of node 2 on slice 2, whose crop also holds node 1, gets node 2's mask only
    boxes = t.boxes[1, 2:3]
    regions = crop_regions(boxes, 24)
    target = _mask_targets([instances], torch.tensor([2]), torch.tensor([2]), regions, 24)
    x0, y0 = int(regions[0, 0]), int(regions[0, 1])
    expected = torch.zeros(24, 24)
    expected[10 - y0:13 - y0, 9 - x0:15 - x0] = 1
    assert torch.equal(target[0, 0], expected)
    assert _mask_targets([instances], torch.tensor([2]), torch.tensor([0]), regions, 24).sum() == 0


def test_usam_and_ccm_targets_follow_the_detectors_match_rule():
    labels = torch.zeros(1, 5, 32, 32, dtype=torch.bool)
    labels[0, 1:4, 14:18, 14:18] = True  # a 4 px node
    targets = window_targets(labels)
    loose = torch.tensor([11.0, 11, 21, 21])  # stage 1's usual 10 px box, centred on it
    far = torch.tensor([0.0, 0, 10, 10])
    det = {"valid": torch.ones(1, 2, dtype=torch.bool), "presence": torch.full((1, 2, 5), 5.0),
           "boxes": torch.stack([loose, far])[None, :, None].expand(1, 2, 5, 4)}
    plain = CoSAMConfig.small(window=5).detector
    wide = replace(plain, match_margin=4.0)  # grown by 4 px the loose box matches the node
    for cfg, matched in ((plain, []), (wide, [0])):
        (props, nodes), = _chosen_proposals(det, targets, 2, cfg, 0.5)
        assert sorted(props[nodes > 0].tolist()) == matched and set(nodes.tolist()) <= {0, 1}


@pytest.mark.parametrize("phase", ["pretrain", "joint"])
def test_every_trainable_parameter_learns_in_every_phase(phase):
    torch.manual_seed(0)
    model = CoSAM(CoSAMConfig.small(window=5))
    labels = torch.zeros(2, 5, 48, 48, dtype=torch.bool)
    labels[0, 1:4, 10:16, 20:25] = True  # the second window has no node
    losses = training_losses(model, torch.randn(2, 1, 5, 48, 48), labels, phase)
    losses["loss"].backward()
    assert [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None] == []
    assert torch.isfinite(losses["loss"])
    with pytest.raises(ValueError, match="unknown phase"):
        training_losses(model, torch.randn(1, 1, 5, 48, 48), labels[:1], "warmup")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_gloo_steps_in_both_phases():
    """DistributedDataParallel without find_unused_parameters: an unused parameter fails the second step."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
    dist.init_process_group("gloo", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        for net in (CoSAM(CoSAMConfig.small(window=5)), USAMSegmenter(CoSAMConfig.small().usam)):
            ddp = torch.nn.parallel.DistributedDataParallel(net)
            opt = torch.optim.AdamW(ddp.parameters(), 1e-3)
            labels = torch.zeros(1, 5, 48, 48, dtype=torch.bool)
            labels[0, 2:4, 5:9, 30:36] = True
            for phase in ("pretrain", "pretrain", "joint", "joint"):
                opt.zero_grad()
                ddp(torch.randn(1, 1, 5, 48, 48), labels, phase)["loss"].backward()
                opt.step()
            ddp.eval()
            with torch.no_grad():
                assert ddp(torch.randn(1, 1, 5, 48, 48)).shape == (1, 2, 5, 48, 48)
    finally:
        dist.destroy_process_group()


def test_usam_baseline_segments_whole_slices():
    net = USAMSegmenter(CoSAMConfig.small().usam).eval()
    with torch.no_grad():
        logits = net(torch.randn(2, 1, 5, 40, 56))
    assert logits.shape == (2, 2, 5, 40, 56) and logits.abs().max() <= 12
    assert np.isfinite(logits.numpy()).all()
    # the small baseline sees whole slices at 128, not the small CoSAM's 64 meant for box crops
    baseline = trainer("USAMTrainerSmall").build_network_architecture(None, None, 1, 2)
    assert baseline.usam.cfg.img_size == 128 and trainer("CoSAMTrainerSmall").cosam_config().usam.img_size == 64
    assert trainer("USAMTrainerSmall").calibration_thresholds == ()


def test_augmentation_is_flips_and_intensity_only():
    import itertools
    torch.manual_seed(0)
    transforms = CoSAMTrainer.get_training_transforms([9, 32, 32], None, None, (0, 1, 2), True)
    seg = torch.zeros(1, 9, 32, 32, dtype=torch.int16)
    seg[0, 1:4, 3:9, 20:30] = 1
    image = torch.randn(1, 9, 32, 32)
    flips = [axes for n in range(4) for axes in itertools.combinations((1, 2, 3), n)]
    seen = set()
    for _ in range(30):
        out = transforms(image=image.clone(), segmentation=seg.clone())
        match = [axes for axes in flips if torch.equal(out["segmentation"], torch.flip(seg, axes) if axes else seg)]
        assert match, "the label was moved by something other than a flip"
        seen.add(match[0])
    assert len(seen) > 1  # flips do happen
    with pytest.raises(ValueError, match="cascades"):
        CoSAMTrainer.get_training_transforms([9, 32, 32], None, None, (0, 1, 2), True, is_cascaded=True)


def test_training_turns_cudnn_autotuning_off(monkeypatch):
    """nnU-Net sets cudnn.benchmark before training; U-SAM's changing batch makes that re-tune every step."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    started = []
    monkeypatch.setattr(nnUNetTrainer, "on_train_start", lambda self: started.append(True))
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    logged = []
    monkeypatch.setattr(CoSAMTrainer, "print_to_log_file", lambda self, *args, **kw: logged.append(" ".join(args)))
    trainer = object.__new__(CoSAMTrainer)
    trainer.seed, trainer.save_every, trainer.snapshot_epochs = 5, 2, set()
    CoSAMTrainer.on_train_start(trainer)
    assert torch.backends.cudnn.benchmark is False
    assert started == [True]  # nnU-Net's own start still runs
    assert logged == ["seed: 5; checkpoint every 2 epoch(s)"]  # the run's settings are in its log


def test_a_non_finite_loss_stops_training_with_the_parts_named():
    from types import SimpleNamespace
    from nnunetv2.utilities.helpers import dummy_context
    class Network(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.ones(()))

        def forward(self, data, labels, phase):
            detector = self.weight * float(data.sum())
            return {"loss": detector + 1.0, "detector": detector, "usam": torch.tensor(1.0)}

    network = Network()
    weight = network.weight
    optimizer = torch.optim.SGD([weight], lr=0.1)
    trainer = SimpleNamespace(device=torch.device("cpu"), optimizer=optimizer, network=network, grad_scaler=None,
                              phase="pretrain", current_epoch=3, _iteration=7, _autocast=dummy_context)
    batch = {"data": torch.full((1, 1, 5, 8, 8), 0.01), "target": torch.zeros(1, 1, 5, 8, 8)}
    CoSAMTrainer.train_step(trainer, batch)  # finite: a step is taken
    stepped = float(weight.detach())
    assert trainer._iteration == 8 and stepped == pytest.approx(1.0 - 0.1 * 3.2)
    batch["data"][0, 0, 0, 0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match=r"epoch 3, iteration 8 \(pretrain phase\): loss nan, detector nan, usam 1"):
        CoSAMTrainer.train_step(trainer, batch)
    assert float(weight.detach()) == stepped and trainer._iteration == 8  # no step was taken


def test_prediction_flips_the_axes_the_trainer_names(monkeypatch):
    """nnU-Net's TTA flips the axes saved as `inference_allowed_mirroring_axes`; training flips all three."""
    from types import SimpleNamespace
    monkeypatch.setattr(CoSAMTrainer, "print_to_log_file", lambda self, *args, **kw: None)
    for cls in (trainer("CoSAMTrainerSmall"), trainer("CoSAMTrainerSmall_ttaSlices"), trainer("CoSAMTrainerSmall_ttaInPlane")):
        instance = object.__new__(cls)
        instance.configuration_manager = SimpleNamespace(patch_size=[9, 64, 64])
        _, _, patch, mirror_axes = cls.configure_rotation_dummyDA_mirroring_and_inital_patch_size(instance)
        assert tuple(mirror_axes) == (0, 1, 2) and list(patch) == [9, 64, 64]
        assert instance.inference_allowed_mirroring_axes == cls.inference_mirror_axes
    assert trainer("CoSAMTrainerSmall_ttaSlices").inference_mirror_axes == (0,)
