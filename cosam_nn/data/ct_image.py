"""A CT image from a file or a DICOM series folder, checked as every command of this project reads one.

`read_image` opens NIfTI, NRRD, MHA/MHD files and DICOM series folders (`dicom_series`) and refuses
what would be read wrong: an empty file, NaN or infinite voxels (SimpleITK reads NaN as 0), a NIfTI
header whose voxel spacing is zero or negative (readers disagree on what that means). `check_ct`
turns a 3D one-channel image into int16 Hounsfield units, refusing values that cannot be HU.
"""
import os

import numpy as np
import SimpleITK as sitk

from cosam_nn.data.dicom_series import SeriesError, read_series

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
MIN_DISTINCT_HU = 100   # CT in HU holds air, fat, soft tissue and bone: hundreds of distinct values
MIN_HU_RANGE = 300


class ImageError(ValueError):
    """A user-facing fault in an input image; the message names the file, folder or case."""


def _nifti_header_fault(path):
    """A sentence on what SimpleITK would read wrong in a NIfTI file, or None: a zero or negative voxel
    spacing in the header (SimpleITK and nibabel silently take 1 mm), non-finite voxels (SimpleITK
    reads NaN as 0), or data that ends early (a truncated download reads as a zero-padded image)."""
    import gzip

    import nibabel

    opener = gzip.open if path.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            header = nibabel.Nifti1Header.from_fileobj(f, check=False)
        pixdim = [float(v) for v in header["pixdim"][1:4]]
    except Exception:  # not a NIfTI header at all: SimpleITK's reader says so
        return None
    if min(pixdim) <= 0 or not np.all(np.isfinite(pixdim)):
        return f"voxel spacing {tuple(pixdim)} in the header: zero, negative or not a number"
    try:
        data = np.asanyarray(nibabel.load(path).dataobj)
    except Exception as e:  # EOFError, zlib and format errors
        return f"unreadable image data, truncated or corrupt ({type(e).__name__}: {str(e).strip()[:120]})"
    if data.dtype.kind == "f":
        bad = int(np.count_nonzero(~np.isfinite(data)))
        if bad:
            return f"{bad} NaN or infinite voxel(s)"
    return None


def read_image(path):
    """A SimpleITK image from a file or a DICOM series folder, with a clear error."""
    if os.path.isdir(path):
        try:
            return read_series(path)
        except SeriesError as e:
            raise ImageError(str(e)) from None
    if not os.path.isfile(path):
        raise ImageError(f"{path}: no such file or folder")
    if os.path.getsize(path) == 0:
        raise ImageError(f"{path}: file is empty")
    if path.lower().endswith((".nii", ".nii.gz")):
        fault = _nifti_header_fault(path)
        if fault:
            raise ImageError(f"{path}: {fault}")
    try:
        image = sitk.ReadImage(path)
    except RuntimeError as e:
        raise ImageError(f"{path}: unreadable image ({str(e).strip().splitlines()[-1]})") from None
    if min(image.GetSpacing()) <= 0:
        raise ImageError(f"{path}: voxel spacing {image.GetSpacing()} is zero or negative")
    return image


def non_hu_reason(rounded):
    """Why an image (rounded to whole values) cannot be CT in Hounsfield units, or None."""
    lo, hi = int(rounded.min()), int(rounded.max())
    distinct = int(np.count_nonzero(np.bincount((rounded.ravel().astype(np.int64) - lo))))
    if distinct < MIN_DISTINCT_HU or hi - lo < MIN_HU_RANGE:
        return (f"values {lo}..{hi} with {distinct} distinct whole numbers cannot be CT in Hounsfield units "
                f"(normalised or not CT?)")
    return None


def check_ct(name, image, warn, allow_non_hu=False):
    """A 3D one-channel image as int16 HU with its geometry; `name` (a case) heads every message."""
    if image.GetDimension() != 3:
        raise ImageError(f"{name}: image must be a 3D volume")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ImageError(f"{name}: image must have one channel (CT)")
    if min(image.GetSize()) == 0:
        raise ImageError(f"{name}: image is empty")
    voxels = sitk.GetArrayViewFromImage(image)
    bad = int(np.count_nonzero(~np.isfinite(voxels))) if voxels.dtype.kind == "f" else 0
    if bad:
        raise ImageError(f"{name}: image has {bad} NaN or infinite voxel(s)")
    if voxels.min() < -32768 or voxels.max() > 32767:
        raise ImageError(f"{name}: image values {voxels.min()}..{voxels.max()} do not fit int16 HU")
    if voxels.dtype.kind == "f" and not np.array_equal(voxels, np.round(voxels)):
        warn(f"{name}: image values are not whole HU; rounded to int16")
    out = sitk.Cast(sitk.Round(image) if voxels.dtype.kind == "f" else image, sitk.sitkInt16)
    reason = non_hu_reason(sitk.GetArrayViewFromImage(out))
    if reason and not allow_non_hu:
        raise ImageError(f"{name}: image {reason}; --allow-non-hu converts it anyway")
    if reason:
        warn(f"{name}: image {reason}; converted as asked (--allow-non-hu)")
    return out
