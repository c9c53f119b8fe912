"""Lava Processes of the study's neurons, counting connections and a sample source.

process.py declares the Processes (Vars, Ports, parameter checks, the time/reset/counter
conventions in its docstring); models.py holds their ``fixed_pt`` and ``floating_pt``
ProcessModels. This module adds a safe way to run them: Lava's runtime leaves its
shared-memory manager process behind and hangs in ``stop()`` after a ProcessModel
raised, so always run through ``run_steps`` (or call ``shutdown`` in a ``finally``).

    with lava_session(readout):                 # shutdown on leaving, also on error
        run_steps(readout, n_samples * T + L + 1, "fixed_pt")
        sample_max = readout.sample_max.get()
"""
from __future__ import annotations

import contextlib
import multiprocessing as mp
import time
import typing as ty

from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.run_conditions import RunSteps
from lava.magma.core.run_configs import Loihi2SimCfg, RunConfig
from lava.magma.runtime.mgmt_token_enums import MGMT_RESPONSE, enum_equal

from lava_procs.process import (LIF, NEURON_OPS, READOUT_UNSET, CountingDense, CubaLIF, LavaCubaLIF, Readout,
                                SampleSource, SpikGRU)

__all__ = ["LIF", "CubaLIF", "SpikGRU", "LavaCubaLIF", "Readout", "CountingDense", "SampleSource",
           "NEURON_OPS", "READOUT_UNSET", "LavaRunError", "run_steps", "shutdown",
           "lava_session"]

PRECISIONS = ("fixed_pt", "floating_pt")


def _children_die_with_parent() -> None:
    """Every process forked from here on (Lava's runtime processes are forked) ignores Ctrl-C, which the parent
    handles by shutting them down (no child tracebacks), and is killed by the kernel when the parent dies, even
    by SIGKILL (Linux prctl PR_SET_PDEATHSIG; elsewhere only the parent's own shutdown applies)."""
    import ctypes
    import os
    import signal
    import sys

    from common.errors import quiet_child_signals

    if not sys.platform.startswith("linux"):
        return
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return
    parent = {"pid": os.getpid()}

    def before():
        parent["pid"] = os.getpid()

    def in_child():
        quiet_child_signals()  # not the parent's handlers (common.errors): stop quietly
        prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
        if os.getppid() != parent["pid"]:  # the parent died before prctl took effect
            os._exit(1)

    os.register_at_fork(before=before, after_in_child=in_child)


_children_die_with_parent()


class LavaRunError(RuntimeError):
    """A Lava run failed; the runtime has been shut down. ``errors`` holds the ProcessModels' tracebacks."""

    def __init__(self, message: str, errors: list[str]):
        super().__init__(message)
        self.errors = errors


def _actor_errors(process: AbstractProcess) -> list[str]:
    runtime = process.runtime
    infra = getattr(runtime, "_messaging_infrastructure", None) if runtime is not None else None
    out = []
    for actor in getattr(infra, "actors", []) or []:
        try:
            err = actor.exception
        except (ValueError, OSError):  # pipe already closed
            continue
        if err:
            out.append(err[1] if isinstance(err, tuple) and len(err) > 1 else repr(err))
    return out


def run_steps(process: AbstractProcess, num_steps: int, select_tag: str = "fixed_pt",
              run_cfg: ty.Optional[RunConfig] = None) -> None:
    """Runs the network of `process` for `num_steps` Lava steps (compiling it on the first call).

    `select_tag` picks the models ('fixed_pt' or 'floating_pt') unless `run_cfg` is given.
    Call it again to continue the same run (Vars can be read in between). On any failure
    (compilation, a ProcessModel raising, Ctrl-C) the runtime is shut down, leaving no
    process behind, and LavaRunError is raised with the model's own error message (Lava
    itself only says 'N Exception(s) occurred', or waits forever when the failing model
    had not yet sent what another one waits for).
    """
    if int(num_steps) < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if run_cfg is None and process.runtime is None:
        if select_tag not in PRECISIONS:
            raise ValueError(f"select_tag must be one of {PRECISIONS}, got {select_tag!r}")
        run_cfg = Loihi2SimCfg(select_tag=select_tag)
    try:
        process.run(condition=RunSteps(num_steps=int(num_steps), blocking=False), run_cfg=run_cfg)
        _wait(process)
    except BaseException as exc:
        errors = _actor_errors(process)
        deadline = time.monotonic() + 2.0
        while not errors and isinstance(exc, Exception) and time.monotonic() < deadline:
            # a runtime service may answer ERROR before the failing model's exception reaches its pipe
            time.sleep(0.01)
            errors = _actor_errors(process)
        shutdown(process, failed=True)
        detail = errors[-1].strip().splitlines()[-1] if errors else f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, Exception):
            raise
        raise LavaRunError(f"Lava run failed: {detail}", errors) from exc


