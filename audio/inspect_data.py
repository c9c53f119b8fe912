"""What `cli.py data info` and `data plot` show: per-split statistics and a raster of one sample."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from audio.datasets import LAYOUTS, Source, find_source, read_split
from audio.spike_files import SpikeSet, detect_layout
from common.atomic import atomic_path
from common.errors import InputError


def _source_for_info(spec: str) -> Source:
    """Like `find_source`, but a single SHD/SSC file of any split is fine."""
    path = Path(spec)
    if spec != "builtin" and path.is_file() and detect_layout(path) == "shd":
        return Source("shd", "shd", {"file": path})
    return find_source(spec)


def _read(source: Source, split: str, n_channels: int | None) -> SpikeSet:
    if split == "file":
        return read_split(Source(source.name, "shd", {"train": source.files["file"]}), "train", n_channels)
    return read_split(source, split, n_channels)


def describe(spec: str, n_channels: int | None = None, duration: float | None = None) -> list[dict]:
    """One dict per split: sizes, spikes per sample, durations and odd-value counts."""
    source = _source_for_info(spec)
    cut = LAYOUTS[source.layout]["duration"] if duration is None else duration
    if not cut > 0:
        raise InputError(f"--duration must be positive, got {cut}")
    rows = []
    for split in source.files:
        s = _read(source, split, n_channels)
        counts = s.counts()
        last = np.maximum.reduceat(s.times, s.offsets[:-1])
        rows.append({
            "split": split, "file": str(source.files[split]), "layout": source.layout,
            "samples": len(s), "classes": s.n_classes, "class_names": s.class_names,
            "speakers": None if s.speakers is None else int(len(np.unique(s.speakers))),
            "speaker_names": None if s.speakers is None else sorted({s.speaker_name(int(k))
                                                                     for k in np.unique(s.speakers)}),
            "channels": s.n_channels,
            "spikes_mean": float(counts.mean()), "spikes_min": int(counts.min()), "spikes_max": int(counts.max()),
            "duration_mean_s": float(last.mean()), "duration_max_s": float(last.max()),
            "dropped_nan": s.dropped["nan"], "dropped_inf": s.dropped["inf"], "dropped_negative": s.dropped["negative"],
            "events_after_cut": int((s.times >= cut).sum()), "cut_s": cut,
            "skipped_multi_digit": s.skipped_multi_digit,
        })
    return rows


def format_info(rows: list[dict]) -> str:
    lines = []
    for r in rows:
        speakers = "n/a" if r["speakers"] is None else r["speakers"]
        lines += [
            f"[{r['split']}] {r['file']} ({r['layout']} layout)",
            f"  samples {r['samples']}, classes {r['classes']} ({', '.join(r['class_names'][:12])}"
            f"{', ...' if r['classes'] > 12 else ''}), speakers {speakers}, channels {r['channels']}",
            *([f"  speakers (--holdout-speaker NAME): {', '.join(r['speaker_names'])}"] if r["speaker_names"] else []),
            f"  spikes per sample: mean {r['spikes_mean']:.1f}, min {r['spikes_min']}, max {r['spikes_max']}",
            f"  duration (last event): mean {r['duration_mean_s']:.3f} s, max {r['duration_max_s']:.3f} s;"
            f" {r['events_after_cut']} events after the {r['cut_s']} s cut",
            f"  odd spike times dropped: NaN {r['dropped_nan']}, inf {r['dropped_inf']}, negative {r['dropped_negative']}"
            + (f"; multi-digit samples skipped {r['skipped_multi_digit']}" if r["layout"] == "das" else ""),
        ]
    return "\n".join(lines)


def plot_sample(spec: str, index: int, out: str | Path, split: str = "train", n_channels: int | None = None,
                force: bool = False) -> str:
    """Saves a raster (channel vs time) of one sample; returns a one-line description."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from common.atomic import check_output, claimed

    out = check_output(out, [spec] if spec != "builtin" else [], force)
    fmt = out.suffix.lstrip(".").lower()
    supported = plt.figure().canvas.get_supported_filetypes()
    plt.close("all")
    if fmt not in supported:
        raise InputError(f"--out {out}: unknown image format '{out.suffix}' (use one of "
                         f"{', '.join('.' + k for k in sorted(supported))})")

    source = _source_for_info(spec)
    if "file" in source.files:
        split = "file"
    elif split not in source.files:
        raise InputError(f"--split {split}: {spec} has splits {', '.join(source.files)}")
    s = _read(source, split, n_channels)
    if not 0 <= index < len(s):
        raise InputError(f"--index {index}: {source.files[split]} has samples 0..{len(s) - 1}")
    times, units = s.sample(index)
    label = s.class_names[s.labels[index]]
    name = s.ids[index] if s.ids else str(index)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.scatter(times * 1000, units, s=1.5, c="k", marker=".", linewidths=0)
    ax.set_xlabel("time (ms)")
    ax.set_ylabel("channel")
    ax.set_ylim(-1, s.n_channels)
    ax.set_title(f"{Path(source.files[split]).name} sample {name}: '{label}', {len(times)} spikes")
    fig.tight_layout()
    with claimed(out, [spec] if spec != "builtin" else [], force), atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=120, format=fmt)
    plt.close(fig)
    return f"wrote {out}: sample {name} ('{label}'), {len(times)} spikes"
