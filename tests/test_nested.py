"""The nested speaker-held-out protocol: choices blind to the test speaker, paired comparisons, resumable runs."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from common.errors import InputError
from conftest import REPO, one_line_error, run_cli, write_shd_file
from train.nested import Leak, choose, format_nested, make_plan, nested_report, read_plan, run_nested
from train.stats import paired_difference, seed_spread

SPEAKERS = ["ann", "bob", "cid", "dee"]


def _four_speakers(path, per=6, seed=0):
    """Two classes (a rising and a falling sweep over 40 channels), four speakers with their own offsets."""
    rng = np.random.default_rng(seed)
    times, units, labels, speakers = [], [], [], []
    for s in range(len(SPEAKERS)):
        for label in (0, 1):
            for _ in range(per):
                t = np.sort(rng.uniform(0.0, 0.5, 60))
                ch = (t * 80).astype(int) if label == 0 else (40 - t * 80).astype(int)
                times.append(t)
                units.append(np.clip(ch + 5 * s + rng.integers(-2, 3, 60), 0, 63))
                labels.append(label)
                speakers.append(s)
    path = write_shd_file(path, times, units, labels, ["up", "down"], speakers)
    import h5py
    with h5py.File(path, "a") as h5:
        h5.create_dataset("extra/speaker_names", data=np.array([n.encode() for n in SPEAKERS]))
    return path


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A finished nested study: two models, two recipes, two seeds, in process (jobs 0)."""
    root = tmp_path_factory.mktemp("nested")
    data = _four_speakers(root / "four.h5")
    plan = make_plan(root / "study", str(data), ["cuba-lif-1", "gru-1"], ["study", "blend"], n_seeds=2, epochs=2,
                     hidden=8)
    report = run_nested(plan, n_jobs=0, log=lambda m: None)
    return plan, report


def test_every_choice_is_blind_to_its_test_speaker(study):
    plan, report = study
    assert plan.speakers == SPEAKERS
    for o in SPEAKERS:
        choice = report["choices"][o]
        assert choice is not None and o not in choice["seen"]
        for m, c in choice["models"].items():
            assert o not in c["seen"] and set(c["seen"]) == set(SPEAKERS) - {o}
        # the recorded speakers come from the samples each run really held
        for i in set(SPEAKERS) - {o}:
            pair = tuple(sorted((o, i), key=SPEAKERS.index))
            run = json.loads((plan.inner_dir("cuba-lif-1", "study", pair, 0) / "summary.json").read_text())
            assert sorted(run["split_speakers"]["train"]) == sorted(set(SPEAKERS) - {o, i})
            assert set(run["split_speakers"]["valid"]) <= set(SPEAKERS) - {o, i}
            assert set(run["test_acc_by_speaker"]) == {o, i}
    for m, r in report["models"].items():
        assert r["folds"] == 4 and r["runs"] == 8, m
        for o in SPEAKERS:
            chosen = r["recipes"][o]
            run = json.loads((plan.outer_dir(o, m, chosen, 1) / "summary.json").read_text())
            assert run["split_speakers"]["test"] == [o] and o not in run["split_speakers"]["train"]
    assert set(report["families"]) == {"ann", "spiking"} and report["gap"]["n"] == 8 and report["gap"]["complete"]


def test_a_choice_that_saw_its_test_speaker_is_refused(study):
    plan, _ = study
    path = plan.inner_dir("gru-1", "blend", ("ann", "cid"), 1) / "summary.json"  # cid's choice reads its score on ann
    original = path.read_text()
    run = json.loads(original)
    run["split_speakers"]["valid"] = ["cid"]  # as if its epoch had been chosen on cid's samples
    try:
        path.write_text(json.dumps(run))
        with pytest.raises(Leak, match="test speaker cid"):
            choose(plan, "cid")
        assert choose(plan, "dee") is not None  # the run plays no part in dee's choice
    finally:
        path.write_text(original)
    assert nested_report(plan)["choices"]["cid"] is not None


def test_the_choice_is_the_best_inner_score_and_ties_go_to_the_first(study):
    plan, report = study
    for o in SPEAKERS:
        c = report["choices"][o]["models"]["cuba-lif-1"]
        scores = {}
        for r in plan.recipes:
            accs = []
            for i in set(SPEAKERS) - {o}:
                pair = tuple(sorted((o, i), key=SPEAKERS.index))
                for k in plan.seeds:
                    s = json.loads((plan.inner_dir("cuba-lif-1", r, pair, k) / "summary.json").read_text())
                    accs.append(s["test_acc_by_speaker"][i])
            scores[r] = np.mean(accs)
        best = max(scores.values())
        assert c["recipe"] == next(r for r in plan.recipes if scores[r] == best)
        assert c["inner_score"] == pytest.approx(best)


