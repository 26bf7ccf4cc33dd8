"""The report of a sweep: figures, tables, and a verdict per claim of THEORY.md.

Everything is computed from the raw rows of ``results.csv`` (one row per
point x evaluation mask x latent node) and, when present, the theory's
``prediction.csv``. Nothing is tuned: the verdict rules below are fixed here,
before any numbers are seen, and are printed into every report.

Quantities, per evaluation mask (its rows):

- ``r2_noise`` of node ``v``: held-out R^2 (the larger of linear and kernel)
  of ``eps_v`` from the encoder's code. Roles come from Algorithm 1 applied to
  that very mask: ``c`` and ``shared`` form ``CA``; ``private_masked`` is
  ``s_m``; ``private_visible`` is ``s_mc``.
- *abstraction* of a membership ``m_v`` in [0, 1] over the latent nodes whose
  role is not ``private_visible``::

      A = 1 - (sum_v m_v d_v l_v) / (sum_v m_v d_v) / l_max

  with ``d_v`` the noise dimension, ``l_v`` the level (0 = root) and ``l_max``
  the deepest latent level: 1 when only the root's noise is held, lower the
  more low-level noise is held. *Predicted* A uses ``m_v = 1[v in CA]``
  (Algorithm 1); *measured* A uses ``m_v = clip(r2_noise_v, 0, 1)``. The
  visible side's private noise is left out of both because a wide encoder may
  keep it without contradicting the theory (THEORY.md).

Verdict rules (a *cell* is one mask ratio x unit, within one group of mask
kind x objective x bottleneck x representation; its values are the
per-mask A over every seed and evaluation mask; SE = std / sqrt(n)):

- Claim 1 (MAE recovers the ``c`` Algorithm 1 locates), per group: per point,
  ``ca`` = mean ``r2_noise`` over ``CA`` rows and ``floor`` = mean over
  ``s_m`` rows; take medians over points. If the floor median > 0.1 the probe
  is not trustworthy: *inconclusive*. Else *hold* if the ``ca`` median >= 0.8,
  *fail* if < 0.5, otherwise *inconclusive*.
- Claim 2 (extreme ratios give a lower-level ``c`` than intermediate ones),
  per unit with >= 3 ratios: ``D = max(A(mid)) - max(A(lowest ratio),
  A(highest ratio))``, ``SE_D`` from the two cells' SEs. *hold* if
  ``D - 2 SE_D > 0`` and ``D >= 0.05``; *fail* if ``D + 2 SE_D < 0.05`` (the
  difference is confidently below the smallest effect counted); else
  *inconclusive*. (0.05 is the smallest change :mod:`hlvm.predict`'s
  verdicts count too.)
- Claim 3 (larger units give a higher-level ``c``), per ratio with >= 2
  units: ``D = max(A(larger units)) - A(smallest unit)``, same rule. Whether
  the largest unit then falls below the best one ("until too large") is
  reported, not judged.
- A claim's verdict for a group: *hold* if every decisive (non-inconclusive)
  part holds and there is one; *fail* likewise; *mixed* if parts disagree;
  *inconclusive* if no part is decisive. Groups are kept apart: THEORY.md
  expects claim 2 to differ between random and aligned masks.

The same rules applied to predicted A give the theory's own verdict for this
grid and these masks, shown beside the measured one.
"""

from __future__ import annotations

import csv
import math
import os
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hlvm.errors import DataError
from hlvm.io import write_json

__all__ = [
    "REQUIRED_COLUMNS",
    "load_results",
    "abstraction",
    "MaskSummary",
    "summarise_masks",
    "Cell",
    "cells",
    "Verdict",
    "claim1",
    "claim2",
    "claim3",
    "overall",
    "build_report",
    "RULES",
]

REQUIRED_COLUMNS = ("point_id", "mask_ratio", "mask_unit", "seed", "mask_index", "node", "level", "role", "r2_noise")
# Optional columns and the value a results file without them implies.
OPTIONAL_DEFAULTS = {
    "mask_kind": "random",
    "objective": "mae",
    "bottleneck": "",
    "representation": "code",
    "noise_dim": "1",
    "agreement": "",
    "r2_value": "",
}
CA_ROLES = ("c", "shared")
ROLES = ("c", "shared", "private_masked", "private_visible")
FLOOR_MAX = 0.1
HOLD_CA = 0.8
FAIL_CA = 0.5

