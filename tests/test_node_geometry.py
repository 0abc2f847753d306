import numpy as np
import torch

from cosam_nn.node_geometry import expand_boxes, node_boxes, union_boxes


def test_single_voxel_box_has_exclusive_ends():
    mask = np.zeros((3, 10, 12), np.uint8)
    mask[1, 5, 3] = 1
    nb = node_boxes(mask)
    assert len(nb) == 1 and nb.present.tolist() == [[False, True, False]]
    assert nb.boxes[0, 1].tolist() == [3, 5, 4, 6] and nb.voxels.tolist() == [1]
    assert nb.boxes[0, 0].tolist() == [0, 0, 0, 0]


def test_node_drifting_across_slices_gets_one_box_per_slice():
    mask = np.zeros((5, 20, 20), bool)
    mask[1, 2:5, 3:6] = True     # rows 2-4, cols 3-5
    mask[2, 4:8, 5:9] = True     # overlaps the slice above: same node
    mask[3, 7:9, 8:12] = True
    nb = node_boxes(torch.from_numpy(mask))
    assert len(nb) == 1
    assert nb.present[0].tolist() == [False, True, True, True, False]
    assert nb.boxes[0, 1].tolist() == [3, 2, 6, 5]
    assert nb.boxes[0, 2].tolist() == [5, 4, 9, 8]
    assert nb.boxes[0, 3].tolist() == [8, 7, 12, 9]
    assert nb.voxels.item() == 9 + 16 + 8
    assert union_boxes(nb.boxes, nb.present)[0].tolist() == [3, 2, 12, 9]


def test_diagonal_neighbours_are_one_node_and_separate_blobs_two():
    mask = np.zeros((3, 8, 8), bool)
    mask[0, 0, 0] = mask[1, 1, 1] = True  # corner-touching in 3D: 26-connected
    mask[2, 6, 6] = True
    nb = node_boxes(mask)
    assert len(nb) == 2
    assert sorted(nb.voxels.tolist()) == [1, 2]


def test_node_touching_the_border_and_empty_window():
    mask = np.zeros((5, 16, 16), bool)
    mask[0:2, 12:16, 0:3] = True
    nb = node_boxes(mask)
    assert nb.boxes[0, 0].tolist() == [0, 12, 3, 16]
    assert expand_boxes(nb.boxes[0, 0], 4, 16, 16).tolist() == [0, 8, 7, 16]
    empty = node_boxes(np.zeros((5, 16, 16)))
    assert len(empty) == 0 and empty.boxes.shape == (0, 5, 4) and empty.present.shape == (0, 5)
    assert union_boxes(empty.boxes, empty.present).shape == (0, 4)


def test_expand_boxes_by_one_margin_per_side():
    box = torch.tensor([[4.0, 4, 8, 8]])
    out = expand_boxes(box, torch.tensor([[1.0, 2, 3, 20]]), 16, 16)
    assert out.tolist() == [[3, 2, 11, 16]]
