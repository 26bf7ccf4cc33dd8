"""``cmim``: cMIM, MIM's loss on a Gaussian posterior plus a contrastive term, in place of MAE's MSE.

Livne, "Contrastive Mutual Information Learning: Toward Robust
Representations without Positive-Pair Augmentations" (arXiv 2509.21511;
also 2411.10548), (docs/theory.md, reference 7), on MIM (Livne, Swersky and
Fleet, "MIM: Mutual Information Machine", arXiv 1910.03175). The model gets
a Gaussian ``q(z | x_visible)`` (``MAEConfig.posterior="gaussian"``;
hlvm.train sets it) and its decoder decodes a sample. Terms:

- ``mim``: A-MIM's symmetric form with encoder samples only, as
  ``loss_function_mim`` of Livne's published code (seraphlabs-ca/MIM,
  ``src/vae-as-mim-dataset.py``): ``-1/2 [log p(x|z) + log p(z) + log
  q(z|x)]`` with ``z ~ q(z|x)`` (``log q(x)``, the data's density, is
  constant in the parameters and left out); ``p(z) = N(0, I)``; ``log
  p(x|z)`` is the decoder's reconstruction as a Gaussian of standard
  deviation ``recon_std`` = 1 (ours; hlvm's pixels have unit variance) on
  the *masked* values, MAE's target, summed over them. In nats per
  sample, so no weight on the reconstruction: the balance is MIM's;
- ``contrast`` (weight 1, ours): the paper's contrastive term could not
  be read here (only its abstract was available), so what is implemented
  is our reading of "contrastive without positive-pair augmentations" in
  MIM's probabilistic terms: each code ``z_i ~ q(z|x_i)`` must be told
  apart from the other samples of the (global) batch by the posteriors
  themselves, ``-mean_i log [q(z_i|x_i) / sum_j q(z_i|x_j)]``, the
  InfoNCE bound with the encoder as its own critic. The positive is the
  sample's own posterior draw, so no second view or augmentation is
  needed; the value is ``log N`` for indistinguishable posteriors, 0 for
  separated ones, and needs no temperature. With a wide ViT every visible
  token is its own Gaussian, and posteriors over thousands of dimensions
  are all but always separable: the term is then near 0 and does little;
  it bites on a code of tens of dimensions (the MLP, a bottleneck);
- ``kl`` (logged, not optimised): ``KL(q(z|x) || N(0, I))`` in closed
  form, a posterior-collapse monitor.

The paper's *informative embeddings* (decoder hidden states) are
:meth:`hlvm.models.MLPMAE.decoder_features` /
:meth:`hlvm.models.ViTMAE.decoder_features`, the sweep's ``decoder``
representation.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from hlvm.errors import ConfigError

from .batch import _need_rows, _wide, gather_features
from .gaussian import gaussian_kl, gaussian_log_prob, std_normal_log_prob
from .options import Opt, weight

if TYPE_CHECKING:
    from .registry import Objective

__all__ = ["masked_recon_nll", "mim_loss", "posterior_contrast"]

OPTIONS: dict[str, Opt] = {"contrast": weight(1.0), "recon_std": Opt(1.0, strict=True)}
MIN_BATCH = 2


def masked_recon_nll(output: Any, std: float = 1.0) -> torch.Tensor:
    """Mean over samples of ``-log p(x_m | z)``: a Gaussian of ``std`` around ``output.pred`` on the masked values.

    From ``output.loss`` (the mean squared error over the masked values, in
    MAE's normalised target space with ``norm_pix_loss``) and the number of
    masked values per sample (every sample masks the same count):
    ``n * (loss / (2 std^2) + log(2 pi std^2) / 2)``.
    """
    b = output.mask.shape[0]
    n = output.mask.float().sum() / b * output.pred.shape[-1]  # masked values per sample
    return n * (_wide(output.loss) / (2.0 * std**2) + 0.5 * math.log(2.0 * math.pi * std**2))


def mim_loss(recon_nll: torch.Tensor, z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """A-MIM's loss with encoder samples: ``mean_i -1/2 [log p(x_i|z_i) + log p(z_i) + log q(z_i|x_i)]``.

    ``recon_nll`` is ``-log p(x|z)`` (a batch mean or per-sample ``(N,)``);
    ``z ~ q(z|x)`` and the posterior's ``mu``, ``logvar`` are ``(N, ...)``;
    ``p(z) = N(0, I)``. Its expectation over ``z`` has the latent part
    ``1/4 sum(mu^2 + sigma^2 + 1 + logvar + 2 log 2pi)`` in closed form.
    """
    latent = -(std_normal_log_prob(z) + gaussian_log_prob(z, mu, logvar))  # (N,)
    return 0.5 * (recon_nll.mean() + latent.mean())


def posterior_contrast(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``-mean_i log [q(z_i|x_i) / sum_j q(z_i|x_j)]``: each draw told apart by the posteriors of the batch.

    ``z``, ``mu``, ``logvar`` are ``(N, ...)`` (flattened per row). Never
    negative; ``log N`` when every posterior is the same, 0 as they separate
    (a draw that its own posterior explains worse than the others' do can
    score above ``log N``). The off-diagonal
    log-densities come from one matmul expansion (O(N^2 D) without an
    ``(N, N, D)`` tensor), after removing the posteriors' mean (a shift of
    ``z`` and ``mu`` together changes nothing); the diagonal is recomputed
    directly, since there ``z_i`` is close to ``mu_i`` and the expansion
    would cancel.
    """
    _need_rows(z.shape[0], "contrastive")
    n = z.shape[0]
    z, mu, logvar = (_wide(t).reshape(n, -1) for t in (z, mu, logvar))  # (N, D)
    # z_i - mu_j is unchanged by a shift of both; removing the posteriors' common part keeps the
    # expansion's terms small where sharp posteriors sit far from the origin.
    centre = mu.mean(dim=0, keepdim=True).detach()
    z, mu = z - centre, mu - centre
    w = torch.exp(-logvar)  # (N, D) 1 / sigma_j^2
    # log q(z_i | x_j) up to the shared constant: -1/2 sum_d (z_id - mu_jd)^2 w_jd + logvar_jd
    quad = (z**2) @ w.T - 2.0 * z @ (mu * w).T + ((mu**2) * w).sum(dim=1)[None, :]  # (N, N)
    logits = -0.5 * (quad + logvar.sum(dim=1)[None, :])  # (N, N)
    diag = -0.5 * (((z - mu) ** 2) * w + logvar).sum(dim=1)  # (N,) exact
    eye = torch.eye(n, dtype=torch.bool, device=z.device)
    logits = torch.where(eye, diag[:, None].expand(n, n), logits)
    target = torch.arange(n, device=z.device)
    return F.cross_entropy(logits, target)


def terms(obj: Objective, output: Any, model: nn.Module | None = None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """``({"mim", "contrast", "kl"}, mim + contrast * contrast_term)``: MAE's MSE enters only through ``mim``."""
    o = obj.options
    mu, logvar, z = output.posterior_mean, output.posterior_logvar, output.posterior_sample
    if mu is None:
        raise ConfigError("cmim needs a model with a Gaussian posterior (MAEConfig.posterior='gaussian')")
    mim = mim_loss(masked_recon_nll(output, o["recon_std"]), z, mu, logvar)
    zg, mug, lvg = (gather_features(_wide(t)) for t in (z, mu, logvar))
    con = posterior_contrast(zg, mug, lvg)
    kl = gaussian_kl(mu, logvar).mean()
    return {"mim": mim, "contrast": con, "kl": kl}, mim + o["contrast"] * con
