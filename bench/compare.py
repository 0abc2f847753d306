"""CoSAM against nnU-Net's own network at the same training budget, on a fixed synthetic benchmark.

    python bench/compare.py [--quick] [--work bench_work/compare] [-tr ROW ...] [--keep] [--repeats N]

One run: generate (fixed seed) -> convert -> plan once; for each trainer train the same number of
iterations (wall time and peak memory recorded), predict the held-out test cases, evaluate with
cosam_evaluate; then one table (JSON and Markdown, in the work folder and printed) with the ratios
of each row to nnU-Net's 3D network. compare.json is rewritten after every row; with --keep, the rows
of an earlier run of the same settings in the same work folder that -tr does not list stay in the
table (each row records its own date), so one row can be rerun without the hour of the others. --quick: about 6 minutes (3 test cases); the default: about 50 minutes on 2 CPU cores (10 test
cases, 320 iterations per trainer; nnU-Net's 3D network takes most of it at about 5 s per iteration).
"""
import argparse
import json
import os
import platform
import re
import shutil
import time

from cosam_nn.demo import Pipeline
from cosam_nn.evaluation import evaluate_folders

BASELINE = "nnUNetTrainerBudget 3d_fullres"
ROWS = (BASELINE, "nnUNetTrainerBudget 2d", "CoSAMTrainerSmall", "CoSAMTrainerSmall_noCCM", "USAMTrainerSmall")
SETTINGS = {  # cases (about 20% held out), shape, epochs, iterations per epoch
    "quick": dict(cases=16, shape=(32, 96, 96), epochs=2, iters=10),
    "full": dict(cases=48, shape=(32, 96, 96), epochs=8, iters=40),
}
COLUMNS = (("dice", "Dice"), ("iou", "IoU"), ("pooled_dice", "pooled slice Dice"), ("ap10", "AP@0.1"),
           ("ap50_2d", "2D AP50"), ("froc", "FROC score"), ("sens_small", "sens. < 5 mm"),
           ("s_per_iter", "train s/iter"), ("s_per_case", "predict s/case"),
           ("train_peak_mib", "train peak MiB"), ("predict_peak_mib", "predict peak MiB"))


def _epoch_seconds(model_folder):
    """Sum of nnU-Net's 'Epoch time' lines of fold 0 (training iterations and validation of each epoch)."""
    fold = os.path.join(model_folder, "fold_0")
    text = "".join(open(os.path.join(fold, f)).read() for f in os.listdir(fold) if f.startswith("training_log"))
    return sum(float(x) for x in re.findall(r"Epoch time: ([0-9.]+) s", text))


def parse_row(row):
    """'TRAINER [CONFIGURATION]' -> (trainer, configuration); CoSAM trainers need 3d_fullres."""
    trainer, _, configuration = row.partition(" ")
    return trainer, configuration or "3d_fullres"


def run_trainer(pipe, row, epochs, iters):
    trainer, configuration = parse_row(row)
    model = os.path.join(pipe.env["nnUNet_results"], os.path.basename(pipe.raw), f"{trainer}__nnUNetPlans__{configuration}")
    shutil.rmtree(model, ignore_errors=True)  # a rerun starts afresh (and its epoch times are its own)
    pipe.train(trainer, epochs, iters, val_iters=1, configuration=configuration)
    train_peak = pipe.last_peak_mib
    pred = os.path.join(pipe.work, f"pred_{trainer}_{configuration}")
    seconds = pipe.predict(trainer, pred, probabilities=True, configuration=configuration)
    predict_peak = pipe.last_peak_mib
    summary, _ = evaluate_folders(os.path.join(pipe.raw, "labelsTs"), pred, use_probs=True, log=lambda *_: None)
    n_test = summary["cases"]
    return {"dice": summary["dice_mean"], "iou": summary["iou_mean"], "pooled_dice": summary["pooled_slice_dice"],
            "ap10": summary["ap"]["0.1"], "ap50_2d": summary["ap50_2d_per_slice"], "froc": summary["froc_score"],
            "sens_small": summary["sensitivity_by_short_axis"]["< 5 mm"]["sensitivity"],
            "s_per_iter": _epoch_seconds(model) / (epochs * iters),
            "s_per_case": seconds / n_test, "train_peak_mib": train_peak, "predict_peak_mib": predict_peak}


def mean_of_runs(runs):
    """One row from N runs of a trainer: the mean of each column (None where any run has None),
    the runs kept under 'runs' (the table lists each run's Dice and FROC score)."""
    row = {}
    for key, _ in COLUMNS:
        values = [r[key] for r in runs]
        row[key] = None if any(v is None for v in values) else sum(values) / len(values)
    row["runs"] = runs
    return row


def _fmt(v):
    return "n/a" if v is None else f"{v:.3f}" if abs(v) < 100 else f"{v:.0f}"


