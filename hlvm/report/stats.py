"""Per-mask summaries, per-seed means and per-cell statistics of a sweep's rows.

Quantities, per evaluation mask (its rows; roles come from Algorithm 1 on
that very mask: ``c`` and ``shared`` form ``CA``, ``private_masked`` is
``s_m``, ``private_visible`` is ``s_mc``):

- *A* of a membership ``m_v`` in [0, 1]::

      A = 1 - (sum_v m_v d_v l_v) / (sum_v m_v d_v) / l_max

  with ``d_v`` the noise dimension, ``l_v`` the level (0 = root) and ``l_max``
  the deepest latent level: 1 when only the root's noise is held, lower the
  more low-level noise is held. *Predicted* A takes ``m_v = 1[v in CA]``;
  measured ``A`` takes ``m_v = clip(R^2(eps_v), 0, 1)`` (the larger of the
  linear and kernel probes) over the nodes not private to the visible side;
  ``A_linear`` the same from the linear probe alone; ``A_all`` over every
  latent node, ``s_mc`` included (what the code holds, leak and all). A code
  that holds the root alone has A = 1: A never goes without R^2(CA) beside it.
- ``ca``, ``floor``, ``leak``: mean R^2 over the noise dims of ``CA``, ``s_m``
  and ``s_mc`` (the pixels' own noises included where the results file stores
  the per-mask figures; latent nodes only otherwise), and their ``_linear``
  twins; ``selectivity = ca - leak``; ``agreement`` as :mod:`hlvm.evaluate`.

Seeds are the replicates: a cell's value for a seed is the mean over that
seed's evaluation masks, and a cell's estimate is the mean over seeds with
its standard error over seeds (:class:`hlvm.rules.Estimate`).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hlvm.evaluate import CONTROLS, WIDTH_CONTROLS
from hlvm.rules import Estimate

__all__ = [
    "CA_ROLES",
    "FIELDS",
    "abstraction",
    "Arm",
    "MaskSummary",
    "summarise_masks",
    "Series",
    "Panel",
    "panels",
]

CA_ROLES = ("c", "shared")
#: Per-mask figures averaged per seed and aggregated per cell.
FIELDS = (
    "a",
    "a_linear",
    "a_all",
    "a_pred",
    "ca",
    "ca_linear",
    "c_r2",
    "floor",
    "floor_linear",
    "leak",
    "leak_linear",
    "selectivity",
    "selectivity_linear",
    "agreement",
    "effective_rank",
    "rep_dim",
)

Key = tuple[float, int]  # (mask ratio, mask unit)


def abstraction(levels: Sequence[int], noise_dims: Sequence[float], membership: Sequence[float], l_max: int) -> float:
    """``1 - (sum m d l) / (sum m d) / l_max``; NaN when nothing is held.

    >>> abstraction([0, 1, 1], [2, 1, 1], [1, 0, 0], 1)
    1.0
    >>> abstraction([0, 1, 1], [2, 1, 1], [1, 1, 1], 1)
    0.5
    """
    lv = np.asarray(levels, dtype=float)
    w = np.asarray(noise_dims, dtype=float) * np.clip(np.asarray(membership, dtype=float), 0.0, 1.0)
    total = w.sum()
    if not total > 0 or l_max <= 0:
        return float("nan")
    return float(1.0 - (w * lv).sum() / total / l_max)


@dataclass(frozen=True, order=True)
class Arm:
    """What produced a series of codes: the encoder and, for a trained one, how it was trained.

    ``bottleneck`` is the arm's label (``"none"``, a width, or ``"dim_c"``);
    for a control made at a width (:data:`hlvm.evaluate.WIDTH_CONTROLS`) it is
    the width of the trained code it stands beside (``"none"``: the model's
    own code width).
    """

    encoder: str
    train_mask_kind: str = ""
    objective: str = ""
    bottleneck: str = "none"
    boundary_ignore: int = 0

    def label(self) -> str:
        if self.encoder != "trained":
            return self.encoder + ("" if self.encoder not in WIDTH_CONTROLS or self.bottleneck == "none" else f" (d={self.bottleneck})")
        d = "no bottleneck" if self.bottleneck == "none" else f"bottleneck {self.bottleneck}"
        bi = f", boundary-ignore {self.boundary_ignore}" if self.boundary_ignore else ""
        return f"{self.objective}, {self.train_mask_kind}-trained, {d}{bi}"

    def slug(self) -> str:
        s = f"{self.objective}-{self.train_mask_kind}" + ("" if self.bottleneck == "none" else f"-d{self.bottleneck}")
        s += f"-bi{self.boundary_ignore}" if self.boundary_ignore else ""
        return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in s)


def _label(v: Any) -> str:
    return "none" if v in ("", None, "None") else str(v)


def arm_of(row: Mapping[str, Any]) -> Arm:
    if row["encoder"] == "trained":
        return Arm("trained", str(row["train_mask_kind"]), str(row["objective"]), _label(row["bottleneck"]),
                   int(row.get("boundary_ignore") or 0))
    if row["encoder"] in WIDTH_CONTROLS:
        return Arm(str(row["encoder"]), bottleneck=_label(row["bottleneck_width"]))
    return Arm(str(row["encoder"]))


@dataclass
class MaskSummary:
    """The numbers of one evaluation mask of one point and representation."""

    arm: Arm
    eval_kind: str
    representation: str
    point_id: str
    seed: int
    mask_ratio: float
    mask_unit: int
    mask_index: int
    width: int | None
    dim_c: int | None
    values: dict[str, float]
    level_r2: dict[int, float]  # mean R^2 of the noises of every latent node of a level
    level_ca: dict[int, float]  # share of a level's nodes in CA

    @property
    def key(self) -> Key:
        return (self.mask_ratio, self.mask_unit)


def _mean(xs: Iterable[float]) -> float:
    a = np.asarray([x for x in xs if not math.isnan(x)], dtype=float)
    return float(a.mean()) if a.size else float("nan")


def _dim_mean(rows: Sequence[Mapping[str, Any]], key: str) -> float:
    """Mean over noise dims (each node weighs its noise_dim), as hlvm.evaluate's summary takes it."""
    pairs = [(r[key], r["noise_dim"]) for r in rows if not math.isnan(r[key])]
    if not pairs:
        return float("nan")
    return float(sum(x * d for x, d in pairs) / sum(d for _, d in pairs))


