"""Shared test fixtures: a private built-in dataset cache and writers of small HDF5 files in both layouts."""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

# Lava sets multiprocessing's start method when this module is first imported and fails if
# anything (tqdm's lock, during a training test) has fixed it before: import it first.
import lava.magma.runtime.message_infrastructure.multiprocessing  # noqa: F401,E402

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def _builtin_cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("spikaudio-cache")


@pytest.fixture(autouse=True)
def builtin_cache(_builtin_cache_dir, monkeypatch) -> Path:
    """Every test sees SPIKAUDIO_CACHE in a session temp dir, so 'builtin' never touches ~/.cache."""
    monkeypatch.setenv("SPIKAUDIO_CACHE", str(_builtin_cache_dir))
    return _builtin_cache_dir


def _vlen(arrays, dtype) -> np.ndarray:
    """A 1-D object array of 1-D arrays (np.array(..., dtype=object) turns equal lengths into 2-D)."""
    out = np.empty(len(arrays), dtype=object)
    for i, a in enumerate(arrays):
        out[i] = np.asarray(a, dtype=dtype)
    return out


def write_shd_file(path: Path, times, units, labels, keys=None, speakers=None,
                   time_dtype=np.float32, unit_dtype=np.uint16) -> Path:
    """One SHD/SSC-layout file: spikes/times, spikes/units (vlen), labels, extra/keys, extra/speaker."""
    path = Path(path)
    with h5py.File(path, "w") as h5:
        h5.create_dataset("spikes/times", data=_vlen(times, time_dtype), dtype=h5py.vlen_dtype(time_dtype))
        h5.create_dataset("spikes/units", data=_vlen(units, unit_dtype), dtype=h5py.vlen_dtype(unit_dtype))
        h5.create_dataset("labels", data=np.asarray(labels, dtype=np.int64))
        if keys is not None:
            h5.create_dataset("extra/keys", data=np.array([k.encode() for k in keys]))
        if speakers is not None:
            h5.create_dataset("extra/speaker", data=np.asarray(speakers, dtype=np.uint16))
    return path


def write_das_file(path: Path, splits: dict) -> Path:
    """One N-TIDIGITS18-layout file; splits = {split: {id: (timestamps, addresses)}} (ids kept in order).

    An id mapped to None is listed in {split}_labels but has no addresses/timestamps entry.
    """
    path = Path(path)
    with h5py.File(path, "w") as h5:
        for split, samples in splits.items():
            h5.create_dataset(f"{split}_labels", data=np.array([sid.encode() for sid in samples]))
            addr = h5.create_group(f"{split}_addresses")
            stamps = h5.create_group(f"{split}_timestamps")
            for sid, value in samples.items():
                if value is None:
                    continue
                t, a = value
                stamps.create_dataset(sid, data=np.asarray(t, dtype=np.float32))
                addr.create_dataset(sid, data=np.asarray(a, dtype=np.uint8))
    return path


def run_cli(*args):
    """cli.py with these arguments, in process (click's CliRunner)."""
    from click.testing import CliRunner
    import cli
    return CliRunner().invoke(cli.cli, [str(a) for a in args])


def one_line_error(res) -> str:
    """Asserts the CLI failed as bad input should: exit 2, one line starting 'error:', no traceback."""
    assert res.exit_code == 2, res.output
    lines = [l for l in res.output.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), res.output
    assert "Traceback" not in res.output
    return lines[0]


@pytest.fixture
def no_lava_process_left():
    """After the test, also a failing one, no Lava runtime process may still be running."""
    import multiprocessing as mp
    import time
    yield
    deadline = time.monotonic() + 5.0
    left = mp.active_children()
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = mp.active_children()
    for p in left:  # don't let one leak spoil the following tests
        p.kill()
        p.join(1)
    assert not left, f"Lava runtime processes left running: {left}"
