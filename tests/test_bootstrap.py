import json
import os
import subprocess
import sys

import numpy as np
import pytest

from cosam_nn.benchmark.workfolder import copy_real_cases, patient_of, real_subset
from cosam_nn.evaluation.bootstrap import compare, verdict

PAIR_RUNS = os.path.join(os.path.dirname(__file__), os.pardir, "bench", "pair_runs.py")


def _pair_runs(*args):
    return subprocess.run([sys.executable, PAIR_RUNS, *args], capture_output=True, text=True)


def _case(dice, found, scores_tp, axes=None):
    """A case record: node flags `found`, detections as (score, true positive) pairs; the true
    positives found the found nodes in order."""
    hits = iter(i for i, f in enumerate(found) if f)
    return {"dice": dice, "scores": [s for s, _ in scores_tp], "tp": [t for _, t in scores_tp],
            "found": list(found), "reference_of": [next(hits) if t else -1 for _, t in scores_tp],
            "short_axes_mm": list(axes if axes is not None else [4.0] * len(found))}


def _run(n, good):
    """n cases, one small node each; a good model finds it with a high score and no false positive, a
    bad one scores a false positive above a hit in every other case and misses the rest."""
    out = {}
    for i in range(n):
        if good:
            out[f"c{i}"] = _case(0.8, [True], [(0.9, True)])
        elif i % 2:
            out[f"c{i}"] = _case(0.3, [True], [(0.9, False), (0.4, True)])
        else:
            out[f"c{i}"] = _case(0.0, [False], [(0.8, False)])
    return out


def test_clear_difference_is_a_verdict_and_intervals_hold_the_values():
    stats = compare({"base": [_run(20, good=False)], "new": [_run(20, good=True)]}, baseline="base", draws=300)
    new, base = stats["rows"]["new"], stats["rows"]["base"]
    assert new["dice"]["value"] == pytest.approx(0.8) and base["dice"]["value"] == pytest.approx(0.15)
    assert new["sens_small"]["value"] == 1.0 and base["sens_small"]["value"] == 0.5
    for row in (new, base):
        for m in ("dice", "froc", "ap10", "sens_small", "froc_small"):
            lo, hi = row[m]["interval"]
            assert lo <= row[m]["value"] <= hi
    for m in ("dice", "froc", "ap10", "sens_small", "froc_small"):
        assert new["difference"][m]["verdict"] == "ahead"
    # the baseline's own difference is not listed; an identical row is level with an interval around 0
    same = compare({"base": [_run(20, False)], "copy": [_run(20, False)]}, baseline="base", draws=300)
    d = same["rows"]["copy"]["difference"]["dice"]
    assert d["value"] == 0 and d["interval"] == (0.0, 0.0) and d["verdict"] == "level"
    assert "difference" not in same["rows"]["base"]


def test_noisy_small_difference_is_level():
    rng = np.random.default_rng(0)
    a = {f"c{i}": _case(float(rng.uniform(0.2, 0.9)), [True], [(0.5, True)]) for i in range(12)}
    b = {k: dict(v, dice=v["dice"] + float(rng.normal(0.01, 0.15))) for k, v in a.items()}
    stats = compare({"a": [a], "b": [b]}, baseline="a", draws=500)
    assert stats["rows"]["b"]["difference"]["dice"]["verdict"] == "level"


def test_repeats_are_averaged_and_listed():
    runs = [_run(10, good=True), _run(10, good=False)]
    stats = compare({"r": runs}, draws=200)
    assert stats["rows"]["r"]["dice"]["runs"] == [pytest.approx(0.8), pytest.approx(0.15)]
    assert stats["rows"]["r"]["dice"]["value"] == pytest.approx((0.8 + 0.15) / 2)


def test_a_difference_within_the_seeds_spread_is_level_once_runs_are_resampled():
    mid = {f"c{i}": _case(0.55, [True], [(0.9, True)]) for i in range(30)}
    rows = {"base": [_run(30, good=True), _run(30, good=False)], "new": [mid, dict(mid)]}
    cases_only = compare(rows, baseline="base", draws=500, resample_runs=False)["rows"]["new"]["difference"]["dice"]
    both = compare(rows, baseline="base", draws=500)["rows"]["new"]["difference"]["dice"]
    assert cases_only["value"] == both["value"] == pytest.approx(0.55 - 0.475)
    assert cases_only["verdict"] == "ahead"  # the case sample alone cannot explain 0.075
    assert both["verdict"] == "level" and both["interval"][0] < -0.1  # a seed of 0.15 or 0.8 can
    # the same runs on both sides (weights predicted again unchanged): runs are paired, nothing differs
    same = compare({"a": rows["base"], "b": list(rows["base"])}, baseline="a", draws=300)
    assert same["rows"]["b"]["difference"]["dice"]["interval"] == (0.0, 0.0)
    assert same["rows"]["b"]["dice"]["interval"][1] - same["rows"]["b"]["dice"]["interval"][0] > 0.3


