"""The verdict rules, in one place: fixed before any numbers are seen, shared by ``hlvm predict`` and ``hlvm report``.

The claims (docs/theory.md) are judged on *A*, the abstraction of what a code holds
of ``CA``: ``A = 1 - sum(m_v d_v l_v) / sum(m_v d_v) / l_max`` over latent
nodes (``d_v`` noise dim, ``l_v`` level, ``m_v`` membership: ``1[v in CA]``
for the theory, a recovered R^2 for a code). Every comparison is an
:class:`Estimate` of a difference with its standard error and the number of
independent replicates behind it (seeds for trained models and controls;
masks for ``hlvm predict``, whose masks are its replicates).

Rules:

- *A difference* ``D`` (:func:`decide`) *holds* if ``D - t * SE > 0`` and
  ``D >= MIN_EFFECT`` (0.05); *fails* if ``D + t * SE < MIN_EFFECT`` (confidently
  below the smallest effect counted); else *inconclusive*. ``t`` is Student's
  two-sided 95 % quantile with ``n - 1`` degrees of freedom (4.30 for 3 seeds,
  2.0 in the large-sample limit: the "2 SE" of a normal interval); with one
  replicate there is no SE and nothing is decided. Each one-sided decision is
  thus made at 2.5 %.
- *Claim 2* (extreme ratios give a lower-level ``c`` than intermediate ones),
  one part per unit and intermediate ratio ``r`` (strictly between the
  sweep's lowest and highest ratio): it *holds* if ``A(r)`` exceeds both
  ``A(lowest)`` and ``A(highest)`` by the rule, *fails* if either comparison
  fails, else *inconclusive*. No best ratio is picked, so no correction for
  picking is needed: "hold" is an intersection-union test, valid at the level
  of each comparison; "fail" is a union of two, so its error rate is at most
  5 %. A unit at which the sweep's lowest or highest ratio is infeasible
  cannot test the claim (*not testable*).
- *Claim 3* (larger masking units give a higher-level ``c``), one part per
  ratio and unit ``u`` larger than the smallest unit feasible at that ratio:
  ``D = A(u) - A(smallest)``, the rule above. Whether the largest unit then
  falls below the best ("until too large") is reported, not judged.
- *Ceiling*: a part whose reference (the extremes for claim 2, the smallest
  unit for claim 3) already has a predicted ``A >= 1 - MIN_EFFECT`` has no
  room to rise: *not testable (ceiling)*; it counts toward no verdict.
- *A claim's verdict* over its parts: *hold* if every decisive part holds,
  *fail* if every decisive part fails, *mixed* if they disagree,
  *inconclusive* if none is decisive, *not testable* if no part is testable.
- *Claim 1* (the code recovers the ``c`` Algorithm 1 locates): on the mean over
  replicates of the median over cells of ``R^2(CA)``: *inconclusive* if the
  masked side's floor (same statistic over ``s_m``) exceeds 0.1 (the probe is
  then not trusted), else *hold* at ``>= 0.8``, *fail* below 0.5, else
  *inconclusive*.
- *Theorem 2* (a ``dim_c``-wide code is a bijection of ``c``), per cell where
  the code is exactly ``dim_c`` wide for every evaluation mask, on the
  replicate means and their ``t * SE`` bounds, hold and fail mirror images
  (:func:`theorem2`): *hold* if ``R^2(CA) - t SE >= 0.9`` and ``leak + t SE
  <= 0.1`` (both bounds inside); *fail* if ``R^2(CA) + t SE < 0.9`` or
  ``leak - t SE > 0.1`` (a bound outside); else *inconclusive*. With one
  replicate nothing is decided. The leak is ``R^2(s_mc)``.
- *Evidence about MAE*, against the pixels (:func:`evidence`): a trained
  model's figure *differs from the pixels* where it differs from the
  ``pixels`` control's on the same samples and masks (paired by seed) by at
  least ``MIN_EFFECT`` and by more than ``t * SE``; otherwise the result is
  *explained without training*. The figure is the claim's own: the median
  ``R^2(CA)`` for claim 1; for a claim-2 part ``A(r) - max(A(lowest),
  A(highest))``; for a claim-3 part ``D``; for Theorem 2 the selectivity
  ``R^2(CA) - R^2(s_mc)``.
- *Evidence about MAE training*, against the strongest control of the same
  width (:func:`against_controls`): the controls of the trained code's own
  width are the ``untrained`` network and the linear codes ``pca``,
  ``random_projection`` and ``linear_mae``. The trained figure (as above; a
  higher figure is further in the claim's direction) counts as *evidence
  about MAE training* only where it *beats every one* of them: ``D = trained
  - control`` (paired by seed) with ``D >= MIN_EFFECT`` and ``D - t SE > 0``
  for each (an intersection-union test: no correction for the number of
  controls). The *strongest* control is the one with the smallest mean
  ``D``; where a control is not beaten, the result is *explained by a linear
  code* (a linear control) or *explained without training* (``untrained``),
  naming the unbeaten control with the smallest ``D``, and saying whether it
  *does better* than the trained code (``-D`` beats by the same rule) or *as
  well*.
- *Arms compared* (:func:`compare_arms`): an arm is set against the arm that
  differs from it in one factor only, whose value there is MAE's (random
  training masks, the ``mae`` objective, no boundary-ignoring); per cell the
  difference of A (and of linear A) is paired by seed and judged by the rule
  for a difference, ``A(arm) - A(reference)``: *hold* = the arm's code is the
  more abstract; over cells the verdict combines as a claim's parts; a cell
  whose predicted A is at the ceiling has no room for a rise and counts for
  nothing (*not testable* if every cell is). A can
  rise by dropping CA, so the change in R^2(CA) is given beside it, and an
  arm whose mean R^2(CA) falls more than 0.05 below its reference's counts
  as *lifting A by losing CA*, not as more abstract. The same rule on the
  difference of selectivity (``R^2(CA) - R^2(s_mc)``) says whether the arm
  *isolates c better* than its reference: more of CA kept beyond what is kept
  of the visible side's private noise.
- *Training length* (:func:`budget`, the convergence protocol of
  ``studies/convergence/``, fixed before any probe): a pilot trains each model
  at lengths on a doubling grid, each run to completion with its own
  schedule, and logs the held-out reconstruction loss on a fixed batch. With
  ``L(S)`` the mean over seeds of the final held-out loss of the ``S``-step
  runs of a cell, the cell's budget is the shortest ``S`` whose doubling
  gains less than ``CONVERGED_GAIN`` (2 %): ``L(2S) > (1 - 0.02) L(S)``; no
  budget where every doubling of the pilot still gains more (train longer
  than the pilot). A model's budget is the largest over its pilot cells.
- *The best arm for high-level latents* (:func:`best_arm`): the highest mean
  linear A over the cells below the ceiling, among the arms whose mean R^2(CA)
  is within 0.05 of the best arm's R^2(CA) (so that A is not bought by losing
  CA); none where every cell is at the ceiling.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hlvm.controls import LINEAR_CONTROLS

__all__ = [
    "MIN_EFFECT",
    "ALPHA",
    "CEILING",
    "Estimate",
    "critical",
    "decide",
    "Part",
    "claim2_parts",
    "claim3_parts",
    "claim1",
    "theorem2",
    "evidence",
    "beats",
    "Against",
    "against_controls",
    "overall",
    "REFERENCE",
    "reference_of",
    "compare_arm",
    "best_arm",
    "CONVERGED_GAIN",
    "budget",
    "RULES",
    "EXPLAINED",
    "EVIDENCE",
    "EVIDENCE_TRAINING",
    "EXPLAINED_LINEAR",
    "SAME_WIDTH",
    "LINEAR",
]

#: The smallest difference in A (on its 0-1 scale) or in R^2 a verdict counts.
MIN_EFFECT = 0.05
#: Two-sided level of every interval.
ALPHA = 0.05
#: A reference at or above this predicted A leaves no room for a rise of MIN_EFFECT.
CEILING = 1.0 - MIN_EFFECT
HOLD_CA, FAIL_CA, FLOOR_MAX = 0.8, 0.5, 0.1
THEOREM2_CA, THEOREM2_LEAK = 0.9, 0.1
EVIDENCE = "evidence about MAE"
EXPLAINED = "explained without training"
#: A trained result that beats every control of its width (:func:`against_controls`).
EVIDENCE_TRAINING = "evidence about MAE training"
EXPLAINED_LINEAR = "explained by a linear code"
NO_CONTROL = "no control of the same width"
#: The controls a trained code is judged against at its own width, and which of them are linear codes.
LINEAR = LINEAR_CONTROLS
SAME_WIDTH = ("untrained", *LINEAR_CONTROLS)
NOT_TESTABLE = "not testable"

#: The rules as printed into every report.
RULES = __doc__.split("Rules:", 1)[1].strip()


@dataclass(frozen=True)
class Estimate:
    """A mean with its standard error over ``n`` independent replicates (``se`` NaN when ``n < 2``)."""

    mean: float
    se: float
    n: int

    @classmethod
    def of(cls, values: Iterable[float]) -> Estimate:
        a = np.asarray([x for x in values if not math.isnan(x)], dtype=float)
        if a.size == 0:
            return cls(float("nan"), float("nan"), 0)
        se = float(a.std(ddof=1) / math.sqrt(a.size)) if a.size > 1 else float("nan")
        return cls(float(a.mean()), se, int(a.size))

    @classmethod
    def paired(cls, a: Mapping[Any, float], b: Mapping[Any, float]) -> Estimate:
        """The mean difference ``a - b`` over the replicates both have (seeds), its SE over them."""
        keys = sorted(set(a) & set(b), key=str)
        return cls.of(a[k] - b[k] for k in keys)

    @classmethod
    def independent(cls, a: Estimate, b: Estimate) -> Estimate:
        """``a - b`` for independent replicates (``hlvm predict``'s masks): SEs add in quadrature."""
        return cls(a.mean - b.mean, math.sqrt(a.se**2 + b.se**2), min(a.n, b.n))

    def fmt(self) -> str:
        if math.isnan(self.mean):
            return "-"
        return f"{self.mean:.3f}" + ("" if math.isnan(self.se) else f"±{self.se:.3f}")


def critical(n: int) -> float:
    """Student's two-sided ``1 - ALPHA`` quantile with ``n - 1`` degrees of freedom (inf below 2 replicates)."""
    if n < 2:
        return math.inf
    from scipy.stats import t

    return float(t.ppf(1.0 - ALPHA / 2.0, n - 1))


def decide(d: Estimate, min_effect: float = MIN_EFFECT) -> str:
    """``"hold"``, ``"fail"`` or ``"inconclusive"`` for a difference (module docstring)."""
    if math.isnan(d.mean) or math.isnan(d.se) or d.n < 2:
        return "inconclusive"
    margin = critical(d.n) * d.se
    if d.mean - margin > 0 and d.mean >= min_effect:
        return "hold"
    if d.mean + margin < min_effect:
        return "fail"
    return "inconclusive"


def evidence(d: Estimate, min_effect: float = MIN_EFFECT) -> str:
    """:data:`EVIDENCE` if the trained-minus-control difference ``d`` is at least ``min_effect`` beyond ``t * SE``.

    ``min_effect`` is on ``d``'s own scale: MIN_EFFECT for A and R^2; a study
    of probe accuracy states its own (e.g. 0.01, one point of top-1).
    """
    if math.isnan(d.mean) or math.isnan(d.se) or d.n < 2:
        return EXPLAINED
    if abs(d.mean) >= min_effect and abs(d.mean) - critical(d.n) * d.se > 0:
        return EVIDENCE
    return EXPLAINED


@dataclass
class Part:
    """One decisive unit of a claim: a comparison of cells, its verdict and the numbers behind it."""

    claim: int
    scope: str
    verdict: str
    d: Estimate = field(default_factory=lambda: Estimate(float("nan"), float("nan"), 0))
    numbers: str = ""
    key: tuple = ()


Key = tuple[float, int]  # (mask ratio, mask unit)


def claim2_parts(
    cells: Iterable[Key],
    diff: Callable[[Key, Key], Estimate],
    predicted: Callable[[Key], float],
    ratios: Sequence[float],
) -> list[Part]:
    """Claim-2 parts for the cells present (module docstring); ``ratios`` are the sweep's, feasible or not.

    ``diff(a, b)`` is the estimate of ``A(a) - A(b)``; ``predicted(key)`` the
    theory's A of a cell (for the ceiling).
    """
    have = set(cells)
    lo, hi = min(ratios), max(ratios)
    out = []
    for u in sorted({k[1] for k in have}):
        mids = sorted(r for r, uu in have if uu == u and lo < r < hi)
        if (lo, u) not in have or (hi, u) not in have:
            if mids:
                out.append(Part(2, f"unit {u}", f"{NOT_TESTABLE} (ratio {lo:g} or {hi:g} is infeasible at this unit)", key=(u,)))
            continue
        ref = max(predicted((lo, u)), predicted((hi, u)))
        for r in mids:
            scope = f"unit {u}, ratio {r:g}"
            if ref >= CEILING:
                out.append(Part(2, scope, f"{NOT_TESTABLE} (ceiling: predicted A {ref:.3f} at the extremes)", key=(r, u)))
                continue
            d_lo, d_hi = diff((r, u), (lo, u)), diff((r, u), (hi, u))
            v_lo, v_hi = decide(d_lo), decide(d_hi)
            if v_lo == v_hi == "hold":
                v = "hold"
            elif "fail" in (v_lo, v_hi):
                v = "fail"
            else:
                v = "inconclusive"
            d = min((d_lo, d_hi), key=lambda e: e.mean if not math.isnan(e.mean) else math.inf)
            numbers = f"A({r:g}) - A({lo:g}) = {d_lo.fmt()} [{v_lo}]; A({r:g}) - A({hi:g}) = {d_hi.fmt()} [{v_hi}]"
            out.append(Part(2, scope, v, d, numbers, key=(r, u)))
    return out


def claim3_parts(
    cells: Iterable[Key],
    diff: Callable[[Key, Key], Estimate],
    predicted: Callable[[Key], float],
) -> list[Part]:
    """Claim-3 parts for the cells present (module docstring)."""
    have = set(cells)
    out = []
    for r in sorted({k[0] for k in have}):
        units = sorted(u for rr, u in have if rr == r)
        if len(units) < 2:
            continue
        u0 = units[0]
        ref = predicted((r, u0))
        for u in units[1:]:
            scope = f"ratio {r:g}, unit {u} vs {u0}"
            if ref >= CEILING:
                out.append(Part(3, scope, f"{NOT_TESTABLE} (ceiling: predicted A {ref:.3f} at unit {u0})", key=(r, u)))
                continue
            d = diff((r, u), (r, u0))
            out.append(Part(3, scope, decide(d), d, f"A(u={u}) - A(u={u0}) = {d.fmt()}", key=(r, u)))
    return out


def claim1(ca: Estimate, floor: Estimate) -> str:
    """Claim 1 on the replicate means of the median-over-cells R^2 of CA's and of s_m's noise."""
    if not math.isnan(floor.mean) and floor.mean > FLOOR_MAX:
        return "inconclusive"
    if math.isnan(ca.mean):
        return "inconclusive"
    if ca.mean >= HOLD_CA:
        return "hold"
    if ca.mean < FAIL_CA:
        return "fail"
    return "inconclusive"


def theorem2(ca: Estimate, leak: Estimate) -> str:
    """Theorem 2 in one cell: all of CA and none of the visible side's private noise (module docstring).

    Hold and fail are mirror images on the ``t * SE`` bounds of the replicate
    means; one replicate (no SE) decides nothing.

    >>> theorem2(Estimate(0.97, 0.005, 3), Estimate(0.0, 0.002, 3))
    'hold'
    >>> theorem2(Estimate(0.95, 0.02, 3), Estimate(0.0, 0.002, 3))  # 0.95 - 4.30 * 0.02 < 0.9: not yet a hold
    'inconclusive'
    >>> theorem2(Estimate(0.70, 0.02, 3), Estimate(0.0, 0.002, 3))
    'fail'
    """
    if any(math.isnan(x) for x in (ca.mean, ca.se, leak.mean, leak.se)) or min(ca.n, leak.n) < 2:
        return "inconclusive"
    t_ca, t_leak = critical(ca.n), critical(leak.n)
    if ca.mean - t_ca * ca.se >= THEOREM2_CA and leak.mean + t_leak * leak.se <= THEOREM2_LEAK:
        return "hold"
    if ca.mean + t_ca * ca.se < THEOREM2_CA or leak.mean - t_leak * leak.se > THEOREM2_LEAK:
        return "fail"
    return "inconclusive"


def beats(d: Estimate, min_effect: float = MIN_EFFECT) -> bool:
    """Whether a difference ``d`` (trained - control, paired) is at least ``min_effect`` and above ``t * SE``."""
    if math.isnan(d.mean) or math.isnan(d.se) or d.n < 2:
        return False
    return d.mean >= min_effect and d.mean - critical(d.n) * d.se > 0


@dataclass(frozen=True)
class Against:
    """The trained figure against every control of its width (:func:`against_controls`).

    ``label`` is :data:`EVIDENCE` or says which control explains the result;
    ``control`` names the strongest control (the smallest mean ``D``) when
    every control is beaten, else the unbeaten one that explains it; ``d`` is
    ``trained - control`` for that one; ``per_control`` every ``D``.
    """

    label: str
    control: str | None
    d: Estimate
    per_control: Mapping[str, Estimate]

    @property
    def is_evidence(self) -> bool:
        return self.label == EVIDENCE_TRAINING

    def fmt(self) -> str:
        if self.control is None:
            return self.label
        return f"{self.label} (Δ vs {self.control} {self.d.fmt()})" if self.is_evidence else f"{self.label} (Δ {self.d.fmt()})"


def against_controls(
    trained: Mapping[Any, float], controls: Mapping[str, Mapping[Any, float]], min_effect: float = MIN_EFFECT
) -> Against:
    """Judge ``trained`` (per-replicate values) against each control's (module docstring: beat every one).

    ``controls`` maps a control's name to its per-replicate values of the same
    figure (a higher figure is further in the claim's direction); controls
    with no value are left out.

    >>> t = {0: 0.9, 1: 0.92, 2: 0.91}
    >>> against_controls(t, {"pca": {0: 0.5, 1: 0.52, 2: 0.49}}).label
    'evidence about MAE training'
    >>> against_controls(t, {"pca": {0: 0.5, 1: 0.5, 2: 0.5}, "linear_mae": {0: 0.9, 1: 0.93, 2: 0.9}}).label
    'explained by a linear code (linear_mae as well)'
    """
    ds = {name: Estimate.paired(trained, vals) for name, vals in controls.items() if vals}
    ds = {k: d for k, d in ds.items() if d.n > 0 and not math.isnan(d.mean)}
    if not ds:
        return Against(NO_CONTROL, None, Estimate(float("nan"), float("nan"), 0), {})
    unbeaten = [k for k, d in ds.items() if not beats(d, min_effect)]
    if not unbeaten:
        who = min(ds, key=lambda k: ds[k].mean)
        return Against(EVIDENCE_TRAINING, who, ds[who], ds)
    who = min(unbeaten, key=lambda k: ds[k].mean)
    d = ds[who]
    how = "does better" if beats(Estimate(-d.mean, d.se, d.n), min_effect) else "as well"
    kind = EXPLAINED_LINEAR if who in LINEAR else EXPLAINED
    return Against(f"{kind} ({who} {how})", who, d, ds)


#: MAE's value of each factor an arm varies: an arm is compared with the one that has these elsewhere.
REFERENCE = {"train_mask_kind": "random", "objective": "mae", "boundary_ignore": 0}


#: An objective's own control arm: the same training without what the objective adds (MI-MAE's multi-view MAE
#: without its information terms). An arm of the objective is also compared with its control arm.
OBJECTIVE_CONTROLS = {"mimae": "mimae_views"}


def control_arm_of(arm: Mapping[str, Any], arms: Iterable[Mapping[str, Any]]) -> tuple[str, Mapping[str, Any]] | None:
    """``("objective's control", control arm)``: the arm equal to ``arm`` but for its objective's control; else None."""
    ctrl = OBJECTIVE_CONTROLS.get(arm.get("objective"))
    if ctrl is None:
        return None
    want = {**arm, "objective": ctrl}
    for other in arms:
        if all(other[k] == v for k, v in want.items()):
            return "objective's control", other
    return None


def reference_of(arm: Mapping[str, Any], arms: Iterable[Mapping[str, Any]]) -> tuple[str, Mapping[str, Any]] | None:
    """``(factor, reference arm)``: the arm differing from ``arm`` in one factor only, set to MAE's value; else None."""
    for factor, base in REFERENCE.items():
        if arm[factor] == base:
            continue
        want = {**arm, factor: base}
        for other in arms:
            if all(other[k] == v for k, v in want.items()):
                return factor, other
    return None


def compare_arm(cells: Mapping[Any, tuple[Estimate, Estimate]]) -> tuple[str, str]:
    """``(verdict, note)`` over cells ``{key: (delta of the figure, delta R^2(CA))}`` (module docstring).

    The figure is A (or linear A), or selectivity; the note flags a rise of A
    bought by losing CA.
    """
    parts = [decide(da) for da, _ in cells.values()]
    dca = [dc.mean for _, dc in cells.values() if not math.isnan(dc.mean)]
    verdict = overall(parts) if parts else NOT_TESTABLE
    note = ""
    if dca and float(np.mean(dca)) < -MIN_EFFECT and verdict in ("hold", "mixed"):
        note = "lifts A by losing CA"
    return verdict, note


def best_arm(arms: Mapping[str, tuple[float, float]]) -> str | None:
    """The label of the best arm for high-level latents from ``{label: (mean linear A, mean R^2(CA))}``."""
    ok = {k: v for k, v in arms.items() if not (math.isnan(v[0]) or math.isnan(v[1]))}
    if not ok:
        return None
    top_ca = max(v[1] for v in ok.values())
    eligible = {k: v for k, v in ok.items() if v[1] >= top_ca - MIN_EFFECT}
    return max(eligible, key=lambda k: eligible[k][0])


#: The convergence protocol's bar: doubling the steps must gain less than this share of the held-out loss.
CONVERGED_GAIN = 0.02


def budget(losses: Mapping[int, float], gain: float = CONVERGED_GAIN) -> int | None:
    """The shortest pilot length whose doubling gains less than ``gain`` of the held-out loss (module docstring).

    ``losses`` maps a run length (steps) to the final held-out loss of runs of
    that length (mean over seeds). Only doublings present in the pilot count.

    >>> budget({500: 1.0, 1000: 0.5, 2000: 0.495, 4000: 0.494})
    1000
    >>> budget({500: 1.0, 1000: 0.5}) is None
    True
    """
    ok = {s: x for s, x in losses.items() if not math.isnan(x)}
    for s in sorted(ok):
        if 2 * s in ok and ok[2 * s] > (1.0 - gain) * ok[s]:
            return s
    return None


def overall(verdicts: Iterable[str]) -> str:
    """A claim's verdict from its parts' (module docstring)."""
    vs = [v.split(" ")[0] if not v.startswith(NOT_TESTABLE) else NOT_TESTABLE for v in verdicts]
    testable = [v for v in vs if v != NOT_TESTABLE]
    if not testable:
        return NOT_TESTABLE
    decisive = {v for v in testable if v in ("hold", "fail")}
    if not decisive:
        return "inconclusive"
    return "mixed" if len(decisive) == 2 else decisive.pop()
