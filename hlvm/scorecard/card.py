"""The scorecard on disk: ``scorecard.json`` (the record), ``scorecard.md`` and its figure.

The folder is built under a temporary name and renamed when complete
(:func:`hlvm.io.atomic_dir`): a failed or interrupted score leaves no
scorecard. ``scorecard.json`` is written with sorted keys; the same encoder,
suite and seed give the same bytes on one machine, but for
``provenance.created_utc``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from hlvm.io import atomic_dir, nan_to_none

__all__ = ["write_scorecard", "markdown", "FIGURE"]

FIGURE = "scorecard.png"
_STYLE = {"encoder": ("#1f77b4", "o", 2.2), "pixels": ("#d62728", "s", 1.0), "untrained": ("#7f7f7f", "^", 1.0),
          "pca": ("#ff7f0e", "D", 1.0), "random_projection": ("#9467bd", "v", 1.0), "linear_mae": ("#8c564b", "P", 1.0),
          "oracle": ("#2ca02c", "*", 1.0)}


def _fmt(x: Any, se: Any = None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.3f}" + ("" if se is None else f"±{se:.3f}")


def _figure(record: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = record["cells"]
    panels = sorted({(c["mask_kind"], c["mask_unit"]) for c in cells})
    fig, axes = plt.subplots(2, len(panels), figsize=(max(6.5, 3.4 * len(panels) + 0.6), 5.6), squeeze=False, sharey="row")
    series = {"encoder": cells, **record["controls"]}
    for j, (kind, unit) in enumerate(panels):
        for i, (key, label) in enumerate((("r2_ca_noise", "R² of CA's noise"), ("r2_private_visible_noise", "leak R²(s_mc)"))):
            ax = axes[i][j]
            for who, rows in series.items():
                color, marker, lw = _STYLE.get(who, ("#000000", ".", 1.0))
                pts = [(r["mask_ratio"], r[key], r.get(f"{key}_se") or 0.0) for r in rows
                       if r["mask_kind"] == kind and r["mask_unit"] == unit and r[key] is not None]
                if pts:
                    ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts], color=color, marker=marker,
                                ms=4, lw=lw, label=who, elinewidth=0.7)
            ax.set_ylim(-0.05, 1.05)
            ax.grid(alpha=0.3)
            if i == 0:
                ax.set_title(f"{kind} masks, unit {unit}", fontsize=9)
            else:
                ax.set_xlabel("mask ratio")
            if j == 0:
                ax.set_ylabel(label)
    axes[0][-1].legend(fontsize=6, loc="lower left")
    fig.suptitle(f"Scorecard, suite {record['suite']['name']}: the encoder (thick) beside every control "
                 "(mean ± SE over replicates)", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.savefig(path, dpi=90, metadata={"Software": None})
    plt.close(fig)


def markdown(record: dict[str, Any]) -> str:
    """The scorecard as a page: the summary, one row per cell, the encoder beside its strongest control, the figure."""
    s, suite, enc = record["summary"], record["suite"], record["encoder"]
    lines = [f"# Scorecard: suite {suite['name']}", "",
             f"Encoder: `{json.dumps(enc, sort_keys=True)}`; seed {record['seed']}; suite hash `{suite['config_hash']}` "
             f"({suite.get('description') or 'see hlvm/scorecard/suites.py'}). hlvm {record['provenance'].get('hlvm_version')}, "
             f"commit `{record['provenance'].get('git_commit')}`.", "",
             f"- Theorem 2 ({record['rules']['theorem2']}): " + ", ".join(f"{k} in {v}" for k, v in s["theorem2"].items())
             + f" of {s['cells']} cells;",
             f"- beats every control of its width on selectivity (R^2(CA) - leak), by at least {record['rules']['min_effect']} "
             f"beyond t SE: {s['beats_every_control_of_its_width']} of {s['cells']} cells"
             + ("; elsewhere explained by " + ", ".join(f"{k} ({v})" for k, v in s["explained_by"].items()) if s["explained_by"] else "")
             + ".", "",
             f"![R^2 of CA and the leak against the mask ratio, the encoder beside every control]({FIGURE})", "",
             "| kind | ratio | unit | dim_c | width | R^2 CA | leak | selectivity | R^2 CA linear | leak linear | floor s_m | "
             "Theorem 2 | strongest control of its width |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in record["cells"]:
        dim_c = c["dim_c"] if c["dim_c"] is not None else f"{c['dim_c_min']}-{c['dim_c_max']}"
        a = c["strongest_control"]
        vs = a["label"] if a["control"] is None else f"{a['label']} (Δ vs {a['control']} {_fmt(a['d'], a['se'])})"
        lines.append(
            f"| {c['mask_kind']} | {c['mask_ratio']:g} | {c['mask_unit']} | {dim_c} | {c['code_width']} | "
            f"{_fmt(c['r2_ca_noise'], c['r2_ca_noise_se'])} | {_fmt(c['r2_private_visible_noise'], c['r2_private_visible_noise_se'])} | "
            f"{_fmt(c['selectivity'], c['selectivity_se'])} | {_fmt(c['r2_ca_noise_linear'])} | "
            f"{_fmt(c['r2_private_visible_noise_linear'])} | {_fmt(c['r2_private_masked_noise'])} | {c['verdict']} | {vs} |")
    lines += ["", "## Controls (same samples, masks and probes)", "",
              "| control | cells | mean R^2 CA | mean leak | mean selectivity | Theorem 2 holds |", "|---|---|---|---|---|---|"]
    for who, rows in record["controls"].items():
        def mean(key: str, rows: list[dict[str, Any]] = rows) -> str:
            xs = [r[key] for r in rows if r[key] is not None]
            return _fmt(sum(xs) / len(xs)) if xs else "-"

        holds = sum(r["verdict"] == "hold" for r in rows)
        lines.append(f"| {who} | {len(rows)} | {mean('r2_ca_noise')} | {mean('r2_private_visible_noise')} | "
                     f"{mean('selectivity')} | {holds} |")
    lines += ["", "Every SE is over the suite's replicates (fresh held-out samples and masks); the encoder itself is "
              "fixed. Theorem 2 applies only where the code is exactly dim_c wide on every mask of a cell.", ""]
    return "\n".join(lines)


def write_scorecard(record: dict[str, Any], out: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Write ``scorecard.json``, ``scorecard.md`` and the figure into ``out`` (atomically); returns the JSON's path."""
    out = Path(out)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        (tmp / "scorecard.json").write_text(json.dumps(nan_to_none(record), indent=2, sort_keys=True) + "\n")
        _figure(record, tmp / FIGURE)
        (tmp / "scorecard.md").write_text(markdown(record))
    return out / "scorecard.json"
