"""The command line: parse, call one library function, print.

Bad input (`InputError`) becomes one line on stderr and exit code 2.
"""
from __future__ import annotations

import functools
import json
import sys

import click

from train.errors import InputError


def user_errors(fn):
    """Turns InputError into a one-line message and exit code 2."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except InputError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
    return wrapper


@click.group()
def cli():
    """Spiking recurrent audio networks: train, export for Loihi 2, simulate in Lava, compare ops."""


@cli.group()
def data():
    """Inspect datasets (SHD/SSC, N-TIDIGITS18 layouts, or 'builtin')."""


@data.command("info")
@click.argument("path")
@click.option("--channels", type=int, default=None, help="Channel count (default: 700 SHD/SSC, 64 N-TIDIGITS18).")
@click.option("--duration", type=float, default=None, help="Cut window in seconds (default: 1 SHD/SSC, 1.25 N-TIDIGITS18).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@user_errors
def data_info(path, channels, duration, as_json):
    """Samples, classes, speakers, spikes per sample, durations and odd values of PATH."""
    from train.inspect_data import describe, format_info
    rows = describe(path, channels, duration)
    click.echo(json.dumps(rows, indent=2) if as_json else format_info(rows))


@data.command("plot")
@click.argument("path")
@click.option("--index", type=int, default=0, show_default=True, help="Sample index.")
@click.option("--split", default="train", show_default=True, help="Split, for a dataset with several.")
@click.option("--channels", type=int, default=None, help="Channel count.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output image (.png, .pdf, .svg).")
@user_errors
def data_plot(path, index, split, channels, out):
    """Save a spike raster (channels vs time) of one sample."""
    from train.inspect_data import plot_sample
    click.echo(plot_sample(path, index, out, split, channels))


if __name__ == "__main__":
    cli()
