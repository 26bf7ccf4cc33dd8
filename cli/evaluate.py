"""``hlvm evaluate``: what a trained MAE recovers under one mask, beside Algorithm 1 (wraps :func:`hlvm.evaluate.evaluate_run`)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from hlvm.cli._common import console, user_errors

ROLE_ORDER = {"c": 0, "shared": 1, "private_masked": 2, "private_visible": 3, "detached": 4}


def _num(x: float | int, digits: int = 3) -> str:
    if isinstance(x, float):
        return "-" if math.isnan(x) else f"{x:.{digits}f}"
    return str(x)


def evaluate(
    run: Annotated[Path, typer.Option(help="A run folder written by 'hlvm train' (holds checkpoint.pt).")],
    mask: Annotated[Path, typer.Option(help="Mask spec JSON: {'masked': [...]}, {'grid': [[...]]} or {'ratio': r, 'patch_size': u, 'seed': s}.")],
    n: Annotated[int, typer.Option(help="Held-out samples to encode and probe (3/4 fit the probes, 1/4 score them).")] = 2000,
    seed: Annotated[int, typer.Option(help="Seed of the held-out samples and of the probes' split.")] = 0,
    batch_size: Annotated[int, typer.Option(help="Images per encoder forward pass.")] = 256,
    device: Annotated[str, typer.Option(help="Device of the encoder: cpu or cuda.")] = "cpu",
    control: Annotated[
        Optional[str],
        typer.Option(help="Score a control on the same samples and mask instead of the trained model: pixels (the visible pixels), untrained (the run's architecture at its seeded init), oracle (the true c), or a linear code of the run's width: pca (top principal components of the visible pixels, fitted on training images), random_projection (a seeded Gaussian map) or linear_mae (the optimal linear MAE for the mask)."),
    ] = None,
    width: Annotated[
        Optional[int], typer.Option(help="Code width of a linear control (pca, random_projection, linear_mae); default the run's code width.")
    ] = None,
    n_train: Annotated[int, typer.Option(help="Training images the pca and linear_mae controls are fitted on.")] = 20000,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object (summary, by_level, c, rows, meta) instead of tables.")] = False,
) -> None:
    """Encode the visible part of held-out samples under a fixed mask; report per latent node its role and R^2."""
    with user_errors():
        from hlvm.errors import ConfigError
        from hlvm.evaluate import evaluate_run, result_json

        if device not in ("cpu", "cuda"):
            raise ConfigError(f"device must be cpu or cuda, got {device!r}")
        from hlvm.train import pick_device

        pick_device(device)  # CUDA asked for where there is none: before the run is loaded and sampled
        if batch_size < 1:
            raise ConfigError(f"batch size must be >= 1, got {batch_size}")
        result = evaluate_run(run, mask, n=n, seed=seed, batch_size=batch_size, device=device, control=control,
                              width=width, n_train=n_train)
    if as_json:
        typer.echo(result_json(result))
        return

    s = result.summary
    who = "trained model" if control is None else f"control '{control}'"
    console.print(f"run {run} ({who})  mask {mask}  ({s['mask_ratio']:.3f} masked, unit {s['mask_unit']})")
    console.print(f"c = {{{', '.join(result.located.c)}}}  dim_c = {s['dim_c']}  code width = {s['code_dim']}")
    table = Table(title="Held-out R^2 per latent node (value, noise: max of linear and kernel probes)")
    for col in ("node", "level", "role", "dim", "value", "noise", "noise lin", "noise ker"):
        left = col in ("node", "role")
        table.add_column(col, justify="left" if left else "right", no_wrap=left)
    rows = sorted(result.rows, key=lambda r: (ROLE_ORDER.get(r["role"], 9), r["level"], r["node"]))
    for r in rows:
        table.add_row(
            r["node"], str(r["level"]), r["role"], str(r["dim"]),
            _num(r["r2_value"]), _num(r["r2_noise"]), _num(r["r2_noise_linear"]), _num(r["r2_noise_kernel"]),
        )  # fmt: skip
    console.print(table)
    summary = Table(title="Summary")
    summary.add_column("figure")
    summary.add_column("value", justify="right")
    summary.add_column("meaning")
    for key, meaning in (
        ("r2_ca_noise", "identifiability: CA noise recovered (should be high)"),
        ("r2_c_value", "values of c recovered"),
        ("r2_private_masked_noise", "floor: masked-side private noise (~0 for any encoder)"),
        ("r2_private_visible_noise", "leak: visible-side private noise (~0 only for a dim_c bottleneck)"),
        ("r2_ca_noise_linear", "the same CA noise from the linear probe alone (linear accessibility)"),
        ("r2_private_visible_noise_linear", "leak from the linear probe alone"),
        ("selectivity", "R^2(CA) - leak: ~1 for Theorem 2's dim_c code, ~0 for the raw pixels"),
        ("agreement", "held CA - held s_m - held s_mc: 1 = the true c; 0 = noise, or the raw pixels"),
        ("agreement_ca_vs_masked", "held CA - held s_m (asks for no bottleneck)"),
        ("cca_c", "CCA with c over dim_c correlations (only when code width <= 2 dim_c)"),
        ("effective_rank", "effective rank of the code"),
    ):
        summary.add_row(key, _num(s[key]), meaning)
    console.print(summary)
