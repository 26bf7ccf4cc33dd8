"""The grid of a sweep: :class:`SweepConfig` (axes and shared settings) and its :class:`SweepPoint` s.

A *trained point* is one mask ratio x masking unit x training mask kind x
objective x bottleneck x seed: one MAE trained and then probed. A *control
point* is an encoder that learned nothing (:data:`hlvm.evaluate.CONTROLS`),
probed on exactly the held-out samples and evaluation masks of the trained
points of its ratio, unit and seed: ``pixels`` and ``oracle`` once per
(ratio, unit, seed); ``untrained`` and the linear controls ``pca``,
``random_projection``, ``linear_mae`` (:data:`hlvm.evaluate.WIDTH_CONTROLS`)
once per distinct code width among the trained points there, so that every
trained code has its competitors of the same width. Everything else (the hierarchy, the
simulator, the model, training length, evaluation) is shared by the points of
a sweep and hashed into every ``point_id``, so a point's id names exactly what
was run.

Seeds are replicates: a seed changes the model's initialisation, the draw of
the training samples (the same generating process, ``sample_seed = seed``),
the training masks, the held-out samples and the evaluation masks.

``bottlenecks`` may name ``"dim_c"``: Theorem 2's code width, resolved per
cell to the ``dim_c`` that Algorithm 1 gives the cell's training masks. It is
defined only where every training mask of the cell has the same ``dim_c``
(hierarchy-aligned masks on a grid hierarchy; random masks almost never):
checked over ``predict_masks`` masks drawn from the cell's training
distribution; where it varies the combination is skipped and listed, like an
infeasible ratio (:meth:`SweepConfig.infeasible`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from hlvm.errors import ConfigError, MaskError, check_keys
from hlvm.evaluate import CONTROLS, WIDTH_CONTROLS
from hlvm.evaluate import ROW_COLUMNS as NODE_COLUMNS
from hlvm.io import read_json
from hlvm.masks import MASK_KINDS as ALL_MASK_KINDS
from hlvm.masks import num_masked

__all__ = [
    "MASK_KINDS",
    "TRAIN_MASK_KINDS",
    "KNOWN_OBJECTIVES",
    "DIM_C",
    "POINT_COLUMNS",
    "ROW_COLUMNS",
    "SUMMARY_COLUMNS",
    "SweepConfig",
    "SweepPoint",
    "load_sweep_config",
]

#: Kinds of evaluation masks (each evaluation needs one fixed mask of the cell's exact count).
MASK_KINDS = ("random", "aligned", "block")
# hlvm.train.TRAIN_MASK_KINDS, every distribution of hlvm.masks (not imported from train: no torch here).
TRAIN_MASK_KINDS = ALL_MASK_KINDS
# Mirrors hlvm.objectives.OBJECTIVES; checked against it when that module is importable.
KNOWN_OBJECTIVES = ("mae", "umae", "mmae", "mimae", "cmim", "umae_official", "mmae_official", "mimae_views")
#: The bottleneck that resolves per cell to Algorithm 1's dim_c (Theorem 2's code width).
DIM_C = "dim_c"

# Columns every results row carries, in this order; anything else follows, sorted.
POINT_COLUMNS = [
    "point_id",
    "encoder",
    "mask_ratio",
    "mask_unit",
    "seed",
    "train_mask_kind",
    "objective",
    "bottleneck",
    "bottleneck_width",
    "boundary_ignore",
    "model",
    "steps",
    "depth",
    "branching",
]
#: Per-mask figures of :mod:`hlvm.evaluate`'s summary copied into every row of that mask.
SUMMARY_COLUMNS = [
    "r2_ca_noise",
    "r2_private_masked_noise",
    "r2_private_visible_noise",
    "r2_ca_noise_linear",
    "r2_private_masked_noise_linear",
    "r2_private_visible_noise_linear",
    "selectivity",
    "selectivity_linear",
    "agreement",
    "agreement_ca_vs_masked",
    "effective_rank",
    "cca_c",
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
    *SUMMARY_COLUMNS,
    *NODE_COLUMNS,  # one row per latent node, as hlvm.evaluate reports it
]


def _as_tuple(name: str, value: Any, *, allow_empty: bool = False) -> tuple:
    if isinstance(value, str) or not isinstance(value, Iterable):
        value = (value,)
    out = tuple(value)
    if not out and not allow_empty:
        raise ConfigError(f"empty grid: {name} has no values")
    if len(set(map(repr, out))) != len(out):
        raise ConfigError(f"{name} lists a value twice: {list(out)}")
    return out


@dataclass(frozen=True)
class SweepConfig:
    """A sweep: the grid axes and everything shared by its points; validates itself.

    Grid axes (a trained point per combination): ``mask_ratios``,
    ``mask_units`` (masking unit ``u`` in pixels), ``train_mask_kinds`` (the
    training masks: ``"random"``, MAE's, or ``"aligned"``, whole hierarchy
    blocks), ``objectives``, ``bottlenecks`` (``None`` = no bottleneck, an
    integer width, or ``"dim_c"``, module docstring) and ``seeds``.
    ``arms``, when given, lists the trained arms instead of that product: each
    a ``{"train_mask_kind", "objective", "bottleneck"}`` object (missing keys
    take ``"random"``, ``"mae"``, ``null``), e.g. MAE on random masks with a
    wide code beside the ``dim_c`` bottleneck on aligned masks, without the
    two other combinations. ``controls`` (default all of
    :data:`hlvm.evaluate.CONTROLS`; empty = none) adds the control points. ``mask_kinds`` names the kinds of held-out
    evaluation masks every point is measured on (``"random"``: MAE's random
    unit masks; ``"aligned"``: :func:`hlvm.masks.aligned_unit_masks`).
    Combinations whose ratio masks no unit or every unit of an image, or
    whose ``dim_c`` does not resolve, are skipped (listed by
    :meth:`infeasible`).

    Shared: the hierarchy (``graph``: :class:`hlvm.graphs.GridSpec` options),
    the simulator options (``simulate``: extra :class:`hlvm.simulate.SimulateConfig`
    fields; ``data_seed`` draws the graph's mixing), ``n_train`` / ``n_eval``
    samples, the model config name ``model`` (+ ``model_options``:
    :class:`hlvm.models.MAEConfig` fields such as ``mlp_hidden``), training
    ``steps`` / ``batch`` / ``blr`` (+ ``train`` extra
    :class:`hlvm.train.TrainConfig` fields), ``eval_masks`` held-out masks per
    seed, cell and kind, and ``predict_masks`` masks per cell for the theory's
    prediction (and for resolving ``dim_c``). ``keep_checkpoints=False``
    deletes each point's ``checkpoint.pt`` once it is evaluated (its
    ``config.json`` and ``metrics.jsonl`` stay).
    """

    mask_ratios: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75, 0.9)
    mask_units: tuple[int, ...] = (1, 2, 4)
    seeds: tuple[int, ...] = (0, 1, 2)
    objectives: tuple[str, ...] = ("mae",)
    bottlenecks: tuple[int | str | None, ...] = (None,)
    train_mask_kinds: tuple[str, ...] = ("random",)
    arms: tuple[Mapping[str, Any], ...] = ()
    controls: tuple[str, ...] = CONTROLS
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
            if d is None or d == DIM_C:
                continue
            if isinstance(d, bool) or not isinstance(d, int) or d < 1:
                raise ConfigError(f"bottleneck must be a positive integer, '{DIM_C}' or null, got {d!r}")
        train_kinds = _as_tuple("train_mask_kinds", self.train_mask_kinds)
        for k in train_kinds:
            if k not in TRAIN_MASK_KINDS:
                raise ConfigError(f"unknown train mask kind {k!r}; choose from {', '.join(TRAIN_MASK_KINDS)}")
        arms = _arms(self.arms)
        if arms and (objectives != ("mae",) or bottlenecks != (None,) or train_kinds != ("random",)):
            raise ConfigError("give arms, or objectives / bottlenecks / train_mask_kinds (their product), not both")
        controls = _as_tuple("controls", self.controls, allow_empty=True)
        for c in controls:
            if c not in CONTROLS:
                raise ConfigError(f"unknown control {c!r}; choose from {', '.join(CONTROLS)} (or none)")
        kinds = _as_tuple("mask_kinds", self.mask_kinds)
        for k in kinds:
            if k not in MASK_KINDS:
                raise ConfigError(f"unknown mask kind {k!r}; choose from {', '.join(MASK_KINDS)}")
        for name in ("n_train", "n_eval", "steps", "batch", "eval_masks", "predict_masks"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{name} must be a positive integer, got {v!r}")
        if isinstance(self.data_seed, bool) or not isinstance(self.data_seed, int) or self.data_seed < 0:
            raise ConfigError(f"data_seed must be a non-negative integer, got {self.data_seed!r}")
        if self.n_eval < 20:
            raise ConfigError(f"n_eval must be at least 20 for a held-out R^2, got {self.n_eval}")
        if not isinstance(self.blr, int | float) or isinstance(self.blr, bool) or not 0 < self.blr < float("inf"):
            raise ConfigError(f"blr must be a positive finite number, got {self.blr!r}")
        if not isinstance(self.keep_checkpoints, bool):
            raise ConfigError(f"keep_checkpoints must be true or false, got {self.keep_checkpoints!r}")
        if not isinstance(self.model, str) or not self.model:
            raise ConfigError(f"model must be a config name, got {self.model!r}")
        for name in ("graph", "simulate", "train", "model_options"):
            if not isinstance(getattr(self, name), Mapping):
                raise ConfigError(f"{name} must be a JSON object, got {getattr(self, name)!r}")
        _check_simulate_keys(self.simulate)
        _check_train_keys(self.train)
        object.__setattr__(self, "mask_ratios", tuple(float(r) for r in ratios))
        object.__setattr__(self, "mask_units", tuple(int(u) for u in units))
        object.__setattr__(self, "seeds", tuple(int(s) for s in seeds))
        object.__setattr__(self, "objectives", tuple(objectives))
        object.__setattr__(self, "bottlenecks", tuple(bottlenecks))
        object.__setattr__(self, "train_mask_kinds", tuple(train_kinds))
        object.__setattr__(self, "arms", arms)
        object.__setattr__(self, "controls", tuple(controls))
        object.__setattr__(self, "mask_kinds", tuple(kinds))
        object.__setattr__(self, "graph", dict(self.graph))
        object.__setattr__(self, "simulate", dict(self.simulate))
        object.__setattr__(self, "train", dict(self.train))
        object.__setattr__(self, "model_options", dict(self.model_options))
        spec = self.grid_spec()  # validates the hierarchy options
        self._check_size(spec)
        for u in self.mask_units:
            if spec.side % u:
                raise ConfigError(f"mask unit {u} does not divide the {spec.side}x{spec.side} image")
        # A masking unit is whole tokens, so one sweep has one token patch and units that are multiples
        # of it; another patch is another sweep (studies/mask-sweep-vit runs patch 1 and patch 2).
        patch = self.model_options.get("patch_size")
        if patch is not None:
            if isinstance(patch, bool) or not isinstance(patch, int) or patch < 1:
                raise ConfigError(f"model_options.patch_size must be a positive integer, got {patch!r}")
            for u in self.mask_units:
                if u % patch:
                    raise ConfigError(
                        f"mask unit {u} is not a multiple of the token patch {patch} (model_options.patch_size); "
                        f"run units {', '.join(str(v) for v in self.mask_units if v % patch == 0) or 'that are multiples'} "
                        f"here and {u} in a sweep with a smaller patch"
                    )
        if any(a["train_mask_kind"] == "aligned" for a in self.trained_arms()) or "aligned" in self.mask_kinds:
            for u in self.mask_units:
                side = spec.side // u
                b = spec.branching
                while side > 1 and side % b == 0:
                    side //= b
                if side != 1:
                    raise ConfigError(
                        f"aligned masks at unit {u} need a unit grid whose side is a power of {b}; "
                        f"the {spec.side}x{spec.side} image has {spec.side // u}x{spec.side // u} units"
                    )
        if not self.points():
            bad = "; ".join(self.infeasible())
            raise ConfigError(f"empty grid: no trained point is feasible ({bad})")

    def _check_size(self, spec) -> None:  # noqa: ANN001
        """Refuse up front a hierarchy too big to simulate (``hlvm simulate``'s own size limits), before any work."""
        from hlvm.simulate import SimulateConfig, output_size

        size = output_size(SimulateConfig(grid=spec, n=self.n_train + self.n_eval))
        if size.over_limits():
            raise ConfigError(f"the sweep's data would be {size.describe()}: {'; '.join(size.over_limits())}; "
                              "lower graph.depth or n_train")

    # -- the grid
    def grid_spec(self):
        """The :class:`hlvm.graphs.GridSpec` of the sweep's hierarchy."""
        from hlvm.graphs import GridSpec

        check_keys(self.graph, [f.name for f in fields(GridSpec)], "graph")
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

    def bottleneck_width(self, bottleneck: int | str | None, ratio: float, unit: int, train_kind: str) -> int | None | str:
        """The code width a bottleneck resolves to in a cell, or why it does not (a string starting 'skip:')."""
        if bottleneck != DIM_C:
            return bottleneck
        lo, hi = _dim_c_range(json.dumps(self.graph, sort_keys=True), ratio, unit, train_kind, self.predict_masks, self.data_seed)
        if lo != hi:
            return f"skip: dim_c varies between {train_kind} training masks of ratio {ratio:g} at unit {unit} ({lo}-{hi})"
        return lo

    def infeasible(self) -> list[str]:
        """Why each skipped (ratio, unit) pair, and each unresolved ``dim_c`` combination, is skipped."""
        out = []
        for u in self.mask_units:
            for r in self.mask_ratios:
                why = self._feasible(r, u)
                if why:
                    out.append(f"ratio {r} at unit {u}: {why}")
                    continue
                for arm in self.trained_arms():
                    k, d = arm["train_mask_kind"], arm["bottleneck"]
                    w = self.bottleneck_width(d, r, u, k)
                    if isinstance(w, str):
                        why = f"bottleneck {d} with {k} training masks at ratio {r}, unit {u}: {w[6:]}"
                        if why not in out:
                            out.append(why)
        return out

    def trained_arms(self) -> list[dict[str, Any]]:
        """The trained arms: ``arms`` if given, else every training mask kind x objective x bottleneck."""
        if self.arms:
            return [dict(a) for a in self.arms]
        return [
            {"train_mask_kind": k, "objective": o, "bottleneck": d, "boundary_ignore": 0}
            for k in self.train_mask_kinds
            for o in self.objectives
            for d in self.bottlenecks
        ]

    def base_dict(self) -> dict[str, Any]:
        """Everything but the grid axes: what every point of this sweep shares."""
        return {k: v for k, v in self.to_dict().items() if k not in AXES}

    def points(self) -> list[SweepPoint]:
        """Feasible trained points, then the control points of each cell and seed, in a fixed order.

        Order: unit, ratio, then the trained points (training mask kind,
        objective, bottleneck, seed), then the controls of each seed.
        ``mask_kinds`` is not a point axis: every point is evaluated on
        held-out masks of each kind.
        """
        base = self.base_dict()
        out: list[SweepPoint] = []
        for unit in self.mask_units:
            for ratio in self.mask_ratios:
                if self._feasible(ratio, unit):
                    continue
                widths: list[int | None] = []
                for arm in self.trained_arms():
                    kind, obj, d = arm["train_mask_kind"], arm["objective"], arm["bottleneck"]
                    w = self.bottleneck_width(d, ratio, unit, kind)
                    if isinstance(w, str):
                        continue
                    if w not in widths:
                        widths.append(w)
                    for seed in self.seeds:
                        out.append(SweepPoint(ratio, unit, seed, obj, d, base, kind, "trained", w, arm["boundary_ignore"]))
                if not widths:
                    continue
                for seed in self.seeds:
                    for control in self.controls:
                        if control in WIDTH_CONTROLS:
                            out.extend(SweepPoint(ratio, unit, seed, None, w, base, None, control, w) for w in widths)
                        else:
                            out.append(SweepPoint(ratio, unit, seed, None, None, base, None, control, None))
        return out

    # -- JSON
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in (*AXES, "mask_kinds"):
            d[k] = [dict(x) for x in d[k]] if k == "arms" else list(d[k])
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SweepConfig:
        if not isinstance(data, Mapping):
            raise ConfigError(f"a sweep config must be a JSON object, got {type(data).__name__}")
        names = {f.name for f in fields(cls)}
        data = {k: v for k, v in data.items() if not k.startswith("_")}  # "_comment" keys
        check_keys(data, names, "sweep config")
        return cls(**data)


#: Config fields that are grid axes (a resumed sweep may add or drop their values).
AXES = ("mask_ratios", "mask_units", "seeds", "objectives", "bottlenecks", "train_mask_kinds", "arms", "controls")

_ARM_KEYS = {"train_mask_kind": "random", "objective": "mae", "bottleneck": None, "boundary_ignore": 0}


def _check_simulate_keys(block: Mapping[str, Any]) -> None:
    """A sweep's ``simulate`` block takes :class:`hlvm.simulate.SimulateConfig`'s options but those the sweep sets."""
    from hlvm.simulate import SimulateConfig

    for key in ("seed", "sample_seed", "n"):
        if key in block:
            raise ConfigError(f"simulate: {key!r} is set by the sweep (data_seed, seeds, n_train), not here")
    if "grid" in block:
        raise ConfigError("simulate: 'grid' is the sweep's graph block, not here")
    check_keys(block, [f.name for f in fields(SimulateConfig) if f.name not in ("seed", "sample_seed", "n", "grid")],
               "simulate")


def _arms(value: Any) -> tuple[dict[str, Any], ...]:
    """``arms`` validated, every key filled in (module docstring)."""
    if isinstance(value, Mapping) or isinstance(value, str) or not isinstance(value, Iterable):
        raise ConfigError(f"arms must be a list of objects, got {value!r}")
    out = []
    for a in value:
        if not isinstance(a, Mapping):
            raise ConfigError(f"an arm must be an object with {', '.join(_ARM_KEYS)}, got {a!r}")
        check_keys(a, _ARM_KEYS, "arm")
        arm = {**_ARM_KEYS, **a}
        if arm["train_mask_kind"] not in TRAIN_MASK_KINDS:
            raise ConfigError(f"unknown train mask kind {arm['train_mask_kind']!r}; choose from {', '.join(TRAIN_MASK_KINDS)}")
        if arm["objective"] not in _known_objectives():
            raise ConfigError(f"unknown objective {arm['objective']!r}; choose from {', '.join(sorted(_known_objectives()))}")
        d = arm["bottleneck"]
        if not (d is None or d == DIM_C or (isinstance(d, int) and not isinstance(d, bool) and d >= 1)):
            raise ConfigError(f"bottleneck must be a positive integer, '{DIM_C}' or null, got {d!r}")
        k = arm["boundary_ignore"]
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise ConfigError(f"boundary_ignore must be an integer >= 0, got {k!r}")
        if arm in out:
            raise ConfigError(f"arms lists an arm twice: {arm}")
        out.append(arm)
    return tuple(out)


@functools.lru_cache(maxsize=4096)
def _dim_c_range(graph_json: str, ratio: float, unit: int, kind: str, k: int, seed: int) -> tuple[int, int]:
    """Smallest and largest ``dim_c`` over ``k`` training masks of ``kind`` (seeded, as :func:`hlvm.predict.predict`)."""
    from hlvm.graphs import GridSpec, grid_hierarchy
    from hlvm.locate import index_graph, locate_many
    from hlvm.masks import unit_masks
    from hlvm.predict import _cell_rng

    spec = GridSpec(**json.loads(graph_json))
    graph = grid_hierarchy(spec)
    rng = _cell_rng(seed, kind, ratio, unit)
    side = spec.side
    masks = unit_masks(kind, k, side, side, ratio, unit, rng, branching=spec.branching)
    dims = locate_many(index_graph(graph), masks).dim_c
    return int(dims.min()), int(dims.max())


#: TrainConfig fields that the sweep sets from its own settings and each point, never from ``train``.
SET_BY_SWEEP = {
    "model": "model / model_options", "data": "the simulated data", "objective": "objectives",
    "mask_ratio": "mask_ratios", "mask_kind": "train_mask_kinds", "mask_unit": "mask_units",
    "bottleneck": "bottlenecks", "steps": "steps", "batch_size": "batch", "blr": "blr", "seed": "seeds",
    "out": "the sweep folder",
}


def _check_train_keys(train: Mapping[str, Any]) -> None:
    """``train`` may hold only :class:`hlvm.train.TrainConfig` fields that the sweep does not set itself."""
    for key in train:
        if key in SET_BY_SWEEP:
            raise ConfigError(f"train: {key!r} is set by the sweep ({SET_BY_SWEEP[key]}), not here")
    try:
        from dataclasses import fields as dc_fields

        from hlvm.train import TrainConfig
    except ImportError:
        return  # checked again when the backend builds each point's TrainConfig
    known = {f.name for f in dc_fields(TrainConfig)}
    unknown = sorted(set(train) - known)
    if unknown:
        raise ConfigError(f"train: unknown TrainConfig field {unknown[0]!r}; known: {', '.join(sorted(known - set(SET_BY_SWEEP)))}")


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
    """One point: a trained MAE, or a control probed beside the trained points of its cell and seed.

    ``point_id`` hashes the point's axes together with everything the sweep
    shares. ``bottleneck`` is the arm's label (``None``, a width or
    ``"dim_c"``); ``width`` what it resolves to in this cell. A control has
    no objective or training mask kind; the ``bottleneck`` of a control of
    :data:`hlvm.evaluate.WIDTH_CONTROLS` is the width of the trained code it
    stands beside (``None``: the model's own code width).
    """

    mask_ratio: float
    mask_unit: int
    seed: int
    objective: str | None
    bottleneck: int | str | None
    base: Mapping[str, Any] = field(repr=False, compare=False)
    train_mask_kind: str | None = "random"
    encoder: str = "trained"
    width: int | None = None
    boundary_ignore: int = 0

    @property
    def trained(self) -> bool:
        return self.encoder == "trained"

    @property
    def axes(self) -> dict[str, Any]:
        axes = {
            "encoder": self.encoder,
            "mask_ratio": self.mask_ratio,
            "mask_unit": self.mask_unit,
            "seed": self.seed,
            "train_mask_kind": self.train_mask_kind,
            "objective": self.objective,
            "bottleneck": self.bottleneck,
            "bottleneck_width": self.width,
        }
        if self.boundary_ignore:  # only when set: points of MAE's own loss keep the ids they always had
            axes["boundary_ignore"] = self.boundary_ignore
        return axes

    @property
    def point_id(self) -> str:
        blob = json.dumps({"axes": self.axes, "base": self.base}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def columns(self) -> dict[str, Any]:
        """The point's configuration as it appears in every results row."""
        g = self.base.get("graph", {})
        is_model = self.encoder in ("trained", "untrained")
        return {
            "point_id": self.point_id,
            **self.axes,
            "boundary_ignore": self.boundary_ignore,
            "model": self.base.get("model") if is_model else None,
            "steps": self.base.get("steps") if self.trained else None,
            "depth": g.get("depth", 4),
            "branching": g.get("branching", 2),
        }

    def label(self) -> str:
        if not self.trained:
            w = "" if self.encoder not in WIDTH_CONTROLS or self.width is None else f" d={self.width}"
            return f"r={self.mask_ratio:g} u={self.mask_unit} {self.encoder}{w} seed={self.seed}"
        d = "" if self.bottleneck is None else f" d={self.bottleneck}" + (f"={self.width}" if self.bottleneck == DIM_C else "")
        kind = "" if self.train_mask_kind == "random" else f" {self.train_mask_kind}-trained"
        bi = f" boundary-ignore {self.boundary_ignore}" if self.boundary_ignore else ""
        return f"r={self.mask_ratio:g} u={self.mask_unit} {self.objective}{kind}{d}{bi} seed={self.seed}"