def test_ablation_is_paired_on_the_same_pairs_and_seeds(study):
    plan, report = study
    rows = report["ablation"]["cuba-lif-1"]
    assert rows["study"]["units"] == rows["blend"]["units"] == 6 * 2
    assert rows["blend"]["vs_study"]["n"] == 12 and rows["blend"]["complete"]


def test_rerunning_keeps_every_finished_run(study):
    plan, report = study
    stamp = {p: p.stat().st_mtime_ns for p in plan.out.rglob("summary.json")}
    again = run_nested(plan, n_jobs=0, log=lambda m: None)
    assert {p: p.stat().st_mtime_ns for p in plan.out.rglob("summary.json")} == stamp
    assert again["gap"] == report["gap"]


def test_only_narrows_the_candidates_and_keeps_the_runs_of_the_others(study, tmp_path):
    plan, _ = study
    out = tmp_path / "copy"
    shutil.copytree(plan.out, out)
    stamp = {p: p.stat().st_mtime_ns for p in (out / "inner").rglob("summary.json")}
    narrow = make_plan(out, plan.data, ["cuba-lif-1"], ["study"], n_seeds=2, epochs=2, hidden=8, only=True)
    assert (narrow.models, narrow.recipes) == (["cuba-lif-1"], ["study"])
    report = run_nested(narrow, n_jobs=0, log=lambda m: None)
    assert set(report["models"]) == {"cuba-lif-1"} and set(report["ablation"]["cuba-lif-1"]) == {"study"}
    assert {p: p.stat().st_mtime_ns for p in (out / "inner").rglob("summary.json")} == stamp
    assert json.loads((out / "nested.json").read_text())["recipes"] == ["study"]
    wide = make_plan(out, plan.data, ["gru-1"], ["blend"], n_seeds=2, epochs=2, hidden=8)
    assert (wide.models, wide.recipes) == (["cuba-lif-1", "gru-1"], ["study", "blend"])
    again = run_nested(wide, n_jobs=0, log=lambda m: None)
    assert {p: p.stat().st_mtime_ns for p in (out / "inner").rglob("summary.json")} == stamp
    assert again["gap"]["n"] == 4 * 2
    res = run_cli("nested", "--resume", out, "--only")
    assert "--only needs --out" in one_line_error(res)


def test_more_outer_seeds_score_more_and_choose_nothing_new(study, tmp_path):
    """--outer-seeds 3 on a finished 2-seed study trains seed 2 of each outer fold at the recipe already chosen,
    no inner run, and the gap is paired over the 3 seeds; a plan without outer_seeds (older studies) reads as its
    seeds, and fewer outer seeds than seeds is refused."""
    plan, report = study
    out = tmp_path / "copy"
    shutil.copytree(plan.out, out)
    stamp = {p: p.stat().st_mtime_ns for p in (out / "inner").rglob("summary.json")}
    old = json.loads((out / "nested.json").read_text())
    del old["outer_seeds"]
    (out / "nested.json").write_text(json.dumps(old))
    assert read_plan(out).outer_seeds == [0, 1]
    more = make_plan(out, plan.data, plan.models, plan.recipes, n_seeds=2, epochs=2, hidden=8, n_outer_seeds=3)
    assert (more.seeds, more.outer_seeds) == ([0, 1], [0, 1, 2])
    again = run_nested(more, n_jobs=0, log=lambda m: None)
    assert {p: p.stat().st_mtime_ns for p in (out / "inner").rglob("summary.json")} == stamp
    assert not list((out / "inner").rglob("seed2"))
    assert again["choices"] == report["choices"]
    assert again["gap"]["n"] == 4 * 3 and again["gap"]["complete"]
    for o, choice in again["choices"].items():
        for m, c in choice["models"].items():
            assert (out / "outer" / o / m / c["recipe"] / "seed2" / "summary.json").exists()
    assert "outer folds [0, 1, 2]" in format_nested(again)
    with pytest.raises(InputError, match="--outer-seeds 1"):
        make_plan(tmp_path / "x", plan.data, ["gru-1"], ["study"], n_seeds=2, n_outer_seeds=1)


