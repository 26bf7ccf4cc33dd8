"""Training MAEs: :class:`TrainConfig`, :func:`train`, :func:`load_run`.

The recipe is MAE's pre-training recipe (He et al. 2022, ``main_pretrain.py``
and ``engine_pretrain.py``), made reproducible and resumable:

- AdamW with betas (0.9, 0.95) and weight decay 0.05, none on the 1-D
  parameters (norms) and biases; the cls and mask tokens are decayed, as
  mae's ``add_weight_decay`` (timm 0.3.2, no skip list) decays them, and the
  fixed position embeddings are not parameters;
- ``lr = blr * effective_batch / 256``, the effective batch counting gradient
  accumulation and every process; linear warmup per optimizer step, then a
  cosine decay to ``min_lr``;
- bf16 autocast on CUDA only (no loss scaling is needed for bf16; the CPU path
  stays in fp32 so that a resumed run is bit-for-bit the uninterrupted one);
- optional ``torch.compile``; DDP under ``torchrun`` (process group from the
  environment, gloo on CPU, nccl on CUDA; a ``DistributedSampler`` shards
  folder data; every rank draws its own online samples; only rank 0 writes).

Data (``TrainConfig.data``), one of:

- a ``hlvm simulate`` output folder, memory-mapped through
  :func:`hlvm.simulate.load_dataset` (its ``.images`` is ``(N, C, H, W)``);
- ``online`` or ``online:path/to/simulate_config.json``: fresh samples from a
  :class:`hlvm.simulate.Simulator` at every step (default graph ``GridSpec()``);
- ``imagefolder:PATH``: real images through :func:`hlvm.data.pretrain_dataset`.

A run folder holds ``config.json`` (the resolved :class:`TrainConfig`, the
model's ``MAEConfig`` and provenance), ``checkpoint.pt`` (model, optimizer,
step, config, every RNG state and the data position; written atomically every
``ckpt_every`` steps, at the end, and on Ctrl-C) and ``metrics.jsonl`` (one row
per logged step).
"""

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
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from hlvm.errors import ConfigError, DataError, HlvmError, check_keys
from hlvm.curves import read_metrics
from hlvm.io import provenance, read_json, write_json

__all__ = [
    "TrainConfig",
    "train",
    "load_run",
    "resume",
    "TrainingInterrupted",
    "lr_at",
    "param_groups",
    "resolve_model_config",
    "fixed_training_mask",
    "mask_generator",
    "init_model",
    "TRAIN_MASK_KINDS",
    "TrainingDiverged",
    "pick_device",
    "LOSS_PLOT",
    "open_data",
    "DataStream",
    "CHECKPOINT",
    "CONFIG",
    "METRICS",
]

CHECKPOINT = "checkpoint.pt"
CONFIG = "config.json"
METRICS = "metrics.jsonl"
#: The run's loss curve, drawn from metrics.jsonl at the end and when interrupted.
LOSS_PLOT = "loss.png"

#: Distributions of training masks (``TrainConfig.mask_kind``; :data:`hlvm.masks.MASK_KINDS`).
TRAIN_MASK_KINDS = ("random", "aligned", "block", "complementary", "variable")

# hlvm exempted the tokens from weight decay before it matched mae; a run begun then keeps
# that grouping when resumed (its optimizer state is laid out for it).
PRE_MAE_NO_DECAY = ("cls_token", "mask_token")