RULES = __doc__.split("Verdict rules", 1)[1].split("The same rules", 1)[0]
RULES = "Verdict rules" + RULES


# ----------------------------------------------------------------------------- loading


def _float(v: str) -> float:
    return float(v) if v not in ("", None) else float("nan")


def load_results(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Rows of a sweep's ``results.csv`` (a folder holding one, or the file), typed.

    Raises :class:`DataError` for a missing or empty file, missing required
    columns (named), or a value that does not parse.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "results.csv"
    if not path.is_file():
        raise DataError(f"results file not found: {path}")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise DataError(f"{path} lacks column(s) {', '.join(missing)}; is it a sweep's results.csv?")
        raw = list(reader)
    if not raw:
        raise DataError(f"{path} has no rows yet; run the sweep first")
    rows = []
    for i, r in enumerate(raw, start=2):
        try:
            d = {k: (r.get(k) if r.get(k) is not None else OPTIONAL_DEFAULTS.get(k, "")) for k in header}
            for k, v in OPTIONAL_DEFAULTS.items():
                d.setdefault(k, v)
            d["mask_ratio"] = float(d["mask_ratio"])
            d["mask_unit"] = int(d["mask_unit"])
            d["seed"] = int(d["seed"])
            d["mask_index"] = int(d["mask_index"])
            d["level"] = int(d["level"])
            d["noise_dim"] = int(d["noise_dim"] or 1)
            d["r2_noise"] = _float(d["r2_noise"])
            d["r2_value"] = _float(d["r2_value"])
            d["agreement"] = _float(d["agreement"])
        except (TypeError, ValueError) as e:
            raise DataError(f"{path}: line {i}: {e}") from None
        if d["role"] not in ROLES:
            raise DataError(f"{path}: line {i}: unknown role {d['role']!r}; expected one of {', '.join(ROLES)}")
        rows.append(d)
    return rows


# ----------------------------------------------------------------------------- per mask


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


# ----------------------------------------------------------------------------- verdicts


@dataclass
class Verdict:
    claim: int
    scope: str  # what part of the grid the verdict is about
    verdict: str  # "hold" | "fail" | "inconclusive" | "mixed"
    numbers: str  # the numbers behind it
    predicted: str = ""  # the same rule on the theory's prediction
    group: str = ""  # group_label of the group the part belongs to


MIN_EFFECT = 0.05


def _interval_verdict(d: float, se: float) -> str:
    if math.isnan(d) or math.isnan(se):
        return "inconclusive"
    if d - 2 * se > 0 and d >= MIN_EFFECT:
        return "hold"
    if d + 2 * se < MIN_EFFECT:
        return "fail"
    return "inconclusive"


def _diff(a: Stat, b: Stat) -> tuple[float, float]:
    return a.mean - b.mean, math.sqrt(a.se**2 + b.se**2) if a.n > 1 and b.n > 1 else float("nan")


def _exact_diff(a: Stat, b: Stat) -> tuple[float, float]:
    # The prediction is exact for its masks; its SE still reflects mask-to-mask spread.
    return _diff(a, b)


def claim1(masks: Sequence[MaskSummary]) -> list[Verdict]:
    by_group: dict[GroupKey, dict[str, list[MaskSummary]]] = defaultdict(lambda: defaultdict(list))
    for m in masks:
        by_group[m.group][m.point_id].append(m)
    out = []
    for g, points in sorted(by_group.items()):
        ca = np.array([_mean(m.ca_r2 for m in ms) for ms in points.values()])
        floor = np.array([_mean(m.floor_r2 for m in ms) for ms in points.values()])
        c = np.array([_mean(m.c_r2 for m in ms) for ms in points.values()])
        leak = np.array([_mean(m.leak_r2 for m in ms) for ms in points.values()])
        ca_med, floor_med = float(np.nanmedian(ca)), float(np.nanmedian(floor)) if np.isfinite(floor).any() else 0.0
        if floor_med > FLOOR_MAX:
            v = "inconclusive"
        elif ca_med >= HOLD_CA:
            v = "hold"
        elif ca_med < FAIL_CA:
            v = "fail"
        else:
            v = "inconclusive"
        numbers = (
            f"median over {len(points)} points: R^2(CA noise) {ca_med:.3f} (of c alone {np.nanmedian(c):.3f}; "
            f"min {np.nanmin(ca):.3f}); s_m floor {floor_med:.3f}; s_mc leak {_nanmedian(leak):.3f}; "
            f"points with R^2(CA) >= {HOLD_CA}: {int((ca >= HOLD_CA).sum())}/{len(points)}"
        )
        out.append(Verdict(1, group_label(g), v, numbers, group=group_label(g)))
    return out


def _nanmedian(a: np.ndarray) -> float:
    return float(np.nanmedian(a)) if np.isfinite(a).any() else float("nan")


def _fmt(s: Stat) -> str:
    return f"{s.mean:.3f}" + ("" if math.isnan(s.se) else f"±{s.se:.3f}")


def claim2(table: Mapping[tuple[GroupKey, float, int], Cell]) -> list[Verdict]:
    out = []
    for g in sorted({k[0] for k in table}):
        for u in sorted({k[2] for k in table if k[0] == g}):
            cs = sorted((c for k, c in table.items() if k[0] == g and k[2] == u), key=lambda c: c.mask_ratio)
            if len(cs) < 3:
                continue
            lo, hi, mid = cs[0], cs[-1], cs[1:-1]
            res = {}
            for which in ("a_measured", "a_predicted"):
                best_mid = max(mid, key=lambda c: getattr(c, which).mean)
                ext = max((lo, hi), key=lambda c: getattr(c, which).mean)
                d, se = _diff(getattr(best_mid, which), getattr(ext, which))
                res[which] = (_interval_verdict(d, se), d, se, best_mid, ext)
            v, d, se, bm, ex = res["a_measured"]
            pv, pd, pse, _, _ = res["a_predicted"]
            curve = ", ".join(f"{c.mask_ratio:g}: {_fmt(c.a_measured)}" for c in cs)
            numbers = (
                f"A by ratio ({curve}); D = A({bm.mask_ratio:g}) - A({ex.mask_ratio:g}) = {d:+.3f} ± 2x{se:.3f}"
            )
            out.append(Verdict(2, f"{group_label(g)}; unit {u}", v, numbers, f"{pv} (D = {pd:+.3f} ± 2x{pse:.3f})", group_label(g)))
    return out


def claim3(table: Mapping[tuple[GroupKey, float, int], Cell]) -> list[Verdict]:
    out = []
    for g in sorted({k[0] for k in table}):
        for r in sorted({k[1] for k in table if k[0] == g}):
            cs = sorted((c for k, c in table.items() if k[0] == g and k[1] == r), key=lambda c: c.mask_unit)
            if len(cs) < 2:
                continue
            res = {}
            for which in ("a_measured", "a_predicted"):
                best = max(cs[1:], key=lambda c: getattr(c, which).mean)
                d, se = _diff(getattr(best, which), getattr(cs[0], which))
                res[which] = (_interval_verdict(d, se), d, se, best)
            v, d, se, best = res["a_measured"]
            pv, pd, pse, _ = res["a_predicted"]
            curve = ", ".join(f"{c.mask_unit}: {_fmt(c.a_measured)}" for c in cs)
            top = max(cs, key=lambda c: c.a_measured.mean)
            tail = ""
            if len(cs) >= 3:
                drop = cs[-1].a_measured.mean - top.a_measured.mean
                tail = f"; largest unit vs best: {drop:+.3f}" if top is not cs[-1] else "; largest unit is the best"
            numbers = (
                f"A by unit ({curve}); D = A(u={best.mask_unit}) - A(u={cs[0].mask_unit}) = {d:+.3f} ± 2x{se:.3f}{tail}"
            )
            out.append(Verdict(3, f"{group_label(g)}; ratio {r:g}", v, numbers, f"{pv} (D = {pd:+.3f} ± 2x{pse:.3f})", group_label(g)))
    return out


def overall(parts: Sequence[Verdict], attr: str = "verdict") -> str:
    vs = [getattr(p, attr).split(" ")[0] for p in parts]
    decisive = {v for v in vs if v in ("hold", "fail")}
    if not decisive:
        return "inconclusive"
    if len(decisive) == 2:
        return "mixed"
    return decisive.pop()


# ----------------------------------------------------------------------------- report


CLAIMS = {
    1: "MAE recovers the c that Algorithm 1 locates (Theorem 2)",
    2: "extreme mask ratios give a low-level c; intermediate ratios a higher-level one",
    3: "larger masking units give a higher-level c, until they are too large",
}


def _slug(g: GroupKey) -> str:
    kind, obj, d, rep = g
    s = f"{kind}-{obj}" + ("" if d in ("", "None") else f"-d{d}") + ("" if rep == "code" else f"-{rep}")
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in s)


