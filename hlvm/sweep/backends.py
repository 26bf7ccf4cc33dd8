"""Where the points of a sweep run: one :class:`Executor` interface, one class per place.

The work of a point is a :class:`hlvm.sweep.Backend` (``run_point``); an
executor decides only *where* ``run_point`` is called and hands each finished
point back to the driver as an :class:`Outcome`. The driver
(:func:`hlvm.sweep.run_sweep`) alone appends and commits rows, so every
executor writes the same files in the same way.

- :class:`InlineExecutor`: in the driver's own process, one point at a time;
- :class:`PoolExecutor`: a pool of spawned worker processes on this machine.

An executor runs at most :attr:`Executor.capacity` points at once; the driver
keeps the rest queued, so a crash of a worker costs at most the points that
were in flight with it.
"""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Protocol

from .grid import SweepConfig, SweepPoint

__all__ = ["Executor", "Outcome", "InlineExecutor", "PoolExecutor", "run_one", "set_threads"]


@dataclass
class Outcome:
    """What one attempt at a point gave: its rows, or the error that stopped it.

    ``error`` is one line (``"TypeName: message"``) for the user;
    ``traceback`` the full text for the failures log; ``exception`` the
    exception object where the executor has it (not for Ray).
    """

    point: SweepPoint
    attempt: int
    rows: list[dict[str, Any]] | None = None
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    error: str | None = None
    traceback: str | None = None
    exception: BaseException | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.error is None


class Executor(Protocol):
    """Where points run. ``start`` once, ``submit`` up to ``capacity`` points, ``wait`` for any, ``stop`` at the end."""

    name: str
    capacity: int

    def start(self, backend: Any, cfg: SweepConfig, context: Mapping[str, Any]) -> None: ...

    def submit(self, point: SweepPoint, attempt: int) -> None: ...

    def wait(self) -> list[Outcome]:
        """Block until at least one submitted point is finished; return the finished ones."""
        ...

    def in_flight(self) -> int: ...

    def stop(self, cancel: bool = False) -> None: ...


def set_threads(n: int) -> None:
    """Cap torch's and the BLAS libraries' threads in this process at ``n``."""
    # torch reads OMP_NUM_THREADS when first imported; one already imported is told directly. numpy's BLAS
    # was loaded with the worker's first import (its pool sized to the machine), so it is capped here too:
    # two workers of two BLAS threads each on two cores would fight over them.
    import sys

    from threadpoolctl import threadpool_limits

    os.environ["OMP_NUM_THREADS"] = str(n)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)
    threadpool_limits(n)


def _cpu_seconds() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def one_line_error(e: BaseException) -> str:
    """``"TypeName: message"`` on one line."""
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def run_one(
    backend: Any, cfg: SweepConfig, point: SweepPoint, context: Mapping[str, Any], threads: int | None = None
) -> tuple[list[dict[str, Any]] | None, float, float, str | None, str | None]:
    """Run one point where it is called: ``(rows, seconds, cpu_seconds, error, traceback)``.

    An ``Exception`` becomes ``error``/``traceback`` (text travels between
    processes and machines where an exception object may not unpickle);
    a ``KeyboardInterrupt`` or ``SystemExit`` propagates.
    """
    if threads is not None:
        set_threads(threads)
    t0, c0 = time.perf_counter(), _cpu_seconds()
    try:
        rows = backend.run_point(cfg, point, context)
    except Exception as e:  # noqa: BLE001 - any failure of a point is reported, the sweep goes on
        return None, time.perf_counter() - t0, _cpu_seconds() - c0, one_line_error(e), traceback.format_exc()
    return rows, time.perf_counter() - t0, _cpu_seconds() - c0, None, None


class InlineExecutor:
    """Points run in the driver's process, one at a time, when :meth:`wait` is called."""

    name = "inline"
    capacity = 1

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads
        self._queue: list[tuple[SweepPoint, int]] = []

    def start(self, backend: Any, cfg: SweepConfig, context: Mapping[str, Any]) -> None:
        self.backend, self.cfg, self.context = backend, cfg, context
        if self.threads is not None:
            set_threads(self.threads)

    def submit(self, point: SweepPoint, attempt: int) -> None:
        self._queue.append((point, attempt))

    def wait(self) -> list[Outcome]:
        point, attempt = self._queue.pop(0)
        t0, c0 = time.perf_counter(), _cpu_seconds()
        try:
            rows = self.backend.run_point(self.cfg, point, self.context)
        except Exception as e:  # noqa: BLE001 - any failure of a point is reported, the sweep goes on
            sec, cpu = time.perf_counter() - t0, _cpu_seconds() - c0
            return [Outcome(point, attempt, None, sec, cpu, one_line_error(e), traceback.format_exc(), e)]
        return [Outcome(point, attempt, rows, time.perf_counter() - t0, _cpu_seconds() - c0)]

    def in_flight(self) -> int:
        return len(self._queue)

    def stop(self, cancel: bool = False) -> None:
        self._queue.clear()


def _worker_init(threads: int, parent: int) -> None:
    set_threads(threads)
    # A worker whose sweep process died (killed, not Ctrl-C) would otherwise train on, orphaned.
    import threading

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(2.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


class PoolExecutor:
    """Points run in ``workers`` spawned processes of this machine, each with ``threads`` torch threads.

    A worker that dies (killed, out of memory) breaks the whole pool; the
    points then in flight come back as failed attempts and the next
    :meth:`submit` starts a fresh pool.
    """

    name = "process"

    def __init__(self, workers: int, threads: int) -> None:
        self.capacity = workers
        self.workers, self.threads = workers, threads
        self._pool: ProcessPoolExecutor | None = None
        self._pending: dict[Future, tuple[SweepPoint, int]] = {}

    def start(self, backend: Any, cfg: SweepConfig, context: Mapping[str, Any]) -> None:
        self.backend, self.cfg, self.context = backend, cfg, context

    def _ensure_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            import multiprocessing as mp

            # spawn: a clean interpreter per worker; fork after torch set up threads can hang.
            self._pool = ProcessPoolExecutor(
                self.workers, mp.get_context("spawn"), initializer=_worker_init, initargs=(self.threads, os.getpid())
            )
        return self._pool

    def submit(self, point: SweepPoint, attempt: int) -> None:
        from concurrent.futures.process import BrokenProcessPool

        try:
            fut = self._ensure_pool().submit(run_one, self.backend, self.cfg, point, self.context)
        except BrokenProcessPool:
            self._drop_pool()
            fut = self._ensure_pool().submit(run_one, self.backend, self.cfg, point, self.context)
        self._pending[fut] = (point, attempt)

    def _drop_pool(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def wait(self) -> list[Outcome]:
        from concurrent.futures.process import BrokenProcessPool

        done, _ = wait(self._pending, return_when=FIRST_COMPLETED)
        out = []
        broken = False
        for fut in done:
            point, attempt = self._pending.pop(fut)
            try:
                rows, sec, cpu, err, tb = fut.result()
            except BrokenProcessPool as e:
                broken = True
                why = "a worker process died abruptly (killed, or out of memory) while this point was in flight"
                out.append(Outcome(point, attempt, error=f"WorkerDied: {why}", traceback=repr(e), exception=e))
                continue
            out.append(Outcome(point, attempt, rows, sec, cpu, err, tb))
        if broken:
            self._drop_pool()
        return out

    def in_flight(self) -> int:
        return len(self._pending)

    def stop(self, cancel: bool = False) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=not cancel, cancel_futures=cancel)
            self._pool = None
        self._pending.clear()
