"""``hlvm train``: train an MAE on simulated or real images (thin wrapper of :func:`hlvm.train.train`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from hlvm.cli._common import console, err_console, fail, user_errors


def train(
    ctx: typer.Context,
    model: Annotated[str, typer.Option(help="Model config name (hlvm.models.MODEL_CONFIGS): mlp, vit_small_synth, mae_vit_base_patch16, ...")] = "vit_small_synth",
    data: Annotated[str, typer.Option(help="A 'hlvm simulate' folder, 'online', 'online:simulate_config.json' or 'imagefolder:PATH'.")] = "online",
    preset: Annotated[Optional[str], typer.Option(help="Named recipe from hlvm.recipes (its values replace the defaults of the options it sets).")] = None,
    objective: Annotated[str, typer.Option(help="Training objective: mae, umae, mmae, mimae, cmim, or a preset (umae_official, mmae_official); see hlvm.objectives.")] = "mae",
    objective_coef: Annotated[Optional[list[str]], typer.Option(help="Objective option NAME=VALUE, repeatable: a number, true/false or a word (umae: coef, diagonal, feature, ddp_grad; mmae: coef, mu, centering, feature, ddp_grad; mimae: infonce, club, views, temperature, disjoint, club_hidden, club_side; cmim: contrast, recon_std).")] = None,
    mask_ratio: Annotated[float, typer.Option(help="Fraction of masking units masked per sample, in (0, 1).")] = 0.75,
    mask_kind: Annotated[str, typer.Option(help="Training masks: random (MAE's), aligned (whole hierarchy blocks, depth-first), block (BEiT's rectangles), complementary (half the batch twice, visible sets disjoint), variable (ratio +- --mask-spread per sample).")] = "random",
    mask_spread: Annotated[float, typer.Option(help="Half-width of the ratio range of --mask-kind variable.")] = 0.2,
    boundary_ignore: Annotated[int, typer.Option(help="Drop from the loss the masked pixels within K pixels (Chebyshev) of a visible one; 0 is MAE's loss.")] = 0,
    mask: Annotated[Optional[Path], typer.Option(help="A mask spec JSON (masked / grid / ratio form): train with this one fixed mask instead of random ones.")] = None,
    mask_unit: Annotated[Optional[int], typer.Option(help="Masking unit u in pixels (a multiple of the patch size); default: the model config's.")] = None,
    patch_size: Annotated[Optional[int], typer.Option(help="Token patch size p in pixels; default: the model config's.")] = None,
    bottleneck: Annotated[Optional[int], typer.Option(help="Width d of the bottleneck code c_hat; default: none (a wide latent).")] = None,
    img_size: Annotated[Optional[int], typer.Option(help="Image side in pixels for image folders; default: the model config's (simulated data set it themselves).")] = None,
    in_chans: Annotated[Optional[int], typer.Option(help="Image channels for image folders (1: grayscale, 3: RGB); default: the model config's.")] = None,
    norm_pix_loss: Annotated[Optional[bool], typer.Option("--norm-pix-loss/--no-norm-pix-loss", help="Regress per-patch normalised pixels; default: the model config's.")] = None,
    steps: Annotated[Optional[int], typer.Option(help="Optimizer steps (default 1000 unless --epochs is given).")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Epochs over a data folder, instead of --steps.")] = None,
    batch_size: Annotated[int, typer.Option(help="Images per process per micro-step.")] = 64,
    accum: Annotated[int, typer.Option(help="Micro-steps accumulated per optimizer step.")] = 1,
    blr: Annotated[float, typer.Option(help="Base learning rate; lr = blr * effective batch / 256.")] = 1.5e-4,
    warmup: Annotated[int, typer.Option(help="Warmup length in optimizer steps.")] = 100,
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay, as mae: none on norms and biases (1-D), the cls and mask tokens decayed.")] = 0.05,
    min_lr: Annotated[float, typer.Option(help="Floor of the cosine schedule.")] = 0.0,
    seed: Annotated[int, typer.Option(help="Seed of model init, masks and data order.")] = 0,
    ckpt_every: Annotated[int, typer.Option(help="Checkpoint every N steps (0: only at the end).")] = 500,
    log_every: Annotated[int, typer.Option(help="Write a metrics.jsonl row every N steps.")] = 10,
    compile: Annotated[bool, typer.Option("--compile", help="Wrap the model in torch.compile.")] = False,
    num_workers: Annotated[int, typer.Option(help="DataLoader workers (image folders).")] = 0,
    device: Annotated[str, typer.Option(help="auto (CUDA if available), cpu or cuda.")] = "auto",
    out: Annotated[Optional[Path], typer.Option(help="Run folder (default runs/train-<time>).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a non-empty --out.")] = False,
    resume: Annotated[Optional[Path], typer.Option(help="Continue the run in this folder from its checkpoint, with its saved config (other options are ignored, with a warning).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Train an MAE; writes config.json, checkpoint.pt and metrics.jsonl to the run folder. Runs under torchrun for DDP."""
    main = int(os.environ.get("RANK", "0")) == 0
    with user_errors():
        from hlvm import train as lib

        try:
            if resume is not None:
                ignored = [p.opts[0] for p in ctx.command.params if p.name not in ("resume", "quiet") and _given(ctx, p.name)]
                if ignored and main:
                    err_console.print(
                        f"warning: --resume continues the run with its saved config; ignoring {', '.join(ignored)}",
                        markup=False,
                    )
                run_dir = lib.resume(resume, progress=not quiet)
            else:
                values = dict(
                    model=model, data=data, objective=objective, mask_ratio=mask_ratio, mask_kind=mask_kind, mask_spread=mask_spread,
                    boundary_ignore=boundary_ignore, mask_unit=mask_unit,
                    patch_size=patch_size, bottleneck=bottleneck, norm_pix_loss=norm_pix_loss,
                    img_size=img_size, in_chans=in_chans,
                    steps=steps, epochs=epochs, batch_size=batch_size, accum=accum, blr=blr, warmup=warmup,
                    weight_decay=weight_decay, min_lr=min_lr, seed=seed, ckpt_every=ckpt_every,
                    log_every=log_every, compile=compile, num_workers=num_workers, device=device,
                    out=None if out is None else str(out), objective_coefs=None,
                )
                if objective_coef:
                    values["objective_coefs"] = _coefs(objective_coef)
                if mask is not None:
                    from hlvm.masks import load_spec

                    values["mask"] = load_spec(mask)
                given = {k for k in values if _given(ctx, k)} | ({"objective_coefs"} if objective_coef else set())
                if preset is not None:
                    values = _apply_preset(preset, values, given)
                if values["steps"] is None and values["epochs"] is None:
                    values["steps"] = 1000
                elif "steps" in given and "epochs" not in given:
                    values["epochs"] = None
                elif "epochs" in given and "steps" not in given:
                    values["steps"] = None
                cfg = lib.TrainConfig(**values)
                run_dir = lib.train(cfg, progress=not quiet, overwrite=overwrite)
        except lib.TrainingInterrupted as e:
            if main:
                err_console.print(f"{e}; continue with: hlvm train --resume {e.run_dir}", markup=False)
            raise typer.Exit(code=130) from None
    if main:
        console.print(f"trained: {run_dir}", markup=False)


