"""What every MAE shares: the output record, patchify, masking entry point, masked loss."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from hlvm.errors import DataError, MaskError
from hlvm.masks import Mask, num_masked

from .configs import MAEConfig
from .masking import random_token_mask, resolve_mask

__all__ = ["MAE", "MAEOutput", "patchify", "unpatchify"]


@dataclass
class MAEOutput:
    """One forward pass.

    Attributes
    ----------
    loss : scalar, mean squared error over the masked tokens only; float64 for a
        float64 model, else float32 (also under bf16 autocast).
    pred : ``(B, L, p*p*C)`` predicted tokens (visible ones carry no loss;
        with a bottleneck they are zeros, as the decoder never fills them).
    mask : ``(B, L)`` float, 1 = masked.
    ids_restore : ``(B, L)`` long, MAE's unshuffle indices (visible first).
    latent : the encoder output: ``(B, 1+L_vis, D)`` tokens (ViT, class token
        first), or the ``(B, d)`` code when there is a bottleneck / the MLP.
    features : ``(B, F)`` per-sample representation the objectives act on;
        equal to ``model.encode(imgs, mask)``.
    """

    loss: torch.Tensor
    pred: torch.Tensor
    mask: torch.Tensor
    ids_restore: torch.Tensor
    latent: torch.Tensor
    features: torch.Tensor


def patchify(imgs: torch.Tensor, p: int) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B, L, p*p*C)`` row-major tokens, each laid out ``(p, p, C)`` as MAE's."""
    b, c, h, w = imgs.shape
    x = imgs.reshape(b, c, h // p, p, w // p, p)  # (B, C, h, p, w, p)
    x = torch.einsum("nchpwq->nhwpqc", x)  # (B, h, w, p, p, C)
    return x.reshape(b, (h // p) * (w // p), p * p * c)  # (B, L, p*p*C)


def unpatchify(x: torch.Tensor, p: int, grid: tuple[int, int], chans: int) -> torch.Tensor:
    """Inverse of :func:`patchify`: ``(B, L, p*p*C)`` -> ``(B, C, H, W)``."""
    gh, gw = grid
    b = x.shape[0]
    x = x.reshape(b, gh, gw, p, p, chans)  # (B, h, w, p, p, C)
    x = torch.einsum("nhwpqc->nchpwq", x)  # (B, C, h, p, w, p)
    return x.reshape(b, chans, gh * p, gw * p)  # (B, C, H, W)


class MAE(nn.Module):
    """Base class: ``forward(imgs, mask_ratio=0.75, mask=None, generator=None) -> MAEOutput``."""

    cfg: MAEConfig

    def __init__(self, cfg: MAEConfig) -> None:
        super().__init__()
        self.cfg = cfg

    # -- helpers shared by the architectures
    def _check_imgs(self, imgs: torch.Tensor) -> torch.Tensor:
        c, (h, w) = self.cfg.in_chans, self.cfg.img_hw
        if imgs.ndim != 4 or tuple(imgs.shape[1:]) != (c, h, w):
            raise DataError(f"model expects images of shape (B, {c}, {h}, {w}), got {tuple(imgs.shape)}")
        dtype = next(self.parameters()).dtype
        return imgs.to(dtype) if imgs.dtype != dtype else imgs

    def token_mask(
        self,
        imgs: torch.Tensor,
        mask_ratio: float = 0.75,
        mask: Any = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """``(B, L)`` bool token mask: ``mask`` validated if given, else a random whole-unit mask."""
        return self._mask_and_keep(imgs, mask_ratio, mask, generator)[0]

    def _mask_and_keep(
        self, imgs: torch.Tensor, mask_ratio: float, mask: Any, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, int]:
        """The token mask and its number of visible tokens, known on the host without a device sync."""
        n_tokens = self.cfg.num_tokens
        if mask is None:
            tokens = random_token_mask(self.cfg, imgs.shape[0], mask_ratio, generator=generator, device=imgs.device)
            per_unit = (self.cfg.mask_unit // self.cfg.patch_size) ** 2
            return tokens.to(imgs.device), n_tokens - num_masked(self.cfg.num_units, mask_ratio) * per_unit
        tokens = resolve_mask(mask, self.cfg, imgs.shape[0], device=imgs.device)
        if isinstance(mask, Mask):
            return tokens, n_tokens - int(mask.tokens(self.cfg.patch_size).sum())
        return tokens, n_tokens - int(tokens[0].sum())

    def masked_loss(self, imgs: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean squared error per token, averaged over masked tokens only (MAE's ``forward_loss``).

        ``imgs`` ``(B, C, H, W)``, ``pred`` ``(B, L, p*p*C)``, ``mask`` ``(B, L)``
        (1 = masked) -> a scalar. ``norm_pix_loss`` normalises each target
        token by its own mean and (unbiased) variance, as MAE does.

        The dtype is the wider of the inputs' and float32. A float64 model's
        loss is float64; a float32 model's is float32 and equals mae's bit for
        bit (the same operations in the same order). Under bf16 autocast
        ``pred`` is bf16 while ``imgs`` stay float32, and mae's ``pred -
        target`` promotes to float32: so is the loss here, and the mask is
        counted in float32 too (bf16 holds 8 significant bits, so a count of
        masked tokens above 256 would round). A model cast to bf16 or fp16
        without autocast also gets a float32 loss, the precision mae's loss
        has under autocast.
        """
        dtype = torch.promote_types(torch.promote_types(pred.dtype, imgs.dtype), torch.float32)
        target = patchify(imgs, self.cfg.patch_size).to(dtype)  # (B, L, p*p*C)
        if self.cfg.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1.0e-6) ** 0.5
        per_token = ((pred.to(dtype) - target) ** 2).mean(dim=-1)  # (B, L)
        mask = mask.to(dtype)  # 0/1: exact in any dtype; its sum is exact in float32 up to 2**24 tokens
        return (per_token * mask).sum() / mask.sum()

    def _encode_mask(self, imgs: torch.Tensor, mask: Any) -> tuple[torch.Tensor, int]:
        # encode() is the theory's E(x_mc): it has no meaning without a mask, so none is drawn for it.
        if mask is None:
            raise MaskError("encode needs a mask (a hlvm.masks.Mask, unit or token mask); got None")
        return self._mask_and_keep(imgs, 0.5, mask, None)

    def encode(self, imgs: torch.Tensor, mask: Any) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError
