"""``hlvm realmask`` and ``hlvm realmask-report``: the mask study on real images (hlvm/realmask/), and its report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hlvm.cli._common import console, err_console, user_errors


def realmask(
    out: Annotated[Path, typer.Option(help="Output folder.")],
    config: Annotated[Path, typer.Option(help="Study config (studies/fashion-mnist-mask/config.json is one).")],
    data: Annotated[str, typer.Option(help="'fashion-mnist' (Debian's idx files, installed if missing) or "
                                           "'imagefolder:PATH'.")] = "fashion-mnist",
    resume: Annotated[bool, typer.Option(help="Continue the study in --out (same config and data).")] = False,
    overwrite: Annotated[bool, typer.Option(help="Delete --out's study and start again.")] = False,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto (CUDA if available).")] = "cpu",
    workers: Annotated[int | None, typer.Option(help="Items done at once, each in its own process (default: one "
                                                     "per core on cpu, 1 on cuda).")] = None,
    threads: Annotated[int | None, typer.Option(help="Torch CPU threads per worker (default: the cores divided "
                                                     "among the workers).")] = None,
    install: Annotated[bool, typer.Option(help="Run apt-get for a missing Fashion-MNIST (--no-install: an "
                                               "error).")] = True,
    progress: Annotated[bool, typer.Option(help="A progress bar (--no-progress: a line per item).")] = True,
) -> None:
    """Train and measure one MAE per (mask ratio or unit, seed) on real images, with controls; --resume continues."""
    import os
    import signal

    with user_errors():
        from hlvm.realmask import study

        workers, threads = study.workers_and_threads(device, workers, threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        import torch

        torch.set_num_threads(threads)

        def term(signum: int, frame: object) -> None:
            raise KeyboardInterrupt  # SIGTERM stops the study as Ctrl-C does: finished work kept, training checkpointed

        old = signal.signal(signal.SIGTERM, term)
        try:
            study.run(config, out, data, resume=resume, overwrite=overwrite, device=device, workers=workers,
                      install=install, progress=progress, log=lambda m: print(m, flush=True))
        except KeyboardInterrupt:
            err_console.print(f"interrupted: finished work is kept in {out}; run the same command with --resume to "
                              "continue", markup=False)
            raise typer.Exit(code=130) from None
        finally:
            signal.signal(signal.SIGTERM, old)


def realmask_report(
    out: Annotated[Path, typer.Argument(help="A realmask study's folder (holding results.json).")],
) -> None:
    """Redraw a realmask study's report.md and figures from its results.json alone."""
    with user_errors():
        from hlvm.realmask.report import report_folder

        console.print(str(report_folder(out)), markup=False)
