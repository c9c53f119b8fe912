#!/usr/bin/env python
"""Voices never heard, nested: the GRU against the best spiking model, each chosen without the test speaker.

Runs (or continues) `cli.py nested` (train/nested.py: each model's recipe and each family's model chosen on
inner leave-two-speakers-out folds that never hold the outer test speaker; then each model at its chosen
recipe trained on every other speaker, seeds per fold, and scored on the test speaker once). Then, for every
outer run of a spiking model, the best checkpoint is exported to Loihi 2 fixed point and the fast engine
(bit-equal to Lava) runs the test speaker: the fixed-point accuracy. Ops per step: the study's Table 2 at the
test speakers' activity (train/ops.py), mean over the outer runs.

Printed: per model and per family the held-out accuracy, mean +- 95 % CI over folds (seeds averaged per
fold), the seed spread, fixed point and ops; the paired spiking-minus-GRU difference over folds and seeds;
and the last line

    loso_gru=<acc> loso_spiking=<acc of the best spiking family> gap=<spiking - gru> fixed_point_loss=<points>
    ops_ratio=<GRU ops / the spiking family's>

(ops and the fixed-point loss of a family: the mean over folds of the model chosen in each), once the gap covers
every fold and outer seed: a study still running (or stopped) prints its partial figures without it.

    .venv/bin/python benchmarks/speaker_generalisation.py --out runs/nested-shd [--data DATA] [--models ...]
        [--recipes ...] [--seeds 2] [--outer-seeds 3] [--epochs 20] [--outer-epochs 40] [--jobs 2] [--report-only]
        [--figure heldout.png]

--figure: accuracy on the held-out speakers (mean +- 95 % CI over folds) against operations per step, one point per
model at the recipes chosen for it (open: its fixed-point networks), drawn by sim.report.accuracy_figure.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# Lava fixes multiprocessing's start method on import and fails if training (in this process) fixed it first
import lava.magma.runtime.message_infrastructure.multiprocessing  # noqa: F401,E402  isort: skip
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from machine import announce_load  # noqa: E402  (benchmarks/machine.py)

from train.nested import format_nested, make_plan, nested_report, percent, read_plan, run_nested  # noqa: E402
from train.stats import mean_ci, paired_difference  # noqa: E402

MODELS = "gru-2,cuba-lif-2,spikgru-2"
RECIPES = "study,unseen,blend,softmax,regular,voices"


def fixed_point_accuracy(run_dir: Path) -> float:
    """Export the run's best checkpoint (cached beside it) and run its held-out speaker in the fast engine."""
    from export.exporter import export_checkpoint
    from sim.engine import run_fast
    from sim.simulate import load_net, load_split
    net_path = run_dir / "net.h5"
    if not net_path.exists():
        export_checkpoint(run_dir / "best.pt", net_path)
    net, _ = load_net(net_path)
    _, split = load_split(net, None, None, None, net_path)
    return run_fast(net, split, progress=False).accuracy


def ops_per_step(run_dir: Path) -> float:
    from train.evaluate import evaluate
    return evaluate(str(run_dir / "best.pt"))["ops_total"]["ops"]


def outer_runs(plan, report: dict, model: str) -> dict:
    """(fold, seed) -> the outer run directory of `model` at the recipe chosen for that fold."""
    runs = {}
    for o, recipe in report["models"][model]["recipes"].items():
        for k in plan.outer_seeds:
            d = plan.outer_dir(o, model, recipe, k)
            if (d / "summary.json").exists():
                runs[(o, k)] = d
    return runs


def measure(plan, report: dict) -> dict:
    """Per model: fixed-point accuracy (spiking), its paired loss against float, ops per step."""
    from train.models import SPIKING
    rows = {}
    for m, r in report["models"].items():
        runs = outer_runs(plan, report, m)
        if not runs:
            continue
        floats = {u: json.loads((d / "summary.json").read_text())["test_acc"] for u, d in runs.items()}
        row = {"ops": float(np.mean([ops_per_step(d) for d in runs.values()]))}
        if m.rpartition("-")[0] in SPIKING:
            fixed = {u: fixed_point_accuracy(d) for u, d in runs.items()}
            folds = {}
            for (o, _), a in fixed.items():
                folds.setdefault(o, []).append(a)
            row["fixed"] = mean_ci([float(np.mean(v)) for v in folds.values()])[0]
            row["fixed_loss"] = -paired_difference(floats, fixed)["mean"]
        rows[m] = row
    return rows


