"""Training objectives: MAE's reconstruction loss plus optional feature-spreading terms.

Each objective takes a model's :class:`hlvm.models.MAEOutput` and returns
``(total_loss, parts)``; ``parts`` maps each term's name to its detached
scalar value (``"mae"`` always, plus the extra term), for logging.

- ``mae``: He et al., "Masked Autoencoders Are Scalable Vision Learners"
  (CVPR 2022): mean squared error on the masked tokens (``output.loss``).
- ``umae``: Zhang, Wang and Wang, "How Mask Matters: Towards Theoretical
  Understandings of Masked Autoencoders" (NeurIPS 2022),
  eq. (10)-(11) (docs/theory.md, reference 3):
  ``L_MAE + lambda * E_{x, x^-} (f(x)^T f(x^-))^2`` over pairs of different
  samples, on L2-normalised features; ``lambda = 0.01`` (their Sec. 5 setup).
  The term is 0 for orthogonal features and 1 for fully collapsed ones; the
  paper adds it against MAE's *dimensional* collapse.
- ``mmae``: Tan, Yang, Huang, Yuan and Zhang, "Information Flow in
  Self-Supervised Learning" (ICML 2024),
  docs/theory.md reference 4: M-MAE adds a
  matrix-entropy regulariser, estimated by the total coding rate
  ``-logdet(I_d + mu/d * Z^T Z)`` of the L2-normalised ``(B, d)`` feature
  batch ``Z`` (authors' ``uniformity_loss_TCR``, ``mu = 1``, coefficient
  ``0.01``). The term is *minimised*, so it is lower (more negative) for
  spread, high-rank features and higher for collapsed ones: for ``B``
  identical rows it is ``-log(1 + mu*B/d)``, for ``d`` orthonormal rows
  ``-d*log(1 + mu/d)``.

Features are ``output.features`` (the model's ``c_hat``: the bottleneck code,
or the mean of the visible encoder tokens). Under ``torch.distributed`` the
batch of features is gathered across ranks before the extra term, so it sees
the global batch, as both papers' code does. The gather passes gradient back
to the local shard summed over ranks; with DDP's averaging of gradients this
gives exactly the gradient of the term on the global batch (checked in
``tests/test_objectives.py`` against one process).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F

from hlvm.errors import ConfigError

__all__ = [
    "OBJECTIVES",
    "Objective",
    "build_objective",
    "gather_features",
    "uniformity",
    "coding_rate",
]


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


def gather_features(z: torch.Tensor) -> torch.Tensor:
    """``(B, F)`` local features -> ``(world*B, F)`` when torch.distributed is running, else ``z``.

    Ranks must hold equal batch sizes (DistributedSampler with drop_last).
    """
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return _GatherWithGrad.apply(z)
    return z


def uniformity(z: torch.Tensor) -> torch.Tensor:
    """U-MAE's uniformity term: mean of ``(z_i^T z_j)^2`` over pairs ``i != j`` of L2-normalised rows.

    0 for mutually orthogonal features, 1 for identical ones.

    >>> round(float(uniformity(torch.eye(4))), 6), round(float(uniformity(torch.ones(4, 3))), 6)
    (0.0, 1.0)
    """
    if z.shape[0] < 2:
        raise ConfigError("the uniformity term needs at least 2 samples per batch")
    z = F.normalize(z.float(), dim=1)
    sim = z @ z.T  # (B, B)
    b = z.shape[0]
    off = ~torch.eye(b, dtype=torch.bool, device=z.device)
    return sim[off].pow(2).mean()


def coding_rate(z: torch.Tensor, mu: float = 1.0) -> torch.Tensor:
    """M-MAE's term ``-logdet(I_d + mu/d * Z^T Z)`` for L2-normalised rows of ``z`` (B, d).

    >>> import math
    >>> round(float(coding_rate(torch.ones(4, 4))), 6) == round(-math.log(1 + 4 / 4), 6)
    True
    """
    z = F.normalize(z.float(), dim=1)
    d = z.shape[1]
    gram = z.T @ z  # (d, d)
    eye = torch.eye(d, dtype=gram.dtype, device=gram.device)
    return -torch.logdet(eye + (mu / d) * gram)


@dataclass(frozen=True)
class Objective:
    """``objective(output) -> (total_loss, parts)``; build with :func:`build_objective`."""

    name: str
    coefs: dict[str, float] = field(default_factory=dict)

    def __call__(self, output: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        loss = output.loss
        parts: dict[str, torch.Tensor] = {"mae": loss.detach()}
        if self.name == "mae":
            return loss, parts
        # The extra terms are computed in float32 outside autocast: logdet and squared cosines
        # lose too much in bf16.
        with torch.autocast(device_type=output.features.device.type, enabled=False):
            z = gather_features(output.features.float())
            if self.name == "umae":
                term, key = uniformity(z), "uniformity"
            else:
                term, key = coding_rate(z, mu=self.coefs["mu"]), "coding_rate"
        parts[key] = term.detach()
        return loss + self.coefs["coef"] * term, parts


_DEFAULTS: dict[str, dict[str, float]] = {
    "mae": {},
    "umae": {"coef": 0.01},
    "mmae": {"coef": 0.01, "mu": 1.0},
}
OBJECTIVES: frozenset[str] = frozenset(_DEFAULTS)

def build_objective(name: str, **coefs: float) -> Objective:
    """The objective ``name`` (``mae``, ``umae``, ``mmae``) with its coefficients.

    ``umae`` takes ``coef`` (lambda, default 0.01); ``mmae`` takes ``coef``
    (default 0.01) and ``mu`` (default 1.0). Unknown names or coefficients,
    or non-finite / negative values, raise :class:`ConfigError`.
    """
    if name not in _DEFAULTS:
        raise ConfigError(f"unknown objective {name!r}; known: {', '.join(sorted(_DEFAULTS))}")
    allowed = _DEFAULTS[name]
    unknown = sorted(set(coefs) - set(allowed))
    if unknown:
        what = "takes no coefficients" if not allowed else f"takes {', '.join(allowed)}"
        raise ConfigError(f"objective {name!r} {what}; got {unknown[0]!r}")
    resolved = {**allowed, **coefs}
    for k, v in resolved.items():
        if isinstance(v, bool) or not isinstance(v, int | float) or not (v >= 0 and v < float("inf")):
            raise ConfigError(f"objective coefficient {k} must be a finite number >= 0, got {v!r}")
    if name == "mmae" and resolved["mu"] <= 0:
        raise ConfigError(f"mmae's mu must be > 0, got {resolved['mu']}")
    return Objective(name, {k: float(v) for k, v in resolved.items()})
