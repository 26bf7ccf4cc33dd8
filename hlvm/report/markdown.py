"""``report.md``: the sweep report's text, section by section, from the verdicts :func:`hlvm.report.judge` computed.

:func:`report_lines` returns the report's lines in order: provenance, how to
read it, the verdicts beside the controls, against the strongest control,
Theorem 2 per cell, arms compared, the best arm, claim details, numbers per
cell, figures (training curves drawn here), the probe's caveat, the rules and
the theory's prediction.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from hlvm import rules

from .caveat import probe_caveat
from .claims import (
    CLAIMS,
    COMPARED,
    ENCODER_ORDER,
    ClaimResult,
    Theorem2Cell,
    against_summary,
    theorem2_overall,
)
from .figures import training_curves
from .load import Results
from .stats import FIELDS, Panel

__all__ = ["report_lines"]


def report_lines(
    rows: Results,
    src: Path,
    out: Path,
    j: dict[str, Any],
    figs: dict[str, list[tuple[str, str]]],
    prediction: list[dict[str, str]] | None,
) -> list[str]:
    """The lines of ``report.md`` for the rows loaded from ``src``, with :func:`hlvm.report.judge`'s ``j``.

    ``figs`` is what :func:`hlvm.report.figures.figures` drew (per panel slug,
    ``(file name, caption)``); the training curves are drawn into ``out``
    here. ``prediction`` is ``prediction.csv``'s rows, or None.
    """
    ps: list[Panel] = j["panels"]
    claims: list[ClaimResult] = j["claims"]
    t2: dict[str, list[Theorem2Cell]] = j["theorem2"]
    seeds = sorted({r["seed"] for r in rows})
    encoders = [e for e in ENCODER_ORDER if any(r["encoder"] == e for r in rows)]
    n_points = len({r["point_id"] for r in rows})
    lines = ["# Sweep report", ""]
    lines += _provenance_lines(src)
    from hlvm import __version__
    from hlvm.io import _git_commit

    lines += [f"Report: hlvm {__version__}, commit `{_git_commit()}` (its full provenance is in `verdicts.json`).", ""]
    lines += [
        f"Source: `{(src / 'results.csv').name}` in `{src}`: {len(rows)} rows, {n_points} points "
        f"(encoders: {', '.join(encoders)}), seeds {', '.join(map(str, seeds))} (n = {len(seeds)} replicates per cell "
        "where every seed ran).",
        "",
        "## How to read this report",
        "",
        "Each row of the results is the held-out R^2 of one latent node's noise ε_v from an encoder's code of the "
        "visible pixels under one evaluation mask; roles come from Algorithm 1 on that mask. Any encoder that keeps "
        "the visible pixels holds all of CA's noise and none of the masked side's, by construction (docs/theory.md), so "
        "every verdict below is given for the trained model **and** for encoders that learned nothing, on the "
        "same held-out samples and masks: `pixels` (the visible pixels themselves), `untrained` (the same "
        "architecture at the initialisation its training started from), the linear codes of the trained code's "
        "own width `pca` (top principal components of the visible pixels, fitted on training images), "
        "`random_projection` (a seeded Gaussian map) and `linear_mae` (the optimal linear MAE for the mask: "
        "reduced-rank regression of the masked pixels on the visible ones), and `oracle` (the true c, Theorem 2's "
        "ideal). Two tests of the trained figure (rules below): *trained vs pixels* says whether it differs from "
        "the raw pixels; *trained vs its width's controls* says whether it **beats every control of the same "
        "width** (untrained and the three linear codes): only then is it *evidence about MAE training*; otherwise "
        "it is *explained by a linear code* or *explained without training*, naming the control that does as well "
        "(or better). Seeds are the replicates: every SE is over seeds. *A* is the abstraction of what the code "
        "holds of CA (1 = the root's noise alone): it is 1 for a code that throws everything else away, so it is "
        "never read without R^2(CA) beside it.",
        "",
    ]
    if not rows.has_controls:
        lines += [
            "**This results file holds no controls** (it predates them, or the sweep ran with `--controls none`): "
            "no verdict below can be told apart from what any encoder of the visible pixels would show. Re-run the "
            "sweep with this version of hlvm to add them.",
            "",
        ]
    if not rows.has_mask_figures:
        lines += ["The file lacks the per-mask floor and leak figures: they are taken over latent nodes only "
                  "(the pixels' own noises, part of s_m and s_mc, are missing).", ""]
    if len(seeds) < 2:
        lines += ["**One seed**: there is no SE over replicates, so claims 2 and 3 and the evidence rule decide nothing "
                  "(every such verdict is inconclusive).", ""]

    shown = [e for e in ENCODER_ORDER if e in encoders]
    head = " | ".join(shown)
    lines += ["## Verdicts: the trained model beside the controls", "",
              f"| claim | panel (eval masks; arm) | {head} | theory (same masks) | trained vs pixels | trained vs its width's controls |",
              "|---|---|" + "---|" * (len(shown) + 3)]
    for r in claims:
        if r.panel.representation != "code":
            continue
        v = r.verdicts
        theory = v.get("theory", "n/a") if r.claim != "1" else "n/a"
        cols = " | ".join(_v(v.get(e)) for e in shown)
        lines.append(f"| {_claim_name(r)} | {r.panel.label()} | {cols} | {theory} | {r.evidence_summary()} | {r.against_summary()} |")
    for p in ps:
        cells = t2.get(p.slug())
        if not cells:
            continue
        ev = [c.evidence for c in cells if c.evidence is not None]
        k = sum(e[0] == rules.EVIDENCE for e in ev)
        summary = (f"{rules.EVIDENCE} in {k} of {len(ev)} cells" if k else f"{rules.EXPLAINED} (0 of {len(ev)} cells differ)") if ev else "no pixels control"
        vs = against_summary([c.against for c in cells if c.against is not None], "cells")
        cols = " | ".join(_v(theorem2_overall(cells, e)) for e in shown)
        lines.append(f"| T2 | {p.label()} | {cols} | hold (predicted) | {summary} | {vs} |")
    lines += ["", "Claims: " + "; ".join(f"**{k}** {v}" for k, v in CLAIMS.items()) + ".", ""]
    lines += _strongest_section(claims, t2, ps, j["selectivity"])

    if t2:
        cshown = [e for e in shown if e != "trained"]
        lines += ["## Theorem 2 per cell (a code exactly dim_c wide on every evaluation mask)", "",
                  "R^2(CA) / leak: verdict, per encoder (mean ± SE over seeds; the rule's t·SE bounds decide). The last two "
                  "columns judge the trained code's selectivity (R^2(CA) - leak) against the pixels and against every "
                  "control of width dim_c.", "",
                  "| panel | ratio | unit | dim_c | trained | " + " | ".join(cshown) + " | trained vs pixels | trained vs its width's controls |",
                  "|---|---|---|---|---|" + "---|" * (len(cshown) + 2)]
        for p in ps:
            for c in t2.get(p.slug(), []):
                def cell(enc: str, c: Theorem2Cell = c) -> str:
                    if enc not in c.verdicts:
                        return "-"
                    return f"{c.ca[enc].fmt()} / {c.leak[enc].fmt()}: {c.verdicts[enc]}"

                ev = "-" if c.evidence is None else f"{c.evidence[0]} (Δ {c.evidence[1].fmt()})"
                vs = "-" if c.against is None else c.against.fmt()
                lines.append(f"| {p.label()} | {c.key[0]:g} | {c.key[1]} | {c.dim_c} | {cell('trained')} | "
                             + " | ".join(cell(e) for e in cshown) + f" | {ev} | {vs} |")
        lines.append("")

    if j["arms"]:
        lines += ["## Arms compared", "",
                  "Each arm against the arm that differs from it in one factor only, set to MAE's (random training masks, "
                  "the `mae` objective, no boundary-ignoring), on the same evaluation masks; per cell the differences "
                  "(arm - reference) are paired by seed, and the verdict on A is the rule for a difference over the cells "
                  "(*hold*: the arm's code is the more abstract). A rises when CA is lost, so ΔR^2(CA) stands beside it. "
                  "The same rule on selectivity (R^2(CA) - leak) says whether the arm *isolates c better*.",
                  "",
                  "| eval masks | representation | arm | against | cells | mean ΔA | mean ΔA linear | mean ΔR^2(CA) | "
                  "mean Δleak | mean Δselectivity | mean Δeff. rank | verdict on A | on linear A | isolates c better |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for c in j["arms"]:
            mean = {f: _nanmean([x[f].mean for x in c.cells.values()]) for f in COMPARED}
            note = f" ({c.note})" if c.note else ""
            lines.append(
                f"| {c.eval_kind} | {c.representation} | {c.arm.arm.label()} | {c.reference.arm.label()} ({c.factor}) | "
                f"{len(c.cells)} | {mean['a']:+.3f} | {mean['a_linear']:+.3f} | {mean['ca']:+.3f} | {mean['leak']:+.3f} | "
                f"{mean['selectivity']:+.3f} | {mean['effective_rank']:+.2f} | {_v(c.verdict)}{note} | "
                f"{_v(c.verdict_linear)} | {_v(c.verdict_selectivity)} |"
            )
        lines.append("")
    if j["best"]:
        lines += ["## The best arm for high-level latents", "",
                  "Per evaluation mask kind and representation: the highest mean linear A over the cells every arm has, among "
                  "the arms whose mean R^2(CA) is within 0.05 of the best R^2(CA) (`hlvm/rules.py`).", "",
                  "| eval masks | representation | arm | mean A linear | mean R^2(CA) | mean leak | best |",
                  "|---|---|---|---|---|---|---|"]
        for (kind, rep), (best, means) in j["best"].items():
            if not means:
                lines.append(f"| {kind} | {rep} | every cell at the ceiling (predicted A >= {rules.CEILING:g}): not testable | - | - | - | - |")
            for label, (al, ca, leak) in sorted(means.items(), key=lambda kv: -kv[1][0] if not math.isnan(kv[1][0]) else 0):
                lines.append(f"| {kind} | {rep} | {label} | {al:.3f} | {ca:.3f} | {leak:.3f} | {'**best**' if label == best else ''} |")
        lines.append("")

    lines += ["## Claim details", ""]
    for r in claims:
        lines += [f"### Claim {_claim_name(r)}: {r.panel.label()}", ""]
        if r.claim == "1":
            for enc in ENCODER_ORDER:
                if enc in r.numbers:
                    lines.append(f"- {enc}: {r.verdicts[enc]}; {r.numbers[enc]}")
        else:
            lines += ["| part | " + " | ".join(e for e in (*ENCODER_ORDER, "theory") if e in r.parts)
                      + " | trained vs pixels | trained vs its width's controls |",
                      "|---|" + "---|" * (sum(e in r.parts for e in (*ENCODER_ORDER, "theory")) + 2)]
            ev = {scope: (label, d) for scope, label, d in r.evidence}
            vs = dict(r.against)
            if not r.parts.get("trained"):
                lines.append("| no part: " + ("fewer than two units at every ratio" if r.claim == "3" else
                                                "no ratio strictly between the sweep's extremes") + " |" + " |" * len(r.parts))
            for part in r.parts.get("trained", []):
                cols = []
                for enc in (*ENCODER_ORDER, "theory"):
                    if enc not in r.parts:
                        continue
                    ps_ = [q for q in r.parts[enc] if q.scope == part.scope]
                    q = ps_[0] if ps_ else None
                    cols.append("-" if q is None else (q.verdict if q.verdict.startswith(rules.NOT_TESTABLE) else f"{q.verdict}: {q.numbers}"))
                e = ev.get(part.scope)
                a = vs.get(part.scope)
                lines.append(f"| {part.scope} | " + " | ".join(cols) + f" | {'-' if e is None else f'{e[0]} (Δ {e[1].fmt()})'} | "
                             f"{'-' if a is None else a.fmt()} |")
        for scope, label, d in r.evidence if r.claim == "1" else []:
            lines.append(f"- trained vs pixels ({scope}): {label} (Δ {d.fmt()}, n = {d.n})")
        for scope, a in r.against if r.claim == "1" else []:
            lines.append(f"- trained vs its width's controls ({scope}): {a.fmt()}; "
                         + ", ".join(f"{k} Δ {d.fmt()}" for k, d in a.per_control.items()))
        lines.append("")

    lines += ["## Numbers per cell", "",
              "Mean ± SE over seeds of each seed's mean over its evaluation masks. *width*: the code's bottleneck "
              "(`-` none); *(T2)*: a cell where Theorem 2 applies. R^2 are of noises (floor over s_m, leak over s_mc, "
              "the pixels' own noises included); *selectivity* = R^2 CA - leak; *A all* counts s_mc too.", ""]
    keys_t2 = {p.slug(): {c.key for c in t2.get(p.slug(), [])} for p in ps}
    for p in ps:
        lines += _cell_table(p, keys_t2[p.slug()])

    lines += ["## Figures", ""]
    for p in ps:
        if p.slug() not in figs:
            continue
        lines += [f"### {p.label()}", ""]
        for fname, caption in figs[p.slug()]:
            lines += [f"![{caption}]({fname})", "", f"*{caption}.*", ""]
    lines += training_curves(src, out)
    lines += ["## The probe", "", probe_caveat(src), ""]
    lines += ["## Rules (fixed before the numbers)", "", "```", rules.RULES, "```", ""]
    if prediction is not None:
        lines += _prediction_section(prediction)
    return lines


def _prediction_section(prediction: list[dict[str, str]]) -> list[str]:
    """A table of ``hlvm.predict``'s numbers for the grid: the A of CA the claims are judged on, and c's own numbers."""
    need = {"mask_kind", "mask_ratio", "mask_unit", "abstraction", "mean_dim_c", "frac_noise_shared"}
    if not prediction or not need <= set(prediction[0]):
        missing = sorted(need - set(prediction[0])) if prediction else sorted(need)
        return ["## The theory's prediction", "",
                f"`prediction.csv` lacks the columns of `hlvm.predict` ({', '.join(missing)}); not shown.", ""]
    k = prediction[0].get("k", "?")
    lines = [
        "## The theory's prediction over many masks",
        "",
        f"`prediction.csv` holds `hlvm predict` for this grid: Algorithm 1 over {k} masks per cell, from the graph "
        "alone. *A of CA* is what the claims are judged on (the same quantity as the predicted A above, over many "
        "more masks); *abstraction of c* is `1 - mean(level of c's nodes) / deepest latent level`, a property of "
        "`c` itself (not measurable from a code, which holds all of CA); `dim_c` is the width of `c`; "
        "`frac_noise_shared` the share of latent noise in CA.",
        "",
        "| mask kind | unit | ratio | A of CA | abstraction of c | mean dim_c | sd dim_c | frac_noise_shared |",
        "|---|---|---|---|---|---|---|---|",
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
            f"| {r['mask_kind']} | {r['mask_unit']} | {float(r['mask_ratio']):g} | {num(r, 'ca_abstraction')} | "
            f"{num(r, 'abstraction')} | {num(r, 'mean_dim_c')} | {num(r, 'sd_dim_c')} | {num(r, 'frac_noise_shared')} |"
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
                f"commit `{prov.get('git_commit')}`, begun {prov.get('created_utc')}" + _resumes_note(data.get("resumes")) + "."
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


def _resumes_note(resumes: Any) -> str:
    """``"; resumed N times, last with commit X at T"`` from sweep.json's ``resumes``, or nothing."""
    if not isinstance(resumes, list) or not resumes:
        return ""
    last = resumes[-1].get("provenance", {}) if isinstance(resumes[-1], dict) else {}
    times = "once" if len(resumes) == 1 else f"{len(resumes)} times"
    return f"; resumed {times}, last with commit `{last.get('git_commit')}` at {last.get('created_utc')}"



