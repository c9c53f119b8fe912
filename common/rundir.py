"""One command per output: an exclusive lock held for the life of the command that writes it, and what each
kind of run directory holds.

A run directory's lock is an flock on RUN_DIR/.lock (`run_lock`: `train`, `cv`, `nested`, `finetune`,
`import-nir`); a file's is an flock on a hidden `.NAME.lock` beside it (`file_lock`: `data convert`, `export`,
`report`, ...), removed when the command ends. The kernel releases an flock when its holder exits in any way
(SIGKILL included), so a stale lock never blocks; the lock file keeps the holder's pid for the error message.
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
# the kinds of run directory and the files that mark each; best.pt belongs to a training run and an import alike
KIND_FILES = {"run": ("config.json", "metrics.jsonl", "last.pt", "summary.json"), "cv": ("cv.json",),
              "nested": ("nested.json",), "import": ("import.json",)}
KIND_NAMES = {"run": "a run", "cv": "a cross-validation", "nested": "a nested study", "import": "an imported model"}
SHARED_FILES = ("best.pt",)
RUN_FILES = tuple(f for files in KIND_FILES.values() for f in files) + SHARED_FILES
STUDIES = ("cv", "nested")  # kinds that hold run directories of their own below them


def _busy(fd: int, what: Path, hint: str) -> InputError:
    holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
    return InputError(f"{what}: in use by another command (pid {holder}); {hint}")


def _hold(fd: int, what: Path, hint: str) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise _busy(fd, what, hint) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)


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
        _hold(fd, run_dir, "wait for it or pick another --out")
        _HELD.add(key)
        try:
            yield run_dir
        finally:
            _HELD.discard(key)
    finally:
        os.close(fd)  # releases the lock


@contextlib.contextmanager
def file_lock(target: str | Path) -> Iterator[Path]:
    """Holds the lock of the output file TARGET (.TARGET.lock beside it, removed at the end): a second writer of
    the same file gets a one-line InputError instead of silently replacing the first one's result."""
    target = Path(target)
    lock = target.with_name(f".{target.name}.lock")
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise InputError(f"{target}: cannot be written ({exc.strerror})") from None
        try:
            _hold(fd, target, "wait for it or pick another output")
        except BaseException:
            os.close(fd)
            raise
        try:  # the file we hold may have been removed by a holder that just finished: hold the one now there
            same = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        yield target
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock)  # while still holding it: a waiting writer sees the removal and starts again
        os.close(fd)


def require_unheld(run_dir: str | Path) -> None:
    """A one-line InputError, naming the holder's pid, when another command holds RUN_DIR's lock now."""
    run_dir = Path(run_dir)
    if run_dir.resolve() in _HELD or not (run_dir / LOCK).is_file():
        return
    try:
        fd = os.open(run_dir / LOCK, os.O_RDONLY)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise _busy(fd, run_dir, "wait for it or pick another --out") from None
    finally:
        os.close(fd)


def run_parts(run_dir: str | Path) -> list[str]:
    """The files of a run (of any kind) already in RUN_DIR."""
    return [name for name in RUN_FILES if (Path(run_dir) / name).exists()]


def dir_kind(run_dir: str | Path) -> str | None:
    """The kind of run RUN_DIR holds (KIND_FILES), None when no file marks one."""
    return next((kind for kind, files in KIND_FILES.items() if any((Path(run_dir) / f).exists() for f in files)),
                None)


def study_above(path: str | Path) -> Path | None:
    """The nearest directory above PATH that holds a cross-validation or a nested study, if any."""
    for parent in Path(path).resolve().parents:
        if any((parent / f).exists() for kind in STUDIES for f in KIND_FILES[kind]):
            return parent
    return None