def _figures(table: Mapping[tuple[GroupKey, float, int], Cell], out: Path, prediction: list[dict[str, str]] | None) -> dict[GroupKey, list[tuple[str, str]]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figs: dict[GroupKey, list[tuple[str, str]]] = defaultdict(list)
    groups = sorted({k[0] for k in table})
    for g in groups:
        cs = [c for k, c in table.items() if k[0] == g]
        ratios = sorted({c.mask_ratio for c in cs})
        units = sorted({c.mask_unit for c in cs})
        levels = sorted({lvl for c in cs for lvl in c.level_r2})
        get = {(c.mask_ratio, c.mask_unit): c for c in cs}
        colors = plt.get_cmap("viridis")
        slug = _slug(g)

        # 1. recovery by level against ratio, a line per unit; 2. the same against unit, a line per ratio
        for name, xs, lines, xkey, lkey, xlabel, llabel in (
            ("recovery_vs_ratio", ratios, units, 0, 1, "mask ratio", "unit"),
            ("recovery_vs_unit", units, ratios, 1, 0, "masking unit (pixels)", "ratio"),
        ):
            fig, axes = plt.subplots(1, len(levels), figsize=(3.2 * len(levels), 3.2), sharey=True, squeeze=False)
            for ax, lvl in zip(axes[0], levels):
                for i, ln in enumerate(lines):
                    col = colors(i / max(1, len(lines) - 1))
                    pts = []
                    for x in xs:
                        key = (x, ln) if xkey == 0 else (ln, x)
                        if key in get:
                            pts.append((x, get[key].level_r2[lvl], get[key].level_ca[lvl]))
                    if not pts:
                        continue
                    px = [p[0] for p in pts]
                    ax.errorbar(px, [p[1].mean for p in pts], yerr=[0 if math.isnan(p[1].se) else p[1].se for p in pts],
                                color=col, marker="o", ms=3, label=f"{llabel} {ln:g}")
                    ax.plot(px, [p[2].mean for p in pts], color=col, ls="--", lw=1)
                ax.set_title(f"level {lvl}" + (" (root)" if lvl == 0 else ""))
                ax.set_xlabel(xlabel)
                if xkey == 1:
                    ax.set_xscale("log", base=2)
                    ax.set_xticks(xs, [str(x) for x in xs])
                ax.set_ylim(-0.05, 1.05)
                ax.grid(alpha=0.3)
            axes[0][0].set_ylabel("R² of noise ε_v (solid)\nP(v in CA), theory (dashed)")
            axes[0][-1].legend(fontsize=7)
            fig.suptitle(f"Recovery by latent level: {group_label(g)}", fontsize=9)
            fig.tight_layout(rect=(0, 0, 1, 0.95))
            fname = f"{name}_{slug}.png"
            fig.savefig(out / fname, dpi=110)
            plt.close(fig)
            figs[g].append((
                fname,
                f"recovery by latent level against {xlabel}: solid, mean R^2 of the level's noises from the code "
                "(every role, so a wide code's leak of the visible side's private noise shows here); dashed, the "
                "share of the level's nodes in CA on the same masks (what the theory requires the code to hold)",
            ))

        # 3. measured beside predicted abstraction
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
        for ax, xs, lines, xkey, xlabel, llabel in (
            (axes[0], ratios, units, 0, "mask ratio", "unit"),
            (axes[1], units, ratios, 1, "masking unit (pixels)", "ratio"),
        ):
            for i, ln in enumerate(lines):
                col = colors(i / max(1, len(lines) - 1))
                keys = [((x, ln) if xkey == 0 else (ln, x)) for x in xs]
                pts = [(x, get[k]) for x, k in zip(xs, keys) if k in get]
                if not pts:
                    continue
                px = [p[0] for p in pts]
                ax.errorbar(px, [p[1].a_measured.mean for p in pts],
                            yerr=[0 if math.isnan(p[1].a_measured.se) else p[1].a_measured.se for p in pts],
                            color=col, marker="o", ms=3, label=f"{llabel} {ln:g}")
                ax.plot(px, [p[1].a_predicted.mean for p in pts], color=col, ls="--", lw=1)
            ax.set_xlabel(xlabel)
            if xkey == 1:
                ax.set_xscale("log", base=2)
            ax.set_ylabel("A: measured (solid), theory (dashed)")
            if xkey == 1:
                ax.set_xticks(xs, [str(x) for x in xs])
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        fig.suptitle(f"Abstraction of what the code holds: {group_label(g)}", fontsize=9)
        fig.tight_layout(rect=(0, 0, 1, 0.95))
        fname = f"abstraction_{slug}.png"
        fig.savefig(out / fname, dpi=110)
        plt.close(fig)
        figs[g].append((fname, "measured beside predicted abstraction of c"))

        # 4. agreement over the grid
        grid = np.full((len(units), len(ratios)), np.nan)
        for (r, u), c in get.items():
            grid[units.index(u), ratios.index(r)] = c.agreement.mean
        if np.isfinite(grid).any():
            fig, ax = plt.subplots(figsize=(1.2 * len(ratios) + 2, 0.8 * len(units) + 1.5))
            im = ax.imshow(grid, vmin=0, vmax=1, cmap="magma", aspect="auto")
            for i in range(len(units)):
                for j in range(len(ratios)):
                    if np.isfinite(grid[i, j]):
                        ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center",
                                color="white" if grid[i, j] < 0.6 else "black", fontsize=8)
            ax.set_xticks(range(len(ratios)), [f"{r:g}" for r in ratios])
            ax.set_yticks(range(len(units)), [str(u) for u in units])
            ax.set_xlabel("mask ratio")
            ax.set_ylabel("masking unit")
            fig.colorbar(im, ax=ax, label="agreement")
            ax.set_title(f"Agreement: {group_label(g)}", fontsize=8)
            fig.tight_layout()
            fname = f"agreement_{slug}.png"
            fig.savefig(out / fname, dpi=110)
            plt.close(fig)
            figs[g].append((fname, "agreement score (theory's membership vs measured recovery) over the grid"))
    return figs


