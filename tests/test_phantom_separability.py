"""bench/diagnostics/phantom_separability.py: how far the phantom's small metastatic nodes lie from its
benign ones."""
import os
import subprocess
import sys

import numpy as np
import pytest

from cosam_nn.benchmark import phantom as sep


def test_auc_counts_pairs_and_ties():
    assert sep.auc([3, 4], [1, 2]) == 1.0
    assert sep.auc([1, 2], [3, 4]) == 0.0
    assert sep.auc([2], [2]) == 0.5
    assert sep.auc([2, 5], [1, 3]) == 0.75


def test_node_values_read_each_nodes_short_axis_mean_and_peak():
    img = np.full((6, 20, 20), -100.0, np.float32)
    instances = np.zeros(img.shape, np.uint8)
    instances[1:4, 2:5, 2:5] = 1     # 3 x 3 x 3 voxels at 40 HU
    img[1:4, 2:5, 2:5] = 40.0
    instances[1:3, 10:16, 10:14] = 2  # 6 x 4 px at 10 HU, one pixel at 100 HU
    img[1:3, 10:16, 10:14] = 10.0
    img[1, 12, 12] = 100.0
    (axis1, mean1, peak1), (axis2, mean2, peak2) = sep.node_values(img, instances, (1.25, 0.7, 0.7))
    assert mean1 == pytest.approx(40.0) and peak1 == pytest.approx(40.0)  # the 3 x 3 mean at its centre
    assert 0 < axis1 < axis2
    assert mean2 == pytest.approx(10.0 + 90.0 / 48) and peak2 == pytest.approx(20.0)


def test_quick_run_prints_both_measures():
    script = os.path.join(os.path.dirname(__file__), os.pardir, "bench", "diagnostics", "phantom_separability.py")
    done = subprocess.run([sys.executable, script, "--quick"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "6 test cases" in out and out.count("AUC") == 2 and out.count("benign nodes per case") == 6
