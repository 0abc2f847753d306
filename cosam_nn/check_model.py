"""`cosam_check_model`: check a trained model folder (or an exported model zip) before predicting with it.

    cosam_check_model MODEL [MODEL ...]

nnU-Net loads `checkpoint_final.pth` with pickle (`weights_only=False`), so a model from someone
else can run code on your machine when `nnUNetv2_predict` opens it. This command opens every
checkpoint with `torch.load(weights_only=True)`, allowing only tensors, plain Python values and the
NumPy scalars nnU-Net stores in its training log; a checkpoint that needs anything else, and any file
of a kind a model folder does not hold (Python code, pickles, shared libraries), is reported, and the
exit code is 1. Exit 0 means the checkpoints hold data only.
"""
import argparse
import io
import os
import sys
import zipfile

import numpy as np
import torch

CHECKPOINT_SUFFIX = ".pth"
SUSPICIOUS_SUFFIXES = (".py", ".pyc", ".so", ".dll", ".dylib", ".sh", ".exe")  # nnU-Net never loads them; a model has no need


def _numpy_safe_globals():
    """What nnU-Net's checkpoints hold beyond tensors: NumPy scalars and dtypes in the training log."""
    core = getattr(np, "_core", None) or np.core
    found = [core.multiarray.scalar, np.dtype]
    found += [getattr(np.dtypes, name) for name in dir(getattr(np, "dtypes", object())) if name.endswith("DType")]
    return found


def check_checkpoint(name, source):
    """None if `source` (a path or file object) loads with weights_only=True and the allow-list, else why not."""
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            torch.load(source, map_location="cpu", weights_only=True)
    except Exception as e:  # the unpickler's refusals come as several exception types
        first = str(e).strip().splitlines()
        detail = next((line for line in first if "GLOBAL" in line or "Unsupported" in line), first[-1] if first else "")
        return f"{name}: not loadable as data only ({detail.strip()[:300]})"
    return None


def _suspicious(name):
    lower = name.lower()
    if lower.endswith(SUSPICIOUS_SUFFIXES):
        return f"{name}: a model folder holds no {os.path.splitext(lower)[1]} file"
    return None


def check_folder(folder):
    """(number of checkpoints, [problems]) for a model folder."""
    problems, checkpoints = [], 0
    for root, _, files in os.walk(folder):
        for f in sorted(files):
            path = os.path.join(root, f)
            name = os.path.relpath(path, folder)
            if f.endswith(CHECKPOINT_SUFFIX):
                checkpoints += 1
                problems += [p for p in [check_checkpoint(name, path)] if p]
            else:
                problems += [p for p in [_suspicious(name)] if p]
    return checkpoints, problems


def check_zip(path):
    problems, checkpoints = [], 0
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        return 0, [f"{path}: not a readable zip ({e})"]
    with archive:
        for member in archive.namelist():
            if member.endswith(CHECKPOINT_SUFFIX):
                checkpoints += 1
                problems += [p for p in [check_checkpoint(member, io.BytesIO(archive.read(member)))] if p]
            elif not member.endswith("/"):
                problems += [p for p in [_suspicious(member)] if p]
    return checkpoints, problems


def main(argv=None):
    p = argparse.ArgumentParser(prog="cosam_check_model", description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+", help="nnU-Net model folders (e.g. $nnUNet_results/DatasetXXX/TRAINER__PLANS__CONF) "
                                             "or exported model zips")
    a = p.parse_args(argv)
    failed = False
    for model in a.models:
        if os.path.isdir(model):
            checkpoints, problems = check_folder(model)
        elif os.path.isfile(model):
            checkpoints, problems = check_zip(model)
        else:
            print(f"cosam_check_model: error: {model}: not found", file=sys.stderr)
            failed = True
            continue
        if checkpoints == 0:
            problems.append(f"{model}: no {CHECKPOINT_SUFFIX} checkpoint found")
        for problem in problems:
            print(f"UNSAFE {problem}")
        if problems:
            failed = True
        else:
            print(f"ok {model}: {checkpoints} checkpoint(s) hold data only")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