# ----------------------------------------------------------------------------- config


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run; validates itself and round-trips through JSON.

    Parameters
    ----------
    model : a name of ``hlvm.models.MODEL_CONFIGS`` or an ``MAEConfig``. A
        name gets ``img_size`` and ``in_chans`` from the data (simulated data)
        and the overrides below.
    data : data spec string (module docstring).
    objective : one of ``hlvm.objectives.OBJECTIVES``; ``objective_coefs``
        are its options, passed to ``build_objective`` (weights, and for
        some objectives switches and counts: ``mimae``'s ``views``,
        ``umae``'s ``diagonal``, ...). An objective may ask for more than
        the model config says: ``cmim`` a Gaussian posterior code (set for
        it), ``mimae`` K complementary masks of each image per step (drawn
        by the run's seeded mask generator, so a resumed run is exact).
    mask_ratio : fraction of masking units masked per sample, in (0, 1).
    mask_kind : the distribution of the training masks (:data:`TRAIN_MASK_KINDS`):
        ``"random"``, MAE's (uniformly random whole units); ``"aligned"``,
        the same count of units taken depth-first through the hierarchy's
        ``branching x branching`` blocks
        (:func:`hlvm.models.masking.aligned_token_mask`, Kong et al.'s Figure
        4 regime), with the data graph's branching (2 for data without a grid
        hierarchy); the unit grid must be square with a side that is a power
        of it; ``"block"``, BEiT's blockwise masks (:func:`hlvm.masks.block_unit_masks`);
        ``"complementary"``, each image of half the batch twice, under two
        masks with disjoint visible sets (:func:`hlvm.models.masking.complementary_token_masks`,
        so a step sees as many masked views as with other kinds; the batch
        must be even); ``"variable"``, the ratio drawn per sample from
        ``mask_ratio +- mask_spread`` (:func:`hlvm.masks.variable_unit_masks`;
        per batch for a ViT, whose batch must mask equal counts). ``block``
        and ``variable`` masks are drawn by numpy from a seed the run's mask
        generator draws, so a resumed run is still exact.
    mask_spread : half-width of the ratio range of ``variable`` masks.
    boundary_ignore : ``K >= 0``: masked pixels within ``K`` pixels
        (Chebyshev distance) of a visible pixel leave the loss (Kong et al.
        2023, Sec. 3.6: they are predictable from their visible neighbours
        alone, so they pull the code towards low-level detail);
        :meth:`hlvm.models.MAE.masked_loss` says how this meets token
        patches and ``norm_pix_loss``. 0 is MAE's loss.
    mask : a fixed mask used for every sample instead of random ones: a mask
        spec dict (DESIGN.md: ``masked``, ``grid`` or ``ratio`` form). This
        is Theorem 2's setting, an MAE trained for one mask ``m``.
    patch_size, mask_unit, bottleneck, norm_pix_loss : overrides of the
        named model config (``None`` keeps the config's value).
    img_size, in_chans : image side and channels for image folders (a
        named config's own otherwise); simulated data fix both themselves,
        and a value that disagrees with them is a DataError.
    steps : optimizer steps; ``epochs`` instead sets them from a folder's size.
    batch_size : images per process per micro-step; ``accum`` micro-steps make
        an optimizer step, so the effective batch is ``batch_size * accum * world``.
    blr : base learning rate; ``lr = blr * effective_batch / 256``.
    warmup : linear warmup length in optimizer steps.
    weight_decay, min_lr : AdamW decay; floor of the cosine schedule.
    seed : seeds model init, masks and data order.
    ckpt_every : checkpoint every this many steps (0: only at the end).
    log_every : write a metrics row every this many steps.
    heldout_every : every this many steps (and at the last), the model's
        masked reconstruction loss on a fixed held-out batch is logged as
        ``heldout_loss`` (0: never): ``heldout_n`` fresh samples of the
        data's simulator (never trained on; simulated data only) under fixed
        masks of the training distribution, in eval mode, drawn from streams
        of their own so that the run trains exactly as without it. The
        convergence protocol (``studies/convergence/``) reads it.
    compile : wrap the model in ``torch.compile``.
    num_workers : DataLoader workers (image folders only).
    device : ``"auto"`` (CUDA if available), ``"cpu"`` or ``"cuda"``.
    out : the run folder; ``None`` makes ``runs/train-<time>``.
    """

    model: Any = "vit_small_synth"
    data: str = "online"
    objective: str = "mae"
    objective_coefs: Mapping[str, Any] | None = None
    mask_ratio: float = 0.75
    mask_kind: str = "random"
    mask_spread: float = 0.2
    boundary_ignore: int = 0
    mask: Mapping[str, Any] | None = None
    patch_size: int | None = None
    mask_unit: int | None = None
    bottleneck: int | None = None
    norm_pix_loss: bool | None = None
    img_size: int | None = None
    in_chans: int | None = None
    steps: int | None = 1000
    epochs: int | None = None
    batch_size: int = 64
    accum: int = 1
    blr: float = 1.5e-4
    warmup: int = 100
    weight_decay: float = 0.05
    min_lr: float = 0.0
    seed: int = 0
    ckpt_every: int = 500
    log_every: int = 10
    heldout_every: int = 0
    heldout_n: int = 1024
    compile: bool = False
    num_workers: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    out: str | None = None

    def __post_init__(self) -> None:
        from hlvm.models import MAEConfig

        if isinstance(self.model, Mapping):
            object.__setattr__(self, "model", MAEConfig.from_dict(dict(self.model)))
        if not isinstance(self.model, str | MAEConfig):
            raise ConfigError(f"model must be a config name or an MAEConfig, got {type(self.model).__name__}")
        if self.mask is not None:
            if not isinstance(self.mask, Mapping):
                raise ConfigError(f"mask must be a mask spec (a JSON object), got {type(self.mask).__name__}")
            object.__setattr__(self, "mask", json.loads(json.dumps(dict(self.mask))))  # a plain JSON copy
        if self.objective_coefs is not None:
            object.__setattr__(self, "objective_coefs", dict(self.objective_coefs))
        if self.out is not None:
            object.__setattr__(self, "out", str(self.out))
        if isinstance(self.mask_ratio, bool) or not isinstance(self.mask_ratio, int | float):
            raise ConfigError(f"mask ratio must be a number in (0, 1), got {self.mask_ratio!r}")
        if not (math.isfinite(self.mask_ratio) and 0.0 < self.mask_ratio < 1.0):
            raise ConfigError(f"mask ratio must be in (0, 1), got {self.mask_ratio}")
        if self.mask_kind not in TRAIN_MASK_KINDS:
            raise ConfigError(f"unknown train mask kind {self.mask_kind!r}; choose from {', '.join(TRAIN_MASK_KINDS)}")
        if self.mask is not None and self.mask_kind != "random":
            raise ConfigError(f"give a fixed mask or mask kind {self.mask_kind!r}, not both")
        sp = self.mask_spread
        if isinstance(sp, bool) or not isinstance(sp, int | float) or not math.isfinite(sp) or sp < 0:
            raise ConfigError(f"mask_spread must be a number >= 0, got {sp!r}")
        if self.mask_kind == "variable" and not (0.0 < self.mask_ratio - sp and self.mask_ratio + sp < 1.0):
            raise ConfigError(
                f"variable ratio range [{self.mask_ratio - sp:g}, {self.mask_ratio + sp:g}] (mask ratio {self.mask_ratio:g} "
                f"+- mask_spread {sp:g}) must lie inside (0, 1)"
            )
        bi = self.boundary_ignore
        if isinstance(bi, bool) or not isinstance(bi, int | np.integer) or bi < 0:
            raise ConfigError(f"boundary_ignore must be an integer >= 0, got {bi!r}")
        if bi and self.objective == "cmim":
            raise ConfigError("boundary_ignore applies to MAE's reconstruction loss; cmim replaces that loss")
        if (self.steps is None) == (self.epochs is None):
            raise ConfigError("give exactly one of steps and epochs")
        ints = {
            "steps": (self.steps, 1),
            "epochs": (self.epochs, 1),
            "batch_size": (self.batch_size, 1),
            "accum": (self.accum, 1),
            "warmup": (self.warmup, 0),
            "seed": (self.seed, 0),
            "ckpt_every": (self.ckpt_every, 0),
            "log_every": (self.log_every, 1),
            "heldout_every": (self.heldout_every, 0),
            "heldout_n": (self.heldout_n, 8),
            "num_workers": (self.num_workers, 0),
            "patch_size": (self.patch_size, 1),
            "mask_unit": (self.mask_unit, 1),
            "bottleneck": (self.bottleneck, 1),
            "img_size": (self.img_size, 1),
            "in_chans": (self.in_chans, 1),
        }
        for name, (value, low) in ints.items():
            if value is None and name in ("steps", "epochs", "patch_size", "mask_unit", "bottleneck", "img_size", "in_chans"):
                continue
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
                raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
        for name in ("blr", "weight_decay", "min_lr"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.blr == 0:
            raise ConfigError("blr must be > 0")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"device must be 'auto', 'cpu' or 'cuda', got {self.device!r}")
        if not isinstance(self.data, str) or not self.data:
            raise ConfigError("data must be a non-empty spec string (a folder, 'online[:config.json]' or 'imagefolder:PATH')")
        from hlvm.objectives import OBJECTIVES, build_objective

        if self.objective not in OBJECTIVES:
            raise ConfigError(f"unknown objective {self.objective!r}; choose from {', '.join(sorted(OBJECTIVES))}")
        objective = build_objective(self.objective, **(self.objective_coefs or {}))  # unknown or bad options
        if self.batch_size < objective.min_batch:
            raise ConfigError(
                f"objective {self.objective!r} needs a batch of at least {objective.min_batch} images for its "
                f"batch term, got batch_size {self.batch_size}"
            )

    def lr(self, world_size: int = 1) -> float:
        """Peak learning rate: ``blr * batch_size * accum * world_size / 256``."""
        return self.blr * self.effective_batch(world_size) / 256

    def effective_batch(self, world_size: int = 1) -> int:
        """Images per optimizer step over all processes."""
        return self.batch_size * self.accum * world_size

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if not isinstance(self.model, str):
            d["model"] = self.model.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        check_keys(d, {f.name for f in dataclasses.fields(cls)}, "train config")
        return cls(**dict(d))


# ----------------------------------------------------------------------------- schedule and optimizer


def lr_at(step: int, total: int, warmup: int, lr: float, min_lr: float = 0.0) -> float:
    """Learning rate for optimizer step ``step`` (0-based) of ``total``: linear warmup, then cosine.

    As MAE's ``adjust_learning_rate``, but per step: step ``s < warmup`` gets
    ``lr * (s + 1) / warmup``, so the first step already learns; after the
    warmup the rate falls along a half cosine from ``lr`` to ``min_lr``.

    >>> [round(lr_at(s, 10, 2, 1.0), 3) for s in (0, 1, 2, 9)]
    [0.5, 1.0, 1.0, 0.03]
    """
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def param_groups(model: nn.Module, weight_decay: float, *, skip: Iterable[str] = ()) -> list[dict[str, Any]]:
    """AdamW groups ``[no decay, decay]`` as mae's pre-training makes them.

    mae calls timm 0.3.2's ``add_weight_decay(model, weight_decay)`` with no
    skip list: parameters with one dimension (norm weights, biases) or a name
    ending in ``.bias`` get no decay, every other trainable parameter does,
    the cls and mask tokens ``(1, 1, D)`` included. ``skip`` names more
    parameters to exempt (timm's ``skip_list``). Frozen parameters are left
    out (mae's fixed sin-cos ``pos_embed`` is one; here it is a buffer).
    """
    skip = set(skip)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim == 1 or name.endswith(".bias") or name in skip:
            no_decay.append(p)
        else:
            decay.append(p)
    return [
        {"params": no_decay, "weight_decay": 0.0},
        {"params": decay, "weight_decay": weight_decay},
    ]


def _resumed_param_groups(model: nn.Module, weight_decay: float, saved: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The groups that a checkpoint's optimizer state (``saved``) was written for.

    Today's :func:`param_groups`, or for a run begun before hlvm decayed the
    tokens, the grouping it began with; ``load_state_dict`` matches the
    state to parameters by position, so the groups must have the saved sizes.
    """
    sizes = [len(g["params"]) for g in saved["param_groups"]]
    groups = param_groups(model, weight_decay)
    if sizes == [len(g["params"]) for g in groups]:
        return groups
    old = param_groups(model, weight_decay, skip=PRE_MAE_NO_DECAY)
    if sizes == [len(g["params"]) for g in old]:
        return old
    want = [len(g["params"]) for g in groups]
    raise ConfigError(f"checkpoint's optimizer has parameter groups of {sizes} tensors; this model's are {want}")


# ----------------------------------------------------------------------------- data


@dataclass
class _Source:
    """Where images come from: an array (memory-mapped), a simulator, or a torch Dataset."""

    kind: Literal["array", "online", "dataset"]
    shape: tuple[int, int, int] | None  # (C, H, W); None until the model config fixes it (image folders)
    images: Any = None  # (N, C, H, W) array-like, kind "array"
    simulator: Any = None  # kind "online"
    dataset: Any = None  # kind "dataset"
    root: str | None = None  # image folder root
    graph: Any = None  # the generating graph of simulated data (its pixel ids name mask specs)

    def __len__(self) -> int:
        if self.kind == "array":
            return int(self.images.shape[0])
        if self.kind == "dataset":
            return len(self.dataset)
        raise TypeError("online data has no length")


def _simulator_from_spec(spec: str) -> Any:
    from hlvm import simulate

    if spec == "online":
        return simulate.Simulator.from_config(simulate.SimulateConfig())
    raw = read_json(spec.split(":", 1)[1], "simulate config", DataError)
    return simulate.Simulator.from_config(simulate.SimulateConfig.from_dict(raw))


def absolute_data(spec: str) -> str:
    """``spec`` with its path made absolute (``online:PATH``, ``imagefolder:PATH``, a folder), so a run can be opened
    from any working directory; ``online`` and names of built-in data are unchanged."""
    for prefix in ("online:", "imagefolder:"):
        if spec.startswith(prefix):
            return prefix + os.path.abspath(spec[len(prefix):])
    if spec == "online" or not Path(spec).exists():
        return spec
    return os.path.abspath(spec)


def open_data(spec: str) -> _Source:
    """Open the data a spec names (module docstring); bad specs raise :class:`DataError`.

    Image folders are opened later (:func:`_open_imagefolder`), once the model
    config fixes the image size.
    """
    if spec == "online" or spec.startswith("online:"):
        sim = _simulator_from_spec(spec)
        shape = tuple(int(s) for s in sim.image_shape)  # (C, H, W)
        return _Source("online", shape, simulator=sim, graph=sim.graph)  # type: ignore[arg-type]
    if spec.startswith("imagefolder:"):
        root = spec.split(":", 1)[1]
        if not Path(root).is_dir():
            raise DataError(f"image folder not found: {root}")
        return _Source("dataset", None, root=root)
    path = Path(spec)
    if not path.exists():
        raise DataError(f"data folder not found: {spec} (give a 'hlvm simulate' folder, 'online[:config.json]' or 'imagefolder:PATH')")
    if not path.is_dir():
        raise DataError(f"data {spec} is not a folder")
    from hlvm.simulate import load_dataset

    try:
        ds = load_dataset(path, mmap=True)
    except HlvmError:
        raise
    except (OSError, ValueError, KeyError) as e:
        raise DataError(f"cannot read simulated data in {path}: {e}") from None
    images = ds.images
    if getattr(images, "ndim", 0) != 4:
        raise DataError(f"images in {path} must be (N, C, H, W), got shape {tuple(getattr(images, 'shape', ()))}")
    n, c, h, w = (int(s) for s in images.shape)
    if n == 0 or c == 0 or h == 0 or w == 0:
        raise DataError(f"images in {path} are empty: shape {tuple(images.shape)}")
    return _Source("array", (c, h, w), images=images, graph=getattr(ds, "graph", None))


def fixed_training_mask(spec: Mapping[str, Any], src: _Source, mcfg: Any) -> Any:
    """The :class:`hlvm.masks.Mask` a ``TrainConfig.mask`` spec names, checked against the model.

    Node ids in a ``masked`` spec are the data's pixel ids (the simulated
    graph's, else ``x_{row}_{col}``). Raises :class:`MaskError` for a spec the
    image or the model's token grid cannot take.
    """
    from hlvm import graphs
    from hlvm.masks import mask_from_spec

    h, w = mcfg.img_hw
    if src.graph is not None:
        ids, latents = graphs.id_grid(src.graph), graphs.latent_nodes(src.graph)
    else:
        ids = np.array([[graphs.observed_id(r, c) for c in range(w)] for r in range(h)], dtype=object)
        latents = []
    mask = mask_from_spec(spec, ids, latents)
    mask.tokens(mcfg.patch_size)  # raises MaskError if a token would be partly masked
    return mask


def _open_imagefolder(src: _Source, img_size: int, in_chans: int) -> None:
    try:
        from hlvm.data import pretrain_dataset
    except ImportError:
        raise DataError("imagefolder data needs hlvm.data.pretrain_dataset, which is not available in this install") from None
    src.dataset = pretrain_dataset(src.root, img_size, in_chans)
    src.shape = (in_chans, img_size, img_size)


class DataStream:
    """One process's endless stream of ``(B, C, H, W)`` float32 batches, resumable exactly.

    Finite data (folders) is read in epochs: epoch ``e`` is the shuffled,
    rank-sharded order of ``DistributedSampler(seed=seed).set_epoch(e)``,
    cut into full batches; the state is ``(epoch, batch position)``. Online
    data draws batch ``k`` of rank ``r`` from the simulator with a generator
    seeded by ``SeedSequence([seed, r, 1, k])``, so the stream is a function
    of the batch count alone (the state), whatever the simulator does with
    its generator (``Generator.spawn``'s counter, for one, is not part of
    ``bit_generator.state``).
    """

    def __init__(self, src: _Source, batch_size: int, *, rank: int, world: int, seed: int, num_workers: int = 0):
        self.src, self.batch_size, self.rank, self.world, self.seed = src, batch_size, rank, world, seed
        self.num_workers = num_workers
        self.epoch, self.pos = 0, 0
        self.drawn = 0  # online batches drawn so far
        self._iter: Iterator[torch.Tensor] | None = None
        if src.kind != "online" and self.batches_per_epoch() == 0:
            raise DataError(
                f"{len(src)} images cannot fill one batch of {batch_size} on each of {world} process(es); "
                "lower --batch-size or simulate more images"
            )

    def batches_per_epoch(self) -> int:
        # DistributedSampler(drop_last=True) gives floor(N / world) indices per rank.
        return (len(self.src) // self.world) // self.batch_size

    def _epoch_batches(self, epoch: int) -> list[list[int]]:
        from torch.utils.data import DistributedSampler

        sampler = DistributedSampler(
            range(len(self.src)), num_replicas=self.world, rank=self.rank, shuffle=True, seed=self.seed, drop_last=True
        )
        sampler.set_epoch(epoch)
        idx = list(sampler)
        b = self.batch_size
        return [idx[i * b : (i + 1) * b] for i in range(len(idx) // b)]

    def _finite(self) -> Iterator[torch.Tensor]:
        while True:
            batches = self._epoch_batches(self.epoch)[self.pos :]
            if self.src.kind == "array":
                for ids in batches:
                    x = np.asarray(self.src.images[np.asarray(ids)], dtype=np.float32)  # (B, C, H, W)
                    self.pos += 1
                    yield torch.from_numpy(x)
            else:
                from torch.utils.data import DataLoader

                loader = DataLoader(
                    self.src.dataset,
                    batch_sampler=batches,
                    num_workers=self.num_workers,
                    pin_memory=torch.cuda.is_available(),
                    persistent_workers=False,
                )
                for x, _ in loader:
                    self.pos += 1
                    yield x.float()
            self.epoch, self.pos = self.epoch + 1, 0

    def __iter__(self) -> DataStream:
        return self

    def __next__(self) -> torch.Tensor:
        if self.src.kind == "online":
            # Distinct, reproducible streams per rank and batch: SeedSequence entropy (seed, rank, purpose, k).
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, self.rank, 1, self.drawn]))
            ds = self.src.simulator.sample(self.batch_size, rng)
            self.drawn += 1
            return torch.from_numpy(np.asarray(ds.images, dtype=np.float32))  # (B, C, H, W)
        if self._iter is None:
            self._iter = self._finite()
        return next(self._iter)

    def state_dict(self) -> dict[str, Any]:
        epoch, pos = self.epoch, self.pos
        if self.src.kind != "online" and pos == self.batches_per_epoch():
            epoch, pos = epoch + 1, 0  # an epoch just ended: the same place, said canonically
        return {"epoch": epoch, "pos": pos, "drawn": self.drawn}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.epoch, self.pos, self.drawn = int(state["epoch"]), int(state["pos"]), int(state["drawn"])
        self._iter = None


# ----------------------------------------------------------------------------- model config


def resolve_model_config(cfg: TrainConfig, shape: tuple[int, int, int] | None) -> Any:
    """The ``MAEConfig`` a run trains: the named config with the run's overrides and the data's image shape.

    ``shape`` is the data's ``(C, H, W)``, or ``None`` for image folders (the
    model config then fixes the size). Mismatches raise :class:`DataError`;
    invalid combinations (unit not a multiple of the patch, size not divisible)
    raise :class:`ConfigError` from the model config. The objective may add
    to the model (``cmim``: a Gaussian posterior) and is checked against it
    (``mimae``'s views against the unit count and ratio, a class-token
    feature against an MLP, ...), so that a bad combination fails here,
    before anything is written.
    """
    from hlvm.models import MAEConfig, get_config
    from hlvm.objectives import build_objective

    objective = build_objective(cfg.objective, **(cfg.objective_coefs or {}))

    overrides: dict[str, Any] = {}
    for name in ("patch_size", "mask_unit", "bottleneck", "norm_pix_loss", "img_size", "in_chans"):
        if getattr(cfg, name) is not None:
            overrides[name] = getattr(cfg, name)
    if isinstance(cfg.model, MAEConfig):
        mcfg = dataclasses.replace(cfg.model, **overrides) if overrides else cfg.model
    else:
        if shape is not None:
            c, h, w = shape
            for name, want in (("img_size", h if h == w else (h, w)), ("in_chans", c)):
                if overrides.get(name, want) != want:
                    raise DataError(f"{name} {overrides[name]} disagrees with the data's {c}x{h}x{w} (C x H x W) images")
            overrides.update(img_size=h if h == w else (h, w), in_chans=c)
        mcfg = get_config(cfg.model, **overrides)
    if shape is not None and (mcfg.in_chans, *mcfg.img_hw) != tuple(shape):
        want = "x".join(map(str, (mcfg.in_chans, *mcfg.img_hw)))
        raise DataError(f"model expects {want} (C x H x W) images but the data is {'x'.join(map(str, shape))}")
    if objective.posterior is not None and mcfg.posterior is None:
        mcfg = dataclasses.replace(mcfg, posterior=objective.posterior)
    objective.check(mcfg, mask_ratio=cfg.mask_ratio, fixed_mask=cfg.mask is not None, batch_size=cfg.batch_size)
    return mcfg


# ----------------------------------------------------------------------------- distributed


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(device: torch.device) -> _Dist:
    """Join the process group ``torchrun`` describes in the environment (if any)."""
    if dist.is_available() and dist.is_initialized():
        return _Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)), False)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend)
    return _Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)), True)


