"""Readers of the input layouts the Meply converter accepts; each gives (case name, loader) pairs.

- prln:   the authors' 3D layout (npz/, clean_labels/, PRLN/), see `cosam_nn.data.meply_layout`
- slabs:  a folder of public 15-slice example files `{case}.npz` (img/label as (H, W, D))
- images: `images/` and `labels/` folders of pairs with the same case name, each image a NIfTI,
          NRRD or MHA/MHD file or a folder holding one DICOM series; labels are files
A loader returns (image, label) as SimpleITK images with the same geometry.
"""
import os

import numpy as np
import SimpleITK as sitk

from cosam_nn.data import meply_layout
from cosam_nn.data.ct_image import IMAGE_SUFFIXES, ImageError, read_image

FORMATS = ("prln", "slabs", "images")
__all__ = ["ConversionError", "FORMATS", "list_cases", "read_image"]


class ConversionError(ImageError):
    """A user-facing fault in the input; the message names the case or file."""


def detect_format(folder):
    if os.path.isdir(os.path.join(folder, meply_layout.NPZ_DIR)):
        return "prln"
    if os.path.isdir(os.path.join(folder, "images")):
        return "images"
    if any(f.endswith(".npz") for f in os.listdir(folder)):
        return "slabs"
    raise ConversionError(f"{folder}: cannot tell the layout: expected npz/ (prln), images/ and labels/ "
                          f"(images) or .npz slab files (slabs)")


def _from_array(array, spacing_zyx):
    array = np.asarray(array)
    if array.dtype == bool:  # types SimpleITK cannot hold; both convert without loss
        array = array.astype(np.uint8)
    elif array.dtype == np.float16:
        array = array.astype(np.float32)
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    image.SetSpacing([float(s) for s in spacing_zyx[::-1]])
    return image


def prln_cases(folder):
    """Cases of the 3D layout and the split from PRLN/annotations.json (None when absent)."""
    names = meply_layout.prln_cases(folder)
    label_dir = os.path.join(folder, meply_layout.LABEL_DIR)
    labels = {f[:-4] for f in os.listdir(label_dir) if f.endswith(".npz")} if os.path.isdir(label_dir) else set()
    for name in names:
        if name not in labels:
            raise ConversionError(f"case {name}: no label file {meply_layout.LABEL_DIR}/{name}.npz")
    for name in sorted(labels - set(names)):
        raise ConversionError(f"case {name}: label file without image {meply_layout.NPZ_DIR}/{name}.npz")

    def loader(name):
        img, spacing, label = meply_layout.read_prln_case(folder, name)
        return _from_array(img, spacing), _from_array(label, spacing)

    return [(n, lambda n=n: loader(n)) for n in names], meply_layout.read_prln_splits(folder)


def slab_cases(folder, spacing_zyx):
    names = sorted(f[:-4] for f in os.listdir(folder) if f.endswith(".npz"))

    def loader(name):
        img, label = meply_layout.read_slab(os.path.join(folder, name + ".npz"))
        return _from_array(img, spacing_zyx), _from_array(label, spacing_zyx)

    return [(n, lambda n=n: loader(n)) for n in names], None


def _case_name(entry, folder):
    if os.path.isdir(os.path.join(folder, entry)):
        return entry
    for suffix in IMAGE_SUFFIXES:
        if entry.lower().endswith(suffix):
            return entry[: -len(suffix)]
    return None


def _index(folder, allow_dicom):
    """Map case name -> path for the image files (and DICOM folders) in `folder`."""
    found = {}
    for entry in sorted(os.listdir(folder)):
        path = os.path.join(folder, entry)
        if os.path.isdir(path) and not allow_dicom:
            continue
        name = _case_name(entry, folder)
        if name is None or entry.startswith("."):
            continue
        if name in found:
            raise ConversionError(f"case {name}: duplicate case name in {folder} "
                                  f"({os.path.basename(found[name])} and {entry})")
        found[name] = path
    return found


def image_folder_cases(folder):
    image_dir, label_dir = os.path.join(folder, "images"), os.path.join(folder, "labels")
    if not os.path.isdir(label_dir):
        raise ConversionError(f"{folder}: images/ needs a labels/ folder beside it")
    images, labels = _index(image_dir, allow_dicom=True), _index(label_dir, allow_dicom=False)
    for name in images:
        if name not in labels:
            raise ConversionError(f"case {name}: no label in {label_dir}")
    for name in labels:
        if name not in images:
            raise ConversionError(f"case {name}: label {os.path.basename(labels[name])} has no image")
    return [(n, lambda n=n: (read_image(images[n]), read_image(labels[n]))) for n in images], None


def list_cases(folder, fmt, spacing_zyx):
    """(format, [(name, loader)], split or None) for an input folder."""
    if not os.path.isdir(folder):
        raise ConversionError(f"{folder}: input folder not found")
    if fmt == "auto":
        fmt = detect_format(folder)
    if fmt == "prln":
        cases, split = prln_cases(folder)
    elif fmt == "slabs":
        cases, split = slab_cases(folder, spacing_zyx)
    else:
        cases, split = image_folder_cases(folder)
    if not cases:
        raise ConversionError(f"{folder}: no cases found for format {fmt}")
    return fmt, cases, split
