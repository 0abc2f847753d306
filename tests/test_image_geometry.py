"""The grid check shared by the converter, the evaluation and the report."""
import numpy as np
import pytest
import SimpleITK as sitk

from cosam_nn.data.image_geometry import geometry_mismatch


def _image(size=(6, 5, 4), spacing=(0.7, 0.7, 1.25), origin=(10.0, -5.0, 3.0), direction=None):
    im = sitk.GetImageFromArray(np.zeros(size[::-1], np.uint8))
    im.SetSpacing(spacing)
    im.SetOrigin(origin)
    if direction:
        im.SetDirection(direction)
    return im


def test_same_grid_within_rounding_passes():
    assert geometry_mismatch(_image(), _image(spacing=(0.70000001, 0.7, 1.25), origin=(10.0002, -5.0, 3.0))) is None


@pytest.mark.parametrize("other,named", [
    (_image(size=(6, 5, 5)), "image size (6, 5, 4) and label size (6, 5, 5) differ"),
    (_image(spacing=(0.7, 0.7, 2.5)), "image spacing (0.7, 0.7, 1.25) and label spacing (0.7, 0.7, 2.5) differ"),
    (_image(origin=(10.0, -5.0, 4.0)), "image origin (10.0, -5.0, 3.0) and label origin (10.0, -5.0, 4.0) differ"),
    (_image(direction=(0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0)), "direction"),
])
def test_the_first_differing_property_is_named(other, named):
    assert named in geometry_mismatch(_image(), other)
    assert geometry_mismatch(_image(), other, "reference", "prediction").startswith("reference ")