def mask_generator(seed: int, rank: int = 0) -> torch.Generator:
    """The CPU generator of a rank's random masks: a distinct, reproducible stream per (seed, rank)."""
    entropy = np.random.SeedSequence([seed, rank, 2]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator(device="cpu").manual_seed(int(entropy) & ((1 << 63) - 1))


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    """The torch device ``"auto"``, ``"cpu"`` or ``"cuda"`` names; :class:`ConfigError` for CUDA without CUDA."""
    if name not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"device must be 'auto', 'cpu' or 'cuda', got {name!r}")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError("device 'cuda' asked for but CUDA is not available")
    return torch.device("cuda", local_rank)


# ----------------------------------------------------------------------------- checkpoints


def _rng_state(gen: torch.Generator, stream: DataStream) -> dict[str, Any]:
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy": np.random.get_state(),
        "python": random.getstate(),
        "mask_generator": gen.get_state(),
        "data": stream.state_dict(),
    }


def _set_rng_state(state: Mapping[str, Any], gen: torch.Generator, stream: DataStream) -> None:
    # numpy's and Python's are set just before the loop (_train_loop).
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    gen.set_state(state["mask_generator"])
    stream.load_state_dict(state["data"])


def _atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to ``path`` atomically, the same bytes for the same ``obj``.

    torch names the zip archive's members after the file it writes to, so a
    save to a random temporary name would differ from run to run; through a
    file object the archive is always ``archive/``.
    """
    from hlvm.io import atomic_file

    with atomic_file(path, "wb") as f:
        torch.save(obj, f)


#: What a checkpoint must hold to be loaded as a run, and to be resumed.
_RUN_KEYS = ("config", "model")
_RESUME_KEYS = ("config", "model", "optimizer", "step", "rng")


def _read_checkpoint(run_dir: Path, need: tuple[str, ...] = _RUN_KEYS) -> dict[str, Any]:
    """The checkpoint of a run folder, checked to hold ``need``; :class:`DataError` otherwise."""
    path = run_dir / CHECKPOINT
    if not run_dir.is_dir():
        raise DataError(f"run folder not found: {run_dir}")
    if not path.is_file():
        raise DataError(f"no checkpoint in {run_dir} (expected {CHECKPOINT})")
    try:
        # Our own file, holding numpy RNG states beside tensors: not weights-only.
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unreadable file is a data problem
        raise DataError(f"cannot read checkpoint {path}: {' '.join(str(e).split())[:300]}") from None
    if not isinstance(ckpt, Mapping):
        raise DataError(f"checkpoint {path} holds a {type(ckpt).__name__}, not the dict hlvm train writes")
    missing = [k for k in need if k not in ckpt]
    config = ckpt.get("config")
    if not missing and not (isinstance(config, Mapping) and all(isinstance(config.get(k), Mapping) for k in ("train", "model"))):
        missing = ["config.train and config.model"]
    if missing:
        raise DataError(
            f"checkpoint {path} lacks {', '.join(missing)}: not a run hlvm train wrote "
            "(official MAE weights load with hlvm.models.load_official_checkpoint)"
        )
    return dict(ckpt)


def load_run(run_dir: str | os.PathLike[str]) -> tuple[nn.Module, TrainConfig]:
    """The trained model (eval mode, on CPU) and the config of a run folder.

    Raises :class:`DataError` if the folder or its checkpoint is missing or unreadable.
    """
    from hlvm.models import MAEConfig, build_model

    from hlvm.objectives import build_objective

    run_dir = Path(run_dir)
    ckpt = _read_checkpoint(run_dir)
    cfg = dataclasses.replace(TrainConfig.from_dict(ckpt["config"]["train"]), out=str(run_dir))
    model = build_model(MAEConfig.from_dict(ckpt["config"]["model"]))
    build_objective(cfg.objective, **(cfg.objective_coefs or {})).attach(model)  # its networks are in the state dict
    model.load_state_dict(ckpt["model"])
    model.eval()
    return model, cfg


# ----------------------------------------------------------------------------- training


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


@dataclass(frozen=True)
class _Masker:
    """How a training step masks its batch: ``masker(x, gen) -> (images, keyword arguments for forward)``.

    With ``views = K > 1`` (MI-MAE) the images are the batch repeated K
    times along the batch dimension, view-major, and the masks K
    complementary masks of each image (one forward pass for all views);
    the ``complementary`` mask kind does the same with K = 2 on half the
    batch. The generator is passed on in every case: a model with a Gaussian
    posterior draws its noise from it (others leave it alone when given a
    mask, so their mask streams are as before).
    """

    kind: str
    ratio: float
    fixed: Any = None
    mcfg: Any = None
    branching: int = 2
    views: int = 1
    disjoint: str = "visible"
    spread: float = 0.2

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, dict[str, Any]]:
        from hlvm.models import masking

        if self.views > 1 or self.kind == "complementary":
            views, imgs = (self.views, x) if self.views > 1 else (2, x[: x.shape[0] // 2])
            kind = self.kind if self.views > 1 else "random"
            tokens = masking.complementary_token_masks(
                self.mcfg, imgs.shape[0], self.ratio, views, disjoint=self.disjoint, kind=kind,
                branching=self.branching, generator=gen,
            )  # (K*B', L) view-major
            return imgs.repeat(views, 1, 1, 1), {"mask": tokens.to(x.device), "generator": gen}  # (K*B', C, H, W)
        if self.fixed is not None:
            return x, {"mask": self.fixed, "generator": gen}
        if self.kind == "aligned":
            tokens = masking.aligned_token_mask(self.mcfg, x.shape[0], self.ratio, self.branching, generator=gen)  # (B, L)
            return x, {"mask": tokens.to(x.device), "generator": gen}
        if self.kind in ("block", "variable"):
            return x, {"mask": self._numpy_tokens(x.shape[0], gen).to(x.device), "generator": gen}
        return x, {"mask_ratio": self.ratio, "generator": gen}

    def _numpy_tokens(self, batch: int, gen: torch.Generator) -> torch.Tensor:
        """``(B, L)`` token masks of a numpy mask family, seeded by one draw from the run's mask generator."""
        from hlvm.masks import pixel_to_unit, unit_masks

        seed = int(torch.randint(0, 2**62, (1,), generator=gen))
        h, w = self.mcfg.img_hw
        rng = np.random.default_rng(seed)
        if self.kind == "variable":
            from hlvm.masks import variable_unit_masks

            # A ViT gathers the visible tokens, so its batch must mask equal counts: one count per batch there.
            grids = variable_unit_masks(batch, h, w, self.ratio, self.mcfg.mask_unit, rng, spread=self.spread,
                                        same_count=self.mcfg.arch == "vit")
        else:
            grids = unit_masks(self.kind, batch, h, w, self.ratio, self.mcfg.mask_unit, rng)
        return torch.from_numpy(pixel_to_unit(grids, self.mcfg.patch_size).reshape(batch, -1))  # (B, L)

    @property
    def logged_ratio(self) -> float:
        return self.fixed.ratio if self.fixed is not None else self.ratio


