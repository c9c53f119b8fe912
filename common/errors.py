"""Bad user input and interrupts, shared by every stage.

`InputError`: the CLI turns it into a one-line message and exit code 2; anything else is a bug
and keeps its traceback. `Terminated`: SIGTERM and SIGHUP become this exception (as SIGINT becomes
KeyboardInterrupt), so that every `finally` runs (Lava runtimes shut down, temp files removed)
before the CLI exits with 128 + the signal number.
"""
from __future__ import annotations

import signal


class InputError(ValueError):
    """Bad input from the user: a file, a parameter or a sample that cannot be used."""


def settings_from_dict(cls, fields: dict, what: str):
    """cls(**fields), validated (settings stored as JSON: a recipe, a front end); unknown fields are one
    InputError that starts with `what`."""
    try:
        settings = cls(**fields)
    except TypeError as exc:
        raise InputError(f"{what} ({exc})") from None
    settings.validate()
    return settings


class Terminated(BaseException):
    """The process was asked to stop (SIGTERM, SIGHUP)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_terminated(signum, frame):
    raise Terminated(signum)


def terminate_on_signals() -> None:
    """SIGTERM and SIGHUP raise Terminated in the main thread from now on."""
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_terminated)


def quiet_child_signals(*_) -> None:
    """For a worker process forked from the CLI: Ctrl-C and SIGTERM are the parent's business (it stops its
    workers), so the worker ignores SIGINT and dies quietly on SIGTERM instead of raising Terminated."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
