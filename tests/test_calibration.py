"""The score threshold picked on validation cases (cosam_nn.training.calibration) and carried by the weights."""
from dataclasses import replace

import pytest
import torch

from cosam_nn.training.calibration import calibrate, dice_from_counts, node_f_score, pick_threshold, tile_starts
from cosam_nn.modeling.config import CoSAMConfig
from cosam_nn.modeling.cosam import Candidates, CoSAM

PATCH = (5, 32, 32)
NODE = (slice(2, 7), slice(8, 14), slice(10, 18))   # spans both z tiles of an 8-slice volume
DECOY = (slice(0, 8), slice(24, 30), slice(2, 8))   # background that looks like a node


def test_tiles_cover_the_axis_without_gaps():
    assert tile_starts(20, 9) == [0, 9, 11]
    assert tile_starts(18, 9) == [0, 9]
    assert tile_starts(5, 9) == [0]


def test_near_ties_go_to_the_lower_threshold_and_empty_cases_score_one():
    assert pick_threshold({0.3: 0.5, 0.4: 0.695, 0.5: 0.7, 0.6: 0.2}) == 0.4
    assert pick_threshold({0.3: 0.5, 0.4: 0.6, 0.5: 0.7, 0.6: 0.2}) == 0.5
    assert dice_from_counts(0, 0, 0) == 1.0 and dice_from_counts(3, 4, 4) == 0.75


def _fake_candidates(window, threshold):
    """Two proposals per window, found from the image itself: the node (score 0.8, its exact mask)
    and the decoy (score 0.4): the U-SAM masks are the bright voxels of each."""
    img = window[0, 0]
    boxes, present, masks, owner, slice_id = [], [], [], [], []
    for p, value in enumerate((1.0, 2.0)):
        on = (img == value).flatten(1).any(1)
        present.append(on)
        boxes.append(torch.tensor([0.0, 0.0, 32.0, 32.0]).expand(len(on), 4))
        for s in torch.nonzero(on).squeeze(1).tolist():
            masks.append(torch.where(img[s] == value, 10.0, -10.0))
            owner.append(p)
            slice_id.append(s)
    n = len(masks)
    return [Candidates(torch.stack(boxes), torch.stack(present), torch.tensor([0.8, 0.4]),
                       torch.stack(masks), torch.tensor(owner), torch.tensor(slice_id),
                       torch.tensor([[0.0, 0.0, 32.0, 32.0]]).expand(n, 4))]


def _case():
    image = torch.zeros(1, 8, 32, 32)
    image[(0,) + NODE] = 1.0
    image[(0,) + DECOY] = 2.0
    return image, image[0] == 1.0


def test_the_threshold_that_drops_the_false_box_wins(monkeypatch):
    model = CoSAM(replace(CoSAMConfig.small(window=5), nms_iou=1.0)).eval()
    monkeypatch.setattr(model, "candidates", _fake_candidates)
    best, scores, operating = calibrate(model, [_case(), _case()], PATCH, (0.3, 0.5, 0.9))
    assert scores[0.5] == pytest.approx((1.0, 1.0))   # the node exactly, counted once across the tiles
    assert operating[0.5] == (1.0, 0.0, 2) and operating[0.3] == (1.0, 1.0, 2) and operating[0.9] == (0.0, 0.0, 2)
    node, decoy = 5 * 6 * 8, 8 * 6 * 6
    assert scores[0.3] == pytest.approx((2 * node / (2 * node + decoy), 2 * 2 / (2 * 2 + 2)))  # 2 decoys false
    assert scores[0.9] == (0.0, 0.0)
    assert best == 0.5
    # a volume shorter than the window: padded for the model, the padding never counted
    short_image, short_label = _case()[0][:, 2:5], _case()[1][2:5]
    _, short, _ = calibrate(model, [(short_image, short_label)], PATCH, (0.5,))
    assert short[0.5] == pytest.approx((1.0, 1.0))
    with pytest.raises(ValueError, match="no validation cases"):
        calibrate(model, [], PATCH, (0.5,))


def test_a_false_speck_that_dice_forgives_still_raises_the_threshold(monkeypatch):
    """A one-voxel decoy costs Dice 0.002 (within the tolerance: Dice alone picks 0.3) but is a false
    node: Dice + node F1 picks the threshold that drops it."""
    model = CoSAM(replace(CoSAMConfig.small(window=5), nms_iou=1.0)).eval()
    monkeypatch.setattr(model, "candidates", _fake_candidates)
    image, label = _case()
    image[0][DECOY] = 0.0
    image[0, 4, 26, 4] = 2.0
    best, scores, _ = calibrate(model, [(image, label)], PATCH, (0.3, 0.5))
    assert pick_threshold({t: d for t, (d, _) in scores.items()}) == 0.3
    assert scores[0.3][1] == pytest.approx(2 / 3) and best == 0.5
    _, recall_weighted, _ = calibrate(model, [(image, label)], PATCH, (0.3, 0.5), recall_weight=2.0)
    assert recall_weighted[0.3][1] == pytest.approx(5 / 6)  # F2: the false speck weighs a quarter of a miss