def _masker(cfg: TrainConfig, mcfg: Any, src: _Source, fixed_mask: Any, objective: Any = None) -> _Masker:
    """The run's masking, checked against the model's unit grid before anything is written."""
    from hlvm.masks import unit_masks
    from hlvm.predict import graph_branching

    # A grid hierarchy's own branching; quad-tree blocks for other data (image folders, user graphs).
    branching = (graph_branching(src.graph) if src.graph is not None else None) or 2
    views, disjoint = (objective.views, objective.disjoint) if objective is not None else (1, "visible")
    if views > 1 and cfg.mask_kind not in ("random", "aligned"):
        raise ConfigError(f"{cfg.objective}'s complementary views follow random or aligned masks, not {cfg.mask_kind!r}")
    if cfg.mask_kind == "complementary" and cfg.batch_size % 2:
        raise ConfigError(f"complementary masks pair the images of a batch: the batch size must be even, got {cfg.batch_size}")
    h, w = mcfg.img_hw
    probe = None
    if fixed_mask is None:
        try:
            if cfg.mask_kind == "aligned":
                from hlvm.models.masking import aligned_levels

                aligned_levels(mcfg, branching)
            # A sample of the training distribution: every kind's count and shape checks, and the boundary's.
            probe = unit_masks(cfg.mask_kind, 64, h, w, cfg.mask_ratio, mcfg.mask_unit, np.random.default_rng(0),
                               branching=branching, spread=cfg.mask_spread)
        except HlvmError as e:
            raise ConfigError(str(e)) from None
    else:
        probe = fixed_mask.grid[None]
    if cfg.boundary_ignore:
        from hlvm.models.masking import boundary_keep_numpy

        if not boundary_keep_numpy(probe, cfg.boundary_ignore).any():
            raise ConfigError(
                f"boundary_ignore {cfg.boundary_ignore} leaves no masked pixel in the loss: every masked pixel of these "
                f"masks is within {cfg.boundary_ignore} pixels of a visible one; use a smaller K"
            )
    return _Masker(cfg.mask_kind, cfg.mask_ratio, fixed_mask, mcfg, branching, views, disjoint, cfg.mask_spread)