def test_no_small_nodes_gives_none_not_a_number():
    run = {"c0": _case(0.5, [True], [(0.9, True)], axes=[8.0]), "c1": _case(None, [], [])}
    stats = compare({"r": [run]}, draws=100)
    assert stats["rows"]["r"]["sens_small"]["value"] is None
    assert stats["rows"]["r"]["sens_small"]["interval"] == (None, None)
    assert stats["rows"]["r"]["dice"]["value"] == 0.5  # the empty case is left out of the mean


def test_small_nodes_froc_counts_false_positives_of_every_size():
    # every node is small; 10 cases: the odd ones find theirs after a false positive, the even ones miss
    stats = compare({"r": [_run(10, good=False)]}, draws=100)["rows"]["r"]
    # 10 FPs (scores 0.9, 0.8) in 10 scans before the 5 hits (0.4): 1/2 of the nodes from rate 1 on
    assert stats["froc_small"]["value"] == pytest.approx(4 * 0.5 / 7)
    assert stats["froc"]["value"] == stats["froc_small"]["value"]  # every node is small
    # a large node's hit is not a small-node hit, yet its false positive still counts
    mixed = {f"c{i}": _case(0.5, [True, True], [(0.9, False), (0.8, True), (0.7, True)], axes=[8.0, 4.0])
             for i in range(4)}
    s = compare({"r": [mixed]}, draws=100)["rows"]["r"]
    assert s["froc_small"]["value"] == pytest.approx(4 / 7)  # 1 FP per scan before the small hits
    assert s["sens_small"]["value"] == 1.0


def test_records_without_links_have_no_small_nodes_froc():
    run = {k: {f: v for f, v in r.items() if f != "reference_of"} for k, r in _run(6, good=True).items()}
    stats = compare({"r": [run]}, draws=100)["rows"]["r"]
    assert stats["froc_small"]["value"] is None and stats["sens_small"]["value"] == 1.0


def test_rows_must_share_their_cases():
    with pytest.raises(ValueError, match="test cases differ"):
        compare({"a": [_run(3, True)], "b": [_run(4, True)]}, baseline="a", draws=100)


def test_verdict_words():
    assert verdict(0.01, 0.2) == "ahead" and verdict(-0.3, -0.1) == "behind"
    assert verdict(-0.1, 0.1) == "level" and verdict(None, None) == "n/a"


def _work(tmp_path, name, good, settings=None):
    """A benchmark work folder with one finished run of CoSAMTrainerSmall."""
    run = {"row": "CoSAMTrainerSmall", "budget": "iterations", "seed": 0, "epochs": 2, "iters": 5,
           "epoch_seconds": [1.0, 1.0], "train_peak_mib": 100.0,
           "points": [{"cases": _run(20, good), "predict_s_per_case": 0.5}]}
    folder = tmp_path / name
    folder.mkdir()
    (folder / "runs.json").write_text(json.dumps({"settings": settings or {"mode": "full"},
                                                  "runs": {"CoSAMTrainerSmall_it2x5_s0": run}}))
    return str(folder)


def test_pair_runs_pairs_two_work_folders_and_refuses_other_test_sets(tmp_path):
    before, after = _work(tmp_path, "before", False), _work(tmp_path, "after", True)
    done = _pair_runs(before, after, "--draws", "200")
    assert done.returncode == 0, done.stderr
    assert "CoSAMTrainerSmall (after) - CoSAMTrainerSmall (before)" in done.stdout and "**ahead**" in done.stdout
    other = _work(tmp_path, "other", True, settings={"mode": "quick"})
    refused = _pair_runs(before, other)
    assert refused.returncode != 0 and "different benchmark settings" in refused.stderr
    refused = _pair_runs(before, after, "--seeds", "1")
    assert refused.returncode != 0 and "no finished 'CoSAMTrainerSmall' run" in refused.stderr and "seeds" in refused.stderr


def test_real_ct_subset_keeps_each_patient_on_one_side_and_names_a_missing_folder(tmp_path):
    names = [f"P{p:02d}_R_{k}" for p in range(12) for k in range(1 + p % 3)]
    train, test = real_subset(names, 8, 6, seed=1)
    assert len(test) >= 6 and len(train) >= 8 and not set(train) & set(test)
    assert not {patient_of(n) for n in train} & {patient_of(n) for n in test}
    assert (train, test) == real_subset(names, 8, 6, seed=1)  # seeded
    with pytest.raises(SystemExit, match="holds 24 cases; 20 \\+ 10 are needed"):
        real_subset(names, 20, 10, seed=1)
    with pytest.raises(SystemExit, match="no images/ and labels/ folders"):
        copy_real_cases(str(tmp_path / "absent"), str(tmp_path / "copy"), 2, 1, seed=0)
