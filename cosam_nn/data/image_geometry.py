"""Whether two SimpleITK images share a voxel grid: the one check the converter, the evaluation and
the report make before they compare an image with its label or prediction."""
import numpy as np

SPACING_TOLERANCE = 1e-4    # relative
DIRECTION_TOLERANCE = 1e-4  # direction cosines
ORIGIN_TOLERANCE = 0.1      # of the smallest voxel side: a grid one slice off is never the same grid


def geometry_mismatch(a, b, a_name="image", b_name="label"):
    """A sentence naming the first property (size, spacing, origin, direction) in which b differs
    from a, or None when they share a grid. Origins are compared in mm against a fraction of a voxel,
    not of the origin's distance from the scanner's zero."""
    if a.GetSize() != b.GetSize():
        return f"{a_name} size {a.GetSize()} and {b_name} size {b.GetSize()} differ"
    tolerances = {"spacing": dict(rtol=SPACING_TOLERANCE, atol=0.0),
                  "origin": dict(rtol=0.0, atol=ORIGIN_TOLERANCE * min(a.GetSpacing())),
                  "direction": dict(rtol=0.0, atol=DIRECTION_TOLERANCE)}
    for what, tol in tolerances.items():
        va, vb = (getattr(im, "Get" + what.capitalize())() for im in (a, b))
        if not np.allclose(va, vb, **tol):
            return (f"{a_name} {what} {tuple(round(v, 4) for v in va)} and "
                    f"{b_name} {what} {tuple(round(v, 4) for v in vb)} differ")
    return None
