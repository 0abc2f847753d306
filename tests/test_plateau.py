"""The plateau budget of the benchmark, its rows, resumable runs, and nnU-Net's plans at CPU width."""
import json
import os

import pytest

from conftest import make_planned_dataset, run_cli
from cosam_nn.benchmark.plateau import gained, is_plateau, merge_current, plateau_rows, plateau_search
from cosam_nn.benchmark.workfolder import Bench, epoch_seconds, parse_row
from cosam_nn.evaluation.bootstrap import compare


def _summary(dice, froc):
    return {"dice": dice, "froc": froc}


def test_a_plateau_needs_every_gain_small_and_a_model_that_has_started():
    assert gained(_summary(0.5, 0.6), _summary(0.53, 0.58)) == pytest.approx({"dice": 0.03, "froc": -0.02})
    assert is_plateau(_summary(0.5, 0.6), _summary(0.51, 0.61), 0.02)
    assert is_plateau(_summary(0.5, 0.6), _summary(0.45, 0.55), 0.02)       # worse after doubling
    assert not is_plateau(_summary(0.5, 0.6), _summary(0.53, 0.61), 0.02)   # Dice still rising
    assert not is_plateau(_summary(0.5, 0.6), _summary(0.51, 0.65), 0.02)   # FROC still rising
    assert not is_plateau(_summary(0.0, 0.0), _summary(0.0, 0.05), 0.02)    # nothing learnt yet: no plateau
    assert not is_plateau(_summary(None, None), _summary(0.01, None), 0.02)


class _Schedules:
    """Stands in for Bench: the test-set summary of each schedule length."""

    def __init__(self, summaries, epochs=8, iters=15):
        self.summaries, self.cfg, self.trained = summaries, {"epochs": epochs, "iters": iters}, []

    def schedule(self, row, epochs, seed):
        self.trained.append(epochs)
        return {"epochs": epochs, "iters": self.cfg["iters"], "seed": seed,
                "points": [{"summary": _summary(*self.summaries[epochs])}]}


def test_the_search_doubles_until_doubling_stops_paying():
    bench = _Schedules({8: (0.3, 0.4), 16: (0.45, 0.55), 32: (0.5, 0.6), 64: (0.505, 0.61), 128: (0.6, 0.7)})
    epochs, found, runs = plateau_search(bench, "CoSAMTrainerSmall", 3, gain=0.02, doublings=5)
    assert (epochs, found) == (32, True) and bench.trained == [8, 16, 32, 64]  # 128 never trained
    assert [r["seed"] for r in runs] == [3] * 4
    bench = _Schedules({8: (0.3, 0.4), 16: (0.45, 0.55), 32: (0.5, 0.6)})
    assert plateau_search(bench, "CoSAMTrainerSmall", 0, gain=0.02, doublings=2)[:2] == (32, False)


def _log(epochs_and_seconds):
    lines = ["", "This is the configuration used by this training:", ""]
    for epoch, seconds in epochs_and_seconds:
        lines += [f"2026-12-07 10:00:00.000000: Epoch {epoch} ", "2026-12-07 10:00:01.000000: train_loss 1.0 ",
                  f"2026-12-07 10:00:02.000000: Epoch time: {seconds} s "]
    return "\n".join(lines) + "\n"


def test_epoch_times_of_a_resumed_training_count_each_epoch_once(tmp_path):
    fold = tmp_path / "model" / "fold_0"
    fold.mkdir(parents=True)
    (fold / "training_log_2026_12_7_10_00_00.txt").write_text(_log([(0, 5.0), (1, 4.0), (2, 4.5), (3, 4.4)]))
    (fold / "training_log_2026_12_7_11_00_00.txt").write_text(_log([(2, 3.0), (3, 3.5), (4, 3.2)]))  # resumed at 2
    assert epoch_seconds(str(tmp_path / "model")) == [5.0, 4.0, 3.0, 3.5, 3.2]


def test_rows_name_trainer_configuration_and_plans():
    assert parse_row("CoSAMTrainerSmall") == ("CoSAMTrainerSmall", "3d_fullres", "nnUNetPlans")
    assert parse_row("nnUNetTrainerBudget 3d_fullres nnUNetCPUPlans") == ("nnUNetTrainerBudget", "3d_fullres",
                                                                           "nnUNetCPUPlans")
    with pytest.raises(SystemExit, match="TRAINER \\[CONFIGURATION \\[PLANS\\]\\]"):
        parse_row("a b c d")


def _run(row, seed, hits, epochs=32):
    cases = {f"c{i}": {"dice": 0.6 if i < hits else 0.1, "scores": [0.9], "tp": [i < hits], "found": [i < hits],
                       "reference_of": [0 if i < hits else -1], "short_axes_mm": [4.0]} for i in range(6)}
    return {"row": row, "seed": seed, "epochs": epochs, "iters": 15, "epoch_seconds": [60.0] * epochs,
            "points": [{"cases": cases}]}


