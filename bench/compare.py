"""CoSAM against nnU-Net's own network on a fixed benchmark: equal iterations, equal minutes,
learning curves, each metric with a bootstrap interval over the test cases.

    python bench/compare.py [--quick] [--work bench_work/compare] [-tr ROW ...] [--seed S] [--repeats N]
                            [--minutes M|auto|0] [--long F] [--keep] [--real IMAGES_LABELS_FOLDER]

Data: synthetic cases (fixed seed) -> cosam_convert_meply -> nnUNetv2_plan_and_preprocess, with a
large test split (only predicted, so cheap) of which a fixed share is node-free. With --real FOLDER
(an images/ + labels/ folder of real CT, e.g. crops around lung nodules): a fixed, seeded subset of
its cases is copied into the work folder, split by patient (the case name up to its first "_") so
that no patient is in both training and test, and converted with `cosam_convert_meply --split`.
Budgets, each row trained from scratch for each (seeds S, S+1, ... for --repeats):
- iterations: every row EPOCHS x ITERS iterations;
- minutes: every row M minutes of training (epoch time measured, not wall time of the process): the
  number of epochs is M over the row's epoch time in its equal-iterations runs (median of the epochs
  after the first, which carries start-up costs); with `auto` (default) M is the first
  row's training time at equal iterations, so that row's equal-iteration run is also its
  equal-minute run. Snapshots along these runs give the learning curves (test-set metric against
  training seconds); --long F adds a run of the first row at F times the iterations (curve only).
Every model predicts the test cases (no TTA) and is scored by cosam_evaluate's metrics; intervals are
95% bootstrap intervals over test cases and, with --repeats, over each row's runs (--cases-only: over
cases alone, as tables before 2026-11-29 were), differences to the first row paired on the same case
draws, and a row's verdict ("ahead", "level", "behind") says whether that interval excludes zero.
Each run is saved in runs.json as it ends; --keep reuses the finished runs of the same settings, so
an interrupted benchmark resumes. Writes compare.json, compare.md, curves.csv and curves.png.
--quick: a smoke run of every step on smaller volumes (24 x 64 x 64), about 8 minutes; the default:
about 85 minutes on 2 CPU cores (nnU-Net's 3D network takes most).
"""
import argparse
import csv
import io
import json
import os
import platform
import random
import re
import shutil
import statistics
import subprocess
import sys
import time

from cosam_nn.evaluation.bootstrap import METRICS, case_record, compare
from cosam_nn.demo import Pipeline
from cosam_nn.evaluation.evaluate import evaluate_folders, fmt_value
from cosam_nn.data.fileio import write_text_atomic

BASELINE = "nnUNetTrainerBudget 3d_fullres"
DEFAULT_PLANS = "nnUNetPlans"
DEFAULT_ROWS = (BASELINE, "CoSAMTrainerSmall")
SEED_DATA = 2026
SETTINGS = {  # training cases, test cases, node-free share of the test cases, shape, epochs x iterations
    "quick": dict(train_cases=12, test_cases=6, test_node_free=0.2, shape=(24, 64, 64), epochs=2, iters=10,
                  fractions=(0.5,)),
    "full": dict(train_cases=38, test_cases=60, test_node_free=0.2, shape=(32, 96, 96), epochs=8, iters=15,
                 fractions=(1 / 2,)),
}
REAL_SETTINGS = {  # training and test cases drawn from the real-CT folder, epochs x iterations
    "quick": dict(train_cases=16, test_cases=10, epochs=2, iters=10, fractions=(0.5,)),
    "full": dict(train_cases=160, test_cases=100, epochs=8, iters=40, fractions=()),
}
METRIC_NAMES = {"dice": "Dice", "froc": "FROC score", "ap10": "AP@0.1", "sens_small": "sens. < 5 mm",
                "froc_small": "FROC < 5 mm"}


def patient_of(case):
    return case.split("_", 1)[0]


