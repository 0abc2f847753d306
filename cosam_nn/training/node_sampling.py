"""Foreground oversampling that gives every node the same chance, whatever its size.

nnU-Net's data loader centres a "foreground" training patch on a voxel drawn uniformly from the
case's stored foreground locations, so a node's chance of being in a patch grows with its volume:
a 25 mm node (thousands of voxels) is drawn about a hundred times as often as a 4 mm one (tens of
voxels), and the small nodes, most of a patient's metastases, are the ones the network rarely sees.
`node_balanced` wraps nnU-Net's dataset class so that the foreground locations a case hands to the
loader hold the same number of voxels from each node (26-connected component of the label).
Nothing else of nnU-Net's loading changes.
"""
import numpy as np

from cosam_nn.node_geometry import label_nodes

LOCATIONS_PER_NODE = 64


def balanced_locations(seg, per_node=LOCATIONS_PER_NODE, seed=0):
    """(K, 4) int array of (channel, z, y, x) foreground voxels of seg (1, Z, Y, X): `per_node` from each
    node (drawn with replacement where a node is smaller), in nnU-Net's class_locations format."""
    instances, n = label_nodes(np.asarray(seg[0]) > 0)
    if n == 0:
        return np.zeros((0, 4), dtype=np.int64)
    coords = np.argwhere(instances > 0)
    ids = instances[tuple(coords.T)]
    order = np.argsort(ids, kind="stable")
    coords, ids = coords[order], ids[order]
    starts = np.searchsorted(ids, np.arange(1, n + 1))
    sizes = np.diff(np.r_[starts, len(ids)])
    rng = np.random.default_rng(seed)
    picks = np.concatenate([start + rng.integers(0, size, per_node) for start, size in zip(starts, sizes)])
    return np.concatenate([np.zeros((len(picks), 1), dtype=np.int64), coords[picks]], axis=1)


def node_balanced(dataset_class, foreground_label=1):
    """A subclass of nnU-Net's dataset class whose cases carry node-balanced foreground locations
    (computed once per case and process, from the preprocessed label)."""

    class NodeBalanced(dataset_class):
        def load_case(self, identifier):
            data, seg, seg_prev, properties = super().load_case(identifier)
            cache = self.__dict__.setdefault("_balanced_locations", {})
            if identifier not in cache:
                cache[identifier] = balanced_locations(seg)
            locations = properties.get("class_locations")
            if locations is not None and len(cache[identifier]):
                properties = {**properties, "class_locations": {**locations, foreground_label: cache[identifier]}}
            return data, seg, seg_prev, properties

    NodeBalanced.__name__ = NodeBalanced.__qualname__ = f"NodeBalanced{dataset_class.__name__}"
    return NodeBalanced
