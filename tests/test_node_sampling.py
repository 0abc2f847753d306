import numpy as np
import torch

from cosam_nn.modeling.sequence_detector import node_balanced_weights
from cosam_nn.training.node_sampling import balanced_locations, clamp_into_window, node_balanced, windows_inside


def _two_nodes():
    seg = np.zeros((1, 12, 40, 40), dtype=np.int16)
    seg[0, 2:10, 5:25, 5:25] = 1     # 3200 voxels
    seg[0, 5:7, 30:32, 30:32] = 1    # 8 voxels
    return seg


def test_every_node_gets_the_same_number_of_locations_inside_it():
    seg = _two_nodes()
    locations = balanced_locations(seg, per_node=50)
    assert locations.shape == (100, 4) and (locations[:, 0] == 0).all()
    assert (seg[tuple(locations.T)] == 1).all()
    in_small = (locations[:, 3] >= 30).sum()
    assert in_small == 50  # uniform over the voxels this would be 8 in 3208, about 0.1 of 100
    assert balanced_locations(np.zeros((1, 4, 8, 8))).shape == (0, 4)


class _Dataset:
    def __init__(self, seg):
        self.seg = seg

    def load_case(self, identifier):
        return np.zeros_like(self.seg, dtype=np.float32), self.seg, None, {"class_locations": {1: np.argwhere(self.seg > 0)}}


def test_the_wrapped_dataset_hands_the_loader_balanced_locations_and_keeps_the_rest():
    seg = _two_nodes()
    plain = _Dataset(seg).load_case("a")[3]["class_locations"][1]
    assert (plain[:, 3] >= 30).mean() < 0.01
    dataset = node_balanced(_Dataset)(seg)
    _, seg_out, _, properties = dataset.load_case("a")
    assert seg_out is seg
    balanced = properties["class_locations"][1]
    assert abs((balanced[:, 3] >= 30).mean() - 0.5) < 1e-9
    empty = node_balanced(_Dataset)(np.zeros_like(seg)).load_case("b")[3]["class_locations"][1]
    assert len(empty) == 0


def test_objectness_weights_give_each_node_the_same_total():
    assigned = torch.full((8, 8), -1)
    assigned[0:4, 0:4] = 0   # a large node: 16 locations
    assigned[6, 6] = 1       # a small node: 1 location
    w = node_balanced_weights(assigned)
    assert w[assigned == -1].eq(1).all()
    assert torch.isclose(w[assigned == 0].sum(), w[assigned == 1].sum())
    assert torch.isclose(w[assigned >= 0].sum(), torch.tensor(17.0))


def _window_around(location, window):
    """(lower, upper) corners of the window nnU-Net's loader centres on a location (channel, z, y, x)."""
    lower = np.asarray(location[1:]) - np.asarray(window) // 2
    return lower, lower + np.asarray(window)


def test_windows_centred_on_clamped_locations_lie_inside_and_hold_their_voxel():
    shape, window = (12, 40, 40), (5, 40, 32)
    rng = np.random.default_rng(0)
    locations = np.concatenate([np.zeros((200, 1), dtype=np.int64),
                                np.stack([rng.integers(0, n, 200) for n in shape], 1)], 1)
    moved = clamp_into_window(locations, shape, window)
    assert (moved[:, 0] == 0).all()
    for before, after in zip(locations, moved):
        lower, upper = _window_around(after, window)
        assert (lower >= 0).all() and (upper <= np.asarray(shape)).all()
        assert (lower <= before[1:]).all() and (before[1:] < upper).all()
    inner = np.array([[0, 6, 20, 20]])
    assert np.array_equal(clamp_into_window(inner, shape, window), inner)  # already inside: unchanged
    assert np.array_equal(clamp_into_window(np.array([[0, 1, 3, 39]]), (12, 30, 40), (5, 40, 32)),
                          [[0, 2, 3, 24]])  # an image smaller than the window keeps that axis (y)


def test_the_wrapped_dataset_hands_the_loader_locations_of_windows_inside_the_image():
    seg = _two_nodes()
    dataset = windows_inside(node_balanced(_Dataset), (5, 32, 32))(seg)
    _, seg_out, _, properties = dataset.load_case("a")
    assert seg_out is seg
    locations = properties["class_locations"][1]
    assert len(locations) == 2 * 64
    lower = locations[:, 1:] - np.array([2, 16, 16])
    assert (lower >= 0).all() and (lower + np.array([5, 32, 32]) <= np.array(seg.shape[1:])).all()
    assert locations[:, 3].max() == 24 and (locations[:, 3] == 24).sum() >= 64  # the 2 px node's (x 30-31) moved in
