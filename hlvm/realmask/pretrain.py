"""One MAE pretraining run on in-memory images: MAE's recipe, resumable bit for bit, interruptible.

The recipe is :mod:`hlvm.train`'s (its functions are used, not copied): the
model from :func:`hlvm.train.init_model` (so the untrained control of a seed
is this run's step 0), AdamW (0.9, 0.95) over
:func:`hlvm.train.param_groups`, ``lr = blr * batch / 256`` with
:func:`hlvm.train.lr_at`'s warmup and cosine, masks from
:func:`hlvm.train.mask_generator`, bf16 autocast on CUDA only. What differs
is the data path: batches are drawn from a :class:`hlvm.data.TensorImages`
and augmented in one batched call (:func:`hlvm.data.mae_augment`) instead of
an ImageFolder's per-image PIL transforms, which would dominate a CPU step
of a small ViT.

Every draw is seeded from the run's seed: the epoch order by
``SeedSequence([seed, 4, epoch])``, the augmentation by a generator seeded
from ``SeedSequence([seed, 3])``, the masks by ``mask_generator(seed)``.
Epochs drop their last partial batch, so the batch of step ``s`` is a function
of ``s`` alone, and a checkpoint (model, optimizer, step, both generators'
states, the loss logs) resumes the run exactly on CPU.

The held-out loss (:class:`HeldOut`, the convergence protocol's measure,
``studies/convergence/README.md``) is MAE's masked reconstruction loss on a
fixed batch of images that training never sees, under the same seeded masks
at every measurement, the model in eval mode. Its masks come from a
generator of their own, made afresh for each measurement, so a run that
measures it trains bit for bit as one that does not.
"""

from __future__ import annotations

import contextlib
import math
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hlvm.data import TensorImages, mae_augment
from hlvm.errors import ConfigError
from hlvm.train.heldout import eval_loss

CHECKPOINT = "checkpoint.pt"
MODEL = "model.pt"