def test_outer_runs_trained_longer_are_kept_apart_and_choose_nothing_new(study, tmp_path):
    """--outer-epochs 3 on a finished 2-epoch study trains every outer fold again for 3 epochs beside the 2-epoch
    runs (kept), no inner run, the same choices; the study remembers it; older plans read as --epochs."""
    plan, report = study
    out = tmp_path / "copy"
    shutil.copytree(plan.out, out)
    stamp = {p: p.stat().st_mtime_ns for p in out.rglob("summary.json")}
    longer = make_plan(out, plan.data, plan.models, plan.recipes, n_seeds=2, epochs=2, hidden=8, outer_epochs=3)
    again = run_nested(longer, n_jobs=0, log=lambda m: None)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("summary.json") if p in stamp} == stamp
    assert not [p for p in out.rglob("summary.json") if p not in stamp and "outer-3-epochs" not in str(p)]
    assert again["choices"] == report["choices"]
    assert again["gap"]["n"] == 4 * 2 and again["gap"]["complete"]
    for o, choice in again["choices"].items():
        for m, c in choice["models"].items():
            run = json.loads((out / "outer-3-epochs" / o / m / c["recipe"] / "seed0" / "summary.json").read_text())
            assert run["epochs"] == 3 and run["split_speakers"]["test"] == [o]
            assert again["models"][m]["recipes"][o] == c["recipe"]
    scored = {(o, k): json.loads((longer.outer_dir(o, "gru-1", again["models"]["gru-1"]["recipes"][o], k)
                                  / "summary.json").read_text())["test_acc"] for o in SPEAKERS for k in (0, 1)}
    assert again["models"]["gru-1"]["mean"] == pytest.approx(
        np.mean([np.mean([scored[(o, k)] for k in (0, 1)]) for o in SPEAKERS]))
    for fam in ("ann", "spiking"):  # each family's longer-minus-shorter outer score, on the same units
        model = {"ann": "gru-1", "spiking": "cuba-lif-1"}[fam]
        acc = lambda d: json.loads((d / "summary.json").read_text())["test_acc"]
        diffs = [acc(longer.outer_dir(o, model, r, k)) - acc(plan.outer_dir(o, model, r, k))
                 for o, r in again["models"][model]["recipes"].items() for k in (0, 1)]
        assert again["longer"][2][fam]["n"] == 8 and again["longer"][2][fam]["mean"] == pytest.approx(np.mean(diffs))
    assert "longer" not in report
    assert "2 epochs (3 in the outer folds)" in format_nested(again)
    assert "outer runs at 3 minus at 2 epochs" in format_nested(again)
    assert make_plan(out, plan.data, plan.models, plan.recipes, n_seeds=2, epochs=2, hidden=8).outer_epochs == 3
    longest = make_plan(out, plan.data, ["gru-1"], plan.recipes, n_seeds=2, epochs=2, hidden=8, outer_epochs=4)
    further = run_nested(longest, n_jobs=0, log=lambda m: None)  # against the 2- and the 3-epoch runs, paired
    assert sorted(further["longer"]) == [2, 3] and further["choices"] == report["choices"]
    for shorter, runs in ((2, plan), (3, longer)):
        diffs = [acc(longest.outer_dir(o, "gru-1", r, k)) - acc(runs.outer_dir(o, "gru-1", r, k))
                 for o, r in again["models"]["gru-1"]["recipes"].items() for k in (0, 1)]
        assert further["longer"][shorter]["ann"]["mean"] == pytest.approx(np.mean(diffs))
        assert f"ann, outer runs at 4 minus at {shorter} epochs" in format_nested(further)
    old = json.loads((out / "nested.json").read_text())
    del old["outer_epochs"]
    (out / "nested.json").write_text(json.dumps(old))
    assert read_plan(out).outer_epochs == 2 and nested_report(read_plan(out))["gap"] == report["gap"]
    with pytest.raises(InputError, match="--outer-epochs must be at least 1"):
        make_plan(tmp_path / "x", plan.data, ["gru-1"], ["study"], n_seeds=2, outer_epochs=0)


