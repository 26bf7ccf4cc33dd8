"""Loading the official MAE checkpoints (facebookresearch/mae) into our ViT encoder.

The released pretraining checkpoints are ``{"model": state_dict}``; what mae's
own ``main_pretrain.py`` writes (``util/misc.py``'s ``save_model``) is
``{"model", "optimizer", "epoch", "scaler", "args"}`` with ``args`` an
``argparse.Namespace``. Both are read with ``torch.load(weights_only=True)``,
``argparse.Namespace`` allowed for that one call; only ``"model"`` is used.

State dicts have timm key names: ``cls_token``, ``pos_embed``,
``patch_embed.proj.*``, ``blocks.N.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}.*``
and ``norm.*``; the "visualize" checkpoints also hold the decoder
(``decoder_*``, ``mask_token``). Our encoder uses the same names, so loading
is a strict, checked copy of the encoder keys. Decoder keys are skipped
unless ``decoder=True``. U-MAE's and M-MAE's checkpoints (their
``models_mae.py``) also hold a linear classifier trained on detached
features for monitoring, ``fc.*``, and the norm of its global-pool
features, ``fc_norm.*``; such a head (and timm's ``head.*``) is no part of
the encoder and is left out, named in one :class:`DroppedKeysWarning`. A
bottleneck model's projection ``bottleneck_proj`` is in no official
checkpoint; it is loaded only from a state dict that has it (an hlvm
model's). Whatever stays at its random initialisation (the
decoder without ``decoder=True``, the projection) is named in one
:class:`UnloadedWeightsWarning`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from hlvm.errors import ConfigError, DataError

from .vit_mae import ViTMAE

__all__ = ["load_official_checkpoint", "encoder_keys", "UnloadedWeightsWarning", "DroppedKeysWarning"]

_DECODER_PREFIXES = ("decoder_", "mask_token")
_BOTTLENECK_PREFIX = "bottleneck_proj"
# Classification heads beside the encoder: timm's ``head``, and in U-MAE's and M-MAE's models_mae.py the linear
# classifier ``fc`` (trained on detached features, for monitoring) with ``fc_norm``, the norm of the global-pool
# features it would classify (unused with their default global_pool=False).
_HEAD_PREFIXES = ("head.", "fc.", "fc_norm.")


class UnloadedWeightsWarning(UserWarning):
    """Part of a model was not loaded from the checkpoint and keeps its random initialisation."""


class DroppedKeysWarning(UserWarning):
    """Keys of the checkpoint that belong to no part of the model (a classification head) were left out."""


def _is_decoder_key(k: str) -> bool:
    return k.startswith(_DECODER_PREFIXES)


def encoder_keys(model: ViTMAE) -> list[str]:
    """State-dict keys of ``model``'s encoder (what an official checkpoint must provide)."""
    return [k for k in model.state_dict() if not _is_decoder_key(k) and not k.startswith(_BOTTLENECK_PREFIX)]


def _read(src: str | os.PathLike[str] | Mapping[str, Any]) -> Mapping[str, Any]:
    if isinstance(src, Mapping):
        return src
    path = Path(src)
    if not path.is_file():
        raise DataError(f"checkpoint not found: {path}")
    # mae's training script pickles its argparse.Namespace under "args": allow that class for this
    # call only (no global allow-list change). torch < 2.5 has no safe_globals; such a file then
    # fails below with torch's own message naming argparse.Namespace.
    allow = getattr(torch.serialization, "safe_globals", None)
    ctx = allow([argparse.Namespace]) if allow is not None else contextlib.nullcontext()
    try:
        with ctx:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a bad file; all mean the same to a user
        raise DataError(f"cannot read checkpoint {path}: {type(e).__name__}: {str(e).splitlines()[0]}") from None
    if not isinstance(obj, Mapping):
        raise DataError(f"checkpoint {path} holds a {type(obj).__name__}, not a dict")
    return obj


