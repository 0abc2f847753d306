"""Small file helpers: atomic writes, byte-for-byte reproducible `.npz` files, safe file names and
checked probability files."""
import io
import json
import math
import os
import tempfile
import zipfile
from contextlib import contextmanager

import numpy as np
import SimpleITK as sitk

# zip entries carry a timestamp; a fixed one makes the same arrays give the same bytes
_FIXED_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


@contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    folder = os.path.dirname(os.path.abspath(path)) or "."
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a plain open() would honour the umask
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_image_atomic(image, path):
    """A SimpleITK image written compressed to a temporary name ending like `path` (SimpleITK picks
    the format by the ending), then renamed onto `path`."""
    tmp = f"{path}.{os.getpid()}.tmp{_image_ending(path)}"
    try:
        sitk.WriteImage(image, tmp, True)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def _image_ending(path):
    return ".nii.gz" if path.endswith(".nii.gz") else os.path.splitext(path)[1]


def write_text_atomic(path, text):
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)


def finite_json(value):
    """`value` made strict-JSON-ready: NaN and infinities (an undefined metric) become null, NumPy
    numbers and arrays plain Python ones."""
    if isinstance(value, dict):
        return {str(k): finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(v) for v in value]
    if isinstance(value, np.ndarray):
        return finite_json(value.tolist())
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(float(value)) else None
    return value


def json_text(value, indent=2):
    """Strict JSON (no NaN) of `value`, ending with a newline."""
    return json.dumps(finite_json(value), indent=indent, allow_nan=False) + "\n"


def save_npz(path, **arrays):
    """Like `np.savez_compressed`, but reproducible (fixed entry times) and written atomically."""
    with atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for name, array in arrays.items():
                buf = io.BytesIO()
                np.lib.format.write_array(buf, np.asarray(array), allow_pickle=False)
                info = zipfile.ZipInfo(name + ".npy", date_time=_FIXED_ZIP_TIME)
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, buf.getvalue())


def load_npz_array(path, keys):
    """The first of `keys` stored in the `.npz` at `path`; a ValueError naming the file and the problem
    when it is not an .npz archive of arrays, is unreadable, or holds none of the keys."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            for key in keys:
                if key in npz.files:
                    return npz[key]
            found = list(npz.files)
    except Exception as e:  # zip and format errors come in many types
        if "pickle" in str(e):  # numpy's message for a file that is not an .npz archive at all
            raise ValueError(f"{path}: not a NumPy .npz archive of arrays") from None
        raise ValueError(f"{path}: unreadable .npz ({type(e).__name__}: {e})") from None
    wanted = f"no {keys[0]!r} array" if len(keys) == 1 else f"none of the arrays {list(keys)}"
    raise ValueError(f"{path}: {wanted} (it holds {found})")


def safe_name(name, what="name"):
    """`name` if it can be a file name inside an output folder: not empty, no path separator, not
    '.' or '..' or hidden, no control characters; a ValueError naming `what` otherwise."""
    text = str(name)
    if not text or text in (".", "..") or text.startswith(".") or "/" in text or "\\" in text \
            or os.sep in text or any(ord(c) < 32 for c in text) or len(text) > 200:
        raise ValueError(f"{what} {text!r}: not a plain file name (no folders, '..', leading dot or control "
                         f"characters): it must stay inside the output folder")
    return text


def load_foreground_probabilities(path, shape):
    """The node channel of an nnU-Net `--save_probabilities` file, checked: a ValueError naming the
    file and the problem when it is missing, unreadable, without `probabilities`, without a node
    channel, or of another shape than the prediction."""
    if not os.path.isfile(path):
        raise ValueError(f"{path}: probabilities not found (predict with --save_probabilities)")
    probs = load_npz_array(path, ("probabilities",))
    if probs.ndim != len(shape) + 1 or probs.shape[0] < 2:
        raise ValueError(f"{path}: probabilities of shape {probs.shape}: expected (classes >= 2, {', '.join(map(str, shape))})")
    if tuple(probs.shape[1:]) != tuple(shape):
        raise ValueError(f"{path}: probabilities of shape {probs.shape[1:]}, prediction {tuple(shape)}")
    foreground = probs[1]
    if foreground.dtype.kind not in "fiu":
        raise ValueError(f"{path}: probabilities of type {foreground.dtype}, expected numbers")
    bad = int(np.count_nonzero(~np.isfinite(foreground))) if foreground.dtype.kind == "f" else 0
    if bad:
        raise ValueError(f"{path}: {bad} NaN or infinite probabilities")
    if foreground.size and (foreground.min() < -1e-3 or foreground.max() > 1 + 1e-3):
        raise ValueError(f"{path}: probabilities from {float(foreground.min()):g} to {float(foreground.max()):g}, "
                         f"outside 0..1")
    return foreground
