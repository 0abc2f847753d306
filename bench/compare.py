"""CoSAM against nnU-Net's own network on a fixed benchmark, at equal iterations and minutes or each
row trained to its plateau; each metric with a bootstrap interval over the test cases (and seeds).

    python bench/compare.py [--quick] [--work bench_work/compare] [-tr ROW ...] [--seed S] [--repeats N]
                            [--budget iterations|plateau] [--minutes M|auto|0] [--long F] [--keep]
                            [--real IMAGES_LABELS_FOLDER] [--cases-only]
    plateau: [--plateau-gain 0.02] [--doublings 5] [--minutes-rows ROW ...] [--minutes-of ROW]
             [--current bench/results/current.json] [--cpu-scale 0.25]

A ROW is 'TRAINER [CONFIGURATION [PLANS]]'; the first is the baseline. PLANS nnUNetCPUPlans is
nnU-Net's own network at --cpu-scale of its width (`cosam_plan_cpu --scale`; a quarter on the synthetic
benchmark), whose iteration then costs about what CoSAMTrainerSmall's does on a CPU: nnU-Net at
matched compute (time both on the data before picking the scale).

Data: synthetic cases (fixed seed) -> cosam_convert_meply -> nnUNetv2_plan_and_preprocess, with a
large test split (only predicted, so cheap) of which a fixed share is node-free. With --real FOLDER
(an images/ + labels/ folder of real CT, e.g. crops around lung nodules): a fixed, seeded subset of
its cases is copied into the work folder, split by patient (the case name up to its first "_") so
that no patient is in both training and test, and converted with `cosam_convert_meply --split`.
Budgets, each row trained from scratch for each (seeds S, S+1, ... for --repeats):
- iterations (default): every row EPOCHS x ITERS iterations; then every row M minutes of training
  (epoch time measured, not wall time of the process): the number of epochs is M over the row's
  epoch time (median of the epochs after the first, which carries start-up costs); with `auto`
  (default) M is the first row's training time at equal iterations. Snapshots along these runs give
  learning curves (test-set metric against training seconds); --long F adds a run of the first row
  at F times the iterations (curve only).
- plateau: each row trained with seed S for EPOCHS, 2 x EPOCHS, 4 x EPOCHS, ... epochs (a schedule
  each, nnU-Net's poly decay over the whole schedule) until doubling gains less than --plateau-gain
  on both Dice and FROC score of the test set (and the doubled model reaches 0.1 on both: a model
  that has not started does not plateau), at most --doublings times; the plateau is the shorter
  schedule, where the other seeds are then trained. --minutes-rows are trained for as many minutes
  as --minutes-of's plateau schedule takes (epochs x its median epoch time; each row's epochs timed
  by its median, so that epochs slowed by other work do not move the budget). Writes plateau.md,
  plateau.json and plateau.png (each
  schedule's end point and the plateau called); --current merges the rows into a current.json.
Every model predicts the test cases (no TTA) and is scored by cosam_evaluate's metrics; intervals are
95% bootstrap intervals over test cases and, with --repeats, over each row's runs (--cases-only: over
cases alone), differences to the first row paired on the same case draws, and a row's verdict
("ahead", "level", "behind") says whether that interval excludes zero. Each run is saved in
runs.json as it ends; --keep reuses the finished runs of the same settings and continues an
interrupted training from its last checkpoint (nnU-Net's --c), so a benchmark can span several
sittings. --quick: a smoke run of every step on smaller volumes (24 x 64 x 64), about 8 minutes.
Do not edit cosam_nn/ or trainers/ of the checkout it runs from: every training and prediction is a
new process that imports them.
"""
import argparse
import json
import os

from cosam_nn.benchmark.plateau import PLATEAU_FLOOR, merge_current, plateau_rows, plateau_search, plot_plateau
from cosam_nn.benchmark.tables import benchmark_header, budget_table, curve_rows, test_set_counts, write_curves
from cosam_nn.benchmark.workfolder import (DEFAULT_ROWS, REAL_SETTINGS, SEED_DATA, SETTINGS, Bench, git_commit,
                                           parse_row)
from cosam_nn.cli_types import fraction
from cosam_nn.data.fileio import write_text_atomic
from cosam_nn.evaluation.evaluate import fmt_value


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
        # the median epoch time of each row, not the runs' sums: an epoch slowed by other work on the
        # machine then does not move the budget
        minutes = searches[minutes_of][0] * bench.epoch_seconds_of(minutes_of) / 60
        print(f"equal minutes: {minutes:.1f} min of training, {minutes_of}'s at its plateau (median epoch time)",
              flush=True)
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
    p.add_argument("--cpu-scale", type=fraction, default=0.25, dest="cpu_scale",
                   help="nnUNetCPUPlans rows: each stage's share of nnU-Net's features (cosam_plan_cpu --scale; "
                        "default 0.25, matched to CoSAMTrainerSmall on the synthetic benchmark)")
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
    if a.cpu_scale != 0.25:  # another network: another work folder (runs.json settings)
        settings["cpu_scale"] = a.cpu_scale
    bench = Bench(a.work, cfg, settings, a.keep)
    baseline, seeds = a.rows[0], [a.seed + r for r in range(a.repeats)]
    all_rows = a.rows + a.minutes_rows
    bench.prepare(sorted({parse_row(r)[1] for r in all_rows}), {parse_row(r)[2] for r in all_rows}, real=a.real,
                  cpu_scale=a.cpu_scale)
    if a.budget == "plateau":
        if a.minutes_of and a.minutes_of not in a.rows:
            p.error(f"--minutes-of {a.minutes_of!r} is not one of the -tr rows")
        text, stats, rows = plateau_budget(a, bench, seeds)
        counts = test_set_counts(next(iter(bench.runs.values())))
        header = benchmark_header(bench, counts, seeds, a.real, a.cases_only, a.draws)
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
    header = benchmark_header(bench, counts, seeds, a.real, a.cases_only, a.draws)
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
