"""Mean and Student-t 95 % confidence interval over seeds, as in the study's Table 1."""
from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy import stats

from train.errors import InputError


def mean_ci(values: list[float], level: float = 0.95) -> tuple[float, float]:
    """(mean, half-width of the `level` CI); the half-width is 0 for a single value."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        raise ValueError("no values")
    if x.size == 1:
        return float(x[0]), 0.0
    half = stats.t.ppf(0.5 + level / 2, df=x.size - 1) * x.std(ddof=1) / math.sqrt(x.size)
    return float(x.mean()), float(half)


def find_runs(paths: list[str]) -> list[dict]:
    """summary.json of every finished run in `paths` (run directories or folders of them)."""
    found = []
    for p in map(Path, paths):
        if not p.exists():
            raise InputError(f"{p}: no such run directory")
        found += [json.loads(f.read_text()) for f in sorted(p.rglob("summary.json"))]
    if not found:
        raise InputError(f"{', '.join(paths)}: no finished runs (summary.json) found")
    return found


def summarize(paths: list[str]) -> list[dict]:
    """One row per (model, layers, hidden, data): seeds, test accuracy mean +- 95 % CI."""
    groups = defaultdict(list)
    for run in find_runs(paths):
        groups[(run["model"], run["layers"], run["hidden"], run["data"])].append(run)
    rows = []
    for (model, layers, hidden, data), runs in sorted(groups.items()):
        mean, half = mean_ci([r["test_acc"] for r in runs])
        rows.append({"model": model, "layers": layers, "hidden": hidden, "data": data, "seeds": len(runs),
                     "epochs": max(r["epochs"] for r in runs), "test_acc_mean": mean, "test_acc_ci95": half})
    return rows


def format_summary(rows: list[dict]) -> str:
    lines = [f"{'model':<10}{'size':<8}{'data':<9}{'seeds':>6}{'epochs':>7}   test accuracy (95 % CI)"]
    for r in rows:
        lines.append(f"{r['model']:<10}{str(r['layers']) + 'x' + str(r['hidden']):<8}{r['data']:<9}{r['seeds']:>6}"
                     f"{r['epochs']:>7}   {100 * r['test_acc_mean']:.2f} +- {100 * r['test_acc_ci95']:.2f} %")
    return "\n".join(lines)
