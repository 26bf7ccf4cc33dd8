"""A run's logs: the loss plot, TensorBoard events, and metrics rows kept in step with a resumed run."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


from hlvm.curves import read_metrics

from .config import LOSS_PLOT, METRICS, TrainConfig


def plot_run(run_dir: str | os.PathLike[str]) -> Path | None:
    """Draw ``RUN/loss.png`` from ``RUN/metrics.jsonl``: the loss, each objective term and the lr against step."""
    from hlvm.curves import plot_loss

    run_dir = Path(run_dir)
    return plot_loss({run_dir.name: read_metrics(run_dir / METRICS)}, run_dir / LOSS_PLOT, title=f"training loss: {run_dir}")


def _tensorboard(run_dir: Path, purge_step: int | None) -> Any:
    """A ``SummaryWriter`` into the run folder when TensorBoard is installed (``pip install 'hlvm[tb]'``), else ``None``."""
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # installed but unusable (a version torch does not take): train without it
        return None
    return SummaryWriter(log_dir=str(run_dir), purge_step=purge_step)


def _logged_step(step: int, cfg: TrainConfig, total: int) -> bool:
    """Whether an uninterrupted run writes a metrics row at ``step`` (an interruption also writes one where it stops)."""
    return step % cfg.log_every == 0 or step == total or bool(cfg.heldout_every and step % cfg.heldout_every == 0)


def _truncate_metrics(path: Path, step: int, keep_last: bool = True) -> None:
    """Keep the metrics rows up to ``step`` (later ones came after the checkpoint a resumed run restarts from).

    With ``keep_last`` off the row at ``step`` goes too: the row an interruption wrote where it stopped, which an
    uninterrupted run does not have, so that the resumed run's log has the uninterrupted run's rows.
    """
    if not path.is_file():
        return
    raw = path.read_bytes()
    keep = [r for r in read_metrics(path) if r["step"] < step or (keep_last and r["step"] == step)]
    text = "".join(json.dumps(r) + "\n" for r in keep)
    if text.encode() != raw:
        from hlvm.io import atomic_file

        with atomic_file(path) as f:
            f.write(text)