def real_subset(names, train_cases, test_cases, seed):
    """(train, test) case names: whole patients in a seeded order, test first, each list at least the
    count asked for (a patient's cases stay together)."""
    patients = sorted({patient_of(n) for n in names})
    random.Random(seed).shuffle(patients)
    by_patient = {p: sorted(n for n in names if patient_of(n) == p) for p in patients}
    train, test = [], []
    for p in patients:
        if len(test) < test_cases:
            test += by_patient[p]
        elif len(train) < train_cases:
            train += by_patient[p]
    if len(test) < test_cases or len(train) < train_cases:
        sys.exit(f"compare: the real-CT folder holds {len(names)} cases; {train_cases} + {test_cases} are needed")
    return train, test


def copy_real_cases(source, target, train_cases, test_cases, seed):
    """Copy the chosen cases of an images/ + labels/ folder into `target`; returns the split file."""
    images, labels = os.path.join(source, "images"), os.path.join(source, "labels")
    if not (os.path.isdir(images) and os.path.isdir(labels)):
        sys.exit(f"compare: --real {source}: no images/ and labels/ folders there (real CT crops with masks, "
                 f"the layout cosam_convert_meply --format images reads)")
    files = {f[: -len(".nii.gz")]: f for f in os.listdir(images) if f.endswith(".nii.gz")}
    train, test = real_subset(sorted(files), train_cases, test_cases, seed)
    for sub in ("images", "labels"):
        os.makedirs(os.path.join(target, sub))
    for case in train + test:
        for sub, folder in (("images", images), ("labels", labels)):
            shutil.copy2(os.path.join(folder, files[case]), os.path.join(target, sub, files[case]))
    split = os.path.join(os.path.dirname(target), "real_split.json")
    write_text_atomic(split, json.dumps({"train": train, "test": test}, indent=1))
    return split


def parse_row(row):
    """'TRAINER [CONFIGURATION [PLANS]]' -> (trainer, configuration, plans); CoSAM trainers need
    3d_fullres; PLANS nnUNetCPUPlans is nnU-Net's network at CPU width (cosam_plan_cpu)."""
    parts = row.split()
    if not 1 <= len(parts) <= 3:
        sys.exit(f"compare: row {row!r}: expected 'TRAINER [CONFIGURATION [PLANS]]'")
    return parts[0], parts[1] if len(parts) > 1 else "3d_fullres", parts[2] if len(parts) > 2 else DEFAULT_PLANS


def training_log_text(fold_dir):
    """nnU-Net's training logs of one fold joined in order (a run resumed with --c writes another)."""
    logs = sorted(f for f in os.listdir(fold_dir) if f.startswith("training_log"))
    return "".join(open(os.path.join(fold_dir, f)).read() for f in logs)


def epoch_seconds(model_folder):
    """nnU-Net's 'Epoch time' of each epoch of fold 0 (training iterations and validation), in order.
    A resumed training repeats the epochs after its last checkpoint: the last time logged counts."""
    text = training_log_text(os.path.join(model_folder, "fold_0"))
    times, epoch = {}, None
    for line in text.splitlines():
        started = re.search(r": Epoch (\d+)\s*$", line)
        if started:
            epoch = int(started.group(1))
        ended = re.search(r"Epoch time: ([0-9.]+) s", line)
        if ended and epoch is not None:
            times[epoch] = float(ended.group(1))
    return [times[e] for e in sorted(times)]


def snapshot_epochs(epochs, fractions):
    """The epoch counts at the given fractions of a run (each at least 1, below `epochs`, no repeats)."""
    return sorted({max(1, round(epochs * f)) for f in fractions} - {epochs})


