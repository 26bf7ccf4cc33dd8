"""Running a sweep: :func:`run_sweep` over a :class:`Backend`, in a process pool of this machine.

The work of a point is a :class:`Backend`: :class:`hlvm.sweep.MAEBackend`
simulates, trains and evaluates; tests plug in small stand-ins. Points run in
worker processes when there are cores for it; the parent alone appends and
commits rows (:class:`hlvm.sweep.ResultsStore`).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from hlvm.errors import ConfigError, DataError, HlvmError

from .grid import SweepConfig, SweepPoint
from .store import ResultsStore, write_csv_atomic

__all__ = ["Backend", "SweepSummary", "run_sweep"]


class Backend(Protocol):
    """The work of a sweep. ``prepare`` runs once in the parent; ``run_point`` in a worker.

    ``prepare`` returns a picklable context (paths, not arrays); ``run_point``
    returns the point's rows (dicts; the point's columns are added by the
    engine); ``predict`` returns the theory's rows for the grid, or ``None``.
    """

    def prepare(self, cfg: SweepConfig, out: Path) -> dict[str, Any]: ...

    def run_point(self, cfg: SweepConfig, point: SweepPoint, context: Mapping[str, Any]) -> list[dict[str, Any]]: ...

    def predict(self, cfg: SweepConfig, context: Mapping[str, Any]) -> list[dict[str, Any]] | None: ...


def _set_threads(n: int) -> None:
    # torch reads OMP_NUM_THREADS when first imported; one already imported is told directly. numpy's BLAS
    # was loaded with the worker's first import (its pool sized to the machine), so it is capped here too:
    # two workers of two BLAS threads each on two cores would fight over them.
    import sys

    from threadpoolctl import threadpool_limits

    os.environ["OMP_NUM_THREADS"] = str(n)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)
    threadpool_limits(n)


def _worker_init(threads: int, parent: int) -> None:
    _set_threads(threads)
    # A worker whose sweep process died (killed, not Ctrl-C) would otherwise train on, orphaned.
    import threading

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(2.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _cpu_seconds() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _run_point(backend: Backend, cfg: SweepConfig, point: SweepPoint, context: Mapping[str, Any]):
    t0, c0 = time.perf_counter(), _cpu_seconds()
    rows = backend.run_point(cfg, point, context)
    return rows, time.perf_counter() - t0, _cpu_seconds() - c0


@dataclass
class SweepSummary:
    """What a call of :func:`run_sweep` did."""

    out: Path
    total: int
    skipped: int  # finished before this call
    finished: int  # finished by this call
    rows: int  # rows appended by this call
    infeasible: list[str]
    seconds: float


def run_sweep(
    cfg: SweepConfig,
    out: str | os.PathLike[str],
    *,
    backend: Backend | None = None,
    workers: int | None = None,
    threads: int | None = None,
    progress: bool = True,
    on_point: Callable[[SweepPoint, list[dict[str, Any]]], None] | None = None,
    console: Any = None,
) -> SweepSummary:
    """Run (or resume) the sweep ``cfg`` into the folder ``out``.

    Finished points found in ``out`` are skipped; each newly finished point is
    committed at once (see :class:`ResultsStore`), so an interruption (an
    exception, Ctrl-C) loses at most the points in flight. ``out`` may be
    resumed with a grid that adds or drops axis values, but not with other
    shared settings (they change every point's meaning): that raises
    :class:`ConfigError`.

    ``workers``: parallel worker processes (default ``min(cores, points to
    run)``); ``threads``: torch threads per worker (default ``cores //
    workers``, so that the total fits the machine). ``on_point``
    is called in this process after each commit.
    """
    t_start = time.perf_counter()
    for name, value in (("workers", workers), ("threads", threads)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    out = Path(out)
    if backend is None:
        from .mae import MAEBackend

        backend = MAEBackend()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    _check_config(cfg, out)
    # The backend checks what it needs (model configs, data) before sweep.json pins the settings.
    context = dict(backend.prepare(cfg, out))
    _write_config(cfg, out)

    store = ResultsStore(out)
    done = store.recover()
    points = cfg.points()
    todo = [p for p in points if p.point_id not in done]
    cores = os.cpu_count() or 1
    if workers is None:
        workers = max(1, min(cores, len(todo)))
    if threads is None:
        threads = max(1, cores // workers)

    pred = backend.predict(cfg, context)
    if pred is not None:
        write_csv_atomic(out / "prediction.csv", pred)

    summary = SweepSummary(out, len(points), len(points) - len(todo), 0, 0, cfg.infeasible(), 0.0)
    if not todo:
        summary.seconds = time.perf_counter() - t_start
        return summary

    def commit(point: SweepPoint, rows: list[dict[str, Any]], seconds: float, cpu: float) -> None:
        cols = point.columns()
        full = [{**cols, **r} for r in rows]
        meta = {"point": cols, "seconds": round(seconds, 3), "cpu_seconds": round(cpu, 3), "finished_utc": _utc_now()}
        store.append(point.point_id, full, meta)
        summary.finished += 1
        summary.rows += len(full)
        if on_point is not None:
            on_point(point, full)

    with _progress(progress, console, len(todo), summary.skipped) as advance:
        if workers == 1:
            _set_threads(threads)
            for p in todo:
                rows, sec, cpu = _run_point(backend, cfg, p, context)
                commit(p, rows, sec, cpu)
                advance(p)
        else:
            import multiprocessing as mp

            # spawn: a clean interpreter per worker; fork after torch set up threads can hang.
            pool = ProcessPoolExecutor(workers, mp.get_context("spawn"), initializer=_worker_init, initargs=(threads, os.getpid()))
            try:
                pending: dict[Future, SweepPoint] = {pool.submit(_run_point, backend, cfg, p, context): p for p in todo}
                while pending:
                    finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in finished:
                        p = pending.pop(fut)
                        rows, sec, cpu = fut.result()
                        commit(p, rows, sec, cpu)
                        advance(p)
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)
                raise
            pool.shutdown(wait=True)
    summary.seconds = time.perf_counter() - t_start
    return summary


def _utc_now() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _check_config(cfg: SweepConfig, out: Path) -> None:
    path = out / "sweep.json"
    if path.is_file():
        try:
            old = json.loads(path.read_text())["config"]
        except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
            raise DataError(f"{path} is unreadable; is {out} a sweep folder?") from None
        try:
            old_base = SweepConfig.from_dict(old).base_dict()
        except HlvmError as e:
            raise DataError(f"{path}: {e}") from None
        new_base = cfg.base_dict()
        if json.dumps(old_base, sort_keys=True) != json.dumps(new_base, sort_keys=True):
            diff = sorted(k for k in new_base if json.dumps(new_base[k], sort_keys=True) != json.dumps(old_base.get(k), sort_keys=True))
            raise ConfigError(
                f"{out} holds a sweep with other shared settings ({', '.join(diff)}); use another --out to keep both"
            )


def _write_config(cfg: SweepConfig, out: Path) -> None:
    from hlvm.io import provenance, write_json

    write_json(out / "sweep.json", {"config": cfg.to_dict(), "infeasible": cfg.infeasible(), "provenance": provenance()})


@contextlib.contextmanager
def _progress(show: bool, console: Any, total: int, skipped: int):
    if not show:
        yield lambda p: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    cols = (
        TextColumn("[bold]sweep[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("elapsed"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TextColumn("{task.description}"),
    )
    with Progress(*cols, console=console, transient=False) as bar:
        note = f"({skipped} done earlier) " if skipped else ""
        task = bar.add_task(f"{note}starting", total=total)
        yield lambda p: bar.update(task, advance=1, description=f"{note}last: {p.label()}")

