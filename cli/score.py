"""``hlvm score``: a fixed, versioned identifiability suite run on any encoder; writes a scorecard beside every control."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from hlvm.cli._common import console, user_errors


def score(
    out: Annotated[Path, typer.Option(help="Folder for scorecard.json, scorecard.md and scorecard.png (required; new or empty).")],
    encoder: Annotated[Optional[str], typer.Option(help="MODULE:CALLABLE: CALLABLE() returns a torch.nn.Module or a function of a batch of visible images (B, C, H, W), masked pixels zeroed (and the (H, W) bool mask, if it takes a second argument), to codes (B, D). MODULE is imported from the current folder or PYTHONPATH.")] = None,
    run: Annotated[Optional[Path], typer.Option(help="A run folder of 'hlvm train' (its trained model's code; its untrained twin is a control).")] = None,
    timm: Annotated[Optional[str], typer.Option(help="A timm architecture built at the suite's image size and channels (num_classes=0: its pooled features).")] = None,
    checkpoint: Annotated[Optional[Path], typer.Option(help="Weights for --timm: a state dict, or a dict with 'model' or 'state_dict' (mae's checkpoints).")] = None,
    timm_options: Annotated[Optional[str], typer.Option(help="JSON of extra timm.create_model arguments for --timm, e.g. '{\"patch_size\": 2}'.")] = None,
    suite: Annotated[str, typer.Option(help="The suite (hlvm/scorecard/suites.py): v1, the default study's grid.")] = "v1",
    quick: Annotated[bool, typer.Option("--quick", help="The suite's smoke tier: 6 cells (ratios 0.25, 0.5, 0.75 at the largest unit, both mask kinds), 2 replicates of 300 samples; well under a minute.")] = False,
    device: Annotated[str, typer.Option(help="Device the encoder runs on: cpu or cuda.")] = "cpu",
    batch_size: Annotated[int, typer.Option(help="Images per encoder call.")] = 256,
    seed: Annotated[int, typer.Option(help="Seed of the replicates' samples and masks, the training images and the random projection.")] = 0,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a non-empty --out.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
) -> None:
    """Score an encoder on a frozen suite: R^2 of CA, the leak, selectivity and Theorem 2 per cell, beside every control of its width.

    Give exactly one of --encoder, --run, --timm. The same encoder, suite and
    seed give the same scorecard (byte for byte but for the time in its
    provenance). Nothing is written unless the whole suite ran.
    """
    with user_errors():
        from hlvm.errors import ConfigError
        from hlvm.io import check_out_dir, check_writable

        given = [name for name, v in (("--encoder", encoder), ("--run", run), ("--timm", timm)) if v is not None]
        if len(given) != 1:
            raise ConfigError("give exactly one encoder source: --encoder MODULE:CALLABLE, --run DIR or --timm NAME"
                              + (f" (got {', '.join(given)})" if given else ""))
        if checkpoint is not None and timm is None:
            raise ConfigError("--checkpoint goes with --timm")
        if timm_options is not None and timm is None:
            raise ConfigError("--timm-options goes with --timm")
        if device not in ("cpu", "cuda"):
            raise ConfigError(f"device must be cpu or cuda, got {device!r}")
        if batch_size < 1:
            raise ConfigError(f"batch size must be >= 1, got {batch_size}")
        if seed < 0:
            raise ConfigError(f"seed must be >= 0, got {seed}")
        check_writable(out)
        check_out_dir(out, overwrite)
        from hlvm.scorecard import from_object, from_run, from_timm, get_suite, load_callable, score as run_score, write_scorecard
        from hlvm.train import pick_device

        pick_device(device)  # CUDA asked for where there is none
        spec = get_suite(suite, quick=quick)
        c, h, _ = _image(spec)
        if encoder is not None:
            enc = from_object(load_callable(encoder), device=device, batch_size=batch_size, info={"encoder": encoder})
        elif run is not None:
            enc = from_run(run, device=device, batch_size=batch_size)
            if tuple(enc.info["img_size"]) != (h, h) or enc.info["in_chans"] != c:
                raise ConfigError(f"--run {run}: its model takes {enc.info['img_size'][0]}x{enc.info['img_size'][1]} images with "
                                  f"{enc.info['in_chans']} channels; suite {suite} has {h}x{h} with {c}")
        else:
            try:
                opts = json.loads(timm_options) if timm_options else {}
            except json.JSONDecodeError as e:
                raise ConfigError(f"--timm-options is not JSON: {e.msg}") from None
            if not isinstance(opts, dict):
                raise ConfigError("--timm-options must be a JSON object")
            enc = from_timm(timm, checkpoint, img_size=h, in_chans=c, device=device, batch_size=batch_size, options=opts)
        record = _run(run_score, enc, spec, seed, device, batch_size, quiet)
        path = write_scorecard(record, out, overwrite=overwrite)
    s = record["summary"]
    console.print(f"suite {record['suite']['name']} ({s['cells']} cells): Theorem 2 "
                  + ", ".join(f"{k} {v}" for k, v in s["theorem2"].items())
                  + f"; beats every control of its width in {s['beats_every_control_of_its_width']} of {s['cells']} cells"
                  + ("" if not s["explained_by"] else "; else explained by " + ", ".join(f"{k} ({v})" for k, v in s["explained_by"].items())))
    console.print(f"scorecard: {path}")


def _image(spec) -> tuple[int, int, int]:  # noqa: ANN001
    from hlvm.graphs import image_shape

    return image_shape(spec.simulate_config().build_graph())


def _run(run_score, enc, spec, seed: int, device: str, batch_size: int, quiet: bool):  # noqa: ANN001, ANN202
    if quiet:
        return run_score(enc, spec, seed=seed, device=device, batch_size=batch_size)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    cols = (TextColumn("[bold]score[/]"), BarColumn(), MofNCompleteColumn(), TextColumn("masks"), TimeElapsedColumn(),
            TextColumn("ETA"), TimeRemainingColumn())
    with Progress(*cols, console=console, transient=True) as bar:
        task = bar.add_task("masks", total=None)

        def on_mask(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        return run_score(enc, spec, seed=seed, device=device, batch_size=batch_size, on_mask=on_mask)