def _prediction_section(prediction: list[dict[str, str]]) -> list[str]:
    """A table of ``hlvm.predict``'s numbers for the grid (its own abstraction score: levels of ``c``'s nodes)."""
    need = {"mask_kind", "mask_ratio", "mask_unit", "abstraction"}
    if not need <= set(prediction[0]):
        return ["## The theory's prediction", "", "`prediction.csv` lacks the columns of `hlvm.predict`; not shown.", ""]
    k = prediction[0].get("k", "?")
    lines = [
        "## The theory's prediction over many masks",
        "",
        f"`prediction.csv` holds `hlvm.predict` for this grid: Algorithm 1 over {k} masks per cell, from the graph "
        "alone. Its *abstraction* is `hlvm.locate.abstraction_score`, `1 - mean(level of c's nodes) / deepest "
        "latent level`, a property of `c` itself (not measurable from a code, which holds all of CA); "
        "`dim_c` is the width of `c`; `frac_noise_shared` the share of latent noise in CA.",
        "",
        "| mask kind | unit | ratio | abstraction of c | mean dim_c | frac_noise_shared |",
        "|---|---|---|---|---|---|",
    ]

    def num(r: dict[str, str], key: str) -> str:
        try:
            x = float(r.get(key, "nan") or "nan")
        except ValueError:
            return "-"
        return "-" if math.isnan(x) else f"{x:.3f}"

    for r in sorted(prediction, key=lambda r: (r["mask_kind"], int(r["mask_unit"]), float(r["mask_ratio"]))):
        if str(r.get("feasible", "True")).lower() == "false":
            continue
        lines.append(
            f"| {r['mask_kind']} | {r['mask_unit']} | {float(r['mask_ratio']):g} | {num(r, 'abstraction')} | "
            f"{num(r, 'mean_dim_c')} | {num(r, 'frac_noise_shared')} |"
        )
    return lines + [""]


