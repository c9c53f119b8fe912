"""What a newcomer reads and pastes: every command of README.md's code blocks runs, in order, in small form; every
option says what it does and what its default is; third-party import noise stays out of the output.

The README test reads the commands from README.md itself, so a renamed command or option breaks it. It changes
them in two documented ways only:
- sizes: each command gets SMALL's options for its name appended (click takes an option's last value, so
  `--epochs 1` after the README's `--epochs 200` trains one epoch); nothing else of a command is changed;
- paths: `../shared/data` is a slice of the shared data (DATA_SLICE: a few samples of each speaker and class,
  a few recordings; the NIR graphs as they are), and the commands run in one temporary directory.
Lines that cannot run here are skipped by rule: `make` (it builds the environment), a line with a `...`
placeholder; torchrun's lines run their `cli.py` command in this one process (tests/test_distributed.py runs
torchrun itself).
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import click
import h5py
import numpy as np
import pytest

import cli
from conftest import REPO, SHARED_DATA, run_cli

TRAIN_SMALL = ["--epochs", "1", "--layers", "1", "--hidden", "8", "--bin-hz", "25", "--batch", "32"]
SMALL = {  # appended to each command, by its name
    "train": TRAIN_SMALL + ["--quiet"], "cv": TRAIN_SMALL + ["--quiet"], "finetune": ["--epochs", "1", "--quiet"],
    "simulate": ["--limit", "6", "--quiet"], "compare": ["--limit", "6", "--quiet"],
    "report": ["--limit", "6", "--quiet"], "data convert": ["--quiet"],
    "nested": ["--models", "cuba-lif-1", "--recipes", "study", "--epochs", "1", "--hidden", "4", "--jobs", "0"],
}
RESUME_SMALL = ["--quiet"]  # train --resume takes the run's own settings
DATA_SLICE = {"shd_train_per_group": 2, "shd_test_per_group": 1,  # per speaker and class
              "wav": [f"{d}_jackson_{t}.wav" for d in (3, 7) for t in (0, 3, 5, 6, 7)]}


def readme_commands() -> list[tuple[int, list[str]]]:
    """(line number, words) of every shell command in README.md's code blocks, comments removed."""
    lines = (REPO / "README.md").read_text().splitlines()
    out, inside = [], False
    for number, line in enumerate(lines, 1):
        if line.startswith("```"):
            inside = not inside
            continue
        if inside and line.strip() and not line.strip().startswith("#"):
            out.append((number, shlex.split(line, comments=True)))
    return out


def _slice_data(root: Path) -> Path:
    """DATA_SLICE of ../shared/data under root/data, in the shared files' names and layouts."""
    data = root / "data"
    (data / "fsdd-shd").mkdir(parents=True)
    for name, per in (("fsdd_train.h5", DATA_SLICE["shd_train_per_group"]),
                      ("fsdd_test.h5", DATA_SLICE["shd_test_per_group"])):
        with h5py.File(SHARED_DATA / "fsdd-shd" / name) as src, h5py.File(data / "fsdd-shd" / name, "w") as dst:
            labels, speakers = src["labels"][()], src["extra/speaker"][()]
            keep = np.sort(np.concatenate([np.flatnonzero((labels == c) & (speakers == s))[:per]
                                           for c in np.unique(labels) for s in np.unique(speakers)]))
            for key in ("spikes/times", "spikes/units"):
                dst.create_dataset(key, data=src[key][keep], dtype=src[key].dtype)
            for key in ("labels", "extra/speaker"):
                dst.create_dataset(key, data=src[key][()][keep])
            for key in ("extra/keys", "extra/speaker_names"):
                dst.create_dataset(key, data=src[key][()])
    (data / "fsdd-wav").mkdir()
    for name in DATA_SLICE["wav"]:
        shutil.copy(SHARED_DATA / "fsdd-wav" / name, data / "fsdd-wav" / name)
    (data / "nir").symlink_to(SHARED_DATA / "nir")
    return data