def scored_point(labels_folder, predictions, seconds):
    """One evaluated checkpoint: seconds per case, each test case's record and the summary metrics."""
    summary, results = evaluate_folders(labels_folder, predictions, use_probs=True, log=lambda *_: None)
    return {"predict_s_per_case": seconds / summary["cases"],
            "cases": {case: case_record(r) for case, r in results.items()},
            "summary": {"dice": summary["dice_mean"], "froc": summary["froc_score"], "ap10": summary["ap"]["0.1"],
                        "sens_small": summary["sensitivity_by_short_axis"]["< 5 mm"]["sensitivity"],
                        "froc_small": summary["sensitivity_by_short_axis"]["< 5 mm"]["froc_score"],
                        "pooled_dice": summary["pooled_slice_dice"]}}


def earlier_runs(runs_path, settings):
    """The runs a runs.json holds if it was written with the same settings, else None (no file, or
    other settings)."""
    if not os.path.isfile(runs_path):
        return None
    with open(runs_path) as f:
        saved = json.load(f)
    return saved["runs"] if saved.get("settings") == settings else None


class Bench:
    """The work folder: data, one nnU-Net results folder per run, runs.json."""

    def __init__(self, work, cfg, settings, keep):
        self.pipe = Pipeline(work, log=lambda *_: None)
        self.cfg, self.settings = cfg, settings
        self.runs_path = os.path.join(self.pipe.work, "runs.json")
        kept = earlier_runs(self.runs_path, settings) if keep else None
        self.resume = kept is not None  # the work folder was made with these settings: its trainings may resume
        self.runs = kept or {}

    def preprocessed(self, *names):
        return os.path.join(self.pipe.env["nnUNet_preprocessed"], os.path.basename(self.pipe.raw), *names)

    def prepare(self, configurations, plans=(DEFAULT_PLANS,), real=None):
        """The data, converted and planned (kept when --keep finds a work folder of the same settings);
        nnUNetCPUPlans (cosam_plan_cpu) where a row names them."""
        raw_ready = os.path.isdir(os.path.join(self.pipe.raw, "labelsTs"))
        planned = all(os.path.isdir(self.preprocessed(f"nnUNetPlans_{c}")) for c in configurations)
        if not (self.resume and raw_ready and planned):
            self.runs, self.resume = {}, False  # the work folder starts afresh
            self._make_data(configurations, real)
            self.save()  # the settings, so that an interrupted first training can resume with --keep
        for name in set(plans) - {DEFAULT_PLANS}:
            if not os.path.isfile(self.preprocessed(name + ".json")):
                self.pipe.run(f"plans {name}", ["cosam_plan_cpu", "-d", self.pipe.did])

    def _make_data(self, configurations, real):
        cfg = self.cfg
        if real:
            self.pipe.reset()
            source = os.path.join(self.pipe.work, "real_input")
            split = copy_real_cases(real, source, cfg["train_cases"], cfg["test_cases"], SEED_DATA)
            self.pipe.convert_and_plan(source, configurations, ["--format", "images", "--split", split])
            return
        self.pipe.prepare(cfg["train_cases"] + cfg["test_cases"], cfg["shape"], seed=SEED_DATA,
                          configurations=configurations,
                          synthetic_options=["--test-cases", str(cfg["test_cases"]),
                                             "--test-node-free", str(cfg["test_node_free"])])

    def train_cases(self):
        return [f for f in os.listdir(os.path.join(self.pipe.raw, "labelsTr")) if f.endswith(".nii.gz")]

    def save(self):
        write_text_atomic(self.runs_path, json.dumps({"settings": self.settings, "runs": self.runs}, indent=1))

    def train(self, run_id, row, epochs, seed, snapshots=()):
        """Train one run in its own nnUNet_results folder; returns that model folder. With --keep, a
        training that was interrupted continues from its last checkpoint (nnU-Net's --c)."""
        trainer, configuration, plans = parse_row(row)
        results = os.path.join(self.pipe.work, "results", run_id)
        model = os.path.join(results, os.path.basename(self.pipe.raw), f"{trainer}__{plans}__{configuration}")
        resume = self.resume and any(os.path.isfile(os.path.join(model, "fold_0", f"checkpoint_{c}.pth"))
                                     for c in ("final", "latest"))
        if resume:
            print(f"  {run_id}: resuming the interrupted training", flush=True)
        else:
            shutil.rmtree(results, ignore_errors=True)
        self.pipe.env["nnUNet_results"] = results
        self.pipe.train(trainer, epochs, self.cfg["iters"], val_iters=1, configuration=configuration, seed=seed,
                        snapshots=snapshots, plans=plans, resume=resume)
        return model

    def evaluate(self, run_id, row, checkpoint):
        """Predict the test cases with one checkpoint of a run and score them."""
        trainer, configuration, plans = parse_row(row)
        self.pipe.env["nnUNet_results"] = os.path.join(self.pipe.work, "results", run_id)
        pred = os.path.join(self.pipe.work, "predictions", run_id, checkpoint.replace(".pth", ""))
        shutil.rmtree(pred, ignore_errors=True)
        seconds = self.pipe.predict(trainer, pred, probabilities=True, configuration=configuration, checkpoint=checkpoint,
                                    plans=plans)
        return dict(scored_point(os.path.join(self.pipe.raw, "labelsTs"), pred, seconds),
                    predict_peak_mib=self.pipe.last_peak_mib)

    def run(self, run_id, row, epochs, seed, budget, fractions=()):
        """Train (unless runs.json has it), evaluate the final model and the snapshots at `fractions`."""
        if run_id in self.runs:
            print(f"  {run_id}: kept from an earlier run ({self.runs[run_id]['date']})", flush=True)
            return self.runs[run_id]
        print(f"  {run_id}: {epochs} x {self.cfg['iters']} iterations, seed {seed} ...", flush=True)
        snapshots = snapshot_epochs(epochs, fractions)
        model = self.train(run_id, row, epochs, seed, snapshots)
        train_peak = self.pipe.last_peak_mib
        seconds = epoch_seconds(model)
        if len(seconds) != epochs:
            sys.exit(f"compare: {run_id}: the training log shows {len(seconds)} epochs, expected {epochs}")
        points = []
        for e in snapshots + [epochs]:
            point = self.evaluate(run_id, row, "checkpoint_final.pth" if e == epochs else f"checkpoint_epoch{e}.pth")
            points.append(dict(point, epochs=e, iterations=e * self.cfg["iters"], train_seconds=sum(seconds[:e])))
        run = {"row": row, "budget": budget, "seed": seed, "epochs": epochs, "iters": self.cfg["iters"],
               "epoch_seconds": seconds, "train_peak_mib": train_peak, "points": points,
               "date": time.strftime("%Y-%m-%d %H:%M")}
        self.runs[run_id] = run
        self.save()
        final = points[-1]["summary"]
        print(f"  {run_id}: Dice {fmt_value(final['dice'])}, FROC {fmt_value(final['froc'])}, "
              f"{sum(seconds):.0f} s of training", flush=True)
        return run

    def epoch_seconds_of(self, row):
        """Seconds of one epoch of `row` at this benchmark's iterations per epoch: the median of the
        epochs after the first (which carries start-up costs) of its runs by iterations."""
        seconds = [t for run in self.runs.values() if run.get("row") == row and run.get("budget") in ("iterations", "schedule")
                   for t in run["epoch_seconds"][1:]]
        if not seconds:
            sys.exit(f"compare: no run of {row} by iterations with 2 or more epochs to time an epoch by")
        return statistics.median(seconds)

    def schedule(self, row, epochs, seed):
        """One training of `row` for `epochs` x the benchmark's iterations (nnU-Net's poly decay over
        the whole schedule); the equal-iterations run when `epochs` is the benchmark's own."""
        run_id = f"{row.replace(' ', '_')}_it{epochs}x{self.cfg['iters']}_s{seed}"
        return self.run(run_id, row, epochs, seed, "iterations" if epochs == self.cfg["epochs"] else "schedule")


