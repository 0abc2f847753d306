"""The plateau budget: schedules of doubling length, each trained from scratch with nnU-Net's poly
decay over the whole schedule, until doubling no longer gains; its rows for bench/results/current.json
and its picture."""
import json
import os
import statistics
import time

from cosam_nn.benchmark.tables import METRIC_NAMES
from cosam_nn.benchmark.workfolder import parse_row
from cosam_nn.data.fileio import write_text_atomic
from cosam_nn.evaluation.bootstrap import compare

PLATEAU_METRICS = ("dice", "froc")
PLATEAU_FLOOR = 0.1  # a model below this Dice or FROC score on the test set has not started: no plateau yet
CURRENT_KEYS = {"dice": "dice", "froc": "froc", "ap01": "ap10", "sens_lt5": "sens_small"}


def gained(before, after):
    """Each plateau metric's change from one schedule's test-set summary to the doubled one's."""
    return {m: (after[m] or 0.0) - (before[m] or 0.0) for m in PLATEAU_METRICS}


def is_plateau(before, after, gain):
    """Doubling the schedule gained less than `gain` on every plateau metric, and the doubled model
    segments and detects (a model that has not started learning gains nothing either)."""
    started = all((after[m] or 0.0) >= PLATEAU_FLOOR for m in PLATEAU_METRICS)
    return started and all(g < gain for g in gained(before, after).values())


def plateau_search(bench, row, seed, gain, doublings):
    """Schedules of E0, 2 E0, 4 E0, ... epochs (the benchmark's E0, seed `seed`) until doubling gains
    less than `gain` on both Dice and FROC score of the test set. Returns (the plateau's epochs, whether
    a plateau was found within `doublings`, the runs in order); without one, the longest schedule."""
    runs = [bench.schedule(row, bench.cfg["epochs"], seed)]
    for _ in range(doublings):
        runs.append(bench.schedule(row, runs[-1]["epochs"] * 2, seed))
        before, after = (r["points"][-1]["summary"] for r in runs[-2:])
        if is_plateau(before, after, gain):
            print(f"  {row}: plateau at {runs[-2]['epochs']} epochs (doubling gained "
                  + ", ".join(f"{m} {g:+.3f}" for m, g in gained(before, after).items()) + ")", flush=True)
            return runs[-2]["epochs"], True, runs
    print(f"  {row}: no plateau within {doublings} doublings; reported at {runs[-1]['epochs']} epochs", flush=True)
    return runs[-1]["epochs"], False, runs


def _triple(stat):
    return [stat["value"], *stat["interval"]]


def plateau_rows(data, stats, runs_by_row, found, baseline, minutes_of=None):
    """The rows of bench/results/current.json: each row's metrics [value, low, high] at its budget and,
    for rows that are not nnU-Net's own trainer, the difference to the baseline paired over cases and seeds."""
    base_trainer, _, base_plans = parse_row(baseline)
    rows = []
    for row, runs in runs_by_row.items():
        trainer, configuration, plans = parse_row(row)
        s = stats["rows"][row]
        entry = {"data": data, "trainer": trainer, "plans": plans, "configuration": configuration,
                 "iterations": runs[0]["epochs"] * runs[0]["iters"], "seeds": [r["seed"] for r in runs],
                 "plateau": found.get(row, False),
                 "train_minutes": round(statistics.mean(sum(r["epoch_seconds"]) for r in runs) / 60, 1),
                 **{key: _triple(s[m]) for key, m in CURRENT_KEYS.items()}}
        if row not in found:
            entry["budget"] = f"the training minutes of {minutes_of} at its plateau"
        if "difference" in s and not trainer.startswith("nnUNetTrainer"):
            entry["vs"] = {"row": {"trainer": base_trainer, "plans": base_plans},
                           **{key: _triple(s["difference"][m]) for key, m in CURRENT_KEYS.items()}}
        rows.append(entry)
    return rows


def merge_current(path, data, rows, commit):
    """Replace `data`'s rows of a current.json (the other data set's rows stay)."""
    current = {"rows": []}
    if os.path.isfile(path):
        with open(path) as f:
            current = json.load(f)
    kept = [r for r in current["rows"] if r["data"] != data]
    current.update(date=time.strftime("%Y-%m-%d"), commit=commit, rows=kept + rows)
    write_text_atomic(path, json.dumps(current, indent=1) + "\n")


def plot_plateau(work, searches, runs_by_row, draws):
    """plateau.png: test-set Dice and FROC score at the end of each schedule of the plateau searches
    (iterations on a log axis, bars the 95% interval over cases), the other seeds at the plateau, and
    the plateau called (a ring)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, metric in zip(axes, PLATEAU_METRICS):
        for i, (row, (epochs, found, runs)) in enumerate(searches.items()):
            colour = f"C{i}"
            pts = [(r["epochs"] * r["iters"], compare({row: [r["points"][-1]["cases"]]}, draws=draws)["rows"][row][metric])
                   for r in runs]
            x = [p[0] for p in pts]
            y = [p[1]["value"] or 0.0 for p in pts]
            err = [[v - (p[1]["interval"][0] or v) for v, p in zip(y, pts)], [(p[1]["interval"][1] or v) - v for v, p in zip(y, pts)]]
            ax.errorbar(x, y, yerr=err, marker="o", capsize=3, color=colour, label=f"{row} (seed {runs[0]['seed']})")
            at = [r for r in runs_by_row[row]]
            ax.scatter([r["epochs"] * r["iters"] for r in at], [r["points"][-1]["summary"][metric] or 0.0 for r in at],
                       marker="x", color=colour)
            plateau_y = next(v for xx, v in zip(x, y) if xx == epochs * runs[0]["iters"])
            ax.scatter([epochs * runs[0]["iters"]], [plateau_y], s=250, facecolors="none", edgecolors=colour,
                       linewidths=2 if found else 1, linestyle="-" if found else "--")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("training iterations of the schedule (poly decay over each)")
        ax.set_ylabel(METRIC_NAMES[metric] + " on the test set")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    axes[1].set_title("ring: plateau called (dashed: none within the doublings); x: other seeds", fontsize=8)
    png = os.path.join(work, "plateau.png")
    fig.savefig(png + ".tmp.png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    os.replace(png + ".tmp.png", png)
    return png
