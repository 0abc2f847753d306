"""bench/diagnostics/small_nodes.py: per small node, its contrast, position and the runs that found it."""
import os
import subprocess
import sys

import numpy as np
import SimpleITK as sitk

from cosam_nn.benchmark.small_nodes import small_nodes

SCRIPT = os.path.join(os.path.dirname(__file__), os.pardir, "bench", "diagnostics", "small_nodes.py")


def _write(array, path):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.7, 0.7, 1.25))
    sitk.WriteImage(image, path)


def test_rows_say_where_each_small_node_lies_how_bright_it_is_and_who_found_it(tmp_path):
    label = np.zeros((12, 40, 40), np.uint8)
    label[0:2, 10:14, 10:14] = 1      # small, on the first slices
    label[5:8, 20:24, 20:24] = 1      # small, inside
    label[5:8, 30:38, 2:12] = 1       # 5.6 x 7 mm in plane: not small
    image = np.full(label.shape, -100, np.int16)
    image[0:2, 10:14, 10:14] = 10
    image[5:8, 20:24, 20:24] = 40
    images, labels, run_a, run_b = (tmp_path / n for n in ("images", "labels", "a", "b"))
    for folder in (images, labels, run_a, run_b):
        folder.mkdir()
    _write(label, str(labels / "c1.nii.gz"))
    _write(image, str(images / "c1_0000.nii.gz"))
    found_inside = np.zeros_like(label)
    found_inside[5:8, 20:24, 20:24] = 1
    _write(found_inside, str(run_a / "c1.nii.gz"))
    _write(label, str(run_b / "c1.nii.gz"))

    rows = small_nodes(str(images / "c1_0000.nii.gz"), str(labels / "c1.nii.gz"),
                                   [str(run_a / "c1.nii.gz"), str(run_b / "c1.nii.gz")], 5.0, 2, 6)
    assert sorted((r[0], r[1], r[2], r[3]) for r in rows) == [(32, 10.0, "top", [False, True]),
                                                            (48, 40.0, "inside", [True, True])]

    done = subprocess.run([sys.executable, SCRIPT, "--images", str(images), "--labels", str(labels), str(run_a),
                           str(run_b)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "2 nodes under 5 mm" in out
    assert "| < 20 | 1 | 1 of 2 | 0.50 |" in out and "| >= 30 | 1 | 2 of 2 | 1.00 |" in out
    assert "| top | 1 | 1 of 2 | 0.50 |" in out and "| inside | 1 | 2 of 2 | 1.00 |" in out
