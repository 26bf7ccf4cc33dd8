"""docs/theory.md's claims judged on a sweep's panels, for the trained model and each control, with :mod:`hlvm.rules`.

Every claim is judged the same way for every encoder of a panel (the trained
arm and each control) and for the theory (predicted A on the same masks). The
trained model's figure is set against the ``pixels`` control's
(:func:`hlvm.rules.evidence`: does it differ from the pixels?) and against
every control of its own width, the untrained network and the linear codes
(:func:`hlvm.rules.against_controls`: does it beat the strongest of them?).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from hlvm import rules
from hlvm.rules import Against, Estimate, Part

from .stats import Key, Panel, Series

__all__ = [
    "CLAIMS",
    "ClaimResult",
    "Theorem2Cell",
    "ArmComparison",
    "claim1",
    "claim23",
    "theorem2_cells",
    "compare_arms",
    "best_arms",
    "against_summary",
    "same_width",
    "selectivity_against",
    "COMPARED",
    "ENCODER_ORDER",
]

CLAIMS = {
    "1": "the code recovers the c that Algorithm 1 locates (R^2 of CA's noise high, the masked side's floor low)",
    "2": "extreme mask ratios give a low-level c; intermediate ratios a higher-level one",
    "3": "larger masking units give a higher-level c, until they are too large",
    "T2": "Theorem 2: a dim_c-wide code holds all of CA and none of the visible side's private noise",
}
ENCODER_ORDER = ("trained", "pixels", "untrained", "pca", "random_projection", "linear_mae", "oracle")


@dataclass
class ClaimResult:
    """One claim on one panel: a verdict per encoder (and ``"theory"``), its parts, and trained vs pixels."""

    claim: str  # "1", "2", "3"; measure says which A
    measure: str  # "A" (best probe) or "A_linear"; "R^2" for claim 1
    panel: Panel
    verdicts: dict[str, str] = field(default_factory=dict)
    parts: dict[str, list[Part]] = field(default_factory=dict)
    numbers: dict[str, str] = field(default_factory=dict)
    evidence: list[tuple[str, str, Estimate]] = field(default_factory=list)  # (scope, label, trained - pixels)
    against: list[tuple[str, Against]] = field(default_factory=list)  # (scope, trained vs its width's controls)

    def against_summary(self) -> str:
        """How many parts beat every control of the trained code's width, and what explains the others."""
        return against_summary([a for _, a in self.against])

    def evidence_summary(self) -> str:
        if "pixels" not in self.panel.series:
            return "no pixels control"
        if not self.evidence:
            return "nothing testable"
        k = sum(e[1] == rules.EVIDENCE for e in self.evidence)
        if k == 0:
            return f"{rules.EXPLAINED} (0 of {len(self.evidence)} parts differ from the pixels)"
        return f"{rules.EVIDENCE} in {k} of {len(self.evidence)} parts"


def against_summary(found: Sequence[Against], what: str = "parts") -> str:
    """``"evidence about MAE training in k of n parts; explained by ... (pca) in m"``, or why there is nothing."""
    found = [a for a in found if a.control is not None]
    if not found:
        return rules.NO_CONTROL
    k = sum(a.is_evidence for a in found)
    head = f"{rules.EVIDENCE_TRAINING} in {k} of {len(found)} {what}"
    why: dict[str, int] = {}
    for a in found:
        if not a.is_evidence:
            why[a.label] = why.get(a.label, 0) + 1
    return head + "".join(f"; {label} in {m}" for label, m in sorted(why.items(), key=lambda kv: -kv[1]))


def same_width(panel: Panel) -> dict[str, Series]:
    """The panel's controls of the trained code's own width (:data:`hlvm.rules.SAME_WIDTH`)."""
    return {enc: panel.series[enc] for enc in rules.SAME_WIDTH if enc in panel.series}


def _seed_median(series: Series, name: str) -> dict[int, float]:
    """Per seed, the median over cells of the seed's cell value."""
    per: dict[int, list[float]] = {}
    for key in series.cells:
        for s, v in series.values(key, name).items():
            per.setdefault(s, []).append(v)
    return {s: float(np.median(v)) for s, v in per.items()}


def claim1(panel: Panel) -> ClaimResult:
    """Claim 1 per encoder on the per-seed median over cells of R^2(CA), with the floor as the probe's check."""
    out = ClaimResult("1", "R^2", panel)
    meds = {}
    for enc, series in panel.series.items():
        ca, floor = _seed_median(series, "ca"), _seed_median(series, "floor")
        leak = _seed_median(series, "leak")
        meds[enc] = ca
        e_ca, e_floor, e_leak = Estimate.of(ca.values()), Estimate.of(floor.values()), Estimate.of(leak.values())
        out.verdicts[enc] = rules.claim1(e_ca, e_floor)
        out.numbers[enc] = f"R^2(CA) {e_ca.fmt()}, floor {e_floor.fmt()}, leak {e_leak.fmt()} (n = {e_ca.n} seeds)"
    if "pixels" in meds:
        d = Estimate.paired(meds["trained"], meds["pixels"])
        out.evidence.append(("median R^2(CA) over cells", rules.evidence(d), d))
    controls = {enc: meds[enc] for enc in same_width(panel)}
    if controls:
        out.against.append(("median R^2(CA) over cells", rules.against_controls(meds["trained"], controls)))
    return out


