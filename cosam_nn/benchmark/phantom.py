"""What the synthetic benchmark's image allows: its test cases drawn again with the benign nodes no
label holds, and per node the values a reader would threshold (bench/diagnostics/phantom_separability.py)."""
import numpy as np
from scipy import ndimage

from cosam_nn.benchmark.workfolder import SEED_DATA
from cosam_nn.data import synthetic
from cosam_nn.evaluation.node_measures import node_diameters


def benchmark_test_cases(cfg, seed=SEED_DATA):
    """(name, image, metastatic instances, benign instances, spacing) of each test case, as compare.py's
    data (`synthetic.case_draws`, as `cosam_make_synthetic` draws them)."""
    spacing = synthetic.DEFAULT_SPACING["prln"]
    for name, in_test, node_free, rng in synthetic.case_draws(cfg["train_cases"] + cfg["test_cases"], seed,
                                                              cfg["test_cases"], cfg["test_node_free"]):
        if in_test:
            img, metastatic, benign = synthetic.make_case(cfg["shape"], spacing, rng, node_free=node_free,
                                                          with_benign=True)
            yield name, img.astype(np.float32), metastatic, benign, spacing


def node_values(img, instances, spacing):
    """Per node of an instance map: (short axis mm, mean HU inside, highest 3 x 3 in-plane mean HU inside)."""
    peak_map = ndimage.uniform_filter(img, (1, 3, 3))
    rows = []
    for i in (int(v) for v in np.unique(instances) if v):
        mask = instances == i
        rows.append((node_diameters(mask, spacing)[1], float(img[mask].mean()), float(peak_map[mask].max())))
    return rows


def auc(positive, negative):
    """Probability that a positive's value exceeds a negative's (ties count half)."""
    p, n = np.asarray(positive)[:, None], np.asarray(negative)[None]
    return float((p > n).mean() + 0.5 * (p == n).mean())
