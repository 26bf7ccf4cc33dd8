"""Checkpoints: atomic saves, every RNG state, reading a run back (:func:`load_run`)."""

from __future__ import annotations

import dataclasses
import os
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hlvm.errors import DataError

from .config import CHECKPOINT, TrainConfig
from .data import DataStream


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
