"""`cli.py report`: the study's Table 1 (accuracy), Table 2 (operations) and Fig. 3 (accuracy vs operations)
for every trained model found under a runs directory.

A run directory is one holding ``best.pt`` (with ``summary.json`` once training finished). Each model is
evaluated on its own test set by train.evaluate.evaluate (accuracy, activity, Table 2 ops from the float
activity): the dataset's test split, or for a speaker-held-out run (``train --holdout-speaker``, ``cv``) its
held-out speaker. Runs are grouped into models as `summary` groups them (train.stats.same_model_key): mean +- 95 %
CI over seeds, or over folds for a cross-validation; ops averaged. A run's exported networks (``*.h5`` anywhere under
the runs directory that record its checkpoint, or lie in its directory) are counted by the fast engine on the same
test set (the counts the Lava counters give, tests/test_sim.py), with their accuracy. ``limit``: the samples eval
takes with --limit (audio.datasets.limit_index), for the float model and the networks alike.

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


def network_files(root: Path, run_dirs: list[Path]) -> dict[Path, list[Path]]:
    """The exported networks of each run: every network file (*.h5) under root whose recorded checkpoint is the
    run's (export writes it into the file), and a file in a run directory that records no run under root (a run
    directory copied or moved since)."""
    from export.netx_h5 import read_network

    owner = {(d / "best.pt").resolve(): d for d in run_dirs}
    found = {d: [] for d in run_dirs}
    for h5 in sorted(root.rglob("*.h5")):
        inside = h5.parent if h5.parent in found else None
        try:
            recorded = (read_network(h5).meta or {}).get("checkpoint")
        except InputError:
            recorded = None  # not a network (or a damaged one): a run's own file is still measured, and says so
        run = (owner.get(Path(recorded).resolve()) if recorded else None) or inside
        if run is not None:
            found[run].append(h5)
    return found


def _fixed_point_ops(files: list[Path], progress: bool, limit: int | None) -> list[dict]:
    """Fast-engine measurements of each network file on the network's own test set (the samples eval takes with the
    same --limit): ops per step per sample and accuracy."""
    from audio.datasets import limit_index
    from export.netx_h5 import read_network
    from sim.engine import run_fast
    from sim.simulate import load_split
    from sim.tally import counted_ops

    out = []
    for h5 in files:
        try:
            net = read_network(h5)
            _, split = load_split(net, None, None, None, h5)
        except InputError as exc:
            out.append({"file": str(h5), "error": str(exc)})
            continue
        res = run_fast(net, split, progress=progress, index=limit_index(split.labels, limit))
        rows = counted_ops(net, res.tally)
        mac, ac = sum(r["mac"] for r in rows), sum(r["ac"] for r in rows)
        out.append({"file": str(h5), "accuracy": res.accuracy, "mac": mac, "ac": ac, "ops": mac + ac,
                    "samples": res.tally.samples})
    return out


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text()) if path.exists() else None
    except json.JSONDecodeError:
        raise InputError(f"{path}: not readable JSON") from None


def collect(root: str | Path, progress: bool = True, limit: int | None = None) -> dict:
    """Every model under root evaluated on its own test set (a held-out speaker's, for a speaker-held-out run), and
    one row per model (train.stats.same_model_key, as `summary` groups them) for the tables and the figure."""
    from train.evaluate import evaluate
    from train.stats import group_accuracy, group_row, group_runs

    root = Path(root)
    dirs = find_run_dirs(root)
    networks = network_files(root, dirs)
    runs = []
    for d in dirs:
        summary, config = _read_json(d / "summary.json"), _read_json(d / "config.json")
        try:
            ev = evaluate(str(d / "best.pt"), limit=limit)
        except InputError as exc:
            imported = (d / "import.json").exists() and summary is None
            runs.append({"run_dir": str(d), "error": "an imported NIR graph brings no test set of its own (eval it "
                         "with --data FILE)" if imported else str(exc)})
            continue
        fixed_point = _fixed_point_ops(networks[d], progress, limit)
        fixed = [m["accuracy"] for m in fixed_point if "error" not in m]
        runs.append({"run_dir": str(d), "finished": summary is not None, "config": config, "model": ev["model"],
                     "layers": ev["layers"], "hidden": ev["hidden"], "data": ev["data"],
                     "seed": (config or summary or {}).get("seed", 0), "qat": ev["qat"], "best_epoch": ev["epoch"],
                     "epochs": (summary or {}).get("epochs", ev["epoch"]),
                     "recipe": (summary or {}).get("recipe", "study"), "protocol": ev["protocol"],
                     # with --limit, the float model's accuracy on the samples its networks ran too
                     "test_acc": summary["test_acc"] if summary and limit is None else ev["accuracy"],
                     "fixed_acc": float(np.mean(fixed)) if fixed else None,
                     "ops": ev["ops_total"], "layer_ops": ev["ops"], "rates": [ev["input_rate"]] + ev["layer_rates"],
                     "fixed_point": fixed_point})
    rows = []
    for key, rs in group_runs([r for r in runs if "error" not in r]):
        row = group_row(key, rs)
        meas = [m for r in rs for m in r["fixed_point"] if "error" not in m]
        with_fixed = [r for r in rs if r["fixed_acc"] is not None]
        mean = lambda values: float(np.mean(values)) if values else None
        row.update({
            "finished": sum(r["finished"] for r in rs),
            "mac": mean([r["ops"]["mac"] for r in rs]), "ac": mean([r["ops"]["ac"] for r in rs]),
            "ops": mean([r["ops"]["ops"] for r in rs]),
            "rates": [float(x) for x in np.mean([r["rates"] for r in rs], axis=0)] if rs[0]["rates"] else [],
            "fixed_mac": mean([m["mac"] for m in meas]), "fixed_ac": mean([m["ac"] for m in meas]),
            "fixed_ops": mean([m["ops"] for m in meas]),
            "fixed_acc": group_accuracy(with_fixed, key["protocol"], "fixed_acc")["test_acc_mean"] if with_fixed
            else None,
        })
        rows.append(row)
    return {"root": str(root), "runs": runs, "rows": rows}


def figure_png(rows: list[dict]) -> bytes:
    """accuracy_figure as PNG."""
    import matplotlib.pyplot as plt

    fig = accuracy_figure(rows)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def accuracy_figure(rows: list[dict]):
    """Fig. 3 style, one panel per dataset: accuracy (mean +- 95 % CI, at most 100 %) vs MAC+AC per timestep (log x),
    one point per model; an exported fixed-point network of a model is an open marker of the same colour. The legend
    names what is drawn, nothing else."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    from train.stats import data_label

    datasets = list(dict.fromkeys(data_label(r) for r in rows)) or ["-"]
    fig, axes = plt.subplots(1, len(datasets), figsize=(6.4 * len(datasets), 5.8), dpi=110, squeeze=False)
    markers = {"gru": "s", "rnn": "D", "lif": "v", "cuba-lif": "^", "spikgru": "o", "spiking": "*"}
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, dataset in zip(axes[0], datasets):
        part = [r for r in rows if data_label(r) == dataset]
        handles, xs, ys, open_drawn = [], [], [], False
        for k, r in enumerate(part):
            colour, marker = colours[k % len(colours)], markers.get(r["model"], "o")
            acc, ci = 100 * r["test_acc_mean"], 100 * (r["test_acc_ci95"] or 0.0)
            ax.errorbar(r["ops"], acc, yerr=[[min(ci, acc)], [min(ci, 100 - acc)]], fmt=marker, color=colour,
                        capsize=3)
            xs.append(r["ops"])
            ys.append(acc - ci)
            if r["fixed_ops"] is not None and r["fixed_acc"] is not None:
                ax.plot(r["fixed_ops"], 100 * r["fixed_acc"], marker=marker, mfc="none", color=colour, ls="none")
                xs.append(r["fixed_ops"])
                ys.append(100 * r["fixed_acc"])
                open_drawn = True
            handles.append(Line2D([], [], color=colour, marker=marker, ls="none", label=_figure_label(r)))
        if open_drawn:
            handles.append(Line2D([], [], color="grey", marker="o", mfc="none", ls="none",
                                  label="open: its exported fixed-point network (fast engine)"))
        _log_ops_axis(ax, xs)
        ax.set_ylim(max(0.0, min(ys, default=0.0) - 5), 100.5)
        ax.set_xlabel("operations (MAC + AC) per timestep per sample")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(dataset)
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(handles=handles, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), frameon=False)
    fig.tight_layout()
    return fig


