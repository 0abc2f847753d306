"""A benchmark's work folder: its data (synthetic or real CT), one nnU-Net results folder per
training run, and runs.json, which keeps every finished run with its test-set records so that an
interrupted benchmark resumes (`--keep`)."""
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import time

from cosam_nn.data.fileio import write_text_atomic
from cosam_nn.demo import Pipeline
from cosam_nn.evaluation.bootstrap import case_record
from cosam_nn.evaluation.evaluate import evaluate_folders, fmt_value

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

    def prepare(self, configurations, plans=(DEFAULT_PLANS,), real=None, cpu_scale=0.25):
        """The data, converted and planned (kept when --keep finds a work folder of the same settings);
        nnUNetCPUPlans (cosam_plan_cpu at `cpu_scale` of the features) where a row names them."""
        raw_ready = os.path.isdir(os.path.join(self.pipe.raw, "labelsTs"))
        planned = all(os.path.isdir(self.preprocessed(f"nnUNetPlans_{c}")) for c in configurations)
        if not (self.resume and raw_ready and planned):
            self.runs, self.resume = {}, False  # the work folder starts afresh
            self._make_data(configurations, real)
            self.save()  # the settings, so that an interrupted first training can resume with --keep
        for name in set(plans) - {DEFAULT_PLANS}:
            if not os.path.isfile(self.preprocessed(name + ".json")):
                self.pipe.run(f"plans {name}", ["cosam_plan_cpu", "-d", self.pipe.did, "--scale", str(cpu_scale)])

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