#: Entropy tag of the held-out batch of ``TrainConfig.heldout_every`` (beside the run's seed): a stream of its own.
HELDOUT_TAG = 0x4E1D


class _HeldOut:
    """The fixed held-out batch and masks of ``TrainConfig.heldout_every``: ``loss(model)`` is the masked MSE on it.

    The samples come from the data's simulator with noise seeded ``(seed,
    HELDOUT_TAG)`` (:func:`hlvm.evaluate.heldout_dataset`); the masks are
    drawn by the run's masker from a generator reseeded before every
    evaluation, so every evaluation sees the same masks and the training
    streams are never touched. The model runs in eval mode under no_grad, in
    chunks of the training batch, and the loss is MAE's (with the run's
    ``boundary_ignore``), one view per image.
    """

    def __init__(self, cfg: TrainConfig, masker: _Masker, device: torch.device) -> None:
        from hlvm.evaluate import heldout_dataset

        data = heldout_dataset(cfg.data, cfg.heldout_n, (cfg.seed, HELDOUT_TAG))
        self.images = torch.as_tensor(np.asarray(data.images), dtype=torch.float32).to(device)  # (N, C, H, W)
        self.masker = dataclasses.replace(masker, views=1, kind="random" if masker.kind == "complementary" else masker.kind)
        self.seed, self.batch, self.boundary_ignore = cfg.seed + HELDOUT_TAG, cfg.batch_size, cfg.boundary_ignore

    @torch.no_grad()
    def loss(self, model: nn.Module) -> float:
        was = model.training
        model.eval()
        gen = torch.Generator().manual_seed(self.seed)
        total, n = 0.0, 0
        try:
            for s in range(0, len(self.images), self.batch):
                x, kwargs = self.masker(self.images[s : s + self.batch], gen)
                out = model(x, **kwargs)
                loss = out.loss
                if self.boundary_ignore:
                    loss = model.masked_loss(x, out.pred, out.mask, boundary_ignore=self.boundary_ignore)
                total += float(loss) * len(x)
                n += len(x)
        finally:
            model.train(was)
        return total / n