def _coefs(items: list[str]) -> dict[str, object]:
    """``["coef=0.02", "views=3", "diagonal=true", "feature=cls"]`` -> ``{"coef": 0.02, "views": 3, ...}``.

    A value is an integer, a number, true/false, or else a word; the library
    checks it against what the objective takes.
    """
    out: dict[str, object] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name or not value:
            raise fail(f"--objective-coef must be NAME=VALUE, got {item!r}")
        out[name] = _value(value)
    return out


def _value(text: str) -> object:
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _given(ctx: typer.Context, name: str) -> bool:
    """Whether option ``name`` was set on the command line (not left at its default)."""
    # Compared by name: typer may ship its own copy of click's ParameterSource enum.
    source = ctx.get_parameter_source(name)
    return source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT")


def _apply_preset(name: str, values: dict, given: set[str]) -> dict:
    """The named recipe of ``hlvm.recipes`` under the options given on the command line."""
    try:
        from hlvm.recipes import get_preset
    except ImportError:
        raise fail("--preset needs hlvm.recipes, which is not available in this install") from None

    recipe = get_preset(name)
    preset = {"model": recipe.model, **dict(recipe.train)}
    unknown = sorted(set(preset) - set(values))
    if unknown:
        raise fail(f"preset {name!r} sets {unknown[0]!r}, which hlvm train does not know")
    out = {k: (v if k in given or k not in preset else preset[k]) for k, v in values.items()}
    # Options given on the command line refine the preset's objective; another objective drops them.
    if "objective_coefs" in given and preset.get("objective_coefs") and out["objective"] == preset.get("objective"):
        out["objective_coefs"] = {**preset["objective_coefs"], **values["objective_coefs"]}
    return out
