"""From masks to nodes to per-slice boxes, the targets of every part of CoSAM.

A node is a 3D connected component (26-connectivity) of the binary label. Its box on a slice is
the bounding box of its cross-section there, as (x1, y1, x2, y2) in pixel units with exclusive
ends (a single pixel at column 3, row 5 is (3, 5, 4, 6)), the convention of torchvision's box ops.
"""
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

_CONNECTIVITY_26 = np.ones((3, 3, 3), dtype=bool)


@dataclass
class NodeBoxes:
    """Per-slice boxes of the nodes in a window of L slices.

    boxes:   (N, L, 4) float, (x1, y1, x2, y2); zeros where the node is absent
    present: (N, L) bool, node has voxels on that slice
    voxels:  (N,) int, voxel count of each node inside the window
    """
    boxes: torch.Tensor
    present: torch.Tensor
    voxels: torch.Tensor

    def __len__(self):
        return self.boxes.shape[0]


def label_nodes(mask):
    """(L, H, W) mask -> (instance map with ids 1..N, N) by 26-connected components."""
    instances, n = ndimage.label(np.asarray(mask) > 0, structure=_CONNECTIVITY_26)
    return instances, n


def node_boxes(mask):
    """Nodes of an (L, H, W) mask (numpy or tensor) and their per-slice boxes."""
    return node_boxes_and_instances(mask)[0]


def cross_section_boxes(instances):
    """Per component (ids 1..N) of an (L, H, W) instance map and per slice: its box (x1, y1, x2, y2)
    with exclusive ends, (N, L, 4) float32, whether it is on that slice, (N, L) bool, and its voxel
    count, (N,)."""
    objects = ndimage.find_objects(instances)
    length = instances.shape[0]
    boxes = np.zeros((len(objects), length, 4), dtype=np.float32)
    present = np.zeros((len(objects), length), dtype=bool)
    voxels = np.zeros(len(objects), dtype=np.int64)
    for i, sl in enumerate(objects):
        if sl is None:
            continue
        node = instances[sl] == i + 1
        voxels[i] = node.sum()
        for dz in range(node.shape[0]):
            rows = np.flatnonzero(node[dz].any(1))
            cols = np.flatnonzero(node[dz].any(0))
            if rows.size == 0:
                continue
            z = sl[0].start + dz
            present[i, z] = True
            boxes[i, z] = (sl[2].start + cols[0], sl[1].start + rows[0],
                           sl[2].start + cols[-1] + 1, sl[1].start + rows[-1] + 1)
    return boxes, present, voxels


def node_boxes_and_instances(mask):
    """(NodeBoxes, instance map (L, H, W) with node i labelled i + 1) of an (L, H, W) mask."""
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    instances, _ = label_nodes(mask)
    boxes, present, voxels = cross_section_boxes(instances)
    return NodeBoxes(torch.from_numpy(boxes), torch.from_numpy(present), torch.from_numpy(voxels)), instances


def union_boxes(boxes, present):
    """(N, L, 4), (N, L) -> (N, 4): the smallest box holding a node's boxes on all its slices."""
    big = torch.finfo(boxes.dtype).max
    p = present.unsqueeze(-1)
    lo = torch.where(p, boxes[..., :2], torch.full_like(boxes[..., :2], big)).amin(1)
    hi = torch.where(p, boxes[..., 2:], torch.full_like(boxes[..., 2:], -big)).amax(1)
    out = torch.cat([lo, hi], dim=-1)
    return torch.where(present.any(1, keepdim=True), out, torch.zeros_like(out))


def expand_boxes(boxes, margin, height, width):
    """Grow (…, 4) boxes by `margin` pixels on each side (a number, or one per side, (…, 4)),
    clipped to the image."""
    sign = torch.tensor([-1.0, -1.0, 1.0, 1.0], dtype=boxes.dtype, device=boxes.device)
    grown = boxes + sign * margin
    limit = torch.tensor([width, height, width, height], dtype=boxes.dtype, device=boxes.device)
    return torch.minimum(grown.clamp(min=0), limit)