def _provenance_lines(src: Path) -> list[str]:
    """What produced the results: the sweep's settings, its commit, and the time its points took."""
    import json

    out = []
    sweep = src / "sweep.json"
    if sweep.is_file():
        try:
            data = json.loads(sweep.read_text())
            cfg, prov = data.get("config", {}), data.get("provenance", {})
            g = cfg.get("graph", {})
            out.append(
                f"Sweep: depth-{g.get('depth')} branching-{g.get('branching')} grid hierarchy; model `{cfg.get('model')}` "
                f"{json.dumps(cfg.get('model_options') or {})}; {cfg.get('steps')} steps x batch {cfg.get('batch')} "
                f"(blr {cfg.get('blr')}) on {cfg.get('n_train')} simulated samples; {cfg.get('eval_masks')} held-out "
                f"masks per point and kind on {cfg.get('n_eval')} held-out samples; hlvm {prov.get('hlvm_version')}, "
                f"commit `{prov.get('git_commit')}`."
            )
        except (json.JSONDecodeError, AttributeError):
            pass
    commits = src / "points.jsonl"
    if commits.is_file():
        recs = []
        for line in commits.read_text().splitlines():
            try:
                recs.append(json.loads(line))
            except json.JSONDecodeError:
                break
        if recs:
            wall = sum(r.get("seconds", 0.0) for r in recs)
            cpu = sum(r.get("cpu_seconds", 0.0) for r in recs)
            out.append(
                f"Points: {len(recs)} committed; per point {wall / len(recs):.0f} s wall and {cpu / len(recs):.0f} s CPU "
                f"on average (sum {cpu:.0f} s CPU in the workers)."
            )
    return out + ([""] if out else [])


