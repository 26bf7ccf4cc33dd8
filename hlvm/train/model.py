"""The model a run trains: its config resolved against the data, and its seeded initialisation."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from hlvm.errors import DataError

from .config import TrainConfig


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


def init_model(mcfg: Any, seed: int) -> nn.Module:
    """The model a run seeded ``seed`` starts from: ``build_model(mcfg)`` right after ``torch.manual_seed(seed)``.

    Training starts here, so this is also the *untrained* control of every
    run of this architecture and seed (:mod:`hlvm.evaluate`).
    """
    from hlvm.models import build_model

    torch.manual_seed(seed)
    return build_model(mcfg)
