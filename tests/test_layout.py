"""The code's floors: each package imports only from its own floor and the floors below it (README, Layout)."""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FLOORS = {"common": 0, "audio": 1, "train": 2, "export": 3, "nir_io": 3, "lava_procs": 4, "sim": 5}


def _first_party_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                 [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else [])
        found |= {n.split(".")[0] for n in names if n.split(".")[0] in FLOORS}
    return found


def test_no_package_imports_from_a_floor_above_its_own():
    upward = []
    for package, floor in FLOORS.items():
        for path in sorted((REPO / package).glob("*.py")):
            for other in _first_party_imports(path):
                if other != package and FLOORS[other] >= floor:
                    upward.append(f"{path.relative_to(REPO)} imports {other}")
    assert not upward, upward


def test_every_module_file_is_in_a_known_package_and_none_is_crowded():
    packages = {p.parent.name for p in REPO.glob("*/__init__.py")}
    assert packages == set(FLOORS), packages ^ set(FLOORS)
    sizes = {p: len([f for f in (REPO / p).glob("*.py") if f.name != "__init__.py"]) for p in FLOORS}
    assert max(sizes.values()) <= 17, sizes


def test_the_spikaudio_command_is_the_cli():
    """pip install gives a `spikaudio` command: pyproject's console script names cli.py's click group."""
    import importlib

    import tomli
    from click.testing import CliRunner
    scripts = tomli.loads((REPO / "pyproject.toml").read_text())["project"].get("scripts", {})
    module, _, attr = scripts.get("spikaudio", ":").partition(":")
    command = getattr(importlib.import_module(module), attr)
    res = CliRunner().invoke(command, ["--help"], prog_name="spikaudio")
    assert res.exit_code == 0 and "Usage: spikaudio" in res.output and "train" in res.output and "infer" in res.output


def test_no_test_module_skips_as_a_whole_for_missing_data():
    """A test that needs no data file runs without ../shared/data: data needs are marked per test, never by a
    module-level `pytestmark` skip."""
    whole = []
    for path in sorted((REPO / "tests").glob("test_*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "pytestmark" for t in node.targets):
                if "skip" in ast.unparse(node.value):
                    whole.append(path.name)
    assert not whole, whole