def test_the_outer_runs_of_each_familys_chosen_model_go_first_seed_by_seed(study, tmp_path, monkeypatch):
    """With a second spiking model, the one not chosen in a fold trains its outer runs after every chosen one; among
    either, seed 0 of every fold comes before any seed 1."""
    import train.nested as nested
    plan, _ = study
    out = tmp_path / "copy"
    shutil.copytree(plan.out, out)
    wider = make_plan(out, plan.data, ["lif-1"], ["study"], n_seeds=2, epochs=2, hidden=8)
    real, batches = nested.run_jobs, []

    def inner_only(jobs, *args, **kwargs):  # the outer runs' order is recorded, not trained
        batches.append(jobs)
        return real(jobs, *args, **kwargs) if len(batches) == 1 else []
    monkeypatch.setattr(nested, "run_jobs", inner_only)
    report = run_nested(wider, n_jobs=0, log=lambda m: None)
    chosen = {o: {f["model"] for f in c["families"].values()} for o, c in report["choices"].items()}
    first = [(d.parts[-4], d.parts[-3]) for d, _ in batches[1]]
    is_chosen = [m in chosen[o] for o, m in first]
    assert len(first) == 4 * 3 * 2 and sum(is_chosen) == 4 * 2 * 2
    assert is_chosen == sorted(is_chosen, reverse=True)
    seeds = [int(d.name.removeprefix("seed")) for d, _ in batches[1]]
    for part in (seeds[:sum(is_chosen)], seeds[sum(is_chosen):]):
        assert part == sorted(part) and len(set(part)) == 2


def test_plan_settings_are_checked_before_anything_runs(study, tmp_path):
    plan, _ = study
    data = plan.data
    with pytest.raises(InputError, match="at least 2"):
        make_plan(tmp_path / "x", data, ["gru-1"], ["study"], n_seeds=1)
    with pytest.raises(InputError, match="unknown"):
        make_plan(tmp_path / "x", data, ["gru-1"], ["nosuch"])
    with pytest.raises(InputError, match="KIND-LAYERS"):
        make_plan(tmp_path / "x", data, ["gru"], ["study"])
    with pytest.raises(InputError, match="other settings"):
        make_plan(plan.out, data, ["gru-1"], ["study"], epochs=3, hidden=8)
    assert not (tmp_path / "x").exists()
    res = run_cli("nested", "--models", "lif-x", "--out", tmp_path / "y", "--data", data)
    assert "KIND-LAYERS" in one_line_error(res)


def test_paired_difference_needs_matching_folds_and_seeds():
    a = {("ann", 0): 0.5, ("ann", 1): 0.6, ("bob", 0): 0.7}
    b = {("ann", 0): 0.6, ("ann", 1): 0.8, ("bob", 0): 0.7}
    d = paired_difference(a, b)
    assert d["n"] == 3 and d["mean"] == pytest.approx(0.1) and d["better"] == 2 and d["worse"] == 0
    with pytest.raises(InputError, match=r"only in the first \(\('bob', 0\)\)"):
        paired_difference(a, {k: v for k, v in b.items() if k != ("bob", 0)})
    assert seed_spread(b)["per_fold"] == {"ann": pytest.approx(0.2)} and seed_spread(b)["max"] == pytest.approx(0.2)