def test_current_rows_compare_cosam_with_the_nnunet_row_and_merge_by_data_set(tmp_path):
    base, cosam, default = "nnUNetTrainerBudget 3d_fullres nnUNetCPUPlans", "CoSAMTrainerSmall", "nnUNetTrainerBudget"
    runs = {base: [_run(base, s, 2) for s in (0, 1)], cosam: [_run(cosam, s, 5, 64) for s in (0, 1)],
            default: [_run(default, s, 1, 4) for s in (0, 1)]}
    stats = compare({r: [x["points"][-1]["cases"] for x in rs] for r, rs in runs.items()}, baseline=base, draws=200)
    rows = plateau_rows("synthetic", stats, runs, {base: True, cosam: False}, base, minutes_of=cosam)
    by_trainer = {(r["trainer"], r["plans"]): r for r in rows}
    cpu, small, full = (by_trainer[k] for k in (("nnUNetTrainerBudget", "nnUNetCPUPlans"),
                                                ("CoSAMTrainerSmall", "nnUNetPlans"), ("nnUNetTrainerBudget", "nnUNetPlans")))
    assert "vs" not in cpu and "vs" not in full and full["budget"].startswith("the training minutes of CoSAMTrainerSmall")
    assert small["vs"]["row"] == {"trainer": "nnUNetTrainerBudget", "plans": "nnUNetCPUPlans"}
    assert small["iterations"] == 64 * 15 and small["seeds"] == [0, 1] and small["plateau"] is False and cpu["plateau"]
    assert small["vs"]["froc"][0] > 0 and len(small["dice"]) == 3 and small["train_minutes"] == 64.0
    path = str(tmp_path / "current.json")
    merge_current(path, "realct", [dict(cpu, data="realct")], "abc1234")
    merge_current(path, "synthetic", rows, "def5678")
    merge_current(path, "synthetic", rows[:1], "def5678")  # a data set's rows are replaced as a whole
    saved = json.load(open(path))
    assert saved["commit"] == "def5678" and [r["data"] for r in saved["rows"]] == ["realct", "synthetic"]


class _Pipe:
    def __init__(self, work):
        self.work, self.raw, self.env, self.calls = work, os.path.join(work, "raw", "Dataset501_Meply"), {}, []

    def train(self, trainer, epochs, iters, **kwargs):
        self.calls.append(kwargs["resume"])


@pytest.mark.parametrize("kept, checkpoint, resumes", [(True, "latest", True), (True, None, False),
                                                       (False, "latest", False)])
def test_an_interrupted_training_resumes_only_in_a_kept_work_folder(tmp_path, kept, checkpoint, resumes):
    bench = object.__new__(Bench)
    bench.pipe, bench.cfg, bench.resume = _Pipe(str(tmp_path)), {"iters": 15}, kept
    fold = tmp_path / "results" / "run" / "Dataset501_Meply" / "CoSAMTrainerSmall__nnUNetPlans__3d_fullres" / "fold_0"
    fold.mkdir(parents=True)
    if checkpoint:
        (fold / f"checkpoint_{checkpoint}.pth").write_bytes(b"x")
    bench.train("run", "CoSAMTrainerSmall", 8, 0)
    assert bench.pipe.calls == [resumes] and fold.exists() == resumes


def test_cpu_plans_narrow_nnunets_network_and_share_its_data(tmp_path, nnunet_env):
    missing = run_cli(["cosam_plan_cpu", "-d", "531"], nnunet_env, check=False)
    assert missing.returncode != 0 and "Traceback" not in missing.stderr
    assert "data set 531: Could not find a dataset with the ID 531" in missing.stderr.strip().splitlines()[-1]
    make_planned_dataset(tmp_path, nnunet_env, 531, cases=4)
    run_cli(["cosam_plan_cpu", "-d", "531"], nnunet_env)
    folder = os.path.join(nnunet_env["nnUNet_preprocessed"], "Dataset531_Meply")
    default = json.load(open(os.path.join(folder, "nnUNetPlans.json")))["configurations"]["3d_fullres"]
    cpu_plans = json.load(open(os.path.join(folder, "nnUNetCPUPlans.json")))
    cpu = cpu_plans["configurations"]["3d_fullres"]
    assert cpu_plans["plans_name"] == "nnUNetCPUPlans" and cpu_plans["experiment_planner_used"] == "nnUNetPlannerCPU"
    for key in ("patch_size", "batch_size", "spacing", "data_identifier"):
        assert cpu[key] == default[key], key
    features = default["architecture"]["arch_kwargs"]["features_per_stage"]
    assert cpu["architecture"]["arch_kwargs"]["features_per_stage"] == [max(4, round(f / 4)) for f in features]
    bad = run_cli(["cosam_plan_cpu", "-d", "531", "--scale", "0"], nnunet_env, check=False)
    assert bad.returncode == 2 and "--scale" in bad.stderr and "Traceback" not in bad.stderr
    run_cli(["cosam_plan_cpu", "-d", "531", "--scale", "0.5"], dict(nnunet_env, nnUNet_n_proc_DA="0"))
    half = json.load(open(os.path.join(folder, "nnUNetCPUPlans.json")))["configurations"]["3d_fullres"]
    assert half["architecture"]["arch_kwargs"]["features_per_stage"] == [max(4, round(f / 2)) for f in features]
    assert half["data_identifier"] == default["data_identifier"]
