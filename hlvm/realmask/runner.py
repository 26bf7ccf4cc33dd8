"""The study's runner: the output folder, resuming, worker processes, the progress bar, and results.json.

Work is a list of *items*, each committed on its own: the raw-pixel probe,
the PCA control, the untrained encoder of each seed, and one training run per (grid point,
seed). An item is done when its ``result.json`` exists (written atomically,
last); a run killed mid-training continues from its checkpoint, one killed
while being measured is measured again from its saved weights. Seeds are
taken in order (every item of seed 0, then seed 1, ...), so a study stopped
early has whole seeds. After each item ``results.json`` is rebuilt from
every finished item, so a partial study can be reported. The items and
the config they come from are :mod:`hlvm.realmask.grid`'s.

Output folder::

    OUT/study.json                   the resolved config and data source (a resumed study must match it)
    OUT/pixels/result.json           raw-pixel probe
    OUT/pca/result.json              PCA control (eval.pca), as wide as the encoder
    OUT/untrained-s{seed}/result.json
    OUT/runs/{run}-s{seed}/          checkpoint.pt while training; model.pt and result.json when done
    OUT/results.json                 every number (top level: probe_top1 per run, baselines)
    OUT/report.md, OUT/*.png         written from results.json alone (hlvm/realmask/report.py)
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from hlvm.errors import ConfigError
from hlvm.io import provenance, read_json, write_json
from hlvm.realmask.grid import Item, cost, items, model_config

STUDY = "study.json"
RESULT = "result.json"
RESULTS = "results.json"


# --- the output folder -----------------------------------------------------------------------


def prepare_out(out: Path, study: dict[str, Any], *, resume: bool, overwrite: bool) -> None:
    """Check ``out`` against the flags, before any data are loaded or anything is written.

    A non-empty ``out`` needs ``resume`` (same config and data) or
    ``overwrite``; it is only emptied later, by :func:`open_out`, once the
    data have loaded.
    """
    from hlvm.io import check_writable

    if resume and overwrite:
        raise ConfigError("give --resume or --overwrite, not both")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a folder")
    check_writable(out)
    if not (out.is_dir() and any(out.iterdir())):
        return
    if overwrite:
        return
    if not resume:
        raise ConfigError(f"--out {out} exists; pass --resume to continue that study or --overwrite to start it again")
    saved_path = out / STUDY
    if not saved_path.is_file():
        raise ConfigError(f"--out {out} is not a study folder (no {STUDY}); give another --out or --overwrite")
    saved = read_json(saved_path, "study record", ConfigError)
    for key in ("config", "data"):
        if saved.get(key) != study[key]:
            diff = _first_difference(saved.get(key), study[key], key)
            raise ConfigError(f"--out {out} was started with another {key} ({diff}); use --overwrite or another --out")


def _first_difference(a: Any, b: Any, path: str) -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                return _first_difference(a.get(k), b.get(k), f"{path}.{k}")
    return f"{path}: {a!r} there, {b!r} now"


def open_out(out: Path, study: dict[str, Any], *, overwrite: bool) -> None:
    if overwrite and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    if not (out / STUDY).is_file():
        write_json(out / STUDY, {**study, "provenance": provenance()})


def done(out: Path, item: Item) -> dict[str, Any] | None:
    path = out / item.folder / RESULT
    return json.loads(path.read_text()) if path.is_file() else None


# --- doing an item ---------------------------------------------------------------------------


def heldout_batch(cfg: dict[str, Any], test: Any, size: int) -> Any:
    """The run's held-out batch (``train.heldout_n`` test images, evenly spread, eval view), or None if not asked for.

    Test images: training never sees them, and no choice is made on the
    probe's numbers from this loss (it only reports how far training went).
    """
    from hlvm.data import eval_resize
    from hlvm.realmask.measure import recon_subset
    from hlvm.realmask.pretrain import HeldOut

    tr = cfg["train"]
    if not tr.get("heldout_every", 0):
        return None
    idx = recon_subset(test, tr["heldout_n"])
    images = eval_resize(test.images[idx], size, crop_fraction=cfg["eval"]["crop_fraction"])
    return HeldOut(images, tr["heldout_every"])


def do_item(item: Item, cfg: dict[str, Any], splits: Any, out: Path, device: torch.device,
            advance: Callable[[str, float], None], should_stop: Callable[[], bool] | None = None) -> dict[str, Any]:
    """Train (runs) and measure one item; commit its ``result.json``; return it.

    ``advance(phase, units)`` reports progress in :func:`cost`'s units;
    ``should_stop()`` true stops training at the next step (checkpointed) and
    measuring at the next batch of features (redone on resume).
    """
    from hlvm.realmask import measure
    from hlvm.realmask.pretrain import MODEL, RunSpec, load_trained, train_run
    from hlvm.train import init_model

    ev, tr = cfg["eval"], cfg["train"]
    folder = out / item.folder
    folder.mkdir(parents=True, exist_ok=True)
    mcfg = model_config(cfg, item.mask_unit or cfg["grid"]["mask_ratios_at_unit"]["unit"])
    size = mcfg.img_hw[0]
    c = cost(item, cfg, len(splits.train), len(splits.test))
    n_all = len(splits.train) + len(splits.test)
    t0, c0 = time.time(), time.process_time()
    row: dict[str, Any] = {"kind": item.kind, "run": item.name, "seed": item.seed}
    if item.kind == "pixels":
        p = measure.pixel_probe(splits.train, splits.test, ev, size)
        advance("eval", c["eval"])
        row.update(probe_top1=p["top1"], probe_train_top1=p["train_top1"])
    elif item.kind == "pca":
        p = measure.pca_probe(splits.train, splits.test, ev, size, mcfg.embed_dim)
        advance("eval", c["eval"])
        row.update(probe_top1=p["top1"], probe_train_top1=p["train_top1"], width=p["width"],
                   explained_variance=p["explained_variance"])
    else:
        train_s = train_cpu = 0.0
        feat_units = c["eval"] * 0.5 / n_all  # about half of an evaluation is the feature pass
        heldout_log: list = []
        if item.kind == "untrained":
            model = init_model(mcfg, item.seed).to(device).eval()
            losses: list = []
        else:
            row.update(mask_ratio=item.mask_ratio, mask_unit=item.mask_unit, patch_size=mcfg.patch_size)
            spec = RunSpec(item.name, item.mask_ratio, item.mask_unit, item.seed, tr["steps"], tr["batch_size"],
                           tr["blr"], tr["warmup"], tr["weight_decay"], tr.get("min_lr", 0.0))
            if (folder / MODEL).is_file():
                model, losses, heldout_log = load_trained(folder, device)
                advance("train", c["train"] * spec.steps)
            else:
                from hlvm.realmask.pretrain import CHECKPOINT

                if (folder / CHECKPOINT).is_file():
                    step0 = int(torch.load(folder / CHECKPOINT, map_location="cpu", weights_only=False)["step"])
                    advance("train", c["train"] * step0)
                held = heldout_batch(cfg, splits.test, size)
                model, losses = train_run(spec, mcfg, splits.train, folder, device=device,
                                          ckpt_every=tr.get("ckpt_every", 200),
                                          on_step=lambda s: advance("train", c["train"]), should_stop=should_stop,
                                          heldout=held)
                heldout_log = held.log if held is not None else []
            train_s, train_cpu = time.time() - t0, time.process_time() - c0
            row.update(steps=spec.steps, batch_size=spec.batch_size, lr=spec.lr,
                       final_loss=float(sum(v for _, v in losses[-2:]) / max(1, len(losses[-2:]))))
            if heldout_log:
                row.update(heldout_losses=heldout_log, final_heldout_loss=float(heldout_log[-1][1]))
        def on_batch(b: int) -> None:
            advance("eval", feat_units * b)
            if should_stop is not None and should_stop():
                raise KeyboardInterrupt  # nothing of the measurement is kept; the trained weights are

        row.update(measure.encoder_row(model, splits.train, splits.test, ev, size, device=device, on_batch=on_batch))
        rec, examples = measure.recon_row(model, splits.test, ev, size, item.mask_ratio,
                                          n_examples=ev["n_examples"])
        row.update(rec)
        advance("eval", c["eval"] * 0.5)
        row.update(losses=losses, train_seconds=train_s, train_cpu_seconds=train_cpu, examples=examples)
    row.update(seconds=time.time() - t0, cpu_seconds=time.process_time() - c0, load_average=list(os.getloadavg()),
               device=str(device), threads=torch.get_num_threads())
    write_json(folder / RESULT, row)  # the commit: from here on the item is done
    return row


# --- results.json ------------------------------------------------------------------------------


def collect(out: Path, cfg: dict[str, Any], study: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``results.json`` from every finished item (module docstring); the figures need nothing else."""
    todo = items(cfg)
    finished = {(i.kind, i.name, i.seed): r for i in todo if (r := done(out, i)) is not None}
    runs = [r for (k, _, _), r in finished.items() if k == "run"]
    untrained = [r for (k, _, _), r in finished.items() if k == "untrained"]
    pix = finished.get(("pixels", "pixels", None))
    pca = finished.get(("pca", "pca", None))
    probe_top1: dict[str, dict[str, dict[str, float]]] = {}
    for r in runs:
        for pool in ("mean", "cls"):
            probe_top1.setdefault(r["run"], {}).setdefault(pool, {})[str(r["seed"])] = r[f"probe_top1_{pool}"]
    seed0 = cfg["grid"]["seeds"][0]
    examples = {r["run"]: r["examples"] for r in runs if r["seed"] == seed0}
    examples.update({"untrained": r["examples"] for r in untrained if r["seed"] == seed0})
    strip = lambda r: {k: v for k, v in r.items() if k != "examples"}  # noqa: E731
    return {
        "probe_top1": probe_top1,
        "baselines": {
            "pixels": pix["probe_top1"] if pix else None,
            "pca": pca["probe_top1"] if pca else None,
            "untrained": {pool: {str(r["seed"]): r[f"probe_top1_{pool}"] for r in untrained} for pool in ("mean", "cls")},
        },
        "complete": len(finished) == len(todo),
        "items_done": len(finished),
        "items_total": len(todo),
        "runs": [strip(r) for r in sorted(runs, key=lambda r: (r["seed"], r["run"]))],
        "untrained": [strip(r) for r in sorted(untrained, key=lambda r: r["seed"])],
        "pixels": pix,
        "pca": pca,
        "examples": examples,
        "config": cfg,
        "data": study["data"],
        **extra,
        "provenance": provenance(),
    }