PLATEAU_METRICS = ("dice", "froc")
PLATEAU_FLOOR = 0.1  # a model below this Dice or FROC score on the test set has not started: no plateau yet


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


def git_commit():
    """The checkout's commit (with '+changes' when the tree differs from it), or 'unknown'."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        commit = subprocess.run(["git", "-C", here, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", here, "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+changes" if dirty else "")


def benchmark_header(bench, a, cfg, mode, counts, seeds):
    dates = sorted({r["date"][:10] for r in bench.runs.values()})
    return (f"{mode} benchmark, {platform.node()} ({os.cpu_count()} CPUs), commit {git_commit()}, runs of {', '.join(dates)}: "
            f"{len(bench.train_cases())} training cases and a test set of {counts['cases']} cases "
            f"({counts['node_free_cases']} node-free) holding {counts['nodes']} {'lesions' if a.real else 'metastatic nodes'}, "
            f"{counts['small_nodes']} under 5 mm short axis; "
            + (f"real CT from {a.real} (subset seed {SEED_DATA}, split by patient); " if a.real else
               f"synthetic {list(cfg['shape'])}, data seed {SEED_DATA}; ") +
            f"training seeds {', '.join(map(str, seeds))}; prediction without TTA. Values: on the whole test set "
            f"(mean over runs), [95% bootstrap interval over test cases{'' if a.cases_only else ' and runs'}, {a.draws} draws]; "
            f"differences paired on the cases.")


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


CURRENT_KEYS = {"dice": "dice", "froc": "froc", "ap01": "ap10", "sens_lt5": "sens_small"}


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


def plateau_budget(a, bench, seeds):
    """--budget plateau: each -tr row searched to its plateau with the first seed, then trained with
    the other seeds at its plateau budget; --minutes-rows trained for the plateau minutes of
    --minutes-of. Returns (markdown, stats, current.json rows)."""
    searches, runs_by_row = {}, {}
    for row in reversed(a.rows):  # the baseline (first row) last: the candidate's search comes first
        print(f"plateau search: {row}", flush=True)
        searches[row] = plateau_search(bench, row, seeds[0], a.plateau_gain, a.doublings)
        runs_by_row[row] = [bench.schedule(row, searches[row][0], s) for s in seeds]
    searches = {row: searches[row] for row in a.rows}
    runs_by_row = {row: runs_by_row[row] for row in a.rows}
    minutes_of = a.minutes_of or a.rows[-1]
    if a.minutes_rows:
        minutes = statistics.mean(sum(r["epoch_seconds"]) for r in runs_by_row[minutes_of]) / 60
        print(f"equal minutes: {minutes:.1f} min of training, {minutes_of}'s at its plateau", flush=True)
        for row in a.minutes_rows:
            bench.schedule(row, bench.cfg["epochs"], seeds[0])  # times an epoch; a learning-curve point
            epochs = max(1, round(minutes * 60 / bench.epoch_seconds_of(row)))
            runs_by_row[row] = [bench.schedule(row, epochs, s) for s in seeds]
    found = {row: s[1] for row, s in searches.items()}
    title = ("At the plateau (" + "; ".join(f"{row}: {s[0] * bench.cfg['iters']} iterations"
                                            + ("" if s[1] else ", no plateau found") for row, s in searches.items())
             + (f"; {', '.join(a.minutes_rows)}: {minutes_of}'s minutes" if a.minutes_rows else "") + ")")
    text, stats = budget_table(title, runs_by_row, a.rows[0], a.draws, not a.cases_only)
    schedules = "\n".join(f"{row}, seed {runs[0]['seed']}, by schedule: " + "; ".join(
        f"{r['epochs'] * r['iters']} it Dice {fmt_value(r['points'][-1]['summary']['dice'])} FROC "
        f"{fmt_value(r['points'][-1]['summary']['froc'])}" for r in runs) for row, (_, _, runs) in searches.items())
    png = plot_plateau(bench.pipe.work, searches, runs_by_row, a.draws)
    rule = (f"Plateau rule: the shortest schedule whose doubling gains less than {a.plateau_gain:g} on both Dice and "
            f"FROC score of the test set (seed {seeds[0]}), the doubled model at {PLATEAU_FLOOR:g} or more on both; "
            f"schedules of {bench.cfg['epochs']} x {bench.cfg['iters']} iterations doubled up to {a.doublings} times.")
    rows = plateau_rows("realct" if a.real else "synthetic", stats, runs_by_row, found, a.rows[0], minutes_of)
    return "\n".join([rule, "", text, "", schedules, "", f"Learning curve by schedule: {png}"]), stats, rows


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="about 8 minutes instead of about 85")
    p.add_argument("--work", default="bench_work/compare")
    p.add_argument("-tr", nargs="+", default=list(DEFAULT_ROWS), dest="rows",
                   help=f"rows as 'TRAINER [CONFIGURATION]', the first is the baseline (default: {' / '.join(DEFAULT_ROWS)})")
    p.add_argument("--seed", type=int, default=0, help="seed of the first training of each row (COSAM_SEED)")
    p.add_argument("--repeats", type=int, default=1, help="trainings of each row per budget, seeds SEED, SEED+1, ...")
    p.add_argument("--minutes", default="auto",
                   help="equal-minutes budget: minutes of training per row, 'auto' (the first row's time at equal "
                        "iterations) or 0 (skip)")
    p.add_argument("--long", type=float, default=0.0, metavar="F",
                   help="also train the first row for F times the iterations (learning curve only)")
    p.add_argument("--draws", type=int, default=2000, help="bootstrap draws (default 2000)")
    p.add_argument("--keep", action="store_true", help="reuse the finished runs of the same settings in --work")
    p.add_argument("--cases-only", action="store_true", dest="cases_only",
                   help="intervals over test cases only, not also over each row's runs (seeds)")
    p.add_argument("--real", metavar="FOLDER",
                   help="benchmark on real CT: an images/ + labels/ folder (cases named PATIENT_...) instead of synthetic data")
    p.add_argument("--budget", choices=("iterations", "plateau"), default="iterations",
                   help="iterations (default): equal iterations and equal minutes; plateau: each row trained to its plateau")
    p.add_argument("--plateau-gain", type=float, default=0.02, dest="plateau_gain",
                   help="plateau: doubling the schedule gains less than this on Dice and FROC (default 0.02)")
    p.add_argument("--doublings", type=int, default=5, help="plateau: at most this many doublings (default 5)")
    p.add_argument("--minutes-rows", nargs="+", default=[], dest="minutes_rows", metavar="ROW",
                   help="plateau: rows trained for the plateau minutes of --minutes-of instead")
    p.add_argument("--minutes-of", default=None, dest="minutes_of", metavar="ROW",
                   help="plateau: the row whose plateau minutes --minutes-rows get (default: the last -tr row)")
    p.add_argument("--current", metavar="JSON",
                   help="plateau: write this data set's rows into a current.json (e.g. bench/results/current.json)")
    a = p.parse_args()
    if a.repeats < 1 or a.draws < 100:
        p.error("--repeats must be at least 1 and --draws at least 100")
    if a.minutes != "auto":
        try:
            minutes = float(a.minutes)
        except ValueError:
            p.error(f"--minutes {a.minutes!r}: a number, 'auto' or 0")
        if minutes < 0:
            p.error("--minutes must not be negative")
    mode = "quick" if a.quick else "full"
    cfg = REAL_SETTINGS[mode] if a.real else SETTINGS[mode]
    settings = dict(cfg, mode=mode, fractions=list(cfg["fractions"]), data_seed=SEED_DATA)
    if a.real:
        settings["real"] = os.path.abspath(a.real)
    else:
        settings["shape"] = list(cfg["shape"])
    bench = Bench(a.work, cfg, settings, a.keep)
    baseline, seeds = a.rows[0], [a.seed + r for r in range(a.repeats)]
    all_rows = a.rows + a.minutes_rows
    bench.prepare(sorted({parse_row(r)[1] for r in all_rows}), {parse_row(r)[2] for r in all_rows}, real=a.real)
    if a.budget == "plateau":
        if a.minutes_of and a.minutes_of not in a.rows:
            p.error(f"--minutes-of {a.minutes_of!r} is not one of the -tr rows")
        text, stats, rows = plateau_budget(a, bench, seeds)
        counts = test_set_counts(next(iter(bench.runs.values())))
        header = benchmark_header(bench, a, cfg, mode, counts, seeds)
        markdown = header + "\n\n" + text + "\n"
        write_text_atomic(os.path.join(bench.pipe.work, "plateau.md"), markdown)
        write_text_atomic(os.path.join(bench.pipe.work, "plateau.json"),
                          json.dumps({"header": header, "settings": settings, "counts": counts, "stats": stats,
                                      "rows": rows}, indent=2))
        if a.current:
            merge_current(a.current, rows[0]["data"], rows, git_commit())
        print(markdown)
        return

    print(f"equal iterations: {cfg['epochs']} x {cfg['iters']}", flush=True)
    iteration_runs = {row: [bench.run(f"{row.replace(' ', '_')}_it{cfg['epochs']}x{cfg['iters']}_s{s}", row,
                                      cfg["epochs"], s, "iterations",
                                      cfg["fractions"] if (row == baseline and a.minutes == "auto") else ())
                            for s in seeds] for row in a.rows}
    base_seconds = sum(sum(r["epoch_seconds"]) for r in iteration_runs[baseline]) / len(seeds)
    minutes = base_seconds / 60 if a.minutes == "auto" else float(a.minutes)
    minute_runs = {}
    if minutes > 0:
        print(f"equal minutes: {minutes:.1f} min of training per row", flush=True)
        for row in a.rows:
            if row == baseline and a.minutes == "auto":
                minute_runs[row] = iteration_runs[row]
                continue
            minute_runs[row] = []
            epochs = max(1, round(minutes * 60 / bench.epoch_seconds_of(row)))
            for s in seeds:
                minute_runs[row].append(bench.run(f"{row.replace(' ', '_')}_min{minutes:.1f}_e{epochs}_s{s}", row,
                                                  epochs, s, "minutes", cfg["fractions"]))
    if a.long > 0:
        epochs = max(1, round(cfg["epochs"] * a.long))
        bench.run(f"{baseline.replace(' ', '_')}_long{epochs}x{cfg['iters']}_s{a.seed}", baseline, epochs, a.seed, "long",
                  cfg["fractions"] + (cfg["epochs"] / epochs,))

    counts = test_set_counts(iteration_runs[baseline][0])
    header = benchmark_header(bench, a, cfg, mode, counts, seeds)
    text, it_stats = budget_table(f"Equal iterations ({cfg['epochs']} x {cfg['iters']})", iteration_runs, baseline, a.draws,
                                  not a.cases_only)
    tables, stats = [header, "", text], {"iterations": it_stats}
    if minute_runs:
        text, stats["minutes"] = budget_table(f"Equal minutes ({minutes:.1f} min of training each)", minute_runs,
                                              baseline, a.draws, not a.cases_only)
        tables += ["", text]
    files = write_curves(bench.pipe.work, curve_rows(bench.runs, a.draws))
    if files:
        tables += ["", f"Learning curves: {', '.join(files)}"]
    markdown = "\n".join(tables) + "\n"
    write_text_atomic(os.path.join(bench.pipe.work, "compare.md"), markdown)
    write_text_atomic(os.path.join(bench.pipe.work, "compare.json"),
                      json.dumps({"header": header, "settings": settings, "counts": counts, "minutes": minutes,
                                  "stats": stats}, indent=2))
    print(markdown)


if __name__ == "__main__":
    main()
