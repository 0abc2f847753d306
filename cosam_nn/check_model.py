"""`cosam_check_model`: check a trained model folder (or an exported model zip) before predicting with it.

    cosam_check_model MODEL [MODEL ...]

A model folder is code as much as data. nnU-Net loads its checkpoints with pickle
(`weights_only=False`), and it imports the network class and the layer classes that `plans.json`
names (`network_class_name`, the `_kw_requires_import` entries of `arch_kwargs`) by their dotted
names, whatever module they are in. So a model from someone else can run code on your machine when
`nnUNetv2_predict` opens it. This command:
- opens every file that torch or pickle would read, whatever its name or extension (`.pth`, `.PT`,
  `checkpoint_*`, any file that starts like a pickle or a torch archive) with
  `torch.load(weights_only=True)`, allowing only tensors, plain Python values and the NumPy scalars
  nnU-Net stores in its training log;
- checks that every class `plans.json` makes nnU-Net import comes from dynamic_network_architectures,
  torch.nn, nnunetv2 or cosam_nn, that the trainer a checkpoint names is a plain class name, and that
  `dataset.json` names no reader class outside nnU-Net;
- flags files a model folder never holds (Python code, shared libraries, scripts).
Each problem is one line starting UNSAFE and the exit code is 1; exit 0 means nothing above was found.
It does not prove a model is good, that its weights are what their author trained, or that the
packages it names are themselves safe: install nnU-Net and this project from sources you trust.
"""
import argparse
import io
import json
import os
import sys
import zipfile

import numpy as np
import torch

PICKLE_SUFFIXES = (".pth", ".pt", ".ckpt", ".pkl", ".pickle", ".bin", ".model", ".tar")
SUSPICIOUS_SUFFIXES = (".py", ".pyc", ".pyo", ".so", ".dll", ".dylib", ".sh", ".bat", ".exe", ".pyd")
ALLOWED_MODULES = ("dynamic_network_architectures.", "torch.nn.", "nnunetv2.", "cosam_nn.")


def safe_globals():
    """What nnU-Net's files hold beyond tensors: NumPy scalars, dtypes and arrays (training log,
    case properties)."""
    core = getattr(np, "_core", None) or np.core
    found = [core.multiarray.scalar, core.multiarray._reconstruct, np.ndarray, np.dtype]
    found += [getattr(np.dtypes, name) for name in dir(getattr(np, "dtypes", object())) if name.endswith("DType")]
    return found


def looks_unpicklable(name, head):
    """Whether torch or pickle would read this file: by its extension in any case, a checkpoint name,
    or its first bytes (a pickle's protocol mark, or a zip archive, torch's format)."""
    lower = os.path.basename(name).lower()
    return (lower.endswith(PICKLE_SUFFIXES) or lower.startswith("checkpoint")
            or head[:1] == b"\x80" or head[:2] == b"PK")


def check_checkpoint(name, source):
    """None if `source` (a path or file object) loads with weights_only=True and the allow-list, else why
    not; for a torch checkpoint also the trainer it names."""
    try:
        with torch.serialization.safe_globals(safe_globals()):
            data = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as e:  # the unpickler's refusals come as several exception types
        first = str(e).strip().splitlines()
        detail = next((line for line in first if "GLOBAL" in line or "Unsupported" in line), first[-1] if first else "")
        return f"{name}: not loadable as data only ({detail.strip()[:300]})"
    trainer = data.get("trainer_name") if isinstance(data, dict) else None
    if trainer is not None and not (isinstance(trainer, str) and trainer.isidentifier()):
        return f"{name}: trainer_name {str(trainer)[:80]!r} is not a class name"
    return None


def _imported_names(plans):
    """(where, dotted name) of every class nnU-Net imports by name from plans.json."""
    for conf_name, conf in (plans.get("configurations") or {}).items():
        arch = conf.get("architecture") if isinstance(conf, dict) else None
        if not isinstance(arch, dict):
            continue
        if "network_class_name" in arch:
            yield f"configurations.{conf_name}.architecture.network_class_name", arch["network_class_name"]
        kwargs = arch.get("arch_kwargs") or {}
        for key in arch.get("_kw_requires_import") or ():
            value = kwargs.get(key) if isinstance(kwargs, dict) else None
            if value is not None:
                yield f"configurations.{conf_name}.architecture.arch_kwargs.{key}", value


