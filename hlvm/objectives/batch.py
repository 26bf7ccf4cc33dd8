"""What every batch term shares: the global batch under torch.distributed, float32, and two rows at least.

Batch terms (U-MAE's uniformity, M-MAE's coding rate, MI-MAE's InfoNCE and
CLUB, cMIM's contrast) see the global batch under ``torch.distributed``: their
inputs are gathered across ranks first, as both U-MAE's and M-MAE's code do
(``loss_func.py::GatherLayer``), and every rank computes the same value. How
the gather passes gradient back is hlvm's choice, ``ddp_grad``:

- ``"global"`` (hlvm's default): the local shard's gradient is summed over
  ranks, so that after DDP averages, the term has exactly the gradient of the
  term on the global batch (checked in ``tests/test_objectives.py`` against
  one process);
- ``"local"``: only this rank's own gradient, as the official ``GatherLayer``;
  after DDP's averaging the term is then optimised with ``1/world`` of its
  global gradient.

The two are identical on one process. Every term is computed in at least
float32 (float64 stays float64), outside autocast: logdet, squared cosines
and log-densities lose too much in bf16.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from hlvm.errors import ConfigError

__all__ = ["gather_features"]


def _wide(t: torch.Tensor) -> torch.Tensor:
    """``t`` in at least float32 (bf16 and fp16 lose too much; float64 stays float64)."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums every rank's gradient for the local shard."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        out = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(out, x.contiguous())
        ctx.rank, ctx.n = dist.get_rank(), x.shape[0]
        return torch.cat(out, dim=0)  # (world*B, F)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        # Every rank's loss uses every shard; the local shard's gradient is the sum over ranks.
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n]


class _GatherLocalGrad(_GatherWithGrad):
    """The same all_gather, whose backward keeps only this rank's own gradient: the official U-/M-MAE ``GatherLayer``."""

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return grad[ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n].contiguous()


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def gather_features(z: torch.Tensor, grad: str = "global") -> torch.Tensor:
    """``(B, ...)`` local rows -> ``(world*B, ...)`` when torch.distributed is running, else ``z``.

    ``grad="global"`` sums every rank's gradient for the local shard (the
    exact gradient of a global-batch term after DDP's averaging);
    ``"local"`` keeps only this rank's own (the official U-/M-MAE
    ``GatherLayer``). Ranks must hold equal batch sizes (DistributedSampler
    with drop_last).
    """
    if not _distributed():
        return z
    return (_GatherWithGrad if grad == "global" else _GatherLocalGrad).apply(z)


def _gather_views(t: torch.Tensor) -> torch.Tensor:
    """``(K, B, ...)`` per-view rows -> ``(K, world*B, ...)``: each sample's K views stay together."""
    if not _distributed():
        return t
    k, b = t.shape[0], t.shape[1]
    rows = t.transpose(0, 1).reshape(b, -1)  # (B, K*...) one row per sample
    g = gather_features(rows)  # (world*B, K*...)
    return g.reshape(g.shape[0], k, *t.shape[2:]).transpose(0, 1)  # (K, world*B, ...)


def _need_rows(n: int, what: str) -> None:
    if n < 2:
        raise ConfigError(f"the {what} term needs at least 2 samples per batch, got {n}")
