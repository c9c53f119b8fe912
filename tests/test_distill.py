"""Distillation (train.checkpoint): the teacher's answers pull the student's towards them, and a teacher that could
carry the student's test samples into its training is refused before anything is written."""
import json

import numpy as np
import torch
import torch.nn.functional as F

from audio.datasets import load_dataset
from conftest import one_line_error, run_cli
from train.checkpoint import load_checkpoint
from train.checkpoint import teacher_outputs
from train.loss import distillation_loss
from train.models import model_from_checkpoint
from train.trainer import config_from_options, resume_runs, train

TINY = dict(layers=1, hidden=16, bin_hz=25, batch=16, data="builtin")
CLI_TINY = ("--layers", "1", "--hidden", "8", "--bin-hz", "25", "--batch", "32", "--epochs", "1", "--quiet")


def test_distillation_loss_is_the_tempered_kl_from_teacher_to_student():
    torch.manual_seed(0)
    s, t, T = torch.randn(4, 7, 3), torch.randn(4, 7, 3), 2.0
    ps, pt = F.softmax(s.max(dim=1).values / T, dim=1), F.softmax(t.max(dim=1).values / T, dim=1)
    kl = (pt * (pt.log() - ps.log())).sum(dim=1).mean() * T ** 2
    reverse = (ps * (ps.log() - pt.log())).sum(dim=1).mean() * T ** 2
    assert torch.allclose(distillation_loss(s, t, T), kl)
    assert not torch.allclose(kl, reverse, atol=1e-3)  # the teacher's distribution weighs the log ratio
    assert abs(float(distillation_loss(t, t, T))) < 1e-6


def _answers(run, data) -> torch.Tensor:
    """The run's class probabilities (softmax of the readout maxima) on the training split."""
    model = model_from_checkpoint(load_checkpoint(run / "best.pt"))
    x = torch.cat([b for b, _ in data.train.batches(256)])
    return F.softmax(teacher_outputs(model, x).max(dim=1).values, dim=1)


def test_a_distilled_student_answers_closer_to_its_teacher_than_one_taught_by_labels(tmp_path):
    held_out = dict(holdout_speaker="speaker2", valid_speaker="random", **TINY)
    train(config_from_options(model="gru", epochs=3, seed=1, **held_out), tmp_path / "teacher", progress=False)
    student = dict(model="cuba-lif", recipe_name="study", epochs=3, seed=4, **held_out)
    summary = train(config_from_options(distill=0.9, teacher=str(tmp_path / "teacher"), **student),
                    tmp_path / "taught", progress=False)
    train(config_from_options(**student), tmp_path / "labels", progress=False)
    assert summary["teacher"] == str(tmp_path / "teacher")
    data = load_dataset("builtin", bin_hz=25, seed=4, holdout_speaker="speaker2", valid_speaker="random")
    pt = _answers(tmp_path / "teacher", data)
    gap = {name: float((pt * (pt.log() - _answers(tmp_path / name, data).log())).sum(dim=1).mean())
           for name in ("taught", "labels")}
    assert gap["taught"] < 0.5 * gap["labels"], gap


def test_a_teacher_that_holds_out_other_samples_or_heard_a_test_speaker_is_refused_before_any_output(tmp_path):
    teacher = tmp_path / "teacher"
    train(config_from_options(model="gru", epochs=1, holdout_speaker="speaker2", **TINY), teacher, progress=False)
    base = ("train", "--model", "cuba-lif", *CLI_TINY, "--distill", "0.5")
    line = one_line_error(run_cli(*base, "--holdout-speaker", "speaker3", "--teacher", teacher,
                                  "--out", tmp_path / "s1"))
    assert "holding out speaker2" in line and "holding out speaker3" in line
    line = one_line_error(run_cli(*base, "--teacher", teacher, "--out", tmp_path / "s2"))  # the dataset's own split
    assert "must hold out the same test samples" in line
    summary = json.loads((teacher / "summary.json").read_text())
    summary["split_speakers"]["train"].append("speaker2")  # a teacher whose record says it heard the test speaker
    (teacher / "summary.json").write_text(json.dumps(summary))
    line = one_line_error(run_cli(*base, "--holdout-speaker", "speaker2", "--teacher", teacher,
                                  "--out", tmp_path / "s3"))
    assert "it heard speaker2, whom this run is scored on" in line
    line = one_line_error(run_cli(*base, "--holdout-speaker", "speaker2", "--out", tmp_path / "s4"))
    assert "--distill 0.5 and --teacher None" in line
    line = one_line_error(run_cli(*base, "--holdout-speaker", "speaker2", "--teacher", tmp_path / "s1",
                                  "--out", tmp_path / "s5"))
    assert "not a finished run" in line
    assert not any((tmp_path / f"s{k}").exists() for k in range(1, 6))


def test_a_cross_validation_teaches_each_fold_with_its_own_fold_and_needs_all_of_them_first(tmp_path):
    teachers = tmp_path / "gru-cv"
    res = run_cli("cv", "--model", "gru", *CLI_TINY, "--seeds", "2", "--speakers", "speaker0,speaker3",
                  "--out", teachers)
    assert res.exit_code == 0, res.output
    student = ("cv", "--model", "cuba-lif", *CLI_TINY, "--distill", "0.5", "--teacher", teachers)
    line = one_line_error(run_cli(*student, "--seeds", "3", "--speakers", "speaker0", "--out", tmp_path / "more"))
    assert "its fold holding out speaker0 with seed 2" in line and not (tmp_path / "more").exists()
    res = run_cli(*student, "--seeds", "2", "--speakers", "speaker0,speaker3", "--out", tmp_path / "students")
    assert res.exit_code == 0, res.output
    for speaker in ("speaker0", "speaker3"):
        for seed in (0, 1):
            run = json.loads((tmp_path / "students" / speaker / f"seed{seed}" / "summary.json").read_text())
            assert run["teacher"] == str(teachers / speaker / f"seed{seed}")
            assert run["split_speakers"]["test"] == [speaker]
    assert np.isfinite(run["test_acc"])


def test_a_resumed_student_is_the_run_it_began_as_or_refuses(tmp_path):
    held_out = dict(holdout_speaker="speaker1", valid_speaker="random", **TINY)
    teacher = tmp_path / "teacher"
    train(config_from_options(model="gru", epochs=2, keep="last", **held_out), teacher, progress=False)
    student = dict(model="lif", recipe_name="study", seed=3, distill=0.5, teacher=str(teacher), **held_out)
    train(config_from_options(epochs=3, **student), tmp_path / "straight", progress=False)
    train(config_from_options(epochs=1, **student), tmp_path / "resumed", progress=False)
    resume_runs(tmp_path / "resumed", epochs=3, progress=False)
    a, b = (load_checkpoint(tmp_path / name / "last.pt")["state_dict"] for name in ("straight", "resumed"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    resume_runs(teacher, epochs=3, progress=False)  # the teacher now keeps another epoch
    line = one_line_error(run_cli("train", "--resume", tmp_path / "resumed", "--epochs", "4", "--quiet"))
    assert "began with its teacher's epoch 2" in line and "now keeps epoch 3" in line
    assert load_checkpoint(tmp_path / "resumed" / "last.pt")["epoch"] == 3
