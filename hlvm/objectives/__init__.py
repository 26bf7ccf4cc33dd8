"""Training objectives: MAE's reconstruction loss, alone or with the terms of the papers hlvm stands on.

An :class:`Objective` takes a model's :class:`hlvm.models.MAEOutput` (and the
model, for objectives with a network of their own) and returns ``(total_loss,
parts)``; ``parts`` maps each term's name to its detached scalar value
(``"mae"``, the masked MSE, always), for logging. Build one with
:func:`build_objective` from a name of :data:`OBJECTIVES` and options.

One module per objective, each naming the paper it follows, its options with
their defaults and where each comes from, and what is hlvm's own:

- :mod:`hlvm.objectives.mae` (``mae``): He et al., "Masked Autoencoders Are
  Scalable Vision Learners" (CVPR 2022): mean squared error on the masked
  tokens (``output.loss``);
- :mod:`hlvm.objectives.umae` (``umae``): U-MAE's uniformity term (Zhang,
  Wang and Wang, NeurIPS 2022);
- :mod:`hlvm.objectives.mmae` (``mmae``): M-MAE's total coding rate (Tan et
  al., ICML 2024);
- :mod:`hlvm.objectives.mimae` (``mimae``): MI-MAE's InfoNCE between
  orthogonal masks and CLUB bound on ``I(x; z)`` (Huang et al., ICLR 2025);
- :mod:`hlvm.objectives.cmim` (``cmim``): cMIM, MIM's loss on a Gaussian
  posterior with a contrastive term (Livne, arXiv 2509.21511);
- :mod:`hlvm.objectives.registry`: the names, the presets
  (:data:`PRESETS`: ``umae_official``, ``mmae_official``, ``mimae_views``)
  and :class:`Objective`;
- :mod:`hlvm.objectives.batch`: the global batch under ``torch.distributed``
  that every batch term sees, and its ``ddp_grad`` choice;
  :mod:`hlvm.objectives.gaussian`: the Gaussian densities MI-MAE and cMIM
  share; :mod:`hlvm.objectives.options`: how options are checked.

Every term is computed in at least float32 (float64 stays float64), outside
autocast: logdet, squared cosines and log-densities lose too much in bf16.
"""

from __future__ import annotations

from .batch import gather_features
from .cmim import masked_recon_nll, mim_loss, posterior_contrast
from .gaussian import gaussian_kl, gaussian_log_prob, gaussian_nll, std_normal_log_prob
from .mimae import ClubNet, club, club_input, info_nce, multi_view_info_nce
from .mmae import coding_rate
from .registry import OBJECTIVES, PRESETS, Objective, build_objective, objective_options
from .umae import uniformity

__all__ = [
    "OBJECTIVES",
    "PRESETS",
    "Objective",
    "build_objective",
    "objective_options",
    "gather_features",
    "uniformity",
    "coding_rate",
    "info_nce",
    "multi_view_info_nce",
    "club",
    "gaussian_nll",
    "gaussian_log_prob",
    "std_normal_log_prob",
    "gaussian_kl",
    "masked_recon_nll",
    "mim_loss",
    "posterior_contrast",
    "ClubNet",
    "club_input",
]
