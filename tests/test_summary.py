"""`summary`, `report` and `cv` group runs into models by one definition (train.stats.same_model_key): runs that
differ in any setting that changes what is trained, in the protocol they were scored under, or in being fine-tuned
are separate rows; each row lists its runs; 'seeds' and 'epochs' mean one thing everywhere; one run gives no CI."""
from __future__ import annotations

import json

import pytest

from conftest import one_line_error, run_cli
from train.stats import mean_ci, summarize

SMALL = ["--model", "cuba-lif", "--layers", "1", "--hidden", "8", "--bin-hz", "25", "--batch", "32", "--epochs", "1",
         "--quiet"]
VARIANTS = {"subtract": ["--reset", "subtract"], "blend": ["--recipe", "blend"], "lava": ["--lava-cuba"],
            "dropout": ["--dropout", "0.1"]}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, _builtin_cache_dir):
    """One epoch each on the built-in data: the default Cuba-LIF at seeds 0 and 1, one run of each variant, and the
    default fine-tuned."""
    root = tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as m:
        m.setenv("SPIKAUDIO_CACHE", str(_builtin_cache_dir))
        for name, extra in {"base": [], "seed1": ["--seed", "1"], **VARIANTS}.items():
            res = run_cli("train", *SMALL, *extra, "--out", root / name)
            assert res.exit_code == 0, res.output
        res = run_cli("finetune", root / "base" / "best.pt", "--epochs", "1", "--quiet", "--out", root / "qat")
        assert res.exit_code == 0, res.output
    return root


def _rows(*paths) -> list[dict]:
    res = run_cli("summary", *paths, "--json")
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


@pytest.mark.parametrize("variant", [*VARIANTS, "qat"])
def test_runs_that_differ_in_one_setting_are_two_rows(runs, variant):
    rows = _rows(runs / "base", runs / variant)
    assert len(rows) == 2 and all(r["runs"] == 1 and r["seeds"] == 1 for r in rows), rows
    assert sorted(m for r in rows for m in r["members"]) == sorted([str(runs / "base"), str(runs / variant)])
    other = next(r for r in rows if r["members"] == [str(runs / variant)])
    assert other["settings"], other  # says what makes it another model
    assert all(r["test_acc_ci95"] is None for r in rows)  # one run: no interval


def test_seeds_of_one_model_are_one_row_with_its_runs_and_a_ci(runs):
    rows = _rows(runs)
    assert len(rows) == 2 + len(VARIANTS)
    (base,) = [r for r in rows if str(runs / "base") in r["members"]]
    assert base["members"] == [str(runs / "base"), str(runs / "seed1")] and base["seeds"] == base["runs"] == 2
    accs = [json.loads((runs / n / "summary.json").read_text())["test_acc"] for n in ("base", "seed1")]
    assert (base["test_acc_mean"], base["test_acc_ci95"]) == pytest.approx(mean_ci(accs))
    assert base["epochs"] == 1 and base["settings"] == "batch 32; bin-hz 25"
    (qat,) = [r for r in rows if r["key"]["finetuned"]]
    assert qat["settings"].endswith("fine-tuned (QAT)") and qat["members"] == [str(runs / "qat")]
    text = run_cli("summary", runs).output
    assert "% (1 run)" in text and "+- 0.00 %" not in text and f"runs: {runs / 'base'}, {runs / 'seed1'}" in text


def test_report_groups_as_summary_does(runs, tmp_path):
    from sim.report import report
    report_rows = report(runs, tmp_path / "r.md", progress=False, limit=6)["rows"]
    summary_rows = _rows(runs)
    assert [(r["members"], r["seeds"], r["epochs"], r["settings"]) for r in report_rows] == \
        [(r["members"], r["seeds"], r["epochs"], r["settings"]) for r in summary_rows]
    assert "(1 run)" in (tmp_path / "r.md").read_text()


def test_report_leaves_out_an_imported_graph_with_a_reason_and_measures_networks_anywhere_under_runs(runs, tmp_path):
    """An imported NIR graph (no dataset of its own) is left out in words, not with another dataset's channel
    error; a network exported anywhere under the runs directory is measured with the run it records."""
    import shutil

    import torch
    from sim.report import report
    shutil.copytree(runs / "base", tmp_path / "runs" / "base")
    ckpt = torch.load(runs / "base" / "best.pt", weights_only=False)
    ckpt.pop("train_config")
    ckpt["nir"] = {"source": "graph.nir"}
    (tmp_path / "runs" / "imported").mkdir()
    torch.save(ckpt, tmp_path / "runs" / "imported" / "best.pt")
    (tmp_path / "runs" / "imported" / "import.json").write_text("{}")
    (tmp_path / "runs" / "nets").mkdir()
    assert run_cli("export", tmp_path / "runs" / "base", "--out", tmp_path / "runs" / "nets" / "b.h5").exit_code == 0
    r = report(tmp_path / "runs", tmp_path / "r.md", progress=False, limit=6)
    (left,) = [x for x in r["runs"] if "error" in x]
    assert left["error"] == "an imported NIR graph brings no test set of its own (eval it with --data FILE)"
    (row,) = r["rows"]
    assert row["fixed_ops"] is not None and row["members"] == [str(tmp_path / "runs" / "base")]


