"""Bootstrap intervals over test cases, and paired intervals of a difference between two models.

A benchmark's test set is a sample of cases: resampling the cases with replacement (the same draws
for every model, so differences are paired) shows how much a metric would move on another sample
of the same size. Repeated trainings of a model (other seeds) enter as the mean over runs of each
draw's metric, so the interval covers the case sample, not the training noise; the runs' spread is
reported beside it.
"""
import numpy as np

from cosam_nn.evaluation.detection_metrics import Matched, average_precision, froc

METRICS = ("dice", "froc", "ap10", "sens_small")
SMALL_MM = 5.0


def case_record(case_result, detection_iou=0.1):
    """What the resampled metrics need of one case of `evaluation.evaluate_case`, JSON-ready."""
    m = case_result["matches"][detection_iou]
    return {"dice": case_result["dice"], "scores": [float(s) for s in m.scores],
            "tp": [bool(t) for t in m.true_positive], "found": [bool(f) for f in m.found],
            "short_axes_mm": [float(a) for a in case_result["short_axes_mm"]]}


class _Cases:
    """One run's case records as arrays, so that a draw only indexes."""

    def __init__(self, records):
        self.dice = np.array([np.nan if r["dice"] is None else r["dice"] for r in records], float)
        self.groups = [Matched(np.asarray(r["scores"], float), np.asarray(r["tp"], bool), np.asarray(r["found"], bool))
                       for r in records]
        self.small = [np.asarray(r["found"], bool)[np.asarray(r["short_axes_mm"], float) < SMALL_MM] for r in records]

    def metrics(self, idx):
        dice = self.dice[idx]
        groups = [self.groups[i] for i in idx]
        small = np.concatenate([self.small[i] for i in idx]) if len(idx) else np.zeros(0, bool)
        return {"dice": float(np.nanmean(dice)) if np.isfinite(dice).any() else np.nan,
                "froc": froc(groups, len(idx))[1],
                "ap10": average_precision(groups),
                "sens_small": float(small.mean()) if small.size else np.nan}


def _interval(values, level):
    values = np.asarray(values, float)
    if not np.isfinite(values).any():
        return None, None
    tail = (1 - level) / 2 * 100
    lo, hi = np.nanpercentile(values, [tail, 100 - tail])
    return float(lo), float(hi)


def verdict(lo, hi):
    """'ahead' / 'behind' where the interval of a difference excludes zero, else 'level'."""
    if lo is None:
        return "n/a"
    return "ahead" if lo > 0 else "behind" if hi < 0 else "level"


def _aligned(rows):
    """{row: [_Cases per run]} with every run's cases in one order; an error if the case sets differ."""
    names = None
    out = {}
    for row, runs in rows.items():
        out[row] = []
        for run in runs:
            if names is None:
                names = sorted(run)
            elif sorted(run) != names:
                raise ValueError(f"{row}: its test cases differ from the other rows' (a paired comparison needs the same)")
            out[row].append(_Cases([run[n] for n in names]))
    return out, names or []


def compare(rows, baseline=None, draws=2000, seed=0, level=0.95):
    """rows: {row name: [run, ...]}, a run {case: case_record}. Returns, per row and metric, the value
    on the whole test set (mean over runs), each run's value, and the interval; for each row other
    than `baseline`, the paired difference to it with its interval and verdict."""
    cases, names = _aligned(rows)
    n = len(names)
    rng = np.random.default_rng(seed)
    draws_idx = rng.integers(0, n, size=(draws, n)) if n else np.zeros((0, 0), int)
    whole = np.arange(n)

    def mean_over_runs(runs, idx):
        per_run = [c.metrics(idx) for c in runs]
        return {m: float(np.nanmean([r[m] for r in per_run])) if any(np.isfinite(r[m]) for r in per_run) else np.nan
                for m in METRICS}, per_run

    point, boot = {}, {}
    out = {"cases": n, "draws": draws, "level": level, "rows": {}}
    for row, runs in cases.items():
        point[row], per_run = mean_over_runs(runs, whole)
        boot[row] = [mean_over_runs(runs, idx)[0] for idx in draws_idx]
        out["rows"][row] = {m: dict(value=_nan_none(point[row][m]), runs=[_nan_none(r[m]) for r in per_run],
                                    interval=_interval([b[m] for b in boot[row]], level)) for m in METRICS}
    if baseline is not None and baseline in cases:
        for row in cases:
            if row == baseline:
                continue
            diff = {}
            for m in METRICS:
                lo, hi = _interval([b[m] - c[m] for b, c in zip(boot[row], boot[baseline])], level)
                diff[m] = dict(value=_nan_none(point[row][m] - point[baseline][m]), interval=(lo, hi), verdict=verdict(lo, hi))
            out["rows"][row]["difference"] = diff
    return out


def _nan_none(v):
    return None if v is None or not np.isfinite(v) else float(v)
