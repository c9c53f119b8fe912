"""`cli.py report`: the study's Table 1 (accuracy), Table 2 (operations) and Fig. 3 (accuracy vs operations)
for every trained model found under a runs directory.

A run directory is one holding ``best.pt`` (with ``summary.json`` once training finished). Each model is
evaluated on its test split (as train.evaluate.evaluate does: accuracy, activity, Table 2 ops from the
float activity); runs of one configuration (model, layers, hidden, data) are grouped over seeds: test accuracy
mean +- 95 % CI (Student t, train.stats.mean_ci), ops averaged. Where an exported network file (``*.h5``)
lies in a run directory, its operations are *measured* by the fast engine on the same test split (the
event counts the Lava counters give, tests/test_sim.py), with the fixed-point accuracy.

Output: ``--out report.html`` (one self-contained file, the figure embedded as PNG) or ``--out report.md``
(Markdown, the figure beside it as report.png). Written atomically.
"""
from __future__ import annotations

# Lava first: it fixes multiprocessing's start method when imported (see tests/conftest.py)
import lava.magma.runtime.message_infrastructure.multiprocessing  # noqa: F401  isort: skip

import base64
import html
import io
import json
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path

import numpy as np

from train.atomic import atomic_path
from train.errors import InputError

FORMATS = (".html", ".md")


def find_run_dirs(root: Path) -> list[Path]:
    """Directories under root (root included) holding a best.pt, sorted."""
    if not root.exists():
        raise InputError(f"{root}: no such runs directory")
    if not root.is_dir():
        raise InputError(f"{root}: not a directory")
    dirs = sorted({p.parent for p in root.rglob("best.pt")})
    if not dirs:
        raise InputError(f"{root}: no trained models (no run directory with best.pt) found")
    return dirs


def _measured(run_dir: Path, ev: dict, progress: bool) -> list[dict]:
    """Fast-engine measurements of every network file in run_dir: ops per step per sample and accuracy."""
    from export.netx_h5 import read_network
    from sim.engine import measured_ops, run_fast
    from sim.simulate import load_split

    out = []
    for h5 in sorted(run_dir.glob("*.h5")):
        try:
            net = read_network(h5)
            _, split = load_split(net, None, ev["split"], None, h5)
        except InputError as exc:
            out.append({"file": str(h5), "error": str(exc)})
            continue
        res = run_fast(net, split, progress=progress)
        rows = measured_ops(net, res.counts)
        mac, ac = sum(r["mac"] for r in rows), sum(r["ac"] for r in rows)
        out.append({"file": str(h5), "accuracy": res.accuracy, "mac": mac, "ac": ac, "ops": mac + ac,
                    "samples": res.counts.samples})
    return out


def evaluate_run(checkpoint: str | Path, limit: int | None = None) -> dict:
    """Test accuracy, activity and Table 2 ops of a checkpoint, as train.evaluate.evaluate gives them (the same
    data loading), for every model kind (evaluate() itself stops on 2-layer ANNs)."""
    from train.checkpoint import load_checkpoint
    from train.datasets import load_dataset
    from train.evaluate import run_split
    from train.models import SPIKING, ModelConfig, model_from_checkpoint
    from train.ops import model_ops, totals

    ckpt = load_checkpoint(checkpoint)
    cfg = ModelConfig(**ckpt["model"])
    tc, spec = ckpt.get("train_config", {}), ckpt.get("data", {}).get("spec", {})
    dataset = load_dataset(tc.get("data", "builtin"), bin_hz=spec.get("bin_hz"), duration=spec.get("duration"),
                           n_channels=spec.get("n_channels"), seed=tc.get("seed", 0))
    if dataset.spec.n_channels != cfg.n_in or dataset.n_classes != cfg.n_classes:
        raise InputError(f"{ckpt['path']}: its dataset no longer fits the model (channels or classes)")
    res = run_split(model_from_checkpoint(ckpt), dataset.test, limit=limit)
    rates = list(res["rates"]) + [0.0] * (len(cfg.sizes) - len(res["rates"]))  # ANNs: rates unused, padded
    rows = model_ops(cfg.kind, cfg.sizes, cfg.n_classes, rates)
    return {"model": cfg.kind, "layers": cfg.layers, "hidden": cfg.hidden, "data": dataset.name, "split": "test",
            "epoch": ckpt["epoch"], "accuracy": res["accuracy"], "input_rate": res["rates"][0],
            "layer_rates": res["rates"][1:] if cfg.kind in SPIKING else [],
            "ops": [asdict(r) for r in rows], "ops_total": totals(rows)}


