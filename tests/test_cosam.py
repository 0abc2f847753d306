from dataclasses import replace

import torch

from cosam_nn.modeling.config import CoSAMConfig
from cosam_nn.modeling.crops import crop_regions, paste_crop
from cosam_nn.modeling.cosam import BACKGROUND_LOGIT, LOGIT_BOUND, CoSAM


def test_crop_regions_are_squares_holding_their_boxes():
    boxes = torch.tensor([[10.0, 20, 14, 23], [0, 0, 60, 20], [95.5, 3.2, 99.9, 9.1]])
    regions = crop_regions(boxes, 32)
    side = regions[:, 2] - regions[:, 0]
    torch.testing.assert_close(side, regions[:, 3] - regions[:, 1])
    assert side.tolist() == [32, 90, 32]
    assert torch.all(regions[:, :2] <= boxes[:, :2]) and torch.all(regions[:, 2:] >= boxes[:, 2:])
    assert torch.equal(regions, regions.round())


def test_paste_clips_a_crop_that_leaves_the_image():
    canvas = torch.full((10, 10), -LOGIT_BOUND)
    paste_crop(canvas, torch.full((8, 8), 5.0), torch.tensor([-2.0, -2, 4, 4]))
    assert torch.all(canvas[:4, :4] == 5) and torch.all(canvas[4:] == -LOGIT_BOUND) and torch.all(canvas[:, 4:] == -LOGIT_BOUND)
    paste_crop(canvas, torch.full((8, 8), 1.0), torch.tensor([2.0, 2, 6, 6]))  # max, not overwrite
    assert canvas[3, 3] == 5 and canvas[5, 5] == 1
    paste_crop(canvas, torch.full((8, 8), 9.0), torch.tensor([20.0, 20, 28, 28]))  # wholly outside: no-op
    assert canvas.max() == 5


def test_window_without_kept_boxes_is_background_everywhere():
    torch.manual_seed(0)
    model = CoSAM(replace(CoSAMConfig.small(window=5), score_threshold=1.01)).eval()
    logits, dets = model.detect(torch.randn(2, 1, 5, 48, 40))
    assert logits.shape == (2, 2, 5, 48, 40)
    assert torch.all(logits[:, 0] == 0) and torch.all(logits[:, 1] == BACKGROUND_LOGIT)
    assert torch.all(logits.argmax(1) == 0)
    assert all(len(d.scores) == 0 for d in dets)


def test_kept_boxes_give_bounded_logits_of_the_window_shape():
    torch.manual_seed(0)
    model = CoSAM(replace(CoSAMConfig.small(window=7), score_threshold=0.0, nms_iou=1.0)).eval()
    x = torch.randn(1, 1, 7, 40, 56)
    logits, dets = model.detect(x)
    assert logits.shape == (1, 2, 7, 40, 56) and torch.isfinite(logits).all()
    assert logits[:, 1].max() <= LOGIT_BOUND and logits[:, 1].min() >= -LOGIT_BOUND
    assert len(dets[0].scores) > 0
    # the kept boxes' masks were pasted
    assert (logits[0, 1] > BACKGROUND_LOGIT).any()
    assert torch.equal(model(x), logits)


def test_a_detections_probability_is_capped_at_its_score():
    from cosam_nn.modeling.cosam import MIN_FG_LOGIT, score_logit_cap
    scores = torch.tensor([0.5, 0.7, 0.9, 1.0])
    probs = score_logit_cap(scores).sigmoid()
    torch.testing.assert_close(probs[1:3], scores[1:3], atol=1e-5, rtol=0)
    assert probs[0] == torch.sigmoid(torch.tensor(MIN_FG_LOGIT)) and probs[3] < 1
    torch.manual_seed(0)
    model = CoSAM(replace(CoSAMConfig.small(window=5), score_threshold=0.0, nms_iou=1.0)).eval()
    logits, dets = model.detect(torch.randn(1, 1, 5, 40, 40))
    assert logits[0, 1].max() <= score_logit_cap(dets[0].scores).max() + 1e-6


