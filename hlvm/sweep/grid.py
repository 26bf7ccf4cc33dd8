"""The grid of a sweep: :class:`SweepConfig` (axes and shared settings) and its :class:`SweepPoint` s.

A *point* is one mask ratio x masking unit x seed x objective x bottleneck
width; everything else (the hierarchy, the simulator, the model, training
length, evaluation) is shared by the points of a sweep and hashed into every
``point_id``, so a point's id names exactly what was run.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from hlvm.errors import ConfigError, MaskError
from hlvm.evaluate import ROW_COLUMNS as NODE_COLUMNS
from hlvm.io import read_json
from hlvm.masks import num_masked

__all__ = [
    "MASK_KINDS",
    "KNOWN_OBJECTIVES",
    "POINT_COLUMNS",
    "ROW_COLUMNS",
    "SweepConfig",
    "SweepPoint",
    "load_sweep_config",
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
