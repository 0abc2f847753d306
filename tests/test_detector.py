from dataclasses import replace

import pytest
import torch
from torchvision.ops import box_iou, nms, roi_align

from blobs import blob_windows
from cosam_nn.modeling.backbone import SliceBackbone, split_levels
from cosam_nn.modeling.config import CoSAMConfig, DetectorConfig
from cosam_nn.modeling.sequence_detector import (SequenceDetector, decode_boxes, dense_targets, encode_boxes,
                                                 jitter_tube, match_iou,
                                                 match_quality)
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


@pytest.mark.parametrize("anchor_sizes, fine_roi_below", [((8,), 0.0), ((4, 8, 16), 0.0), ((8,), 12.0)])
def test_detector_learns_to_find_blobs(anchor_sizes, fine_roi_below):
    """Bounded training on a few windows recovers the per-slice boxes of their blobs (with small
    proposals pooled at stride 2 too)."""
    torch.manual_seed(0)
    det = SequenceDetector(replace(CoSAMConfig.small(window=5).detector, anchor_sizes=anchor_sizes,
                                   fine_roi_below=fine_roi_below))
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


def test_centre_match_takes_a_loose_box_centred_on_a_small_node_only():
    cfg = DetectorConfig(centre_match_below=10.0)
    node = torch.tensor([[20.0, 20, 24, 24]])  # 4 px node, stage 1's usual 10 px box around it
    centred = torch.tensor([[17.0, 17, 27, 27]])
    assert match_iou(centred, node, cfg.match_margin)[0, 0] < cfg.positive_iou
    assert match_quality(centred, node, cfg)[0, 0] >= cfg.positive_iou
    assert match_quality(centred, node, DetectorConfig())[0, 0] < cfg.positive_iou  # off by default
    beside = centred + torch.tensor([5.0, 0, 5, 0])  # the node at the box's edge
    huge = torch.tensor([[7.0, 7, 37, 37]])  # centred but 30 px
    assert (match_quality(torch.cat([beside, huge]), node, cfg) < cfg.positive_iou).all()
    large = torch.tensor([[10.0, 10, 24, 24]])  # 14 px node: the IoU rule alone
    loose = torch.tensor([[8.0, 8, 26, 26]])
    assert torch.equal(match_quality(loose, large, cfg), match_iou(loose, large, cfg.match_margin))


def test_anchor_size_quota_keeps_a_share_of_each_size_and_suppresses_within_a_size_only():
    small = torch.tensor([[10.0, 10, 14, 14], [10, 10, 14, 14], [40, 40, 44, 44]])
    large = torch.tensor([[8.0, 8, 16, 16], [30, 30, 38, 38], [50, 50, 58, 58], [60, 60, 68, 68]])
    union = torch.cat([large, small])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.3, 0.2, 0.1])  # every large box outranks every small one
    level = torch.tensor([1, 1, 1, 1, 0, 0, 0])
    idx = torch.arange(7)
    kept = SequenceDetector._quota_per_anchor_size(union, scores, level, 2, idx, 0.7, keep=4)
    # two of each size, best first; the small duplicate is suppressed, the small box inside the large one is not
    assert kept.tolist() == [0, 1, 4, 6]
    plain = idx[nms(union, scores, 0.7)[:4]]
    assert plain.tolist() == [0, 1, 2, 3]


def test_jittered_tubes_stay_near_their_node_on_every_slice():
    torch.manual_seed(0)
    tubes = torch.tensor([[[10.0, 10, 14, 14], [10, 9, 15, 15], [11, 11, 13, 13]]]).repeat(50, 1, 1)
    moved = jitter_tube(tubes)
    assert (moved[..., 2:] > moved[..., :2]).all() and (moved >= 0).all()
    assert not torch.equal(moved, tubes)
    offset = moved - tubes
    assert torch.allclose(offset[:, 0, :2], offset[:, 1, :2])  # one move for the whole tube
    assert offset[:, :, :2].abs().max() <= 2.25 + 1e-5  # 1.5 x 25% of 6 px: a near-miss, not another place


@pytest.mark.parametrize("fine_roi_below", [0.0, 12.0])
def test_cpu_inference_encodes_each_slice_once_and_forgets_on_new_weights(fine_roi_below):
    torch.manual_seed(0)
    det = SequenceDetector(replace(CoSAMConfig.small(window=5).detector, fine_roi_below=fine_roi_below)).eval()
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


