"""The theory's predictions over masks: Algorithm 1 over many masks, from the graph alone.

For every masking kind, mask ratio and masking unit, :func:`predict` draws
``k`` masks, locates ``c`` for each (:func:`hlvm.locate.locate_many`) and
summarises, as one row of raw numbers per ``(kind, ratio, unit)``:

- the distribution of the levels of the nodes of ``c`` (``c_level_<l>``: the
  share of all ``c`` nodes, pooled over the masks, that sit at level ``l``);
- the mean number of nodes of ``c`` and of ``CA``, the mean and sd of ``dim_c``;
- ``frac_noise_shared``: the mean fraction of all latent noise dimensions that
  lie in ``CA``;
- ``abstraction``: the mean *abstraction score* of ``c``,
  ``1 - mean(level of c's nodes) / deepest latent level`` (1: ``c`` is the
  root alone; 0: every node of ``c`` sits at the deepest latent level; see
  :func:`hlvm.locate.abstraction_score`), over the masks that share anything,
  with its standard error;
- ``ca_abstraction``: the mean *A* of ``CA`` (:attr:`hlvm.locate.ManyResult.ca_abstraction`,
  the noise-weighted level of what a code must hold), with its standard
  error: the quantity ``hlvm report`` measures on trained codes and judges
  the claims on.

Masking kinds: every distribution of :data:`hlvm.masks.MASK_KINDS`
(``random``, ``aligned``, ``block``, ``complementary``, ``variable``: see
:mod:`hlvm.masks`; a cell whose kind cannot draw masks there, such as
complementary masks below ratio 1/2, is infeasible), two by default:

- ``"random"``: MAE's masks, uniformly random units (:func:`hlvm.masks.random_unit_masks`);
- ``"aligned"``: the same number of units, taken depth-first through the
  hierarchy's blocks (:func:`hlvm.masks.aligned_unit_masks`), so the masked
  set is a union of as few whole subtrees as possible (the paper's Figure 4).

:func:`verdicts` then judges claims 2 and 3 of docs/theory.md on ``ca_abstraction``
with the rules of :mod:`hlvm.rules` (the same rules, on the same quantity, as
``hlvm report``);
:func:`figure4_rows` gives the hand-made Figure-4 masks (exactly one subtree,
a pixel less, a pixel more). :func:`write_outputs` writes the CSVs, the
verdicts and the figures (matplotlib, Agg) into a folder.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np

from hlvm import rules
from hlvm.errors import ConfigError, MaskError
from hlvm.locate import index_graph, locate, locate_many
from hlvm.masks import MASK_KINDS as MASKS_KINDS_ALL
from hlvm.masks import VARIABLE_SPREAD, Mask, check_unit, num_masked, unit_masks
from hlvm.rules import Estimate

__all__ = [
    "DEFAULT_RATIOS",
    "MASK_KINDS",
    "PredictConfig",
    "default_units",
    "graph_branching",
    "predict_columns",
    "predict",
    "figure4_masks",
    "figure4_rows",
    "verdicts",
    "write_outputs",
]

#: The default ratios: 0.4 completes no block of a binary hierarchy, so aligned masks test claim 2 off the blocks too.
DEFAULT_RATIOS = (0.1, 0.25, 0.4, 0.5, 0.75, 0.9)
#: Every mask distribution :func:`predict` takes (:data:`hlvm.masks.MASK_KINDS`); two by default.
MASK_KINDS = MASKS_KINDS_ALL
DEFAULT_KINDS = ("random", "aligned")
_KIND_CODE = {k: i for i, k in enumerate(MASK_KINDS)}

#: Columns of every :func:`predict` row before the per-level ``c_level_<l>`` columns.
BASE_COLUMNS = (
    "mask_kind",
    "mask_ratio",
    "mask_unit",
    "n_units",
    "n_masked_units",
    "k",
    "seed",
    "feasible",
    "mean_c_nodes",
    "mean_shared_nodes",
    "mean_dim_c",
    "sd_dim_c",
    "mean_noise_shared",
    "frac_noise_shared",
    "mean_c_level",
    "abstraction",
    "abstraction_se",
    "ca_abstraction",
    "ca_abstraction_se",
    "frac_nothing_shared",
)


def graph_branching(graph: nx.DiGraph) -> int | None:
    """The branching of a grid hierarchy (``graph.graph["branching"]``), or None for other graphs."""
    b = graph.graph.get("branching")
    return int(b) if isinstance(b, int | np.integer) and not isinstance(b, bool) and b >= 2 else None


def _image_hw(graph: nx.DiGraph) -> tuple[int, int]:
    pos = [a["pos"] for _, a in graph.nodes(data=True) if a.get("kind") == "observed"]
    return max(p[0] for p in pos) + 1, max(p[1] for p in pos) + 1


def _max_latent_level(graph: nx.DiGraph) -> int:
    return max(a["level"] for _, a in graph.nodes(data=True) if a["kind"] == "latent")


def default_units(graph: nx.DiGraph) -> tuple[int, ...]:
    """Every power of the branching (2 if the graph names none) that divides the image into >= 2 units."""
    b = graph_branching(graph) or 2
    h, w = _image_hw(graph)
    out, u = [], 1
    while h % u == 0 and w % u == 0 and (h // u) * (w // u) >= 2:
        out.append(u)
        u *= b
    return tuple(out)


def predict_columns(graph: nx.DiGraph) -> list[str]:
    """The column set of :func:`predict`'s rows for ``graph``: :data:`BASE_COLUMNS`, then ``c_level_0..L``."""
    return [*BASE_COLUMNS, *(f"c_level_{lv}" for lv in range(_max_latent_level(graph) + 1))]


