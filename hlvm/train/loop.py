"""The training loop: :func:`train`, :func:`resume`, and what a stopped run leaves behind."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from hlvm.errors import ConfigError, HlvmError
from hlvm.io import provenance, write_json

from . import optim
from .config import CHECKPOINT, CONFIG, LOSS_PLOT, METRICS, TrainConfig
from .data import DataStream, _open_imagefolder, absolute_data, fixed_training_mask, open_data
from .distributed import _init_distributed, mask_generator, pick_device
from .heldout import _HeldOut
from .logs import _logged_step, _tensorboard, _truncate_metrics, plot_run
from .masker import _masker
from .model import init_model, resolve_model_config
from .state import _RESUME_KEYS, _atomic_save, _read_checkpoint, _rng_state, _set_rng_state



StepCallback = Callable[[int, dict[str, Any]], None]


class TrainingDiverged(HlvmError):
    """The loss became NaN or infinite: one line saying where, and what was kept of the run."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training: a checkpoint of ``step`` was written to ``run_dir`` first."""

    def __init__(self, run_dir: Path, step: int):
        super().__init__(f"interrupted at step {step}; checkpoint saved in {run_dir}")
        self.run_dir, self.step = run_dir, step


class _StopFlag:
    """SIGINT or SIGTERM sets the flag; the loop saves a checkpoint at the next step boundary, then stops.

    A second Ctrl-C interrupts at once, unless it comes within ``grace``
    seconds of the first: torchrun forwards the terminal's Ctrl-C to workers
    that already received it, and that echo must not cost the checkpoint.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, grace: float = 2.0) -> None:
        self.set = False
        self.grace = grace
        self._first = 0.0
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _StopFlag:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._old[sig] = signal.getsignal(sig)
                signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        now = time.monotonic()
        if self.set and signum == signal.SIGINT and now - self._first > self.grace:
            raise KeyboardInterrupt
        if not self.set:
            self.set, self._first = True, now

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _progress(enabled: bool) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold]train"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TextColumn("{task.fields[ips]:.0f} img/s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not enabled,
        transient=False,
    )


def train(
    cfg: TrainConfig,
    progress: bool = True,
    *,
    resume: bool = False,
    overwrite: bool = False,
    on_step: StepCallback | None = None,
) -> Path:
    """Train the MAE ``cfg`` describes; return the run folder.

    With ``resume`` the run in ``cfg.out`` continues from its checkpoint, and on
    CPU the result is bit-for-bit that of an uninterrupted run. Ctrl-C (SIGINT)
    or SIGTERM finishes the current step, writes a checkpoint, and raises
    :class:`TrainingInterrupted` (a ``KeyboardInterrupt``). With ``overwrite``
    a non-empty ``cfg.out`` is reused (its run files replaced).
    ``on_step(step, info)`` is called on every rank after each optimizer step (``info`` holds this rank's ``loss`` and loss
    ``parts``, the ``lr``, the last micro-batch ``batch`` and its model
    ``output``, and the unwrapped ``model``).

    Bad input raises an :class:`HlvmError` before anything is written; so does a second train into the same ``out``
    while one runs (:func:`hlvm.io.output_lock`).
    """
    if cfg.out is None:
        from hlvm.io import new_run_dir

        cfg = dataclasses.replace(cfg, out=str(new_run_dir("runs", "train")))
    run_dir = Path(cfg.out)  # type: ignore[arg-type]
    ckpt = None
    if resume:
        ckpt = _read_checkpoint(run_dir, _RESUME_KEYS)
        saved = TrainConfig.from_dict(ckpt["config"]["train"])
        # The saved config is the run; only where it lives may differ (a moved folder).
        cfg = dataclasses.replace(saved, out=str(run_dir))
    elif run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())) and not overwrite:
        raise ConfigError(f"--out {run_dir} exists and is not empty; pass --resume {run_dir} to continue it")
    else:  # the run records where its data are from anywhere: `hlvm evaluate --run` may run in another folder
        cfg = dataclasses.replace(cfg, data=absolute_data(cfg.data))
    from hlvm.io import check_writable

    check_writable(run_dir)  # a file in the path, a read-only folder: before the data are opened
    if int(os.environ.get("RANK", 0)) != 0:  # distributed: rank 0 holds the run's lock for all ranks
        return _train_checked(cfg, run_dir, ckpt, progress, on_step)
    from hlvm.io import output_lock

    with output_lock(run_dir, "train"):  # a second train into one --out is refused, not silently mixed in
        return _train_checked(cfg, run_dir, ckpt, progress, on_step)


def _train_checked(cfg: TrainConfig, run_dir: Path, ckpt: Any, progress: bool, on_step: StepCallback | None) -> Path:
    from hlvm.objectives import build_objective

    # Everything that can be wrong with the input is found before the first write.
    src = open_data(cfg.data)
    if cfg.epochs is not None and src.kind == "online":
        raise ConfigError("online data has no epochs; give --steps (or a data folder)")
    mcfg = resolve_model_config(cfg, src.shape)
    if src.kind == "dataset":
        _open_imagefolder(src, mcfg.img_hw[0], mcfg.in_chans)
    from hlvm.masks import num_masked

    fixed_mask = fixed_training_mask(cfg.mask, src, mcfg) if cfg.mask is not None else None
    if fixed_mask is None:
        try:
            num_masked(mcfg.num_units, cfg.mask_ratio)
        except HlvmError as e:
            raise ConfigError(str(e)) from None
    objective = build_objective(cfg.objective, **(cfg.objective_coefs or {}))
    masker = _masker(cfg, mcfg, src, fixed_mask, objective)
    if cfg.heldout_every and src.kind == "dataset":
        raise ConfigError("heldout_every needs simulated data (a held-out batch from its simulator); image folders have none")

    device = pick_device(cfg.device, int(os.environ.get("LOCAL_RANK", 0)))
    dd = _init_distributed(device)
    try:
        return _train_loop(cfg, mcfg, src, objective, masker, device, dd, ckpt, progress, on_step)
    finally:
        if dd.owns_group:
            dist.destroy_process_group()


def _train_loop(cfg, mcfg, src, objective, masker, device, dd, ckpt, progress, on_step) -> Path:  # noqa: ANN001
    run_dir = Path(cfg.out)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    stream = DataStream(src, cfg.batch_size, rank=dd.rank, world=dd.world, seed=cfg.seed, num_workers=cfg.num_workers)
    total = cfg.steps if cfg.steps is not None else cfg.epochs * math.ceil(stream.batches_per_epoch() / cfg.accum)
    peak_lr = cfg.lr(dd.world)

    # Same init on every rank (DDP also broadcasts rank 0's weights).
    model = init_model(mcfg, cfg.seed)
    # The objective's own networks (MI-MAE's CLUB approximation) come after the model's weights, so
    # those are the untrained control's; they train in the same optimizer and live in its state dict.
    objective.attach(model)
    model = model.to(device)
    if ckpt is None:
        groups = optim.param_groups(model, cfg.weight_decay)
    else:
        groups = optim._resumed_param_groups(model, cfg.weight_decay, ckpt["optimizer"])
    optimizer = torch.optim.AdamW(groups, lr=peak_lr, betas=(0.9, 0.95))
    mask_gen = mask_generator(cfg.seed, dd.rank)

    start = 0
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        start = int(ckpt["step"])
        if len(ckpt["rng"]) != dd.world:
            raise ConfigError(
                f"checkpoint was written by {len(ckpt['rng'])} process(es); resume it with the same number, not {dd.world}"
            )
        _set_rng_state(ckpt["rng"][dd.rank], mask_gen, stream)

    full_config = {"train": cfg.to_dict(), "model": mcfg.to_dict()}
    created = not run_dir.exists()
    if dd.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        info = {
            **full_config,
            "world_size": dd.world,
            "effective_batch": cfg.effective_batch(dd.world),
            "lr": peak_lr,
            "total_steps": total,
            "device": str(device),
            "provenance": provenance(),
        }
        if ckpt is None:
            for path in _run_files(run_dir):  # an overwritten run's files must not leak into this one
                path.unlink(missing_ok=True)
            write_json(run_dir / CONFIG, info)
        else:
            _truncate_metrics(run_dir / METRICS, start, keep_last=_logged_step(start, cfg, total))

    fwd: nn.Module = model
    if dd.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        fwd = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        fwd = torch.compile(fwd)
    def autocast() -> Any:
        # A fresh context per micro-step; bf16 on CUDA only, so CPU runs stay fp32 and bit-exact.
        return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()


    def save(step: int) -> None:
        states = _rng_state(mask_gen, stream)
        if dd.world > 1:
            gathered: list[Any] = [None] * dd.world
            dist.all_gather_object(gathered, states)
            states_all = gathered
        else:
            states_all = [states]
        if dd.main:
            _atomic_save(
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scaler": None,  # bf16 autocast needs no loss scaling
                    "step": step,
                    "total_steps": total,
                    # the run folder is where the checkpoint lies, not in it: one run into two folders, same bytes
                    "config": {**full_config, "train": {**full_config["train"], "out": None}},
                    "rng": states_all,
                },
                run_dir / CHECKPOINT,
            )

    heldout = _HeldOut(cfg, masker, device) if (cfg.heldout_every and dd.main) else None
    step = start
    metrics_file = open(run_dir / METRICS, "a") if dd.main else None  # noqa: SIM115 - closed in finally
    # A resumed run's events past its checkpoint are purged, as its metrics rows are.
    purge = start + 1 if _logged_step(start, cfg, total) else start
    tb = _tensorboard(run_dir, None if ckpt is None else purge) if dd.main else None
    bar_cm = _progress(progress and dd.main)
    # numpy's and Python's global generators are set last, once every lazy import is done: importing rich
    # draws from `random`, so a run that imports it after the seed would save another state than one that
    # had it imported already, and identical runs would write different checkpoints.
    if ckpt is None:
        np.random.seed(cfg.seed)
        random.seed(cfg.seed)
    else:
        np.random.set_state(ckpt["rng"][dd.rank]["numpy"])
        random.setstate(ckpt["rng"][dd.rank]["python"])
    model.train()
    try:
        with _StopFlag() as stop, bar_cm as bar:
            task = bar.add_task("train", total=total, completed=start, loss=float("nan"), ips=0.0)
            t_last, n_last = time.perf_counter(), 0
            while step < total:
                lr = optim.lr_at(step, total, cfg.warmup, peak_lr, cfg.min_lr)
                for group in optimizer.param_groups:
                    group["lr"] = lr * group.get("lr_scale", 1.0)
                parts_sum: dict[str, float] = {}
                loss_sum = 0.0
                for micro in range(cfg.accum):
                    x = next(stream).to(device, non_blocking=True)  # (B, C, H, W)
                    last = micro == cfg.accum - 1
                    # Gradients are all-reduced only on the last micro-step of an accumulation.
                    sync = fwd.no_sync() if (dd.world > 1 and not last and hasattr(fwd, "no_sync")) else contextlib.nullcontext()
                    with sync, autocast():
                        x_in, kwargs = masker(x, mask_gen)  # x_in: (views*B, C, H, W)
                        out = fwd(x_in, **kwargs)
                        if cfg.boundary_ignore:
                            out.loss = model.masked_loss(x_in, out.pred, out.mask, boundary_ignore=cfg.boundary_ignore)
                        loss, parts = objective(out, model)
                    if not torch.isfinite(loss):
                        raise TrainingDiverged(
                            f"loss is {loss.item()} at step {step + 1} of {total} (lr {lr:.3g} from blr {cfg.blr:g}); "
                            "lower --blr or check the data"
                        )
                    (loss / cfg.accum).backward()
                    loss_sum += loss.item() / cfg.accum
                    for k, v in parts.items():
                        parts_sum[k] = parts_sum.get(k, 0.0) + float(v) / cfg.accum
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                n_last += cfg.effective_batch(dd.world)

                if on_step is not None:
                    on_step(step, {"loss": loss_sum, "parts": parts_sum, "lr": lr, "batch": x, "output": out, "model": model})
                if dd.world > 1:
                    # Log the mean over ranks; also agree on stopping, so no rank waits alone in an all-reduce.
                    keys = sorted(parts_sum)
                    t = torch.tensor(
                        [float(stop.set), loss_sum, *(parts_sum[k] for k in keys)], dtype=torch.float64, device=device
                    )
                    dist.all_reduce(t)
                    stop_now, loss_sum = t[0].item() > 0, t[1].item() / dd.world
                    parts_sum = {k: t[2 + i].item() / dd.world for i, k in enumerate(keys)}
                else:
                    stop_now = stop.set
                now = time.perf_counter()
                ips = n_last / max(now - t_last, 1e-9)
                at_heldout = heldout is not None and (step % cfg.heldout_every == 0 or step == total)
                if dd.main and (step % cfg.log_every == 0 or step == total or stop_now or at_heldout):
                    row = {
                        "step": step,
                        "epoch": stream.epoch if src.kind != "online" else None,
                        "loss": loss_sum,
                        **{f"loss_{k}": v for k, v in parts_sum.items() if k != "loss"},
                        "lr": lr,
                        "images_per_s": ips,
                        "mask_ratio": masker.logged_ratio,
                        "mask_kind": masker.kind,
                        "boundary_ignore": cfg.boundary_ignore,
                        "fixed_mask": masker.fixed is not None,
                        "objective": cfg.objective,
                        **({"heldout_loss": heldout.loss(model)} if at_heldout else {}),  # type: ignore[union-attr]
                        "time": time.time(),
                    }
                    metrics_file.write(json.dumps(row) + "\n")  # type: ignore[union-attr]
                    metrics_file.flush()  # type: ignore[union-attr]
                    if tb is not None:
                        for key in ("loss", *(k for k in row if k.startswith("loss_") or k == "heldout_loss"), "lr", "images_per_s"):
                            tb.add_scalar(key.replace("loss_", "loss/", 1), row[key], step)
                    t_last, n_last = now, 0
                bar.update(task, completed=step, loss=loss_sum, ips=ips)
                if stop_now:
                    save(step)
                    raise TrainingInterrupted(run_dir, step)
                if cfg.ckpt_every and step % cfg.ckpt_every == 0 and step < total:
                    save(step)
            save(step)
    except BaseException as e:
        if metrics_file is not None:
            metrics_file.close()
        if tb is not None:
            tb.close()
        if dd.main:
            _after_failure(run_dir, fresh=ckpt is None, created=created, error=e)
        raise
    if metrics_file is not None:
        metrics_file.close()
    if tb is not None:
        tb.close()
    if dd.main:
        plot_run(run_dir)
    return run_dir


def _run_files(run_dir: Path) -> list[Path]:
    """What a run writes into its folder (config, checkpoint, metrics, loss plot, TensorBoard events)."""
    fixed = [run_dir / name for name in (CONFIG, CHECKPOINT, METRICS, LOSS_PLOT)]
    return fixed + sorted(run_dir.glob("events.out.tfevents.*"))


def _after_failure(run_dir: Path, *, fresh: bool, created: bool, error: BaseException) -> None:
    """Leave a folder a re-run or ``--resume`` can use: a checkpoint to resume from, or nothing of this run.

    A fresh run stopped before its first checkpoint (an error, a diverged
    loss, a second Ctrl-C) has nothing to resume: its files go, and so does
    its folder if this run made it. Otherwise the last checkpoint stays, with
    the loss curve so far.
    """
    if fresh and not (run_dir / CHECKPOINT).is_file():
        for path in _run_files(run_dir):
            path.unlink(missing_ok=True)
        if created:
            with contextlib.suppress(OSError):
                run_dir.rmdir()  # only if empty: nothing but this run's files is removed
        if isinstance(error, TrainingDiverged):
            error.args = (f"{error.args[0]}; no checkpoint was written, so nothing is kept in {run_dir}",)
        return
    with contextlib.suppress(Exception):  # a plot must never hide the error that stopped the run
        plot_run(run_dir)
    if isinstance(error, TrainingDiverged):
        try:
            step = _read_checkpoint(run_dir)["step"]
        except HlvmError:
            step = "?"
        error.args = (f"{error.args[0]}; the checkpoint of step {step} stays in {run_dir} (--resume continues from it)",)


def resume(run_dir: str | os.PathLike[str], progress: bool = True, **kwargs: Any) -> Path:
    """Continue the run in ``run_dir`` from its checkpoint (raises :class:`DataError` if there is none)."""
    ckpt = _read_checkpoint(Path(run_dir), _RESUME_KEYS)
    cfg = TrainConfig.from_dict(ckpt["config"]["train"])
    return train(dataclasses.replace(cfg, out=str(run_dir)), progress, resume=True, **kwargs)
