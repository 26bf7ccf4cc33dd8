"""The report of a sweep: every claim's verdict for the trained model beside the same verdict for encoders that learned nothing.

Everything is computed from the raw rows of ``results.csv`` (one row per
point x evaluation mask x latent node) and, when present, the theory's
``prediction.csv`` and the sweep's ``sweep.json``. The package is split along
its seams:

- :mod:`hlvm.report.load`: reading and typing the rows;
- :mod:`hlvm.report.stats`: per-mask summaries, per-seed means, panels (a
  trained arm with its controls on the same masks);
- :mod:`hlvm.report.claims`: the claims judged per encoder with the rules of
  :mod:`hlvm.rules` (fixed before any numbers are seen, printed in every
  report);
- :mod:`hlvm.report.verdicts`: :func:`judge` (every verdict from the rows),
  ``verdicts.json``'s record, and :func:`summary_lines` read back from it;
- :mod:`hlvm.report.figures`: the figures;
- :mod:`hlvm.report.markdown`: the text of ``report.md``, section by section;
- :mod:`hlvm.report.caveat`: the probe's caveat, measured on the sweep's hierarchy;
- :mod:`hlvm.report.writer`: :func:`build_report`, which writes ``report.md``,
  ``verdicts.json`` and the figures.

This module only re-exports.
"""

from __future__ import annotations

# Besides __all__, every name importable from here before the code moved out (the claims' helpers,
# the figures, _provenance_lines for the tests) stays importable.
from .caveat import PROBE_CAVEAT
from .claims import (
    CLAIMS,
    COMPARED,
    ENCODER_ORDER,
    ClaimResult,
    Theorem2Cell,
    against_summary,
    best_arms,
    claim1,
    claim23,
    compare_arms,
    selectivity_against,
    theorem2_cells,
    theorem2_overall,
)
from .figures import figures, training_curves
from .load import REQUIRED_COLUMNS, Results, load_results
from .markdown import _provenance_lines
from .stats import FIELDS, Arm, MaskSummary, Panel, Series, abstraction, panels, summarise_masks
from .verdicts import judge, summary_lines
from .writer import build_report

__all__ = [
    "REQUIRED_COLUMNS",
    "load_results",
    "abstraction",
    "Arm",
    "MaskSummary",
    "Series",
    "Panel",
    "panels",
    "summarise_masks",
    "build_report",
    "judge",
    "summary_lines",
    "PROBE_CAVEAT",
]

