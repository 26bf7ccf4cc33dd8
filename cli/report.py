"""``hlvm report``: figures, tables and claim verdicts from a sweep's results."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hlvm.cli._common import console, user_errors


def report(
    results: Annotated[Path, typer.Argument(help="A sweep's results folder (or its results.csv).")],
    out: Annotated[Path | None, typer.Option(help="Folder for report.md and the PNG figures (default: the results folder).")] = None,
) -> None:
    """Write report.md with PNG figures and a verdict per claim of docs/theory.md, computed from the numbers."""
    with user_errors():
        from hlvm.io import check_writable
        from hlvm.report import build_report, summary_lines

        if out is not None:
            check_writable(out)  # before the figures are drawn, not after
        elif results.is_dir():
            check_writable(results, what="results folder")
        path = build_report(results, out)
        for line in summary_lines(path):
            console.print(line, markup=False)
        console.print(f"report: {path}")
