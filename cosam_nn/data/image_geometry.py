"""Whether two SimpleITK images share a voxel grid: the one check the converter, the evaluation and
the report make before they compare an image with its label or prediction."""
import numpy as np

# spacing and direction are relative quantities; origins are in mm and written with fewer digits
_TOLERANCE = (("spacing", 1e-4), ("origin", 1e-3), ("direction", 1e-4))


def geometry_mismatch(a, b, a_name="image", b_name="label"):
    """A sentence naming the first property (size, spacing, origin, direction) in which b differs
    from a, or None when they share a grid."""
    if a.GetSize() != b.GetSize():
        return f"{a_name} size {a.GetSize()} and {b_name} size {b.GetSize()} differ"
    for what, tol in _TOLERANCE:
        va, vb = (getattr(im, "Get" + what.capitalize())() for im in (a, b))
        if not np.allclose(va, vb, rtol=tol, atol=tol):
            return (f"{a_name} {what} {tuple(round(v, 4) for v in va)} and "
                    f"{b_name} {what} {tuple(round(v, 4) for v in vb)} differ")
    return None
