"""The whole study from its config file: check everything, load the data, do every item, write the report.

The order matters to the user: every check that needs no data comes first,
and nothing in ``out`` is written or deleted until the data have loaded (a
bad image or a missing dataset leaves an existing study as it was).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hlvm.errors import ConfigError


def workers_and_threads(device: str, workers: int | None, threads: int | None) -> tuple[int, int]:
    """Defaults: one worker per core on the CPU (1 on CUDA), the cores divided among the workers; both >= 1."""
    cores = os.cpu_count() or 1
    workers = (1 if device == "cuda" else cores) if workers is None else workers
    threads = max(1, cores // max(1, workers)) if threads is None else threads
    for name, v in (("workers", workers), ("threads", threads)):
        if v < 1:
            raise ConfigError(f"--{name} must be >= 1, got {v}")
    return workers, threads


def run(config: Path, out: Path, data: str = "fashion-mnist", *, resume: bool = False, overwrite: bool = False,
        device: str = "cpu", workers: int = 1, install: bool = True, progress: bool = True,
        log: Callable[[str], None] = print) -> dict[str, Any]:
    """Do (or continue, with ``resume``) the study ``config`` describes into ``out``; return its results.

    ``data`` is ``"fashion-mnist"`` (the config's idx files, installed with
    apt-get unless ``install`` is false) or ``"imagefolder:PATH"``.
    ``results.json``, ``report.md`` and the figures end up in ``out``.
    """
    import torch

    from hlvm.realmask import data as rdata
    from hlvm.realmask import grid, runner
    from hlvm.realmask.report import write_report
    from hlvm.train import pick_device

    cfg = grid.load_config(config)
    dev = pick_device(device)
    ds = cfg["dataset"]
    study = {"config": cfg, "data": data}
    runner.prepare_out(out, study, resume=resume, overwrite=overwrite)
    splits = rdata.load(data, source=Path(ds["source"]), package=ds["debian_package"],
                        in_chans=cfg["model"]["in_chans"], size=ds.get("source_size", 28),
                        test_fraction=ds.get("test_fraction", 0.2), seed=ds.get("split_seed", 0), install=install)
    study["data_counts"] = {"train": len(splits.train), "test": len(splits.test)}
    runner.open_out(out, study, overwrite=overwrite)
    n = len(grid.items(cfg))
    log(f"{splits.source}: {len(splits.train)} training and {len(splits.test)} test images; {n} items into "
        f"{out} on {dev}, {workers} worker(s) x {torch.get_num_threads()} thread(s)")
    results = runner.run_study(cfg, splits, out, device=dev, study=study, workers=workers, progress=progress)
    log(f"report: {write_report(results, out)}")
    return results
