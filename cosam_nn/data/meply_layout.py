"""The published Meply file layouts (the paper's data description, docs/data.md), read and written in one place.

3D layout (the authors' `prln_dataset.py`)::

    npz/{case}.npz            img (D, H, W) in HU, spacing (z, y, x) in mm
    clean_labels/{case}.npz   label (D, H, W), metastatic nodes > 0
    PRLN/prln_target.csv      case,label_id,volume,z1,y1,x1,z2,y2,x2  (one row per node;
                              volume in voxels, boxes in voxels with exclusive ends)
    PRLN/annotations.json     {"train_normal": [...], "train_both": [...], "test_normal": [...],
                               "test_both": [...]}  ("normal": no metastatic node, "both": with nodes)

Slab layout (the public `examples/` files): one `.npz` per sample with `img` and `label` of shape
(H, W, D) = (512, 512, 15); an older version named the keys `image` and `lbl`.
"""
import csv
import json
import os

import numpy as np

from cosam_nn.data import fileio
from cosam_nn.data.fileio import save_npz, write_text_atomic

NPZ_DIR = "npz"
LABEL_DIR = "clean_labels"
PRLN_DIR = "PRLN"
TARGET_CSV = "prln_target.csv"
ANNOTATIONS_JSON = "annotations.json"
TARGET_COLUMNS = ("case", "label_id", "volume", "z1", "y1", "x1", "z2", "y2", "x2")
DATASET_NAME = "Meply"  # the nnU-Net data set name the converter writes by default


def dataset_folder_name(dataset_id, name=DATASET_NAME):
    """nnU-Net's raw folder name of a data set: Dataset501_Meply."""
    return f"Dataset{int(dataset_id):03d}_{name}"
SPLIT_KEYS = ("train_normal", "train_both", "test_normal", "test_both")
IMAGE_KEYS = ("img", "image")
LABEL_KEYS = ("label", "lbl", "seg", "mask")


class LayoutError(ValueError):
    """A Meply file that is missing, unreadable or not of the published form."""


def load_npz_array(path, keys):
    """Return the first of `keys` stored in the `.npz` at `path`; a clear error otherwise."""
    if not os.path.isfile(path):
        raise LayoutError(f"{path}: file not found")
    if os.path.getsize(path) == 0:
        raise LayoutError(f"{path}: file is empty")
    try:
        return fileio.load_npz_array(path, keys)
    except ValueError as e:
        raise LayoutError(str(e)) from None


# ---- 3D layout ------------------------------------------------------------------------------

def prln_case_paths(root, case):
    return (os.path.join(root, NPZ_DIR, case + ".npz"), os.path.join(root, LABEL_DIR, case + ".npz"))


def write_prln_case(root, case, img, spacing, label):
    """img, label: (D, H, W); spacing: (z, y, x) mm."""
    img_path, label_path = prln_case_paths(root, case)
    save_npz(img_path, img=img, spacing=np.asarray(spacing, dtype=np.float64))
    save_npz(label_path, label=label)


def read_prln_case(root, case):
    """Return img (D, H, W), spacing (z, y, x) and label (D, H, W) of one case."""
    img_path, label_path = prln_case_paths(root, case)
    img = load_npz_array(img_path, IMAGE_KEYS)
    spacing = np.asarray(load_npz_array(img_path, ("spacing",)), dtype=np.float64).ravel()
    if spacing.shape != (3,) or not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise LayoutError(f"{img_path}: 'spacing' must be three positive numbers (z, y, x), got {spacing}")
    label = load_npz_array(label_path, LABEL_KEYS)
    return img, spacing, label


def prln_cases(root):
    folder = os.path.join(root, NPZ_DIR)
    return sorted(f[:-4] for f in os.listdir(folder) if f.endswith(".npz"))


def write_prln_index(root, target_rows, splits):
    """target_rows: dicts with TARGET_COLUMNS; splits: dict with SPLIT_KEYS."""
    folder = os.path.join(root, PRLN_DIR)
    os.makedirs(folder, exist_ok=True)
    lines = [",".join(TARGET_COLUMNS)]
    lines += [",".join(str(row[c]) for c in TARGET_COLUMNS) for row in target_rows]
    write_text_atomic(os.path.join(folder, TARGET_CSV), "\n".join(lines) + "\n")
    write_text_atomic(os.path.join(folder, ANNOTATIONS_JSON),
                      json.dumps({k: list(splits.get(k, [])) for k in SPLIT_KEYS}, indent=2) + "\n")


def read_prln_targets(root):
    """Rows of PRLN/prln_target.csv as dicts (header optional, as in the authors' files)."""
    path = os.path.join(root, PRLN_DIR, TARGET_CSV)
    rows = []
    with open(path, newline="") as f:
        for values in csv.reader(f):
            values = [v.strip() for v in values]
            if not values or values[0] == "case":
                continue
            if len(values) < len(TARGET_COLUMNS):
                raise LayoutError(f"{path}: row {values} has fewer than {len(TARGET_COLUMNS)} columns")
            row = dict(zip(TARGET_COLUMNS, values))
            for c in TARGET_COLUMNS[1:]:
                row[c] = int(float(row[c]))
            rows.append(row)
    return rows


def check_case_lists(data, keys, path):
    """LayoutError naming `path` unless each of `keys` that the JSON object `data` holds is a list of case names."""
    for key in keys:
        value = data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise LayoutError(f"{path}: '{key}' must be a list of case names, got {type(value).__name__}")


def read_prln_splits(root):
    """{'train': [...], 'test': [...]} from PRLN/annotations.json, or None when it is absent."""
    path = os.path.join(root, PRLN_DIR, ANNOTATIONS_JSON)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise LayoutError(f"{path}: unreadable ({e})") from None
    if not isinstance(data, dict) or not any(k in data for k in SPLIT_KEYS):
        raise LayoutError(f"{path}: expected the keys {list(SPLIT_KEYS)}")
    check_case_lists(data, SPLIT_KEYS, path)
    return {"train": list(data.get("train_normal", [])) + list(data.get("train_both", [])),
            "test": list(data.get("test_normal", [])) + list(data.get("test_both", []))}


# ---- slab layout ----------------------------------------------------------------------------

def write_slab(path, img, label):
    """img, label: (D, H, W); stored as the public examples are, (H, W, D)."""
    save_npz(path, img=np.transpose(img, (1, 2, 0)), label=np.transpose(label, (1, 2, 0)))


def read_slab(path):
    """Return img and label of a slab file as (D, H, W)."""
    img = load_npz_array(path, IMAGE_KEYS)
    label = load_npz_array(path, LABEL_KEYS)
    for name, a in (("image", img), ("label", label)):
        if a.ndim != 3:
            raise LayoutError(f"{path}: {name} must be 3D (H, W, D), got shape {a.shape}")
        if a.shape[2] >= min(a.shape[:2]):  # a (D, H, W) array would become H slices of D x H
            raise LayoutError(f"{path}: {name} of shape {a.shape} is not (H, W, D) with the slices last and "
                              f"fewest (the published slabs are 512 x 512 x 15)")
    return np.transpose(img, (2, 0, 1)), np.transpose(label, (2, 0, 1))
