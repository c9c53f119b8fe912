"""The command line: parse, call one library function, print.

Bad input (`InputError`, an unreadable or unwritable location) and click's own usage errors become
one line on stderr and exit code 2, never a traceback; Ctrl-C is one line and exit code 130, SIGTERM
and SIGHUP one line and 128 + the signal (common.errors: every `finally` runs first).
"""
from __future__ import annotations

import json
import sys

import click

from common.errors import InputError, Terminated, terminate_on_signals


class OneLineErrors(click.Group):
    """A click group whose errors are one line each, exit code 2."""

    def main(self, *args, **kwargs):
        kwargs["standalone_mode"] = False
        terminate_on_signals()
        try:
            rv = super().main(*args, **kwargs)
        except (click.ClickException, InputError) as exc:
            msg = exc.format_message() if isinstance(exc, click.ClickException) else str(exc)
            click.echo(f"error: {msg}", err=True)
            sys.exit(2)
        except (click.exceptions.Abort, KeyboardInterrupt):
            click.echo("interrupted", err=True)
            sys.exit(130)
        except Terminated as exc:
            click.echo(f"stopped by {exc}", err=True)
            sys.exit(128 + exc.signum)
        except OSError as exc:  # a location that cannot be read or written, a full disk
            where = f"{exc.filename}: " if exc.filename else ""
            click.echo(f"error: {where}{exc.strerror or exc}", err=True)
            sys.exit(2)
        sys.exit(rv if isinstance(rv, int) else 0)


def _echo_json(obj) -> None:
    click.echo(json.dumps(obj, indent=2, default=float))


@click.group(cls=OneLineErrors)
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
def data_info(path, channels, duration, as_json):
    """Samples, classes, speakers, spikes per sample, durations and odd values of PATH."""
    from audio.inspect_data import describe, format_info
    rows = describe(path, channels, duration)
    _echo_json(rows) if as_json else click.echo(format_info(rows))


@data.command("plot")
@click.argument("path")
@click.option("--index", type=int, default=0, show_default=True, help="Sample index.")
@click.option("--split", default="train", show_default=True, help="Split, for a dataset with several.")
@click.option("--channels", type=int, default=None, help="Channel count (default: 700 SHD/SSC, 64 N-TIDIGITS18).")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output image (.png, .pdf, .svg).")
@click.option("--force", is_flag=True, help="Replace --out if it exists.")
def data_plot(path, index, split, channels, out, force):
    """Save a spike raster (channels vs time) of one sample."""
    from audio.inspect_data import plot_sample
    click.echo(plot_sample(path, index, out, split, channels, force))


