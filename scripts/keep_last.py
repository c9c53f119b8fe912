#!/usr/bin/env python
"""A nested study's runs of a recipe that keeps its last epoch, made from its finished runs of the same recipe
keeping its best (train.trainer.keep_last_of): the same trainings, so only the scoring is left to do.

    .venv/bin/python scripts/keep_last.py runs/nested-das --from regular --to regular-last
    .venv/bin/python cli.py nested --out runs/nested-das --data ... --models ... --recipes regular-last
      (the study's own command with the recipe added: scores them, and trains the outer runs not derived)
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from common.errors import InputError  # noqa: E402
from train.nested import read_plan  # noqa: E402
from train.recipe import make_recipe  # noqa: E402
from train.trainer import keep_last_of  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("study", type=Path, help="a nested study directory (cli.py nested --out)")
    ap.add_argument("--from", dest="source", default="regular", help="the recipe whose runs are read")
    ap.add_argument("--to", dest="target", default="regular-last", help="the recipe whose runs are made")
    args = ap.parse_args()
    try:
        plan = read_plan(args.study)
        recipe = make_recipe(args.target)
        pairs = [(plan.inner_dir(m, args.source, p, k), plan.inner_dir(m, args.target, p, k))
                 for m in plan.models for p in plan.pairs for k in plan.seeds]
        pairs += [(plan.outer_dir(o, m, args.source, k), plan.outer_dir(o, m, args.target, k))
                  for o in plan.speakers for m in plan.models for k in plan.seeds]
        made = [keep_last_of(src, dst, recipe, within=args.study) for src, dst in pairs
                if (src / "summary.json").exists() and not dst.exists()]
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(f"{len(made)} runs of {args.target} made from {args.source}'s in {args.study}")


if __name__ == "__main__":
    main()
