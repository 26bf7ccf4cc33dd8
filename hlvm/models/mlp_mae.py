"""The MLP masked autoencoder: docs/theory.md's encoder and decoder taken literally.

Encoder ``E``: the visible pixels (masked ones zeroed) and the pixel mask,
flattened, through an MLP to the code ``c_hat`` (width ``bottleneck``, or
``embed_dim`` without one). Decoder ``g``: the code and the mask through an
MLP to every pixel; the loss counts the masked ones only, so the decoder is
the theory's ``x_m = g(c, mask)``. Small enough to train in seconds on CPU,
so wide sweeps can use it while the ViT shows the same on the real
architecture.

With ``MAEConfig.posterior="gaussian"`` the code is the mean of a Gaussian
``q(z | x_visible)`` whose log-variance is a linear head on it; the decoder
decodes a sample in training (MIM's probabilistic code, for ``cmim``).
:meth:`MLPMAE.decoder_features` is Livne's *informative embedding*: the
decoder's hidden activations when it decodes the code.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .base import MAE, MAEOutput
from .configs import MAEConfig
from .masking import shuffle_indices, token_pixel_mask
from .patches import patchify

__all__ = ["MLPMAE"]


def _mlp(widths: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(nn.GELU())
    return nn.Sequential(*layers)


class MLPMAE(MAE):
    """MLP MAE; see the module docstring. Build with :func:`hlvm.models.build_model`."""

    def __init__(self, cfg: MAEConfig) -> None:
        super().__init__(cfg)
        h, w = cfg.img_hw
        n_pix, n_in = h * w, cfg.in_chans * h * w
        self.encoder = _mlp([n_in + n_pix, *cfg.mlp_hidden, cfg.code_dim])
        self.decoder = _mlp([cfg.code_dim + n_pix, *cfg.mlp_decoder_hidden, n_in])
        self._add_posterior_head(cfg.code_dim)

    def _pixel_mask(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, L)`` bool token mask -> ``(B, H, W)`` float pixel mask."""
        return token_pixel_mask(tokens, self.cfg)

    def _encode(self, imgs: torch.Tensor, pix: torch.Tensor) -> torch.Tensor:
        visible = imgs * (1.0 - pix).unsqueeze(1).to(imgs.dtype)  # (B, C, H, W) masked pixels zeroed
        x = torch.cat([visible.flatten(1), pix.flatten(1).to(imgs.dtype)], dim=1)  # (B, C*H*W + H*W)
        return self.encoder(x)  # (B, d)

    def forward(
        self,
        imgs: torch.Tensor,
        mask_ratio: float = 0.75,
        mask: Any = None,
        generator: torch.Generator | None = None,
    ) -> MAEOutput:
        """As :meth:`hlvm.models.ViTMAE.forward`; ``latent`` and ``features`` are the code (B, d).

        ``generator`` also draws a Gaussian posterior's noise (training mode).
        """
        imgs = self._check_imgs(imgs)
        tokens, len_keep = self._mask_and_keep(imgs, mask_ratio, mask, generator)  # (B, L) bool
        pix = self._pixel_mask(tokens)  # (B, H, W)
        code = self._encode(imgs, pix)  # (B, d)
        z, logvar, sample = self._posterior(code, generator)  # z (B, d): the code, or a draw of q(z|x_vis)
        out = self.decoder(torch.cat([z, pix.flatten(1).to(z.dtype)], dim=1))  # (B, C*H*W)
        c, (h, w) = self.cfg.in_chans, self.cfg.img_hw
        pred = patchify(out.reshape(-1, c, h, w), self.cfg.patch_size)  # (B, L, p*p*C)
        mask_f = tokens.to(pred.dtype)
        loss = self.masked_loss(imgs, pred, mask_f)
        _, ids_restore, _ = shuffle_indices(tokens, len_keep)
        return MAEOutput(
            loss=loss, pred=pred, mask=mask_f, ids_restore=ids_restore, latent=code, features=code, inputs=imgs,
            posterior_mean=code if logvar is not None else None, posterior_logvar=logvar, posterior_sample=sample,
        )

    def encode(self, imgs: torch.Tensor, mask: Any) -> torch.Tensor:
        """The code ``c_hat`` (B, d) of the visible pixels of ``imgs`` under ``mask``."""
        imgs = self._check_imgs(imgs)
        tokens, _ = self._encode_mask(imgs, mask)
        return self._encode(imgs, self._pixel_mask(tokens))

    def decoder_features(self, imgs: torch.Tensor, mask: Any) -> torch.Tensor:
        """The decoder's hidden activations (after each GELU) when it decodes ``encode(imgs, mask)``.

        ``(B, sum(mlp_decoder_hidden))``, every hidden layer's output side by
        side. The decoder sees only the code and the mask, so this is a
        function of the visible part, like the code. Livne's *informative
        embeddings* (cMIM, arXiv 2509.21511) take features from the decoder's
        hidden states; which layers and how they are joined is not pinned
        down in the public abstract, so all hidden layers, concatenated, is
        our choice. A posterior's mean is decoded, never a sample.
        """
        imgs = self._check_imgs(imgs)
        tokens, _ = self._encode_mask(imgs, mask)
        pix = self._pixel_mask(tokens)  # (B, H, W)
        h = torch.cat([self._encode(imgs, pix), pix.flatten(1).to(imgs.dtype)], dim=1)  # (B, d + H*W)
        hidden = []
        for layer in self.decoder:
            h = layer(h)
            if isinstance(layer, nn.GELU):
                hidden.append(h)  # (B, width) one hidden layer
        if not hidden:
            raise self._no_hidden("decoder features")
        return torch.cat(hidden, dim=1)  # (B, sum of hidden widths)
