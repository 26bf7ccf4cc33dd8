"""The training config (:class:`TrainConfig`) and the names of a run folder's files."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from hlvm.errors import ConfigError, check_keys


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
