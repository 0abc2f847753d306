"""`cosam_postprocess`: drop predicted components too small to be a node, from an nnU-Net prediction folder.

    cosam_postprocess -i PRED -o OUT [--min-volume 5]

CoSAM segments each box it keeps; boxes of a few pixels on one or two slices leave specks that no
node is made of (a node of 3 mm short axis holds about 14 mm3). Each case's 26-connected components
under `--min-volume` mm3 (in the image's own spacing) are set to background; everything else of the folder
(probability .npz files, nnU-Net's json files) is copied unchanged, so OUT is a prediction folder
like PRED for cosam_evaluate, cosam_report and cosam_export_dicom. The cases are written into a
temporary folder beside OUT and moved in when all are done: a failure leaves OUT as it was.
"""
import argparse
import os
import shutil
import sys
import tempfile

import numpy as np
import SimpleITK as sitk

from cosam_nn.cli_types import non_negative
from cosam_nn.node_geometry import label_nodes

SEGMENTATION_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".mha")
DEFAULT_MIN_MM3 = 5.0


def drop_small_components(segmentation, spacing, min_mm3):
    """(segmentation with components under min_mm3 set to 0, number dropped); spacing in mm."""
    instances, n = label_nodes(segmentation)
    if n == 0:
        return segmentation, 0
    voxels = np.bincount(instances.ravel(), minlength=n + 1)
    small = np.nonzero(voxels * float(np.prod(spacing)) < min_mm3)[0]
    small = small[small > 0]
    out = segmentation.copy()
    out[np.isin(instances, small)] = 0
    return out, len(small)


def postprocess_folder(pred, out, min_mm3=DEFAULT_MIN_MM3, log=print, overwrite=False):
    """Write PRED's segmentations without their small components into OUT; returns {case file: dropped}."""
    if not os.path.isdir(pred):
        raise ValueError(f"{pred}: prediction folder not found")
    if os.path.realpath(pred) == os.path.realpath(out):
        raise ValueError(f"{out}: the output folder must differ from the prediction folder (it is the same "
                         f"folder{', through a link' if os.path.abspath(pred) != os.path.abspath(out) else ''})")
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"{out}: exists and is not a folder")
    if os.path.isdir(out) and os.listdir(out) and not overwrite:
        raise ValueError(f"{out}: exists and is not empty (use --overwrite to replace its cases)")
    files = sorted(f for f in os.listdir(pred) if os.path.isfile(os.path.join(pred, f)))
    segmentations = [f for f in files if f.endswith(SEGMENTATION_ENDINGS)]
    if not segmentations:
        raise ValueError(f"{pred}: no segmentations ({', '.join(SEGMENTATION_ENDINGS)}) found")
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(os.path.abspath(out))}.", dir=parent)
    try:
        dropped = {}
        for i, f in enumerate(segmentations, start=1):
            dropped[f] = _postprocess_file(os.path.join(pred, f), os.path.join(tmp, f), min_mm3)
            log(f"[{i}/{len(segmentations)}] {f}: {dropped[f]} component(s) under {min_mm3:g} mm3 dropped")
        for f in set(files) - set(segmentations):
            shutil.copyfile(os.path.join(pred, f), os.path.join(tmp, f))
        os.makedirs(out, exist_ok=True)  # every case done: move them in (a failure above leaves OUT untouched)
        for f in files:
            os.replace(os.path.join(tmp, f), os.path.join(out, f))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dropped


def _postprocess_file(src, dst, min_mm3):
    try:
        image = sitk.ReadImage(src)
    except RuntimeError as e:
        raise ValueError(f"{src}: unreadable ({str(e).strip().splitlines()[-1]})") from None
    kept, dropped = drop_small_components(sitk.GetArrayFromImage(image), image.GetSpacing(), min_mm3)
    result = sitk.GetImageFromArray(kept)
    result.CopyInformation(image)
    sitk.WriteImage(result, dst, True)
    return dropped


def main(argv=None):
    p = argparse.ArgumentParser(prog="cosam_postprocess", description=__doc__.splitlines()[0])
    p.add_argument("-i", required=True, dest="pred", help="nnU-Net prediction folder")
    p.add_argument("-o", required=True, dest="out", help="output folder (created; not the input folder)")
    p.add_argument("--min-volume", type=non_negative, default=DEFAULT_MIN_MM3, dest="min_mm3",
                   help=f"smallest component kept, in mm3 (default {DEFAULT_MIN_MM3:g})")
    p.add_argument("--overwrite", action="store_true", help="write into an output folder that holds files")
    a = p.parse_args(argv)
    try:
        dropped = postprocess_folder(a.pred, a.out, a.min_mm3, overwrite=a.overwrite)
    except (ValueError, OSError) as e:
        print(f"cosam_postprocess: error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {len(dropped)} case(s) to {a.out}; {sum(dropped.values())} component(s) dropped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
