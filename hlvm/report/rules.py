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

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .stats import Cell, GroupKey, MaskSummary, Stat, _mean, group_label

__all__ = ["RULES", "Verdict", "claim1", "claim2", "claim3", "overall", "CLAIMS", "MIN_EFFECT"]

FLOOR_MAX = 0.1
HOLD_CA = 0.8
FAIL_CA = 0.5

RULES = __doc__.split("Verdict rules", 1)[1].split("The same rules", 1)[0]
RULES = "Verdict rules" + RULES



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


CLAIMS = {
    1: "MAE recovers the c that Algorithm 1 locates (Theorem 2)",
    2: "extreme mask ratios give a low-level c; intermediate ratios a higher-level one",
    3: "larger masking units give a higher-level c, until they are too large",
}


