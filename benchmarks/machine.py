"""What every benchmark prints first: the 1-minute load average and the core count, with a warning when the load
is above half the cores (ratios between engines that use different numbers of processes are then unreliable)."""
from __future__ import annotations

import os
import sys


def announce_load(extra: str = "") -> float:
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    print(f"load average {load:.2f} on {cores} cores" + (f"; {extra}" if extra else ""), flush=True)
    if load > cores / 2:
        print(f"warning: load average {load:.2f} is above half the {cores} cores: other work is running, "
              "timings and their ratios are unreliable", file=sys.stderr, flush=True)
    return load
