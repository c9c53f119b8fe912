"""Write-then-rename, so an interrupted run never leaves a half-written output."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from train.errors import InputError


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yields a temporary path beside `target`; renames it onto `target` only if the block succeeds."""
    target = Path(target)
    if not target.parent.exists():
        raise InputError(f"{target}: directory {target.parent} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=target.suffix or ".tmp", dir=target.parent)
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
