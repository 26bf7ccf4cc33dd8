"""Running a sweep: :func:`run_sweep` over a :class:`Backend`, on an executor.

The work of a point is a :class:`Backend`: :class:`hlvm.sweep.MAEBackend`
simulates, trains and evaluates; tests plug in small stand-ins. Where points
run is an executor (:mod:`hlvm.sweep.backends`): in this process, or in a pool
of worker processes when there are cores for it. The driver alone appends and
commits rows (:class:`hlvm.sweep.ResultsStore`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from hlvm.errors import ConfigError, DataError, HlvmError
from hlvm.io import atomic_file, check_writable

from .backends import Executor, InlineExecutor, Outcome, PoolExecutor
from .grid import SweepConfig, SweepPoint
from .store import LOCK, ResultsStore, sweep_lock, write_csv_atomic

__all__ = ["Backend", "SweepSummary", "run_sweep", "RETRIES", "FAILURES"]


class Backend(Protocol):
    """The work of a sweep. ``prepare`` runs once in the parent; ``run_point`` in a worker.

    ``prepare`` returns a picklable context (paths, not arrays); ``run_point``
    returns the point's rows (dicts; the point's columns are added by the
    engine); ``predict`` returns the theory's rows for the grid, or ``None``.
    """

    def prepare(self, cfg: SweepConfig, out: Path) -> dict[str, Any]: ...

    def run_point(self, cfg: SweepConfig, point: SweepPoint, context: Mapping[str, Any]) -> list[dict[str, Any]]: ...

    def predict(self, cfg: SweepConfig, context: Mapping[str, Any]) -> list[dict[str, Any]] | None: ...


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
    #: Points that failed every attempt of this call: (point, the last attempt's one-line error).
    failed: list[tuple[SweepPoint, str]] = field(default_factory=list)
    executor: str = "inline"


#: Attempts at a failed point after the first, by default.
RETRIES = 2
#: The driver's log of every failed attempt (one JSON line each, with the traceback).
FAILURES = "failures.jsonl"


def run_sweep(
    cfg: SweepConfig,
    out: str | os.PathLike[str],
    *,
    backend: Backend | None = None,
    executor: Executor | None = None,
    workers: int | None = None,
    threads: int | None = None,
    retries: int = RETRIES,
    progress: bool = True,
    on_point: Callable[[SweepPoint, list[dict[str, Any]]], None] | None = None,
    on_start: Callable[[], None] | None = None,
    console: Any = None,
) -> SweepSummary:
    """Run (or resume) the sweep ``cfg`` into the folder ``out``.

    Finished points found in ``out`` are skipped; each newly finished point is
    committed at once (see :class:`ResultsStore`), so an interruption (Ctrl-C,
    a killed driver or worker) loses at most the points in flight. ``out`` may
    be resumed with a grid that adds or drops axis values, but not with other
    shared settings (they change every point's meaning): that raises
    :class:`ConfigError`.

    Where points run: ``executor`` (:mod:`hlvm.sweep.backends`, e.g. a
    :class:`~hlvm.sweep.backends.RayExecutor`), else this machine: ``workers``
    parallel worker processes (default ``min(cores, points to run)``; one
    means this process), each with ``threads`` torch threads (default ``cores
    // workers``, so that the total fits the machine).

    A point that fails (raises, or its worker dies) is tried again, up to
    ``retries`` more times; one that fails every attempt is left out of the
    results and listed in :attr:`SweepSummary.failed` (the other points go
    on), and every failed attempt is logged with its traceback in
    ``out/failures.jsonl``. Running the same call again retries it.
    ``on_start`` is called once everything is checked and prepared, before
    the first point; ``on_point`` in this process after each commit.
    """
    t_start = time.perf_counter()
    for name, value in (("workers", workers), ("threads", threads)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ConfigError(f"retries must be an integer >= 0, got {retries!r}")
    out = Path(out)
    if backend is None:
        from .mae import MAEBackend

        backend = MAEBackend()
    # Everything that can be checked without writing is checked before anything is written.
    check_writable(out)  # a file in the path, or a read-only folder
    _check_folder(out)
    _check_config(cfg, out)
    if executor is not None:
        executor.connect()  # an unreachable cluster
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        with sweep_lock(out):
            try:
                _check_config(cfg, out)  # again under the lock: another sweep may have pinned the folder meanwhile
                # The backend checks what it needs (model configs, data) before sweep.json pins the settings.
                context = dict(backend.prepare(cfg, out))
            except HlvmError:
                if created:  # bad input leaves nothing behind; removed while the lock is held, so only ours
                    shutil.rmtree(out, ignore_errors=True)
                raise  # (a Ctrl-C keeps finished data for the resume)
            from hlvm.io import provenance

            made_by = provenance(cfg.to_dict())  # this call's: in sweep.json and in every commit record it writes
            _write_config(cfg, out, made_by)
            if on_start is not None:
                on_start()
            return _run(cfg, out, backend, context, executor, workers, threads, retries, progress, on_point, console, t_start,
                        made_by)
    except BaseException:
        if executor is not None:
            executor.stop(cancel=True)
        raise


#: What a sweep writes into its folder before sweep.json (refused resumes aside, a folder with anything else is not a sweep's).
_BEFORE_CONFIG = (LOCK, "data")


def _check_folder(out: Path) -> None:
    """Refuse a non-empty ``out`` that holds no sweep: its files would be mixed with the sweep's."""
    if not out.is_dir() or (out / "sweep.json").is_file():
        return
    foreign = sorted(p.name for p in out.iterdir() if p.name not in _BEFORE_CONFIG and not p.name.startswith(".sweep.json."))
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise ConfigError(f"--out {out} is not empty and holds no sweep (it has {shown}); give a new or empty folder")


def _run(cfg, out, backend, context, executor, workers, threads, retries, progress, on_point, console, t_start,  # noqa: ANN001
         made_by) -> SweepSummary:

    store = ResultsStore(out)
    done = store.recover()
    points = cfg.points()
    todo = [p for p in points if p.point_id not in done]
    if executor is None:
        cores = os.cpu_count() or 1
        if workers is None:
            workers = max(1, min(cores, len(todo)))
        if threads is None:
            threads = max(1, cores // workers)
        executor = InlineExecutor(threads) if workers == 1 else PoolExecutor(workers, threads)

    pred = backend.predict(cfg, context)
    if pred is not None:
        write_csv_atomic(out / "prediction.csv", pred)

    summary = SweepSummary(out, len(points), len(points) - len(todo), 0, 0, cfg.infeasible(), 0.0, executor=executor.name)
    if not todo:
        executor.stop()
        summary.seconds = time.perf_counter() - t_start
        return summary

    def commit(o: Outcome) -> None:
        point = o.point
        for rel, data in (o.files or {}).items():  # a worker's run folder, sent back: written here, before the rows
            target = (out / rel).resolve()
            if out.resolve() not in target.parents:
                raise DataError(f"a worker sent a file outside the sweep folder: {rel}")
            target.parent.mkdir(parents=True, exist_ok=True)
            with atomic_file(target, "wb") as f:
                f.write(data)
        cols = point.columns()
        full = [{**cols, **r} for r in o.rows or []]
        meta = {"point": cols, "seconds": round(o.seconds, 3), "cpu_seconds": round(o.cpu_seconds, 3), "finished_utc": _utc_now(),
                "provenance": made_by}
        store.append(point.point_id, full, meta)
        summary.finished += 1
        summary.rows += len(full)
        if on_point is not None:
            on_point(point, full)

    queue = [(p, 1) for p in todo]
    with _progress(progress, console, len(todo), summary.skipped) as advance:
        try:
            executor.start(backend, cfg, context)
            while queue or executor.in_flight():
                while queue and executor.in_flight() < executor.capacity:
                    executor.submit(*queue.pop(0))
                for o in executor.wait():
                    if o.ok:
                        commit(o)
                        advance(o.point)
                        continue
                    _log_failure(out, o, executor.name)
                    if o.attempt <= retries:
                        queue.append((o.point, o.attempt + 1))  # behind the others: a flaky node may be gone by then
                    else:
                        summary.failed.append((o.point, o.error or "unknown error"))
                        advance(o.point, failed=True)
        except BaseException:
            executor.stop(cancel=True)
            raise
        executor.stop()
    summary.seconds = time.perf_counter() - t_start
    return summary


def _log_failure(out: Path, o: Outcome, where: str) -> None:
    rec = {
        "point_id": o.point.point_id,
        "label": o.point.label(),
        "attempt": o.attempt,
        "executor": where,
        "error": o.error,
        "traceback": o.traceback,
        "failed_utc": _utc_now(),
    }
    with open(out / FAILURES, "a") as f:
        f.write(json.dumps(rec) + "\n")


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


def _write_config(cfg: SweepConfig, out: Path, made_by: dict[str, Any]) -> None:
    """Write ``sweep.json``: the config of this call, and the provenance of the first run with one entry per resume.

    A resume keeps the first run's ``provenance`` (its commit and time) and
    appends its own, with the grid it ran, to ``resumes``: the results then
    come from several runs, and the report says so.
    """
    from hlvm.io import write_json

    from .grid import AXES

    path = out / "sweep.json"
    data: dict[str, Any] = {"config": cfg.to_dict(), "infeasible": cfg.infeasible(), "provenance": made_by}
    if path.is_file():
        old = json.loads(path.read_text())  # readable: _check_config read it
        resume = {"provenance": data["provenance"], "axes": {k: data["config"][k] for k in AXES}}
        data["provenance"] = old.get("provenance", {})
        data["resumes"] = [*old.get("resumes", []), resume]
    write_json(path, data)


@contextlib.contextmanager
def _progress(show: bool, console: Any, total: int, skipped: int):
    if not show:
        yield lambda p, failed=False: None
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
        def advance(p: SweepPoint, failed: bool = False) -> None:
            what = "failed" if failed else "last"
            bar.update(task, advance=1, description=f"{note}{what}: {p.label()}")

        yield advance

