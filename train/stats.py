"""Mean and Student-t 95 % confidence interval over seeds, as in the study's Table 1."""
from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy import stats

from audio.speakers import HELD_OUT, SEEN
from common.errors import InputError


def mean_ci(values: list[float], level: float = 0.95) -> tuple[float, float]:
    """(mean, half-width of the `level` CI); the half-width is 0 for a single value."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        raise ValueError("no values")
    if x.size == 1:
        return float(x[0]), 0.0
    half = stats.t.ppf(0.5 + level / 2, df=x.size - 1) * x.std(ddof=1) / math.sqrt(x.size)
    return float(x.mean()), float(half)


def paired_difference(first: dict, second: dict, level: float = 0.95) -> dict:
    """second - first over the same units (e.g. (fold, seed) -> accuracy), mean +- `level` CI of the differences.

    Two candidates are compared only where both ran on the same folds and seeds: a unit present on one side
    only is an error, never silently dropped."""
    if set(first) != set(second):
        only_a = sorted(map(str, set(first) - set(second)))
        only_b = sorted(map(str, set(second) - set(first)))
        raise InputError(f"unpaired comparison: units only in the first ({', '.join(only_a) or '-'}), only in the "
                         f"second ({', '.join(only_b) or '-'})")
    if not first:
        raise InputError("paired comparison of nothing: no common folds and seeds")
    diff = [second[k] - first[k] for k in sorted(first, key=str)]
    mean, half = mean_ci(diff, level)
    return {"mean": mean, "ci95": half, "n": len(diff), "better": int(sum(d > 0 for d in diff)),
            "worse": int(sum(d < 0 for d in diff))}


def seed_spread(acc: dict) -> dict:
    """How far a model's accuracy moves between seeds on one fold: acc maps (fold, seed) -> accuracy; the
    range (max - min) over seeds per fold, its mean and its maximum over folds."""
    by_fold = defaultdict(list)
    for (fold, _seed), a in acc.items():
        by_fold[fold].append(a)
    ranges = {f: float(max(v) - min(v)) for f, v in by_fold.items() if len(v) > 1}
    if not ranges:
        return {"mean": None, "max": None, "per_fold": {}}
    return {"mean": float(np.mean(list(ranges.values()))), "max": max(ranges.values()), "per_fold": ranges}


def run_units(paths: list[str]) -> dict:
    """(fold, seed) -> test accuracy of the finished runs under `paths`; the fold is the held-out speaker(s), or
    'test split' for runs scored on a dataset's own test split. Two runs of one unit are an error."""
    units = {}
    for run in find_runs(paths):
        unit = (_protocol(run).get("test_speaker", "test split"), run["seed"])
        if unit in units:
            raise InputError(f"{', '.join(paths)}: two runs of fold {unit[0]}, seed {unit[1]} ({run['run_dir']}); "
                             "compare one configuration per side")
        units[unit] = run["test_acc"]
    return units


def paired_runs(first: list[str], second: list[str]) -> dict:
    """`cli.py paired A B`: B - A on the folds and seeds both ran (mismatched units are an error)."""
    a, b = run_units(first), run_units(second)
    return {"first": first, "second": second, "difference": paired_difference(a, b),
            "first_mean": float(np.mean(list(a.values()))), "second_mean": float(np.mean(list(b.values()))),
            "first_spread": seed_spread(a), "second_spread": seed_spread(b)}


def format_paired(r: dict) -> str:
    d = r["difference"]
    spread = lambda s: "-" if s["mean"] is None else f"{100 * s['mean']:.2f}"
    return (f"{' '.join(r['second'])} - {' '.join(r['first'])}, paired over {d['n']} folds x seeds: "
            f"{100 * d['mean']:+.2f} +- {100 * d['ci95']:.2f} points (95 % CI; {d['better']} better, {d['worse']} "
            f"worse)\nmeans {100 * r['first_mean']:.2f} % -> {100 * r['second_mean']:.2f} %; seed spread (mean "
            f"max - min per fold) {spread(r['first_spread'])} -> {spread(r['second_spread'])} points")


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


