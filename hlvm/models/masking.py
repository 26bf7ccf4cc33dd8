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
from .patches import patchify

__all__ = [
    "boundary_keep",
    "boundary_keep_numpy",
    "random_token_mask",
    "aligned_token_mask",
    "aligned_levels",
    "complementary_token_masks",
    "check_complementary",
    "DISJOINT",
    "units_to_tokens",
    "token_pixel_mask",
    "resolve_mask",
    "resolve_mask_with_count",
    "shuffle_indices",
]

#: What K complementary views keep apart: their visible sets or their masked sets.
DISJOINT = ("visible", "masked")


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
    n = num_masked(n_units, ratio, cfg.mask_count)  # validates the ratio; MAE's own count for its configs
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
    units = _aligned_positions(cfg, batch, branching, levels, generator, device) < n  # (B, S, S)
    return units_to_tokens(units, cfg.mask_unit // cfg.patch_size)


def _aligned_positions(
    cfg: MAEConfig, batch: int, branching: int, levels: int, generator: torch.Generator | None, device: Any
) -> torch.Tensor:
    """``(B, S, S)`` long: each unit's place in a random depth-first visit of the block hierarchy."""
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
    return position


def check_complementary(n_units: int, ratio: float, views: int, disjoint: str = "visible") -> tuple[int, int]:
    """``(masked, visible)`` units per view of ``views`` complementary masks; MaskError if they cannot exist.

    ``disjoint="visible"``: the views' visible sets are pairwise disjoint,
    which needs ``views * visible <= n_units``; ``"masked"``: their masked
    sets are, which needs ``views * masked <= n_units``.
    """
    if disjoint not in DISJOINT:
        raise MaskError(f"disjoint must be one of {', '.join(DISJOINT)}, got {disjoint!r}")
    if isinstance(views, bool) or not isinstance(views, int | np.integer) or views < 2:
        raise MaskError(f"complementary masks need at least 2 views, got {views!r}")
    masked = num_masked(n_units, ratio)
    visible = n_units - masked
    each = visible if disjoint == "visible" else masked
    if views * each > n_units:
        raise MaskError(
            f"{views} masks with disjoint {disjoint} sets need {views} x {each} <= {n_units} units, "
            f"but ratio {ratio:g} leaves {each} {disjoint} units per mask"
        )
    return masked, visible


def complementary_token_masks(
    cfg: MAEConfig,
    batch: int,
    ratio: float,
    views: int,
    *,
    disjoint: str = "visible",
    kind: str = "random",
    branching: int = 2,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """``views`` masks of each sample whose visible (or masked) sets are pairwise disjoint.

    Returns ``(views * B, L)`` bool, view-major: row ``k * B + i`` is view
    ``k`` of sample ``i`` (``imgs.repeat(views, 1, 1, 1)`` lines up with it).
    Every view masks exactly ``num_masked(units, ratio)`` whole units, so the
    views of a batch go through one forward pass.

    One random visiting order of the units per sample (``kind="random"``:
    a uniform permutation, MAE's; ``"aligned"``: the depth-first order of
    :func:`aligned_token_mask`), cut into runs: with ``disjoint="visible"``
    view ``k`` keeps visible the ``k``-th run of ``visible`` units counted
    from the end of the order, with ``"masked"`` it masks the ``k``-th run of
    ``masked`` units from the start. View 0 is therefore exactly the mask
    :func:`random_token_mask` / :func:`aligned_token_mask` would give for the
    same draw, and every view of random kind is distributed as MAE's mask.
    Aligned views are runs of the depth-first order: whole blocks where the
    run lengths fit the blocks (e.g. quarters at ratio 0.75), as aligned as
    their place in the order allows otherwise. Infeasible counts raise
    :class:`MaskError` (:func:`check_complementary`).
    """
    masked, visible = check_complementary(cfg.num_units, ratio, views, disjoint)
    if kind == "aligned":
        levels = aligned_levels(cfg, branching)
        position = _aligned_positions(cfg, batch, branching, levels, generator, device).reshape(batch, -1)  # (B, U)
    elif kind == "random":
        if generator is not None:
            device = generator.device
        noise = torch.rand(batch, cfg.num_units, generator=generator, device=device)  # (B, U) as random_token_mask
        position = torch.argsort(torch.argsort(noise, dim=1), dim=1)  # (B, U) each unit's place in the permutation
    else:
        raise MaskError(f"complementary masks are 'random' or 'aligned', got {kind!r}")
    n = cfg.num_units
    k = torch.arange(views, device=position.device).view(views, 1, 1)  # (K, 1, 1)
    pos = position.unsqueeze(0)  # (1, B, U)
    if disjoint == "visible":
        hi = n - k * visible
        units = ~((pos >= hi - visible) & (pos < hi))  # (K, B, U) visible = the k-th run from the end
    else:
        units = (pos >= k * masked) & (pos < (k + 1) * masked)  # (K, B, U) masked = the k-th run from the start
    gh, gw = cfg.unit_grid
    return units_to_tokens(units.reshape(views * batch, gh, gw), cfg.mask_unit // cfg.patch_size)


def token_pixel_mask(tokens: torch.Tensor, cfg: MAEConfig) -> torch.Tensor:
    """``(B, L)`` token mask -> ``(B, H, W)`` float pixel mask (1 = masked)."""
    gh, gw = cfg.token_grid
    p = cfg.patch_size
    grid = tokens.reshape(-1, gh, gw)  # (B, H/p, W/p)
    return grid.repeat_interleave(p, dim=1).repeat_interleave(p, dim=2).float()  # (B, H, W)


def _as_bool(t: torch.Tensor, what: str) -> torch.Tensor:
    if t.dtype == torch.bool:
        return t
    if t.is_floating_point() or t.dtype in (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8):
        if not ((t == 0) | (t == 1)).all():
            raise MaskError(f"{what} values must be 0 (visible) or 1 (masked)")
        return t.bool()
    raise MaskError(f"{what} must be a bool or 0/1 tensor, got dtype {t.dtype}")


def resolve_mask(
    mask: Any, cfg: MAEConfig, batch: int, device: torch.device | str | None = None, *, equal_counts: bool = True
) -> torch.Tensor:
    """A caller's mask as a validated ``(B, L)`` bool token mask on ``device``.

    Accepted forms:

    - a :class:`hlvm.masks.Mask` over the ``H x W`` image: the same mask for
      every sample (its masked pixels must form whole ``p x p`` tokens);
    - a ``(B, H/u, W/u)`` tensor or array of masking units (1 = masked);
    - a ``(B, L)`` tensor or array of tokens (1 = masked).

    Every sample must mask at least one token and leave one visible, and
    (with ``equal_counts``, which the ViT's gather of the visible tokens
    needs; the MLP takes any) all samples must mask the same number of
    tokens; otherwise :class:`MaskError`.
    """
    return resolve_mask_with_count(mask, cfg, batch, device, equal_counts=equal_counts)[0]


def resolve_mask_with_count(
    mask: Any, cfg: MAEConfig, batch: int, device: torch.device | str | None = None, *, equal_counts: bool = True
) -> tuple[torch.Tensor, int]:
    """:func:`resolve_mask`'s token mask and the number of tokens its first sample masks, a Python int.

    The count comes without a read of its own: from the :class:`hlvm.masks.Mask`
    (numpy, on the host), or, for a tensor, from the one read to the host
    that validating its counts takes anyway (a tensor that is not bool is
    read once more, to check that it holds only 0 and 1). The model needs
    it to slice the visible tokens; reading it apart
    (``int(tokens[0].sum())``) would be one more device sync, and one more
    ``torch.compile`` graph break.
    """
    h, w = cfg.img_hw
    if isinstance(mask, Mask):
        if mask.shape != (h, w):
            raise MaskError(f"mask is {mask.shape[0]}x{mask.shape[1]} but the model's image is {h}x{w}")
        grid = mask.tokens(cfg.patch_size)  # (L,) raises if a token is split
        tokens = torch.from_numpy(grid.copy()).to(device)
        return tokens.unsqueeze(0).expand(batch, -1).clone(), int(grid.sum())  # (B, L)
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
    # One read to the host for every check below and the count returned: each `if` on a tensor (and each int()
    # of one) is a device sync of its own and a torch.compile graph break.
    least, most, first = torch.stack([counts.min(), counts.max(), counts[0]]).tolist()
    if least == 0:
        raise MaskError("a mask in the batch is empty: mask at least one token")
    if most == tokens.shape[1]:
        raise MaskError("a mask in the batch is full: leave at least one token visible")
    if equal_counts and least != most:
        raise MaskError(
            f"masks in a batch must mask the same number of tokens (MAE gathers visible tokens); "
            f"got counts from {least} to {most}"
        )
    return tokens, first


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


def boundary_keep(tokens: torch.Tensor, cfg: MAEConfig, k: int) -> torch.Tensor:
    """``(B, L, p*p)`` float: 1 for the masked pixels of each token farther than ``k`` pixels from every visible one.

    Distance is Chebyshev (a pixel is near a visible one when both fall in one
    ``(2k+1) x (2k+1)`` window): the visible pixel mask dilated by ``k``
    (a max-pool) marks the pixels to drop. Pixels are laid out as
    :func:`hlvm.models.patchify` lays out a token, row-major in ``(p, p)``.
    """
    pix = token_pixel_mask(tokens, cfg)  # (B, H, W) 1 = masked
    near = torch.nn.functional.max_pool2d((1.0 - pix).unsqueeze(1), 2 * k + 1, stride=1, padding=k)  # (B, 1, H, W)
    keep = pix.unsqueeze(1) * (1.0 - near)  # (B, 1, H, W) masked and far from every visible pixel
    return patchify(keep, cfg.patch_size)  # (B, L, p*p)


def boundary_keep_numpy(grids: np.ndarray, k: int) -> np.ndarray:
    """The numpy twin of :func:`boundary_keep` on ``(N, H, W)`` bool pixel masks: ``(N, H, W)`` bool kept pixels."""
    from scipy.ndimage import maximum_filter

    grids = np.asarray(grids, dtype=bool)
    near = maximum_filter(~grids, size=(1, 2 * k + 1, 2 * k + 1), mode="constant", cval=False)
    return grids & ~near
