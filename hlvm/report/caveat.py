"""The probe's caveat: one RBF length scale over every code dimension, and what that costs on the sweep's hierarchy.

:func:`probe_caveat` is the report's "The probe" section: :data:`PROBE_CAVEAT`
with the R^2(CA) of the true ``c`` alone beside the same with independent
noise dimensions appended (:func:`hlvm.evaluate.probe_dilution`), measured
now on the generating process that ``sweep.json`` describes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["PROBE_CAVEAT", "probe_caveat"]

PROBE_CAVEAT = (
    "The kernel probe uses one RBF length scale over all standardised code dimensions (chosen by leave-one-out "
    "from four multiples of the median heuristic), so dimensions that carry nothing dilute its distances. "
)


def probe_caveat(src: Path) -> str:
    """The caveat, with what dilution costs measured now on this sweep's own generating process."""
    try:
        got = _measure_dilution(json.loads((src / "sweep.json").read_text())["config"])
    except Exception:  # noqa: BLE001 - an old or foreign sweep.json: say so instead of measuring
        return PROBE_CAVEAT + "(No readable `sweep.json` here to measure what that costs on this hierarchy.)"
    return PROBE_CAVEAT + (
        f"Measured now on this sweep's hierarchy ({got['n']} held-out samples, mask `{got['mask']}`, c = "
        f"{got['c']}, dim_c {got['dim_c']}): the true c alone gives R^2(CA) {got['clean']:.3f} (linear probe "
        f"{got['lin_clean']:.3f}); with {got['extra']} independent noise dims appended, {got['diluted']:.3f} "
        f"(linear {got['lin_diluted']:.3f}). A wide code's R^2 can understate what it holds by about "
        f"{max(0.0, got['clean'] - got['diluted']):.2f} for this reason; the pixels control is wide too, which is "
        "why differences between encoders on the same samples, not absolute levels, carry the evidence."
    )


def _measure_dilution(config: dict[str, Any], extra: int = 60) -> dict[str, Any]:
    from hlvm.evaluate import probe_dilution
    from hlvm.locate import locate
    from hlvm.predict import figure4_masks
    from hlvm.sweep import SweepConfig
    from hlvm.sweep.mae import _sim_config

    import numpy as np

    from hlvm.simulate import Simulator

    cfg = SweepConfig.from_dict(config)
    sim_cfg = _sim_config(cfg, cfg.n_train)
    sim = Simulator.from_config(sim_cfg)
    n = min(cfg.n_eval, 1000)
    data = sim.sample(n, np.random.default_rng(0))
    masks = figure4_masks(sim.graph)
    name = "subtree_l1_less" if "subtree_l1_less" in masks else next(iter(masks))
    got = probe_dilution(data, sim.graph, masks[name], extra=extra, seed=0)
    loc = locate(sim.graph, masks[name])
    return {**got, "n": n, "mask": name, "c": ", ".join(loc.c), "dim_c": loc.dim_c, "extra": extra}
