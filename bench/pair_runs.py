"""Before against after: the paired comparison of one row's runs in two benchmark work folders.

    python bench/pair_runs.py BEFORE_WORK AFTER_WORK [-tr CoSAMTrainerSmall] [--after-tr TRAINER]
                              [--budget iterations] [--names before after] [--draws 2000] [--cases-only]
                              [--seeds S ...]

A change to a trainer keeps its name, so compare.py cannot hold the code before and after it in one
work folder. Run compare.py with the same settings and seeds from a checkout of each commit (same
data seed, hence the same test set) into two work folders, then this prints the table of
compare.py for the two (--after-tr: the after side is another row, e.g. a variant that became the
default; or, in one work folder, a variant against the baseline row, --seeds choosing the seeds
both have): each side's metrics with 95% bootstrap intervals over test cases and each side's runs
(--cases-only: over cases alone), and the after - before difference paired on the same case draws,
with its verdict.
"""
import argparse
import json
import os
import sys

from cosam_nn.benchmark.tables import budget_table, test_set_counts


def load_runs(work, row, budget, seeds=None):
    """The finished runs of `row` at `budget` in a work folder (only `seeds` if given), by seed."""
    path = os.path.join(work, "runs.json")
    try:
        with open(path) as f:
            saved = json.load(f)
    except (OSError, ValueError) as e:
        sys.exit(f"pair_runs: cannot read {path}: {e}")
    runs = [r for r in saved["runs"].values() if r.get("row") == row and r.get("budget") == budget
            and (seeds is None or r.get("seed") in seeds)]
    if not runs:
        sys.exit(f"pair_runs: {path} holds no finished '{row}' run of the {budget} budget"
                 + (f" with seeds {seeds}" if seeds is not None else ""))
    return saved["settings"], sorted(runs, key=lambda r: r["seed"])


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("before")
    p.add_argument("after")
    p.add_argument("-tr", default="CoSAMTrainerSmall", dest="row")
    p.add_argument("--after-tr", default=None, dest="after_row", help="the after side's row (default: -tr)")
    p.add_argument("--budget", default="iterations", choices=("iterations", "minutes", "long"))
    p.add_argument("--names", nargs=2, default=("before", "after"))
    p.add_argument("--draws", type=int, default=2000)
    p.add_argument("--cases-only", action="store_true", dest="cases_only",
                   help="intervals over test cases only, not also over each side's runs (seeds)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="only the runs of these seeds (default: all)")
    a = p.parse_args()
    settings_b, before = load_runs(a.before, a.row, a.budget, a.seeds)
    settings_a, after = load_runs(a.after, a.after_row or a.row, a.budget, a.seeds)
    if settings_b != settings_a:
        sys.exit("pair_runs: the two work folders were made with different benchmark settings; "
                 "their test sets differ and cannot be paired")
    cases_b, cases_a = (set(r["points"][-1]["cases"]) for r in (before[0], after[0]))
    if cases_b != cases_a:
        sys.exit("pair_runs: the two work folders hold different test cases")
    counts = test_set_counts(after[0])
    names = [f"{row} ({n})" for row, n in zip((a.row, a.after_row or a.row), a.names)]
    text, _ = budget_table(f"{a.row}, {a.budget} budget: {a.names[1]} against {a.names[0]}",
                           {names[0]: before, names[1]: after}, names[0], a.draws, not a.cases_only)
    print(f"test set: {counts['cases']} cases ({counts['node_free_cases']} node-free), {counts['nodes']} nodes, "
          f"{counts['small_nodes']} under 5 mm; seeds {[r['seed'] for r in before]} and {[r['seed'] for r in after]}\n")
    print(text)


if __name__ == "__main__":
    main()
