"""Pictures for visual QA: FROC curve, sizes of nodes found and missed, and axial overlays with the
reference (green) and prediction (red) outlined and the predicted nodes' boxes drawn (yellow)."""
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from cosam_nn.evaluation.detection_metrics import FROC_RATES  # noqa: E402
from cosam_nn.node_geometry import label_nodes  # noqa: E402


def _save(fig, path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def froc_plot(fps, sens, path, froc_score):
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.step(np.maximum(fps, 1e-3), sens, where="post", color="tab:blue")
    for r in FROC_RATES:
        ax.axvline(r, color="0.85", lw=0.8, zorder=0)
    ax.set_xscale("log", base=2)
    ax.set_xlim(1 / 16, 16)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("false positives per scan")
    ax.set_ylabel("sensitivity")
    ax.set_title(f"FROC (score {froc_score:.3f})" if np.isfinite(froc_score) else "FROC")
    return _save(fig, path)


def size_histogram(found_mm, missed_mm, path):
    fig, ax = plt.subplots(figsize=(5, 4))
    top = max([10.0] + list(found_mm) + list(missed_mm))
    bins = np.arange(0, top + 2, 1.0)
    ax.hist([found_mm, missed_mm], bins=bins, stacked=True, label=["found", "missed"], color=["tab:green", "tab:red"])
    ax.set_xlabel("short axis of the reference node (mm)")
    ax.set_ylabel("nodes")
    ax.legend()
    return _save(fig, path)


def overlay(image, ref, pred, z, path, title="", window=(-160, 240)):
    """Axial slice z of image (Z, Y, X) in HU, reference and prediction outlined, prediction boxes drawn."""
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.imshow(image[z], cmap="gray", vmin=window[0], vmax=window[1])
    if ref is not None and ref[z].any():
        ax.contour(ref[z], levels=[0.5], colors="lime", linewidths=1.0)
    if pred[z].any():
        ax.contour(pred[z], levels=[0.5], colors="red", linewidths=1.0)
        instances, n = label_nodes(pred[z][None])
        for i in range(1, n + 1):
            rows, cols = np.nonzero(instances[0] == i)
            ax.add_patch(Rectangle((cols.min() - 0.5, rows.min() - 0.5), np.ptp(cols) + 1, np.ptp(rows) + 1,
                                   fill=False, edgecolor="yellow", lw=0.8))
    ax.set_title(title or f"slice {z}")
    ax.axis("off")
    return _save(fig, path)


def busiest_slice(mask):
    """The axial slice with the most voxels of mask (0 if empty)."""
    return int(np.argmax(mask.reshape(mask.shape[0], -1).sum(1)))
