"""How radiologists measure a node: on the axial slice, the longest diameter, then the longest
diameter perpendicular to it (the short axis, which sets size criteria for lymph nodes)."""
import numpy as np
from scipy.spatial import ConvexHull, QhullError


def _corner_points(mask2d, spacing_yx):
    """(N, 2) physical (y, x) corners of the pixels of a 2D mask: pixel extents, not centres."""
    rows, cols = np.nonzero(mask2d)
    corners = np.array([[0, 0], [0, 1], [1, 0], [1, 1]])
    pts = (np.stack([rows, cols], 1)[:, None, :] + corners[None]).reshape(-1, 2)
    return pts * np.asarray(spacing_yx, float)


def axial_diameters(mask2d, spacing_yx):
    """(long axis, short axis) in mm of a 2D mask; (0, 0) when empty."""
    if not np.any(mask2d):
        return 0.0, 0.0
    pts = _corner_points(mask2d, spacing_yx)
    try:
        pts = pts[ConvexHull(pts).vertices]
    except QhullError:  # collinear points: a one-pixel-wide line
        pass
    diff = pts[:, None, :] - pts[None, :, :]
    dist = np.sqrt((diff ** 2).sum(-1))
    i, j = np.unravel_index(np.argmax(dist), dist.shape)
    axis = diff[i, j] / dist[i, j]
    normal = np.array([-axis[1], axis[0]])
    proj = pts @ normal
    return float(dist[i, j]), float(proj.max() - proj.min())


def node_diameters(node_mask, spacing_zyx):
    """(long, short) axis in mm of a 3D node, measured on its axial slice of largest area."""
    areas = node_mask.reshape(node_mask.shape[0], -1).sum(1)
    z = int(np.argmax(areas))
    return axial_diameters(node_mask[z], spacing_zyx[1:])