def init_model(mcfg: Any, seed: int) -> nn.Module:
    """The model a run seeded ``seed`` starts from: ``build_model(mcfg)`` right after ``torch.manual_seed(seed)``.

    Training starts here, so this is also the *untrained* control of every
    run of this architecture and seed (:mod:`hlvm.evaluate`).
    """
    from hlvm.models import build_model

    torch.manual_seed(seed)
    return build_model(mcfg)


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
        groups = param_groups(model, cfg.weight_decay)
    else:
        groups = _resumed_param_groups(model, cfg.weight_decay, ckpt["optimizer"])
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
                lr = lr_at(step, total, cfg.warmup, peak_lr, cfg.min_lr)
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


def plot_run(run_dir: str | os.PathLike[str]) -> Path | None:
    """Draw ``RUN/loss.png`` from ``RUN/metrics.jsonl``: the loss, each objective term and the lr against step."""
    from hlvm.curves import plot_loss

    run_dir = Path(run_dir)
    return plot_loss({run_dir.name: read_metrics(run_dir / METRICS)}, run_dir / LOSS_PLOT, title=f"training loss: {run_dir}")


def _tensorboard(run_dir: Path, purge_step: int | None) -> Any:
    """A ``SummaryWriter`` into the run folder when TensorBoard is installed (``pip install 'hlvm[tb]'``), else ``None``."""
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # installed but unusable (a version torch does not take): train without it
        return None
    return SummaryWriter(log_dir=str(run_dir), purge_step=purge_step)


