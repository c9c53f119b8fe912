#!/usr/bin/env python
"""What each recipe buys on voices never heard: the paired ablation table of a nested study (`cli.py nested`).

Unit: one inner run of the study (trained on every speaker but two, a and b; validation a seeded share of its
own training speakers' samples) and one seed; its value the mean of its accuracies on a and on b. Every recipe
ran on the same units (same held-out pairs, same seeds), so each is compared with the study's recipe by the
mean +- 95 % CI (Student t) of the per-unit differences, never by overlapping intervals. Seed spread: the mean
over pairs of (max - min) over seeds. This table informs; the choices of the nested protocol are made per
outer speaker without it (train/nested.py).

    .venv/bin/python scripts/recipe_ablation.py runs/nested-shd [--markdown]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from train.nested import ablation, read_plan  # noqa: E402
from train.recipe import RECIPES  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("study", type=Path, help="a nested study directory (cli.py nested --out)")
    ap.add_argument("--baseline", default="study")
    args = ap.parse_args()
    plan = read_plan(args.study)
    rows = ablation(plan, args.baseline)
    units = len(plan.pairs) * len(plan.seeds)
    print(f"{plan.data}: {len(plan.pairs)} held-out pairs x {len(plan.seeds)} seeds = {units} units per recipe, "
          f"{plan.epochs} epochs, hidden {plan.hidden}\n")
    print(f"| model | recipe | units | accuracy (inner) | seed spread | vs {args.baseline}: mean +- 95 % CI "
          "(better / worse) |")
    print("|---|---|---|---|---|---|")
    for m, by_recipe in rows.items():
        for r, row in by_recipe.items():
            vs = row.get(f"vs_{args.baseline}")
            diff = "-" if vs is None else (f"{100 * vs['mean']:+.2f} +- {100 * vs['ci95']:.2f} "
                                          f"({vs['better']} / {vs['worse']})" + ("" if row["complete"] else " *"))
            acc = "-" if row["mean"] is None else f"{100 * row['mean']:.2f} %"
            spread = row["spread"]["mean"]
            spread = "-" if spread is None else f"{100 * spread:.2f}"
            print(f"| {m} | {r} | {row['units']} | {acc} | {spread} | {diff} |")
    print("\n" + "\n".join(f"- {r}: {RECIPES[r].describe()}" for r in plan.recipes if r in RECIPES))
    if any(not row.get("complete", True) for by in rows.values() for row in by.values()):
        print("\n* incomplete: compared on the units both have finished")


if __name__ == "__main__":
    main()
