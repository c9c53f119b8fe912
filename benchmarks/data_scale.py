#!/usr/bin/env python
"""SSC-size data: load time, memory and the training loader's batch rate on SHD-layout files of 1k, 10k and 75k
generated samples (75,466 is SSC's training split), each sample SHD/SSC-like (a few thousand events over 1 s,
float16 times, uint16 channels, as SHD stores them).

Each size is loaded in a fresh process (audio.datasets.load_dataset, as training does: read, split, bin), which
reports its wall time and its peak resident memory; then the training loader (train.loader.epoch_batches, jitter
on, batch 512 as the study uses for SSC) makes batches for a few seconds, in process and with 2 DataLoader workers.
The last line:

    bytes_per_event=<peak RSS growth per event at the largest size> load_s_per_million_events=<y> batches_per_s=<z>

    .venv/bin/python benchmarks/data_scale.py [--sizes 1000,10000,75000] [--dir /tmp/data_scale]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from machine import announce_load  # noqa: E402  (benchmarks/machine.py)

EVENTS_MEAN = 3000


def write(path: Path, n: int, seed: int = 0) -> int:
    """An SHD-layout training file of n samples, written in chunks; returns its number of events."""
    import h5py
    rng = np.random.default_rng(seed)
    total = 0
    with h5py.File(path, "w") as h5:
        t_ds = h5.create_dataset("spikes/times", (n,), dtype=h5py.vlen_dtype(np.float16))
        u_ds = h5.create_dataset("spikes/units", (n,), dtype=h5py.vlen_dtype(np.uint16))
        for a in range(0, n, 2000):
            b = min(n, a + 2000)
            times, units = np.empty(b - a, dtype=object), np.empty(b - a, dtype=object)
            for i in range(b - a):
                k = int(rng.integers(EVENTS_MEAN // 3, 2 * EVENTS_MEAN))
                times[i] = np.sort(rng.uniform(0, 1, k)).astype(np.float16)
                units[i] = rng.integers(0, 700, k).astype(np.uint16)
                total += k
            t_ds[a:b], u_ds[a:b] = times, units
        h5.create_dataset("labels", data=rng.integers(0, 35, n).astype(np.uint16))
        h5.create_dataset("extra/keys", data=np.array([f"w{k}".encode() for k in range(35)]))
        h5.create_dataset("extra/speaker", data=rng.integers(0, 50, n).astype(np.uint16))
    return total


def measure(directory: str) -> dict:
    """In this process: load the dataset, then make training batches; prints one JSON line."""
    from audio.binning import Augment
    from audio.datasets import load_dataset
    from train.loader import epoch_batches
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t0 = time.perf_counter()
    ds = load_dataset(directory)
    load_s = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    events = int(len(ds.train.flat) + len(ds.valid.flat) + len(ds.test.flat))
    rates = {}
    for workers in (0, 2):
        t0, made = time.perf_counter(), 0
        for _ in epoch_batches(ds.train, 512, 0, 1, Augment(jitter_sigma=2.0), workers=workers):
            made += 1
            if time.perf_counter() - t0 > 8 or made >= 40:
                break
        rates[workers] = made / (time.perf_counter() - t0)
    print(json.dumps({"load_s": load_s, "base_rss": base, "peak_rss": peak, "binned_events": events,
                      "batches_per_s": rates[0], "batches_per_s_2_workers": rates[2]}), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,10000,75000")
    ap.add_argument("--dir", type=Path, default=Path("/tmp/data_scale"))
    ap.add_argument("--measure", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        return measure(args.measure)
    announce_load()
    rows = []
    for n in [int(x) for x in args.sizes.split(",")]:
        d = args.dir / f"n{n}"
        d.mkdir(parents=True, exist_ok=True)
        marker = d / "events.json"
        if not marker.exists():
            t0 = time.perf_counter()
            events = write(d / "gen_train.h5", n) + write(d / "gen_test.h5", max(1, n // 10), seed=1)
            marker.write_text(json.dumps({"events": events}))
            print(f"wrote {n} samples in {time.perf_counter() - t0:.1f} s", flush=True)
        events = json.loads(marker.read_text())["events"]
        stored = sum(f.stat().st_size for f in d.glob("*.h5"))
        out = subprocess.run([sys.executable, __file__, "--measure", str(d)], capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        r.update(n=n, events=events, stored=stored)
        rows.append(r)
        print(f"{n:>7} samples {events / 1e6:8.1f} M events  file {stored / 2**20:8.1f} MiB  load {r['load_s']:7.1f} s  "
              f"peak RSS {r['peak_rss'] / 2**20:8.1f} MiB (+{(r['peak_rss'] - r['base_rss']) / events:.1f} B/event)  "
              f"batches/s {r['batches_per_s']:.2f} (2 workers {r['batches_per_s_2_workers']:.2f})", flush=True)
    big = rows[-1]
    if len(rows) > 1:
        small = rows[0]
        slope = (big["peak_rss"] - small["peak_rss"]) / (big["events"] - small["events"])
        print(f"memory grows by {slope:.1f} bytes per event between the smallest and the largest file "
              f"(stored: {big['stored'] / big['events']:.1f} bytes per event)")
    print(f"bytes_per_event={(big['peak_rss'] - big['base_rss']) / big['events']:.1f} "
          f"load_s_per_million_events={big['load_s'] / (big['events'] / 1e6):.3f} batches_per_s={big['batches_per_s']:.2f}")


if __name__ == "__main__":
    main()
