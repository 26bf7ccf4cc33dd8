"""The report of a sweep: figures, tables, and a verdict per claim of THEORY.md.

Everything is computed from the raw rows of ``results.csv`` (one row per
point x evaluation mask x latent node) and, when present, the theory's
``prediction.csv``. The package is split along its seams:

- :mod:`hlvm.report.load`: reading and typing the rows;
- :mod:`hlvm.report.stats`: per-mask summaries and per-cell statistics;
- :mod:`hlvm.report.rules`: the verdict rules, fixed before any numbers are
  seen and printed into every report;
- :mod:`hlvm.report.figures`: the figures;
- this module: :func:`build_report`, which writes ``report.md``.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import asdict
from pathlib import Path

from hlvm.io import write_json

from .figures import figures as _figures
from .load import REQUIRED_COLUMNS, load_results
from .rules import CLAIMS, RULES, Verdict, _fmt, _interval_verdict, claim1, claim2, claim3, overall
from .stats import Cell, MaskSummary, abstraction, cells, group_label, summarise_masks

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
    "summary_lines",
    "RULES",
    "_interval_verdict",
]


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
