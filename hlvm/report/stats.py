"""Per-mask summaries and per-cell statistics of a sweep's rows (abstraction, R^2 by role and level)."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["CA_ROLES", "abstraction", "MaskSummary", "summarise_masks", "Stat", "Cell", "cells", "group_of", "group_label"]

CA_ROLES = ("c", "shared")



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


GroupKey = tuple[str, str, str, str]  # (mask_kind, objective, bottleneck, representation)


def group_of(row: Mapping[str, Any]) -> GroupKey:
    return (str(row["mask_kind"]), str(row["objective"]), str(row["bottleneck"]), str(row["representation"]))


def group_label(g: GroupKey) -> str:
    kind, obj, d, rep = g
    parts = [f"{kind} masks", obj]
    parts.append("no bottleneck" if d in ("", "None") else f"bottleneck {d}")
    parts.append(f"{rep} representation")
    return ", ".join(parts)


@dataclass
class MaskSummary:
    """The numbers of one evaluation mask of one point."""

    group: GroupKey
    point_id: str
    seed: int
    mask_ratio: float
    mask_unit: int
    mask_index: int
    a_measured: float
    a_predicted: float
    ca_r2: float
    c_r2: float
    floor_r2: float
    leak_r2: float
    agreement: float
    level_r2: dict[int, float]  # mean r2_noise of all latent nodes of a level
    level_ca: dict[int, float]  # fraction of a level's nodes in CA


def _mean(xs: Iterable[float]) -> float:
    a = np.asarray([x for x in xs if not math.isnan(x)], dtype=float)
    return float(a.mean()) if a.size else float("nan")


def summarise_masks(rows: Sequence[Mapping[str, Any]]) -> list[MaskSummary]:
    """One :class:`MaskSummary` per (group, point, evaluation mask)."""
    l_max = max(r["level"] for r in rows)
    by: dict[tuple, list[Mapping[str, Any]]] = defaultdict(list)
    for r in rows:
        by[(group_of(r), r["point_id"], r["mask_index"])].append(r)
    out = []
    for (g, pid, mi), rs in sorted(by.items(), key=lambda kv: kv[0]):
        held = [r for r in rs if r["role"] != "private_visible"]
        lv = [r["level"] for r in held]
        nd = [r["noise_dim"] for r in held]
        meas = [0.0 if math.isnan(r["r2_noise"]) else r["r2_noise"] for r in held]
        pred = [1.0 if r["role"] in CA_ROLES else 0.0 for r in held]
        levels = sorted({r["level"] for r in rs})
        out.append(
            MaskSummary(
                group=g,
                point_id=pid,
                seed=rs[0]["seed"],
                mask_ratio=rs[0]["mask_ratio"],
                mask_unit=rs[0]["mask_unit"],
                mask_index=mi,
                a_measured=abstraction(lv, nd, meas, l_max),
                a_predicted=abstraction(lv, nd, pred, l_max),
                ca_r2=_mean(r["r2_noise"] for r in rs if r["role"] in CA_ROLES),
                c_r2=_mean(r["r2_noise"] for r in rs if r["role"] == "c"),
                floor_r2=_mean(r["r2_noise"] for r in rs if r["role"] == "private_masked"),
                leak_r2=_mean(r["r2_noise"] for r in rs if r["role"] == "private_visible"),
                agreement=_mean(r["agreement"] for r in rs[:1]),
                level_r2={lvl: _mean(r["r2_noise"] for r in rs if r["level"] == lvl) for lvl in levels},
                level_ca={lvl: _mean(float(r["role"] in CA_ROLES) for r in rs if r["level"] == lvl) for lvl in levels},
            )
        )
    return out


# ----------------------------------------------------------------------------- cells


@dataclass
class Stat:
    mean: float
    se: float
    n: int

    @classmethod
    def of(cls, xs: Iterable[float]) -> Stat:
        a = np.asarray([x for x in xs if not math.isnan(x)], dtype=float)
        if a.size == 0:
            return cls(float("nan"), float("nan"), 0)
        se = float(a.std(ddof=1) / math.sqrt(a.size)) if a.size > 1 else float("nan")
        return cls(float(a.mean()), se, int(a.size))


@dataclass
class Cell:
    """Aggregates of one (group, ratio, unit) over seeds and evaluation masks."""

    group: GroupKey
    mask_ratio: float
    mask_unit: int
    a_measured: Stat
    a_predicted: Stat
    ca_r2: Stat
    c_r2: Stat
    floor_r2: Stat
    leak_r2: Stat
    agreement: Stat
    level_r2: dict[int, Stat] = field(default_factory=dict)
    level_ca: dict[int, Stat] = field(default_factory=dict)
    seeds: int = 0


def cells(masks: Sequence[MaskSummary]) -> dict[tuple[GroupKey, float, int], Cell]:
    by: dict[tuple[GroupKey, float, int], list[MaskSummary]] = defaultdict(list)
    for m in masks:
        by[(m.group, m.mask_ratio, m.mask_unit)].append(m)
    out = {}
    for key, ms in sorted(by.items()):
        levels = sorted({lvl for m in ms for lvl in m.level_r2})
        out[key] = Cell(
            group=key[0],
            mask_ratio=key[1],
            mask_unit=key[2],
            a_measured=Stat.of(m.a_measured for m in ms),
            a_predicted=Stat.of(m.a_predicted for m in ms),
            ca_r2=Stat.of(m.ca_r2 for m in ms),
            c_r2=Stat.of(m.c_r2 for m in ms),
            floor_r2=Stat.of(m.floor_r2 for m in ms),
            leak_r2=Stat.of(m.leak_r2 for m in ms),
            agreement=Stat.of(m.agreement for m in ms),
            level_r2={lvl: Stat.of(m.level_r2.get(lvl, float("nan")) for m in ms) for lvl in levels},
            level_ca={lvl: Stat.of(m.level_ca.get(lvl, float("nan")) for m in ms) for lvl in levels},
            seeds=len({m.seed for m in ms}),
        )
    return out


