"""Diagonal Gaussian log-densities and KL, per row: CLUB's ``q(z | x)`` (MI-MAE) and cMIM's posterior share them.

Plain closed forms, nothing of a paper's own: ``log N(z; mu, diag
exp(logvar))``, ``log N(z; 0, I)`` and ``KL(N(mu, diag exp(logvar)) || N(0,
I))``, each summed over every non-batch dim, in at least float32.
"""

from __future__ import annotations

import math

import torch

from .batch import _wide

__all__ = ["gaussian_log_prob", "std_normal_log_prob", "gaussian_nll", "gaussian_kl"]

_LOG_2PI = math.log(2.0 * math.pi)


def gaussian_log_prob(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``log N(z; mu, diag exp(logvar))`` per row, summed over every non-batch dim: ``(N, ...)`` -> ``(N,)``."""
    z, mu, logvar = _wide(z), _wide(mu), _wide(logvar)
    per = -0.5 * ((z - mu) ** 2 * torch.exp(-logvar) + logvar + _LOG_2PI)
    return per.reshape(per.shape[0], -1).sum(dim=1)


def std_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """``log N(z; 0, I)`` per row, summed over every non-batch dim: ``(N, ...)`` -> ``(N,)``."""
    per = -0.5 * (_wide(z) ** 2 + _LOG_2PI)
    return per.reshape(per.shape[0], -1).sum(dim=1)


def gaussian_nll(y: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Mean over rows of ``-log N(y; mu, diag exp(logvar))``: how CLUB's approximation network is fitted."""
    return -gaussian_log_prob(y, mu, logvar).mean()


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``KL(N(mu, diag exp(logvar)) || N(0, I))`` per row, in closed form: ``(N, ...)`` -> ``(N,)``.

    ``1/2 sum (exp(logvar) + mu^2 - 1 - logvar)``.
    """
    mu, logvar = _wide(mu), _wide(logvar)
    per = 0.5 * (torch.exp(logvar) + mu**2 - 1.0 - logvar)
    return per.reshape(per.shape[0], -1).sum(dim=1)
