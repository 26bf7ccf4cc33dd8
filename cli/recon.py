"""``hlvm recon``: reconstruction metrics, feature effective rank, images and attention maps of a run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from hlvm.cli._common import console, user_errors


def recon(
    run: Annotated[Path, typer.Option(help="Run folder written by 'hlvm train' (holds checkpoint.pt).")],
    data: Annotated[str, typer.Option(help="imagefolder:PATH of validation images (evaluation transforms).")],
    out: Annotated[Path, typer.Option(help="Output folder: recon.json, reconstructions.png, attention.png.")],
    mask_ratio: Annotated[Optional[float], typer.Option(help="Mask ratio of the random evaluation masks; 0 reconstructs without masking (Kong et al. Fig. 5); default: the run's.")] = None,
    n_images: Annotated[int, typer.Option(help="Measure the first N images of the folder.")] = 64,
    n_saved: Annotated[int, typer.Option(help="Images drawn in the saved figures.")] = 8,
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 32,
    seed: Annotated[int, typer.Option(help="Seed of the evaluation masks.")] = 0,
    pool: Annotated[str, typer.Option(help="Feature for the effective rank: mean of patch tokens or cls.")] = "mean",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a non-empty --out.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as one JSON object.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """MSE, PSNR, SSIM, FSIM of MAE reconstructions (Kong et al., Fig. 5) and the features' effective rank."""
    with user_errors():
        from hlvm.recon import ReconConfig, run_recon

        cfg = ReconConfig(run=str(run), data=data, out=str(out), mask_ratio=mask_ratio, n_images=n_images,
                          n_saved=n_saved, batch_size=batch_size, seed=seed, pool=pool, overwrite=overwrite)
        s = run_recon(cfg, progress=not quiet)
    keys = ("n_images", "mask_ratio", "mask_unit", "mse", "psnr", "ssim", "fsim", "mse_masked", "effective_rank")
    if as_json:
        console.print(json.dumps({k: s[k] for k in keys}), markup=False, soft_wrap=True)
    else:
        console.print(
            f"{s['n_images']} images, mask ratio {s['mask_ratio']}, unit {s['mask_unit']}: "
            f"MSE {s['mse']:.5f}  PSNR {s['psnr']:.2f} dB  SSIM {s['ssim']:.4f}  FSIM {s['fsim']:.4f}  "
            f"(masked-pixel MSE {s['mse_masked']:.5f}); effective rank {s['effective_rank']:.2f} "
            f"of {s['feature_dim']}; written to {out}",
            markup=False,
        )
