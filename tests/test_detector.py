from dataclasses import replace

import pytest
import torch
from torchvision.ops import box_iou

from blobs import blob_windows
from cosam_nn.modeling.config import CoSAMConfig, DetectorConfig
from cosam_nn.modeling.sequence_detector import (SequenceDetector, decode_boxes, dense_targets, encode_boxes,
                                                 jitter_tube, match_iou)
from cosam_nn.node_geometry import node_boxes


def test_box_coding_round_trip():
    ref = torch.tensor([[10.0, 10, 20, 30], [0, 0, 4, 4]])
    boxes = torch.tensor([[12.0, 8, 25, 33], [1, 1, 2, 9]])
    torch.testing.assert_close(decode_boxes(ref, encode_boxes(ref, boxes)), boxes)


@pytest.mark.parametrize("window", [5, 7, 9, 11, 13, 15])
def test_any_odd_window_from_5_to_15(window):
    det = SequenceDetector(CoSAMConfig.small(window=window).detector).eval()
    with torch.no_grad():
        out = det(torch.randn(2, 1, window, 32, 48))
    n = out["boxes"].shape[1]
    assert out["boxes"].shape == (2, n, window, 4) and out["presence"].shape == (2, n, window)
    assert out["scores"].shape == (2, n) and out["seq_features"].shape[:2] == (2, n)
    assert out["losses"] == {}


@pytest.mark.parametrize("window", [4, 3, 17])
def test_bad_windows_are_refused(window):
    with pytest.raises(ValueError, match="odd"):
        DetectorConfig(window=window)
    det = SequenceDetector(CoSAMConfig.small(window=5).detector)
    with pytest.raises(ValueError, match="5"):
        det(torch.randn(1, 1, 7, 32, 32))


def test_empty_windows_train_and_predict():
    det = SequenceDetector(CoSAMConfig.small(window=5).detector)
    x = torch.randn(2, 1, 5, 32, 32)
    empty = node_boxes(torch.zeros(5, 32, 32))
    losses = det(x, [empty, empty])["losses"]
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert det.proposal_head.out.weight.grad is not None


def _recall(det, x, targets, iou=0.5):
    det.eval()
    with torch.no_grad():
        out = det(x)
    hit = total = 0
    for b, t in enumerate(targets):
        kept = out["scores"][b].sigmoid() > 0.5
        presence = out["presence"][b].sigmoid() > 0.5
        for n in range(len(t)):
            for s in torch.nonzero(t.present[n]).flatten().tolist():
                total += 1
                cand = kept & presence[:, s]
                if cand.any() and box_iou(t.boxes[n, s][None], out["boxes"][b][cand][:, s]).max() >= iou:
                    hit += 1
    return hit / total


