"""``mmae``: MAE's loss plus M-MAE's total coding rate.

Tan, Yang, Huang, Yuan and Zhang, "Information Flow in Self-Supervised
Learning" (ICML 2024), (docs/theory.md, reference 4): the total coding rate
``-logdet(I_d + mu/d * Z^T Z)`` (``Z^T J Z`` with centring, ``J = I -
11^T/N``) of the L2-normalised ``(N, d)`` features, as the official
``loss_func.py::uniformity_loss_TCR`` (yifanzhang-pro/M-MAE, built on
U-MAE's code). The term is minimised: lower (more negative) for spread,
high-rank features. Options:

- ``coef`` 0.01: the README's and ``pretrain.sh``'s ``--lamb 1e-2``;
- ``mu`` 1.0: the default of ``uniformity_loss_TCR`` and of
  ``main_pretrain.py``'s ``--uniformity_mu``; the official ``pretrain.sh``
  asks for 3 (written ``--uniformity_lamda 3``, not the option's name), the
  preset's value;
- ``centering`` False: the default of ``uniformity_loss_TCR`` and of
  ``main_pretrain.py``'s ``--centering``. The official ``pretrain.sh``
  passes ``--centering False``, but ``--centering`` is a store-true flag
  (``action='store_true'``), so ``False`` is no value of it and the line
  does not parse as written: whether the script meant centring off or on is
  unclear. Off is what the code does whenever the flag is not given, so
  hlvm keeps it off by default; ``centering=True`` is the other reading;
- ``feature`` and ``ddp_grad`` as for :mod:`hlvm.objectives.umae`
  (official: ``"cls"``, ``"local"``).

The preset ``mmae_official`` (:data:`hlvm.objectives.PRESETS`) is the
official script's settings as far as they can be read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from .batch import _wide
from .options import Opt, weight
from .umae import DDP_GRAD, FEATURE, spread_features

if TYPE_CHECKING:
    from .registry import Objective

__all__ = ["coding_rate"]

OPTIONS: dict[str, Opt] = {
    "coef": weight(0.01),
    "mu": Opt(1.0, strict=True),
    "centering": Opt(False, "bool"),
    "feature": FEATURE,
    "ddp_grad": DDP_GRAD,
}
MIN_BATCH = 1


def coding_rate(z: torch.Tensor, mu: float = 1.0, centering: bool = False) -> torch.Tensor:
    """M-MAE's term ``-logdet(I_d + mu/d * Z^T Z)`` for L2-normalised rows of ``z`` (N, d).

    With ``centering`` the Gram matrix is ``Z^T J Z``, ``J = I - 11^T / N``
    (the rows' mean removed after normalising, as ``uniformity_loss_TCR``).

    >>> import math
    >>> round(float(coding_rate(torch.ones(4, 4))), 6) == round(-math.log(1 + 4 / 4), 6)
    True
    >>> round(float(coding_rate(torch.ones(4, 4), centering=True)), 6)  # identical rows: nothing left
    -0.0
    """
    z = F.normalize(_wide(z), dim=1)
    if centering:
        z = z - z.mean(dim=0, keepdim=True)  # J Z; Z^T J Z = (JZ)^T (JZ) as J is idempotent
    d = z.shape[1]
    gram = z.T @ z  # (d, d)
    eye = torch.eye(d, dtype=gram.dtype, device=gram.device)
    return -torch.logdet(eye + (mu / d) * gram)


def terms(obj: Objective, output: Any, model: nn.Module | None = None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """``({"coding_rate": term}, L_MAE + coef * term)``."""
    o = obj.options
    term = coding_rate(spread_features(obj, output), mu=o["mu"], centering=o["centering"])
    return {"coding_rate": term}, output.loss + o["coef"] * term
