"""``mae``: MAE's own loss, the mean squared error on the masked tokens, alone.

He et al., "Masked Autoencoders Are Scalable Vision Learners" (CVPR 2022),
``models_mae.py::forward_loss`` of facebookresearch/mae. The loss is computed
by the model itself (:meth:`hlvm.models.MAE.masked_loss`, returned as
``MAEOutput.loss``), so this objective adds nothing to it and takes no
options. Every other objective starts from this loss (``parts["mae"]``).

hlvm's own, all in :meth:`hlvm.models.MAE.masked_loss`: the loss is at least
float32 (a float32 model's equals mae's bit for bit), and
``TrainConfig.boundary_ignore`` can drop the masked pixels next to visible
ones.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .options import Opt

if TYPE_CHECKING:
    from .registry import Objective

__all__: list[str] = []

OPTIONS: dict[str, Opt] = {}
MIN_BATCH = 1


def terms(obj: Objective, output: Any, model: nn.Module | None = None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """``({}, output.loss)``: no term beside the model's masked MSE."""
    return {}, output.loss