def load_official_checkpoint(
    model: ViTMAE, path_or_state_dict: str | os.PathLike[str] | Mapping[str, Any], *, decoder: bool = False
) -> list[str]:
    """Copy an official MAE checkpoint's weights into ``model``'s encoder (and decoder if asked).

    ``path_or_state_dict`` is a checkpoint file, ``{"model": state_dict}``
    (mae's training format, with ``optimizer``, ``epoch``, ``scaler`` and
    ``args`` beside it, included), or a bare state dict. Every encoder key of
    ``model`` must be present with the same shape; keys the encoder does not
    have (other than decoder keys) raise too, except a classification head
    the model lacks (``head.*``; U-MAE's and M-MAE's ``fc.*`` and
    ``fc_norm.*``), which is left out with a :class:`DroppedKeysWarning`
    naming its keys (one line). Raises :class:`DataError` for a missing or
    unreadable file and :class:`ConfigError` naming the first mismatched keys or shapes (build
    the model with the checkpoint's config: patch size, image size, widths).
    Warns (:class:`UnloadedWeightsWarning`, one line) when the decoder
    (``decoder=False``) or a bottleneck projection the checkpoint lacks is
    left at its random initialisation: ``forward``'s ``pred`` and ``loss``,
    or a bottleneck model's ``encode``, are then untrained.

    Returns the sorted list of keys loaded.
    """
    if not isinstance(model, ViTMAE):
        raise ConfigError(f"official MAE checkpoints load into a ViT MAE, not {type(model).__name__}")
    obj = _read(path_or_state_dict)
    sd = obj["model"] if "model" in obj and isinstance(obj["model"], Mapping) else obj
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in sd.items()):
        raise DataError("checkpoint state dict must map names to tensors")
    ours = model.state_dict()
    wanted = set(encoder_keys(model))
    if decoder:
        wanted |= {k for k in ours if _is_decoder_key(k)}
    projection = {k for k in ours if k.startswith(_BOTTLENECK_PREFIX)}
    if projection and any(k.startswith(_BOTTLENECK_PREFIX) for k in sd):
        wanted |= projection  # an hlvm bottleneck model's state dict; a partial one fails as missing keys
    theirs = {k for k in sd if decoder or not _is_decoder_key(k)}
    # A classification head the model lacks is no part of the encoder: left out, and named below.
    dropped = sorted(k for k in theirs - set(ours) if k.startswith(_HEAD_PREFIXES))
    theirs -= set(dropped)
    missing, unexpected = sorted(wanted - theirs), sorted(theirs - wanted)
    if missing:
        more = f" (+{len(missing) - 3} more)" if len(missing) > 3 else ""
        raise ConfigError(f"checkpoint lacks keys the model needs: {', '.join(missing[:3])}{more}")
    if unexpected:
        more = f" (+{len(unexpected) - 3} more)" if len(unexpected) > 3 else ""
        raise ConfigError(f"checkpoint has keys the model lacks: {', '.join(unexpected[:3])}{more}")
    for k in sorted(wanted):
        if tuple(sd[k].shape) != tuple(ours[k].shape):
            raise ConfigError(
                f"checkpoint key {k} has shape {tuple(sd[k].shape)}, the model needs {tuple(ours[k].shape)}"
            )
    with torch.no_grad():
        for k in sorted(wanted):
            ours[k].copy_(sd[k].to(ours[k].dtype))
    left = []
    if not decoder:
        skipped = sum(1 for k in sd if _is_decoder_key(k))
        why = "the checkpoint has none"
        if skipped:
            why = f"{skipped} decoder tensor{'s' * (skipped > 1)} in the checkpoint skipped; pass decoder=True to load them"
        left.append(f"the decoder ({why})")
    if projection - wanted:
        left.append(f"the bottleneck projection {_BOTTLENECK_PREFIX} (official checkpoints have none)")
    if left:
        # One line, so that the CLI's "warning: ..." line (and a log line) holds all of it.
        warnings.warn(
            f"not loaded from the checkpoint, left at random initialisation: {'; '.join(left)}",
            UnloadedWeightsWarning,
            stacklevel=2,
        )
    if dropped:
        warnings.warn(
            f"checkpoint keys of a classification head the model lacks, left out: {', '.join(dropped)}",
            DroppedKeysWarning,
            stacklevel=2,
        )
    return sorted(wanted)
