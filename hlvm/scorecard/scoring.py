"""Score an encoder on a suite: every cell's identifiability numbers, beside every control of the encoder's width.

For each replicate of the suite (:mod:`hlvm.scorecard.suites`), fresh held-out
samples of the suite's process; for each cell (mask kind x ratio x unit) and
each of its masks, the encoder's code of the visible pixels is probed
(:func:`hlvm.evaluate.evaluate_encoder`), and so is every control on the same
samples, mask and probe split: ``pixels``, ``oracle`` (the true ``c``), and at
the encoder's own width ``pca``, ``random_projection`` and ``linear_mae``
(fitted on the suite's training images) and ``untrained`` where the
architecture is known. A cell's number for a replicate is the mean over its
masks; every estimate is the mean over replicates with its SE.

Per cell: R^2 of CA's noise, the leak R^2(s_mc), the selectivity (their
difference), the masked side's floor, each also from the linear probe; the
Theorem 2 verdict (:func:`hlvm.rules.theorem2`) where the code is exactly
``dim_c`` wide on every mask of the cell (else *not applicable*); and the
strongest control of the same width on selectivity
(:func:`hlvm.rules.against_controls`: *evidence about MAE training* only if
the encoder beats every one; the label keeps the rule's wording whatever
trained the encoder).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from hlvm import rules
from hlvm.errors import ConfigError

from .encoders import Encoder, from_object
from .suites import Suite, get_suite

__all__ = ["score", "FIGURES", "NOT_APPLICABLE"]

#: The per-cell figures of a scorecard and the summary keys of hlvm.evaluate they are means of.
FIGURES = {
    "r2_ca_noise": "r2_ca_noise",
    "r2_private_visible_noise": "r2_private_visible_noise",
    "selectivity": "selectivity",
    "r2_private_masked_noise": "r2_private_masked_noise",
    "r2_ca_noise_linear": "r2_ca_noise_linear",
    "r2_private_visible_noise_linear": "r2_private_visible_noise_linear",
    "selectivity_linear": "selectivity_linear",
    "code_width": "code_dim",
    "dim_c": "dim_c",
}
NOT_APPLICABLE = "not applicable"
_KIND_CODE = {"random": 0, "aligned": 1, "block": 2}


def _as_encoder(encoder: Any, device: str, batch_size: int) -> Encoder:
    if isinstance(encoder, Encoder):
        return encoder
    return from_object(encoder, device=device, batch_size=batch_size)


def score(
    encoder: Any,
    suite: str | Suite = "v1",
    *,
    seed: int = 0,
    quick: bool = False,
    device: str = "cpu",
    batch_size: int = 256,
    on_mask: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """The scorecard record of ``encoder`` on ``suite`` (module docstring); same inputs, same numbers.

    ``encoder``: a :class:`hlvm.scorecard.encoders.Encoder`, a ``torch.nn.Module``
    or a function of a batch of visible images (:mod:`hlvm.scorecard.encoders`).
    ``seed`` draws the replicates' samples and masks, the training images and
    the random projection. ``on_mask(done, total)`` is called after every
    mask (a progress bar).
    """
    from hlvm.controls import PixelMoments
    from hlvm.evaluate import control_encoder, evaluate_encoder
    from hlvm.io import provenance
    from hlvm.sweep.mae import eval_masks

    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch size must be a positive integer, got {batch_size!r}")
    suite = get_suite(suite, quick=quick) if isinstance(suite, str) else (suite.quick() if quick else suite)
    enc = _as_encoder(encoder, device, batch_size)
    sim = suite.simulator()
    graph = sim.graph
    moments = PixelMoments.of(sim.sample(suite.n_train, suite.rng(seed, 1)).images)
    cells = suite.cells()
    total, done = suite.replicates * len(cells) * suite.masks_per_kind, 0
    # per (cell, encoder) per replicate: {figure: mean over the cell's masks}
    per: dict[tuple, dict[str, dict[int, list[dict[str, float]]]]] = {}
    untrained = enc.untrained(seed) if enc.untrained is not None else None
    for r in range(suite.replicates):
        data = sim.sample(suite.n_eval, suite.rng(seed, 0, r))
        fixed = {"pixels": control_encoder("pixels", dataset=data, graph=graph),
                 "oracle": control_encoder("oracle", dataset=data, graph=graph)}
        for cell in cells:
            kind, ratio, unit = cell
            rng = suite.rng(seed, 2, r, _KIND_CODE[kind], unit, int(round(ratio * 1_000_000)))
            for mseed, mask in eval_masks(kind, suite.masks_per_kind, graph, ratio, unit, rng):
                res = evaluate_encoder(enc.encode, data, graph, mask, mseed)
                width = int(res.summary["code_dim"])
                encoders: dict[str, Any] = dict(fixed)
                for name in ("pca", "random_projection", "linear_mae"):
                    encoders[name] = control_encoder(name, dataset=data, graph=graph, width=width, seed=seed, moments=moments)
                if untrained is not None:
                    encoders["untrained"] = untrained
                results = {"encoder": res, **{k: evaluate_encoder(f, data, graph, mask, mseed) for k, f in encoders.items()}}
                for who, got in results.items():
                    per.setdefault(cell, {}).setdefault(who, {}).setdefault(r, []).append(
                        {k: float(got.summary[src]) for k, src in FIGURES.items()})
                done += 1
                if on_mask is not None:
                    on_mask(done, total)

    record_cells, controls = [], {}
    for cell in cells:
        row = _cell(cell, per[cell])
        record_cells.append(row)
        for who in per[cell]:
            if who != "encoder":
                controls.setdefault(who, []).append(_cell(cell, per[cell], who=who, with_against=False))
    summary = _summary(record_cells)
    return {
        "suite": {"name": suite.name, "config_hash": suite.config_hash(), **suite.to_dict()},
        "encoder": enc.info,
        "seed": seed,
        "strongest_control_measure": "selectivity",
        "rules": {"theorem2": f"R^2(CA) - t SE >= {rules.THEOREM2_CA} and leak + t SE <= {rules.THEOREM2_LEAK} (hlvm.rules.theorem2)",
                  "min_effect": rules.MIN_EFFECT},
        "summary": summary,
        "cells": record_cells,
        "controls": controls,
        "provenance": provenance({"suite": suite.to_dict(), "encoder": enc.info, "seed": seed}, argv=False),
    }


def _estimates(reps: dict[int, list[dict[str, float]]]) -> tuple[dict[str, dict[int, float]], dict[str, rules.Estimate]]:
    """Per figure: per replicate the mean over masks, and the estimate over replicates."""
    values = {k: {r: float(np.mean([m[k] for m in ms])) for r, ms in reps.items()} for k in FIGURES}
    return values, {k: rules.Estimate.of(v.values()) for k, v in values.items()}


def _num(x: float) -> float | None:
    return None if math.isnan(x) else round(float(x), 6)


def _cell(cell: tuple[str, float, int], per: dict[str, dict[int, list[dict[str, float]]]], *, who: str = "encoder",
          with_against: bool = True) -> dict[str, Any]:
    kind, ratio, unit = cell
    values, est = _estimates(per[who])
    dims = sorted({int(m["dim_c"]) for ms in per[who].values() for m in ms})
    widths = sorted({int(m["code_width"]) for ms in per[who].values() for m in ms})
    row: dict[str, Any] = {"mask_kind": kind, "mask_ratio": ratio, "mask_unit": unit,
                           "dim_c": dims[0] if len(dims) == 1 else None, "dim_c_min": dims[0], "dim_c_max": dims[-1],
                           "code_width": widths[0] if len(widths) == 1 else None, "n_replicates": est["selectivity"].n}
    for k in FIGURES:
        if k in ("code_width", "dim_c"):
            continue
        row[k] = _num(est[k].mean)
        row[f"{k}_se"] = _num(est[k].se)
    if len(dims) == 1 and widths == dims:
        row["verdict"] = rules.theorem2(est["r2_ca_noise"], est["r2_private_visible_noise"])
    else:
        what = f"{widths[0]}" if len(widths) == 1 else f"{widths[0]}-{widths[-1]}"
        dc = f"{dims[0]}" if len(dims) == 1 else f"{dims[0]}-{dims[-1]}"
        row["verdict"] = f"{NOT_APPLICABLE} (code {what} wide, dim_c {dc})"
    if with_against:
        mine = values["selectivity"]
        theirs = {c: _estimates(per[c])[0]["selectivity"] for c in rules.SAME_WIDTH if c in per}
        a = rules.against_controls(mine, theirs)
        row["strongest_control"] = {"control": a.control, "label": a.label, "d": _num(a.d.mean), "se": _num(a.d.se),
                                    "per_control": {k: _num(d.mean) for k, d in a.per_control.items()}}
    return row


def _summary(cells: list[dict[str, Any]]) -> dict[str, Any]:
    verdicts: dict[str, int] = {}
    for c in cells:
        v = c["verdict"].split(" (")[0]
        verdicts[v] = verdicts.get(v, 0) + 1
    beats = sum(c["strongest_control"]["label"] == rules.EVIDENCE_TRAINING for c in cells)
    who: dict[str, int] = {}
    for c in cells:
        if c["strongest_control"]["label"] != rules.EVIDENCE_TRAINING and c["strongest_control"]["control"]:
            who[c["strongest_control"]["control"]] = who.get(c["strongest_control"]["control"], 0) + 1
    return {"cells": len(cells), "theorem2": verdicts, "beats_every_control_of_its_width": beats,
            "explained_by": dict(sorted(who.items(), key=lambda kv: -kv[1]))}
