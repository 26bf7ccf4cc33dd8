"""Fixed 2-D sin-cos position embeddings in MAE's layout (He et al. 2022, ``util/pos_embed.py``).

For the token at row ``r`` and column ``c`` of a ``gh x gw`` grid, the first
half of the ``dim`` channels encodes the column ``c`` and the second half the
row ``r`` (MAE's meshgrid puts w first); each half is ``[sin(pos * omega),
cos(pos * omega)]`` with ``omega_k = 10000 ** (-k / (dim/4))``. Tokens are in
row-major order; with ``cls_token`` a zero row is prepended for the class
token. Keeping MAE's exact layout lets the official checkpoints' fixed
``pos_embed`` match ours.
"""

from __future__ import annotations

import torch

__all__ = ["sincos_1d", "sincos_2d"]


def sincos_1d(dim: int, pos: torch.Tensor) -> torch.Tensor:
    """``(M,)`` positions -> ``(M, dim)`` embedding ``[sin(pos*omega), cos(pos*omega)]``; ``dim`` even."""
    if dim % 2:
        raise ValueError(f"sin-cos embedding width must be even, got {dim}")
    omega = torch.arange(dim // 2, dtype=torch.float64, device=pos.device) / (dim / 2.0)
    omega = 1.0 / 10000**omega  # (dim/2,)
    out = pos.to(torch.float64).reshape(-1, 1) * omega.reshape(1, -1)  # (M, dim/2)
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)  # (M, dim)


def sincos_2d(dim: int, grid: tuple[int, int], cls_token: bool = False) -> torch.Tensor:
    """``(gh*gw [+1], dim)`` float32 embedding of a ``gh x gw`` token grid, row-major; ``dim % 4 == 0``."""
    if dim % 4:
        raise ValueError(f"2-D sin-cos embedding width must be a multiple of 4, got {dim}")
    gh, gw = grid
    rows = torch.arange(gh, dtype=torch.float64).repeat_interleave(gw)  # (gh*gw,) row of each token
    cols = torch.arange(gw, dtype=torch.float64).repeat(gh)  # (gh*gw,) column of each token
    emb = torch.cat([sincos_1d(dim // 2, cols), sincos_1d(dim // 2, rows)], dim=1)  # (gh*gw, dim)
    if cls_token:
        emb = torch.cat([torch.zeros(1, dim, dtype=emb.dtype), emb], dim=0)  # (1+gh*gw, dim)
    return emb.float()