@pytest.mark.parametrize("dense_ranking", [False, True])
def test_dense_ranking_lets_the_dense_head_pick_the_proposals(dense_ranking):
    """Objectness prefers cell (1, 1), the dense head sees a node only at cell (5, 6): with dense
    ranking the one proposal kept sits at (5, 6), without it at (1, 1)."""
    cfg = replace(CoSAMConfig.small(window=5).detector, test_proposals=1, dense_ranking=dense_ranking)
    det = SequenceDetector(cfg).eval()
    objectness = torch.full((8, 8), -2.0)
    objectness[1, 1], objectness[5, 6] = -1.0, -1.5
    dense = torch.full((8, 8), -6.0)
    dense[5, 6] = 3.0
    det.proposal_head, det.dense_head = _FixedMaps(objectness, window=5), _FixedMaps(dense)
    with torch.no_grad():
        box = det(torch.randn(1, 1, 5, 32, 32))["proposals"][0].boxes[0, 2]
    centre = (float(box[0] + box[2]) / 2, float(box[1] + box[3]) / 2)  # x, y; cell (row, col) -> centre (4 col + 2, 4 row + 2)
    assert centre == ((26.0, 22.0) if dense_ranking else (6.0, 6.0))


@pytest.mark.parametrize("ratio", [1, 2])
def test_stage2_pools_with_the_configured_sampling_ratio(ratio, monkeypatch):
    """`roi_sampling_ratio` reaches RoI align: stage 2's features are those of that many samples per bin."""
    from cosam_nn.modeling import sequence_detector
    seen = []
    real = sequence_detector.roi_align

    def spy(*args, **kwargs):
        seen.append(kwargs["sampling_ratio"])
        return real(*args, **kwargs)

    monkeypatch.setattr(sequence_detector, "roi_align", spy)
    det = SequenceDetector(replace(CoSAMConfig.small(window=5).detector, roi_sampling_ratio=ratio)).eval()
    with torch.no_grad():
        det(torch.randn(1, 1, 5, 32, 32))
    assert seen == [ratio]