def _nanmean(xs: list[float]) -> float:
    a = np.asarray([x for x in xs if not math.isnan(x)], dtype=float)
    return float(a.mean()) if a.size else float("nan")


def _v(v: str | None) -> str:
    return "-" if not v else (f"**{v}**" if v in ("hold", "fail", "mixed") else v)


def _claim_name(r: ClaimResult) -> str:
    if r.claim == "1":
        return "1"
    return r.claim + ("" if r.measure == "A" else " (linear probe)")


def _cell_table(p: Panel, t2keys: set) -> list[str]:
    lines = [
        f"#### {p.label()}",
        "",
        "| ratio | unit | encoder | seeds | masks | width | code dims | dim_c | R^2 CA | R^2 CA linear | floor s_m | leak s_mc | "
        "leak linear | selectivity | eff. rank | A | A linear | A all | A predicted |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key in p.trained.cells:
        for enc in ENCODER_ORDER:
            series = p.series.get(enc)
            if series is None or key not in series.seeds:
                continue
            st = {f: series.stat(key, f) for f in FIELDS}
            widths = series.widths(key)
            width = "-" if widths in ({None}, set()) else "/".join(str(w) for w in sorted(w for w in widths if w is not None))
            if enc in ("pixels", "oracle"):
                width = enc
            dims = sorted(d for d in series.dims_c(key) if d is not None)
            dim_c = "-" if not dims else (str(dims[0]) if dims[0] == dims[-1] else f"{dims[0]}-{dims[-1]}")
            mark = " (T2)" if enc == "trained" and key in t2keys else ""
            rep = st["rep_dim"].mean
            rep = "-" if math.isnan(rep) else f"{rep:g}"
            lines.append(
                f"| {key[0]:g} | {key[1]} | {enc}{mark} | {st['ca'].n} | {series.n_masks(key)} | {width} | {rep} | {dim_c} | "
                f"{st['ca'].fmt()} | {st['ca_linear'].fmt()} | {st['floor'].fmt()} | {st['leak'].fmt()} | "
                f"{st['leak_linear'].fmt()} | {st['selectivity'].fmt()} | {st['effective_rank'].fmt()} | {st['a'].fmt()} | "
                f"{st['a_linear'].fmt()} | "
                f"{st['a_all'].fmt()} | {st['a_pred'].fmt()} |"
            )
    return lines + [""]



def _strongest_section(claims: list[ClaimResult], t2: dict[str, list[Theorem2Cell]], ps: list[Panel],
                       selectivity: dict[str, list[tuple[Any, rules.Against]]]) -> list[str]:
    """Per panel and measure: how often the trained figure beats every control of its width, and which control wins where not."""
    rows = []
    for r in claims:
        if r.panel.representation != "code" or not r.against:
            continue
        rows.append((r.panel.label(), f"claim {_claim_name(r)}", [a for _, a in r.against]))
    for p in ps:
        cells = [c.against for c in t2.get(p.slug(), []) if c.against is not None]
        if cells:
            rows.append((p.label(), "Theorem 2 (selectivity per cell)", cells))
        if selectivity.get(p.slug()):
            rows.append((p.label(), "selectivity per cell (no theorem for this width)", [a for _, a in selectivity[p.slug()]]))
    if not rows:
        return []
    out = ["## Against the strongest control of the same width", "",
           "A trained result is *evidence about MAE training* only where it beats every control of its own width "
           "(the untrained network and the linear codes pca, random_projection, linear_mae) by the rule; *strongest* "
           "is the control with the smallest margin. Where a linear code does as well as training, the result is "
           "*explained by a linear code*.", "",
           "| panel | measure | parts or cells | evidence about MAE training | explained by a linear code | explained without training | strongest control (count) |",
           "|---|---|---|---|---|---|---|"]
    for label, measure, found in rows:
        n_ev = sum(a.is_evidence for a in found)
        n_lin = sum(a.label.startswith(rules.EXPLAINED_LINEAR) for a in found)
        n_un = sum(a.label.startswith(rules.EXPLAINED) for a in found)
        who: dict[str, int] = {}
        for a in found:
            if a.control:
                who[a.control] = who.get(a.control, 0) + 1
        names = ", ".join(f"{k} ({v})" for k, v in sorted(who.items(), key=lambda kv: -kv[1]))
        out.append(f"| {label} | {measure} | {len(found)} | {n_ev} | {n_lin} | {n_un} | {names} |")
    return out + [""]
