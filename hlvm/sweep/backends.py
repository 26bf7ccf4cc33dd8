"""Where the points of a sweep run: one :class:`Executor` interface, one class per place.

The work of a point is a :class:`hlvm.sweep.Backend` (``run_point``); an
executor decides only *where* ``run_point`` is called and hands each finished
point back to the driver as an :class:`Outcome`. The driver
(:func:`hlvm.sweep.run_sweep`) alone appends and commits rows, so every
executor writes the same files in the same way.

- :class:`InlineExecutor`: in the driver's own process, one point at a time;
- :class:`PoolExecutor`: a pool of spawned worker processes on this machine;
- :class:`RayExecutor`: Ray tasks, on this machine or a cluster.

An executor runs at most :attr:`Executor.capacity` points at once; the driver
keeps the rest queued, so a crash of a worker costs at most the points that
were in flight with it.
"""

from __future__ import annotations

import contextlib
import os
import time
import traceback
from collections.abc import Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Protocol

from .grid import SweepConfig, SweepPoint

__all__ = ["Executor", "Outcome", "InlineExecutor", "PoolExecutor", "RayExecutor", "RAY_INSTALL", "run_one", "set_threads"]


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
    #: Files the point wrote where the driver cannot see them (Ray with ``data="worker"``): path under the sweep
    #: folder -> bytes, written by the driver before the point's rows are committed.
    files: dict[str, bytes] | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.error is None


class Executor(Protocol):
    """Where points run: ``connect``, ``start`` once, ``submit`` up to ``capacity`` points, ``wait`` for any, ``stop``.

    ``connect`` reaches the resources (a cluster) before anything is written,
    and raises :class:`hlvm.errors.ConfigError` if they cannot be had.
    """

    name: str
    capacity: int

    def connect(self) -> None: ...

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


def one_line_error(e: BaseException, limit: int = 500) -> str:
    """``"TypeName: message"`` on one line, at most ``limit`` characters (the failures log keeps the rest)."""
    text = " ".join(str(e).split())
    line = f"{type(e).__name__}: {text}" if text else type(e).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


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

    def connect(self) -> None:
        pass

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

    def connect(self) -> None:
        pass

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
            if cancel:
                # Ctrl-C: the points in flight are dropped (their rows were never committed), so their workers
                # stop now; otherwise the interpreter's exit would wait for them to finish, minutes for a ViT.
                for proc in list(getattr(self._pool, "_processes", {}).values()):
                    with contextlib.suppress(Exception):
                        proc.terminate()
            self._pool.shutdown(wait=not cancel, cancel_futures=cancel)
            self._pool = None
        self._pending.clear()


#: What to tell a user who asks for Ray without it.
RAY_INSTALL = "pip install 'hlvm[ray]' (or: pip install ray)"


def _ray_run(shared: tuple[Any, SweepConfig, Mapping[str, Any]], point: SweepPoint, threads: int):  # noqa: ANN202
    """The Ray task of a point: the same :func:`run_one` a pool worker calls."""
    backend, cfg, context = shared
    return run_one(backend, cfg, point, context, threads)


def _ray_run_local(shared: tuple[Any, SweepConfig, Mapping[str, Any]], point: SweepPoint, threads: int):  # noqa: ANN202
    """The Ray task of a point on a node that does not see the sweep folder (``RayExecutor(data="worker")``).

    The point's data are simulated again from their seeds (the simulator is deterministic: the same bytes as the
    driver's) in a temporary folder of the node, the point runs there, and its rows and whatever it left in its
    run folder (``runs/<point_id>/``: config, metrics, a kept checkpoint) travel back to the driver as bytes.
    The temporary folder is removed.
    """
    import shutil
    import tempfile
    from pathlib import Path

    backend, cfg, _ = shared
    tmp = Path(tempfile.mkdtemp(prefix="hlvm-point-"))
    try:
        if threads is not None:
            set_threads(threads)
        try:
            prepare = getattr(backend, "prepare_point", None)
            context = prepare(cfg, point, tmp) if prepare is not None else backend.prepare(cfg, tmp)
        except Exception as e:  # noqa: BLE001 - reported as the point's failure, as any other
            return None, 0.0, 0.0, one_line_error(e), traceback.format_exc(), None
        rows, sec, cpu, err, tb = run_one(backend, cfg, point, context, None)
        run = tmp / "runs" / point.point_id
        files = {str(f.relative_to(tmp)): f.read_bytes() for f in sorted(run.rglob("*")) if f.is_file()} if run.is_dir() else {}
        return rows, sec, cpu, err, tb, files
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


