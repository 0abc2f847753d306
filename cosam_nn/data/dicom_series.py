"""One CT series from a DICOM folder, checked before anything is read or written.

A folder of DICOM files is only a volume when its slices form one: one series of CT slices, each
with a position and an orientation, all of one orientation, lying one after another along the slice
normal (no gantry tilt) at an even spacing (no missing, repeated or extra slice), and more than one
of them (a single slice has no spacing to take). SimpleITK (GDCM) sorts and stacks whatever it is
given, so a missing slice or a localiser in the folder becomes a volume whose slices lie at the wrong
place. `check_slices` refuses such series with one line naming the folder and the fault; the
reader (`read_series`, SimpleITK) and the DICOM export (pydicom, which needs the headers themselves)
share it.
"""
import os
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

SPACING_TOLERANCE = 0.02     # relative: a gap between two slices may differ this much from the median
ORIENTATION_TOLERANCE = 1e-3  # direction cosines
TILT_TOLERANCE = 0.01         # in-plane shift between slices, as a fraction of the slice gap (~0.6 degrees)


class SeriesError(ValueError):
    """A DICOM folder that is not one usable CT series; the message names the folder."""


@dataclass
class Slice:
    """What the checks need of one DICOM file's header (None where the header lacks it)."""
    path: str
    series_uid: str = ""
    modality: str = ""
    image_type: str = ""
    orientation: tuple = None   # ImageOrientationPatient: row then column direction cosines
    position: tuple = None      # ImagePositionPatient, mm
    instance: str = ""
    header: object = None       # the reader's own header object (pydicom's dataset for the export)


def _numbers(text, count):
    try:
        values = tuple(float(v) for v in str(text).replace("\\", " ").split())
    except ValueError:
        return None
    return values if len(values) == count and np.all(np.isfinite(values)) else None


def sitk_headers(folder):
    """A `Slice` per DICOM file of `folder`, read with SimpleITK (no pixel data)."""
    slices = []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            continue
        reader = sitk.ImageFileReader()
        reader.SetFileName(path)
        reader.SetImageIO("GDCMImageIO")
        try:
            reader.ReadImageInformation()
        except RuntimeError:
            continue  # not DICOM (a DICOMDIR, notes, thumbnails): not a slice
        tag = lambda key: reader.GetMetaData(key).strip() if reader.HasMetaDataKey(key) else ""  # noqa: E731
        slices.append(Slice(path, tag("0020|000e"), tag("0008|0060"), tag("0008|0008").upper(),
                            _numbers(tag("0020|0037"), 6), _numbers(tag("0020|0032"), 3), tag("0020|0013")))
    return slices


def _normal(orientation):
    row, col = np.asarray(orientation[:3]), np.asarray(orientation[3:])
    return np.cross(row, col)


def check_slices(folder, slices):
    """The slices of one CT series sorted along the slice normal, and the slice gap in mm; a
    `SeriesError` naming the folder and the first fault otherwise."""
    if not slices:
        raise SeriesError(f"{folder}: no DICOM image files found")
    series = sorted({s.series_uid for s in slices})
    if len(series) > 1:
        counts = ", ".join(f"{uid} ({sum(s.series_uid == uid for s in slices)} files)" for uid in series)
        raise SeriesError(f"{folder}: {len(series)} DICOM series in one folder ({counts}); keep only the CT series")
    modalities = sorted({s.modality or "none" for s in slices})
    if modalities != ["CT"]:
        raise SeriesError(f"{folder}: modality {', '.join(modalities)}, expected CT")
    localisers = [s for s in slices if "LOCALIZER" in s.image_type]
    if localisers:
        raise SeriesError(f"{folder}: {len(localisers)} localiser image(s) (ImageType LOCALIZER) in the series, "
                          f"e.g. {os.path.basename(localisers[0].path)}; remove them")
    for what in ("position", "orientation"):
        missing = [s for s in slices if getattr(s, what) is None]
        if missing:
            tag = "ImagePositionPatient" if what == "position" else "ImageOrientationPatient"
            raise SeriesError(f"{folder}: {len(missing)} slice(s) without a usable {tag}, e.g. "
                              f"{os.path.basename(missing[0].path)}; the slices cannot be placed")
    first = np.asarray(slices[0].orientation)
    turned = [s for s in slices if not np.allclose(s.orientation, first, atol=ORIENTATION_TOLERANCE)]
    if turned:
        raise SeriesError(f"{folder}: {len(turned)} slice(s) of another orientation than the first, e.g. "
                          f"{os.path.basename(turned[0].path)} (a localiser or another reconstruction?)")
    if len(slices) < 2:
        raise SeriesError(f"{folder}: a single slice: no slice spacing to build a volume from")
    normal = _normal(first)
    ordered = sorted(slices, key=lambda s: float(np.dot(normal, s.position)))
    positions = np.array([s.position for s in ordered])
    gaps = np.diff(positions @ normal)
    step = float(np.median(gaps))
    repeated = np.flatnonzero(gaps <= 0.01 * max(step, 1e-6))
    if len(repeated) or step <= 0:
        i = repeated[0] if len(repeated) else 0
        raise SeriesError(f"{folder}: {len(repeated)} slice(s) at a repeated position, e.g. "
                          f"{os.path.basename(ordered[i + 1].path)}; the folder holds more than one acquisition")
    odd = np.flatnonzero(np.abs(gaps - step) > SPACING_TOLERANCE * step)
    if len(odd):
        where = ", ".join(f"{gaps[i]:.2f} mm after {os.path.basename(ordered[i].path)}" for i in odd[:2])
        raise SeriesError(f"{folder}: uneven slice spacing (median {step:.2f} mm; {where}): a missing slice?")
    steps = np.diff(positions, axis=0)
    shift = np.linalg.norm(steps - np.outer(steps @ normal, normal), axis=1)
    if np.max(shift) > TILT_TOLERANCE * step:
        degrees = float(np.degrees(np.arctan2(np.max(shift), step)))
        raise SeriesError(f"{folder}: the slices do not lie along their normal (gantry tilt of about "
                          f"{degrees:.1f} degrees); resample the series to an untilted grid first")
    return ordered, step


def read_series(folder):
    """A checked CT series as a SimpleITK image, its slices stacked in the checked order."""
    if not os.path.isdir(folder):
        raise SeriesError(f"{folder}: not a folder holding a DICOM series")
    ordered, step = check_slices(folder, sitk_headers(folder))
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([s.path for s in ordered])
    try:
        image = reader.Execute()
    except RuntimeError as e:
        raise SeriesError(f"{folder}: unreadable DICOM series ({str(e).strip().splitlines()[-1]})") from None
    if image.GetDimension() != 3 or image.GetSize()[2] != len(ordered):
        raise SeriesError(f"{folder}: the series' slices differ in size or type")
    spacing_z = image.GetSpacing()[2]
    if abs(spacing_z - step) > SPACING_TOLERANCE * step or \
            not np.allclose(image.GetOrigin(), ordered[0].position, atol=0.01 * min(image.GetSpacing())):
        raise SeriesError(f"{folder}: the image read ({spacing_z:.3f} mm slices from {image.GetOrigin()}) does not "
                          f"match the headers ({step:.3f} mm from {ordered[0].position})")
    return image