# --- the whole study -------------------------------------------------------------------------

_WORKER: dict[str, Any] = {}


def _worker_init(cfg: dict[str, Any], splits: Any, out: str, device: str, threads: int, queue: Any, stop: Any) -> None:
    import signal

    # Ctrl-C reaches every process of the terminal's group; the parent alone decides, through ``stop``.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)
    _WORKER.update(cfg=cfg, splits=splits, out=Path(out), device=torch.device(device), queue=queue, stop=stop)


def _worker_do(k: int, item: Item) -> dict[str, Any]:
    w = _WORKER
    return do_item(item, w["cfg"], w["splits"], w["out"], w["device"],
                   lambda phase, units: w["queue"].put((k, units)), should_stop=w["stop"].is_set)


def run_study(cfg: dict[str, Any], splits: Any, out: Path, *, device: torch.device, study: dict[str, Any],
              workers: int = 1, progress: bool = True, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Do every unfinished item, committing each; rebuild ``results.json`` after each; return it.

    ``workers > 1`` runs that many items at once in worker processes (each
    with the current process's torch thread count): on a CPU, two one-thread
    workers do a small ViT's work about twice as fast as one process with two
    threads, and far faster when the machine is shared (module README).
    Ctrl-C or SIGTERM stops every worker at its next training step
    (checkpointed) and raises KeyboardInterrupt once they have.
    """
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    todo = items(cfg)
    n_tr, n_te = len(splits.train), len(splits.test)
    costs = {i: cost(i, cfg, n_tr, n_te) for i in todo}
    total_units = {i: costs[i]["train"] * (cfg["train"]["steps"] if i.kind == "run" else 0) + costs[i]["eval"]
                   for i in todo}
    pending = [i for i in todo if done(out, i) is None]
    t_start = time.time()
    extra = {"timing": {"started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t_start)),
                        "device": str(device), "threads": torch.get_num_threads(), "workers": workers}}
    results = collect(out, cfg, study, extra)
    write_json(out / RESULTS, results)
    if not pending:
        log(f"all {len(todo)} items of {out} are done")
        return results
    grand = sum(total_units[i] for i in pending)
    advanced = [0.0] * len(pending)  # units reported so far, per pending item
    bar = Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn(),
                   TextColumn("ETA"), TimeRemainingColumn(), disable=not progress, transient=False)

    def label(item: Item) -> str:
        return f"untrained seed {item.seed}" if item.kind == "untrained" else (
            item.name if item.seed is None else f"{item.name} seed {item.seed}")

    with bar:
        task = bar.add_task("study", total=grand)

        def advance(k: int, units: float) -> None:
            # An item never counts for more than its estimate until it is done.
            units = min(units, total_units[pending[k]] - advanced[k])
            advanced[k] += units
            bar.update(task, completed=min(sum(advanced), grand))

        n_done = 0

        def finished(k: int, row: dict[str, Any]) -> None:
            nonlocal results, n_done
            n_done += 1
            item = pending[k]
            advanced[k] = total_units[item]
            bar.update(task, completed=min(sum(advanced), grand))
            elapsed = time.time() - t_start
            frac = sum(advanced) / grand
            eta = elapsed * (1 - frac) / frac if frac else math.nan
            top = row.get("probe_top1_mean", row.get("probe_top1"))
            msg = f"[{n_done}/{len(pending)}] {label(item)}: probe top-1 {100 * top:.2f}%"
            if item.kind == "run":
                msg += f", trained {row['train_seconds']:.0f} s"
            msg += f", {row['seconds']:.0f} s in all; elapsed {elapsed / 60:.1f} min, ETA {eta / 60:.1f} min"
            bar.console.print(msg, soft_wrap=True) if progress else log(msg)
            extra["timing"]["seconds_this_call"] = time.time() - t_start
            results = collect(out, cfg, study, extra)
            write_json(out / RESULTS, results)

        if workers <= 1:
            for k, item in enumerate(pending):
                bar.update(task, description=f"[{k + 1}/{len(pending)}] {label(item)}")
                finished(k, do_item(item, cfg, splits, out, device, lambda phase, u, k=k: advance(k, u)))
        else:
            _run_pool(pending, cfg, splits, out, device, workers, advance, finished, bar, task)
    return results


def _run_pool(pending: list[Item], cfg: dict[str, Any], splits: Any, out: Path, device: torch.device, workers: int,
              advance: Callable[[int, float], None], finished: Callable[[int, dict[str, Any]], None], bar: Any,
              task: Any) -> None:
    import multiprocessing as mp
    import queue as queue_mod
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    ctx = mp.get_context("spawn")  # no forked copies of torch's thread pools
    q, stop = ctx.Queue(), ctx.Event()
    ex = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init,
                             initargs=(cfg, splits, str(out), str(device), torch.get_num_threads(), q, stop))
    futures = {ex.submit(_worker_do, k, item): k for k, item in enumerate(pending)}
    running = set(futures)

    def drain() -> None:
        while True:
            try:
                k, units = q.get_nowait()
            except queue_mod.Empty:
                return
            advance(k, units)

    try:
        while running:
            ready, running = wait(running, timeout=0.5, return_when=FIRST_COMPLETED)
            drain()
            for f in sorted(ready, key=lambda f: futures[f]):
                finished(futures[f], f.result())  # a worker's error is raised here
            active = sorted(futures[f] for f in running if f.running())
            if active:
                bar.update(task, description="running " + ", ".join(
                    f"{pending[k].name}" + (f" s{pending[k].seed}" if pending[k].seed is not None else "")
                    for k in active))
    except BaseException:
        stop.set()  # every worker stops at its next step (checkpointed) or feature batch
        for f in running:
            f.cancel()
        wait([f for f in running if not f.cancelled()])
        raise
    finally:
        ex.shutdown(wait=True, cancel_futures=True)
