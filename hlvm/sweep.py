"""The sweep engine: mask ratio x masking unit x seed x objective (x bottleneck) grids.

A sweep trains one MAE per grid *point* and measures, on several held-out
masks of the point's ratio and unit, how well the encoder's code recovers
every latent node's value and noise (:func:`hlvm.evaluate.evaluate_encoder`).
Results are raw numbers, one row per point x evaluation mask x latent node,
each row carrying the point's full configuration.

Storage is append-only and crash-safe (``ResultsStore``):

- ``results.csv`` and ``results.jsonl`` hold the rows (same rows, two formats);
- ``points.jsonl`` holds one *commit record* per finished point, written after
  its rows were appended and fsynced, with the byte length both row files had
  at that moment.

A point counts as finished only once its commit record is on disk. On resume
the row files are cut back to the last commit's lengths (dropping the rows of a
point that died mid-append, which is never a finished point) and a torn last
line of ``points.jsonl`` is ignored and cut. Finished rows are never rewritten.

The work of a point is a :class:`Backend`: :class:`MAEBackend` simulates (once
per sweep, cached by config hash), trains and evaluates; tests plug in small
stand-ins. Points run in worker processes when there are cores for it.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from hlvm.errors import ConfigError, DataError, MaskError, HlvmError
from hlvm.evaluate import ROW_COLUMNS as NODE_COLUMNS
from hlvm.io import read_json
from hlvm.masks import num_masked

__all__ = [
    "MASK_KINDS",
    "KNOWN_OBJECTIVES",
    "SweepConfig",
    "SweepPoint",
    "ResultsStore",
    "Backend",
    "MAEBackend",
    "SweepSummary",
    "run_sweep",
    "load_sweep_config",
    "POINT_COLUMNS",
    "ROW_COLUMNS",
]

MASK_KINDS = ("random", "aligned")
# Mirrors hlvm.objectives.OBJECTIVES; checked against it when that module is importable.
KNOWN_OBJECTIVES = ("mae", "umae", "mmae")

# Columns every results row carries, in this order; anything else follows, sorted.
POINT_COLUMNS = [
    "point_id",
    "mask_ratio",
    "mask_unit",
    "seed",
    "objective",
    "bottleneck",
    "model",
    "steps",
    "depth",
    "branching",
]
ROW_COLUMNS = POINT_COLUMNS + [
    "mask_kind",
    "mask_index",
    "mask_seed",
    "mask_masked_frac",
    "representation",
    "rep_dim",
    "n_eval",
    "dim_c",
    "c_abstraction",
    "frac_noise_shared",
    "agreement",
    "agreement_ca_vs_masked",
    "effective_rank",
    "cca_c",
    *NODE_COLUMNS,  # one row per latent node, as hlvm.evaluate reports it
]


def _as_tuple(name: str, value: Any) -> tuple:
    if isinstance(value, str) or not isinstance(value, Iterable):
        value = (value,)
    out = tuple(value)
    if not out:
        raise ConfigError(f"empty grid: {name} has no values")
    if len(set(map(repr, out))) != len(out):
        raise ConfigError(f"{name} lists a value twice: {list(out)}")
    return out


@dataclass(frozen=True)
class SweepConfig:
    """A sweep: the grid axes and everything shared by its points; validates itself.

    Grid axes (a point per combination): ``mask_ratios``, ``mask_units``
    (masking unit ``u`` in pixels), ``seeds``, ``objectives``, ``bottlenecks``
    (``None`` = no bottleneck). ``mask_kinds`` names the kinds of held-out
    evaluation masks (``"random"``: MAE's random unit masks; ``"aligned"``:
    :func:`hlvm.masks.aligned_unit_masks`, whole hierarchy blocks) each
    point is measured on. Combinations
    whose ratio masks no unit or every unit of an image are infeasible and
    skipped (listed by :meth:`infeasible`).

    Shared: the hierarchy (``graph``: :class:`hlvm.graphs.GridSpec` options),
    the simulator options (``simulate``: extra :class:`hlvm.simulate.SimulateConfig`
    fields), ``n_train`` / ``n_eval`` samples, the model config name
    ``model`` (+ ``model_options``: :class:`hlvm.models.MAEConfig` fields such
    as ``mlp_hidden``), training ``steps`` / ``batch`` / ``blr`` (+ ``train`` extra
    :class:`hlvm.train.TrainConfig` fields), ``eval_masks`` held-out masks per
    point and ``predict_masks`` masks per cell for the theory's prediction.
    ``keep_checkpoints=False`` deletes each point's ``checkpoint.pt`` once it
    is evaluated (its ``config.json`` and ``metrics.jsonl`` stay).
    """

    mask_ratios: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75, 0.9)
    mask_units: tuple[int, ...] = (1, 2, 4)
    seeds: tuple[int, ...] = (0,)
    objectives: tuple[str, ...] = ("mae",)
    bottlenecks: tuple[int | None, ...] = (None,)
    mask_kinds: tuple[str, ...] = ("random",)
    graph: Mapping[str, Any] = field(default_factory=lambda: {"depth": 3, "branching": 2})
    simulate: Mapping[str, Any] = field(default_factory=dict)
    n_train: int = 20000
    n_eval: int = 2000
    data_seed: int = 0
    model: str = "mlp"
    model_options: Mapping[str, Any] = field(default_factory=dict)
    steps: int = 1500
    batch: int = 256
    blr: float = 1.5e-4
    train: Mapping[str, Any] = field(default_factory=dict)
    eval_masks: int = 4
    predict_masks: int = 1000
    keep_checkpoints: bool = True

    def __post_init__(self) -> None:
        ratios = _as_tuple("mask_ratios", self.mask_ratios)
        for r in ratios:
            if isinstance(r, bool) or not isinstance(r, int | float) or not 0.0 < float(r) < 1.0:
                raise ConfigError(f"mask ratio must be in (0, 1), got {r!r}")
        units = _as_tuple("mask_units", self.mask_units)
        for u in units:
            if isinstance(u, bool) or not isinstance(u, int) or u < 1:
                raise ConfigError(f"mask unit must be a positive integer, got {u!r}")
        seeds = _as_tuple("seeds", self.seeds)
        for s in seeds:
            if isinstance(s, bool) or not isinstance(s, int) or s < 0:
                raise ConfigError(f"seed must be a non-negative integer, got {s!r}")
        objectives = _as_tuple("objectives", self.objectives)
        known = _known_objectives()
        for o in objectives:
            if o not in known:
                raise ConfigError(f"unknown objective {o!r}; choose from {', '.join(sorted(known))}")
        bottlenecks = _as_tuple("bottlenecks", self.bottlenecks)
        for d in bottlenecks:
            if d is not None and (isinstance(d, bool) or not isinstance(d, int) or d < 1):
                raise ConfigError(f"bottleneck must be a positive integer or null, got {d!r}")
        kinds = _as_tuple("mask_kinds", self.mask_kinds)
        for k in kinds:
            if k not in MASK_KINDS:
                raise ConfigError(f"unknown mask kind {k!r}; choose from {', '.join(MASK_KINDS)}")
        for name in ("n_train", "n_eval", "steps", "batch", "eval_masks", "predict_masks"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{name} must be a positive integer, got {v!r}")
        if self.n_eval < 20:
            raise ConfigError(f"n_eval must be at least 20 for a held-out R^2, got {self.n_eval}")
        if not isinstance(self.blr, int | float) or isinstance(self.blr, bool) or not self.blr > 0:
            raise ConfigError(f"blr must be a positive number, got {self.blr!r}")
        if not isinstance(self.keep_checkpoints, bool):
            raise ConfigError(f"keep_checkpoints must be true or false, got {self.keep_checkpoints!r}")
        if not isinstance(self.model, str) or not self.model:
            raise ConfigError(f"model must be a config name, got {self.model!r}")
        for name in ("graph", "simulate", "train", "model_options"):
            if not isinstance(getattr(self, name), Mapping):
                raise ConfigError(f"{name} must be a JSON object, got {getattr(self, name)!r}")
        object.__setattr__(self, "mask_ratios", tuple(float(r) for r in ratios))
        object.__setattr__(self, "mask_units", tuple(int(u) for u in units))
        object.__setattr__(self, "seeds", tuple(int(s) for s in seeds))
        object.__setattr__(self, "objectives", tuple(objectives))
        object.__setattr__(self, "bottlenecks", tuple(bottlenecks))
        object.__setattr__(self, "mask_kinds", tuple(kinds))
        object.__setattr__(self, "graph", dict(self.graph))
        object.__setattr__(self, "simulate", dict(self.simulate))
        object.__setattr__(self, "train", dict(self.train))
        object.__setattr__(self, "model_options", dict(self.model_options))
        spec = self.grid_spec()  # validates the hierarchy options
        for u in self.mask_units:
            if spec.side % u:
                raise ConfigError(f"mask unit {u} does not divide the {spec.side}x{spec.side} image")
        if not self.points():
            bad = "; ".join(self.infeasible())
            raise ConfigError(f"empty grid: no (mask ratio, mask unit) pair is feasible ({bad})")

    # -- the grid
    def grid_spec(self):
        """The :class:`hlvm.graphs.GridSpec` of the sweep's hierarchy."""
        from hlvm.graphs import GridSpec

        try:
            return GridSpec(**self.graph)
        except TypeError as e:
            raise ConfigError(f"graph: {e}") from None

    def grid_spec_graph(self):
        """The hierarchy graph itself (:func:`hlvm.graphs.grid_hierarchy` of :meth:`grid_spec`)."""
        from hlvm.graphs import grid_hierarchy

        return grid_hierarchy(self.grid_spec())

    def _feasible(self, ratio: float, unit: int) -> str | None:
        side = self.grid_spec().side
        try:
            num_masked((side // unit) ** 2, ratio)
        except MaskError as e:
            return str(e)
        return None

    def infeasible(self) -> list[str]:
        """Why each skipped (ratio, unit) pair is skipped."""
        out = []
        for u in self.mask_units:
            for r in self.mask_ratios:
                why = self._feasible(r, u)
                if why:
                    out.append(f"ratio {r} at unit {u}: {why}")
        return out

    def base_dict(self) -> dict[str, Any]:
        """Everything but the grid axes: what every point of this sweep shares."""
        axes = {"mask_ratios", "mask_units", "seeds", "objectives", "bottlenecks"}
        return {k: v for k, v in self.to_dict().items() if k not in axes}

    def points(self) -> list[SweepPoint]:
        """Feasible grid points, in a fixed order (unit, ratio, objective, bottleneck, seed).

        ``mask_kinds`` is not a point axis: every point's model is evaluated
        on held-out masks of each kind (training masks are always random).
        """
        base = self.base_dict()
        out = []
        for unit in self.mask_units:
            for ratio in self.mask_ratios:
                if self._feasible(ratio, unit):
                    continue
                for obj in self.objectives:
                    for d in self.bottlenecks:
                        for seed in self.seeds:
                            out.append(SweepPoint(ratio, unit, seed, obj, d, base))
        return out

    # -- JSON
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("mask_ratios", "mask_units", "seeds", "objectives", "bottlenecks", "mask_kinds"):
            d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SweepConfig:
        if not isinstance(data, Mapping):
            raise ConfigError(f"a sweep config must be a JSON object, got {type(data).__name__}")
        names = {f.name for f in fields(cls)}
        data = {k: v for k, v in data.items() if not k.startswith("_")}  # "_comment" keys
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"unknown sweep config key {unknown[0]!r}; known: {', '.join(sorted(names))}")
        return cls(**data)


def _known_objectives() -> tuple[str, ...]:
    try:
        from hlvm.objectives import OBJECTIVES
    except ImportError:
        return KNOWN_OBJECTIVES
    return tuple(OBJECTIVES)


def load_sweep_config(path: str | os.PathLike[str]) -> SweepConfig:
    """Read a study's ``config.json``; missing or malformed files raise :class:`ConfigError`."""
    data = read_json(path, "sweep config", ConfigError)
    try:
        return SweepConfig.from_dict(data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


@dataclass(frozen=True)
class SweepPoint:
    """One grid point; ``point_id`` hashes it together with everything the sweep shares."""

    mask_ratio: float
    mask_unit: int
    seed: int
    objective: str
    bottleneck: int | None
    base: Mapping[str, Any] = field(repr=False, compare=False)

    @property
    def axes(self) -> dict[str, Any]:
        return {
            "mask_ratio": self.mask_ratio,
            "mask_unit": self.mask_unit,
            "seed": self.seed,
            "objective": self.objective,
            "bottleneck": self.bottleneck,
        }

    @property
    def point_id(self) -> str:
        blob = json.dumps({"axes": self.axes, "base": self.base}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def columns(self) -> dict[str, Any]:
        """The point's configuration as it appears in every results row."""
        g = self.base.get("graph", {})
        return {
            "point_id": self.point_id,
            **self.axes,
            "model": self.base.get("model"),
            "steps": self.base.get("steps"),
            "depth": g.get("depth", 4),
            "branching": g.get("branching", 2),
        }

    def label(self) -> str:
        d = "" if self.bottleneck is None else f" d={self.bottleneck}"
        return f"r={self.mask_ratio:g} u={self.mask_unit} {self.objective}{d} seed={self.seed}"


# ----------------------------------------------------------------------------- storage


def _fsync_append(path: Path, data: bytes) -> int:
    """Append ``data`` in one write, flush and fsync; return the file's new length."""
    with open(path, "ab") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
        return f.tell()


def _truncate(path: Path, size: int) -> None:
    with open(path, "r+b") as f:
        f.truncate(size)
        f.flush()
        os.fsync(f.fileno())


class ResultsStore:
    """Append-only results of a sweep folder; see the module docstring for the protocol."""

    CSV = "results.csv"
    JSONL = "results.jsonl"
    COMMITS = "points.jsonl"

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.csv_path = self.root / self.CSV
        self.jsonl_path = self.root / self.JSONL
        self.commits_path = self.root / self.COMMITS
        self._header: list[str] | None = None

    def recover(self) -> dict[str, dict[str, Any]]:
        """Finished points (``point_id`` -> commit record); cut torn or uncommitted tails.

        Raises :class:`DataError` if a row file is shorter than its commits
        say (edited or truncated by hand) or a line before the last is corrupt.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        for p in (self.csv_path, self.jsonl_path, self.commits_path):
            p.touch(exist_ok=True)
        raw = self.commits_path.read_bytes()
        commits: dict[str, dict[str, Any]] = {}
        good_end = 0
        last: dict[str, Any] | None = None
        pos = 0
        while pos < len(raw):
            nl = raw.find(b"\n", pos)
            line = raw[pos:] if nl < 0 else raw[pos:nl]
            try:
                rec = json.loads(line) if nl >= 0 else None
            except (json.JSONDecodeError, UnicodeDecodeError):
                rec = None
            if rec is None or not isinstance(rec, dict) or "point_id" not in rec:
                if nl >= 0 and raw[nl + 1 :].strip():
                    raise DataError(f"{self.commits_path}: corrupt line at byte {pos}, followed by more records")
                break  # a torn last line: the point it described was not committed
            commits[rec["point_id"]] = rec
            last = rec
            pos = good_end = nl + 1
        if good_end < len(raw):
            _truncate(self.commits_path, good_end)
        csv_end = last["csv_end"] if last else 0
        jsonl_end = last["jsonl_end"] if last else 0
        for path, end in ((self.csv_path, csv_end), (self.jsonl_path, jsonl_end)):
            size = path.stat().st_size
            if size < end:
                raise DataError(f"{path} has {size} bytes but its committed rows end at byte {end}; was it edited?")
            if size > end:
                _truncate(path, end)  # rows of a point that never committed
        self._header = None
        if csv_end:
            with open(self.csv_path, newline="") as f:
                self._header = next(csv.reader(f))
        return commits

    def append(self, point_id: str, rows: Sequence[Mapping[str, Any]], meta: Mapping[str, Any]) -> dict[str, Any]:
        """Append one finished point's rows to both files, then its commit record."""
        if self._header is None:
            extra = sorted({k for r in rows for k in r} - set(ROW_COLUMNS))
            self._header = ROW_COLUMNS + extra
            header = True
        else:
            header = False
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self._header, restval="", extrasaction="ignore", lineterminator="\n")
        if header:
            writer.writeheader()
        for r in rows:
            writer.writerow({k: _csv_value(v) for k, v in r.items()})
        csv_end = _fsync_append(self.csv_path, buf.getvalue().encode())
        blob = "".join(json.dumps(_json_value(dict(r)), allow_nan=True) + "\n" for r in rows)
        jsonl_end = _fsync_append(self.jsonl_path, blob.encode())
        rec = {"point_id": point_id, "rows": len(rows), "csv_end": csv_end, "jsonl_end": jsonl_end, **meta}
        _fsync_append(self.commits_path, (json.dumps(_json_value(rec)) + "\n").encode())
        return rec


def _csv_value(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, float | np.floating):
        return repr(float(v))  # full precision, round-trips
    if isinstance(v, np.integer):
        return int(v)
    return v


def _json_value(d: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, np.floating):
            v = float(v)
        elif isinstance(v, np.integer):
            v = int(v)
        if isinstance(v, float) and not math.isfinite(v):
            v = None  # JSON has no NaN; an undefined number is null
        out[k] = v
    return out


# ----------------------------------------------------------------------------- backends


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
    # torch reads OMP_NUM_THREADS when first imported; one already imported is told directly.
    import sys

    os.environ["OMP_NUM_THREADS"] = str(n)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)


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
    backend = MAEBackend() if backend is None else backend
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
        _write_csv_atomic(out / "prediction.csv", pred)

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


def _write_csv_atomic(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    keys: list[str] = []
    for r in rows:
        keys.extend(k for k in r if k not in keys)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, restval="", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: _csv_value(v) for k, v in r.items()})
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(buf.getvalue())
    os.replace(tmp, path)


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


