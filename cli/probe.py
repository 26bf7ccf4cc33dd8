"""``hlvm probe``: linear-probe top-1 of a trained run's frozen encoder (thin wrapper of :func:`hlvm.probe.probe_run`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from hlvm.cli._common import console, user_errors


def probe(
    run: Annotated[Path, typer.Option(help="Run folder written by 'hlvm train' (holds checkpoint.pt).")],
    data: Annotated[str, typer.Option(help="imagefolder:PATH; PATH/train and PATH/val if both exist, else a held-out split of PATH.")],
    method: Annotated[str, typer.Option(help="lbfgs (full batch, small data), lars (MAE's recipe, large runs) or sgd.")] = "lbfgs",
    pool: Annotated[str, typer.Option(help="Feature: cls token or mean of the patch tokens.")] = "cls",
    epochs: Annotated[int, typer.Option(help="Epochs (lars/sgd).")] = 90,
    batch: Annotated[int, typer.Option(help="Probe batch size (lars/sgd); lr = blr * batch / 256.")] = 256,
    blr: Annotated[float, typer.Option(help="Base learning rate (lars/sgd).")] = 0.1,
    l2: Annotated[float, typer.Option(help="L2 penalty on the weights (lbfgs).")] = 1e-4,
    test_fraction: Annotated[float, typer.Option(help="Held-out share per class when PATH has no train/val split.")] = 0.2,
    seed: Annotated[int, typer.Option(help="Seed of the split and the probe's initialisation.")] = 0,
    batch_size: Annotated[int, typer.Option(help="Images per forward pass when extracting features.")] = 64,
    num_workers: Annotated[int, typer.Option(help="DataLoader workers for feature extraction.")] = 0,
    out: Annotated[Optional[Path], typer.Option(help="Also write the result as JSON to this file (missing folders are made).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as one JSON object.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Linear probing as MAE does it (BatchNorm without affine, then Linear); prints top-1 on the held-out split."""
    with user_errors():
        from hlvm.io import check_writable
        from hlvm.probe import ProbeConfig, probe_run

        if out is not None:
            check_writable(out, kind="file")  # before the work: features and the probe's fit take minutes
        cfg = ProbeConfig(method=method, pool=pool, epochs=epochs, batch=batch, blr=blr, l2=l2,  # type: ignore[arg-type]
                          warmup_epochs=min(10, epochs), test_fraction=test_fraction, seed=seed)
        result = probe_run(run, data, cfg, batch_size=batch_size, num_workers=num_workers, progress=not quiet)
        record = {"run": str(run), "data": data, **result.to_dict()}
        if out is not None:
            from hlvm.io import provenance, write_json

            out.parent.mkdir(parents=True, exist_ok=True)
            write_json(out, {**record, "provenance": provenance()})
    if as_json:
        console.print(json.dumps(record), markup=False, soft_wrap=True)
    else:
        console.print(
            f"top-1 {100 * result.top1:.2f}% on {result.n_test} held-out images "
            f"(train {100 * result.train_top1:.2f}% on {result.n_train}; {result.n_features} features, "
            f"{result.n_classes} classes, {cfg.method}, {cfg.pool} pool)",
            markup=False,
        )
