"""``hlvm report``'s writer: read a sweep's results, judge them, and write ``report.md``, ``verdicts.json`` and the figures."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

from hlvm.errors import DataError
from hlvm.io import nan_to_none, write_json

from .figures import figures
from .load import Results, load_results
from .markdown import report_lines
from .verdicts import judge, verdicts_record

__all__ = ["build_report"]


def build_report(results_dir: str | os.PathLike[str], out: str | os.PathLike[str] | None = None) -> Path:
    """Write ``report.md``, ``verdicts.json`` and the PNG figures for the sweep in ``results_dir``; return the report's path.

    ``out`` defaults to ``results_dir``. Raises :class:`DataError` for a
    missing or malformed results file, or an ``out`` that is not a folder.
    """
    results_dir = Path(results_dir)
    rows = load_results(results_dir)
    src = results_dir if results_dir.is_dir() else results_dir.parent
    out = Path(out) if out is not None else src
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    prediction = _read_prediction(src / "prediction.csv")
    ratios = _sweep_ratios(src, rows)
    j = judge(rows, ratios)
    figs = figures(j["panels"], out)
    lines = report_lines(rows, src, out, j, figs, prediction)
    write_json(out / "verdicts.json", nan_to_none(verdicts_record(rows, src, j)))
    path = out / "report.md"
    tmp = path.with_name(".report.md.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)
    return path


def _read_prediction(path: Path) -> list[dict[str, str]] | None:
    if not path.is_file():
        return None
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _sweep_ratios(src: Path, rows: Results) -> list[float]:
    """The sweep's mask ratios (feasible or not: claim 2's extremes are the sweep's), else those in the rows."""
    try:
        cfg = json.loads((src / "sweep.json").read_text())["config"]
        return sorted(float(r) for r in cfg["mask_ratios"])
    except (OSError, ValueError, KeyError, TypeError):
        return sorted({r["mask_ratio"] for r in rows})
