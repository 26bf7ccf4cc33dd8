"""``umae``: MAE's loss plus U-MAE's uniformity term.

Zhang, Wang and Wang, "How Mask Matters: Towards Theoretical Understandings
of Masked Autoencoders" (NeurIPS 2022), (docs/theory.md, reference 3), eq.
(10)-(11): ``L_MAE + coef * mean (f(x)^T f(x'))^2`` on L2-normalised
features; the official code is zhangq327/U-MAE. Options and where each
default comes from (what is hlvm's own is said so):

- ``coef`` 0.01: the paper's Sec. 5 and ``--lamb 0.01`` in the official
  ``pretrain.sh``;
- ``diagonal`` False: the paper's expectation is over pairs of *different*
  samples, ``x != x^-``; the official ``loss_func.py::uniformity_loss``
  takes the mean over the whole ``N x N`` matrix, diagonal (all ones)
  included (True). With the diagonal the value is ``((N-1) m + 1) / N``
  for ``m`` the mean over the off-diagonal pairs (``N (N-1)`` of them
  besides ``N`` ones, over ``N^2``), and the gradient is that of ``m``
  scaled by ``(N-1)/N``;
- ``feature`` ``"code"`` (hlvm's): ``c_hat`` (the mean of the visible
  encoder tokens, or the bottleneck code), the representation the bench
  probes; the official code regularises ``"cls"``: the class token passed
  through the encoder's final norm a second time (``models_mae.py``,
  ``global_pool=False``: ``self.norm(latent)[:, 0]``), ViT only;
- ``ddp_grad`` ``"global"`` (hlvm's): under DDP the term's gradient is
  exactly that of the term on the global batch; the official
  ``GatherLayer`` is ``"local"`` (:mod:`hlvm.objectives.batch`). Identical
  on one process.

The preset ``umae_official`` (:data:`hlvm.objectives.PRESETS`) is the
official code's settings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from hlvm.errors import ConfigError

from .batch import _need_rows, _wide, gather_features
from .options import Opt, weight

if TYPE_CHECKING:
    from .registry import Objective

__all__ = ["uniformity"]

#: Which features a spreading term acts on; shared with M-MAE, which builds on U-MAE's code.
FEATURE = Opt("code", "choice", choices=("code", "cls"))
#: How the global batch's gather passes gradient back (:mod:`hlvm.objectives.batch`).
DDP_GRAD = Opt("global", "choice", choices=("global", "local"))

OPTIONS: dict[str, Opt] = {"coef": weight(0.01), "diagonal": Opt(False, "bool"), "feature": FEATURE, "ddp_grad": DDP_GRAD}
MIN_BATCH = 2


def uniformity(z: torch.Tensor, diagonal: bool = False) -> torch.Tensor:
    """U-MAE's uniformity term: mean of ``(z_i^T z_j)^2`` over L2-normalised rows of ``z`` (N, F).

    Over pairs ``i != j`` (the paper's expectation over different samples),
    or over all ``N^2`` entries with ``diagonal=True`` (the official code),
    which is ``((N-1) m + 1) / N`` for ``m`` the off-diagonal value.
    Off the diagonal: 0 for mutually orthogonal features, 1 for identical ones.

    >>> round(float(uniformity(torch.eye(4))), 6), round(float(uniformity(torch.ones(4, 3))), 6)
    (0.0, 1.0)
    >>> round(float(uniformity(torch.eye(4), diagonal=True)), 6)  # 4 ones on the diagonal / 16
    0.25
    """
    _need_rows(z.shape[0], "uniformity")
    z = F.normalize(_wide(z), dim=1)
    sim = z @ z.T  # (N, N)
    if diagonal:
        return sim.pow(2).mean()
    off = ~torch.eye(z.shape[0], dtype=torch.bool, device=z.device)
    return sim[off].pow(2).mean()


def spread_features(obj: Objective, output: Any) -> torch.Tensor:
    """The global batch of the features option ``feature`` names, at least float32: ``(world*B, F)``."""
    o = obj.options
    feats = output.features if o["feature"] == "code" else output.cls
    if feats is None:
        raise ConfigError(f"objective {obj.name!r} takes the class token, which this model does not have")
    return gather_features(_wide(feats), grad=o["ddp_grad"])


def terms(obj: Objective, output: Any, model: nn.Module | None = None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """``({"uniformity": term}, L_MAE + coef * term)``."""
    o = obj.options
    term = uniformity(spread_features(obj, output), diagonal=o["diagonal"])
    return {"uniformity": term}, output.loss + o["coef"] * term