def test_f2_prefers_finding_both_nodes_with_two_false_ones_to_missing_one():
    assert node_f_score(1, 2, 0) == pytest.approx(node_f_score(2, 2, 2)) == pytest.approx(2 / 3)  # F1: a tie
    assert node_f_score(1, 2, 0, beta=2.0) == pytest.approx(5 / 9)
    assert node_f_score(2, 2, 2, beta=2.0) == pytest.approx(10 / 12)
    assert node_f_score(0, 0, 0, beta=2.0) == 1.0


def test_the_threshold_travels_with_the_weights():
    model = CoSAM(CoSAMConfig.small(window=5))
    model.score_threshold.fill_(0.35)
    fresh = CoSAM(CoSAMConfig.small(window=5))
    assert fresh.threshold == 0.5
    fresh.load_state_dict(model.state_dict())
    assert fresh.threshold == pytest.approx(0.35)
    old = {k: v for k, v in model.state_dict().items() if k != "score_threshold"}  # before it was a buffer
    fresh.load_state_dict(old)
    assert fresh.threshold == 0.5


def test_a_fold_without_validation_cases_keeps_the_threshold_and_finishes(monkeypatch):
    """on_train_end calibrates before checkpoint_final.pth is written: an empty validation list
    (a hand-made splits file) must not lose the finished training."""
    from types import SimpleNamespace
    from cosam_nn.trainers.CoSAMTrainer import CoSAMTrainer
    logged = []
    model = CoSAM(CoSAMConfig.small(window=5))
    trainer = SimpleNamespace(calibration_thresholds=(0.3, 0.5), network=model, is_ddp=False, local_rank=0,
                              calibration_cases=20, do_split=lambda: (["a", "b"], []),
                              print_to_log_file=lambda *a: logged.append(" ".join(map(str, a))))
    CoSAMTrainer.calibrate_score_threshold(trainer)
    assert model.threshold == 0.5
    assert logged and "no validation cases" in logged[0]
    # under DDP rank 0 still reaches the broadcast the other ranks wait in
    import cosam_nn.training.trainer as module
    sent = []
    trainer.is_ddp, trainer.network = True, SimpleNamespace(module=model)
    monkeypatch.setattr(module.dist, "broadcast", lambda tensor, src: sent.append((float(tensor), src)))
    CoSAMTrainer.calibrate_score_threshold(trainer)
    assert sent == [(0.5, 0)]


def test_the_trainers_calibrate_on_f2_and_the_f1_variant_on_f1(monkeypatch):
    from contextlib import nullcontext
    from types import SimpleNamespace
    import cosam_nn.training.trainer as module
    from cosam_nn.trainers.CoSAMTrainer import CoSAMTrainer
    from cosam_nn.trainers.CoSAMTrainer import CoSAMTrainerSmall
    from cosam_nn.trainers.CoSAMTrainer_alternatives import CoSAMTrainer_f1Calibration, CoSAMTrainerSmall_f1Calibration
    assert CoSAMTrainer.calibration_recall_weight == CoSAMTrainerSmall.calibration_recall_weight == 2.0
    assert CoSAMTrainer_f1Calibration.calibration_recall_weight == 1.0
    assert CoSAMTrainerSmall_f1Calibration.calibration_recall_weight == 1.0
    seen, logged = [], []
    monkeypatch.setattr(module, "calibrate", lambda model, cases, patch, thresholds, weight:
                        (seen.append(weight), (0.4, {0.4: (0.9, 0.8)}, {0.4: (0.75, 1.5, 8)}))[1])
    trainer = SimpleNamespace(dataset_class=lambda *a, **k: None, preprocessed_dataset_folder="",
                              folder_with_segs_from_previous_stage=None, _autocast=nullcontext,
                              _calibration_case=lambda dataset, key: None,
                              configuration_manager=SimpleNamespace(patch_size=(5, 32, 32)),
                              calibration_thresholds=(0.4,), calibration_recall_weight=2.0,
                              print_to_log_file=lambda *a: logged.append(" ".join(map(str, a))))
    model = CoSAM(CoSAMConfig.small(window=5))
    CoSAMTrainer._pick_score_threshold(trainer, model, ["a"])
    assert seen == [2.0] and model.threshold == pytest.approx(0.4) and "node F2" in logged[0]
    assert model.operating_point.tolist() == [0.75, 1.5, 8.0]  # saved with the weights
    assert "node sensitivity 0.750, 1.50 false candidates per case" in logged[0]