def figure_rows(plan, report: dict, extra: dict) -> list[dict]:
    """report's outcomes as the rows sim.report.accuracy_figure draws: each model scored in every fold, and the
    spiking family where its chosen model differs between folds (a model scored only where it was chosen would
    stand for some voices only)."""
    rows = []

    def row(model: str, layers: int, recipe: str, r: dict, ops: float, fixed: float | None) -> dict:
        return {"model": model, "layers": layers, "hidden": plan.hidden, "data_path": plan.data, "recipe": recipe,
                "settings": "", "protocol": "nested", "test_acc_mean": r["mean"], "test_acc_ci95": r["ci95"],
                "ops": ops, "fixed_ops": ops if fixed is not None else None, "fixed_acc": fixed}
    for m, r in report["models"].items():
        if r["folds"] < len(plan.speakers) or m not in extra:
            continue
        kind, _, layers = m.rpartition("-")
        chosen = sorted(set(r["recipes"].values()))
        rows.append(row(kind, int(layers), "/".join(chosen) + " (chosen per fold)", r, extra[m]["ops"],
                        extra[m].get("fixed")))
    chosen = [c["families"]["spiking"]["model"] for c in report["choices"].values() if c and "spiking" in c["families"]]
    if len(set(chosen)) > 1 and "spiking" in report["families"] and all(m in extra for m in chosen):
        names = ", ".join(f"{m} x{chosen.count(m)}" for m in sorted(set(chosen)))
        rows.append(row("spiking", int(chosen[0].rpartition("-")[2]), f"chosen per fold: {names}",
                        report["families"]["spiking"], float(np.mean([extra[m]["ops"] for m in chosen])), None))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "nested-shd")
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "fsdd-shd"))
    ap.add_argument("--models", default=MODELS)
    ap.add_argument("--recipes", default=RECIPES)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--outer-seeds", type=int, default=None, help="seeds of the outer folds (default: --seeds)")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--outer-epochs", type=int, default=None,
                    help="epochs of the outer runs (default: --epochs, or what the study in --out has)")
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--report-only", action="store_true", help="only collect what is there")
    ap.add_argument("--figure", type=Path, default=None, help="write the accuracy-vs-operations figure here (.png)")
    args = ap.parse_args()
    if args.report_only:
        plan = read_plan(args.out)
        announce_load(f"data {plan.data}")
        report = nested_report(plan)
    else:
        announce_load(f"data {args.data}")
        plan = make_plan(args.out, args.data, args.models.split(","), args.recipes.split(","), args.seeds, 0,
                         args.epochs, args.hidden, n_outer_seeds=args.outer_seeds, outer_epochs=args.outer_epochs)
        report = run_nested(plan, args.jobs)
    print(format_nested(report))
    extra = measure(plan, report)
    print(f"\n{'model':<14}{'fixed point':>12}{'float - fixed':>15}{'MAC+AC/step':>14}")
    for m, row in extra.items():
        fixed = "-" if "fixed" not in row else f"{100 * row['fixed']:.2f} %"
        loss = "-" if "fixed_loss" not in row else f"{100 * row['fixed_loss']:+.2f}"
        print(f"{m:<14}{fixed:>12}{loss:>15}{row['ops']:>14,.0f}")
    if args.figure:
        from sim.report import accuracy_figure
        fig = accuracy_figure(figure_rows(plan, report, extra))
        fig.axes[0].set_ylabel("accuracy on the held-out speaker (%), nested")
        fig.savefig(args.figure)
        print(f"wrote {args.figure}")
    fams = report["families"]
    if "ann" not in fams or "spiking" not in fams or "gap" not in report:
        print("the families are not complete yet: no last line")
        return
    ann_models = {c["families"]["ann"]["model"] for c in report["choices"].values() if c}
    spk_models = {c["families"]["spiking"]["model"] for c in report["choices"].values() if c}
    print(f"models chosen without the test speaker: ANN {', '.join(sorted(ann_models))}; spiking "
          f"{', '.join(sorted(spk_models))}")
    # each fold's chosen model counts once per fold it was chosen in
    per_fold = lambda fam, key: np.mean([extra[c["families"][fam]["model"]][key]
                                         for c in report["choices"].values() if c])
    ann_ops, spk_ops, fixed_loss = per_fold("ann", "ops"), per_fold("spiking", "ops"), per_fold("spiking", "fixed_loss")
    spread = [percent(fams[f]["spread"]["mean"]) for f in ("spiking", "ann")]
    print(f"seed spread (mean over folds of max - min): spiking {spread[0]}, ANN {spread[1]} points")
    gap = report["gap"]
    if not gap["complete"]:
        print(f"the gap covers {gap['n']} of {len(plan.speakers) * len(plan.outer_seeds)} fold x seed units so far: "
              "no last line until every one is in")
        return
    print(f"loso_gru={100 * fams['ann']['mean']:.2f} loso_spiking={100 * fams['spiking']['mean']:.2f} "
          f"gap={100 * gap['mean']:+.2f} fixed_point_loss={100 * fixed_loss:.2f} ops_ratio={ann_ops / spk_ops:.1f}")


if __name__ == "__main__":
    main()