def test_a_job_runs_in_its_own_process(tmp_path):
    """The worker entry point the parallel runner starts (python -m train.nested --job DIR CONFIG)."""
    from dataclasses import asdict

    from train.nested import _job_command
    from train.trainer import config_from_options
    data = _four_speakers(tmp_path / "four.h5", per=2)
    cfg = config_from_options(model="lif", layers=1, hidden=4, data=str(data), epochs=1, holdout_speaker="ann,bob",
                              valid_speaker="random")
    cmd = _job_command(tmp_path / "run", cfg)
    assert cmd[1:3] == ["-m", "train.nested"] and json.loads(cmd[-1]) == json.loads(json.dumps(asdict(cfg)))
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env={"PYTHONPATH": str(REPO),
                                                                              "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert set(summary["test_acc_by_speaker"]) == {"ann", "bob"}


def test_paired_command_compares_two_cross_validations_fold_by_fold(study, tmp_path):
    plan, report = study
    # the outer runs of one fold: every recipe chosen there has seeds 0 and 1 for both models
    o = "ann"
    a = plan.outer_dir(o, "gru-1", report["models"]["gru-1"]["recipes"][o], 0).parent
    b = plan.outer_dir(o, "cuba-lif-1", report["models"]["cuba-lif-1"]["recipes"][o], 0).parent
    res = run_cli("paired", a, b, "--json")
    assert res.exit_code == 0, res.output
    r = json.loads(res.output)
    acc = lambda d, k: json.loads((d / f"seed{k}" / "summary.json").read_text())["test_acc"]
    diff = np.mean([acc(b, k) - acc(a, k) for k in (0, 1)])
    assert r["difference"]["n"] == 2 and r["difference"]["mean"] == pytest.approx(diff)
    lone = tmp_path / "lone"
    (lone / "seed0").mkdir(parents=True)
    (lone / "seed0" / "summary.json").write_text((b / "seed0" / "summary.json").read_text())
    assert "unpaired comparison" in one_line_error(run_cli("paired", a, lone))


# ---- distilling recipes: the ANN's `study` run of the same held-out speakers and seed teaches -----------------

def test_a_taught_recipe_learns_from_the_anns_run_of_the_same_speakers_and_seed_and_stays_blind(tmp_path):
    data = _four_speakers(tmp_path / "four.h5", per=3)
    with pytest.raises(InputError, match="learns from an ANN's runs"):
        make_plan(tmp_path / "no-ann", str(data), ["cuba-lif-1"], ["taught"], epochs=1, hidden=4)
    assert not (tmp_path / "no-ann").exists()
    plan = make_plan(tmp_path / "t", str(data), ["cuba-lif-1", "gru-1"], ["taught"], epochs=1, hidden=4)
    report = run_nested(plan, n_jobs=0, log=lambda m: None)
    runs = [json.loads(p.read_text()) for p in (tmp_path / "t").rglob("summary.json")]
    taught = [r for r in runs if r["recipe"] == "taught"]
    # every candidate run and every chosen outer run is taught: 6 pairs x 2 seeds x 2 models, 4 folds x 2 x 2
    assert len(taught) == 6 * 2 * 2 + 4 * 2 * 2
    for r in taught:
        teacher = json.loads((Path(r["teacher"]) / "summary.json").read_text())
        assert teacher["model"] == "gru" and teacher["recipe"] == "study" and teacher["seed"] == r["seed"]
        assert teacher["split_speakers"]["test"] == r["split_speakers"]["test"]
        assert {"gru-1", "study"} <= set(Path(r["teacher"]).parts)  # in the study's own layout
        # the teacher had finished before its student began
        assert ((Path(r["teacher"]) / "summary.json").stat().st_mtime_ns
                <= (Path(r["run_dir"]) / "config.json").stat().st_mtime_ns)
    assert all(c is not None and o not in c["seen"] for o, c in report["choices"].items())
    assert report["gap"]["complete"]
    # a teacher whose record says it heard the test speaker makes every choice with its student's score a leak
    victim = next(r for r in taught if "/inner/" in r["run_dir"])
    path = Path(victim["teacher"]) / "summary.json"
    record = json.loads(path.read_text())
    outer = min(victim["split_speakers"]["test"], key=SPEAKERS.index)  # the outer fold that reads this run first
    record["split_speakers"]["train"].append(outer)
    path.write_text(json.dumps(record))
    with pytest.raises(Leak, match=f"test speaker {outer}"):
        nested_report(read_plan(tmp_path / "t"))


def test_parallel_jobs_wait_for_their_teachers_and_skip_those_whose_teacher_failed(tmp_path):
    from train.nested import run_jobs
    from train.trainer import config_from_options
    data = _four_speakers(tmp_path / "four.h5", per=2)
    small = dict(layers=1, hidden=4, data=str(data), epochs=2, holdout_speaker="ann,bob", valid_speaker="random")
    teacher = (tmp_path / "teacher", config_from_options(model="gru", **small))
    student = (tmp_path / "student", config_from_options(model="lif", distill=0.5, teacher=str(teacher[0]), **small))
    assert run_jobs([teacher, student], n_jobs=2, log=lambda m: None) == []
    assert ((teacher[0] / "summary.json").stat().st_mtime_ns
            <= (student[0] / "config.json").stat().st_mtime_ns)
    broken = (tmp_path / "broken", config_from_options(model="gru", **dict(small, epochs=1)))
    broken[1].data = str(tmp_path / "gone.h5")  # fails in its own process
    orphan = (tmp_path / "orphan", config_from_options(model="lif", distill=0.5, teacher=str(broken[0]), **small))
    failures = run_jobs([broken, orphan], n_jobs=2, log=lambda m: None)
    assert len(failures) == 2 and "not started, its teacher" in failures[1] and not orphan[0].exists()