def _claim_stat(series: Series, part: Part, name: str, lo: float, hi: float) -> dict[int, float]:
    """Per seed, the part's own figure (rules module docstring) for the evidence rule."""
    if part.claim == 2:
        r, u = part.key
        a, b, c = series.values((r, u), name), series.values((lo, u), name), series.values((hi, u), name)
        return {s: a[s] - max(b[s], c[s]) for s in set(a) & set(b) & set(c)}
    r, u = part.key
    u0 = min(uu for rr, uu in series.cells if rr == r)
    a, b = series.values((r, u), name), series.values((r, u0), name)
    return {s: a[s] - b[s] for s in set(a) & set(b)}


def claim23(panel: Panel, claim: int, name: str, ratios: Sequence[float]) -> ClaimResult:
    """Claim 2 or 3 on figure ``name`` (``"a"`` or ``"a_linear"``) for every encoder and the theory."""
    trained = panel.trained

    def predicted(key: Key) -> float:
        return trained.stat(key, "a_pred").mean

    out = ClaimResult(str(claim), "A" if name == "a" else "A_linear", panel)
    lo, hi = min(ratios), max(ratios)
    who = [(enc, s, name) for enc, s in panel.series.items()] + [("theory", trained, "a_pred")]
    for enc, series, field_ in who:
        cells = [k for k in series.cells if k in set(trained.cells)]

        def diff(a: Key, b: Key, series: Series = series, field_: str = field_) -> Estimate:
            return series.diff(a, b, field_)

        if claim == 2:
            parts = rules.claim2_parts(cells, diff, predicted, ratios)
        else:
            parts = rules.claim3_parts(cells, diff, predicted)
        out.parts[enc] = parts
        out.verdicts[enc] = rules.overall(p.verdict for p in parts)
    others = same_width(panel)
    for p in out.parts["trained"]:
        if p.verdict.startswith(rules.NOT_TESTABLE) or not p.key or len(p.key) != 2:
            continue
        mine = _claim_stat(trained, p, name, lo, hi)
        if "pixels" in panel.series:
            d = Estimate.paired(mine, _claim_stat(panel.series["pixels"], p, name, lo, hi))
            out.evidence.append((p.scope, rules.evidence(d), d))
        if others:
            theirs = {enc: _claim_stat(s, p, name, lo, hi) for enc, s in others.items()}
            out.against.append((p.scope, rules.against_controls(mine, theirs)))
    return out


@dataclass
class Theorem2Cell:
    """Theorem 2 in one cell of a panel whose code is exactly dim_c wide on every evaluation mask."""

    key: Key
    dim_c: int
    verdicts: dict[str, str]
    ca: dict[str, Estimate]
    leak: dict[str, Estimate]
    evidence: tuple[str, Estimate] | None  # trained vs pixels on selectivity
    against: Against | None = None  # trained vs every control of width dim_c on selectivity
    selectivity: dict[str, Estimate] = field(default_factory=dict)


def theorem2_cells(panel: Panel) -> list[Theorem2Cell]:
    """The cells of ``panel`` where Theorem 2 applies: a code of width dim_c for every evaluation mask."""
    if panel.representation != "code":
        return []
    trained = panel.trained
    out = []
    for key in trained.cells:
        widths, dims = trained.widths(key), trained.dims_c(key)
        if len(widths) != 1 or None in widths or widths != dims:
            continue
        verdicts, ca, leak, sel = {}, {}, {}, {}
        for enc, series in panel.series.items():
            if key not in series.seeds:
                continue
            ca[enc], leak[enc] = series.stat(key, "ca"), series.stat(key, "leak")
            sel[enc] = series.stat(key, "selectivity")
            verdicts[enc] = rules.theorem2(ca[enc], leak[enc])
        ev = None
        mine = trained.values(key, "selectivity")
        if "pixels" in panel.series and key in panel.series["pixels"].seeds:
            d = Estimate.paired(mine, panel.series["pixels"].values(key, "selectivity"))
            ev = (rules.evidence(d), d)
        others = {enc: s.values(key, "selectivity") for enc, s in same_width(panel).items() if key in s.seeds}
        against = rules.against_controls(mine, others) if others else None
        out.append(Theorem2Cell(key, next(iter(dims)), verdicts, ca, leak, ev, against, sel))
    return out