@dataclass(frozen=True)
class RunSpec:
    """One training run of the study: where it sits in the grid and how long it trains."""

    name: str
    mask_ratio: float
    mask_unit: int
    seed: int
    steps: int
    batch_size: int
    blr: float
    warmup: int
    weight_decay: float = 0.05
    min_lr: float = 0.0

    def __post_init__(self) -> None:
        if not 0 < self.mask_ratio < 1:
            raise ConfigError(f"mask ratio must be in (0, 1), got {self.mask_ratio!r}")
        for k in ("steps", "batch_size", "mask_unit"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{k} must be a positive integer, got {v!r}")
        if not isinstance(self.warmup, int) or self.warmup < 0:
            raise ConfigError(f"warmup must be an integer >= 0, got {self.warmup!r}")
        if not (self.blr > 0 and math.isfinite(self.blr)):
            raise ConfigError(f"blr must be a finite number > 0, got {self.blr!r}")

    @property
    def lr(self) -> float:
        return self.blr * self.batch_size / 256

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class HeldOut:
    """The held-out batch of a run and its log: ``images`` (N, C, S, S) normalised, measured every ``every`` steps.

    ``log`` is ``[(step, loss)]``, from step 0 (the untrained model) to the
    last step; :func:`train_run` fills it (and restores it on resume).
    """

    images: torch.Tensor
    every: int
    batch: int = 256
    log: list[tuple[int, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if isinstance(self.every, bool) or not isinstance(self.every, int) or self.every < 1:
            raise ConfigError(f"heldout_every must be a positive integer, got {self.every!r}")
        if self.images.ndim != 4 or len(self.images) == 0:
            raise ConfigError(f"the held-out batch must be (N, C, S, S) with N >= 1, got {tuple(self.images.shape)}")

    def measure(self, model: nn.Module, spec: RunSpec, device: torch.device) -> float:
        """The mean masked loss over the batch, masks drawn from ``SeedSequence([seed, 5])`` afresh each time."""
        gen = _seeded(spec.seed, 5)

        def chunk(x: torch.Tensor) -> float:
            return float(model(x.to(device), mask_ratio=spec.mask_ratio, generator=gen).loss.float())

        return eval_loss(model, self.images, self.batch, chunk)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during training: the checkpoint at ``step`` is saved."""

    def __init__(self, step: int) -> None:
        super().__init__(f"interrupted at step {step}")
        self.step = step


class StopFlag:
    """SIGINT / SIGTERM set a flag that the loop reads between steps (so a step is never cut in half).

    A second Ctrl-C within ``grace`` seconds of the first raises at once.
    """

    def __init__(self, grace: float = 2.0) -> None:
        self.set, self.grace, self._t, self._old = False, grace, 0.0, {}

    def __enter__(self) -> StopFlag:
        with contextlib.suppress(ValueError):  # not the main thread: no handlers, Ctrl-C raises as usual
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.set and time.monotonic() - self._t < self.grace:
            raise KeyboardInterrupt
        self.set, self._t = True, time.monotonic()

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _seeded(*key: int) -> torch.Generator:
    entropy = np.random.SeedSequence(list(key)).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(entropy) & ((1 << 63) - 1))


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """``(n,)`` the image order of ``epoch``: a permutation drawn from ``SeedSequence([seed, 4, epoch])``."""
    return torch.randperm(n, generator=_seeded(seed, 4, epoch))


def batch_indices(n: int, batch: int, seed: int, step: int) -> torch.Tensor:
    """``(batch,)`` the images of step ``step`` (0-based): epochs of ``n // batch`` full batches."""
    per_epoch = n // batch
    if per_epoch == 0:
        raise ConfigError(f"{n} training images cannot fill one batch of {batch}; lower batch_size")
    epoch, pos = divmod(step, per_epoch)
    return epoch_order(n, seed, epoch)[pos * batch : (pos + 1) * batch]


def _atomic_save(obj: Any, path: Path) -> None:
    from hlvm.io import atomic_file

    with atomic_file(path, "wb") as f:
        torch.save(obj, f)


def train_run(
    spec: RunSpec,
    mcfg: Any,
    data: TensorImages,
    run_dir: Path,
    *,
    device: torch.device,
    ckpt_every: int = 200,
    log_every: int = 50,
    on_step: Callable[[int], None] | None = None,
    snapshots: dict[int, Callable[[nn.Module], None]] | None = None,
    should_stop: Callable[[], bool] | None = None,
    heldout: HeldOut | None = None,
) -> tuple[nn.Module, list[tuple[int, float]]]:
    """Train ``spec`` on ``data`` (``(N, C, H, W)`` uint8), resuming from ``run_dir/checkpoint.pt`` if present.

    Returns the trained model (eval mode, on ``device``) and the loss log
    ``[(step, mean loss since the previous entry)]``. A checkpoint is written
    every ``ckpt_every`` steps and on Ctrl-C / SIGTERM (then
    :class:`Interrupted` is raised); at the end the weights are saved to
    ``run_dir/model.pt`` and the checkpoint removed. ``on_step(step)`` is
    called after every step; ``snapshots[s](model)`` after step ``s`` (the
    learning curve's probes), with the model in eval mode, then back to
    training. ``should_stop()`` true after a step stops the run as Ctrl-C
    does (a worker process is told to stop by its parent this way).
    ``heldout`` measures the held-out loss at step 0, every ``heldout.every``
    steps and at the end, into ``heldout.log``.
    """
    from hlvm.models.masking import random_token_mask
    from hlvm.train import init_model, lr_at, mask_generator, param_groups

    random_token_mask(mcfg, 1, spec.mask_ratio)  # a ratio the unit grid cannot take fails before any work
    run_dir.mkdir(parents=True, exist_ok=True)
    model = init_model(mcfg, spec.seed).to(device)
    opt = torch.optim.AdamW(param_groups(model, spec.weight_decay), lr=spec.lr, betas=(0.9, 0.95))
    mask_gen = mask_generator(spec.seed)
    aug_gen = _seeded(spec.seed, 3)
    step, losses = 0, []
    acc, n_acc = 0.0, 0
    ckpt_path = run_dir / CHECKPOINT
    if ckpt_path.is_file():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        if ck["spec"] != spec.to_dict() or ck["model_config"] != mcfg.to_dict():
            raise ConfigError(f"{ckpt_path} was written for another run; remove it or use --overwrite")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        mask_gen.set_state(ck["mask_generator"])
        aug_gen.set_state(ck["augment_generator"])
        step, losses = int(ck["step"]), [tuple(x) for x in ck["losses"]]
        acc, n_acc = ck["pending"]  # the loss log's open interval, so that it reads as an uninterrupted run's
        if heldout is not None:
            heldout.log[:] = [tuple(x) for x in ck.get("heldout", [])]

    def save() -> None:
        _atomic_save({"spec": spec.to_dict(), "model_config": mcfg.to_dict(), "model": model.state_dict(),
                      "optimizer": opt.state_dict(), "mask_generator": mask_gen.get_state(),
                      "augment_generator": aug_gen.get_state(), "step": step, "losses": losses,
                      "pending": (acc, n_acc), "heldout": heldout.log if heldout is not None else []}, ckpt_path)

    images = data.images.to(device)  # (N, C, H, W) uint8: 55 MB for Fashion-MNIST, once
    size = mcfg.img_hw[0]
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if device.type == "cuda" else contextlib.nullcontext
    model.train()
    if heldout is not None and step == 0:
        heldout.log[:] = [(0, heldout.measure(model, spec, device))]
    with StopFlag() as stop:
        while step < spec.steps:
            lr = lr_at(step, spec.steps, spec.warmup, spec.lr, spec.min_lr)
            for group in opt.param_groups:
                group["lr"] = lr
            idx = batch_indices(len(data), spec.batch_size, spec.seed, step).to(device)
            x = mae_augment(images[idx], size, aug_gen)  # (B, C, S, S) normalised
            with autocast():
                out = model(x, mask_ratio=spec.mask_ratio, generator=mask_gen)
            loss = out.loss
            if not torch.isfinite(loss):
                raise ConfigError(f"{spec.name}: loss is {loss.item()} at step {step + 1}; lower blr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            acc, n_acc = acc + loss.item(), n_acc + 1
            if step % log_every == 0 or step == spec.steps:
                losses.append((step, acc / n_acc))
                acc, n_acc = 0.0, 0
            if heldout is not None and (step % heldout.every == 0 or step == spec.steps):
                heldout.log.append((step, heldout.measure(model, spec, device)))
            if on_step is not None:
                on_step(step)
            if snapshots and step in snapshots:
                model.eval()
                snapshots[step](model)
                model.train()
            if stop.set or (should_stop is not None and should_stop()):
                save()
                raise Interrupted(step)
            if ckpt_every and step % ckpt_every == 0 and step < spec.steps:
                save()
    model.eval()
    _atomic_save({"spec": spec.to_dict(), "model_config": mcfg.to_dict(), "model": model.state_dict(),
                  "losses": losses, "heldout": heldout.log if heldout is not None else []}, run_dir / MODEL)
    ckpt_path.unlink(missing_ok=True)
    return model, losses


def load_trained(run_dir: Path, device: torch.device) -> tuple[nn.Module, list[tuple[int, float]], list[tuple[int, float]]]:
    """The model a finished run saved, its training loss log and its held-out loss log (empty if not measured)."""
    from hlvm.models import MAEConfig, build_model

    saved = torch.load(run_dir / MODEL, map_location="cpu", weights_only=False)
    model = build_model(MAEConfig.from_dict(saved["model_config"]))
    model.load_state_dict(saved["model"])
    return (model.to(device).eval(), [tuple(x) for x in saved["losses"]],
            [tuple(x) for x in saved.get("heldout", [])])
