from dataclasses import replace

import torch

from cosam_nn.modeling.config import CoSAMConfig
from cosam_nn.crops import crop_regions, paste_crop
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
    assert logits[:, 1].max() <= LOGIT_BOUND and logits[:, 1].min() >= BACKGROUND_LOGIT
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