@dataclass(frozen=True)
class PredictConfig:
    """Options of :func:`predict`; validates itself and serialises to JSON.

    ``units=None`` means :func:`default_units` of the graph.
    """

    ratios: tuple[float, ...] = DEFAULT_RATIOS
    units: tuple[int, ...] | None = None
    k: int = 1000
    seed: int = 0
    kinds: tuple[str, ...] = DEFAULT_KINDS
    spread: float = VARIABLE_SPREAD

    def __post_init__(self) -> None:
        object.__setattr__(self, "ratios", tuple(self.ratios))
        object.__setattr__(self, "kinds", tuple(self.kinds))
        if self.units is not None:
            object.__setattr__(self, "units", tuple(self.units))
        if not self.ratios:
            raise ConfigError("give at least one mask ratio")
        for r in self.ratios:
            if isinstance(r, bool) or not isinstance(r, int | float) or not math.isfinite(r) or not 0 < r < 1:
                raise ConfigError(f"mask ratio must be in (0, 1), got {r!r}")
        if len(set(self.ratios)) != len(self.ratios):
            raise ConfigError(f"mask ratios repeat: {list(self.ratios)}")
        if self.units is not None:
            if not self.units:
                raise ConfigError("give at least one mask unit")
            for u in self.units:
                if isinstance(u, bool) or not isinstance(u, int | np.integer) or u < 1:
                    raise ConfigError(f"mask unit must be a positive integer, got {u!r}")
            if len(set(self.units)) != len(self.units):
                raise ConfigError(f"mask units repeat: {list(self.units)}")
        if isinstance(self.k, bool) or not isinstance(self.k, int | np.integer) or self.k < 1:
            raise ConfigError(f"k (masks per cell) must be a positive integer, got {self.k!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int | np.integer) or self.seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {self.seed!r}")
        if not self.kinds:
            raise ConfigError("give at least one mask kind")
        for kind in self.kinds:
            if kind not in MASK_KINDS:
                raise ConfigError(f"unknown mask kind {kind!r}; choose from {', '.join(MASK_KINDS)}")
        sp = self.spread
        if isinstance(sp, bool) or not isinstance(sp, int | float) or not math.isfinite(sp) or not 0 <= sp < 0.5:
            raise ConfigError(f"spread (of variable masks' ratio) must be a number in [0, 0.5), got {sp!r}")

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


def _cell_rng(seed: int, kind: str, ratio: float, unit: int) -> np.random.Generator:
    """A generator per cell, so a cell's masks do not depend on which other cells run."""
    return np.random.default_rng([seed, _KIND_CODE[kind], unit, int(round(ratio * 1_000_000))])


