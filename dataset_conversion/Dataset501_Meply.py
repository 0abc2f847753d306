"""Convert Meply (or Meply-like synthetic data) into nnU-Net v2's raw format.

    cosam_convert_meply INPUT -d 501 [-n Meply] [--format auto|prln|slabs|images]
                        [--spacing Z Y X] [--split SPLIT.json] [--overwrite]

writes `$nnUNet_raw/Dataset501_Meply/` with imagesTr/, labelsTr/, imagesTs/, labelsTs/,
dataset.json and split.json. The test split comes from `--split` (a JSON file {"train": [...],
"test": [...]}, such as the split.json of an earlier conversion), else from PRLN/annotations.json,
else from a seeded random split. Images keep their HU as int16 and their spacing, origin and direction;
labels are 0/1 (an instance map is binarised with a warning). Any fault in the input stops the
conversion with one line that names the case, and nothing is left behind: the dataset is written
into a hidden temporary folder and renamed at the end.

Normalisation: the paper clips HU to [-100, 100]. nnU-Net's default CT normalisation clips to the
0.5-99.5 percentiles of the intensities inside the labelled nodes and standardises with their mean
and standard deviation: a window learnt from node tissue, which on Meply-like data lands close to
the paper's fixed window, so the converter keeps nnU-Net's default (channel name "CT").
"""
import argparse
import fcntl
import glob
import json
import os
import shutil
import signal
import sys
import tempfile

import numpy as np
import SimpleITK as sitk
from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

from cosam_nn.cli_types import positive
from cosam_nn.data.ct_image import ImageError, check_ct
from cosam_nn.dataset_conversion.readers import FORMATS, ConversionError, list_cases
from cosam_nn.data.image_geometry import geometry_mismatch
from cosam_nn.data.meply_layout import DATASET_NAME, LayoutError, check_case_lists, dataset_folder_name
from cosam_nn.data.splits import split_cases

FILE_ENDING = ".nii.gz"
SPLIT_SEED = 12345
OWNER_FILE = ".cosam_convert_owner"  # the process id of the conversion writing a temporary folder


def check_case(name, image, label, warn, allow_non_hu=False):
    """Validate one case; return (image as int16 HU, label as uint8 0/1) with image's geometry."""
    if label.GetDimension() != 3:
        raise ConversionError(f"case {name}: image and label must be 3D volumes")
    out_image = check_ct(f"case {name}", image, warn, allow_non_hu)
    fault = geometry_mismatch(image, label)
    if fault:
        raise ConversionError(f"case {name}: {fault}")
    values = sitk.GetArrayViewFromImage(label)
    if values.dtype.kind == "f" and (not np.all(np.isfinite(values)) or not np.array_equal(values, np.round(values))):
        raise ConversionError(f"case {name}: label has non-integer values; expected 0/1 or an instance map")
    if values.min() < 0:
        raise ConversionError(f"case {name}: label has negative values ({values.min()}); expected 0/1")
    if values.max() > 1:
        warn(f"case {name}: label has values up to {values.max()} (instance map?); binarised to node > 0")
    out_label = sitk.Cast(label > 0, sitk.sitkUInt8)
    out_label.CopyInformation(out_image)
    return out_image, out_label


def _raw_root():
    root = os.environ.get("nnUNet_raw")
    if not root:
        raise ConversionError("nnUNet_raw is not set: export nnUNet_raw=/path/to/nnUNet_raw")
    os.makedirs(root, exist_ok=True)
    return root


def _check_target(root, dataset_id, name, overwrite):
    folder = os.path.join(root, dataset_folder_name(dataset_id, name))
    prefix = f"Dataset{dataset_id:03d}_"
    for where in (root, os.environ.get("nnUNet_preprocessed")):
        if where and os.path.isdir(where):
            others = [d for d in os.listdir(where) if d.startswith(prefix) and d != os.path.basename(folder)]
            if others:
                raise ConversionError(f"{where}: dataset id {dataset_id} is already used by {others[0]}; "
                                      f"nnU-Net finds data sets by id, so pick another id")
    if os.path.exists(folder) and not overwrite:
        raise ConversionError(f"{folder} exists (use --overwrite to replace it)")
    return folder