def test_symmetric_masks_keep_usams_outline_where_the_default_grows_it():
    from cosam_nn.modeling.cosam import Candidates
    # one kept box on slice 0: U-SAM's 64 px mask is a disc of radius 12 px at +-6, pasted into a 32 px region
    yy, xx = torch.meshgrid(torch.arange(64.0) + 0.5, torch.arange(64.0) + 0.5, indexing="ij")
    disc = ((yy - 32) ** 2 + (xx - 32) ** 2 < 12 ** 2).float()
    cand = Candidates(boxes=torch.zeros(1, 5, 4), present=torch.tensor([[True, False, False, False, False]]), scores=torch.tensor([0.9]),
                      masks=(disc * 12 - 6)[None], owner=torch.tensor([0]), slice_id=torch.tensor([0]),
                      regions=torch.tensor([[4.0, 4, 36, 36]]))
    true_area = float(disc.sum()) / 4  # the disc at the region's 32 px scale
    areas = {}
    for symmetric in (False, True):
        model = CoSAM(replace(CoSAMConfig.small(window=5), symmetric_masks=symmetric))
        fg = torch.full((5, 48, 48), BACKGROUND_LOGIT)
        model.paste(fg, cand, torch.tensor([0]))
        areas[symmetric] = float((fg[0] > 0).sum())
        assert torch.all(fg[1:] == BACKGROUND_LOGIT) and fg[0, 40:].eq(BACKGROUND_LOGIT).all()  # outside the crop
        assert fg[0].max() <= float(torch.logit(torch.tensor(0.9))) + 1e-5
    assert abs(areas[True] - true_area) < abs(areas[False] - true_area)
    assert areas[False] > areas[True]


def test_paper_size_trains_a_step_and_detects():
    """The paper-size model (ViT-B U-SAM on 224-pixel crops, 256-channel detector) through one training
    step of each phase and one inference, on one small window with few crops: shape or config bugs at
    paper size fail here, not on a GPU."""
    paper = CoSAMConfig.paper()
    cfg = replace(paper, detector=replace(paper.detector, test_proposals=2, train_proposals=16),
                  train_true_boxes=1, train_proposals_per_window=1, train_slices_per_proposal=1,
                  max_boxes=1, score_threshold=0.0, presence_threshold=0.0)  # untrained: every slice present
    torch.manual_seed(0)
    model = CoSAM(cfg)
    window = torch.randn(1, 1, 9, 64, 64)
    labels = torch.zeros(1, 9, 64, 64, dtype=torch.bool)
    labels[0, 3:6, 20:28, 30:37] = True
    window[0, 0][labels[0]] += 2.0
    for phase in ("pretrain", "joint"):
        model.zero_grad()
        losses = model(window, labels, phase)
        assert torch.isfinite(losses["loss"])
        losses["loss"].backward()
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.usam.image_encoder.parameters())
    model.eval()
    with torch.no_grad():
        logits, dets = model.detect(window)
    assert logits.shape == (1, 2, 9, 64, 64) and torch.isfinite(logits).all()
    assert len(dets[0].scores) == 1 and (logits[0, 1] > BACKGROUND_LOGIT).any()


def test_nan_voxels_are_replaced_with_a_warning_not_spread():
    import pytest

    torch.manual_seed(0)
    model = CoSAM(replace(CoSAMConfig.small(window=5), score_threshold=0.0, nms_iou=1.0)).eval()
    x = torch.randn(1, 1, 5, 40, 40)
    x[0, 0, 2, 10:12, 10:12] = float("nan")
    with pytest.warns(RuntimeWarning, match="4 NaN"):
        logits, _ = model.detect(x)
    assert torch.isfinite(logits).all()
    torch.testing.assert_close(logits, model.detect(torch.nan_to_num(x, nan=0.0))[0])


def test_near_copies_of_a_proposal_are_segmented_once_with_segment_nms():
    """Of proposals whose union boxes overlap by more than segment_nms_iou only the best-scored is
    sent to U-SAM; proposals below the threshold's floor or present on no slice never are."""
    length = 5
    box = torch.tensor([10.0, 10, 20, 20])
    boxes = torch.stack([box, box + torch.tensor([1.0, 0, 1, 0]), box + 30, box + 60, box]).repeat(length, 1, 1).transpose(0, 1)
    det = {"scores": torch.logit(torch.tensor([[0.9, 0.8, 0.7, 0.05, 0.6]])),
           "presence": torch.full((1, 5, length), 5.0), "boxes": boxes[None]}
    det["presence"][0, 4] = -5.0  # the last proposal is present nowhere
    cfg = replace(CoSAMConfig.small(window=length), max_boxes=10, segment_nms_iou=1.0)
    order, present = CoSAM(cfg)._proposals_to_segment(det, 0, threshold=0.5)
    assert order.tolist() == [0, 1, 2] and present.shape == (3, length) and present.all()
    for nms_iou in (0.5, CoSAMConfig.small().segment_nms_iou, CoSAMConfig.paper().segment_nms_iou):
        order, present = CoSAM(replace(cfg, segment_nms_iou=nms_iou))._proposals_to_segment(det, 0, threshold=0.5)
        assert order.tolist() == [0, 2] and present.shape == (2, length)