def check_plans(name, text):
    """Problems of a plans.json: a class outside the allowed packages, or unreadable JSON."""
    try:
        plans = json.loads(text)
    except ValueError as e:
        return [f"{name}: unreadable JSON ({e})"]
    if not isinstance(plans, dict):
        return [f"{name}: not a JSON object"]
    return [f"{name}: {where} = {value!r} is imported by nnU-Net and lies outside {', '.join(ALLOWED_MODULES)}"
            for where, value in _imported_names(plans)
            if not (isinstance(value, str) and value.startswith(ALLOWED_MODULES))]


def check_dataset_json(name, text):
    try:
        dataset = json.loads(text)
    except ValueError as e:
        return [f"{name}: unreadable JSON ({e})"]
    reader = dataset.get("overwrite_image_reader_writer") if isinstance(dataset, dict) else None
    if reader is not None and not (isinstance(reader, str) and reader.isidentifier()):
        return [f"{name}: overwrite_image_reader_writer {str(reader)[:80]!r} is not a class name of nnU-Net"]
    return []


def check_member(name, read_head, read_all, open_source):
    """The problems of one file of a model, from its name and contents."""
    lower = os.path.basename(name).lower()
    if lower.endswith(SUSPICIOUS_SUFFIXES):
        return [f"{name}: a model folder holds no {os.path.splitext(lower)[1]} file"]
    if lower == "plans.json":
        return check_plans(name, read_all())
    if lower == "dataset.json":
        return check_dataset_json(name, read_all())
    if lower.endswith(".npz"):  # NumPy archives (validation probabilities): arrays unless they hold objects
        return check_npz(name, open_source())
    if looks_unpicklable(name, read_head()):
        problem = check_checkpoint(name, open_source())
        return [problem] if problem else []
    return []


def check_npz(name, source):
    try:
        with np.load(source, allow_pickle=False) as npz:
            for key in npz.files:
                npz[key]
    except ValueError as e:
        if "pickle" in str(e):
            return [f"{name}: a NumPy archive holding pickled objects"]
        return [f"{name}: unreadable NumPy archive ({e})"]
    except Exception as e:  # zip faults come in many types
        return [f"{name}: unreadable NumPy archive ({type(e).__name__})"]
    return []


def _is_checkpoint(name):
    return os.path.basename(name).lower().endswith((".pth", ".pt"))


def check_folder(folder):
    """(number of checkpoints, [problems]) for a model folder."""
    problems, checkpoints = [], 0
    for root, _, files in os.walk(folder):
        for f in sorted(files):
            path = os.path.join(root, f)
            name = os.path.relpath(path, folder)
            checkpoints += _is_checkpoint(name)

            def head(path=path):
                with open(path, "rb") as fh:
                    return fh.read(4)

            def text(path=path):
                with open(path, encoding="utf-8", errors="replace") as fh:
                    return fh.read()
            problems += check_member(name, head, text, lambda path=path: path)
    return checkpoints, problems


def check_zip(path):
    problems, checkpoints = [], 0
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        return 0, [f"{path}: not a readable zip ({e})"]
    with archive:
        for member in archive.namelist():
            if member.endswith("/"):
                continue
            checkpoints += _is_checkpoint(member)
            problems += check_member(member, lambda m=member: archive.read(m)[:4],
                                     lambda m=member: archive.read(m).decode("utf-8", "replace"),
                                     lambda m=member: io.BytesIO(archive.read(m)))
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
            problems.append(f"{model}: no .pth checkpoint found")
        for problem in problems:
            print(f"UNSAFE {problem}")
        if problems:
            failed = True
        else:
            print(f"ok {model}: {checkpoints} checkpoint(s) hold data only; plans name only allowed classes")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