def test_detector_learns_to_find_blobs():
    """Bounded training on a few windows recovers the per-slice boxes of their blobs."""
    torch.manual_seed(0)
    det = SequenceDetector(CoSAMConfig.small(window=5).detector)
    x, masks = blob_windows(8, length=5, size=48, seed=1)
    targets = [node_boxes(m) for m in masks]
    before = _recall(det, x, targets)
    det.train()
    opt = torch.optim.AdamW(det.parameters(), 2e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(200):
        idx = torch.randperm(8, generator=gen)[:4].tolist()
        loss = sum(det(x[idx], [targets[i] for i in idx])["losses"].values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = _recall(det, x, targets)
    assert before < 0.5 and after >= 0.9, (before, after)


def test_dense_targets_mark_the_cells_each_slices_box_overlaps():
    det = SequenceDetector(CoSAMConfig.small(window=5).detector)
    anchors = det._anchors(8, 8, (32, 32), torch.device("cpu"))  # cells [0, 4), [4, 8), ...
    mask = torch.zeros(5, 32, 32, dtype=torch.bool)
    mask[1:3, 8:16, 8:16] = True  # box (8, 8, 16, 16) on slices 1 and 2: cells 2 and 3, not their neighbours
    mask[4, 3:6, 3:6] = True  # a 3 px node between two cell centres (2 and 6): still cells 0 and 1
    target = dense_targets(anchors, node_boxes(mask), det.cfg.stride)
    expected = torch.zeros(5, 8, 8)
    expected[1:3, 2:4, 2:4] = 1
    expected[4, 0:2, 0:2] = 1
    assert torch.equal(target, expected)
    assert torch.equal(dense_targets(anchors, node_boxes(torch.zeros(5, 32, 32)), 4), torch.zeros(5, 8, 8))


def test_match_iou_forgives_a_pixels_miss_of_a_tiny_node_but_not_a_large_one():
    node = torch.tensor([[10.0, 10, 14, 14]])
    missed_by_one = torch.tensor([[11.0, 11, 15, 15]])
    assert box_iou(missed_by_one, node)[0, 0] < 0.4 <= match_iou(missed_by_one, node, 2.0)[0, 0]
    far = torch.tensor([[16.0, 16, 20, 20]])
    assert match_iou(far, node, 2.0)[0, 0] < 0.1
    big, shifted = torch.tensor([[0.0, 0, 40, 40]]), torch.tensor([[12.0, 12, 52, 52]])
    assert abs(match_iou(shifted, big, 2.0) - box_iou(shifted, big))[0, 0] < 0.05  # 0.36 against 0.32


def test_jittered_tubes_stay_near_their_node_on_every_slice():
    torch.manual_seed(0)
    tubes = torch.tensor([[[10.0, 10, 14, 14], [10, 9, 15, 15], [11, 11, 13, 13]]]).repeat(50, 1, 1)
    moved = jitter_tube(tubes)
    assert (moved[..., 2:] > moved[..., :2]).all() and (moved >= 0).all()
    assert not torch.equal(moved, tubes)
    offset = moved - tubes
    assert torch.allclose(offset[:, 0, :2], offset[:, 1, :2])  # one move for the whole tube
    assert offset[:, :, :2].abs().max() <= 2.25 + 1e-5  # 1.5 x 25% of 6 px: a near-miss, not another place


def test_cpu_inference_encodes_each_slice_once_and_forgets_on_new_weights():
    torch.manual_seed(0)
    det = SequenceDetector(CoSAMConfig.small(window=5).detector).eval()
    volume = torch.randn(1, 1, 9, 32, 32)
    with torch.no_grad():
        first = det(volume[:, :, 0:5])
        shifted = det(volume[:, :, 2:7])  # slices 2-4 seen before
        cache = det._slice_cache
        assert (cache.misses, cache.hits) == (7, 3)
        det.train(False)  # eval() again: a fresh cache, same results
        again = det(volume[:, :, 2:7])
    torch.testing.assert_close(again["scores"], shifted["scores"])
    torch.testing.assert_close(again["boxes"], shifted["boxes"])
    det.load_state_dict({k: v + 0.01 if v.is_floating_point() else v for k, v in det.state_dict().items()})
    with torch.no_grad():
        changed = det(volume[:, :, 0:5])
    assert det._slice_cache.hits == 0
    assert not torch.allclose(changed["scores"], first["scores"])
    det.train()
    out = det(volume[:, :, 0:5], [node_boxes(torch.zeros(5, 32, 32))])
    assert det._slice_cache is None and out["losses"]


class _FixedMaps(torch.nn.Module):
    """Stands in for the proposal head or the dense head: fixed objectness / per-slice logits, zero
    box deltas, every slice present."""

    def __init__(self, logits, window=None):
        super().__init__()
        self.logits, self.window = logits, window

    def forward(self, feats):
        if self.window is None:  # dense head: (B * L, C, h, w) -> (B * L, 1, h, w)
            return self.logits.expand(feats.shape[0], 1, -1, -1)
        b, h, w = feats.shape[0], *self.logits.shape
        return (self.logits.expand(b, h, w)[..., None], torch.zeros(b, h, w, 1, self.window, 4),
                torch.full((b, h, w, 1, self.window), 5.0))


def test_dense_ranking_lets_the_dense_head_pick_the_proposals():
    """Objectness prefers cell (1, 1), the dense head sees a node only at cell (5, 6): ranked by both,
    the one proposal kept sits at (5, 6)."""
    cfg = replace(CoSAMConfig.small(window=5).detector, test_proposals=1)
    det = SequenceDetector(cfg).eval()
    objectness = torch.full((8, 8), -2.0)
    objectness[1, 1], objectness[5, 6] = -1.0, -1.5
    dense = torch.full((8, 8), -6.0)
    dense[5, 6] = 3.0
    det.proposal_head, det.dense_head = _FixedMaps(objectness, window=5), _FixedMaps(dense)
    with torch.no_grad():
        box = det(torch.randn(1, 1, 5, 32, 32))["proposals"][0].boxes[0, 2]
    centre = (float(box[0] + box[2]) / 2, float(box[1] + box[3]) / 2)  # x, y; cell (row, col) -> centre (4 col + 2, 4 row + 2)
    assert centre == (26.0, 22.0)


def _square_nodes(*squares, size=64, length=5):
    """A (L, size, size) mask of square nodes (y, x, side) on every slice."""
    mask = torch.zeros(length, size, size)
    for y, x, side in squares:
        mask[:, y:y + side, x:x + side] = 1
    return mask


def test_each_node_trains_the_locations_around_its_centre():
    """The one 8 px anchor per location: a 3 px node's own locations train it (within a stride of its
    centre), and of two nodes sharing a location the smaller one takes it."""
    det = SequenceDetector(CoSAMConfig.small(window=5).detector)
    anchors = det._anchors(16, 16, (64, 64), "cpu")
    assert anchors.shape == (16, 16, 1, 4) and torch.equal(anchors[0, 0, 0], torch.tensor([-2.0, -2, 6, 6]))
    assigned = det._assign_locations(anchors, node_boxes(_square_nodes((4, 4, 3))))
    where = torch.nonzero(assigned == 0)[:, :2]
    assert len(where) and ((where * 4 + 2 - 5.5).abs() <= 4).all()
    two = torch.zeros(5, 64, 64)
    two[0:2, 8:48, 8:48] = 1  # a 40 px node on the first slices, a 6 px one inside its outline further on
    two[3:5, 24:30, 24:30] = 1
    assigned = det._assign_locations(anchors, node_boxes(two))
    assert assigned[6, 6, 0] == 1 and assigned[4, 4, 0] == 0  # the small node's centre cell; the large one's elsewhere
