#!/usr/bin/env python
"""The audio front end's speed: every recording under a directory (default: the 2500 shared FSDD recordings)
through `data convert` (audio.convert.convert, gammatone filterbank -> envelope -> compression -> integrate and
fire), in the SHD layout (700 channels) and in the N-TIDIGITS18 layout (64), with --workers processes.
The output goes to a temporary directory and is deleted. The last line:

    recordings_per_s=<SHD layout> seconds=<SHD layout, all recordings> ntidigits_recordings_per_s=<x>

    .venv/bin/python benchmarks/audio_convert.py [--wav ../shared/data/fsdd-wav] [--workers 2]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from audio.convert import convert  # noqa: E402
from machine import announce_load  # noqa: E402  (benchmarks/machine.py)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wav", type=Path, default=REPO.parent / "shared" / "data" / "fsdd-wav")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    announce_load(f"{args.workers} worker process(es)")
    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        for layout in ("shd", "ntidigits"):
            t0 = time.perf_counter()
            r = convert([str(args.wav)], Path(tmp) / f"{layout}.h5", layout=layout, workers=args.workers,
                        progress=False)
            wall = time.perf_counter() - t0  # with reading the names and writing the file
            rates[layout] = (r["files"] / wall, wall)
            print(f"{layout:<10} {r['files']} recordings in {wall:.1f} s ({r['files'] / wall:.1f} recordings/s, "
                  f"conversion alone {r['seconds']:.1f} s); spikes per recording mean {r['spikes_mean']:.0f}, "
                  f"min {r['spikes_min']}, max {r['spikes_max']}", flush=True)
    print(f"recordings_per_s={rates['shd'][0]:.1f} seconds={rates['shd'][1]:.1f} "
          f"ntidigits_recordings_per_s={rates['ntidigits'][0]:.1f}")


if __name__ == "__main__":
    main()
