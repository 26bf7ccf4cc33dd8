"""Training curves: reading a run's ``metrics.jsonl`` and drawing its loss (matplotlib, Agg).

``hlvm train`` draws one run's curve into ``RUN/loss.png``; ``hlvm report``
draws the curves of every run of a sweep into one figure. No torch here, so
the report can read runs without importing it.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hlvm.errors import DataError

__all__ = ["read_metrics", "plot_loss"]


def read_metrics(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The rows of a ``metrics.jsonl`` (one JSON object with an integer ``step`` per line).

    A torn last line (a run killed mid-write) is left out; a corrupt line
    before the last raises :class:`DataError`, since an interrupted write
    does not leave one. A missing file has no rows.
    """
    path = Path(path)
    if not path.is_file():
        return []
    try:
        lines = [line for line in path.read_text().splitlines() if line.strip()]
    except UnicodeDecodeError:
        raise DataError(f"{path} is not text") from None
    rows = []
    for i, line in enumerate(lines):
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or isinstance(row.get("step"), bool) or not isinstance(row.get("step"), int):
                raise ValueError("no integer step")
        except ValueError:
            if i == len(lines) - 1:
                break
            raise DataError(f"{path}: line {i + 1} is not a metrics row") from None
        rows.append(row)
    return rows


def _finite(xs: Sequence[Any]) -> bool:
    return any(isinstance(x, int | float) and math.isfinite(x) for x in xs)


def plot_loss(
    curves: Mapping[str, Sequence[Mapping[str, Any]]],
    path: str | os.PathLike[str],
    *,
    title: str = "",
    colors: Mapping[str, float] | None = None,
) -> Path | None:
    """Draw training loss against step into the PNG ``path`` (atomically); ``None`` if there is nothing to draw.

    ``curves`` maps a label to a run's metrics rows. One run: its total loss,
    each objective term (``loss_*``, when there are several) and, on a
    right-hand axis, the learning rate. Several runs: the total loss of each, coloured by ``colors[label]``
    in [0, 1] (viridis) when given; the legend names up to 24 runs. The loss
    axis is logarithmic when every loss drawn is positive.
    """
    curves = {k: [r for r in v if isinstance(r.get("loss"), int | float)] for k, v in curves.items()}
    curves = {k: v for k, v in curves.items() if v and _finite([r["loss"] for r in v])}
    if not curves:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hlvm.io import atomic_file

    fig, ax = plt.subplots(figsize=(7, 4.2))
    losses: list[float] = []
    if len(curves) == 1:
        (label, rows), = curves.items()
        steps = [r["step"] for r in rows]
        parts = sorted({k for r in rows for k in r if k.startswith("loss_")})
        keys = ["loss"] + (parts if len(parts) > 1 else [])  # a single term is the total itself
        for k in keys:
            ys = [r.get(k, float("nan")) for r in rows]
            losses += [y for y in ys if isinstance(y, int | float) and math.isfinite(y)]
            ax.plot(steps, ys, lw=1.6 if k == "loss" else 1.0, label=k, marker="o" if len(rows) < 10 else None, ms=3)
        if any("lr" in r for r in rows):
            ax2 = ax.twinx()
            ax2.plot(steps, [r.get("lr", float("nan")) for r in rows], color="0.6", ls="--", lw=0.9, label="lr")
            ax2.set_ylabel("learning rate", color="0.4")
            ax2.tick_params(axis="y", colors="0.4")
        ax.legend(fontsize=8, loc="upper right")
    else:
        cmap = plt.get_cmap("viridis")
        for i, (label, rows) in enumerate(curves.items()):
            ys = [r["loss"] for r in rows]
            losses += [y for y in ys if math.isfinite(y)]
            c = cmap(0.9 * colors[label]) if colors and label in colors else None
            marker = "o" if len(rows) < 10 else None  # a run logged a few times is still seen
            ax.plot([r["step"] for r in rows], ys, lw=1.0, alpha=0.85, color=c, marker=marker, ms=3,
                    label=label if i < 24 else None)
        ax.legend(fontsize=6, ncol=2 if len(curves) > 12 else 1, loc="upper right")
    if losses and min(losses) > 0:
        ax.set_yscale("log")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss")
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    try:
        with atomic_file(path, "wb") as f:
            fig.savefig(f, format="png", dpi=110)
    finally:
        plt.close(fig)
    return path