def collect(root: str | Path, progress: bool = True, limit: int | None = None) -> dict:
    """Every model under root evaluated; grouped rows for the tables and the figure."""
    from train.stats import mean_ci

    root = Path(root)
    runs = []
    for d in find_run_dirs(root):
        summary = json.loads((d / "summary.json").read_text()) if (d / "summary.json").exists() else None
        try:
            ev = evaluate_run(d / "best.pt", limit)
        except InputError as exc:
            runs.append({"run_dir": str(d), "error": str(exc)})
            continue
        runs.append({"run_dir": str(d), "finished": summary is not None, "model": ev["model"], "layers": ev["layers"],
                     "hidden": ev["hidden"], "data": ev["data"], "epoch": ev["epoch"],
                     "test_acc": summary["test_acc"] if summary else ev["accuracy"],
                     "ops": ev["ops_total"], "layer_ops": ev["ops"], "rates": [ev["input_rate"]] + ev["layer_rates"],
                     "measured": _measured(d, ev, progress)})
    groups = defaultdict(list)
    for r in runs:
        if "error" not in r:
            groups[(r["model"], r["layers"], r["hidden"], r["data"])].append(r)
    rows = []
    for (model, layers, hidden, data), rs in sorted(groups.items()):
        mean, half = mean_ci([r["test_acc"] for r in rs])
        meas = [m for r in rs for m in r["measured"] if "error" not in m]
        rows.append({
            "model": model, "layers": layers, "hidden": hidden, "data": data, "seeds": len(rs),
            "finished": sum(r["finished"] for r in rs), "epochs": max(r["epoch"] for r in rs),
            "acc_mean": mean, "acc_ci95": half,
            "mac": float(np.mean([r["ops"]["mac"] for r in rs])), "ac": float(np.mean([r["ops"]["ac"] for r in rs])),
            "ops": float(np.mean([r["ops"]["ops"] for r in rs])),
            "rates": [float(x) for x in np.mean([r["rates"] for r in rs], axis=0)] if rs[0]["rates"] else [],
            "measured_mac": float(np.mean([m["mac"] for m in meas])) if meas else None,
            "measured_ac": float(np.mean([m["ac"] for m in meas])) if meas else None,
            "measured_ops": float(np.mean([m["ops"] for m in meas])) if meas else None,
            "fixed_acc": float(np.mean([m["accuracy"] for m in meas])) if meas else None,
        })
    return {"root": str(root), "runs": runs, "rows": rows}


