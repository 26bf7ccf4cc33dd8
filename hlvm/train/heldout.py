"""The held-out reconstruction loss on a fixed batch (``TrainConfig.heldout_every``): the convergence protocol's measure."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from .config import TrainConfig
from .masker import _Masker

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

    def loss(self, model: nn.Module) -> float:
        gen = torch.Generator().manual_seed(self.seed)

        def chunk(x: torch.Tensor) -> float:
            x, kwargs = self.masker(x, gen)
            out = model(x, **kwargs)
            if self.boundary_ignore:
                return float(model.masked_loss(x, out.pred, out.mask, boundary_ignore=self.boundary_ignore))
            return float(out.loss)

        return eval_loss(model, self.images, self.batch, chunk)


@torch.no_grad()
def eval_loss(model: nn.Module, images: torch.Tensor, batch: int, chunk: Callable[[torch.Tensor], float]) -> float:
    """The image-weighted mean of ``chunk(x)`` over ``images`` in chunks of ``batch``, the model in eval mode.

    Under no_grad; the model's training mode is restored afterwards, also when a chunk raises. Both held-out
    losses use it: this module's (simulated data, the run's masker) and :class:`hlvm.realmask.pretrain.HeldOut`
    (in-memory images, the model's own seeded masks).
    """
    was = model.training
    model.eval()
    total, n = 0.0, 0
    try:
        for s in range(0, len(images), batch):
            x = images[s : s + batch]
            total += chunk(x) * len(x)
            n += len(x)
    finally:
        model.train(was)
    return total / n
