"""The benchmark's tables and learning curves: each metric with its bootstrap interval, and each row's
difference to the baseline paired on the test cases (and seeds)."""
import csv
import io
import os
import platform

from cosam_nn.benchmark.workfolder import SEED_DATA, git_commit
from cosam_nn.data.fileio import write_text_atomic
from cosam_nn.evaluation.bootstrap import METRICS, compare
from cosam_nn.evaluation.evaluate import fmt_value

METRIC_NAMES = {"dice": "Dice", "froc": "FROC score", "ap10": "AP@0.1", "sens_small": "sens. < 5 mm",
                "froc_small": "FROC < 5 mm"}


def _cell(stat):
    lo, hi = stat["interval"]
    return f"{fmt_value(stat['value'])} [{fmt_value(lo)}, {fmt_value(hi)}]" if lo is not None else fmt_value(stat["value"])


def test_set_counts(run):
    """Nodes, nodes under 5 mm and node-free cases of the test set, from one evaluated run."""
    cases = run["points"][-1]["cases"]
    axes = [a for c in cases.values() for a in c["short_axes_mm"]]
    return {"cases": len(cases), "nodes": len(axes), "small_nodes": sum(a < 5.0 for a in axes),
            "node_free_cases": sum(1 for c in cases.values() if not c["short_axes_mm"])}


def budget_table(title, runs_by_row, baseline, draws, resample_runs=True):
    """Markdown table of one budget: each row's metrics with intervals, and each row's difference to
    the baseline with its paired interval and verdict."""
    stats = compare({row: [r["points"][-1]["cases"] for r in runs] for row, runs in runs_by_row.items()},
                    baseline=baseline, draws=draws, resample_runs=resample_runs)
    head = "| row | " + " | ".join(METRIC_NAMES[m] for m in METRICS) + " | iterations | train s | s/iter | predict s/case | train peak MiB |"
    lines = [f"### {title}", "", head, "|---" * (len(METRICS) + 6) + "|"]
    for row, runs in runs_by_row.items():
        s = stats["rows"][row]
        iterations = sum(r["epochs"] * r["iters"] for r in runs) / len(runs)
        train_s = sum(sum(r["epoch_seconds"]) for r in runs) / len(runs)
        predict = sum(r["points"][-1]["predict_s_per_case"] for r in runs) / len(runs)
        peak = max(r["train_peak_mib"] for r in runs)
        lines.append(f"| {row} | " + " | ".join(_cell(s[m]) for m in METRICS)
                     + f" | {iterations:.0f} | {train_s:.0f} | {train_s / iterations:.2f} | {predict:.2f} | {peak:.0f} |")
        if "difference" in s:
            d = s["difference"]
            lines.append(f"| {row} - {baseline} | " + " | ".join(f"{_cell(d[m])} **{d[m]['verdict']}**" for m in METRICS)
                         + " | | | | | |")
    for row, runs in runs_by_row.items():
        if len(runs) > 1:
            s = stats["rows"][row]
            lines.append(f"\n{row}, each run (seed): " + "; ".join(
                f"{METRIC_NAMES[m]} " + ", ".join(fmt_value(v) for v in s[m]["runs"]) for m in METRICS))
    return "\n".join(lines), stats


def curve_rows(runs, draws):
    """One CSV row per evaluated checkpoint of the runs that trace curves, with intervals."""
    out = []
    for run_id, run in runs.items():
        if "points" not in run:
            continue
        for p in run["points"]:
            s = compare({run["row"]: [p["cases"]]}, draws=draws)["rows"][run["row"]]
            row = {"row": run["row"], "run": run_id, "budget": run["budget"], "seed": run["seed"], "epochs": p["epochs"],
                   "iterations": p["iterations"], "train_seconds": round(p["train_seconds"], 1)}
            for m in METRICS:
                lo, hi = s[m]["interval"]
                row.update({m: s[m]["value"], f"{m}_lo": lo, f"{m}_hi": hi})
            out.append(row)
    return out


def write_curves(work, rows):
    if not rows:
        return []
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(os.path.join(work, "curves.csv"), buf.getvalue())
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, metric in zip(axes, ("dice", "froc")):
        for run_id in dict.fromkeys(r["run"] for r in rows):
            pts = sorted((r for r in rows if r["run"] == run_id), key=lambda r: r["train_seconds"])
            x = [p["train_seconds"] for p in pts]
            y = [p[metric] if p[metric] is not None else float("nan") for p in pts]
            lo = [p[f"{metric}_lo"] if p[f"{metric}_lo"] is not None else float("nan") for p in pts]
            hi = [p[f"{metric}_hi"] if p[f"{metric}_hi"] is not None else float("nan") for p in pts]
            ax.errorbar(x, y, yerr=[[v - a for v, a in zip(y, lo)], [b - v for v, b in zip(y, hi)]], marker="o",
                        capsize=3, label=run_id)  # bars: the 95% bootstrap interval over test cases
        ax.set_xlabel("training seconds (sum of epoch times)")
        ax.set_ylabel(METRIC_NAMES[metric] + " on the test set")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    png = os.path.join(work, "curves.png")
    fig.savefig(png + ".tmp.png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    os.replace(png + ".tmp.png", png)
    return [os.path.join(work, "curves.csv"), png]


def benchmark_header(bench, counts, seeds, real=None, cases_only=False, draws=2000):
    """One paragraph: the machine, commit, dates, data and test set, seeds and what the intervals cover."""
    dates = sorted({r["date"][:10] for r in bench.runs.values()})
    cfg = bench.cfg
    return (f"{bench.settings['mode']} benchmark, {platform.node()} ({os.cpu_count()} CPUs), commit {git_commit()}, "
            f"runs of {', '.join(dates)}: {len(bench.train_cases())} training cases and a test set of "
            f"{counts['cases']} cases ({counts['node_free_cases']} node-free) holding {counts['nodes']} "
            f"{'lesions' if real else 'metastatic nodes'}, {counts['small_nodes']} under 5 mm short axis; "
            + (f"real CT from {real} (subset seed {SEED_DATA}, split by patient); " if real else
               f"synthetic {list(cfg['shape'])}, data seed {SEED_DATA}; ") +
            f"training seeds {', '.join(map(str, seeds))}; prediction without TTA. Values: on the whole test set "
            f"(mean over runs), [95% bootstrap interval over test cases{'' if cases_only else ' and runs'}, {draws} draws]; "
            f"differences paired on the cases.")
