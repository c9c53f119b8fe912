"""Outputs that are never half-written, never overwrite an input, and never replace a file unasked.

`atomic_path` writes to a temp file beside the target and renames it onto the target only when the
block succeeds; the temp file is removed on every exit the process can handle (errors, Ctrl-C, SIGTERM
via common.errors.Terminated), and one left by a killed process (SIGKILL) is removed by the next write
of the same target (its name carries the writer's pid). `check_output` refuses an output that is one
of the inputs, or that exists when --force is not given.
"""
from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path
from typing import Iterator

from common.errors import InputError


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


def check_output(out: str | Path, inputs: list[str | Path] = (), force: bool = False, what: str = "--out") -> Path:
    """The output path, after refusing one that is an input (whatever --force says) or exists without --force."""
    out = Path(out)
    if out.is_dir():
        raise InputError(f"{what} {out}: is a directory; name the file to write")
    for i in inputs:
        i = Path(i)
        if i.exists() and out.exists() and os.path.samefile(i, out) or out.resolve() == i.resolve():
            raise InputError(f"{what} {out}: is an input of this command; it is never overwritten")
    if out.exists() and not force:
        raise InputError(f"{what} {out}: exists; pass --force to replace it")
    return out