def figure_png(rows: list[dict]) -> bytes:
    """Fig. 3 style: test accuracy (mean +- 95 % CI) vs MAC+AC per timestep (log x), one point per configuration."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=110)
    markers = {"gru": "s", "rnn": "D", "lif": "v", "cuba-lif": "^", "spikgru": "o"}
    for r in rows:
        label = f"{r['model']} {r['layers']}x{r['hidden']} ({r['data']})"
        ax.errorbar(r["ops"], 100 * r["acc_mean"], yerr=100 * r["acc_ci95"], fmt=markers.get(r["model"], "o"),
                    capsize=3, label=label)
        if r["measured_ops"] is not None:
            ax.plot(r["measured_ops"], 100 * (r["fixed_acc"] or 0), marker=markers.get(r["model"], "o"),
                    mfc="none", color="gray", ls="none")
    ax.set_xscale("log")
    xs = [r["ops"] for r in rows] + [r["measured_ops"] for r in rows if r["measured_ops"] is not None]
    if xs:
        ax.set_xlim(min(xs) / 3, max(xs) * 3)
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("operations (MAC + AC) per timestep per sample")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("accuracy vs operations (open grey: measured, fixed point)")
    ax.grid(True, which="both", alpha=0.3)
    if rows:
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _fmt(x, prec=0) -> str:
    return "-" if x is None else f"{x:,.{prec}f}"


def _tables(res: dict) -> tuple[list[str], list[list[str]], list[str], list[list[str]]]:
    h1 = ["model", "size", "data", "seeds", "epochs", "test accuracy (mean +- 95 % CI)", "fixed-point accuracy"]
    t1 = [[r["model"], f"{r['layers']}x{r['hidden']}", r["data"], f"{r['seeds']}" +
           ("" if r["finished"] == r["seeds"] else f" ({r['seeds'] - r['finished']} unfinished)"), str(r["epochs"]),
           f"{100 * r['acc_mean']:.2f} +- {100 * r['acc_ci95']:.2f} %",
           "-" if r["fixed_acc"] is None else f"{100 * r['fixed_acc']:.2f} %"] for r in res["rows"]]
    h2 = ["model", "size", "data", "MAC/step", "AC/step", "MAC+AC/step", "measured MAC/step", "measured AC/step",
          "measured MAC+AC/step", "ops vs best ANN"]
    anns = [r["ops"] for r in res["rows"] if r["model"] in ("gru", "rnn")]
    ref = max(anns) if anns else None
    t2 = [[r["model"], f"{r['layers']}x{r['hidden']}", r["data"], _fmt(r["mac"]), _fmt(r["ac"]), _fmt(r["ops"]),
           _fmt(r["measured_mac"]), _fmt(r["measured_ac"]), _fmt(r["measured_ops"]),
           "-" if ref is None or r["model"] in ("gru", "rnn") else f"{ref / r['ops']:.1f}x fewer"]
          for r in res["rows"]]
    return h1, t1, h2, t2


NOTES = ("Accuracy: test split, mean over seeds with a Student-t 95 % confidence interval (Table 1). "
         "Operations: per timestep per sample, the study's Table 2 at each model's activity on the test split "
         "(float model); measured: the fast engine's event counts of the exported fixed-point network found in the "
         "run directory (equal to the Lava counters). 'ops vs best ANN': MAC+AC of the largest ANN listed / this model's.")


def render_markdown(res: dict, png_name: str) -> str:
    h1, t1, h2, t2 = _tables(res)
    md = lambda h, t: "\n".join(["| " + " | ".join(h) + " |", "|" + "---|" * len(h)] +
                                ["| " + " | ".join(row) + " |" for row in t])
    errors = [f"- {r['run_dir']}: {r['error']}" for r in res["runs"] if "error" in r]
    return "\n\n".join(filter(None, [
        f"# Results under {res['root']}", "## Accuracy (Table 1)", md(h1, t1), "## Operations (Table 2)", md(h2, t2),
        "## Accuracy vs operations (Fig. 3)", f"![accuracy vs operations]({png_name})", NOTES,
        ("## Runs left out\n\n" + "\n".join(errors)) if errors else ""])) + "\n"


def render_html(res: dict, png: bytes) -> str:
    h1, t1, h2, t2 = _tables(res)
    esc = html.escape

    def table(h, t):
        head = "".join(f"<th>{esc(c)}</th>" for c in h)
        body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in t)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    errors = "".join(f"<li>{esc(r['run_dir'])}: {esc(r['error'])}</li>" for r in res["runs"] if "error" in r)
    img = base64.b64encode(png).decode("ascii")
    style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
             "td,th{border:1px solid #bbb;padding:3px 8px;text-align:right}th{background:#eee}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>spikaudio report</title><style>{style}</style>"
            f"</head><body><h1>Results under {esc(res['root'])}</h1><h2>Accuracy (Table 1)</h2>{table(h1, t1)}"
            f"<h2>Operations (Table 2)</h2>{table(h2, t2)}<h2>Accuracy vs operations (Fig. 3)</h2>"
            f"<img alt='accuracy vs operations' src='data:image/png;base64,{img}'><p>{esc(NOTES)}</p>"
            + (f"<h2>Runs left out</h2><ul>{errors}</ul>" if errors else "") + "</body></html>\n")


def report(root: str | Path, out: str | Path, progress: bool = True, limit: int | None = None) -> dict:
    """Collects, renders and writes the report (atomically); returns {'out', 'figure', 'rows', 'runs'}."""
    out = Path(out)
    if out.suffix.lower() not in FORMATS:
        raise InputError(f"--out {out}: name a .html or a .md file")
    if out.is_dir():
        raise InputError(f"--out {out}: is a directory")
    if not out.parent.exists():
        raise InputError(f"--out {out}: directory {out.parent} does not exist")
    res = collect(root, progress, limit)
    png = figure_png(res["rows"])
    figure = None
    if out.suffix.lower() == ".html":
        text = render_html(res, png)
    else:
        figure = out.with_suffix(".png")
        with atomic_path(figure) as tmp:
            tmp.write_bytes(png)
        text = render_markdown(res, figure.name)
    with atomic_path(out) as tmp:
        tmp.write_text(text)
    return {"out": str(out), "figure": str(figure) if figure else None, "rows": res["rows"], "runs": res["runs"]}


def format_report(r: dict) -> str:
    lines = [f"{'model':<10}{'size':<8}{'data':<9}{'seeds':>6}   {'test accuracy (95 % CI)':<24}{'MAC+AC/step':>14}"
             f"{'measured':>12}"]
    for row in r["rows"]:
        lines.append(f"{row['model']:<10}{str(row['layers']) + 'x' + str(row['hidden']):<8}{row['data']:<9}"
                     f"{row['seeds']:>6}   {100 * row['acc_mean']:6.2f} +- {100 * row['acc_ci95']:.2f} %{'':<8}"
                     f"{row['ops']:>14,.0f}{_fmt(row['measured_ops']):>12}")
    for run in r["runs"]:
        if "error" in run:
            lines.append(f"left out {run['run_dir']}: {run['error']}")
    lines.append(f"wrote {r['out']}" + (f" and {r['figure']}" if r["figure"] else ""))
    return "\n".join(lines)
