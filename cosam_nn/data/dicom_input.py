"""`cosam_dicom_input`: a CT series (DICOM folder) as an nnU-Net input file, ready to predict.

    cosam_dicom_input --series DICOM_DIR -o IMAGES_FOLDER [--case NAME] [--allow-non-hu]

Writes IMAGES_FOLDER/NAME_0000.nii.gz (NAME: the series folder's name by default) as int16 HU with
the series' geometry, read and checked as cosam_convert_meply reads a DICOM case (one series per
folder, CT values in Hounsfield units). nnUNetv2_predict then takes IMAGES_FOLDER, and
cosam_export_dicom turns its prediction back into DICOM objects referencing the same series.
"""
import argparse
import os
import sys

import numpy as np
import SimpleITK as sitk

from cosam_nn.dataset_conversion.Dataset501_Meply import check_case
from cosam_nn.dataset_conversion.readers import ConversionError, read_image
from cosam_nn.data.fileio import write_image_atomic


def dicom_to_input(series_dir, images_folder, case=None, allow_non_hu=False, warn=print):
    """Write the nnU-Net input of one series; returns its path."""
    if not os.path.isdir(series_dir):
        raise ConversionError(f"{series_dir}: not a folder holding a DICOM series")
    case = case or os.path.basename(os.path.normpath(series_dir))
    image = read_image(series_dir)
    empty = sitk.GetImageFromArray(np.zeros(sitk.GetArrayViewFromImage(image).shape, np.uint8))
    empty.CopyInformation(image)
    image, _ = check_case(case, image, empty, warn, allow_non_hu)
    os.makedirs(images_folder, exist_ok=True)
    return write_image_atomic(image, os.path.join(images_folder, f"{case}_0000.nii.gz"))


def main(argv=None):
    p = argparse.ArgumentParser(prog="cosam_dicom_input", description=__doc__.splitlines()[0])
    p.add_argument("--series", required=True, help="folder holding one CT series")
    p.add_argument("-o", required=True, dest="out", help="folder of nnU-Net input images (created)")
    p.add_argument("--case", default=None, help="case name (default: the series folder's name)")
    p.add_argument("--allow-non-hu", action="store_true", dest="allow_non_hu",
                   help="convert values that do not look like Hounsfield units, with a warning")
    a = p.parse_args(argv)
    try:
        path = dicom_to_input(a.series, a.out, a.case, a.allow_non_hu,
                              warn=lambda m: print(f"cosam_dicom_input: warning: {m}", file=sys.stderr))
    except ConversionError as e:
        print(f"cosam_dicom_input: error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