def _read_prediction(path: Path) -> list[dict[str, str]] | None:
    if not path.is_file():
        return None
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def build_report(results_dir: str | os.PathLike[str], out: str | os.PathLike[str] | None = None) -> Path:
    """Write ``report.md`` and its PNG figures for the sweep in ``results_dir``; return the report's path.

    ``out`` defaults to ``results_dir``. Raises :class:`DataError` for a
    missing or malformed results file.
    """
    results_dir = Path(results_dir)
    rows = load_results(results_dir)
    src = results_dir if results_dir.is_dir() else results_dir.parent
    out = Path(out) if out is not None else src
    out.mkdir(parents=True, exist_ok=True)
    prediction = _read_prediction(src / "prediction.csv")

    masks = summarise_masks(rows)
    table = cells(masks)
    v1, v2, v3 = claim1(masks), claim2(table), claim3(table)
    figs = _figures(table, out, prediction)

    n_points = len({r["point_id"] for r in rows})
    lines = ["# Sweep report", ""]
    lines += _provenance_lines(src)
    lines += [
        f"Source: `{(src / 'results.csv').name}` in `{src}`: {len(rows)} rows, {n_points} points, "
        f"{len(masks)} (point, evaluation mask, representation) combinations.",
        "",
        "Each row is the held-out R^2 of one latent node's noise ε_v from the encoder's code under one "
        "evaluation mask; roles come from Algorithm 1 on that mask. *A* is the abstraction of what is held "
        "(1 = only the root's noise; lower = more low-level noise). Predicted A takes the theory's membership "
        "(CA) on the same masks; measured A takes the recovered R^2.",
        "",
        "## Claims",
        "",
        "| claim | group | verdict (measured) | verdict (theory on the same masks, same rule) | parts (hold / fail / inconclusive) |",
        "|---|---|---|---|---|",
    ]
    for k, parts in ((1, v1), (2, v2), (3, v3)):
        for grp in sorted({p.group for p in parts}):
            ps = [p for p in parts if p.group == grp]
            theory = overall(ps, "predicted") if k != 1 else "n/a (Theorem 2 is the claim)"
            counts = " / ".join(str(sum(p.verdict == v for p in ps)) for v in ("hold", "fail", "inconclusive"))
            lines.append(f"| {k}. {CLAIMS[k]} | {grp} | **{overall(ps)}** | {theory} | {counts} |")
    lines += ["", "### Details", "", "| claim | scope | verdict | numbers | theory's verdict |", "|---|---|---|---|---|"]
    for parts in (v1, v2, v3):
        for p in parts:
            lines.append(f"| {p.claim} | {p.scope} | {p.verdict} | {p.numbers} | {p.predicted or '-'} |")
    if not v2:
        lines.append("| 2 | - | inconclusive | fewer than 3 mask ratios at every unit | - |")
    if not v3:
        lines.append("| 3 | - | inconclusive | fewer than 2 units at every ratio | - |")
    lines += ["", "## Rules (fixed before the numbers)", "", "```", RULES.strip(), "```", ""]

    lines += ["## Numbers per cell", ""]
    lines += [
        "| group | ratio | unit | seeds | masks | A measured | A predicted | R^2 CA | R^2 c | R^2 s_m (floor) | R^2 s_mc (leak) | agreement |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in table.values():
        lines.append(
            f"| {group_label(c.group)} | {c.mask_ratio:g} | {c.mask_unit} | {c.seeds} | {c.a_measured.n} | "
            f"{_fmt(c.a_measured)} | {_fmt(c.a_predicted)} | {_fmt(c.ca_r2)} | {_fmt(c.c_r2)} | "
            f"{_fmt(c.floor_r2)} | {_fmt(c.leak_r2)} | {_fmt(c.agreement)} |"
        )
    lines += ["", "## Figures", ""]
    for g, fl in figs.items():
        lines += [f"### {group_label(g)}", ""]
        for fname, caption in fl:
            lines += [f"![{caption}]({fname})", "", f"*{caption}.*", ""]
    if prediction:
        lines += _prediction_section(prediction)
    verdicts = {
        "claims": {
            str(k): {
                "claim": CLAIMS[k],
                "verdict": overall(parts),
                "theory": overall(parts, "predicted") if k != 1 else None,
                "by_group": {
                    grp: {
                        "verdict": overall([p for p in parts if p.group == grp]),
                        "theory": overall([p for p in parts if p.group == grp], "predicted") if k != 1 else None,
                    }
                    for grp in sorted({p.group for p in parts})
                },
            }
            for k, parts in ((1, v1), (2, v2), (3, v3))
        },
        "parts": [asdict(p) for p in (*v1, *v2, *v3)],
    }
    write_json(out / "verdicts.json", verdicts)
    path = out / "report.md"
    tmp = path.with_name(".report.md.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)
    return path


def summary_lines(report_path: str | os.PathLike[str]) -> list[str]:
    """One line per claim (its verdict, measured and theory's) from the ``verdicts.json`` beside a report."""
    import json

    data = json.loads((Path(report_path).parent / "verdicts.json").read_text())
    out = []
    for k, c in data["claims"].items():
        out.append(f"claim {k}: {c['claim']}")
        for grp, v in c.get("by_group", {}).items():
            theory = "" if v["theory"] is None else f" (theory on the same masks: {v['theory']})"
            out.append(f"  {grp}: {v['verdict']}{theory}")
        if not c.get("by_group"):
            out.append(f"  {c['verdict']}")
    return out