def selectivity_against(panel: Panel) -> list[tuple[Key, Against]]:
    """Per cell, the trained code's selectivity (R^2(CA) - leak) against every control of its width.

    For a wide code the theory predicts nothing here (docs/theory.md, section 8): how much of the
    visible side's private noise training drops is measured, and this says whether a linear code of the
    same width drops as much.
    """
    others = same_width(panel)
    if panel.representation != "code" or not others:
        return []
    out = []
    for key in panel.trained.cells:
        theirs = {enc: s.values(key, "selectivity") for enc, s in others.items() if key in s.seeds}
        if theirs:
            out.append((key, rules.against_controls(panel.trained.values(key, "selectivity"), theirs)))
    return out


def theorem2_overall(cells: Sequence[Theorem2Cell], enc: str) -> str:
    vs = [c.verdicts[enc] for c in cells if enc in c.verdicts]
    return rules.overall(vs) if vs else "-"


#: The figures an arm is compared on with its reference, per cell.
COMPARED = ("a", "a_linear", "ca", "leak", "selectivity", "effective_rank")


@dataclass
class ArmComparison:
    """One trained arm against the arm that differs from it in one factor only (:func:`hlvm.rules.reference_of`)."""

    eval_kind: str
    representation: str
    arm: Panel
    reference: Panel
    factor: str
    cells: dict[Key, dict[str, Estimate]]  # per cell: deltas of COMPARED figures (arm - reference, paired by seed)
    verdict: str  # on A
    verdict_linear: str  # on linear A
    note: str
    verdict_selectivity: str = ""  # "hold": the arm isolates c better than its reference


def compare_arms(panels: Sequence[Panel]) -> list[ArmComparison]:
    """Every arm set against its one-factor reference on the same evaluation masks and representation."""
    from dataclasses import asdict

    out = []
    by_view: dict[tuple[str, str], list[Panel]] = {}
    for p in panels:
        by_view.setdefault((p.eval_kind, p.representation), []).append(p)
    for (kind, rep), ps in sorted(by_view.items()):
        arms = {p.arm: p for p in ps}
        dicts = [asdict(a) for a in arms]
        pairs = []
        for arm, panel in arms.items():
            for found in (rules.reference_of(asdict(arm), dicts), rules.control_arm_of(asdict(arm), dicts)):
                if found is not None:
                    pairs.append((arm, panel, found))
        for arm, panel, (factor, ref_dict) in pairs:
            ref = next(p for a, p in arms.items() if asdict(a) == ref_dict)
            cells = {}
            for key in panel.trained.cells:
                if key not in ref.trained.seeds:
                    continue
                cells[key] = {
                    f: Estimate.paired(panel.trained.values(key, f), ref.trained.values(key, f)) for f in COMPARED
                }
            if not cells:
                continue
            # A has no room to rise where the theory already puts it at the ceiling: those cells are not testable.
            room = {k: c for k, c in cells.items() if ref.trained.stat(k, "a_pred").mean < rules.CEILING}
            v, note = rules.compare_arm({k: (c["a"], c["ca"]) for k, c in room.items()})
            vl, _ = rules.compare_arm({k: (c["a_linear"], c["ca"]) for k, c in room.items()})
            if not room:
                v = vl = f"{rules.NOT_TESTABLE} (ceiling)"
            vs, _ = rules.compare_arm({k: (c["selectivity"], c["ca"]) for k, c in cells.items()})
            out.append(ArmComparison(kind, rep, panel, ref, factor, cells, v, vl, note, vs))
    return out


def best_arms(panels: Sequence[Panel]) -> dict[tuple[str, str], tuple[str | None, dict[str, tuple[float, float, float]]]]:
    """Per (evaluation kind, representation): the best arm for high-level latents and every arm's means.

    Means are over the cells every arm there has (so arms are compared on the same cells) whose predicted A is
    below the ceiling: ``(linear A, R^2(CA), leak)``; no best where no such cell is left.
    """
    by_view: dict[tuple[str, str], list[Panel]] = {}
    for p in panels:
        by_view.setdefault((p.eval_kind, p.representation), []).append(p)
    out = {}
    for view, ps in sorted(by_view.items()):
        if len(ps) < 2:
            continue
        common = set.intersection(*(set(p.trained.cells) for p in ps))
        # Cells below the ceiling: where A can tell codes apart (the predicted A is the same for every arm).
        common = {k for k in common if ps[0].trained.stat(k, "a_pred").mean < rules.CEILING}
        if not common:
            out[view] = (None, {})
            continue
        means = {}
        for p in ps:
            vals = [[p.trained.stat(k, f).mean for k in sorted(common)] for f in ("a_linear", "ca", "leak")]
            means[p.arm.label()] = tuple(float(np.nanmean(v)) if v else float("nan") for v in vals)
        best = rules.best_arm({k: (v[0], v[1]) for k, v in means.items()})
        out[view] = (best, means)
    return out