@pytest.mark.parametrize("size", [32, 30, 26])
def test_fine_level_is_the_stride2_map_packed_beside_the_stride4_one(size):
    """The backbone's packed output unpacks to a stride-4 map and a stride-2 map twice its size
    (an odd stride-2 map padded at the end); without the fine level nothing changes."""
    torch.manual_seed(0)
    plain, fine = SliceBackbone((8, 16, 32, 48), 32), SliceBackbone((8, 16, 32, 48), 32, fine=True)
    fine.load_state_dict(plain.state_dict(), strict=False)
    x = torch.randn(3, 1, size, size)
    coarse, stride2 = split_levels(fine(x), 32)
    half = -(-size // 2)  # stride-2 size: ceil(size / 2); stride 4: ceil(half / 2)
    h = -(-half // 2)
    assert coarse.shape == (3, 32, h, h) and stride2.shape == (3, 32, 2 * h, 2 * h)
    torch.testing.assert_close(coarse, plain(x))
    assert split_levels(plain(x), 32)[1] is None
    assert stride2[..., :half, :half].abs().sum() > 0
    assert stride2[..., half:, :].abs().sum() == 0 and stride2[..., half:].abs().sum() == 0
    packed = torch.cat([coarse, torch.nn.functional.pixel_unshuffle(stride2, 2)], 1)
    torch.testing.assert_close(split_levels(packed[None], 32)[1][0], stride2)  # (B, L, ...) too


def test_small_proposals_are_pooled_at_stride2_and_large_ones_at_stride4():
    """With fine_roi_below 10, a 6 px proposal reads only the stride-2 map and a 20 px one only the
    stride-4 map: changing one map changes the features of its own proposals alone."""
    det = SequenceDetector(replace(CoSAMConfig.small(window=5).detector, fine_roi_below=10.0))
    length, c = 5, det.cfg.feature_dim
    coarse, stride2 = torch.randn(1, length, c, 8, 8), torch.randn(1, length, c, 16, 16)
    rois = torch.tensor([[10.0, 10, 16, 16], [4.0, 4, 24, 24]]).view(1, 2, 1, 4).expand(1, 2, length, 4)
    union = rois[:, :, 0]

    def pooled(levels):
        return det._pool(levels, rois, union, (32, 32)).view(2, length, c, -1)

    base = pooled((coarse, stride2))
    expected = roi_align(stride2[0], list(rois[0, 0, :, None]), det.cfg.roi_size, spatial_scale=0.5,
                         sampling_ratio=det.cfg.roi_sampling_ratio, aligned=True)
    torch.testing.assert_close(base[0], expected.view(length, c, -1))
    other_fine, other_coarse = pooled((coarse, stride2 + 1)), pooled((coarse + 1, stride2))
    assert not torch.allclose(other_fine[0], base[0]) and torch.equal(other_fine[1], base[1])
    assert torch.equal(other_coarse[0], base[0]) and not torch.allclose(other_coarse[1], base[1])


@pytest.mark.parametrize("balanced", [False, True])
def test_node_balanced_boxes_let_a_small_node_teach_as_much_as_a_large_one(balanced):
    """One 40 px node owns many stage-1 locations, one 4 px node a few. With all box deltas 0 (every box
    is its 8 px anchor), the large node's boxes are far off and the small node's near: unweighted, the
    mean box loss is close to the large node's; weighted per node, it lies halfway to the small node's."""
    cfg = replace(CoSAMConfig.small(window=5).detector, node_balanced_boxes=balanced)
    det = SequenceDetector(cfg)
    large, small = torch.zeros(5, 64, 64), torch.zeros(5, 64, 64)
    large[:, 8:48, 8:48] = 1
    small[:, 56:60, 56:60] = 1
    anchors = det._anchors(16, 16, (64, 64), "cpu")

    def giou_loss(mask):  # every delta 0: each box is its anchor
        return float(det._stage1_losses(torch.zeros(1, 16, 16, 1), torch.zeros(1, 16, 16, 1, 5, 4),
                                        torch.full((1, 16, 16, 1, 5), 5.0), anchors, [node_boxes(mask)])["rpn_box_giou"])

    assigned = det._assign_locations(anchors, node_boxes(large + small))
    counts = torch.bincount(assigned[assigned >= 0])
    assert counts.max() >= 4 * counts.min()  # the large node has many more locations
    large_loss, small_loss = giou_loss(large), giou_loss(small)  # each node alone: its own mean loss
    expected = ((large_loss + small_loss) / 2 if balanced
                else (large_loss * counts.max() + small_loss * counts.min()) / counts.sum())
    assert giou_loss(large + small) == pytest.approx(float(expected), rel=1e-4)


@pytest.mark.parametrize("balanced", [False, True])
def test_node_balanced_dense_loss_lets_a_small_node_weigh_as_much_as_a_large_one(balanced):
    """A 40 px node covers 100 cells a slice, a 4 px node one. At equal logits every positive cell
    pulls its logit up equally hard; unweighted the large node's cells pull 100 times the small
    node's in total, weighted per node each node's cells pull the same."""
    cfg = replace(CoSAMConfig.small(window=5).detector, node_balanced_dense=balanced)
    det = SequenceDetector(cfg)
    with torch.no_grad():  # the dense head's logit is feature channel 0
        det.dense_head.weight.zero_()
        det.dense_head.weight[0, 0] = 1.0
        det.dense_head.bias.zero_()
    feats = torch.zeros(1, 5, cfg.feature_dim, 16, 16, requires_grad=True)
    anchors = det._anchors(16, 16, (64, 64), "cpu")
    det._dense_loss(feats, anchors, [node_boxes(_square_nodes((8, 8, 40), (56, 56, 4)))]).backward()
    pull = -feats.grad[0, :, 0]  # (L, h, w): how hard each cell's logit is pushed up
    large, small = pull[:, 2:12, 2:12], pull[:, 14, 14]
    assert (large > 0).all() and (small > 0).all()
    ratio = float(large.sum() / small.sum())
    assert ratio == pytest.approx(1.0 if balanced else 100.0, rel=1e-4)


@pytest.mark.parametrize("balanced", [False, True])
def test_node_balanced_class_loss_lets_a_small_node_weigh_as_much_as_a_large_one(balanced):
    """Nine proposals match a 40 px node, one a 4 px node, two match nothing. At equal score logits,
    unweighted, the large node's proposals pull their scores up nine times as hard in total as the
    small node's; weighted per node, equally hard, and the negatives are pushed as before."""
    cfg = replace(CoSAMConfig.small(window=5).detector, node_balanced_class=balanced)
    det = SequenceDetector(cfg)
    mask = _square_nodes((8, 8, 40), (56, 56, 4))
    large = [[8.0 + dx, 8.0 + dy, 48.0 + dx, 48.0 + dy] for dx in (-1, 0, 1) for dy in (-1, 0, 1)]
    boxes = torch.tensor(large + [[56.0, 56, 60, 60], [0, 50, 6, 56], [50, 0, 56, 6]])
    boxes = boxes[None, :, None].expand(1, 12, 5, 4).contiguous()
    present = torch.ones(1, 12, 5, dtype=torch.bool)
    scores = torch.zeros(1, 12, requires_grad=True)
    losses = det._stage2_losses(boxes, torch.zeros_like(boxes), boxes, torch.zeros(1, 12, 5), scores, boxes,
                                present, torch.ones(1, 12, dtype=torch.bool), [node_boxes(mask)])
    losses["det_class"].backward()
    pull = -scores.grad[0]
    assert (pull[:10] > 0).all() and (pull[10:] < 0).all()
    ratio = float(pull[:9].sum() / pull[9])
    assert ratio == pytest.approx(1.0 if balanced else 9.0, rel=1e-4)
    assert float(pull[10]) == pytest.approx(-0.5 / 12, rel=1e-4)  # a negative's pull: unchanged


def _square_nodes(*squares, size=64, length=5):
    """A (L, size, size) mask of square nodes (y, x, side) on every slice."""
    mask = torch.zeros(length, size, size)
    for y, x, side in squares:
        mask[:, y:y + side, x:x + side] = 1
    return mask


def test_each_node_trains_the_anchor_size_nearest_its_own():
    """Anchors of 4, 8 and 16 px: a 3 px node's locations train the 4 px anchors, a 7 px node's the
    8 px and a 14 px node's the 16 px; the other anchors at those locations stay background."""
    det = SequenceDetector(replace(CoSAMConfig.small(window=5).detector, anchor_sizes=(4, 8, 16)))
    anchors = det._anchors(16, 16, (64, 64), "cpu")
    assert anchors.shape == (16, 16, 3, 4)
    assigned = det._assign_locations(anchors, node_boxes(_square_nodes((4, 4, 3), (4, 40, 7), (40, 24, 14))))
    for node, level in ((0, 0), (1, 1), (2, 2)):
        where = torch.nonzero(assigned == node)
        assert len(where) and (where[:, 2] == level).all(), (node, where)
    one = SequenceDetector(CoSAMConfig.small(window=5).detector)
    assigned = one._assign_locations(one._anchors(16, 16, (64, 64), "cpu"), node_boxes(_square_nodes((4, 4, 3))))
    assert assigned.shape == (16, 16, 1) and (assigned == 0).any()


@pytest.mark.parametrize("anchor_sizes, reaches", [((8,), False), ((4, 8, 16), True)])
def test_a_small_anchor_gives_a_tiny_node_a_candidate_before_any_box_is_learned(anchor_sizes, reaches):
    """Before the box deltas learn anything (all 0), a 3 px node's best candidate among every
    anchor of the window is an 8 px box (IoU 0.14) with one anchor size, a 4 px box (IoU >= 0.5) with
    a 4 px anchor too."""
    cfg = replace(CoSAMConfig.small(window=5).detector, anchor_sizes=anchor_sizes)
    det = SequenceDetector(cfg).eval()
    a = len(anchor_sizes)
    target = node_boxes(_square_nodes((13, 21, 3), size=32))
    with torch.no_grad():
        every = det._screen(torch.zeros(1, 8, 8, a), torch.zeros(1, 8, 8, a, 5, 4), torch.full((1, 8, 8, a, 5), 5.0),
                            det._anchors(8, 8, (32, 32), "cpu"), (32, 32), 8 * 8 * a, pre_nms_top_k=8 * 8 * a,
                            nms_iou=1.0)[0]
    assert len(every.scores) == 8 * 8 * a
    best = float(box_iou(every.boxes[:, 2], target.boxes[:, 2]).max())
    assert (best >= 0.5) == reaches and (best >= 0.3) == reaches, best
