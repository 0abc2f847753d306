"""Foreground oversampling that gives every node the same chance, whatever its size.

nnU-Net's data loader centres a "foreground" training patch on a voxel drawn uniformly from the
case's stored foreground locations, so a node's chance of being in a patch grows with its volume:
a 25 mm node (thousands of voxels) is drawn about a hundred times as often as a 4 mm one (tens of
voxels), and the small nodes, most of a patient's metastases, are the ones the network rarely sees.
`node_balanced` wraps nnU-Net's dataset class so that the foreground locations a case hands to the
loader hold the same number of voxels from each node (26-connected component of the label).
Nothing else of nnU-Net's loading changes.

`windows_inside` moves the same locations so that a window centred on one stays inside the image.
nnU-Net centres a foreground patch on its voxel even where that runs off the image and fills the
rest with zeros; a CoSAM window spans the whole plane of a small image (96 x 96 px synthetic CT), so
most foreground windows were shifted by up to half a plane and partly zero, never the full planes
the detector sees at inference. The window still holds its voxel.
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


def clamp_into_window(locations, data_shape, window):
    """locations (K, 4) (channel, z, y, x) moved, per axis, into [w // 2, size - w + w // 2], where a
    window of `window` (z, y, x) centred as nnU-Net centres it, from voxel - w // 2, lies inside an
    image of `data_shape` (z, y, x). Axes where the image is smaller than the window are left alone."""
    out = np.array(locations, dtype=np.int64, copy=True)
    for axis, (size, w) in enumerate(zip(data_shape, window)):
        if size >= w:
            out[:, axis + 1] = np.clip(out[:, axis + 1], w // 2, size - w + w // 2)
    return out


def windows_inside(dataset_class, window):
    """A subclass of nnU-Net's dataset class whose foreground locations are `clamp_into_window`ed
    for windows of `window` (z, y, x) voxels."""

    class WindowsInside(dataset_class):
        def load_case(self, identifier):
            data, seg, seg_prev, properties = super().load_case(identifier)
            locations = properties.get("class_locations")
            if locations:
                shape = tuple(seg.shape[1:])
                properties = {**properties, "class_locations": {
                    k: clamp_into_window(v, shape, window) if len(v) else v for k, v in locations.items()}}
            return data, seg, seg_prev, properties

    WindowsInside.__name__ = WindowsInside.__qualname__ = f"WindowsInside{dataset_class.__name__}"
    return WindowsInside
