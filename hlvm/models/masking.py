"""Token masks for the models: random whole-unit masks and the forms a caller may pass.

Tokens are ``p x p`` patches in row-major order over the ``(H/p, W/p)`` token
grid; masking units are ``u x u`` with ``u`` a multiple of ``p``, so a unit
covers ``(u/p)**2`` tokens and a mask never splits a unit. A token mask is a
``(B, L)`` bool tensor, ``True`` = masked (MAE's 1 = removed).

MAE's encoder gathers the visible tokens into a ``(B, L_vis, D)`` tensor, so
every sample in a batch must have the same number of visible tokens: a batch
of masks with unequal counts raises :class:`MaskError` (split such a batch by
mask, or evaluate one mask at a time).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from hlvm.errors import MaskError
from hlvm.masks import Mask, num_masked

from .configs import MAEConfig

__all__ = ["random_token_mask", "aligned_token_mask", "aligned_levels", "units_to_tokens", "resolve_mask", "shuffle_indices"]


def units_to_tokens(units: torch.Tensor, per_unit: int) -> torch.Tensor:
    """``(B, H/u, W/u)`` unit masks -> ``(B, L)`` token masks; ``per_unit = u // p``."""
    tokens = units.repeat_interleave(per_unit, dim=1).repeat_interleave(per_unit, dim=2)  # (B, H/p, W/p)
    return tokens.reshape(tokens.shape[0], -1)  # (B, L)