def predict(
    graph: nx.DiGraph,
    ratios: Sequence[float] = DEFAULT_RATIOS,
    units: Sequence[int] | None = None,
    k: int = 1000,
    seed: int = 0,
    *,
    kinds: Sequence[str] = DEFAULT_KINDS,
    spread: float = VARIABLE_SPREAD,
    on_cell: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """The theory's curves: one row of raw numbers per ``(kind, ratio, unit)`` (module docstring).

    A cell whose ratio rounds to an empty or full mask of its units (say 0.1
    of 4 units) has ``feasible=False`` and NaN numbers. Rows have exactly the
    columns :func:`predict_columns` lists, in that order.

    Raises
    ------
    ConfigError : bad ratios, units, ``k``, seed or kinds; a unit that does not
        divide the image; ``"aligned"`` on a graph that is not a grid hierarchy.
    """
    cfg = PredictConfig(tuple(ratios), None if units is None else tuple(units), k, seed, tuple(kinds), spread)
    h, w = _image_hw(graph)
    unit_list = cfg.units if cfg.units is not None else default_units(graph)
    for u in unit_list:
        try:
            check_unit(h, w, u)
        except MaskError as e:
            raise ConfigError(str(e)) from None
    branching = graph_branching(graph)
    if "aligned" in cfg.kinds and branching is None:
        raise ConfigError("aligned masks need a grid hierarchy (a graph with a 'branching' attribute)")
    index = index_graph(graph)
    top = index.max_latent_level
    columns = predict_columns(graph)
    rows = []
    for kind in cfg.kinds:
        for unit in unit_list:
            n_units = (h // unit) * (w // unit)
            for ratio in cfg.ratios:
                row: dict[str, Any] = dict.fromkeys(columns, math.nan)
                row.update(mask_kind=kind, mask_ratio=float(ratio), mask_unit=int(unit), n_units=n_units,
                           k=int(cfg.k), seed=int(cfg.seed))
                try:
                    n = num_masked(n_units, ratio)
                except MaskError:
                    row.update(n_masked_units=int(math.floor(ratio * n_units + 0.5)), feasible=False)
                    rows.append(row)
                    if on_cell is not None:
                        on_cell(row)
                    continue
                rng = _cell_rng(cfg.seed, kind, ratio, unit)
                try:
                    masks = unit_masks(kind, cfg.k, h, w, ratio, unit, rng, branching=branching or 2, spread=cfg.spread)
                except MaskError as e:
                    if kind == "aligned":
                        raise ConfigError(str(e)) from None
                    # complementary masks need a ratio >= 1/2, variable ones a range inside (0, 1): no such masks here
                    row.update(n_masked_units=n, feasible=False)
                    rows.append(row)
                    if on_cell is not None:
                        on_cell(row)
                    continue
                res = locate_many(index, masks)
                some = res.n_c > 0
                level_counts = res.c_level_counts()
                total_c = level_counts.sum()
                a = res.abstraction[some]
                a_ca = res.ca_abstraction[some]
                with np.errstate(invalid="ignore", divide="ignore"):
                    mean_level = (res.c @ index.level)[some] / res.n_c[some]
                row.update(
                    n_masked_units=n,
                    feasible=True,
                    mean_c_nodes=float(res.n_c.mean()),
                    mean_shared_nodes=float(res.n_shared.mean()),
                    mean_dim_c=float(res.dim_c.mean()),
                    sd_dim_c=float(res.dim_c.std(ddof=1)) if cfg.k > 1 else math.nan,
                    mean_noise_shared=float(res.noise_shared.mean()),
                    frac_noise_shared=float(res.noise_shared.mean() / res.noise_latent_total),
                    mean_c_level=float(mean_level.mean()) if some.any() else math.nan,
                    abstraction=float(a.mean()) if a.size else math.nan,
                    abstraction_se=float(a.std(ddof=1) / math.sqrt(a.size)) if a.size > 1 else math.nan,
                    ca_abstraction=float(a_ca.mean()) if a_ca.size else math.nan,
                    ca_abstraction_se=float(a_ca.std(ddof=1) / math.sqrt(a_ca.size)) if a_ca.size > 1 else math.nan,
                    frac_nothing_shared=float(1.0 - some.mean()),
                )
                for lv in range(top + 1):
                    row[f"c_level_{lv}"] = float(level_counts[lv] / total_c) if total_c else math.nan
                rows.append(row)
                if on_cell is not None:
                    on_cell(row)
    return rows


# ----------------------------------------------------------------------------- Figure 4


def figure4_masks(graph: nx.DiGraph) -> dict[str, Mask]:
    """The paper's Figure-4 situations on a grid hierarchy, for each latent level below the root.

    For the top-left latent of level ``l``: ``subtree_l<l>_exact`` masks
    exactly its block (its subtree's pixels), ``_less`` the block but its
    bottom-right pixel, ``_more`` the block and the pixel right of its
    top-right corner.
    """
    b = graph_branching(graph)
    if b is None:
        raise ConfigError("Figure-4 masks need a grid hierarchy (a graph with a 'branching' attribute)")
    h, w = _image_hw(graph)
    out = {}
    for level in range(1, _max_latent_level(graph) + 1):
        side = h // b**level
        if side < 1 or side * b**level != h or side >= w:
            continue
        block = np.zeros((h, w), dtype=bool)
        block[:side, :side] = True
        less, more = block.copy(), block.copy()
        less[side - 1, side - 1] = False
        more[0, side] = True
        for name, grid in (("exact", block), ("less", less), ("more", more)):
            if grid.any() and not grid.all():
                out[f"subtree_l{level}_{name}"] = Mask(grid)
    return out


def figure4_rows(graph: nx.DiGraph) -> list[dict[str, Any]]:
    """One row per :func:`figure4_masks` mask: what Algorithm 1 locates for it, as raw numbers."""
    top = _max_latent_level(graph)
    rows = []
    for name, mask in figure4_masks(graph).items():
        r = locate(graph, mask)
        lv = r.c_levels
        row: dict[str, Any] = {
            "mask": name,
            "n_masked": mask.n_masked,
            "mask_ratio": mask.ratio,
            "c": " ".join(sorted(r.c, key=lambda v: (r.levels[v], v))),
            "n_c": len(r.c),
            "n_shared": len(r.shared),
            "dim_c": r.dim_c,
            "noise_shared": r.noise_shared,
            "frac_noise_shared": r.frac_noise_shared,
            "mean_c_level": float(np.mean(lv)) if lv else math.nan,
            "abstraction": r.abstraction,
        }
        for level in range(top + 1):
            row[f"c_level_{level}"] = sum(1 for x in lv if x == level)
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- verdicts


def verdicts(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Judge claims 2 and 3 of docs/theory.md from :func:`predict` rows, per mask kind, with :mod:`hlvm.rules`.

    The quantity is ``ca_abstraction`` (the A of ``CA``, what ``hlvm report``
    judges too); a cell's estimate is its mean over the ``k`` masks with its
    standard error, masks being the replicates, and two cells' masks are
    independent draws. Each verdict is a dict with ``claim``, ``mask_kind``,
    ``verdict`` (:func:`hlvm.rules.overall` of the parts), ``parts`` (scope,
    verdict, the difference and its SE) and a one-line ``statement``.
    """
    out = []
    for kind in dict.fromkeys(r["mask_kind"] for r in rows):
        cells = {
            (r["mask_ratio"], r["mask_unit"]): Estimate(r["ca_abstraction"], r["ca_abstraction_se"], int(r.get("k", 2)))
            for r in rows
            if r["mask_kind"] == kind and r["feasible"] and not math.isnan(r["ca_abstraction"])
        }
        ratios = sorted({r["mask_ratio"] for r in rows if r["mask_kind"] == kind})  # the sweep's, feasible or not

        def diff(a: tuple[float, int], b: tuple[float, int]) -> Estimate:
            return Estimate.independent(cells[a], cells[b])

        def level(key: tuple[float, int]) -> float:
            return cells[key].mean

        for claim, parts in (
            (2, rules.claim2_parts(cells, diff, level, ratios)),
            (3, rules.claim3_parts(cells, diff, level)),
        ):
            v = rules.overall(p.verdict for p in parts)
            counts = {w: sum(p.verdict.startswith(w) for p in parts) for w in ("hold", "fail", "inconclusive", "not testable")}
            detail = "; ".join(f"{p.scope}: {p.verdict}" + (f" (D = {p.d.fmt()})" if not math.isnan(p.d.mean) else "") for p in parts)
            out.append({
                "claim": claim,
                "mask_kind": kind,
                "verdict": v,
                "parts": [
                    {"scope": p.scope, "verdict": p.verdict, "d": p.d.mean, "se": p.d.se, "numbers": p.numbers} for p in parts
                ],
                "statement": (
                    f"Claim {claim} ({kind} masks): {v}; "
                    + ", ".join(f"{n} {w}" for w, n in counts.items() if n)
                    + f" of {len(parts)} parts ({detail or 'no part'})."
                ),
            })
    return out


# ----------------------------------------------------------------------------- output


def _write_csv(path: Path, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns))
        writer.writeheader()
        for row in rows:
            writer.writerow({c: row[c] for c in columns})


def plot_heatmap(rows: Sequence[dict[str, Any]], path: str | os.PathLike[str], value: str = "abstraction") -> None:
    """Heatmap of ``value`` over mask ratio x mask unit, one panel per mask kind (blank = infeasible)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = list(dict.fromkeys(r["mask_kind"] for r in rows))
    ratios = sorted({r["mask_ratio"] for r in rows})
    units = sorted({r["mask_unit"] for r in rows})
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.2 * len(kinds) + 0.8, 3.6), squeeze=False)
    for ax, kind in zip(axes[0], kinds, strict=True):
        grid = np.full((len(units), len(ratios)), np.nan)  # (units, ratios)
        for r in rows:
            if r["mask_kind"] == kind:
                grid[units.index(r["mask_unit"]), ratios.index(r["mask_ratio"])] = r[value]
        im = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", origin="lower", aspect="auto")
        for (i, j), x in np.ndenumerate(grid):
            if not np.isnan(x):
                ax.text(j, i, f"{x:.2f}", ha="center", va="center", color="w" if x < 0.6 else "k", fontsize=8)
        ax.set_xticks(range(len(ratios)), [str(x) for x in ratios])
        ax.set_yticks(range(len(units)), [str(u) for u in units])
        ax.set_xlabel("mask ratio")
        ax.set_ylabel("mask unit (pixels)")
        ax.set_title(f"{value} of c, {kind} masks")
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.9)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_lines(rows: Sequence[dict[str, Any]], path: str | os.PathLike[str]) -> None:
    """Abstraction (top) and mean ``dim_c`` (bottom) against mask ratio, one line per unit, a column per kind."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = list(dict.fromkeys(r["mask_kind"] for r in rows))
    units = sorted({r["mask_unit"] for r in rows})
    fig, axes = plt.subplots(2, len(kinds), figsize=(4.5 * len(kinds), 6.5), squeeze=False, sharex=True)
    for col, kind in enumerate(kinds):
        for u in units:
            cell = sorted((r for r in rows if r["mask_kind"] == kind and r["mask_unit"] == u and r["feasible"]),
                          key=lambda r: r["mask_ratio"])
            if not cell:
                continue
            x = [r["mask_ratio"] for r in cell]
            se = np.nan_to_num([r["abstraction_se"] for r in cell])
            axes[0, col].errorbar(x, [r["abstraction"] for r in cell], yerr=2 * se, marker="o", label=f"unit {u}")
            axes[1, col].plot(x, [r["mean_dim_c"] for r in cell], marker="o", label=f"unit {u}")
        axes[0, col].set_title(f"{kind} masks")
        axes[0, col].set_ylabel("abstraction of c (mean, ±2 se)")
        axes[0, col].set_ylim(-0.02, 1.02)
        axes[1, col].set_ylabel("mean dim_c")
        axes[1, col].set_xlabel("mask ratio")
        axes[0, col].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


@dataclass
class PredictOutputs:
    """Paths :func:`write_outputs` wrote, relative to its folder."""

    files: list[str] = field(default_factory=list)


def write_outputs(
    folder: str | os.PathLike[str],
    graph: nx.DiGraph,
    rows: Sequence[dict[str, Any]],
    fig4: Sequence[dict[str, Any]],
    verdict: Sequence[dict[str, Any]],
    config: dict[str, Any],
) -> PredictOutputs:
    """Write ``predict.csv``, ``figure4.csv``, ``verdicts.json``, ``config.json`` and the two PNGs into ``folder``.

    ``folder`` should be the temporary folder of :func:`hlvm.io.atomic_dir`, so
    that nothing is half-written.
    """
    from hlvm.io import write_json

    folder = Path(folder)
    out = PredictOutputs()
    _write_csv(folder / "predict.csv", rows, predict_columns(graph))
    out.files.append("predict.csv")
    if fig4:
        _write_csv(folder / "figure4.csv", fig4, list(fig4[0]))
        out.files.append("figure4.csv")
    write_json(folder / "verdicts.json", list(verdict))
    write_json(folder / "config.json", config)
    plot_heatmap(rows, folder / "heatmap.png")
    plot_lines(rows, folder / "lines.png")
    out.files += ["verdicts.json", "config.json", "heatmap.png", "lines.png"]
    return out
