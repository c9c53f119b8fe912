"""`cli.py report`: the study's Table 1 (accuracy), Table 2 (operations) and Fig. 3 (accuracy vs operations)
for every trained model found under a runs directory.

A run directory is one holding ``best.pt`` (with ``summary.json`` once training finished). Each model is
evaluated on its own test set by train.evaluate.evaluate (accuracy, activity, Table 2 ops from the float
activity): the dataset's test split, or for a speaker-held-out run (``train --holdout-speaker``, ``cv``) its
held-out speaker. Runs of one configuration (protocol, model, layers, hidden, data, recipe) are grouped as
train.stats.group_accuracy does: mean +- 95 % CI over seeds, or over folds for the held-out protocol; ops
averaged. Where an exported network file (``*.h5``) lies in a run directory, the fixed-point network's operations
are counted by the fast engine on the same test set (the counts the Lava counters give, tests/test_sim.py), with
its accuracy.

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
from pathlib import Path

import numpy as np

from common.atomic import atomic_path
from common.errors import InputError

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


def _fixed_point_ops(run_dir: Path, progress: bool) -> list[dict]:
    """Fast-engine measurements of every network file in run_dir, on the network's own test set: ops per step
    per sample and accuracy."""
    from export.netx_h5 import read_network
    from sim.engine import run_fast
    from sim.simulate import load_split
    from sim.tally import counted_ops

    out = []
    for h5 in sorted(run_dir.glob("*.h5")):
        try:
            net = read_network(h5)
            _, split = load_split(net, None, None, None, h5)
        except InputError as exc:
            out.append({"file": str(h5), "error": str(exc)})
            continue
        res = run_fast(net, split, progress=progress)
        rows = counted_ops(net, res.tally)
        mac, ac = sum(r["mac"] for r in rows), sum(r["ac"] for r in rows)
        out.append({"file": str(h5), "accuracy": res.accuracy, "mac": mac, "ac": ac, "ops": mac + ac,
                    "samples": res.tally.samples})
    return out


def collect(root: str | Path, progress: bool = True, limit: int | None = None) -> dict:
    """Every model under root evaluated on its own test set (a held-out speaker's, for a speaker-held-out run);
    grouped rows for the tables and the figures."""
    from audio.speakers import SEEN
    from train.evaluate import evaluate
    from train.stats import group_accuracy

    root = Path(root)
    runs = []
    for d in find_run_dirs(root):
        summary = json.loads((d / "summary.json").read_text()) if (d / "summary.json").exists() else None
        try:
            ev = evaluate(str(d / "best.pt"), limit=limit)
        except InputError as exc:
            runs.append({"run_dir": str(d), "error": str(exc)})
            continue
        fixed_point = _fixed_point_ops(d, progress)
        fixed = [m["accuracy"] for m in fixed_point if "error" not in m]
        runs.append({"run_dir": str(d), "finished": summary is not None, "model": ev["model"], "layers": ev["layers"],
                     "hidden": ev["hidden"], "data": ev["data"], "epoch": ev["epoch"],
                     "recipe": (summary or {}).get("recipe", "study"), "protocol": ev["protocol"],
                     "test_acc": summary["test_acc"] if summary else ev["accuracy"],
                     "fixed_acc": float(np.mean(fixed)) if fixed else None,
                     "ops": ev["ops_total"], "layer_ops": ev["ops"], "rates": [ev["input_rate"]] + ev["layer_rates"],
                     "fixed_point": fixed_point})
    groups = defaultdict(list)
    for r in runs:
        if "error" not in r:
            groups[(r["protocol"].get("kind", SEEN), r["model"], r["layers"], r["hidden"], r["data"], r["recipe"])].append(r)
    rows = []
    for (kind, model, layers, hidden, data, recipe), rs in sorted(groups.items()):
        meas = [m for r in rs for m in r["fixed_point"] if "error" not in m]
        with_fixed = [r for r in rs if r["fixed_acc"] is not None]
        acc = group_accuracy(rs, kind)
        rows.append({
            "protocol": kind, "model": model, "layers": layers, "hidden": hidden, "data": data, "recipe": recipe,
            "seeds": len(rs) if "folds" not in acc else len(rs) // max(1, acc["folds"]), "folds": acc.get("folds"),
            "fold_acc": acc.get("fold_acc"), "finished": sum(r["finished"] for r in rs),
            "runs": len(rs), "epochs": max(r["epoch"] for r in rs),
            "acc_mean": acc["test_acc_mean"], "acc_ci95": acc["test_acc_ci95"],
            "mac": float(np.mean([r["ops"]["mac"] for r in rs])), "ac": float(np.mean([r["ops"]["ac"] for r in rs])),
            "ops": float(np.mean([r["ops"]["ops"] for r in rs])),
            "rates": [float(x) for x in np.mean([r["rates"] for r in rs], axis=0)] if rs[0]["rates"] else [],
            "fixed_mac": float(np.mean([m["mac"] for m in meas])) if meas else None,
            "fixed_ac": float(np.mean([m["ac"] for m in meas])) if meas else None,
            "fixed_ops": float(np.mean([m["ops"] for m in meas])) if meas else None,
            "fixed_acc": group_accuracy(with_fixed, kind, "fixed_acc")["test_acc_mean"] if with_fixed else None,
        })
    return {"root": str(root), "runs": runs, "rows": rows}


PROTOCOL_TITLES = {"seen-speakers": "seen speakers (the dataset's test split)",
                   "speaker-held-out": "speaker held out (leave-one-speaker-out)"}


def figure_png(rows: list[dict]) -> bytes:
    """Fig. 3 style, one panel per protocol: accuracy (mean +- 95 % CI) vs MAC+AC per timestep (log x), one point
    per configuration."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    kinds = [k for k in PROTOCOL_TITLES if any(r["protocol"] == k for r in rows)] or list(PROTOCOL_TITLES)[:1]
    fig, axes = plt.subplots(1, len(kinds), figsize=(6.4 * len(kinds), 4.6), dpi=110, squeeze=False)
    markers = {"gru": "s", "rnn": "D", "lif": "v", "cuba-lif": "^", "spikgru": "o"}
    xs = [r["ops"] for r in rows] + [r["fixed_ops"] for r in rows if r["fixed_ops"] is not None]
    for ax, kind in zip(axes[0], kinds):
        for r in (r for r in rows if r["protocol"] == kind):
            label = f"{r['model']} {r['layers']}x{r['hidden']} ({r['data']}, {r['recipe']})"
            ax.errorbar(r["ops"], 100 * r["acc_mean"], yerr=100 * r["acc_ci95"], fmt=markers.get(r["model"], "o"),
                        capsize=3, label=label)
            if r["fixed_ops"] is not None and r["fixed_acc"] is not None:
                ax.plot(r["fixed_ops"], 100 * r["fixed_acc"], marker=markers.get(r["model"], "o"),
                        mfc="none", color="gray", ls="none")
        ax.set_xscale("log")
        if xs:
            ax.set_xlim(min(xs) / 3, max(xs) * 3)
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("operations (MAC + AC) per timestep per sample")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(PROTOCOL_TITLES[kind] + "\n(open grey: exported fixed-point network, fast engine)", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6, loc="best")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _fmt(x, prec=0) -> str:
    return "-" if x is None else f"{x:,.{prec}f}"


def _tables(res: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of each table: Table 1 per protocol present, then Table 2."""
    size = lambda r: f"{r['layers']}x{r['hidden']}"
    pct = lambda x: "-" if x is None else f"{100 * x:.2f} %"
    tables = []
    seen = [r for r in res["rows"] if r["protocol"] != "speaker-held-out"]
    held = [r for r in res["rows"] if r["protocol"] == "speaker-held-out"]
    if seen or not held:
        h = ["model", "size", "data", "recipe", "seeds", "epochs", "test accuracy (mean +- 95 % CI)",
             "fixed-point accuracy"]
        t = [[r["model"], size(r), r["data"], r["recipe"], f"{r['seeds']}" +
              ("" if r["finished"] == r["runs"] else f" ({r['runs'] - r['finished']} unfinished)"), str(r["epochs"]),
              f"{100 * r['acc_mean']:.2f} +- {100 * r['acc_ci95']:.2f} %", pct(r["fixed_acc"])] for r in seen]
        tables.append(("Accuracy, seen speakers (Table 1)", h, t))
    if held:
        h = ["model", "size", "data", "recipe", "folds", "seeds", "epochs",
             "held-out accuracy (mean +- 95 % CI over folds)", "fixed-point accuracy", "per fold"]
        t = [[r["model"], size(r), r["data"], r["recipe"], str(r["folds"]), str(r["seeds"]), str(r["epochs"]),
              f"{100 * r['acc_mean']:.2f} +- {100 * r['acc_ci95']:.2f} %", pct(r["fixed_acc"]),
              ", ".join(f"{k} {100 * v:.1f}" for k, v in r["fold_acc"].items())] for r in held]
        tables.append(("Accuracy, speaker held out (Table 1, leave-one-speaker-out)", h, t))
    h2 = ["protocol", "model", "size", "data", "recipe", "MAC/step", "AC/step", "MAC+AC/step", "fixed-point MAC/step",
          "fixed-point AC/step", "fixed-point MAC+AC/step", "ops vs largest ANN"]
    t2 = []
    for r in res["rows"]:
        anns = [a["ops"] for a in res["rows"] if a["model"] in ("gru", "rnn") and a["protocol"] == r["protocol"]]
        ref = max(anns) if anns else None
        t2.append([r["protocol"], r["model"], size(r), r["data"], r["recipe"], _fmt(r["mac"]), _fmt(r["ac"]),
                   _fmt(r["ops"]), _fmt(r["fixed_mac"]), _fmt(r["fixed_ac"]), _fmt(r["fixed_ops"]),
                   "-" if ref is None or r["model"] in ("gru", "rnn") else f"{ref / r['ops']:.1f}x fewer"])
    tables.append(("Operations (Table 2)", h2, t2))
    return tables


NOTES = ("Accuracy, seen speakers: the dataset's test split, mean over seeds with a Student-t 95 % confidence "
         "interval. Speaker held out: accuracy on every sample of a speaker the model never heard (nor chose its "
         "epoch on), each fold's seeds averaged, mean and Student-t 95 % CI over folds. "
         "Operations: per timestep per sample, the study's Table 2 at each model's activity on its test set "
         "(float model); fixed-point: the fast engine's event counts of the exported fixed-point network found in the "
         "run directory, counted by the fast engine (equal to the Lava counters). 'ops vs largest ANN': MAC+AC of the largest ANN of the same "
         "protocol / this model's.")


def render_markdown(res: dict, png_name: str) -> str:
    md = lambda h, t: "\n".join(["| " + " | ".join(h) + " |", "|" + "---|" * len(h)] +
                                ["| " + " | ".join(row) + " |" for row in t])
    errors = [f"- {r['run_dir']}: {r['error']}" for r in res["runs"] if "error" in r]
    parts = [f"# Results under {res['root']}"]
    for title, h, t in _tables(res):
        parts += [f"## {title}", md(h, t)]
    parts += ["## Accuracy vs operations (Fig. 3)", f"![accuracy vs operations]({png_name})", NOTES,
              ("## Runs left out\n\n" + "\n".join(errors)) if errors else ""]
    return "\n\n".join(filter(None, parts)) + "\n"


def render_html(res: dict, png: bytes) -> str:
    esc = html.escape

    def table(h, t):
        head = "".join(f"<th>{esc(c)}</th>" for c in h)
        body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in t)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    errors = "".join(f"<li>{esc(r['run_dir'])}: {esc(r['error'])}</li>" for r in res["runs"] if "error" in r)
    img = base64.b64encode(png).decode("ascii")
    style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
             "td,th{border:1px solid #bbb;padding:3px 8px;text-align:right}th{background:#eee}")
    tables = "".join(f"<h2>{esc(title)}</h2>{table(h, t)}" for title, h, t in _tables(res))
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>spikaudio report</title><style>{style}</style>"
            f"</head><body><h1>Results under {esc(res['root'])}</h1>{tables}<h2>Accuracy vs operations (Fig. 3)</h2>"
            f"<img alt='accuracy vs operations' src='data:image/png;base64,{img}'><p>{esc(NOTES)}</p>"
            + (f"<h2>Runs left out</h2><ul>{errors}</ul>" if errors else "") + "</body></html>\n")


def report(root: str | Path, out: str | Path, progress: bool = True, limit: int | None = None,
           force: bool = False) -> dict:
    """Collects, renders and writes the report (atomically); returns {'out', 'figure', 'rows', 'runs'}."""
    from common.atomic import check_output, claimed

    out = Path(out)
    if out.suffix.lower() not in FORMATS:
        raise InputError(f"--out {out}: name a .html or a .md file")
    check_output(out, force=force)
    if out.suffix.lower() == ".md":
        check_output(out.with_suffix(".png"), force=force, what="--out's figure")
    res = collect(root, progress, limit)
    png = figure_png(res["rows"])
    figure = None
    with claimed(out, force=force):  # the checks again, under the output's lock
        if out.suffix.lower() == ".html":
            text = render_html(res, png)
        else:
            figure = check_output(out.with_suffix(".png"), force=force, what="--out's figure")
            with atomic_path(figure) as tmp:
                tmp.write_bytes(png)
            text = render_markdown(res, figure.name)
        with atomic_path(out) as tmp:
            tmp.write_text(text)
    return {"out": str(out), "figure": str(figure) if figure else None, "rows": res["rows"], "runs": res["runs"]}


def format_report(r: dict) -> str:
    lines = [f"{'protocol':<18}{'model':<10}{'size':<8}{'data':<9}{'recipe':<8}{'runs':>5}   "
             f"{'accuracy (95 % CI)':<22}{'MAC+AC/step':>14}{'fixed pt':>12}"]
    for row in r["rows"]:
        lines.append(f"{row['protocol']:<18}{row['model']:<10}{str(row['layers']) + 'x' + str(row['hidden']):<8}"
                     f"{row['data']:<9}{row['recipe']:<8}{row['runs']:>5}   "
                     f"{100 * row['acc_mean']:6.2f} +- {100 * row['acc_ci95']:5.2f} %{'':<5}"
                     f"{row['ops']:>14,.0f}{_fmt(row['fixed_ops']):>12}")
    for run in r["runs"]:
        if "error" in run:
            lines.append(f"left out {run['run_dir']}: {run['error']}")
    lines.append(f"wrote {r['out']}" + (f" and {r['figure']}" if r["figure"] else ""))
    return "\n".join(lines)