# ----------------------------------------------------------------------------- the MAE backend


def _sim_config(cfg: SweepConfig, n: int):
    from hlvm.simulate import SimulateConfig

    data = {**cfg.simulate, "grid": dict(cfg.graph), "n": n, "seed": cfg.data_seed}
    try:
        return SimulateConfig.from_dict(data)
    except TypeError as e:
        raise ConfigError(f"simulate: {e}") from None


def eval_masks(
    kind: str, k: int, graph: Any, ratio: float, unit: int, rng: np.random.Generator
) -> list[tuple[int, Any]]:
    """``k`` held-out evaluation masks of ``kind`` as ``(mask_seed, Mask)``.

    Each mask is drawn from its own ``mask_seed`` (taken from ``rng``), so a
    row's mask can be rebuilt from the seed alone: ``Mask.random(H, W, ratio,
    unit, seed=mask_seed)`` for random masks, ``aligned_unit_masks(1, ...,
    np.random.default_rng(mask_seed))`` for aligned ones.
    """
    from hlvm.graphs import image_shape
    from hlvm.masks import Mask, aligned_unit_masks

    _, h, w = image_shape(graph)
    branching = int(graph.graph.get("branching", 2))
    out = []
    for _ in range(k):
        s = int(rng.integers(2**31))
        if kind == "random":
            m = Mask.random(h, w, ratio=ratio, unit=unit, seed=s)
        else:
            m = Mask(aligned_unit_masks(1, h, w, ratio, unit, branching, np.random.default_rng(s))[0], unit)
        out.append((s, m))
    return out


