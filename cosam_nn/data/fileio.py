"""Small file helpers: atomic writes and byte-for-byte reproducible `.npz` files."""
import io
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
    return probs[1]