def _training_options(f):
    """The options `train` and `cv` share: model, data, recipe."""
    from train.recipe import RECIPES, help_text
    opts = [
        click.option("--model",
                     help="lif, cuba-lif, spikgru, rnn or gru (required; no default, except with --resume)."),
        click.option("--layers", type=int, default=2, show_default=True, help="Recurrent layers."),
        click.option("--hidden", type=int, default=128, show_default=True, help="Neurons per recurrent layer."),
        click.option("--data", default="builtin", show_default=True,
                     help="'builtin', a dataset directory or an HDF5 file (a training file without a test file beside "
                          "it: a seeded 10 % test split of each speaker and class, README)."),
        click.option("--epochs", type=int, default=None,
                     help="Epochs to train (default 200, the study's; with --resume: extend the run to this many)."),
        click.option("--seed", type=int, default=0, show_default=True,
                     help="Seed of the initial weights, the shuffle, the augmentation and the validation split."),
        click.option("--batch", type=int, default=None, help="Batch size (default 128, 512 for SSC)."),
        click.option("--lr", type=float, default=1e-3, show_default=True, help="Adam's learning rate."),
        click.option("--jitter", type=float, default=None, help="Channel jitter sigma (default 2 for SHD/SSC, 0 for N-TIDIGITS18)."),
        click.option("--bin-hz", type=float, default=None, help="Bin rate (default 250 SHD/SSC, 200 N-TIDIGITS18)."),
        click.option("--duration", type=float, default=None,
                     help="Cut window in seconds (default 1 SHD/SSC, 1.25 N-TIDIGITS18)."),
        click.option("--channels", type=int, default=None,
                     help="Input channels (default 700 SHD/SSC, 64 N-TIDIGITS18)."),
        click.option("--clip", type=float, nargs=2, default=None, help="Training range of i and v (default -4 4)."),
        click.option("--no-clip", is_flag=True, help="Do not clip i and v."),
        click.option("--surrogate-scale", type=float, default=None, help="Height of the triangle surrogate (default 1)."),
        click.option("--surrogate-width", type=float, default=None, help="Half-width of the triangle surrogate (default vth = 1)."),
        click.option("--reset", type=click.Choice(["late", "subtract", "zero"]), default=None,
                     help="LIF / Cuba-LIF reset: late (the study's: subtract vth the next step; default), subtract or "
                          "zero (in the step of the spike, as NIR reads a graph; trains with the plain loop, slower)."),
        click.option("--lava-cuba", is_flag=True, help="Cuba-LIF with Lava's own CUBA dynamics (hard reset, shared decays) for stock netx."),
        click.option("--recipe", "recipe_name", type=click.Choice(list(RECIPES)), default=None,
                     help=f"Training recipe. {help_text()}. The options below override single fields."),
        click.option("--dropout", type=float, default=None,
                     help="Drop hidden spikes between layers with this probability (default: the recipe's)."),
        click.option("--weight-decay", type=float, default=None,
                     help="AdamW's decoupled weight decay (0: Adam) (default: the recipe's)."),
        click.option("--lr-schedule", type=click.Choice(["constant", "cosine"]), default=None,
                     help="Learning rate per epoch (default: the recipe's)."),
        click.option("--label-smoothing", type=float, default=None,
                     help="Cross-entropy label smoothing (default: the recipe's)."),
        click.option("--channel-shift", type=int, default=None,
                     help="Shift each sample's channels by up to +-K (default: the recipe's)."),
        click.option("--channel-shift-share", type=float, default=None,
                     help="The same as a share of the channel count (0.034: +-24 of 700, +-2 of 64; default: the "
                          "recipe's)."),
        click.option("--blend", type=float, default=None,
                     help="Share of training samples mixed with another sample of their class, aligned on their "
                          "centres of mass (Nowotny et al. 2025; default: the recipe's)."),
        click.option("--loss", type=click.Choice(["max", "softmax-mean", "ce-mean"]), default=None,
                     help="Readout loss: max over time then cross-entropy (the study's), the per-step softmax averaged "
                          "over time, or the per-step cross-entropy averaged. The class is always the largest maximum "
                          "(default: the recipe's)."),
        click.option("--time-stretch", type=float, default=None,
                     help="Stretch each sample's time axis by a factor in [1-S, 1+S] (default: the recipe's)."),
        click.option("--event-drop", type=float, default=None,
                     help="Drop each input event with this probability (default: the recipe's)."),
        click.option("--spectral-tilt", type=float, default=None,
                     help="Random spectral slope per sample: drop up to this share of one end's events (default: "
                          "the recipe's)."),
        click.option("--rate-reg", type=float, default=None,
                     help="Penalty on hidden spikes per neuron per step (default: the recipe's)."),
        click.option("--rate-target", type=float, default=None,
                     help="With --rate-reg: penalise each neuron's (rate - target)^2 instead of the layer's rate "
                          "(default: the recipe's)."),
        click.option("--quiet-tail", type=int, default=None,
                     help="Append this many silent steps to every training sample and penalise hidden spikes there "
                          "(with --quiet-reg): a network that falls silent runs samples back to back on Loihi 2 "
                          "(default: the recipe's)."),
        click.option("--quiet-reg", type=float, default=None, help="Weight of the --quiet-tail penalty (spikes per "
                     "neuron per step in the silent tail; default: the recipe's)."),
        click.option("--keep", type=click.Choice(["best", "last"]), default=None,
                     help="The epoch the run keeps (best.pt, what is exported): best validation accuracy (the "
                          "study's) or the last (default: the recipe's)."),
        click.option("--average", type=float, default=None,
                     help="Average the weights after every step of this last share of the epochs, and validate and "
                          "keep the average (0: none, the study's; default: the recipe's)."),
        click.option("--distill", type=float, default=None,
                     help="Weight of a teacher's answers in the loss (the labels' is 1 - this; needs --teacher; "
                          "default: the recipe's, 0)."),
        click.option("--distill-temperature", type=float, default=None,
                     help="Softmax temperature of the --distill term (default: the recipe's, 2)."),
        click.option("--teacher", type=click.Path(file_okay=False), default=None,
                     help="With --distill: a finished run that held out the same test samples, or a cross-validation "
                          "(cv) directory whose fold of the same speaker and seed teaches each fold (default: none)."),
        click.option("--decay-range", type=float, nargs=2, default=None,
                     help="Clip the hidden layers' decays to [LOW, HIGH] after each step (default: the recipe's; "
                          "study: 0 1)."),
        click.option("--device", default="cpu", show_default=True,
                     help="auto (CUDA when present), cpu, cuda or cuda:N. Several processes: torchrun (README)."),
        click.option("--workers", type=int, default=0, show_default=True,
                     help="DataLoader processes binning the batches (0: in the training process)."),
        click.option("--input-projection", type=click.Choice(["auto", "dense", "sparse"]), default="auto",
                     show_default=True,
                     help="The first layer's input projection: one dense matmul, or from the batch's events "
                          "(sparse); auto: sparse on the CPU for sparse inputs. Equal up to float rounding."),
        click.option("--valid-speaker", default="auto", show_default=True,
                     help="With a held-out speaker: the validation speaker (name or id), 'auto' (the next one by name) "
                          "or 'random' (a share of the other speakers' samples)."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


@data.command("convert")
@click.argument("inputs", nargs=-1, required=True)
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="HDF5 file to write.")
@click.option("--layout", type=click.Choice(["shd", "ntidigits"]), default="shd", show_default=True,
              help="shd: 700 channels (SHD/SSC layout); ntidigits: 64 channels (N-TIDIGITS18 layout).")
@click.option("--label-regex", default=r"^([^_]+)_", show_default=True, help="Label from the file name (first group).")
@click.option("--speaker-regex", default=r"^[^_]+_([^_]+)_", show_default=True, help="Speaker from the file name.")
@click.option("--include", default=None, help="Only files whose name matches this regular expression (default: all).")
@click.option("--classes", default=None, help="Class names in order, comma-separated (default: 0..max for digits).")
@click.option("--split", default=None, help="ntidigits layout: the one split the file holds, train or test (default: "
              "train; --test-share writes both).")
@click.option("--test-share", type=float, default=None,
              help="Write a split: this share of each speaker's recordings of each class (seeded, e.g. 0.1) is the "
                   "test set, at its own speed; shd: OUT's name with _train and _test (default: one file, no split).")
@click.option("--workers", type=int, default=2, show_default=True, help="Processes converting recordings.")
@click.option("--rate", type=int, default=8000, show_default=True, help="Resample every recording to this rate (Hz).")
@click.option("--fmin", type=float, default=80.0, show_default=True, help="Lowest centre frequency (Hz).")
@click.option("--fmax", type=float, default=3800.0, show_default=True, help="Highest centre frequency (Hz).")
@click.option("--envelope-hz", type=float, default=60.0, show_default=True, help="Envelope low-pass cut-off (Hz).")
@click.option("--resolution", type=float, default=0.0005, show_default=True, help="Spike-time resolution (s).")
@click.option("--floor", type=float, default=0.1, show_default=True, help="Silence floor, a share of the loudest envelope.")
@click.option("--max-rate", type=float, default=400.0, show_default=True, help="Spikes per second at full scale.")
@click.option("--no-normalize", is_flag=True, help="Keep each recording's loudness (default: unit RMS).")
@click.option("--speed", default="1", show_default=True,
              help="Speed perturbation for a training file: one sample per factor, comma-separated (e.g. 0.9,1,1.1: "
                   "each recording also played 10 %% slower and faster).")
@click.option("--force", is_flag=True, help="Replace --out if it exists.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def data_convert(inputs, out, layout, label_regex, speaker_regex, include, classes, split, test_share, workers, rate,
                 fmin, fmax, envelope_hz, resolution, floor, max_rate, no_normalize, speed, force, quiet):
    """Recordings (wav files or directories) -> spikes through a gammatone front end -> one HDF5 file."""
    from audio.convert import convert, format_convert
    from audio.frontend import LAYOUT_CHANNELS, Frontend
    fe = Frontend(LAYOUT_CHANNELS[layout], rate, fmin, fmax, envelope_hz, resolution, floor, max_rate, not no_normalize)
    try:
        speeds = [float(v) for v in speed.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"{speed!r}: comma-separated numbers", param_hint="--speed") from None
    r = convert(list(inputs), out, layout, fe, label_regex, speaker_regex, include,
                [c for c in classes.split(",") if c] if classes else None, split, workers, not quiet, force, speeds,
                test_share)
    click.echo(format_convert(r))


@cli.command("train")
@_training_options
@click.option("--seeds", type=int, default=1, show_default=True, help="Train this many seeds (seed, seed+1, ...) and report mean +- 95 % CI.")
@click.option("--holdout-speaker", default=None,
              help="Test on this speaker (name or id; `data info` lists them) alone, train on the others (default: "
                   "the dataset's own test split).")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Run directory (required; no default, except with --resume).")
@click.option("--resume", type=click.Path(file_okay=False), default=None,
              help="Continue the run in this directory (default: start a new run in --out).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train_cmd(seeds, out, resume, quiet, **options):
    """Train one of the study's models (Adam 1e-3, max-over-time loss; see --recipe)."""
    from train.distributed import is_main_process
    from train.stats import format_summary, summarize
    from train.trainer import config_from_options, resume_runs, train_seeds
    if resume:
        runs = resume_runs(resume, options["epochs"], progress=not quiet)
    else:
        if not options["model"] or not out:
            raise InputError("--model and --out are required (or --resume RUN_DIR)")
        runs = train_seeds(config_from_options(**options), out, seeds, progress=not quiet)
    if not is_main_process():  # torchrun: rank 0 reports
        return
    for r in runs:
        if r.get("finished_already"):
            click.echo(f"note: {r['run_dir']} finished its {r['epochs']} epochs already, nothing to resume; "
                       f"`train --resume {r['run_dir']} --epochs N` trains it on to N epochs", err=True)
        click.echo(f"{r['run_dir']}: kept epoch {r['best_epoch']} (valid {100 * r['best_valid_acc']:.2f} %), "
                   f"test {100 * r['test_acc']:.2f} %")
    if len(runs) > 1:
        click.echo(format_summary(summarize([r["run_dir"] for r in runs])))


@cli.command("cv")
@_training_options
@click.option("--by", type=click.Choice(["speaker"]), default="speaker", show_default=True, help="What each fold holds out.")
@click.option("--seeds", type=int, default=1, show_default=True, help="Seeds per fold (seed, seed+1, ...).")
@click.option("--speakers", default=None,
              help="Only these folds (comma-separated speaker names or ids; default: every speaker).")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Cross-validation directory, one run per fold and seed (required; no default, except with "
                   "--resume).")
@click.option("--resume", type=click.Path(file_okay=False), default=None,
              help="Continue the cross-validation in this directory (default: start one in --out).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def cv_cmd(by, seeds, speakers, out, resume, quiet, **options):
    """Leave-one-speaker-out cross-validation: held-out accuracy mean +- 95 % CI over folds (resumable)."""
    from train.crossval import cross_validate, resume_cv
    from train.stats import format_summary, summarize
    from train.trainer import config_from_options
    if resume:
        runs = resume_cv(resume, progress=not quiet)
    else:
        if not options["model"] or not out:
            raise InputError("--model and --out are required (or --resume CV_DIR)")
        names = [s for s in speakers.split(",") if s.strip()] if speakers else None
        runs = cross_validate(config_from_options(**options), out, by, seeds, names, progress=not quiet)
    click.echo(format_summary(summarize([r["run_dir"] for r in runs])))


@cli.command("nested")
@click.option("--models", default="gru-2,cuba-lif-2,spikgru-2", show_default=True,
              help="Candidate models, KIND-LAYERS, comma-separated.")
@click.option("--recipes", default="study,unseen,regular", show_default=True,
              help="Candidate recipes (see train --recipe), comma-separated; each model tries each.")
@click.option("--data", default="builtin", show_default=True, help="A dataset with speaker ids (every file is pooled).")
@click.option("--seeds", type=int, default=2, show_default=True, help="Seeds per fold (at least 2).")
@click.option("--outer-seeds", type=int, default=None,
              help="Seeds of the outer folds, the scores on the test speakers (default: --seeds; more measure the "
                   "score and the seed spread better without more choosing).")
@click.option("--seed", type=int, default=0, show_default=True, help="The first seed.")
@click.option("--epochs", type=int, default=20, show_default=True, help="Epochs of every run.")
@click.option("--outer-epochs", type=int, default=None,
              help="Epochs of the outer runs, the scores on the test speakers (default: --epochs, or what the study "
                   "in --out has; more rerun the final claim longer than the screening that chose it, no inner run "
                   "again, the shorter outer runs kept).")
@click.option("--hidden", type=int, default=128, show_default=True, help="Neurons per recurrent layer.")
@click.option("--jobs", type=int, default=2, show_default=True,
              help="Runs side by side, each a one-thread process (0: one at a time in this process).")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Study directory (required; no default, except with --resume).")
@click.option("--resume", type=click.Path(file_okay=False), default=None,
              help="Continue the study in this directory (default: start one in --out).")
@click.option("--report-only", is_flag=True, help="With --resume: print what the finished runs say, train nothing.")
@click.option("--only", is_flag=True,
              help="With --out on a study: its candidates become exactly --models and --recipes (default: they join "
                   "the study's); finished runs of the others stay and count again once named again.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def nested_cmd(models, recipes, data, seeds, outer_seeds, seed, epochs, outer_epochs, hidden, jobs, out, resume,
               report_only, only, as_json):
    """Nested speaker-held-out study: each model's recipe and each family's model chosen on inner folds without
    the test speaker, then scored on it (resumable; mean +- 95 % CI, seed spread, paired differences)."""
    from train.nested import format_nested, make_plan, nested_report, read_plan, report_json, run_nested
    if jobs < 0:
        raise InputError(f"--jobs must be >= 0, got {jobs}")
    if report_only and not resume:
        raise InputError("--report-only needs --resume STUDY_DIR")
    if only and not out:
        raise InputError("--only needs --out STUDY_DIR (it changes the study's candidates)")
    if resume:
        for name, v in (("--outer-seeds", outer_seeds), ("--outer-epochs", outer_epochs)):
            if v is not None:
                raise InputError(f"{name} changes the study, and --resume runs it as it is: use --out {resume} {name} "
                                 f"{v} (its finished runs are kept)")
        plan = read_plan(resume)
    elif out:
        plan = make_plan(out, data, [m for m in models.split(",") if m], [r for r in recipes.split(",") if r],
                         seeds, seed, epochs, hidden, only, outer_seeds, outer_epochs)
    else:
        raise InputError("--out is required (or --resume STUDY_DIR)")
    r = nested_report(plan) if report_only else run_nested(plan, jobs, log=lambda m: click.echo(m, err=True))
    _echo_json(report_json(r)) if as_json else click.echo(format_nested(r))


@cli.command("eval")
@click.argument("checkpoint")
@click.option("--data", default=None, help="A dataset or one file of either layout, any name (default: the model's own "
              "test set, its held-out speaker included).")
@click.option("--split", type=click.Choice(["train", "valid", "test"]), default=None,
              help="train, valid or test (default: test; with --data FILE, every sample of the file).")
@click.option("--limit", type=int, default=None, help="N samples spread evenly over the classes, the same N in eval, "
              "simulate, compare and report (default: all).")
@click.option("--device", default="cpu", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def eval_cmd(checkpoint, data, split, limit, device, as_json):
    """Accuracy, activity rates and predicted MAC/AC per timestep (the study's Table 2)."""
    from train.evaluate import evaluate, format_eval
    r = evaluate(checkpoint, data, split, limit, device)
    _echo_json(r) if as_json else click.echo(format_eval(r))


@cli.command("summary")
@click.argument("runs", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def summary_cmd(runs, as_json):
    """Test accuracy mean +- 95 % CI over seeds for every finished run under RUNS."""
    from train.stats import format_summary, summarize
    rows = summarize(list(runs))
    _echo_json(rows) if as_json else click.echo(format_summary(rows))


@cli.command("paired")
@click.argument("first", type=click.Path(exists=True, file_okay=False))
@click.argument("second", type=click.Path(exists=True, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def paired_cmd(first, second, as_json):
    """SECOND - FIRST: two cross-validations (or multi-seed runs) compared on the folds and seeds both ran, mean
    +- 95 % CI of the per-fold-and-seed differences (a fold or seed on one side only is an error)."""
    from train.stats import format_paired, paired_runs
    r = paired_runs([first], [second])
    _echo_json(r) if as_json else click.echo(format_paired(r))


@cli.command("export")
@click.argument("checkpoint")
@click.option("--target", type=click.Choice(["loihi2", "nir"]), default="loihi2", show_default=True,
              help="loihi2: fixed point, netx-style HDF5; nir: a NIR graph (LIF, Cuba-LIF) for other frameworks.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="File to write (.h5, or .nir for --target nir).")
@click.option("--netx-compatible", is_flag=True, help="Stock lava-dl netx file (Cuba-LIF trained with --lava-cuba).")
@click.option("--chips", type=int, default=1, show_default=True, help="Loihi 2 chips the network may use.")
@click.option("--split-weights", is_flag=True,
              help="Each weight as two 8-bit connections (coarse + residual): ~15-bit weights for twice the synapses.")
@click.option("--dt", type=float, default=None, help="--target nir: seconds per step (default: the checkpoint's bin width).")
@click.option("--force", is_flag=True, help="Replace --out if it exists (never the checkpoint itself).")
def export_cmd(checkpoint, target, out, netx_compatible, chips, split_weights, dt, force):
    """Quantize CHECKPOINT to Loihi 2 fixed point, check the hardware limits, write netx-style HDF5 (or a NIR graph)."""
    if target == "nir":
        from nir_io.from_model import export_nir, format_nir_export
        if netx_compatible or chips != 1 or split_weights:
            raise click.UsageError("--netx-compatible, --chips and --split-weights apply to --target loihi2")
        r = export_nir(checkpoint, out, dt, force)
        for line in r["notes"]:
            click.echo(f"note: {line}", err=True)
        click.echo(format_nir_export(r))
        return
    if dt is not None:
        raise click.UsageError("--dt applies to --target nir")
    from export.exporter import export_checkpoint, format_export
    r = export_checkpoint(checkpoint, out, target, netx_compatible, chips, force, split_weights)
    for line in r.warnings:
        click.echo(f"warning: {line}", err=True)
    for line in r.notes:
        click.echo(f"note: {line}", err=True)
    click.echo(format_export(r))


@cli.command("import-nir")
@click.argument("graph")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Directory for the checkpoint (best.pt).")
@click.option("--dt", type=float, default=None, help="Seconds per step the graph was trained at (default: its metadata; "
              "the Braille graphs: 1e-4).")
@click.option("--reset", type=click.Choice(["zero", "subtract"]), default=None,
              help="How the spiking nodes reset (default: the graph's metadata, else NIR's own: zero, to v_reset).")
@click.option("--bin-hz", type=float, default=None,
              help="Bin rate of the data the model takes, for eval on a file (default: the file's layout's, 250 "
                   "SHD/SSC, 200 N-TIDIGITS18).")
@click.option("--duration", type=float, default=None,
              help="Window of the data the model takes, in seconds (default: the file's layout's, 1 SHD/SSC, 1.25 "
                   "N-TIDIGITS18).")
@click.option("--classes", default=None, help="Class names in order, comma-separated (default: 0, 1, ...).")
@click.option("--force", is_flag=True, help="Replace a checkpoint already in --out.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def import_nir_cmd(graph, out, dt, reset, bin_hz, duration, classes, force, as_json):
    """Map a NIR GRAPH (Affine/Linear, LIF, CubaLIF, LI, CubaLI; recurrent loops; subgraphs) to a checkpoint that
    eval, export, simulate and compare take."""
    from nir_io.to_model import format_import, import_nir
    r = import_nir(graph, out, dt, reset, bin_hz, duration, classes, force)
    _echo_json(r) if as_json else click.echo(format_import(r))


@cli.command("finetune")
@click.argument("checkpoint")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run directory for the fine-tuned model.")
@click.option("--epochs", type=int, default=10, show_default=True, help="Fine-tuning epochs.")
@click.option("--lr", type=float, default=1e-4, show_default=True, help="Adam learning rate.")
@click.option("--data", default=None, help="Dataset (default: the one it was trained on).")
@click.option("--batch", type=int, default=None, help="Batch size (default: the checkpoint's).")
@click.option("--device", default="cpu", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def finetune_cmd(checkpoint, out, epochs, lr, data, batch, device, quiet):
    """Quantization-aware fine-tuning of a spiking CHECKPOINT with the exact Loihi 2 fixed-point forward."""
    from export.finetune import finetune, format_finetune
    click.echo(format_finetune(finetune(checkpoint, out, epochs, lr, data, batch, progress=not quiet, device=device)))


@cli.command("simulate")
@click.argument("network")
@click.option("--data", default=None, help="Dataset (default: the one the network was trained on).")
@click.option("--split", type=click.Choice(["train", "valid", "test"]), default=None,
              help="train, valid or test (default: test; with --data FILE, every sample of the file).")
@click.option("--limit", type=int, default=None,
              help="N samples spread evenly over the classes, the same N in eval, simulate, compare and report "
                   "(default: Lava 20, the fast engine all).")
@click.option("--engine", type=click.Choice(["lava", "fast"]), default="lava", show_default=True,
              help="lava: Lava processes with event counters; fast: the batched integer engine (same spikes and counts).")
@click.option("--backend", type=click.Choice(["sim", "loihi2"]), default="sim", show_default=True,
              help="Lava run config: Loihi2SimCfg, or Loihi2HwCfg (needs Intel's lava-loihi).")
@click.option("--channels", type=int, default=None,
              help="Read the dataset with this many channels (default: the network's inputs).")
@click.option("--stock-netx", is_flag=True, help="Run a --netx-compatible file in lava-dl's stock netx Network "
              "(netx's own reset, nothing written into the network during the run).")
@click.option("--gap", type=int, default=None, help="Silent steps after each sample of the stream (every engine; "
              "default: the smallest after which the network falls silent on the validation split).")
@click.option("--raw-stream", is_flag=True, help="--gap 0: samples back to back with no gap (free-running stream).")
@click.option("--threads", type=int, default=None, help="Fast engine: batches run side by side on this many "
              "threads (default: every core; the results do not depend on it).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def simulate_cmd(network, data, split, limit, engine, backend, channels, stock_netx, gap, raw_stream, threads,
                 as_json, quiet):
    """Run an exported NETWORK (.h5) over a dataset split: accuracy and measured MAC/AC per timestep."""
    from sim.simulate import format_simulate, simulate
    r = simulate(network, data, split, limit, engine, backend, channels, not quiet, stock_netx, raw_stream, threads,
                 gap)
    _echo_json(r) if as_json else click.echo(format_simulate(r))


@cli.command("infer")
@click.argument("model")
@click.argument("recordings", nargs=-1, required=True)
@click.option("--engine", type=click.Choice(["fast", "lava"]), default="fast", show_default=True,
              help="For an exported network (.h5): the fast engine or Lava.")
@click.option("--plot", type=click.Path(dir_okay=False), default=None,
              help="PNG: input raster, hidden spikes and readout over time (one file per recording; default: none).")
@click.option("--force", is_flag=True, help="Replace --plot's files if they exist (never an input).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def infer_cmd(model, recordings, engine, plot, force, as_json):
    """Classify wav RECORDINGS with MODEL (a checkpoint or an exported .h5) through its own audio front end."""
    from sim.infer import format_infer, infer
    r = infer(model, list(recordings), engine, plot, force)
    _echo_json(r) if as_json else click.echo(format_infer(r))


@cli.command("compare")
@click.argument("network")
@click.option("--data", default=None, help="Dataset (default: the one the network was trained on).")
@click.option("--checkpoint", default=None, help="Float model (default: the file's own checkpoint, if it is there).")
@click.option("--split", type=click.Choice(["train", "valid", "test"]), default=None,
              help="train, valid or test (default: test; with --data FILE, every sample of the file).")
@click.option("--limit", type=int, default=None,
              help="Samples run in Lava and compared: N spread evenly over the classes, the same N in eval, simulate "
                   "and report (default 20).")
@click.option("--e-mac", type=float, default=4.6, show_default=True, help="Energy per MAC in pJ (Horowitz 45 nm, 32-bit float).")
@click.option("--e-ac", type=float, default=0.9, show_default=True, help="Energy per AC in pJ (Horowitz 45 nm, 32-bit float).")
@click.option("--channels", type=int, default=None,
              help="Read the dataset with this many channels (default: the network's inputs).")
@click.option("--gap", type=int, default=None, help="Silent steps after each sample of the Lava stream (default: "
              "the smallest after which the network falls silent on the validation split).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the last line stays measured_vs_predicted_fixed=).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def compare_cmd(network, data, checkpoint, split, limit, e_mac, e_ac, channels, gap, as_json, quiet):
    """Predicted (float, fixed point) vs measured (Lava, fast engine) MAC/AC per timestep, accuracy and energy."""
    from sim.compare import compare, format_compare
    r = compare(network, data, checkpoint, split, limit, e_mac, e_ac, channels, not quiet, gap)
    if as_json:
        _echo_json(r)
        click.echo(f"measured_vs_predicted_fixed={r['measured_vs_predicted_fixed']:.6g}")
    else:
        click.echo(format_compare(r))


@cli.command("report")
@click.argument("runs_dir")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="report.html (self-contained) or report.md (+ report.png).")
@click.option("--limit", type=int, default=None,
              help="Evaluate each model and its exported networks on N samples spread evenly over the classes, the "
                   "same N as in eval, simulate and compare; accuracies are then on those (default: all).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--force", is_flag=True, help="Replace --out (and its .png) if they exist.")
def report_cmd(runs_dir, out, limit, quiet, force):
    """Table 1 (accuracy +- 95 % CI), Table 2 (ops, with measured counts) and Fig. 3 for every model under RUNS_DIR."""
    from sim.report import format_report, report
    click.echo(format_report(report(runs_dir, out, not quiet, limit, force)))


if __name__ == "__main__":
    cli()
