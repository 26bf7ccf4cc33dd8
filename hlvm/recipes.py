"""Named training presets: MAE's published recipe as plain :class:`hlvm.train.TrainConfig` fields.

A :class:`Recipe` is data, not code: ``train`` holds ``TrainConfig`` field
values, ``model`` the ``MAEConfig`` name. ``Recipe.train_config(**overrides)``
builds the config; ``hlvm train --preset NAME`` reads the same dict.

MAE's pre-training recipe (He et al. 2022, Table 8 of the appendix and
``main_pretrain.py``): ViT-B/16, effective batch 4096, base lr 1.5e-4
(``lr = blr * 4096 / 256 = 2.4e-3``), AdamW betas (0.9, 0.95), weight decay
0.05, 800 epochs with 40 warmup epochs then cosine decay, norm-pix loss, mask
ratio 0.75, RandomResizedCrop(224, scale 0.2-1) + flip. The effective batch is
reached through accumulation: ``batch_size * accum * world_size = 4096``, so
the per-process fields depend on how many GPUs run it (:func:`mae_pretrain`).

``TrainConfig.warmup`` counts optimizer steps, not epochs, so the preset
converts 40 epochs with the number of training images (ImageNet-1k's
1,281,167 by default) the way ``hlvm.train`` counts an epoch: every process
drops its last partial batch, and ``accum`` micro-batches make one step.

The official U-MAE and M-MAE runs (their repositories' ``pretrain.sh``):

- ``umae_official`` (zhangq327/U-MAE): MAE's recipe at ViT-B/16, 8 GPUs x
  128 images (effective batch 1024, no accumulation), 200 epochs, 40
  warmup, blr 1.5e-4, weight decay 0.05, norm-pix loss, mask ratio 0.75,
  objective ``umae_official`` (``--lamb 0.01``; ``loss_func.py``'s mean
  over the whole ``N x N`` matrix, on the class token, with ``GatherLayer``'s
  gradient);
- ``mmae_official`` (yifanzhang-pro/M-MAE): the same at ViT-L/16
  (``--model mae_vit_large_patch16``), objective ``mmae_official`` (``--lamb
  1e-2``, mu 3, centring off: how the script's ``--uniformity_lamda 3`` and
  ``--centering False`` read is told in :mod:`hlvm.objectives.mmae`).

Both scripts also train a linear classifier on the detached features for
monitoring (labels, cross-entropy); it sends no gradient into the encoder, so
it is left out. The objective presets themselves
(:data:`hlvm.objectives.PRESETS`) work with any model and data.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hlvm.errors import ConfigError

__all__ = [
    "IMAGENET_TRAIN_IMAGES",
    "Recipe",
    "mae_pretrain",
    "steps_per_epoch",
    "PRESETS",
    "get_preset",
]

IMAGENET_TRAIN_IMAGES = 1_281_167


def steps_per_epoch(n_images: int, batch_size: int, accum: int, world_size: int) -> int:
    """Optimizer steps per epoch as ``hlvm.train`` counts them.

    Each of ``world_size`` processes gets ``n_images // world_size`` images
    (``DistributedSampler(drop_last=True)``), cut into full batches, and every
    ``accum`` batches (the last group possibly shorter) make one step.

    >>> steps_per_epoch(1_281_167, 64, 8, 8)
    313
    """
    batches = (n_images // world_size) // batch_size
    if batches == 0:
        raise ConfigError(f"{n_images} images cannot fill one batch of {batch_size} on each of {world_size} processes")
    return math.ceil(batches / accum)


@dataclass(frozen=True)
class Recipe:
    """A named training preset: ``TrainConfig`` fields plus what they were derived from."""

    name: str
    model: str
    train: Mapping[str, Any]
    world_size: int
    description: str
    derived: Mapping[str, Any] = field(default_factory=dict)

    def effective_batch(self) -> int:
        """Images per optimizer step over all ``world_size`` processes."""
        return int(self.train["batch_size"]) * int(self.train.get("accum", 1)) * self.world_size

    def train_config(self, **overrides: Any) -> Any:
        """The :class:`hlvm.train.TrainConfig` of this recipe, with ``overrides`` (e.g. ``data``, ``out``)."""
        from hlvm.train import TrainConfig

        fields = {"model": self.model, **dict(self.train), **overrides}
        return TrainConfig(**fields)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model": self.model,
            "train": dict(self.train),
            "world_size": self.world_size,
            "effective_batch": self.effective_batch(),
            "description": self.description,
            "derived": dict(self.derived),
        }


def mae_pretrain(
    *,
    world_size: int = 8,
    batch_size: int = 64,
    n_images: int = IMAGENET_TRAIN_IMAGES,
    model: str = "mae_vit_base_patch16",
    effective_batch: int = 4096,
    epochs: int = 800,
    warmup_epochs: int = 40,
    mask_ratio: float = 0.75,
    name: str | None = None,
    objective: str = "mae",
    description: str | None = None,
) -> Recipe:
    """MAE's pre-training recipe for ``world_size`` processes of ``batch_size`` images each.

    ``accum = effective_batch / (batch_size * world_size)`` must be a whole
    number: MAE's lr scaling assumes the stated batch, so a rounded one would
    silently change the recipe.
    """
    for what, v in (("world_size", world_size), ("batch_size", batch_size), ("n_images", n_images),
                    ("effective_batch", effective_batch), ("epochs", epochs)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"{what} must be a positive integer, got {v!r}")
    per_step = batch_size * world_size
    if effective_batch % per_step:
        raise ConfigError(
            f"effective batch {effective_batch} is not a multiple of batch_size {batch_size} x {world_size} processes"
        )
    accum = effective_batch // per_step
    spe = steps_per_epoch(n_images, batch_size, accum, world_size)
    train = {
        "mask_ratio": mask_ratio,
        "norm_pix_loss": True,
        "epochs": epochs,
        "steps": None,
        "batch_size": batch_size,
        "accum": accum,
        "blr": 1.5e-4,
        "warmup": warmup_epochs * spe,
        "weight_decay": 0.05,
        "min_lr": 0.0,
        "objective": objective,
        "ckpt_every": spe * 20,  # MAE saves every 20 epochs
    }
    return Recipe(
        name=name or f"mae_pretrain_{world_size}gpu",
        model=model,
        train=train,
        world_size=world_size,
        description=(description or "MAE pre-training (He et al. 2022)")
        + (
            f": {model}, batch {effective_batch} "
            f"({batch_size} x accum {accum} x {world_size} processes), blr 1.5e-4, {epochs} epochs, "
            f"{warmup_epochs} warmup, norm-pix loss, mask ratio {mask_ratio}, objective {objective}"
        ),
        derived={
            "n_images": n_images,
            "steps_per_epoch": spe,
            "warmup_epochs": warmup_epochs,
            "total_steps": epochs * spe,
            "lr": 1.5e-4 * effective_batch / 256,
        },
    )


PRESETS: dict[str, Recipe] = {
    # 8 GPUs x 64 images x accum 8, MAE's own launch (its README: 8 nodes x 8 GPUs x 64 without accum).
    "mae_pretrain": mae_pretrain(world_size=8, batch_size=64, name="mae_pretrain"),
    # One GPU: the same effective batch through accum 64.
    "mae_pretrain_1gpu": mae_pretrain(world_size=1, batch_size=64, name="mae_pretrain_1gpu"),
    # zhangq327/U-MAE pretrain.sh: 8 GPUs x --batch_size 128, 200 epochs, 40 warmup, --lamb 0.01.
    "umae_official": mae_pretrain(
        world_size=8, batch_size=128, effective_batch=1024, epochs=200, warmup_epochs=40,
        objective="umae_official", name="umae_official", description="U-MAE's official run (zhangq327/U-MAE pretrain.sh)",
    ),
    # yifanzhang-pro/M-MAE pretrain.sh: ViT-L/16, 8 GPUs x 128, 200 epochs, 40 warmup, --lamb 1e-2, mu 3 (hlvm.objectives.mmae).
    "mmae_official": mae_pretrain(
        world_size=8, batch_size=128, effective_batch=1024, epochs=200, warmup_epochs=40,
        model="mae_vit_large_patch16", objective="mmae_official", name="mmae_official",
        description="M-MAE's official run (yifanzhang-pro/M-MAE pretrain.sh)",
    ),
}


def get_preset(name: str) -> Recipe:
    """The preset called ``name``; :class:`ConfigError` naming the known ones otherwise."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    return PRESETS[name]
