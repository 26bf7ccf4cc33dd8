"""Masks: one object shared by the theory (Algorithm 1) and the MAE models.

A mask marks pixels of an ``H x W`` image as masked (``True`` / 1) or visible
(``False`` / 0), always in whole ``unit x unit`` masking units (MAE's "patch
size" in Kong et al.; the ViT's token patch size is separate and divides it).

Three spec forms (DESIGN.md), exactly one per spec:

- ``{"masked": ["x_0_0", ...]}``: observed node ids;
- ``{"grid": [[0, 1, ...], ...]}``: ``H x W``, 1 = masked;
- ``{"ratio": 0.75, "patch_size": 2, "seed": 0}``: an MAE-style random mask of
  whole ``patch_size x patch_size`` units, ``num_masked(units, ratio)`` of them.

Random masks follow MAE: per mask, a uniform random permutation of the units,
whose first ``n`` are masked. Nothing here imports networkx or torch: a graph
enters only as its ``(H, W)`` grid of observed node ids.

Mask distributions (:data:`MASK_KINDS`, :func:`unit_masks` draws any of
them), each seeded by the generator passed in and vectorised over the masks:

- ``random``: MAE's (He et al. 2022): ``num_masked(units, ratio)`` units, a
  uniform random subset (:func:`random_unit_masks`);
- ``aligned``: the same count, taken depth-first through the hierarchy's
  ``branching x branching`` blocks, so the masked set is as few whole subtrees
  as the count allows (Kong et al. 2023, Figure 4; :func:`aligned_unit_masks`);
- ``block``: the same count in contiguous rectangles of units, BEiT's
  blockwise masking (Bao et al. 2022, "BEiT", Sec. 2.5 and Algorithm 1:
  rectangles of area at least 4 units and aspect ratio in [0.3, 1/0.3],
  drawn until the count is reached; :func:`block_unit_masks`);
- ``complementary``: masks in groups of ``views`` (2) per image whose visible
  sets are pairwise disjoint, each distributed as MAE's (MI-MAE's "orthogonal
  masks", Huang et al. 2025; :func:`complementary_unit_masks`);
- ``variable``: the ratio drawn per mask, uniformly over the unit counts of
  ``ratio +- spread`` (a random mask of that count; variable-ratio masking as
  in e.g. Bandara et al. 2023, "AdaMAE", and Wang et al. 2023;
  :func:`variable_unit_masks`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hlvm.errors import MaskError
from hlvm.io import read_json

__all__ = [
    "MASK_KINDS",
    "VARIABLE_SPREAD",
    "unit_masks",
    "block_unit_masks",
    "complementary_unit_masks",
    "variable_unit_masks",
    "variable_counts",
    "Mask",
    "num_masked",
    "check_unit",
    "random_unit_masks",
    "aligned_unit_masks",
    "unit_to_pixel",
    "pixel_to_unit",
    "load_spec",
    "mask_from_spec",
    "SPEC_FORMS",
]

SPEC_FORMS = ("masked", "grid", "ratio")

#: The mask distributions (module docstring).
MASK_KINDS = ("random", "aligned", "block", "complementary", "variable")
#: Half-width of the ratio range of ``variable`` masks: the ratio is drawn from ``ratio +- spread``.
VARIABLE_SPREAD = 0.2


#: How a mask ratio becomes a count of masked units: hlvm's ``"nearest"`` (``ratio * units`` rounded half up) or
#: MAE's own ``"mae"`` (``units - int(units * (1 - ratio))``, from ``len_keep`` in ``models_mae.random_masking``).
COUNT_RULES = ("nearest", "mae")


def num_masked(units: int, ratio: float, rule: str = "nearest") -> int:
    """Number of masked units: ``ratio * units`` rounded half up (``rule="nearest"``), validated.

    ``rule="mae"`` is facebookresearch/mae's count, ``units - int(units * (1 -
    ratio))``: it masks one more unit at some ratios (196 tokens: 138 rather
    than 137 at 0.7, 40 rather than 39 at 0.2, 177 rather than 176 at 0.9),
    from the float truncation of ``len_keep``. hlvm's own studies use
    ``"nearest"`` (the theory's masks, :func:`hlvm.locate.locate`, count the
    same way); the official MAE configs use ``"mae"``
    (:attr:`hlvm.models.MAEConfig.mask_count`). Raises :class:`MaskError` if
    the ratio is outside (0, 1) or gives an empty or full mask.

    >>> num_masked(16, 0.75), num_masked(64, 0.1)
    (12, 6)
    >>> num_masked(196, 0.7), num_masked(196, 0.7, "mae")
    (137, 138)
    """
    if isinstance(ratio, bool) or not isinstance(ratio, int | float | np.floating) or not math.isfinite(ratio):
        raise MaskError(f"mask ratio must be a number in (0, 1), got {ratio!r}")
    if not 0.0 < ratio < 1.0:
        raise MaskError(f"mask ratio must be in (0, 1), got {ratio}")
    if rule not in COUNT_RULES:
        raise MaskError(f"unknown mask count rule {rule!r}; choose from {', '.join(COUNT_RULES)}")
    n = int(math.floor(ratio * units + 0.5)) if rule == "nearest" else units - int(units * (1 - ratio))
    if n == 0 or n == units:
        what = "no" if n == 0 else "every"
        raise MaskError(f"mask ratio {ratio} of {units} units masks {what} unit; use a ratio nearer 0.5 or smaller units")
    return n


def check_unit(height: int, width: int, unit: int) -> None:
    """Raise :class:`MaskError` unless ``unit`` is a positive integer dividing ``height`` and ``width``."""
    if isinstance(unit, bool) or not isinstance(unit, int | np.integer) or unit < 1:
        raise MaskError(f"mask unit (patch_size) must be a positive integer, got {unit!r}")
    if height % unit or width % unit:
        raise MaskError(f"mask unit {unit} does not divide the {height}x{width} image")


def random_unit_masks(
    k: int, height: int, width: int, ratio: float, unit: int, rng: np.random.Generator
) -> np.ndarray:
    """``k`` MAE-style random masks of whole units, as a ``(k, H, W)`` bool array.

    Each mask masks exactly ``num_masked(units, ratio)`` of the
    ``(H/unit) * (W/unit)`` units, chosen by a uniform random permutation.
    """
    check_unit(height, width, unit)
    hu, wu = height // unit, width // unit
    n = num_masked(hu * wu, ratio)
    order = np.argsort(rng.random((k, hu * wu)), axis=1)  # (k, U)
    units = np.zeros((k, hu * wu), dtype=bool)
    np.put_along_axis(units, order[:, :n], True, axis=1)
    return unit_to_pixel(units.reshape(k, hu, wu), unit)


def aligned_unit_masks(
    k: int, height: int, width: int, ratio: float, unit: int, branching: int, rng: np.random.Generator
) -> np.ndarray:
    """``k`` hierarchy-aligned random masks of whole units, as a ``(k, H, W)`` bool array.

    Same count as :func:`random_unit_masks` (``num_masked(units, ratio)``
    units), but the units are taken in a random depth-first order of a grid
    hierarchy of ``branching x branching`` blocks: a random order of the
    top-level blocks, inside each a random order of its sub-blocks, and so on
    down to single units. The masked set is thus a union of as few whole
    subtrees as the count allows (the paper's Figure 4 regime), where uniform
    masks scatter units over many blocks.

    The unit grid must be square with a side that is a power of ``branching``.
    """
    check_unit(height, width, unit)
    if isinstance(branching, bool) or not isinstance(branching, int | np.integer) or branching < 2:
        raise MaskError(f"branching must be an integer >= 2, got {branching!r}")
    hu, wu = height // unit, width // unit
    levels = 0
    while branching**levels < hu:
        levels += 1
    if hu != wu or branching**levels != hu:
        raise MaskError(
            f"aligned masks need a square unit grid whose side is a power of {branching}; got {hu}x{wu} units of {unit}"
        )
    n = num_masked(hu * wu, ratio)
    # One uniform key per block per level; sorting units by their blocks' keys,
    # coarsest level first, visits the hierarchy depth-first in random order.
    keys = []
    for level in range(levels, 0, -1):  # finest first: np.lexsort's last key is primary
        side = branching**level
        vals = rng.random((k, side, side))  # (k, side, side): one key per block of this level
        keys.append(np.repeat(np.repeat(vals, hu // side, axis=1), wu // side, axis=2).reshape(k, hu * wu))
    if not keys:  # a single unit: num_masked has already refused it
        raise MaskError("one unit cannot be partly masked")  # pragma: no cover
    order = np.lexsort(keys, axis=-1)  # (k, U): units in depth-first random order
    units = np.zeros((k, hu * wu), dtype=bool)
    np.put_along_axis(units, order[:, :n], True, axis=1)
    return unit_to_pixel(units.reshape(k, hu, wu), unit)


def block_unit_masks(
    k: int,
    height: int,
    width: int,
    ratio: float,
    unit: int,
    rng: np.random.Generator,
    *,
    min_area: int = 4,
    aspect: tuple[float, float] = (0.3, 1 / 0.3),
    attempts: int = 10,
) -> np.ndarray:
    """``k`` BEiT-style blockwise masks of exactly ``num_masked(units, ratio)`` units, ``(k, H, W)`` bool.

    BEiT's generator (Bao et al. 2022, Algorithm 1), drawn for all ``k`` masks
    at once: while a mask lacks units, a rectangle of units is proposed with
    area uniform in ``[min(min_area, missing), missing]`` and aspect ratio
    log-uniform in ``aspect``, at a uniform position (smaller than the grid in
    both directions, as BEiT's); it is taken when it adds at least one and at
    most ``missing`` new units. After ``attempts`` proposals per missing unit
    (BEiT gives up instead), the few units still missing are taken uniformly at
    random among the visible ones, so every mask has exactly the stated count.
    """
    check_unit(height, width, unit)
    gh, gw = height // unit, width // unit
    n = num_masked(gh * gw, ratio)
    units = np.zeros((k, gh, gw), dtype=bool)
    count = np.zeros(k, dtype=np.int64)
    lo_a, hi_a = np.log(aspect[0]), np.log(aspect[1])
    rows, cols = np.arange(gh)[None, :, None], np.arange(gw)[None, None, :]
    for _ in range(attempts * n):
        todo = count < n
        if not todo.any():
            break
        missing = (n - count).astype(float)  # (k,)
        area = rng.uniform(np.minimum(min_area, missing), missing)  # (k,)
        ar = np.exp(rng.uniform(lo_a, hi_a, size=k))
        h = np.clip(np.round(np.sqrt(area * ar)), 1, max(1, gh - 1)).astype(np.int64)
        w = np.clip(np.round(np.sqrt(area / ar)), 1, max(1, gw - 1)).astype(np.int64)
        top = (rng.random(k) * (gh - h + 1)).astype(np.int64)  # uniform in [0, gh - h]
        left = (rng.random(k) * (gw - w + 1)).astype(np.int64)
        rect = ((rows >= top[:, None, None]) & (rows < (top + h)[:, None, None])
                & (cols >= left[:, None, None]) & (cols < (left + w)[:, None, None]))  # (k, gh, gw)
        new = (rect & ~units).sum(axis=(1, 2))  # (k,)
        take = todo & (new > 0) & (count + new <= n)
        units |= rect & take[:, None, None]
        count += np.where(take, new, 0)
    short = n - count
    if short.any():  # top up at random: a uniform permutation of the visible units of each mask
        keys = np.where(units.reshape(k, -1), np.inf, rng.random((k, gh * gw)))
        rank = np.argsort(np.argsort(keys, axis=1), axis=1)  # (k, U): visible units first, in random order
        units |= (rank < short[:, None]).reshape(k, gh, gw)
    return unit_to_pixel(units, unit)


def complementary_unit_masks(
    k: int, height: int, width: int, ratio: float, unit: int, rng: np.random.Generator, *, views: int = 2
) -> np.ndarray:
    """``k`` masks in groups of ``views`` whose visible sets are pairwise disjoint, ``(k, H, W)`` bool.

    Group ``g`` is masks ``g * views .. g * views + views - 1`` (``k`` must be a
    multiple of ``views``): one uniform permutation of the units per group, cut
    into runs from its end, each run the visible set of one mask, so every mask
    is distributed as MAE's (:func:`random_unit_masks`), as the torch twin
    :func:`hlvm.models.masking.complementary_token_masks` draws them. Needs
    ``views * visible units <= units`` (:class:`MaskError` otherwise).
    """
    check_unit(height, width, unit)
    gh, gw = height // unit, width // unit
    u = gh * gw
    n = num_masked(u, ratio)
    visible = u - n
    if isinstance(views, bool) or not isinstance(views, int | np.integer) or views < 2:
        raise MaskError(f"complementary masks need at least 2 views, got {views!r}")
    if views * visible > u:
        raise MaskError(
            f"{views} masks with disjoint visible sets need {views} x {visible} <= {u} units at ratio {ratio}; "
            "use a higher ratio or fewer views"
        )
    if k % views:
        raise MaskError(f"complementary masks come in groups of {views}; {k} is not a multiple")
    groups = k // views
    position = np.argsort(np.argsort(rng.random((groups, u)), axis=1), axis=1)  # (G, U)
    v = np.arange(views)[None, :, None]  # (1, V, 1)
    hi = u - v * visible
    masked = ~((position[:, None, :] >= hi - visible) & (position[:, None, :] < hi))  # (G, V, U)
    return unit_to_pixel(masked.reshape(k, gh, gw), unit)


def variable_counts(units: int, ratio: float, spread: float = VARIABLE_SPREAD) -> tuple[int, int]:
    """The smallest and largest masked-unit counts of ``variable`` masks: ``ratio +- spread`` of ``units``, rounded.

    Raises :class:`MaskError` when the range leaves (0, 1) or rounds to an
    empty or full mask at either end.
    """
    if isinstance(spread, bool) or not isinstance(spread, int | float) or not math.isfinite(spread) or spread < 0:
        raise MaskError(f"spread must be a number >= 0, got {spread!r}")
    lo, hi = ratio - spread, ratio + spread
    if not 0.0 < lo and hi < 1.0:
        raise MaskError(f"variable ratio range [{lo:g}, {hi:g}] (ratio {ratio:g} +- spread {spread:g}) must lie inside (0, 1)")
    return num_masked(units, lo), num_masked(units, hi)


def variable_unit_masks(
    k: int,
    height: int,
    width: int,
    ratio: float,
    unit: int,
    rng: np.random.Generator,
    *,
    spread: float = VARIABLE_SPREAD,
    same_count: bool = False,
) -> np.ndarray:
    """``k`` random masks whose unit count is drawn per mask, uniform over :func:`variable_counts`, ``(k, H, W)``.

    ``same_count=True`` draws one count for all ``k`` (a ViT batch must mask
    the same number of tokens in every sample).
    """
    check_unit(height, width, unit)
    gh, gw = height // unit, width // unit
    lo, hi = variable_counts(gh * gw, ratio, spread)
    counts = rng.integers(lo, hi + 1, size=1 if same_count else k)  # (k,) or (1,)
    rank = np.argsort(np.argsort(rng.random((k, gh * gw)), axis=1), axis=1)  # (k, U) a uniform permutation
    return unit_to_pixel((rank < counts[:, None]).reshape(k, gh, gw), unit)


def unit_masks(
    kind: str,
    k: int,
    height: int,
    width: int,
    ratio: float,
    unit: int,
    rng: np.random.Generator,
    *,
    branching: int = 2,
    spread: float = VARIABLE_SPREAD,
) -> np.ndarray:
    """``k`` masks of distribution ``kind`` (:data:`MASK_KINDS`), ``(k, H, W)`` bool; :class:`MaskError` for bad input."""
    if kind == "random":
        return random_unit_masks(k, height, width, ratio, unit, rng)
    if kind == "aligned":
        return aligned_unit_masks(k, height, width, ratio, unit, branching, rng)
    if kind == "block":
        return block_unit_masks(k, height, width, ratio, unit, rng)
    if kind == "complementary":
        return complementary_unit_masks(k + k % 2, height, width, ratio, unit, rng)[:k]
    if kind == "variable":
        return variable_unit_masks(k, height, width, ratio, unit, rng, spread=spread)
    raise MaskError(f"unknown mask kind {kind!r}; choose from {', '.join(MASK_KINDS)}")


def unit_to_pixel(units: np.ndarray, unit: int) -> np.ndarray:
    """Expand ``(..., h, w)`` unit masks to ``(..., h*unit, w*unit)`` pixel masks."""
    units = np.asarray(units, dtype=bool)
    return np.repeat(np.repeat(units, unit, axis=-2), unit, axis=-1)


def pixel_to_unit(grid: np.ndarray, unit: int) -> np.ndarray:
    """Reduce ``(..., H, W)`` pixel masks to ``(..., H/unit, W/unit)`` unit masks.

    Raises :class:`MaskError` if a unit is partly masked.
    """
    grid = np.asarray(grid, dtype=bool)
    h, w = grid.shape[-2:]
    check_unit(h, w, unit)
    blocks = grid.reshape(*grid.shape[:-2], h // unit, unit, w // unit, unit)  # (..., h/u, u, w/u, u)
    anyv, allv = blocks.any(axis=(-3, -1)), blocks.all(axis=(-3, -1))
    if (anyv != allv).any():
        raise MaskError(f"mask is not made of whole {unit}x{unit} units")
    return allv


@dataclass(frozen=True, eq=False)
class Mask:
    """A mask over an ``H x W`` image, made of whole ``unit x unit`` units.

    ``grid`` is ``(H, W)`` bool, ``True`` = masked; it is copied and made
    read-only. A mask must be non-empty and proper (some pixel visible).

    Examples
    --------
    >>> m = Mask.random(4, 4, ratio=0.5, unit=2, seed=0)
    >>> m.n_masked, m.ratio, m.units.shape
    (8, 0.5, (2, 2))
    >>> m.tokens(1).shape
    (16,)
    """

    grid: np.ndarray
    unit: int = 1
    _key: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        grid = np.array(self.grid)
        if grid.ndim != 2 or 0 in grid.shape:
            raise MaskError(f"mask grid must be a non-empty 2-D array, got shape {grid.shape}")
        if grid.dtype != bool:
            if not np.isin(grid, (0, 1)).all():
                raise MaskError("mask grid values must be 0 (visible) or 1 (masked)")
            grid = grid.astype(bool)
        pixel_to_unit(grid, self.unit)  # whole units, unit divides the image
        if not grid.any():
            raise MaskError("mask is empty: mask at least one pixel")
        if grid.all():
            raise MaskError("mask is full: leave at least one pixel visible")
        grid.setflags(write=False)
        object.__setattr__(self, "grid", grid)
        object.__setattr__(self, "unit", int(self.unit))
        object.__setattr__(self, "_key", grid.tobytes() + bytes(str(grid.shape), "ascii"))

    # -- constructors
    @classmethod
    def from_units(cls, units: np.ndarray, unit: int) -> Mask:
        """Mask from an ``(H/unit, W/unit)`` unit grid."""
        return cls(unit_to_pixel(units, unit), unit)

    @classmethod
    def random(
        cls,
        height: int,
        width: int,
        ratio: float,
        unit: int = 1,
        seed: int | None = None,
        rng: np.random.Generator | None = None,
    ) -> Mask:
        """MAE-style random mask; the same ``seed`` gives the same mask (first of :func:`random_unit_masks`)."""
        if (seed is None) == (rng is None):
            raise TypeError("pass exactly one of seed or rng")
        rng = np.random.default_rng(seed) if rng is None else rng
        return cls(random_unit_masks(1, height, width, ratio, unit, rng)[0], unit)

    @classmethod
    def from_nodes(cls, masked: Collection[str], ids: np.ndarray, latents: Collection[str] = ()) -> Mask:
        """Mask the observed nodes ``masked``; ``ids`` is the ``(H, W)`` grid of node ids."""
        where = {v: rc for rc, v in np.ndenumerate(ids)}
        latents = set(latents)
        grid = np.zeros(ids.shape, dtype=bool)
        for v in masked:
            if v in latents:
                raise MaskError(f"{v!r} is a latent node; a mask names observed nodes only")
            if v not in where:
                raise MaskError(f"unknown node {v!r} in mask")
            grid[where[v]] = True
        return cls(grid)

    # -- views
    @property
    def shape(self) -> tuple[int, int]:
        return self.grid.shape  # type: ignore[return-value]

    @property
    def n_masked(self) -> int:
        """Number of masked pixels."""
        return int(self.grid.sum())

    @property
    def ratio(self) -> float:
        """Fraction of pixels masked."""
        return self.n_masked / self.grid.size

    @property
    def visible(self) -> np.ndarray:
        """``(H, W)`` bool, ``True`` = visible."""
        return ~self.grid

    @property
    def units(self) -> np.ndarray:
        """``(H/unit, W/unit)`` bool unit grid."""
        return pixel_to_unit(self.grid, self.unit)

    def tokens(self, patch: int) -> np.ndarray:
        """Flattened row-major ``(H/patch * W/patch,)`` bool token mask for a ViT of token size ``patch``.

        Raises :class:`MaskError` if a token would be partly masked.
        """
        return pixel_to_unit(self.grid, patch).reshape(-1)

    def masked_ids(self, ids: np.ndarray) -> list[str]:
        """Sorted ids of the masked observed nodes; ``ids`` is the ``(H, W)`` id grid."""
        if ids.shape != self.shape:
            raise MaskError(f"mask is {self.shape[0]}x{self.shape[1]} but the image is {ids.shape[0]}x{ids.shape[1]}")
        return sorted(ids[self.grid].tolist())

    def to_spec(self) -> dict[str, Any]:
        """The ``grid`` spec form of this mask."""
        return {"grid": self.grid.astype(int).tolist()}

    def render(self, masked: str = "x", visible: str = ".") -> str:
        """Text picture of the grid, one row per line."""
        return "\n".join(" ".join(masked if m else visible for m in row) for row in self.grid)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mask) and self._key == other._key

    def __hash__(self) -> int:
        return hash(self._key)


# ----------------------------------------------------------------------------- specs


def load_spec(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a mask spec file; missing or malformed files raise :class:`MaskError`."""
    return read_json(path, "mask spec", MaskError)


def mask_from_spec(spec: Mapping[str, Any], ids: np.ndarray, latents: Collection[str] = ()) -> Mask:
    """Build the :class:`Mask` a spec describes, for the image whose id grid is ``ids``.

    ``latents`` (the graph's latent ids) lets a latent named in ``masked`` be
    reported as such rather than as unknown.
    """
    forms = [f for f in SPEC_FORMS if f in spec]
    if len(forms) != 1:
        found = " and ".join(repr(f) for f in forms) if forms else "none"
        raise MaskError(f"a mask spec needs exactly one of 'masked', 'grid', 'ratio'; found {found}")
    allowed = {"masked": {"masked"}, "grid": {"grid"}, "ratio": {"ratio", "patch_size", "seed"}}[forms[0]]
    unknown = sorted(set(spec) - allowed - {"graph"})
    if unknown:
        raise MaskError(f"unknown key {unknown[0]!r} in a {forms[0]!r} mask spec")
    h, w = ids.shape
    if forms[0] == "masked":
        masked = spec["masked"]
        if not isinstance(masked, list) or not all(isinstance(v, str) for v in masked):
            raise MaskError("'masked' must be a list of observed node ids")
        return Mask.from_nodes(masked, ids, latents)
    if forms[0] == "grid":
        grid = spec["grid"]
        if not isinstance(grid, list) or not all(isinstance(r, list) for r in grid):
            raise MaskError("'grid' must be a list of rows of 0/1")
        if len(grid) == 0:
            raise MaskError("'grid' is empty")
        if len(grid) != h or any(len(r) != w for r in grid):
            widths = sorted({len(r) for r in grid})
            raise MaskError(f"'grid' must be {h}x{w} for this image, got {len(grid)} rows of width {widths}")
        if not all(x in (0, 1) and not isinstance(x, float) for r in grid for x in r):
            raise MaskError("'grid' values must be 0 (visible) or 1 (masked)")
        return Mask(np.array(grid, dtype=bool))
    patch = spec.get("patch_size", 1)
    seed = spec.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise MaskError(f"'seed' must be a non-negative integer, got {seed!r}")
    return Mask.random(h, w, ratio=spec["ratio"], unit=patch, seed=seed)