def markdown(rows, header):
    base = rows.get(BASELINE, {})
    lines = [header, "", "| trainer | " + " | ".join(name for _, name in COLUMNS) + " |",
             "|---" * (len(COLUMNS) + 1) + "|"]
    for trainer, row in rows.items():
        lines.append(f"| {trainer} | " + " | ".join(_fmt(row[k]) for k, _ in COLUMNS) + " |")
        if trainer != BASELINE and base:
            ratio = [(row[k] / base[k]) if row[k] is not None and base.get(k) else None for k, _ in COLUMNS]
            lines.append(f"| ratio to nnU-Net | " + " | ".join(_fmt(r) for r in ratio) + " |")
    repeated = [(t, r["runs"]) for t, r in rows.items() if len(r.get("runs", [])) > 1]
    if repeated:
        lines.append("")
    for trainer, runs in repeated:
        lines.append(f"- {trainer}: Dice of each run " + ", ".join(_fmt(r["dice"]) for r in runs)
                     + "; FROC score " + ", ".join(_fmt(r["froc"]) for r in runs))
    return "\n".join(lines)


def _earlier_rows(path, settings):
    """Rows of an earlier compare.json in the work folder made with the same settings, else {}."""
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        earlier = json.load(f)
    return earlier.get("rows", {}) if earlier.get("settings") == settings else {}


def _write(work, header, settings, rows):
    """compare.json and compare.md (rows in ROWS order), each through a temporary file."""
    rows = {r: rows[r] for r in sorted(rows, key=lambda r: ROWS.index(r) if r in ROWS else len(ROWS))}
    for name, text in (("compare.json", json.dumps({"header": header, "settings": settings, "rows": rows}, indent=2)),
                       ("compare.md", markdown(rows, header) + "\n")):
        tmp = os.path.join(work, name + ".tmp")
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, os.path.join(work, name))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a few minutes instead of about an hour")
    p.add_argument("--work", default="bench_work/compare")
    p.add_argument("-tr", nargs="+", default=list(ROWS), dest="trainers",
                   help="rows as 'TRAINER [CONFIGURATION]' (default: all; configuration 3d_fullres unless given)")
    p.add_argument("--repeats", type=int, default=1,
                   help="train and evaluate each row N times; the table shows the means (training is not seeded)")
    p.add_argument("--keep", action="store_true",
                   help="keep the rows of an earlier run of the same settings in --work that -tr does not list")
    a = p.parse_args()
    if a.repeats < 1:
        p.error("--repeats must be at least 1")
    mode = "quick" if a.quick else "full"
    cfg = SETTINGS[mode]
    settings = dict(cfg, mode=mode, shape=list(cfg["shape"]), seed=2026)
    pipe = Pipeline(a.work, log=lambda *_: None)
    configurations = sorted({parse_row(r)[1] for r in a.trainers})
    earlier = _earlier_rows(os.path.join(pipe.work, "compare.json"), settings) if a.keep else {}
    planned = all(os.path.isdir(os.path.join(pipe.env["nnUNet_preprocessed"], os.path.basename(pipe.raw), f"nnUNetPlans_{c}"))
                  for c in configurations)
    if not (earlier and planned):  # prepare() starts the work folder afresh: earlier models and rows go
        earlier = {}
        pipe.prepare(cfg["cases"], cfg["shape"], seed=2026, configurations=configurations)
    n_test = len(os.listdir(os.path.join(pipe.raw, "labelsTs")))
    header = (f"{mode} benchmark, {platform.node()} ({os.cpu_count()} CPUs): {cfg['cases']} synthetic cases "
              f"{cfg['shape']} (seed 2026), {n_test} held out; every row {cfg['epochs']} x {cfg['iters']} iterations "
              f"of its trainer and nnU-Net configuration (3d_fullres unless named), prediction without TTA; "
              f"{'each row the mean of its runs; ' if a.repeats > 1 else ''}"
              f"rows run on {{dates}}")
    rows = {r: v for r, v in earlier.items() if r not in a.trainers}
    for i, trainer in enumerate(a.trainers):
        print(f"[{i + 1}/{len(a.trainers)}] {trainer} ...", flush=True)
        runs = []
        for _ in range(a.repeats):
            runs.append(dict(run_trainer(pipe, trainer, cfg["epochs"], cfg["iters"]), date=time.strftime("%Y-%m-%d %H:%M")))
        rows[trainer] = dict(mean_of_runs(runs), date=runs[-1]["date"])
        dates = ", ".join(sorted({v.get("date", "?")[:10] for v in rows.values()}))
        _write(pipe.work, header.format(dates=dates), settings, rows)
    print(open(os.path.join(pipe.work, "compare.md")).read())


if __name__ == "__main__":
    main()