def summarise_masks(rows: Sequence[Mapping[str, Any]]) -> list[MaskSummary]:
    """One :class:`MaskSummary` per (point, evaluation mask kind and index, representation)."""
    l_max = max(r["level"] for r in rows)
    by: dict[tuple, list[Mapping[str, Any]]] = defaultdict(list)
    for r in rows:
        by[(r["point_id"], r["mask_kind"], r["mask_index"], r["representation"])].append(r)
    out = []
    for (pid, kind, mi, rep), rs in sorted(by.items(), key=lambda kv: kv[0]):
        first = rs[0]
        held = [r for r in rs if r["role"] != "private_visible"]
        ca_rows = [r for r in rs if r["role"] in CA_ROLES]
        m_rows = [r for r in rs if r["role"] == "private_masked"]
        v_rows = [r for r in rs if r["role"] == "private_visible"]

        def a_of(rows_: Sequence[Mapping[str, Any]], key: str) -> float:
            meas = [0.0 if math.isnan(r[key]) else r[key] for r in rows_]
            return abstraction([r["level"] for r in rows_], [r["noise_dim"] for r in rows_], meas, l_max)

        stored = not math.isnan(first["r2_private_visible_noise"]) or not math.isnan(first["r2_ca_noise"])
        values = {
            "a": a_of(held, "r2_noise"),
            "a_linear": a_of(held, "r2_noise_linear"),
            "a_all": a_of(rs, "r2_noise"),
            "a_pred": abstraction([r["level"] for r in held], [r["noise_dim"] for r in held],
                                  [1.0 if r["role"] in CA_ROLES else 0.0 for r in held], l_max),
            "c_r2": _dim_mean([r for r in rs if r["role"] == "c"], "r2_noise"),
            "agreement": first["agreement"],
            "effective_rank": first.get("effective_rank", float("nan")),
            "rep_dim": float("nan") if first.get("rep_dim") is None else float(first["rep_dim"]),
        }
        if stored:  # the per-mask figures hlvm.evaluate computed, the pixels' own noises included
            values.update(
                ca=first["r2_ca_noise"], ca_linear=first["r2_ca_noise_linear"],
                floor=first["r2_private_masked_noise"], floor_linear=first["r2_private_masked_noise_linear"],
                leak=first["r2_private_visible_noise"], leak_linear=first["r2_private_visible_noise_linear"],
            )
        else:  # an older file: latent nodes only
            values.update(
                ca=_dim_mean(ca_rows, "r2_noise"), ca_linear=_dim_mean(ca_rows, "r2_noise_linear"),
                floor=_dim_mean(m_rows, "r2_noise"), floor_linear=_dim_mean(m_rows, "r2_noise_linear"),
                leak=_dim_mean(v_rows, "r2_noise"), leak_linear=_dim_mean(v_rows, "r2_noise_linear"),
            )
        values["selectivity"] = values["ca"] - values["leak"]
        values["selectivity_linear"] = values["ca_linear"] - values["leak_linear"]
        levels = sorted({r["level"] for r in rs})
        out.append(
            MaskSummary(
                arm=arm_of(first),
                eval_kind=str(kind),
                representation=str(rep),
                point_id=pid,
                seed=first["seed"],
                mask_ratio=first["mask_ratio"],
                mask_unit=first["mask_unit"],
                mask_index=mi,
                width=first["bottleneck_width"],
                dim_c=first["dim_c"],
                values=values,
                level_r2={lvl: _mean(r["r2_noise"] for r in rs if r["level"] == lvl) for lvl in levels},
                level_ca={lvl: _mean(float(r["role"] in CA_ROLES) for r in rs if r["level"] == lvl) for lvl in levels},
            )
        )
    return out