def test_report_figure_one_panel_per_dataset_capped_at_100_with_labelled_ticks():
    """Each dataset its own panel; no error bar above 100 %; several labelled ticks on a narrow log axis; the
    legend names each drawn point and the open marker only where one is drawn."""
    import matplotlib.pyplot as plt
    from sim.report import accuracy_figure
    row = lambda model, data, acc, ci, ops, fixed=None: {
        "model": model, "layers": 1, "hidden": 8, "recipe": "study", "settings": "", "protocol": "test-split",
        "data_path": data, "test_acc_mean": acc, "test_acc_ci95": ci, "ops": ops, "fixed_ops": fixed,
        "fixed_acc": acc if fixed else None}
    fig = accuracy_figure([row("gru", "fsdd-shd", 0.97, 0.05, 3000.0), row("lif", "fsdd-shd", 0.9, None, 1200.0),
                           row("cuba-lif", "builtin", 0.99, 0.04, 1500.0, fixed=1450.0)])
    shd, builtin = fig.axes
    assert (shd.get_title(), builtin.get_title()) == ("fsdd-shd", "builtin")
    for ax in fig.axes:
        assert ax.get_ylim()[1] <= 100.5
        assert all(line.get_ydata().max() <= 100 for line in ax.get_lines() if len(line.get_ydata()))
        fig.canvas.draw()
        assert len([t for t in ax.get_xticklabels() if t.get_text() and ax.get_xlim()[0] <= t.get_position()[0]
                    <= ax.get_xlim()[1]]) >= 2
    assert len(shd.get_legend().get_texts()) == 2 and "open" not in " ".join(t.get_text() for t in
                                                                              shd.get_legend().get_texts())
    assert [t.get_text().startswith("open") for t in builtin.get_legend().get_texts()] == [False, True]
    plt.close(fig)


def _held_out_run(d, speakers: list[str], seed: int = 0, acc: float = 0.5) -> None:
    d.mkdir(parents=True)
    (d / "summary.json").write_text(json.dumps({
        "model": "lif", "layers": 1, "hidden": 8, "data": "builtin", "seed": seed, "epochs": 3, "test_acc": acc,
        "recipe": "study", "protocol": {"kind": "speaker-held-out", "test_speaker": ",".join(speakers),
                                        "test_speakers": speakers}}))


def test_a_cross_validation_keeps_its_folds_apart_from_runs_that_hold_out_speakers_alone(tmp_path):
    """A --holdout-speaker run (one speaker, or several at once) never joins a cross-validation's folds, even on the
    very speaker of a fold; the cross-validation's row is over folds (seeds averaged first)."""
    (tmp_path / "loso").mkdir()
    (tmp_path / "loso" / "cv.json").write_text("{}")
    for speaker, acc in (("a", 0.6), ("b", 0.8)):
        _held_out_run(tmp_path / "loso" / speaker / "seed0", [speaker], acc=acc)
    _held_out_run(tmp_path / "g", ["a"], acc=0.1)
    _held_out_run(tmp_path / "g1", ["a"], seed=1, acc=0.3)
    _held_out_run(tmp_path / "ab", ["a", "b"], acc=0.9)
    rows = {(r["protocol"], r["test_speakers"]): r for r in summarize([str(tmp_path)])}
    assert set(rows) == {("leave-one-speaker-out", None), ("speaker-held-out", "a"), ("speaker-held-out", "a,b")}
    cv = rows[("leave-one-speaker-out", None)]
    assert cv["folds"] == 2 and cv["fold_acc"] == {"a": 0.6, "b": 0.8}
    assert (cv["test_acc_mean"], cv["test_acc_ci95"]) == pytest.approx(mean_ci([0.6, 0.8]))
    alone = rows[("speaker-held-out", "a")]
    assert alone["seeds"] == 2 and alone["test_acc_mean"] == pytest.approx(0.2)
    assert rows[("speaker-held-out", "a,b")]["test_acc_ci95"] is None


def test_cv_refuses_to_continue_with_another_model(tmp_path, _builtin_cache_dir):
    """cv's own check of its directory uses the same definition: another recipe is another model (refused); more
    epochs extend every fold of the same model, as train --resume --epochs does."""
    args = ["cv", *SMALL, "--speakers", "speaker0", "--out", tmp_path / "cv"]
    assert run_cli(*args).exit_code == 0
    assert "other settings (recipe)" in one_line_error(run_cli(*args, "--recipe", "blend"))
    assert run_cli(*args, "--epochs", "2").exit_code == 0
    assert json.loads((tmp_path / "cv" / "speaker0" / "seed0" / "summary.json").read_text())["epochs"] == 2
