"""Bootstrap intervals over test cases, and paired intervals of a difference between two models.

A benchmark's test set is a sample of cases: resampling the cases with replacement (the same draws
for every model, so differences are paired) shows how much a metric would move on another sample
of the same size. Repeated trainings of a model (other seeds) enter as the mean over runs of each
draw's metric. With `resample_runs` (the default) each draw also resamples the runs with
replacement, so that the interval covers the training noise as well as the case sample: at a short
training budget two seeds of one model can differ by more than two models do, and an interval over
cases alone then calls a seed's luck a difference. Where every row has the same number of runs, the
draw picks the same positions in each (runs are paired by seed, as the cases are by name): the same
weights predicted two ways then differ only by what the prediction changed. Each run's value is
reported beside the interval.
"""
import numpy as np

from cosam_nn.evaluation.detection_metrics import Matched, average_precision, froc

METRICS = ("dice", "froc", "ap10", "sens_small", "froc_small")
SMALL_MM = 5.0


def case_record(case_result, detection_iou=0.1):
    """What the resampled metrics need of one case of `evaluation.evaluate_case`, JSON-ready."""
    m = case_result["matches"][detection_iou]
    return {"dice": case_result["dice"], "scores": [float(s) for s in m.scores],
            "tp": [bool(t) for t in m.true_positive], "found": [bool(f) for f in m.found],
            "reference_of": [int(r) for r in m.reference_of],
            "short_axes_mm": [float(a) for a in case_result["short_axes_mm"]]}


class _Cases:
    """One run's case records as arrays, so that a draw only indexes."""

    def __init__(self, records):
        self.dice = np.array([np.nan if r["dice"] is None else r["dice"] for r in records], float)
        # records written before reference_of was kept cannot give the small nodes' FROC score
        self.linked = all("reference_of" in r for r in records)
        self.groups = [Matched(np.asarray(r["scores"], float), np.asarray(r["tp"], bool), np.asarray(r["found"], bool),
                               np.asarray(r.get("reference_of", [-1] * len(r["scores"])), int)) for r in records]
        self.is_small = [np.asarray(r["short_axes_mm"], float) < SMALL_MM for r in records]

    def metrics(self, idx):
        dice = self.dice[idx]
        groups = [self.groups[i] for i in idx]
        is_small = [self.is_small[i] for i in idx]
        small = np.concatenate([g.found[s] for g, s in zip(groups, is_small)]) if len(idx) else np.zeros(0, bool)
        return {"dice": float(np.nanmean(dice)) if np.isfinite(dice).any() else np.nan,
                "froc": froc(groups, len(idx))[1],
                "ap10": average_precision(groups),
                "sens_small": float(small.mean()) if small.size else np.nan,
                "froc_small": froc(groups, len(idx), counted=is_small)[1] if self.linked else np.nan}


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


def _mean_over_runs(per_run, picks=None):
    """{metric: mean over the runs (or over the runs at indices `picks`, repeats counted)}."""
    chosen = per_run if picks is None else [per_run[i] for i in picks]
    return {m: float(np.nanmean([r[m] for r in chosen])) if any(np.isfinite(r[m]) for r in chosen) else np.nan
            for m in METRICS}


def compare(rows, baseline=None, draws=2000, seed=0, level=0.95, resample_runs=True):
    """rows: {row name: [run, ...]}, a run {case: case_record}. Returns, per row and metric, the value
    on the whole test set (mean over runs), each run's value, and the interval; for each row other
    than `baseline`, the paired difference to it with its interval and verdict. Differences are
    paired on the cases, and on the runs' positions where every row has as many runs."""
    cases, names = _aligned(rows)
    n = len(names)
    rng = np.random.default_rng(seed)
    draws_idx = rng.integers(0, n, size=(draws, n)) if n else np.zeros((0, 0), int)
    whole = np.arange(n)

    counts = {len(runs) for runs in cases.values()}
    shared = None  # run positions drawn once for every row: rows with as many runs are paired by seed
    if resample_runs and len(counts) == 1:
        r = counts.pop()
        shared = rng.integers(0, r, size=(draws, r))

    point, boot = {}, {}
    out = {"cases": n, "draws": draws, "level": level, "runs_resampled": resample_runs, "rows": {}}
    for row, runs in cases.items():
        per_run = [c.metrics(whole) for c in runs]
        point[row] = _mean_over_runs(per_run)
        if not resample_runs:
            picks = [None] * len(draws_idx)
        elif shared is not None:
            picks = shared
        else:
            picks = rng.integers(0, len(runs), size=(draws, len(runs)))
        boot[row] = [_mean_over_runs([c.metrics(idx) for c in runs], pick) for idx, pick in zip(draws_idx, picks)]
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