#: Where a Ray point's data live (``RayExecutor(data=...)``).
RAY_DATA = ("shared", "worker")


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null inside the block (C++ libraries write there directly)."""
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _signal_handlers() -> dict[int, Any]:
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}


def _restore_signal_handlers(saved: dict[int, Any]) -> None:
    import signal

    for sig, handler in saved.items():
        if handler is not None:
            signal.signal(sig, handler)


#: Seconds to wait for a Ray cluster's port to answer before calling it unreachable.
RAY_CONNECT_TIMEOUT = 5.0


def _check_reachable(address: str, timeout: float = RAY_CONNECT_TIMEOUT) -> None:
    """A ``HOST:PORT`` (or ``ray://HOST:PORT``) address where nothing listens is a :class:`ConfigError` at once.

    ``ray.init`` itself retries an unreachable GCS for minutes; one TCP connect answers in at most ``timeout``
    seconds. ``"auto"`` and other forms are left to Ray.
    """
    import socket

    from hlvm.errors import ConfigError

    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit() or not host:
        return
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as e:
        why = "timed out" if isinstance(e, TimeoutError) else (e.strerror or type(e).__name__).lower()
        raise ConfigError(f"cannot reach the Ray cluster at {address}: {why}; start it with 'ray start --head' "
                          "or give another --ray-address") from None


class RayExecutor:
    """Points run as Ray tasks, each asking the cluster for ``cpus`` CPUs and ``gpus`` GPUs.

    ``address`` is ``None`` (a Ray instance started here, sized to this
    machine, or the one this process is already connected to), ``"auto"`` (the
    cluster a ``ray start --head`` on this machine runs) or ``"HOST:PORT"``.
    Tasks do not retry on their own (``max_retries=0``): a worker that dies
    comes back as a failed attempt, and the driver's bounded retries
    (:func:`hlvm.sweep.run_sweep`) apply to it as to any failure. ``limit``
    caps the points in flight (default: all of them; Ray queues what the
    cluster cannot yet place). Each task runs ``threads`` torch threads
    (default ``cpus``).

    Workers need the same hlvm (and the code of any custom backend). Where the
    data live is ``data``:

    - ``"shared"``: workers read the simulated data from ``OUT/data/`` and
      train into ``OUT/runs/``: the sweep folder must be on a filesystem every
      node mounts at the same path (cheapest where data are large);
    - ``"worker"``: no shared filesystem. Each task simulates its point's data
      again from the seeds in a temporary folder of its node (the simulator is
      deterministic: the same bytes), runs there, and sends its rows and its
      run folder's files back; the driver alone writes ``OUT``.

    The default is ``"shared"`` for a Ray instance started here (one machine)
    and ``"worker"`` for a cluster given by ``address``.
    """

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        *,
        cpus: float = 1,
        gpus: float = 0,
        threads: int | None = None,
        limit: int | None = None,
        data: str | None = None,
    ) -> None:
        from hlvm.errors import ConfigError

        try:
            import ray  # noqa: F401
        except ImportError:
            raise ConfigError(f"--backend ray needs Ray, which is not installed: {RAY_INSTALL}") from None
        for what, value, low in (("cpus per point", cpus, 0), ("gpus per point", gpus, 0)):
            if isinstance(value, bool) or not isinstance(value, int | float) or not value >= low or value != value:
                raise ConfigError(f"{what} must be a number >= {low}, got {value!r}")
        if cpus == 0 and gpus == 0:
            raise ConfigError("a point needs some resource: cpus per point or gpus per point must be > 0")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ConfigError(f"threads must be a positive integer, got {threads!r}")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise ConfigError(f"workers must be a positive integer, got {limit!r}")
        if data is not None and data not in RAY_DATA:
            raise ConfigError(f"unknown Ray data mode {data!r}; choose from {', '.join(RAY_DATA)}")
        self.address, self.cpus, self.gpus = address, cpus, gpus
        self.data = data if data is not None else ("shared" if address is None else "worker")
        self.threads = threads if threads is not None else max(1, int(cpus))
        self.capacity = limit if limit is not None else 1 << 30
        self._owns = False
        self._signals: dict[int, Any] = {}
        self._pending: dict[Any, tuple[SweepPoint, int]] = {}
        self._connected = False

    def connect(self) -> None:
        """Connect to (or start) Ray; a cluster that cannot be reached is a :class:`ConfigError`."""
        import logging

        import ray

        from hlvm.errors import ConfigError

        if self._connected:
            return
        if self.address is not None and not ray.is_initialized():
            _check_reachable(self.address)
        if not ray.is_initialized():
            kw: dict[str, Any] = {"logging_level": logging.ERROR, "include_dashboard": False}
            if self.address is not None:
                kw["address"] = self.address
            # ray.init installs its own SIGTERM handler in this process; the caller's comes back on disconnect.
            self._signals = _signal_handlers()
            try:
                # Joining a cluster that cannot be reached, Ray's C++ client writes a warning a second to the
                # process's stderr (not through logging) before Python's ConnectionError: that error alone is said.
                with _quiet_stderr() if self.address is not None else contextlib.nullcontext():
                    ray.init(**kw)
            except Exception as e:  # noqa: BLE001 - ConnectionError, ValueError, RuntimeError by Ray version
                _restore_signal_handlers(self._signals)
                where = self.address or "a new local instance"
                raise ConfigError(f"cannot start or reach Ray ({where}): {one_line_error(e)}") from None
            self._owns = True
        have = ray.cluster_resources()
        for what, need, key in (("CPUs", self.cpus, "CPU"), ("GPUs", self.gpus, "GPU")):
            if need > have.get(key, 0):
                self.disconnect()
                raise ConfigError(
                    f"each point asks for {need:g} {what} but the Ray cluster has {have.get(key, 0):g} in all; "
                    f"lower --{what[:-1].lower()}s-per-point or add nodes"
                )
        self._connected = True

    def disconnect(self) -> None:
        if self._owns:
            import ray

            ray.shutdown()
            _restore_signal_handlers(self._signals)
            self._owns = False
        self._connected = False

    def start(self, backend: Any, cfg: SweepConfig, context: Mapping[str, Any]) -> None:
        import ray

        self.connect()
        self._shared = ray.put((backend, cfg, dict(context)))
        self._out = context.get("out")
        self._task = ray.remote(_ray_run if self.data == "shared" else _ray_run_local).options(
            num_cpus=self.cpus, num_gpus=self.gpus, max_retries=0, retry_exceptions=False
        )

    def submit(self, point: SweepPoint, attempt: int) -> None:
        ref = self._task.remote(self._shared, point, self.threads)
        self._pending[ref] = (point, attempt)

    def wait(self) -> list[Outcome]:
        import ray

        ready, _ = ray.wait(list(self._pending), num_returns=1)
        out = []
        for ref in ready:
            point, attempt = self._pending.pop(ref)
            try:
                rows, sec, cpu, err, tb, *files = ray.get(ref)
            except ray.exceptions.RayError as e:  # a worker or node died, the task was cancelled, ...
                cause = getattr(e, "cause", None) or e
                out.append(Outcome(point, attempt, error=one_line_error(cause), traceback=str(e)))
                continue
            out.append(Outcome(point, attempt, rows, sec, cpu, err, tb, files=files[0] if files else None))
        return out

    def in_flight(self) -> int:
        return len(self._pending)

    def stop(self, cancel: bool = False) -> None:
        if cancel and self._pending:
            import ray

            for ref in self._pending:
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # noqa: BLE001, S110 - a task that already finished cannot be cancelled
                    pass
        self._pending.clear()
        self.disconnect()