class Series:
    """One encoder's codes over the grid: per cell, per seed, the mean of every figure over that seed's masks."""

    def __init__(self, masks: Iterable[MaskSummary]) -> None:
        self.masks = list(masks)
        by: dict[Key, dict[int, list[MaskSummary]]] = defaultdict(lambda: defaultdict(list))
        for m in self.masks:
            by[m.key][m.seed].append(m)
        self.seeds: dict[Key, dict[int, dict[str, float]]] = {}
        self.levels: dict[Key, dict[int, tuple[dict[int, float], dict[int, float]]]] = {}
        for key, per_seed in by.items():
            self.seeds[key] = {s: {f: _mean(m.values[f] for m in ms) for f in FIELDS} for s, ms in per_seed.items()}
            self.levels[key] = {
                s: (
                    {lvl: _mean(m.level_r2.get(lvl, float("nan")) for m in ms) for lvl in ms[0].level_r2},
                    {lvl: _mean(m.level_ca.get(lvl, float("nan")) for m in ms) for lvl in ms[0].level_ca},
                )
                for s, ms in per_seed.items()
            }

    def __bool__(self) -> bool:
        return bool(self.masks)

    @property
    def cells(self) -> list[Key]:
        return sorted(self.seeds)

    def values(self, key: Key, name: str) -> dict[int, float]:
        """Per-seed values of a figure in a cell."""
        return {s: v[name] for s, v in self.seeds.get(key, {}).items() if not math.isnan(v[name])}

    def stat(self, key: Key, name: str) -> Estimate:
        return Estimate.of(self.values(key, name).values())

    def diff(self, a: Key, b: Key, name: str) -> Estimate:
        """``name(a) - name(b)``, paired by seed (the seeds both cells have)."""
        return Estimate.paired(self.values(a, name), self.values(b, name))

    def level_stat(self, key: Key, level: int, which: int = 0) -> Estimate:
        """Per-level mean noise R^2 (``which=0``) or share in CA (``which=1``) over seeds."""
        return Estimate.of(v[which].get(level, float("nan")) for v in self.levels.get(key, {}).values())

    def n_masks(self, key: Key) -> int:
        return sum(1 for m in self.masks if m.key == key)

    def widths(self, key: Key) -> set[int | None]:
        return {m.width for m in self.masks if m.key == key}

    def dims_c(self, key: Key) -> set[int | None]:
        return {m.dim_c for m in self.masks if m.key == key}


@dataclass
class Panel:
    """A trained arm on one kind of evaluation mask and one representation, with its controls on the same masks."""

    eval_kind: str
    arm: Arm
    representation: str
    series: dict[str, Series] = field(default_factory=dict)  # encoder -> Series ("trained" always)

    @property
    def trained(self) -> Series:
        return self.series["trained"]

    def label(self) -> str:
        rep = "" if self.representation == "code" else f", {self.representation} representation"
        return f"{self.eval_kind} eval masks; {self.arm.label()}{rep}"

    def slug(self) -> str:
        return f"{self.eval_kind}-{self.arm.slug()}" + ("" if self.representation == "code" else f"-{self.representation}")


def panels(masks: Sequence[MaskSummary]) -> list[Panel]:
    """Every (evaluation mask kind, trained arm, representation), with the controls that match it.

    ``pixels`` and ``oracle`` match on the evaluation mask kind (their code
    is the representation); ``untrained`` and the linear controls (the
    controls of :data:`hlvm.evaluate.WIDTH_CONTROLS`) match, cell by cell, the
    width the trained arm has in that cell and its representation (the
    linear controls exist for the ``code`` representation only).
    """
    trained = defaultdict(list)
    controls = defaultdict(list)
    for m in masks:
        if m.arm.encoder == "trained":
            trained[(m.eval_kind, m.arm, m.representation)].append(m)
        else:
            controls[(m.eval_kind, m.arm.encoder)].append(m)
    out = []
    for (kind, arm, rep), ms in sorted(trained.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2])):
        p = Panel(kind, arm, rep, {"trained": Series(ms)})
        cells_widths = {m.key: m.width for m in ms}
        for enc in CONTROLS:
            cs = controls.get((kind, enc), [])
            if enc in WIDTH_CONTROLS:
                cs = [c for c in cs if c.key in cells_widths and c.width == cells_widths[c.key] and c.representation == rep]
            else:
                cs = [c for c in cs if c.key in cells_widths]
            if cs:
                p.series[enc] = Series(cs)
        out.append(p)
    return out
