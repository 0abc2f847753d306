"""Seeded train/test splits in the paper's ratio (Meply: 214 training and 55 test scans)."""
import numpy as np

TEST_FRACTION = 55 / 269


def split_cases(names, seed, n_test=None):
    """Return (train, test) lists, each in the order of `names`; at least one of each from 2 cases.
    n_test: the number of test cases (default: the paper's fraction)."""
    if n_test is None:
        n_test = int(round(len(names) * TEST_FRACTION))
    if len(names) >= 2:
        n_test = min(max(n_test, 1), len(names) - 1)
    order = np.random.default_rng(seed).permutation(len(names))
    test = {names[i] for i in order[:n_test]}
    return [n for n in names if n not in test], [n for n in names if n in test]
