"""Images as tokens and back: ``patchify`` / ``unpatchify``, MAE's ``(p, p, C)`` layout of a ``p x p`` patch.

Its own module so that both the models (:mod:`hlvm.models.base`) and the
masks (:mod:`hlvm.models.masking`) can use it without importing each other.
"""

from __future__ import annotations

import torch

__all__ = ["patchify", "unpatchify"]


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
