"""One command per run directory: an exclusive lock held for the life of `train`, `cv` and `finetune`.

The lock is an flock on RUN_DIR/.lock: the kernel releases it when the holder exits in any way (SIGKILL
included), so a stale lock never blocks; the file keeps the holder's pid for the error message.
A directory holding any part of a run is only ever continued (--resume), never started again.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Iterator

from common.errors import InputError

LOCK = ".lock"
_HELD: set[Path] = set()
RUN_FILES = ("config.json", "metrics.jsonl", "last.pt", "best.pt", "summary.json", "cv.json")


@contextlib.contextmanager
def run_lock(run_dir: str | Path) -> Iterator[Path]:
    """Holds RUN_DIR's lock (creating the directory); a second holder gets a one-line InputError."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise InputError(f"{run_dir}: is a file, not a run directory")
    run_dir.mkdir(parents=True, exist_ok=True)
    key = run_dir.resolve()
    if key in _HELD:  # this process holds it already (finetune around train)
        yield run_dir
        return
    fd = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise InputError(f"{run_dir}: in use by another command (pid {holder}); wait for it or pick another "
                             "--out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _HELD.add(key)
        try:
            yield run_dir
        finally:
            _HELD.discard(key)
    finally:
        os.close(fd)  # releases the lock


def run_parts(run_dir: str | Path) -> list[str]:
    """The files of a run already in RUN_DIR."""
    return [name for name in RUN_FILES if (Path(run_dir) / name).exists()]


def require_fresh(run_dir: str | Path, hint: str = "use --resume {dir} to continue it or pick another --out") -> None:
    parts = run_parts(run_dir)
    if parts:
        raise InputError(f"{run_dir}: already holds a run ({', '.join(parts)}); " + hint.format(dir=run_dir))
