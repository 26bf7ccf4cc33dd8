"""What every MAE shares: the output record, the masking entry point, the masked loss.

``patchify`` / ``unpatchify`` live in :mod:`hlvm.models.patches` (which
:mod:`hlvm.models.masking` uses too) and are re-exported here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from hlvm.errors import ConfigError, DataError, MaskError
from hlvm.masks import num_masked

from .configs import MAEConfig
from .masking import boundary_keep, random_token_mask, resolve_mask_with_count
from .patches import patchify, unpatchify

__all__ = ["MAE", "MAEOutput", "patchify", "unpatchify", "POSTERIOR_MIN_LOGVAR", "POSTERIOR_INIT_LOGVAR"]

#: Floor of a Gaussian posterior's log-variance. MIM's loss rewards a sharp posterior without
#: bound (log q(z|x) grows as sigma -> 0), so the variance needs a floor; Livne's MIM code floors
#: the scale (``--min-logvar``), ours is a smooth floor on the log-variance: sigma >= e^-5.
POSTERIOR_MIN_LOGVAR = -10.0
#: The log-variance a fresh posterior head gives every input: sigma = 0.1, so that training starts
#: near MAE's deterministic code instead of decoding noise as large as the code itself.
POSTERIOR_INIT_LOGVAR = 2.0 * math.log(0.1)


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
    inputs : the ``(B, C, H, W)`` images the pass saw (the tensor itself, in
        the model's dtype), for objectives whose terms look at the input
        (MI-MAE's bound on I(x; z)).
    cls : ``(B, D)`` the ViT's class token passed through the encoder's final
        norm a second time, as U-MAE's and M-MAE's ``models_mae.py`` take
        their ``cls_feats`` (``self.norm(latent)[:, 0]`` of an already normed
        ``latent``); None for the MLP MAE.
    posterior_mean, posterior_logvar, posterior_sample : with a Gaussian
        posterior (``MAEConfig.posterior``), its mean and log-variance and
        the ``z`` the decoder decoded, each ``(B, d)`` (a code) or ``(B, T,
        D)`` (a ViT's visible tokens, class token first); None otherwise.
    """

    loss: torch.Tensor
    pred: torch.Tensor
    mask: torch.Tensor
    ids_restore: torch.Tensor
    latent: torch.Tensor
    features: torch.Tensor
    inputs: torch.Tensor | None = None
    cls: torch.Tensor | None = None
    posterior_mean: torch.Tensor | None = None
    posterior_logvar: torch.Tensor | None = None
    posterior_sample: torch.Tensor | None = None


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
        """The token mask and its number of visible tokens as a Python int.

        Known on the host without a device read for a random mask (from the
        config) or a :class:`hlvm.masks.Mask`; a tensor mask's count comes
        from the one read that validating it takes (:func:`.masking.resolve_mask_with_count`).
        """
        n_tokens = self.cfg.num_tokens
        if mask is None:
            tokens = random_token_mask(self.cfg, imgs.shape[0], mask_ratio, generator=generator, device=imgs.device)
            per_unit = (self.cfg.mask_unit // self.cfg.patch_size) ** 2
            return tokens.to(imgs.device), n_tokens - num_masked(self.cfg.num_units, mask_ratio, self.cfg.mask_count) * per_unit
        tokens, masked = resolve_mask_with_count(
            mask, self.cfg, imgs.shape[0], device=imgs.device, equal_counts=self.cfg.arch == "vit"
        )
        return tokens, n_tokens - masked

    def masked_loss(
        self, imgs: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor, *, boundary_ignore: int = 0
    ) -> torch.Tensor:
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

        ``boundary_ignore = K > 0`` drops the masked pixels within ``K``
        pixels (Chebyshev) of a visible pixel (:func:`hlvm.models.masking.boundary_keep`):
        a token's error is then the mean over its kept pixels (and their
        channels), and the loss the mean over tokens that keep any pixel (0
        when none does). ``norm_pix_loss`` still normalises each target token
        by the mean and variance of all its pixels, as MAE does, before the
        dropped pixels' errors leave the mean: the kept pixels are judged on
        the same scale as without the option. With token patch ``p > 1`` a
        token can be partly kept, so the option works per pixel, not per
        token. ``K = 0`` runs MAE's computation unchanged.
        """
        dtype = torch.promote_types(torch.promote_types(pred.dtype, imgs.dtype), torch.float32)
        target = patchify(imgs, self.cfg.patch_size).to(dtype)  # (B, L, p*p*C)
        if self.cfg.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1.0e-6) ** 0.5
        if boundary_ignore:
            b, n, _ = target.shape
            keep = boundary_keep(mask.bool(), self.cfg, boundary_ignore).to(dtype)  # (B, L, p*p)
            err = ((pred.to(dtype) - target) ** 2).reshape(b, n, keep.shape[-1], -1).mean(dim=-1)  # (B, L, p*p)
            kept = keep.sum(dim=-1)  # (B, L)
            per_token = (err * keep).sum(dim=-1) / kept.clamp(min=1)  # (B, L)
            used = (kept > 0).to(dtype)
            return (per_token * used).sum() / used.sum().clamp(min=1)
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

    def decoder_features(self, imgs: torch.Tensor, mask: Any) -> torch.Tensor:  # pragma: no cover - abstract
        """Livne's *informative embedding* of the visible part: the decoder's hidden states, ``(B, F)``."""
        raise NotImplementedError

    # -- a Gaussian posterior q(z | x_visible) (MAEConfig.posterior == "gaussian")
    def _add_posterior_head(self, width: int) -> None:
        """The log-variance head, created last so that every other weight draws what it draws without it."""
        if self.cfg.posterior is None:
            return
        self.posterior_logvar = nn.Linear(width, width)
        nn.init.zeros_(self.posterior_logvar.weight)
        # the bias whose smooth floor (see _posterior) gives exactly POSTERIOR_INIT_LOGVAR
        gap = POSTERIOR_INIT_LOGVAR - POSTERIOR_MIN_LOGVAR
        nn.init.constant_(self.posterior_logvar.bias, POSTERIOR_MIN_LOGVAR + gap + math.log(-math.expm1(-gap)))

    def _posterior(
        self, mean: torch.Tensor, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """``(what the decoder decodes, logvar, z)``: the mean itself without a posterior.

        In training mode ``z = mean + exp(logvar / 2) * eps`` with ``eps`` drawn
        from ``generator`` (hlvm.train passes its seeded mask generator, so a
        resumed run draws the same noise), else from torch's global generator;
        in eval mode ``z`` is the mean. ``mean`` is ``(B, d)`` or ``(B, T, D)``.
        """
        if self.cfg.posterior is None:
            return mean, None, None
        raw = self.posterior_logvar(mean)
        # smooth floor: logvar = floor + softplus(raw - floor) keeps a gradient everywhere
        logvar = POSTERIOR_MIN_LOGVAR + nn.functional.softplus(raw - POSTERIOR_MIN_LOGVAR)
        if not self.training:
            return mean, logvar, mean
        device = generator.device if generator is not None else mean.device
        eps = torch.randn(mean.shape, generator=generator, device=device, dtype=torch.float32).to(mean.device, mean.dtype)
        z = mean + torch.exp(0.5 * logvar) * eps
        return z, logvar, z

    @staticmethod
    def _no_hidden(what: str) -> ConfigError:
        return ConfigError(f"this model's decoder has no hidden layers: no {what}")
