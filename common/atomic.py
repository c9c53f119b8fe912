"""Outputs that are never half-written, never overwrite an input, and never replace a file unasked.

`atomic_path` writes to a temp file beside the target and renames it onto the target only when the
block succeeds; the temp file is removed on every exit the process can handle (errors, Ctrl-C, SIGTERM
via common.errors.Terminated), and one left by a killed process (SIGKILL) is removed by the next write
of the same target (its name carries the writer's pid). `check_output` is the one check of every output
path, files and run directories alike (an input is never overwritten, an existing output is replaced only
with --force, a run directory never by a command of another kind); `claimed` holds it true under the
output's lock for the life of the writer.
"""
from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path
from typing import Iterator

from common.errors import InputError
from common.rundir import KIND_NAMES, RUN_FILES, dir_kind, file_lock, require_unheld, run_parts, study_above


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_temps(target: Path) -> None:
    pattern = re.compile(rf"^\.{re.escape(target.name)}\.(\d+)\.")
    for p in target.parent.glob(f".{target.name}.*"):
        m = pattern.match(p.name)
        if m and int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1))):
            with contextlib.suppress(OSError):
                p.unlink()


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yields a temporary path beside `target`; renames it onto `target` only if the block succeeds."""
    target = Path(target)
    if not target.parent.exists():
        raise InputError(f"{target}: directory {target.parent} does not exist")
    if not target.parent.is_dir():
        raise InputError(f"{target}: {target.parent} is a file, not a directory")
    _remove_stale_temps(target)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.{os.getpid()}.", suffix=target.suffix or ".tmp",
                                   dir=target.parent)
    except OSError as exc:
        raise InputError(f"{target}: cannot be written ({exc.strerror})") from None
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; outputs get the usual mode
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def check_output(out: str | Path, inputs: list[str | Path] = (), force: bool = False, what: str = "--out",
                 kind: str | None = None, resume: bool = False, within: str | Path | None = None,
                 hint: str | None = None) -> Path:
    """The one check every output path of every command goes through; returns the path.

    A file (kind None): its directory exists; it is never an input nor a file of a run directory (whatever
    --force says), and an existing one is replaced only with --force. A run directory (kind one of
    common.rundir.KIND_FILES): never a file, never a directory holding a run of another kind, never inside a
    cross-validation or nested study other than `within` (the study running it), never holding an input among
    its run files; one holding a run of its own kind is continued only with `resume`, replaced only with
    --force (`hint`: what to do instead)."""
    out = Path(out)
    inputs = [Path(i) for i in inputs]
    is_input = lambda p: any(p.resolve() == i.resolve() or i.exists() and p.exists() and os.path.samefile(i, p)
                             for i in inputs)
    if kind is None:
        if out.is_dir():
            raise InputError(f"{what} {out}: is a directory; name the file to write")
        if out.parent.exists() and not out.parent.is_dir():
            raise InputError(f"{what} {out}: {out.parent} is a file, not a directory")
        if not out.parent.exists():
            raise InputError(f"{what} {out}: directory {out.parent} does not exist")
        if is_input(out):
            raise InputError(f"{what} {out}: is an input of this command; it is never overwritten")
        if out.name in RUN_FILES and dir_kind(out.parent):
            raise InputError(f"{what} {out}: is part of {KIND_NAMES[dir_kind(out.parent)]} in {out.parent}; "
                             "it is never overwritten")
        if out.exists() and not force:
            raise InputError(f"{what} {out}: exists; pass --force to replace it")
        return out
    if out.exists() and not out.is_dir():
        raise InputError(f"{what} {out}: is a file, not a directory")
    require_unheld(out)
    study = study_above(out)
    if study is not None and (within is None or study != Path(within).resolve()):
        raise InputError(f"{what} {out}: lies inside {KIND_NAMES[dir_kind(study)]} ({study}), which runs its own "
                         f"runs there; pick a directory outside it")
    found, parts = dir_kind(out), run_parts(out)
    if found is not None and found != kind:
        raise InputError(f"{what} {out}: holds {KIND_NAMES[found]} ({', '.join(parts)}), not "
                         f"{KIND_NAMES[kind]}; it is never replaced; pick another directory")
    for name in parts:
        if is_input(out / name):
            raise InputError(f"{what} {out}: holds {name}, an input of this command; pick another directory")
    if parts and not resume and not force:
        raise InputError(f"{out}: already holds {KIND_NAMES[kind]} ({', '.join(parts)}); "
                         + (hint or "pass --force to replace it").format(dir=out))
    return out


@contextlib.contextmanager
def claimed(out: str | Path, inputs: list[str | Path] = (), force: bool = False,
            what: str = "--out") -> Iterator[Path]:
    """check_output of a file, made and kept true until the block ends: the file's lock is held (a second
    writer of the same output is refused, naming this one's pid) and the check is made under it."""
    with file_lock(check_output(out, inputs, force, what)) as target:
        yield check_output(target, inputs, force, what)
