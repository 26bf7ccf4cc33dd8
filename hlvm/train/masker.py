"""How a training step masks its batch (one distribution of :data:`TRAIN_MASK_KINDS`, or a fixed mask)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from hlvm.errors import ConfigError, HlvmError

from .config import TrainConfig
from .data import _Source


@dataclass(frozen=True)
class _Masker:
    """How a training step masks its batch: ``masker(x, gen) -> (images, keyword arguments for forward)``.

    With ``views = K > 1`` (MI-MAE) the images are the batch repeated K
    times along the batch dimension, view-major, and the masks K
    complementary masks of each image (one forward pass for all views);
    the ``complementary`` mask kind does the same with K = 2 on half the
    batch. The generator is passed on in every case: a model with a Gaussian
    posterior draws its noise from it (others leave it alone when given a
    mask, so their mask streams are as before).
    """

    kind: str
    ratio: float
    fixed: Any = None
    mcfg: Any = None
    branching: int = 2
    views: int = 1
    disjoint: str = "visible"
    spread: float = 0.2

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, dict[str, Any]]:
        from hlvm.models import masking

        if self.views > 1 or self.kind == "complementary":
            views, imgs = (self.views, x) if self.views > 1 else (2, x[: x.shape[0] // 2])
            kind = self.kind if self.views > 1 else "random"
            tokens = masking.complementary_token_masks(
                self.mcfg, imgs.shape[0], self.ratio, views, disjoint=self.disjoint, kind=kind,
                branching=self.branching, generator=gen,
            )  # (K*B', L) view-major
            return imgs.repeat(views, 1, 1, 1), {"mask": tokens.to(x.device), "generator": gen}  # (K*B', C, H, W)
        if self.fixed is not None:
            return x, {"mask": self.fixed, "generator": gen}
        if self.kind == "aligned":
            tokens = masking.aligned_token_mask(self.mcfg, x.shape[0], self.ratio, self.branching, generator=gen)  # (B, L)
            return x, {"mask": tokens.to(x.device), "generator": gen}
        if self.kind in ("block", "variable"):
            return x, {"mask": self._numpy_tokens(x.shape[0], gen).to(x.device), "generator": gen}
        return x, {"mask_ratio": self.ratio, "generator": gen}

    def _numpy_tokens(self, batch: int, gen: torch.Generator) -> torch.Tensor:
        """``(B, L)`` token masks of a numpy mask family, seeded by one draw from the run's mask generator."""
        from hlvm.masks import pixel_to_unit, unit_masks

        seed = int(torch.randint(0, 2**62, (1,), generator=gen))
        h, w = self.mcfg.img_hw
        rng = np.random.default_rng(seed)
        if self.kind == "variable":
            from hlvm.masks import variable_unit_masks

            # A ViT gathers the visible tokens, so its batch must mask equal counts: one count per batch there.
            grids = variable_unit_masks(batch, h, w, self.ratio, self.mcfg.mask_unit, rng, spread=self.spread,
                                        same_count=self.mcfg.arch == "vit")
        else:
            grids = unit_masks(self.kind, batch, h, w, self.ratio, self.mcfg.mask_unit, rng)
        return torch.from_numpy(pixel_to_unit(grids, self.mcfg.patch_size).reshape(batch, -1))  # (B, L)

    @property
    def logged_ratio(self) -> float:
        return self.fixed.ratio if self.fixed is not None else self.ratio


def _masker(cfg: TrainConfig, mcfg: Any, src: _Source, fixed_mask: Any, objective: Any = None) -> _Masker:
    """The run's masking, checked against the model's unit grid before anything is written."""
    from hlvm.masks import unit_masks
    from hlvm.predict import graph_branching

    # A grid hierarchy's own branching; quad-tree blocks for other data (image folders, user graphs).
    branching = (graph_branching(src.graph) if src.graph is not None else None) or 2
    views, disjoint = (objective.views, objective.disjoint) if objective is not None else (1, "visible")
    if views > 1 and cfg.mask_kind not in ("random", "aligned"):
        raise ConfigError(f"{cfg.objective}'s complementary views follow random or aligned masks, not {cfg.mask_kind!r}")
    if cfg.mask_kind == "complementary" and cfg.batch_size % 2:
        raise ConfigError(f"complementary masks pair the images of a batch: the batch size must be even, got {cfg.batch_size}")
    h, w = mcfg.img_hw
    probe = None
    if fixed_mask is None:
        try:
            if cfg.mask_kind == "aligned":
                from hlvm.models.masking import aligned_levels

                aligned_levels(mcfg, branching)
            # A sample of the training distribution: every kind's count and shape checks, and the boundary's.
            probe = unit_masks(cfg.mask_kind, 64, h, w, cfg.mask_ratio, mcfg.mask_unit, np.random.default_rng(0),
                               branching=branching, spread=cfg.mask_spread)
        except HlvmError as e:
            raise ConfigError(str(e)) from None
    else:
        probe = fixed_mask.grid[None]
    if cfg.boundary_ignore:
        from hlvm.models.masking import boundary_keep_numpy

        if not boundary_keep_numpy(probe, cfg.boundary_ignore).any():
            raise ConfigError(
                f"boundary_ignore {cfg.boundary_ignore} leaves no masked pixel in the loss: every masked pixel of these "
                f"masks is within {cfg.boundary_ignore} pixels of a visible one; use a smaller K"
            )
    return _Masker(cfg.mask_kind, cfg.mask_ratio, fixed_mask, mcfg, branching, views, disjoint, cfg.mask_spread)


#: Entropy tag of the held-out batch of ``TrainConfig.heldout_every`` (beside the run's seed): a stream of its own.