def _protocol(run: dict) -> dict:
    return run.get("protocol") or {"kind": SEEN}


def summarize(paths: list[str]) -> list[dict]:
    """One row per (model, layers, hidden, data, recipe, protocol).

    Seen speakers (the dataset's own test split): test accuracy mean +- 95 % CI over seeds.
    Speaker-held-out: each held-out speaker (fold) averaged over its seeds, then mean +- 95 % CI over folds."""
    groups = defaultdict(list)
    for run in find_runs(paths):
        key = (run["model"], run["layers"], run["hidden"], run["data"], run.get("recipe", "study"),
               _protocol(run)["kind"])
        groups[key].append(run)
    rows = []
    for (model, layers, hidden, data, recipe, kind), runs in sorted(groups.items()):
        row = {"model": model, "layers": layers, "hidden": hidden, "data": data, "recipe": recipe, "protocol": kind,
               "seeds": len({r["seed"] for r in runs}), "runs": len(runs), "epochs": max(r["epochs"] for r in runs)}
        row.update(group_accuracy(runs, kind))
        rows.append(row)
    return rows


def group_accuracy(runs: list[dict], kind: str, key: str = "test_acc") -> dict:
    """test_acc_mean and test_acc_ci95 of runs of one configuration: over seeds (seen speakers), or over folds
    with each fold's seeds averaged first (speaker-held-out; then also folds and fold_acc)."""
    if kind != HELD_OUT:
        mean, half = mean_ci([r[key] for r in runs])
        return {"test_acc_mean": mean, "test_acc_ci95": half}
    folds = defaultdict(list)
    for r in runs:
        folds[r["protocol"]["test_speaker"]].append(r[key])
    per_fold = {k: float(np.mean(v)) for k, v in sorted(folds.items())}
    mean, half = mean_ci(list(per_fold.values()))
    return {"test_acc_mean": mean, "test_acc_ci95": half, "folds": len(per_fold), "fold_acc": per_fold}


def format_summary(rows: list[dict]) -> str:
    seen = [r for r in rows if r["protocol"] != HELD_OUT]
    held = [r for r in rows if r["protocol"] == HELD_OUT]
    lines = []
    if seen:
        lines.append("seen speakers (the dataset's test split): test accuracy mean +- 95 % CI over seeds")
        lines.append(f"{'model':<10}{'size':<8}{'data':<9}{'recipe':<8}{'seeds':>6}{'epochs':>7}   test accuracy")
        for r in seen:
            lines.append(f"{r['model']:<10}{str(r['layers']) + 'x' + str(r['hidden']):<8}{r['data']:<9}"
                         f"{r['recipe']:<8}{r['seeds']:>6}{r['epochs']:>7}   "
                         f"{100 * r['test_acc_mean']:.2f} +- {100 * r['test_acc_ci95']:.2f} %")
    if held:
        if lines:
            lines.append("")
        lines.append("speaker held out (leave-one-speaker-out): accuracy on the unseen speaker, seeds averaged per "
                     "fold, mean +- 95 % CI over folds")
        lines.append(f"{'model':<10}{'size':<8}{'data':<9}{'recipe':<8}{'folds':>6}{'seeds':>6}{'epochs':>7}   "
                     f"held-out accuracy          per fold")
        for r in held:
            folds = ", ".join(f"{k} {100 * v:.1f}" for k, v in r["fold_acc"].items())
            lines.append(f"{r['model']:<10}{str(r['layers']) + 'x' + str(r['hidden']):<8}{r['data']:<9}"
                         f"{r['recipe']:<8}{r['folds']:>6}{r['seeds']:>6}{r['epochs']:>7}   "
                         f"{100 * r['test_acc_mean']:6.2f} +- {100 * r['test_acc_ci95']:5.2f} %   {folds}")
    return "\n".join(lines)