def _figure_label(r: dict) -> str:
    where = {"test-split": "test split", "speaker-held-out": f"held out: {r.get('test_speakers')}"}
    return (f"{r['model']} {r['layers']}x{r['hidden']}, {r['recipe']}" + (f", {r['settings']}" if r["settings"] else "")
            + f" ({where.get(r['protocol'], r['protocol'])})")


def _log_ops_axis(ax, xs: list[float]) -> None:
    """A log x axis with labelled ticks at 1, 2 and 5 of every decade of the data (a narrow range still gets several)."""
    import matplotlib.ticker as ticker

    ax.set_xscale("log")
    if xs:
        lo, hi = min(xs) / 1.6, max(xs) * 1.6
        ax.set_xlim(lo, hi)
    ax.xaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_minor_locator(ticker.LogLocator(base=10, subs=tuple(range(1, 10))))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda x, _: f"{x / 1000:g}k" if x >= 1000 else f"{x:g}"))


def _fmt(x, prec=0) -> str:
    return "-" if x is None else f"{x:,.{prec}f}"


def _tables(res: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of each table: Table 1 for each protocol present (as `summary` prints them), then
    Table 2."""
    from train.stats import HELD_OUT, data_label, format_accuracy, members_line, protocol_title

    size = lambda r: f"{r['layers']}x{r['hidden']}"
    pct = lambda x: "-" if x is None else f"{100 * x:.2f} %"
    tables = []
    for protocol in dict.fromkeys(r["protocol"] for r in res["rows"]):
        part = [r for r in res["rows"] if r["protocol"] == protocol]
        folds = part[0].get("folds") is not None
        h = ["model", "size", "data", "recipe", "settings", "epochs", "seeds"] + (["folds"] if folds else []) + \
            ["accuracy (mean +- 95 % CI)", "fixed-point accuracy",
             "per fold" if folds else "speakers" if protocol == HELD_OUT else "test voices", "runs"]
        t = [[r["model"], size(r), data_label(r), r["recipe"], r["settings"] or "-", str(r["epochs"]),
              f"{r['seeds']}" + ("" if r["finished"] == r["runs"] else f" ({r['runs'] - r['finished']} unfinished)")]
             + ([str(r["folds"])] if folds else [])
             + [format_accuracy(r), pct(r["fixed_acc"]),
                ", ".join(f"{k} {100 * v:.1f}" for k, v in r["fold_acc"].items()) if folds else
                r["test_speakers"] if protocol == HELD_OUT else r["test_voices"] or "-",
                members_line(r["members"])[len("runs: "):]] for r in part]
        tables.append((f"Accuracy (Table 1): {protocol_title(protocol)}", h, t))
    h2 = ["protocol", "model", "size", "data", "recipe", "settings", "MAC/step", "AC/step", "MAC+AC/step",
          "fixed-point MAC/step", "fixed-point AC/step", "fixed-point MAC+AC/step", "ops vs largest ANN"]
    t2 = []
    for r in res["rows"]:
        anns = [a["ops"] for a in res["rows"] if a["model"] in ("gru", "rnn") and a["protocol"] == r["protocol"]
                and data_label(a) == data_label(r)]
        ref = max(anns) if anns else None
        t2.append([r["protocol"], r["model"], size(r), data_label(r), r["recipe"], r["settings"] or "-",
                   _fmt(r["mac"]), _fmt(r["ac"]), _fmt(r["ops"]), _fmt(r["fixed_mac"]), _fmt(r["fixed_ac"]),
                   _fmt(r["fixed_ops"]),
                   "-" if ref is None or r["model"] in ("gru", "rnn") else f"{ref / r['ops']:.1f}x fewer"])
    tables.append(("Operations (Table 2)", h2, t2))
    return tables


NOTES = ("Rows: one per model, as `summary` groups runs (every setting that changes what is trained, the protocol, "
         "fine-tuned or not); 'seeds' counts distinct seeds, 'epochs' the epochs trained; one seed (or fold) gives "
         "no interval. Accuracy on the dataset's test split: mean over seeds with a Student-t 95 % confidence "
         "interval. Cross-validation: accuracy on every sample of a speaker the model never heard (nor chose its "
         "epoch on), each fold's seeds averaged, mean and Student-t 95 % CI over folds. "
         "Operations: per timestep per sample, the study's Table 2 at each model's activity on its test set "
         "(float model); fixed-point: the event counts of the model's exported networks (found under the runs "
         "directory by the checkpoint they record), counted by the fast engine (equal to the Lava counters). "
         "'ops vs largest ANN': MAC+AC of the largest ANN of the same protocol and data / this model's.")


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
    from train.stats import data_label, format_accuracy

    w = max([10] + [len(data_label(row)) + 2 for row in r["rows"]])
    lines = [f"{'protocol':<22}{'model':<10}{'size':<8}{'data':<{w}}{'recipe':<8}{'runs':>5}   "
             f"{'accuracy (95 % CI)':<28}{'MAC+AC/step':>12}{'fixed pt':>12}   settings"]
    for row in r["rows"]:
        lines.append(f"{row['protocol']:<22}{row['model']:<10}{str(row['layers']) + 'x' + str(row['hidden']):<8}"
                     f"{data_label(row):<{w}}{row['recipe']:<8}{row['runs']:>5}   {format_accuracy(row):<28}"
                     f"{row['ops']:>12,.0f}{_fmt(row['fixed_ops']):>12}   {row['settings']}".rstrip())
    for run in r["runs"]:
        if "error" in run:
            lines.append(f"left out {run['run_dir']}: {run['error']}")
    lines.append(f"wrote {r['out']}" + (f" and {r['figure']}" if r["figure"] else ""))
    return "\n".join(lines)
