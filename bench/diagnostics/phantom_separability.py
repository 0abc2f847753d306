"""How far apart are the phantom's small metastatic nodes and its benign nodes, in the image alone?

    python bench/diagnostics/phantom_separability.py [--quick] [--small-mm 5]

Draws the test cases of compare.py's synthetic benchmark again (same seed, sizes and node-free share;
the generator gives the same bytes) together with the benign nodes no label holds, and measures each
metastatic node under --small-mm short axis and each benign node on the final image (blur and noise
included): the mean HU inside its mask, and the highest 3 x 3 in-plane mean HU inside it (its peak).
Prints, per measure, the AUC of small metastatic against benign nodes, and for a reader who knows
where every node is and keeps those above one value: the benign nodes kept per case at the values
that keep 40, 60 and 80% of the small metastatic nodes. It says what the image allows, not what a
model reaches: the vessels, bowel and the search for the nodes are left out.
"""
import argparse

import numpy as np

from cosam_nn.benchmark.phantom import auc, benchmark_test_cases, node_values
from cosam_nn.benchmark.workfolder import SETTINGS

SHARES = (0.4, 0.6, 0.8)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="compare.py --quick's smaller data")
    p.add_argument("--small-mm", type=float, default=5.0, dest="small_mm")
    a = p.parse_args(argv)
    cfg = SETTINGS["quick" if a.quick else "full"]
    small, benign, cases = [], [], 0
    for _, img, metastatic, benign_instances, spacing in benchmark_test_cases(cfg):
        small += [r for r in node_values(img, metastatic, spacing) if r[0] < a.small_mm]
        benign += node_values(img, benign_instances, spacing)
        cases += 1
    print(f"{cases} test cases: {len(small)} metastatic nodes under {a.small_mm:g} mm, {len(benign)} benign nodes")
    if not small or not benign:
        return 1
    for k, name in ((1, "mean HU inside"), (2, "peak (3 x 3 mean) HU")):
        s, b = [r[k] for r in small], [r[k] for r in benign]
        print(f"\n{name}: small metastatic median {np.median(s):.1f}, benign median {np.median(b):.1f}, "
              f"AUC {auc(s, b):.3f}")
        for share in SHARES:
            value = np.quantile(s, 1 - share)
            print(f"  keeping {share:.0%} of the small metastatic nodes (>= {value:.1f} HU): "
                  f"{sum(v >= value for v in b) / cases:.2f} benign nodes per case")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
