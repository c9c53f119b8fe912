"""Progress output that suits where it goes: a tqdm bar on a terminal; elsewhere (a log file, CI, a pipe) a few
plain lines (at each quarter of the work), never hundreds of partial bar updates."""
from __future__ import annotations

import sys
import time

from tqdm import tqdm


class _Lines:
    """tqdm's update / set_postfix / close / n, as one line per quarter of the total on stderr."""

    def __init__(self, total: int, desc: str, unit: str):
        self.total, self.desc, self.unit = max(1, int(total)), desc, unit
        self.n, self._quarter, self._postfix, self._t0 = 0, 0, "", time.perf_counter()

    def update(self, k: int = 1) -> None:
        self.n += k
        quarter = min(4, 4 * self.n // self.total)
        if quarter > self._quarter:
            self._quarter = quarter
            rate = self.n / max(time.perf_counter() - self._t0, 1e-9)
            print(f"{self.desc}: {25 * quarter} % ({self.n}/{self.total} {self.unit}s, {rate:.1f}/s)"
                  f"{' ' + self._postfix if self._postfix else ''}", file=sys.stderr, flush=True)

    def set_postfix(self, **kw) -> None:
        self._postfix = ", ".join(f"{k}={v}" for k, v in kw.items())

    def close(self) -> None:
        pass


def progress_bar(total: int, desc: str, enabled: bool = True, unit: str = "sample", lines: bool = True):
    """A tqdm bar on a terminal; otherwise quarter lines (lines=True) or nothing (lines=False: the caller prints
    its own summary lines, as training does once per epoch)."""
    if enabled and sys.stderr.isatty():
        return tqdm(total=total, desc=desc, unit=unit, leave=False)
    if enabled and lines:
        return _Lines(total, desc, unit)
    return tqdm(total=total, disable=True)
