"""Masked autoencoders: a ViT MAE on timm blocks, an MLP MAE, named configs, official checkpoints.

>>> import torch
>>> from hlvm.masks import Mask
>>> model = build_model(get_config("mlp", img_size=8, in_chans=1, bottleneck=2))
>>> out = model(torch.zeros(3, 1, 8, 8), mask=Mask.random(8, 8, ratio=0.5, seed=0))
>>> out.pred.shape, out.mask.shape, out.features.shape
(torch.Size([3, 64, 1]), torch.Size([3, 64]), torch.Size([3, 2]))
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import MAE, MAEOutput
from .configs import MODEL_CONFIGS, MAEConfig, get_config
from .masking import aligned_token_mask, random_token_mask, resolve_mask
from .mlp_mae import MLPMAE
from .patches import patchify, unpatchify

if TYPE_CHECKING:
    from .checkpoint import load_official_checkpoint
    from .vit_mae import ViTMAE

__all__ = [
    "MAE",
    "MAEConfig",
    "MAEOutput",
    "MLPMAE",
    "MODEL_CONFIGS",
    "ViTMAE",
    "aligned_token_mask",
    "build_model",
    "get_config",
    "load_official_checkpoint",
    "patchify",
    "random_token_mask",
    "resolve_mask",
    "unpatchify",
]


def __getattr__(name: str) -> Any:
    # timm takes seconds to import; the MLP path (and DDP worker processes using it) never needs it.
    if name == "ViTMAE":
        from .vit_mae import ViTMAE

        return ViTMAE
    if name == "load_official_checkpoint":
        from .checkpoint import load_official_checkpoint

        return load_official_checkpoint
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_model(cfg: MAEConfig | str) -> MAE:
    """The model a config (or a config name) describes, freshly initialised."""
    if isinstance(cfg, str):
        cfg = get_config(cfg)
    if not isinstance(cfg, MAEConfig):
        raise TypeError(f"build_model takes an MAEConfig or a config name, got {type(cfg).__name__}")
    if cfg.arch == "mlp":
        return MLPMAE(cfg)
    from .vit_mae import ViTMAE

    return ViTMAE(cfg)