def _lock(root, dataset_id):
    """An exclusive lock on this dataset id in nnUNet_raw, held until the conversion ends (the system
    drops it if the process dies): a second conversion into the same id is refused, not interleaved."""
    handle = open(os.path.join(root, f".cosam_convert_{dataset_id:03d}.lock"), "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        owner = handle.read().strip() or "another process"
        handle.close()
        raise ConversionError(f"{root}: another conversion into dataset id {dataset_id} is running ({owner}); "
                              f"wait for it to finish") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}")
    handle.flush()
    return handle


def read_split_file(path):
    """{'train': [...], 'test': [...]} from a split JSON file (the split.json a conversion writes)."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ConversionError(f"{path}: unreadable split file ({e})") from None
    if not isinstance(data, dict) or "test" not in data:
        raise ConversionError(f"{path}: a split file is a JSON object with a 'test' list (and a 'train' list)")
    try:
        check_case_lists(data, ("train", "test"), path)
    except LayoutError as e:
        raise ConversionError(str(e)) from None
    return {"train": list(data.get("train", [])), "test": list(data["test"]), "source": path}


def _decide_split(names, split):
    if split is None:
        train, test = split_cases(names, SPLIT_SEED)
        return train, test, f"seeded random split (seed {SPLIT_SEED}, the paper's 214:55 ratio)"
    unknown = sorted(set(split["train"] + split["test"]) - set(names))
    if unknown:
        raise ConversionError(f"case {unknown[0]}: listed in {split.get('source', 'annotations.json')} "
                              f"but has no image")
    both = sorted(set(split["train"]) & set(split["test"]))
    if both:
        raise ConversionError(f"case {both[0]}: listed in both the train and the test split")
    test = [n for n in names if n in split["test"]]
    return [n for n in names if n not in test], test, split.get("source", "PRLN/annotations.json")


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(root, target, log):
    """Temporary folders of conversions that were killed (their process is gone) are removed."""
    for folder in glob.glob(os.path.join(root, f".{os.path.basename(target)}.*")):
        try:
            pid = int(open(os.path.join(folder, OWNER_FILE)).read().strip())
        except (OSError, ValueError):
            pid = None
        if pid is None or not _pid_alive(pid):
            log(f"removing {folder}, left by an interrupted conversion")
            shutil.rmtree(folder, ignore_errors=True)


def _swap_in(tmp, target):
    """Rename tmp onto target; an existing target is renamed aside first and removed only after."""
    old = None
    if os.path.exists(target):
        old = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.old.", dir=os.path.dirname(target))
        os.rmdir(old)
        os.replace(target, old)
    try:
        os.replace(tmp, target)
    except OSError:
        if old:
            os.replace(old, target)
        raise
    if old:
        shutil.rmtree(old, ignore_errors=True)


def convert(input_folder, dataset_id, name=DATASET_NAME, fmt="auto", spacing=(0.625, 0.625, 0.625),
            overwrite=False, log=print, warn=None, allow_non_hu=False, split_file=None):
    """Convert `input_folder` into $nnUNet_raw/DatasetXXX_NAME; returns that folder. split_file: a
    JSON split that overrides the layout's own."""
    warn = warn or (lambda msg: print(f"warning: {msg}", file=sys.stderr))
    root = _raw_root()
    with _lock(root, dataset_id):
        return _convert_locked(root, input_folder, dataset_id, name, fmt, spacing, overwrite, log, warn,
                               allow_non_hu, split_file)


