import numpy as np
import torch

from cosam_nn.modeling.sequence_detector import node_balanced_weights
from cosam_nn.training.node_sampling import balanced_locations, node_balanced


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
