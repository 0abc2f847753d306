"""`cosam_dicom_input`: a CT series (DICOM folder) as an nnU-Net input file, ready to predict.

    cosam_dicom_input --series DICOM_DIR -o IMAGES_FOLDER [--case NAME] [--allow-non-hu] [--overwrite]

Writes IMAGES_FOLDER/NAME_0000.nii.gz (NAME: the series folder's name by default) as int16 HU with
the series' geometry. The series is checked before anything is written (`cosam_nn.data.dicom_series`:
one CT series, one orientation, slices along their normal at an even spacing, more than one) and its
values must look like Hounsfield units. nnUNetv2_predict then takes IMAGES_FOLDER, and
cosam_export_dicom turns its prediction back into DICOM objects referencing the same series.
"""
import argparse
import os
import sys

from cosam_nn.data.ct_image import ImageError, check_ct, read_image
from cosam_nn.data.fileio import safe_name, write_image_atomic


def dicom_to_input(series_dir, images_folder, case=None, allow_non_hu=False, warn=print, overwrite=False):
    """Write the nnU-Net input of one series; returns its path."""
    if not os.path.isdir(series_dir):
        raise ImageError(f"{series_dir}: not a folder holding a DICOM series")
    case = safe_name(os.path.basename(os.path.normpath(series_dir)) if case is None else case, "--case")
    target = os.path.join(images_folder, f"{case}_0000.nii.gz")
    if os.path.exists(target) and not overwrite:
        raise ImageError(f"{target} exists (use --overwrite to replace it)")
    image = check_ct(f"series {series_dir}", read_image(series_dir), warn, allow_non_hu)
    try:
        os.makedirs(images_folder, exist_ok=True)
    except OSError as e:
        raise ImageError(f"{images_folder}: cannot create the output folder ({e.strerror})") from None
    return write_image_atomic(image, target)


def main(argv=None):
    p = argparse.ArgumentParser(prog="cosam_dicom_input", description=__doc__.splitlines()[0])
    p.add_argument("--series", required=True, help="folder holding one CT series")
    p.add_argument("-o", required=True, dest="out", help="folder of nnU-Net input images (created)")
    p.add_argument("--case", default=None, help="case name (default: the series folder's name)")
    p.add_argument("--allow-non-hu", action="store_true", dest="allow_non_hu",
                   help="convert values that do not look like Hounsfield units, with a warning")
    p.add_argument("--overwrite", action="store_true", help="replace an existing NAME_0000.nii.gz")
    a = p.parse_args(argv)
    try:
        path = dicom_to_input(a.series, a.out, a.case, a.allow_non_hu,
                              warn=lambda m: print(f"cosam_dicom_input: warning: {m}", file=sys.stderr),
                              overwrite=a.overwrite)
    except (ValueError, OSError) as e:  # ImageError and a --case that is not a file name
        print(f"cosam_dicom_input: error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