def _run_line(words: list[str], env: dict, data: Path) -> list[tuple[list[str], object]]:
    """Runs one README line (commands joined by && or ;, variable assignments, mkdir -p); returns each cli.py
    command with its click result."""
    results, command = [], []
    for word in words + [";"]:
        if word not in ("&&", ";") and not word.endswith(";"):
            command.append(word)
            continue
        if word.endswith(";") and word != ";":
            command.append(word[:-1])
        words_ = [re.sub(r"\$(\w+)", lambda m: env[m.group(1)], w).replace("../shared/data", str(data))
                  for w in command]
        command = []
        if not words_:
            continue
        if re.fullmatch(r"\w+=.*", words_[0]) and len(words_) == 1:
            name, value = words_[0].split("=", 1)
            env[name] = value
        elif words_[:2] == ["mkdir", "-p"]:
            for d in words_[2:]:
                os.makedirs(d, exist_ok=True)
        else:
            args = words_[words_.index("cli.py") + 1:]
            name = " ".join(args[:2]) if args[0] == "data" else args[0]
            small = RESUME_SMALL if "--resume" in args else SMALL.get(name, [])
            res = run_cli(*args, *small)
            results.append((args, res))
            if res.exit_code != 0:
                break
    return results


@pytest.mark.skipif(not SHARED_DATA.exists(), reason="../shared/data not present: every README block uses it")
def test_every_readme_command_runs_as_written_in_small_form(tmp_path, monkeypatch):
    data = _slice_data(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    ran, env = [], {}
    for number, words in readme_commands():
        if words[0] == "make" or "..." in words:
            continue
        assert "cli.py" in words, f"README.md:{number}: not a cli.py command: {' '.join(words)}"
        for args, res in _run_line(words, env, data):
            assert res.exit_code == 0, f"README.md:{number}: cli.py {' '.join(map(str, args))}\n{res.output}"
            ran.append((args, res.output))
    names = [a[0] if a[0] != "data" else f"data {a[1]}" for a, _ in ran]
    every = set(cli.cli.commands) - {"data", "nested"} | {f"data {c}" for c in cli.data.commands}
    assert every <= set(names), f"README shows no {sorted(every - set(names))}"
    out = dict((" ".join(a), o) for a, o in ran)
    assert "nothing to resume" in out["train --resume runs/cuba"]
    summary = out["summary runs/"]  # one row per model, its runs listed; the cross-validation's folds apart
    assert "runs: runs/spikgru/seed0, runs/spikgru/seed1, runs/spikgru/seed2" in summary
    assert "cross-validation (leave-one-speaker-out)" in summary and "george" in summary
    assert "fine-tuned (QAT)" in Path("report.html").read_text()


def _options():
    def walk(cmd, path):
        if isinstance(cmd, click.Group):
            for name, sub in cmd.commands.items():
                yield from walk(sub, path + [name])
        else:
            for p in cmd.params:
                if isinstance(p, click.Option):
                    yield " ".join(path), p
    return list(walk(cli.cli, []))


@pytest.mark.parametrize("command,option", [(c, o) for c, o in _options()], ids=lambda x: getattr(x, "name", x))
def test_every_option_has_help_and_shows_its_default(command, option):
    """--help tells a newcomer what each option does and what it is when not given."""
    assert option.help, f"{command} {option.opts[0]}: no help text"
    shown = option.is_flag or option.show_default or option.required or "default" in option.help.lower()
    assert shown, f"{command} {option.opts[0]}: help says no default ({option.help!r})"


def test_netx_import_prints_no_third_party_noise():
    """Importing lava-dl's netx (simulate --stock-netx, compare) prints nothing: its notes on optional packages and
    CUDA concern no user of this toolchain."""
    code = "import sim.lava_net as m; m.netx_network_class()"
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert res.returncode == 0, res.stderr
    assert res.stdout == "" and "CUDA" not in res.stderr and "Prophesee" not in res.stderr, res.stdout + res.stderr