def _convert_locked(root, input_folder, dataset_id, name, fmt, spacing, overwrite, log, warn, allow_non_hu,
                    split_file):
    target = _check_target(root, dataset_id, name, overwrite)
    try:
        fmt, cases, split = list_cases(input_folder, fmt, spacing)
    except LayoutError as e:
        raise ConversionError(str(e)) from None
    names = [n for n, _ in cases]
    if split_file:
        split = read_split_file(split_file)
    train, test, split_source = _decide_split(names, split)
    if not train:
        raise ConversionError(f"{input_folder}: the split ({split_source}) leaves no training case: all "
                              f"{len(test)} case(s) are test cases")
    remove_stale_temporaries(root, target, log)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.", dir=root)
    try:
        with open(os.path.join(tmp, OWNER_FILE), "w") as f:
            f.write(str(os.getpid()))
        for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
            os.makedirs(os.path.join(tmp, sub))
        for i, (case, load) in enumerate(cases, start=1):
            try:
                image, label = load()
            except (OSError, ValueError) as e:
                raise ConversionError(f"case {case}: {e}") from None
            image, label = check_case(case, image, label, warn, allow_non_hu)
            part = "Ts" if case in test else "Tr"
            sitk.WriteImage(image, os.path.join(tmp, f"images{part}", f"{case}_0000{FILE_ENDING}"), True)
            sitk.WriteImage(label, os.path.join(tmp, f"labels{part}", f"{case}{FILE_ENDING}"), True)
            log(f"[{i}/{len(cases)}] {case} -> images{part}")
        generate_dataset_json(tmp, {0: "CT"}, {"background": 0, "lymph_node": 1}, len(train), FILE_ENDING,
                              dataset_name=dataset_folder_name(dataset_id, name),
                              description=f"Metastatic perirectal lymph nodes, converted by cosam_convert_meply "
                                          f"from {os.path.abspath(input_folder)} ({fmt} layout)",
                              reference="Meply / CoSAM", license="see the source data",
                              converted_by="cosam_convert_meply")
        with open(os.path.join(tmp, "split.json"), "w") as f:
            json.dump({"train": train, "test": test, "source": split_source}, f, indent=2)
        os.remove(os.path.join(tmp, OWNER_FILE))
        os.chmod(tmp, 0o755)
        _swap_in(tmp, target)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp)
    log(f"wrote {target}: {len(train)} training and {len(test)} test case(s); split from {split_source}")
    return target


def main(argv=None):
    p = argparse.ArgumentParser(prog="cosam_convert_meply",
                                description="Convert Meply (3D layout, 15-slice slabs, or image/label "
                                            "folders) into $nnUNet_raw/DatasetID_NAME.")
    p.add_argument("input", help="input folder")
    p.add_argument("-d", type=int, required=True, dest="dataset_id", help="nnU-Net dataset id, e.g. 501")
    p.add_argument("-n", default="Meply", dest="name", help="dataset name (default Meply)")
    p.add_argument("--format", choices=("auto",) + FORMATS, default="auto", help="input layout (default auto)")
    p.add_argument("--spacing", type=positive, nargs=3, default=(0.625, 0.625, 0.625), metavar=("Z", "Y", "X"),
                   help="spacing in mm of slab files, which carry none (default 0.625 0.625 0.625)")
    p.add_argument("--split", metavar="SPLIT.json", dest="split_file",
                   help="JSON {\"train\": [...], \"test\": [...]} naming the test cases (overrides the layout's split)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset folder")
    p.add_argument("--allow-non-hu", action="store_true", dest="allow_non_hu",
                   help="convert images whose values cannot be CT in Hounsfield units (refused by default)")
    a = p.parse_args(argv)
    if not 1 <= a.dataset_id <= 999:
        p.error("-d must be between 1 and 999")
    if min(a.spacing) <= 0:
        p.error("--spacing must be positive")
    if not a.name.replace("_", "").replace("-", "").isalnum():
        p.error("-n may hold letters, digits, '_' and '-' only")
    previous = signal.signal(signal.SIGTERM, _terminated)  # so that the temporary folder is removed
    try:
        convert(a.input, a.dataset_id, a.name, a.format, tuple(a.spacing), a.overwrite, allow_non_hu=a.allow_non_hu,
                split_file=a.split_file)
    except ImageError as e:  # ConversionError and the image reader's faults
        print(f"cosam_convert_meply: error: {e}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


def _terminated(signum, frame):
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    sys.exit(main())