def _wait(process: AbstractProcess) -> None:
    """Waits for the run to finish, watching the runtime's processes.

    Lava's own blocking wait hangs when a ProcessModel raises while another one waits for
    its data (the runtime service then never answers); here any runtime process that
    exits during the run, or an ERROR from a runtime service, ends the wait with an error.

    Private API, on purpose: Lava offers no public way to watch its runtime processes, so this reads
    ``runtime._messaging_infrastructure.actors`` and ``runtime.service_to_runtime`` and sets
    ``runtime._is_running`` as Lava's own ``Runtime._run`` does. lava-nc is pinned to its final release
    (0.10.0, archived), so these names cannot move under us; tests/test_lava_procs.py exercises every path.
    """
    runtime = process.runtime
    actors = list(runtime._messaging_infrastructure.actors)
    pending = list(runtime.service_to_runtime)
    pause = 0.0005
    while pending:
        for port in list(pending):
            if not port.probe():
                continue
            answer = port.recv()
            if enum_equal(answer, MGMT_RESPONSE.DONE):
                pending.remove(port)
            elif enum_equal(answer, MGMT_RESPONSE.REQ_PAUSE):  # a model asked to pause: as Lava does
                runtime.pause()
                return
            elif enum_equal(answer, MGMT_RESPONSE.REQ_STOP):
                runtime._is_running = False
                shutdown(process)
                return
            else:
                raise RuntimeError(f"a Lava runtime service answered {answer} (ERROR is {MGMT_RESPONSE.ERROR})")
        if pending:
            dead = [a for a in actors if not _is_alive(a)]
            if dead:
                raise RuntimeError(f"{len(dead)} Lava runtime process(es) exited during the run")
            time.sleep(pause)
            pause = min(pause * 2, 0.005)
    runtime._is_running = False


def shutdown(process: AbstractProcess, failed: bool = False, timeout: float = 5.0) -> None:
    """Stops the runtime of `process`'s network and makes sure none of its OS processes is left.

    A healthy runtime is stopped the normal way; a failed one (or one whose processes have
    exited) is torn down directly: its remaining processes are terminated, the
    shared-memory manager and the watchdog are shut down. Safe to call more than once
    and on a process that never ran.
    """
    runtime = process.runtime
    if runtime is None:
        return
    infra = getattr(runtime, "_messaging_infrastructure", None)
    actors = list(getattr(infra, "actors", []) or [])
    alive = [a for a in actors if not getattr(a, "_is_done", False) and _is_alive(a)]
    healthy = not failed and getattr(runtime, "_is_started", False) and len(alive) == len(actors)
    if healthy:
        try:
            process.stop()
            return
        except Exception:
            pass  # fall through to the forced teardown
    for actor in actors:
        if getattr(actor, "_is_done", False):
            continue
        try:
            if actor.is_alive():
                actor.terminate()
                mp.Process.join(actor, timeout)
                if actor.is_alive():
                    actor.kill()
                    mp.Process.join(actor, timeout)
            actor.join()
        except (ValueError, OSError, AssertionError):
            pass
    with contextlib.suppress(Exception):
        runtime.join()
    with contextlib.suppress(Exception):
        if infra is not None and infra.smm is not None:
            infra.smm.shutdown()
    with contextlib.suppress(Exception):
        if runtime._watchdog_manager is not None:
            runtime._watchdog_manager.stop()
    # Runtime.__del__ would call stop() again and wait forever for dead services
    runtime._is_running = False
    runtime._is_started = False


def _is_alive(actor) -> bool:
    try:
        return actor.is_alive()
    except ValueError:  # closed
        return False


@contextlib.contextmanager
def lava_session(process: AbstractProcess):
    """Context manager: yields `process` and shuts its runtime down on leaving, also on error."""
    try:
        yield process
    finally:
        shutdown(process)