class MAEBackend:
    """Simulate once (cached by config hash), train an MAE per point, evaluate it on held-out masks.

    Training always uses MAE's random masks of the point's ratio and unit
    (:func:`hlvm.train.train`); ``mask_kinds`` choose the *evaluation* masks.
    An aligned mask of the same ratio and unit masks the same number of whole
    units, so it lies in the support of the training masks.
    """

    def prepare(self, cfg: SweepConfig, out: Path) -> dict[str, Any]:
        from hlvm.simulate import simulate_to_dir
        from hlvm.train import resolve_model_config

        sim = _sim_config(cfg, cfg.n_train)
        key = hashlib.sha256(json.dumps(sim.to_dict(), sort_keys=True, default=str).encode()).hexdigest()[:12]
        data_dir = out / "data" / f"sim-{key}"
        if not data_dir.is_dir():
            data_dir.parent.mkdir(parents=True, exist_ok=True)
            simulate_to_dir(sim, data_dir, progress=False)
        graph = sim.build_graph()
        from hlvm.graphs import image_shape

        shape = image_shape(graph)
        # Every (unit, bottleneck) must make a valid model before any point starts.
        for u in cfg.mask_units:
            for d in cfg.bottlenecks:
                tc = self._train_config(cfg, None, str(data_dir), out, unit=u, bottleneck=d)
                resolve_model_config(tc, shape)
        return {"data_dir": str(data_dir), "sim": sim.to_dict(), "out": str(out)}

    @staticmethod
    def _train_config(cfg, point, data, out, *, unit=None, bottleneck=None, ratio=0.5, objective="mae", seed=0):  # noqa: ANN001, ANN205
        from hlvm.train import TrainConfig

        if point is not None:
            unit, bottleneck, ratio, objective, seed = (
                point.mask_unit, point.bottleneck, point.mask_ratio, point.objective, point.seed
            )
            run = str(out / "runs" / point.point_id)
        else:
            run = None
        extra = {"ckpt_every": 0, "log_every": 50, "device": "cpu", **cfg.train}
        model: Any = cfg.model
        if cfg.model_options:
            from hlvm.graphs import image_shape
            from hlvm.models import get_config

            c, h, _ = image_shape(cfg.grid_spec_graph())
            opts = {k: (tuple(v) if isinstance(v, list) else v) for k, v in cfg.model_options.items()}
            model = get_config(cfg.model, img_size=h, in_chans=c, **opts)
        return TrainConfig(
            model=model,
            data=data,
            objective=objective,
            mask_ratio=ratio,
            mask_unit=unit,
            bottleneck=bottleneck,
            steps=cfg.steps,
            batch_size=cfg.batch,
            blr=cfg.blr,
            seed=seed,
            out=run,
            **extra,
        )

    def predict(self, cfg: SweepConfig, context: Mapping[str, Any]) -> list[dict[str, Any]]:
        from hlvm.predict import predict

        graph = _sim_config(cfg, cfg.n_train).build_graph()
        return predict(graph, cfg.mask_ratios, cfg.mask_units, cfg.predict_masks, cfg.data_seed, kinds=cfg.mask_kinds)

    def run_point(self, cfg: SweepConfig, point: SweepPoint, context: Mapping[str, Any]) -> list[dict[str, Any]]:
        import torch

        from hlvm.evaluate import evaluate_encoder, heldout_dataset
        from hlvm.train import load_run, train

        out = Path(context["out"])
        tc = self._train_config(cfg, point, context["data_dir"], out)
        run_dir = train(tc, progress=False, overwrite=True)
        model, _ = load_run(run_dir)
        # Held-out samples: fresh noise from the training data's simulator, the same for every point.
        data = heldout_dataset(context["data_dir"], cfg.n_eval, cfg.data_seed)
        graph = data.graph

        reps = {"code": None}
        if point.bottleneck is not None:
            # The plain representation: the input of the projection to the bottleneck code.
            last = getattr(model, "bottleneck_proj", None)
            if last is None and isinstance(getattr(model, "encoder", None), torch.nn.Sequential):
                last = model.encoder[-1]
            if last is not None:
                reps["plain"] = last

        def encoder_for(layer: Any):  # noqa: ANN202
            @torch.no_grad()
            def encode(images: np.ndarray, mask: Any) -> np.ndarray:
                got: list[torch.Tensor] = []
                hook = layer.register_forward_pre_hook(lambda m, a: got.append(a[0])) if layer is not None else None
                try:
                    outs = []
                    for s in range(0, len(images), 1024):
                        x = torch.as_tensor(np.asarray(images[s : s + 1024]), dtype=torch.float32)
                        code = model.encode(x, mask)  # (B, d)
                        outs.append(got.pop() if layer is not None else code)
                finally:
                    if hook is not None:
                        hook.remove()
                return torch.cat(outs).double().numpy()

            return encode

        rng = np.random.default_rng(int(point.point_id, 16))
        rows: list[dict[str, Any]] = []
        for kind in cfg.mask_kinds:
            masks = eval_masks(kind, cfg.eval_masks, graph, point.mask_ratio, point.mask_unit, rng)
            for j, (mseed, mask) in enumerate(masks):
                for rep, layer in reps.items():
                    res = evaluate_encoder(encoder_for(layer), data, graph, mask, mseed)
                    rows.extend(rows_of(res, mask_kind=kind, mask_index=j, mask_seed=mseed, representation=rep))
        if not cfg.keep_checkpoints:
            from hlvm.train import CHECKPOINT

            (Path(run_dir) / CHECKPOINT).unlink(missing_ok=True)
        return rows


#: Mask-level numbers of :class:`hlvm.evaluate.EvaluationResult` copied into every row of that mask.
SUMMARY_TO_ROW = {
    "code_dim": "rep_dim",
    "dim_c": "dim_c",
    "agreement": "agreement",
    "agreement_ca_vs_masked": "agreement_ca_vs_masked",
    "effective_rank": "effective_rank",
    "cca_c": "cca_c",
}


def rows_of(result: Any, **mask_columns: Any) -> list[dict[str, Any]]:
    """Results rows of one evaluation: its per-node rows plus the mask's columns and summary numbers."""
    loc = result.located
    mask_cols = {
        **mask_columns,
        "mask_masked_frac": float(result.mask.ratio),
        "n_eval": int(result.summary["n_samples"]),
        **{dst: result.summary[src] for src, dst in SUMMARY_TO_ROW.items()},
        "c_abstraction": loc.abstraction,
        "frac_noise_shared": loc.frac_noise_shared,
    }
    return [{**mask_cols, **r} for r in result.rows]
