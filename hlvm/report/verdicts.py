"""The verdicts as data: :func:`judge` computes every verdict from typed rows, :func:`verdicts_record` is ``verdicts.json``.

:func:`summary_lines` reads ``verdicts.json`` back into one line per claim and
panel, what ``hlvm report`` and ``hlvm sweep`` print.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from hlvm import rules
from hlvm.io import provenance

from .claims import (
    ENCODER_ORDER,
    ClaimResult,
    Theorem2Cell,
    best_arms,
    claim1,
    claim23,
    compare_arms,
    selectivity_against,
    theorem2_cells,
)
from .load import Results
from .stats import Panel, panels, summarise_masks

__all__ = ["judge", "verdicts_record", "summary_lines"]


def judge(rows: Results, ratios: list[float] | None = None) -> dict[str, Any]:
    """Every verdict of the report from typed rows: panels, claim results and Theorem 2 cells."""
    masks = summarise_masks(rows)
    ps = panels(masks)
    ratios = sorted({r["mask_ratio"] for r in rows}) if ratios is None else ratios
    results: list[ClaimResult] = []
    t2: dict[str, list[Theorem2Cell]] = {}
    for p in ps:
        results.append(claim1(p))
        for claim in (2, 3):
            for name in ("a", "a_linear"):
                results.append(claim23(p, claim, name, ratios))
        cells = theorem2_cells(p)
        if cells:
            t2[p.slug()] = cells
    sel = {p.slug(): selectivity_against(p) for p in ps if p.slug() not in t2}
    return {"masks": masks, "panels": ps, "claims": results, "theorem2": t2, "arms": compare_arms(ps), "best": best_arms(ps),
            "selectivity": {k: v for k, v in sel.items() if v}}


def verdicts_record(rows: Results, src: Path, j: dict[str, Any]) -> dict[str, Any]:
    """What ``verdicts.json`` holds: provenance, then every verdict of :func:`judge`'s ``j`` with its numbers."""
    ps: list[Panel] = j["panels"]
    claims: list[ClaimResult] = j["claims"]
    t2: dict[str, list[Theorem2Cell]] = j["theorem2"]
    seeds = sorted({r["seed"] for r in rows})
    encoders = [e for e in ENCODER_ORDER if any(r["encoder"] == e for r in rows)]
    return {
        "provenance": provenance({"results": str(rows.path), "rows": len(rows)}),
        "source_provenance": _source_provenance(src),
        "seeds": seeds,
        "encoders": encoders,
        "has_controls": rows.has_controls,
        "claims": [
            {
                "claim": r.claim,
                "measure": r.measure,
                "panel": r.panel.label(),
                "eval_kind": r.panel.eval_kind,
                "arm": r.panel.arm.label(),
                "representation": r.panel.representation,
                "verdicts": r.verdicts,
                "trained_vs_pixels": r.evidence_summary(),
                "parts": {
                    enc: [{"scope": q.scope, "verdict": q.verdict, "d": q.d.mean, "se": q.d.se, "n": q.d.n} for q in parts]
                    for enc, parts in r.parts.items()
                },
                "evidence": [{"scope": s_, "label": lab, "d": d.mean, "se": d.se, "n": d.n} for s_, lab, d in r.evidence],
                "trained_vs_controls": r.against_summary(),
                "against": [_against_json(s_, a) for s_, a in r.against],
            }
            for r in claims
        ],
        "arms_compared": [
            {
                "eval_kind": c.eval_kind, "representation": c.representation, "arm": c.arm.arm.label(),
                "reference": c.reference.arm.label(), "factor": c.factor, "verdict": c.verdict,
                "verdict_linear": c.verdict_linear, "verdict_selectivity": c.verdict_selectivity, "note": c.note,
                "cells": [{"mask_ratio": k[0], "mask_unit": k[1], **{f"d_{f}": e.mean for f, e in v.items()},
                           **{f"se_{f}": e.se for f, e in v.items()}} for k, v in c.cells.items()],
            }
            for c in j["arms"]
        ],
        "best_arm": [{"eval_kind": k[0], "representation": k[1], "best": b} for k, (b, _) in j["best"].items()],
        "selectivity_against": [
            {"panel": slug, "mask_ratio": key[0], "mask_unit": key[1], **_against_json(None, a)}
            for slug, found in j["selectivity"].items()
            for key, a in found
        ],
        "theorem2": [
            {
                "panel": p.label(),
                "mask_ratio": c.key[0],
                "mask_unit": c.key[1],
                "dim_c": c.dim_c,
                "verdicts": c.verdicts,
                "r2_ca": {e: x.mean for e, x in c.ca.items()},
                "leak": {e: x.mean for e, x in c.leak.items()},
                "selectivity": {e: x.mean for e, x in c.selectivity.items()},
                "trained_vs_pixels": None if c.evidence is None else c.evidence[0],
                "against": None if c.against is None else _against_json(None, c.against),
            }
            for p in ps
            for c in t2.get(p.slug(), [])
        ],
    }


def _source_provenance(src: Path) -> Any:
    """The provenance block of the sweep that wrote the results (sweep.json's), or None."""
    try:
        return json.loads((src / "sweep.json").read_text()).get("provenance")
    except (OSError, ValueError, AttributeError):
        return None


def _against_json(scope: str | None, a: rules.Against) -> dict[str, Any]:
    return {"scope": scope, "label": a.label, "control": a.control, "d": a.d.mean, "se": a.d.se, "n": a.d.n,
            "per_control": {k: {"d": d.mean, "se": d.se, "n": d.n} for k, d in a.per_control.items()}}


def summary_lines(report_path: str | os.PathLike[str]) -> list[str]:
    """One line per claim and panel (code representation): the trained model's verdict, the pixels', and the evidence."""
    data = json.loads((Path(report_path).parent / "verdicts.json").read_text())
    out = []
    for c in data["claims"]:
        if c["representation"] != "code" or c["measure"] == "A_linear":
            continue
        v = c["verdicts"]
        out.append(
            f"claim {c['claim']} ({c['panel']}): trained {v.get('trained')}, pixels {v.get('pixels', '-')}, "
            f"theory {v.get('theory', 'n/a')}; vs pixels: {c['trained_vs_pixels']}; "
            f"vs its width's controls: {c.get('trained_vs_controls', '-')}"
        )
    for t in data["theorem2"]:
        v = t["verdicts"]
        a = t.get("against") or {}
        out.append(
            f"Theorem 2 ({t['panel']}, ratio {t['mask_ratio']:g}, unit {t['mask_unit']}, dim_c {t['dim_c']}): "
            f"trained {v.get('trained')}, pixels {v.get('pixels', '-')}, pca {v.get('pca', '-')}, "
            f"linear_mae {v.get('linear_mae', '-')}; vs its width's controls: {a.get('label', '-')}"
        )
    return out