def random_token_mask(
    cfg: MAEConfig,
    batch: int,
    ratio: float,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """MAE-style random masks, one per sample: exactly ``num_masked(units, ratio)`` whole units.

    As in MAE, each sample gets a uniform random permutation of its units (the
    argsort of uniform noise drawn from ``generator``) and the first
    ``num_masked`` units in it are masked. Returns ``(B, L)`` bool, on the
    generator's device when one is given.
    """
    n_units = cfg.num_units
    n = num_masked(n_units, ratio)  # validates the ratio
    if generator is not None:
        device = generator.device
    noise = torch.rand(batch, n_units, generator=generator, device=device)  # (B, U)
    order = torch.argsort(noise, dim=1)  # (B, U) a random permutation per sample
    units = torch.zeros(batch, n_units, dtype=torch.bool, device=noise.device)
    units.scatter_(1, order[:, :n], True)
    gh, gw = cfg.unit_grid
    return units_to_tokens(units.reshape(batch, gh, gw), cfg.mask_unit // cfg.patch_size)


def aligned_levels(cfg: MAEConfig, branching: int) -> int:
    """Levels ``L`` of the block hierarchy over the unit grid (its side is ``branching ** L``).

    Raises :class:`MaskError` unless the unit grid is square with a side that
    is a power of ``branching`` (what hierarchy-aligned masks need).
    """
    if isinstance(branching, bool) or not isinstance(branching, int | np.integer) or branching < 2:
        raise MaskError(f"branching must be an integer >= 2, got {branching!r}")
    gh, gw = cfg.unit_grid
    levels = 0
    while branching**levels < gh:
        levels += 1
    if gh != gw or branching**levels != gh or levels == 0:
        raise MaskError(
            f"aligned masks need a square unit grid whose side is a power of {branching}; "
            f"got {gh}x{gw} units of {cfg.mask_unit} pixels"
        )
    return levels


def aligned_token_mask(
    cfg: MAEConfig,
    batch: int,
    ratio: float,
    branching: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Hierarchy-aligned masks, one per sample: exactly ``num_masked(units, ratio)`` whole units.

    The torch twin of :func:`hlvm.masks.aligned_unit_masks` (same
    distribution, its own stream): units are visited in a random depth-first
    order of the ``branching x branching`` block hierarchy over the unit grid
    (a random order of the top-level blocks, inside each a random order of its
    sub-blocks, down to single units) and the first ``num_masked`` are masked,
    so the masked set is a union of as few whole blocks as the count allows
    (Kong et al.'s Figure 4). Vectorised over the batch: at each level every
    block gets the rank of a random permutation of its parent's children, and
    a unit's visiting position is the base-``branching**2`` number those ranks
    spell, coarsest level first; masked = position < count. Returns ``(B, L)``
    bool on the generator's device when one is given.
    """
    levels = aligned_levels(cfg, branching)
    n = num_masked(cfg.num_units, ratio)  # validates the ratio
    if generator is not None:
        device = generator.device
    b, side = int(branching), cfg.unit_grid[0]
    position = torch.zeros(batch, side, side, dtype=torch.long, device=device)  # (B, S, S)
    for level in range(1, levels + 1):
        parents = b ** (level - 1)
        keys = torch.rand(batch, parents, parents, b * b, generator=generator, device=device)  # (B, P, P, b*b)
        rank = keys.argsort(dim=-1).argsort(dim=-1)  # (B, P, P, b*b): each child's place among its siblings
        rank = rank.reshape(batch, parents, parents, b, b).permute(0, 1, 3, 2, 4).reshape(batch, parents * b, parents * b)
        up = side // (parents * b)  # units per block side at this level
        rank = rank.repeat_interleave(up, dim=1).repeat_interleave(up, dim=2)  # (B, S, S)
        position += rank * (b * b) ** (levels - level)
    units = position < n  # (B, S, S)
    return units_to_tokens(units, cfg.mask_unit // cfg.patch_size)


def _as_bool(t: torch.Tensor, what: str) -> torch.Tensor:
    if t.dtype == torch.bool:
        return t
    if t.is_floating_point() or t.dtype in (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8):
        if not ((t == 0) | (t == 1)).all():
            raise MaskError(f"{what} values must be 0 (visible) or 1 (masked)")
        return t.bool()
    raise MaskError(f"{what} must be a bool or 0/1 tensor, got dtype {t.dtype}")


def resolve_mask(mask: Any, cfg: MAEConfig, batch: int, device: torch.device | str | None = None) -> torch.Tensor:
    """A caller's mask as a validated ``(B, L)`` bool token mask on ``device``.

    Accepted forms:

    - a :class:`hlvm.masks.Mask` over the ``H x W`` image: the same mask for
      every sample (its masked pixels must form whole ``p x p`` tokens);
    - a ``(B, H/u, W/u)`` tensor or array of masking units (1 = masked);
    - a ``(B, L)`` tensor or array of tokens (1 = masked).

    Every sample must mask at least one token and leave one visible, and all
    samples must mask the same number of tokens (MAE's gather needs equal
    counts); otherwise :class:`MaskError`.
    """
    h, w = cfg.img_hw
    if isinstance(mask, Mask):
        if mask.shape != (h, w):
            raise MaskError(f"mask is {mask.shape[0]}x{mask.shape[1]} but the model's image is {h}x{w}")
        tokens = torch.from_numpy(mask.tokens(cfg.patch_size).copy()).to(device)  # (L,) raises if a token is split
        return tokens.unsqueeze(0).expand(batch, -1).clone()  # (B, L)
    t = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask, device=device)
    gh, gw = cfg.unit_grid
    if t.ndim == 3:
        if tuple(t.shape[1:]) != (gh, gw):
            raise MaskError(f"unit mask must be (B, {gh}, {gw}) for {cfg.mask_unit}-pixel units, got {tuple(t.shape)}")
        tokens = units_to_tokens(_as_bool(t, "unit mask"), cfg.mask_unit // cfg.patch_size)
    elif t.ndim == 2:
        if t.shape[1] != cfg.num_tokens:
            raise MaskError(f"token mask must be (B, {cfg.num_tokens}), got {tuple(t.shape)}")
        tokens = _as_bool(t, "token mask")
    else:
        raise MaskError(
            f"a mask must be a hlvm.masks.Mask, (B, {gh}, {gw}) units or (B, {cfg.num_tokens}) tokens; "
            f"got shape {tuple(t.shape)}"
        )
    if tokens.shape[0] != batch:
        raise MaskError(f"mask batch {tokens.shape[0]} does not match image batch {batch}")
    counts = tokens.sum(dim=1)  # (B,)
    if (counts == 0).any():
        raise MaskError("a mask in the batch is empty: mask at least one token")
    if (counts == tokens.shape[1]).any():
        raise MaskError("a mask in the batch is full: leave at least one token visible")
    if (counts != counts[0]).any():
        raise MaskError(
            f"masks in a batch must mask the same number of tokens (MAE gathers visible tokens); "
            f"got counts from {int(counts.min())} to {int(counts.max())}"
        )
    return tokens


def shuffle_indices(tokens: torch.Tensor, len_keep: int | None = None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``(ids_shuffle, ids_restore, len_keep)`` for a ``(B, L)`` bool token mask with equal counts.

    ``ids_shuffle`` lists the visible tokens first (row-major), then the masked
    ones; ``ids_restore`` is its inverse permutation, so
    ``x_shuffled.gather(1, ids_restore)`` puts tokens back in place (MAE's
    convention). Pass ``len_keep`` when it is known (a random mask's is fixed
    by the config), to spare a device-to-host sync on GPU.
    """
    ids_shuffle = torch.argsort(tokens.to(torch.int8), dim=1, stable=True)  # (B, L) visible first
    ids_restore = torch.argsort(ids_shuffle, dim=1)  # (B, L)
    if len_keep is None:
        len_keep = tokens.shape[1] - int(tokens[0].sum())
    return ids_shuffle, ids_restore, len_keep
