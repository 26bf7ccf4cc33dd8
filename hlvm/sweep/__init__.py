"""The sweep engine: mask ratio x masking unit x seed x objective (x bottleneck) grids.

A sweep trains one MAE per grid *point* and measures, on several held-out
masks of the point's ratio and unit, how well the encoder's code recovers
every latent node's value and noise (:func:`hlvm.evaluate.evaluate_encoder`).
Results are raw numbers, one row per point x evaluation mask x latent node,
each row carrying the point's full configuration.

The package is split along its seams:

- :mod:`hlvm.sweep.grid`: :class:`SweepConfig` (axes, shared settings,
  validation) and :class:`SweepPoint`;
- :mod:`hlvm.sweep.store`: :class:`ResultsStore`, the append-only, crash-safe
  results of a sweep folder;
- :mod:`hlvm.sweep.engine`: :func:`run_sweep` and the :class:`Backend`
  protocol (the work of a point);
- :mod:`hlvm.sweep.backends`: where points run (:class:`Executor`: in this
  process, a process pool on this machine, or Ray);
- :mod:`hlvm.sweep.mae`: :class:`MAEBackend`, the work of a point
  (simulate, train, evaluate).
"""

from .backends import Executor, InlineExecutor, Outcome, PoolExecutor, RayExecutor
from .engine import Backend, SweepSummary, run_sweep
from .grid import KNOWN_OBJECTIVES, MASK_KINDS, POINT_COLUMNS, ROW_COLUMNS, SweepConfig, SweepPoint, load_sweep_config
from .mae import MAEBackend, eval_masks, rows_of
from .store import ResultsStore

__all__ = [
    "MASK_KINDS",
    "KNOWN_OBJECTIVES",
    "SweepConfig",
    "SweepPoint",
    "ResultsStore",
    "Backend",
    "Executor",
    "InlineExecutor",
    "PoolExecutor",
    "RayExecutor",
    "Outcome",
    "MAEBackend",
    "SweepSummary",
    "run_sweep",
    "load_sweep_config",
    "POINT_COLUMNS",
    "ROW_COLUMNS",
    "eval_masks",
    "rows_of",
]