def _logged_step(step: int, cfg: TrainConfig, total: int) -> bool:
    """Whether an uninterrupted run writes a metrics row at ``step`` (an interruption also writes one where it stops)."""
    return step % cfg.log_every == 0 or step == total or bool(cfg.heldout_every and step % cfg.heldout_every == 0)


def _truncate_metrics(path: Path, step: int, keep_last: bool = True) -> None:
    """Keep the metrics rows up to ``step`` (later ones came after the checkpoint a resumed run restarts from).

    With ``keep_last`` off the row at ``step`` goes too: the row an interruption wrote where it stopped, which an
    uninterrupted run does not have, so that the resumed run's log has the uninterrupted run's rows.
    """
    if not path.is_file():
        return
    raw = path.read_bytes()
    keep = [r for r in read_metrics(path) if r["step"] < step or (keep_last and r["step"] == step)]
    text = "".join(json.dumps(r) + "\n" for r in keep)
    if text.encode() != raw:
        from hlvm.io import atomic_file

        with atomic_file(path) as f:
            f.write(text)


def resume(run_dir: str | os.PathLike[str], progress: bool = True, **kwargs: Any) -> Path:
    """Continue the run in ``run_dir`` from its checkpoint (raises :class:`DataError` if there is none)."""
    ckpt = _read_checkpoint(Path(run_dir), _RESUME_KEYS)
    cfg = TrainConfig.from_dict(ckpt["config"]["train"])
    return train(dataclasses.replace(cfg, out=str(run_dir)), progress, resume=True, **kwargs)
