"""MAE's optimizer: the learning-rate schedule and the weight-decay groups."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from torch import nn

from hlvm.errors import ConfigError

from .config import PRE_MAE_NO_DECAY


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
