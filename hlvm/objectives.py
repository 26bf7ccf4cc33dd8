"""Training objectives: MAE's reconstruction loss, alone or with the terms of the papers hlvm stands on.

An :class:`Objective` takes a model's :class:`hlvm.models.MAEOutput` (and the
model, for objectives with a network of their own) and returns ``(total_loss,
parts)``; ``parts`` maps each term's name to its detached scalar value
(``"mae"``, the masked MSE, always), for logging. Build one with
:func:`build_objective` from a name of :data:`OBJECTIVES` and options.

- ``mae``: He et al., "Masked Autoencoders Are Scalable Vision Learners"
  (CVPR 2022): mean squared error on the masked tokens (``output.loss``).
- ``umae``: Zhang, Wang and Wang, "How Mask Matters: Towards Theoretical
  Understandings of Masked Autoencoders" (NeurIPS 2022),
  (docs/theory.md, reference 3), eq. (10)-(11):
  ``L_MAE + coef * mean (f(x)^T f(x'))^2`` on L2-normalised features.
  Options and where each default comes from:

  * ``coef`` 0.01: the paper's Sec. 5 and ``--lamb 0.01`` in the official
    ``pretrain.sh`` (zhangq327/U-MAE);
  * ``diagonal`` False: the paper's expectation is over pairs of *different*
    samples, ``x != x^-``; the official ``loss_func.py::uniformity_loss``
    takes the mean over the whole ``N x N`` matrix, diagonal (all ones)
    included (True), which adds ``1/N`` to the value and scales the
    gradient by ``(N-1)/N``;
  * ``feature`` ``"code"``: hlvm's ``c_hat`` (the mean of the visible
    encoder tokens, or the bottleneck code), the representation the bench
    probes; the official code regularises ``"cls"``: the class token passed
    through the encoder's final norm a second time (``models_mae.py``,
    ``global_pool=False``: ``self.norm(latent)[:, 0]``), ViT only;
  * ``ddp_grad`` ``"global"``: under DDP the term's gradient is exactly that
    of the term on the global batch (the gather's backward sums every rank's
    gradient for the local shard); the official ``GatherLayer`` returns only
    this rank's own gradient (``"local"``), so after DDP averages, the term
    is optimised with ``1/world`` of its global gradient. Identical on one
    process.

- ``mmae``: Tan, Yang, Huang, Yuan and Zhang, "Information Flow in
  Self-Supervised Learning" (ICML 2024),
  (docs/theory.md, reference 4): the total coding
  rate ``-logdet(I_d + mu/d * Z^T Z)`` (``Z^T J Z`` with centring, ``J = I -
  11^T/N``) of the L2-normalised ``(N, d)`` features, as the official
  ``loss_func.py::uniformity_loss_TCR`` (yifanzhang-pro/M-MAE). Options:
  ``coef`` 0.01 (the README's and ``pretrain.sh``'s ``--lamb 1e-2``);
  ``mu`` 1.0 (the default of ``uniformity_loss_TCR`` and of
  ``main_pretrain.py``'s ``--uniformity_mu``; the official ``pretrain.sh``
  runs ``mu = 3``); ``centering`` False (the function's default; the script
  passes ``--centering False`` meaning off); ``feature`` and ``ddp_grad``
  as for ``umae`` (official: ``"cls"``, ``"local"``). The term is minimised:
  lower (more negative) for spread, high-rank features.

- ``mimae``: Huang, Ma, You and Xu, "Learning Mask Invariant Mutual
  Information for Masked Image Modeling" (ICLR 2025, arXiv 2502.19718),
  (docs/theory.md, reference 6). Only the paper's public
  abstract-level text was available to this implementation; what it states:
  ``L_rec`` (MAE's loss) plus a maximisation term, InfoNCE between the
  latent features of several *orthogonal* masks of the same image, plus a
  minimisation term, a CLUB-based upper bound on ``I(x; z)`` (Cheng et al.,
  "CLUB: A Contrastive Log-ratio Upper Bound of Mutual Information", ICML
  2020) with a learned approximation network. Ours, where that text is
  silent:

  * ``views`` K = 2 complementary masks per image, ``disjoint="visible"``:
    their *visible* sets are pairwise disjoint (needs ``K (1 - ratio) <= 1``,
    e.g. K <= 4 at MAE's 0.75), so the views share nothing but what their
    disjoint pixel sets have in common, the theory's ``c`` for that split;
    ``"masked"`` makes the masked sets disjoint instead (``K ratio <= 1``).
    Every view masks the training ratio; all K go through one forward pass,
    stacked along the batch (:func:`hlvm.models.masking.complementary_token_masks`);
  * ``infonce`` 0.1, the weight of the maximisation term: the InfoNCE loss
    (van den Oord et al. 2018) of cosine similarities over ``temperature``
    0.2, each view's features against every other view's over the batch
    (the other samples are the negatives), averaged over ordered view pairs,
    on ``c_hat`` (no projection head, so the term shapes what the bench
    probes);
  * ``club`` 0.01, the weight of the minimisation term: CLUB in its
    all-pairs form (``mi_estimators.py::CLUB.forward`` of Linear95/CLUB),
    not ``CLUBSample``'s one random partner per sample: every pair counts,
    so the estimate has less variance and needs no random draw to seed, and
    through the batch's first two moments it costs O(NF), not O(N^2 F).
    Per view, averaged over views. ``x`` is what the encoder sees, the
    visible pixels (masked ones zeroed) beside the pixel mask (the code
    depends on the image only through them, so ``q`` need not guess the
    mask), area-pooled to at most ``club_side`` = 16 pixels
    a side (exact for hlvm's images, a cheap summary of ImageNet-size ones);
    the approximation network ``q(z | x)`` is CLUB's: a Gaussian whose mean
    and (tanh-bounded) log-variance are two one-hidden-layer ReLU MLPs of
    width ``club_hidden`` = 256, trained in the same optimizer step by
    minimising its negative log-likelihood of the detached features
    (``club_fit``, always weight 1; its gradient reaches only ``q``), while
    the bound's gradient reaches only the encoder. Its weights live in
    ``model.objective_heads`` and so in checkpoints; the model's own
    weights are initialised first, exactly as for plain MAE.

- ``cmim``: Livne, "Contrastive Mutual Information Learning: Toward Robust
  Representations without Positive-Pair Augmentations" (arXiv 2509.21511;
  also 2411.10548), (docs/theory.md, reference 7), on
  MIM (Livne, Swersky and Fleet, "MIM: Mutual Information Machine",
  arXiv 1910.03175). The model gets a Gaussian ``q(z | x_visible)``
  (``MAEConfig.posterior="gaussian"``; hlvm.train sets it) and its decoder
  decodes a sample. Terms:

  * ``mim``: A-MIM's symmetric form with encoder samples only, as
    ``loss_function_mim`` of Livne's published code (seraphlabs-ca/MIM,
    ``src/vae-as-mim-dataset.py``): ``-1/2 [log p(x|z) + log p(z) + log
    q(z|x)]`` with ``z ~ q(z|x)`` (``log q(x)``, the data's density, is
    constant in the parameters and left out); ``p(z) = N(0, I)``; ``log
    p(x|z)`` is the decoder's reconstruction as a Gaussian of standard
    deviation ``recon_std`` = 1 (ours; hlvm's pixels have unit variance) on
    the *masked* values, MAE's target, summed over them. In nats per
    sample, so no weight on the reconstruction: the balance is MIM's;
  * ``contrast`` (weight 1, ours): the paper's contrastive term could not
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
  * ``kl`` (logged, not optimised): ``KL(q(z|x) || N(0, I))`` in closed
    form, a posterior-collapse monitor.

  The paper's *informative embeddings* (decoder hidden states) are
  :meth:`hlvm.models.MLPMAE.decoder_features` /
  :meth:`hlvm.models.ViTMAE.decoder_features`, the sweep's ``decoder``
  representation.

Presets (:data:`PRESETS`, usable wherever an objective name is):
``umae_official`` and ``mmae_official`` are the official code's settings;
``mimae_views`` is MI-MAE's control, the multi-view MAE without the
information terms (``infonce`` and ``club`` 0): the same complementary masks,
MAE's loss on every view, so that what the MI terms add is told apart from
what the multi-view masking adds.

Batch terms (uniformity, coding rate, InfoNCE, CLUB, the cMIM contrast) see
the global batch under ``torch.distributed``: their inputs are gathered
across ranks first, as both U-MAE's and M-MAE's code do, and every rank
computes the same value. With ``ddp_grad="global"`` the gather passes
gradient back to the local shard summed over ranks; with DDP's averaging
this gives exactly the gradient of the term on the global batch (checked in
``tests/test_objectives.py`` against one process). Every term is computed in
at least float32 (float64 stays float64), outside autocast: logdet, squared
cosines and log-densities lose too much in bf16.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from hlvm.errors import ConfigError, HlvmError

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

_LOG_2PI = math.log(2.0 * math.pi)


def _wide(t: torch.Tensor) -> torch.Tensor:
    """``t`` in at least float32 (bf16 and fp16 lose too much; float64 stays float64)."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


# ----------------------------------------------------------------------------- gathering


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


# ----------------------------------------------------------------------------- U-MAE, M-MAE


def uniformity(z: torch.Tensor, diagonal: bool = False) -> torch.Tensor:
    """U-MAE's uniformity term: mean of ``(z_i^T z_j)^2`` over L2-normalised rows of ``z`` (N, F).

    Over pairs ``i != j`` (the paper's expectation over different samples),
    or over all ``N^2`` entries with ``diagonal=True`` (the official code).
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


# ----------------------------------------------------------------------------- MI-MAE


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE loss of paired rows ``a[i] <-> b[i]`` (each ``(N, F)``) against the other rows of ``b``.

    ``mean_i -log softmax_j(cos(a_i, b_j) / temperature)[i]``; its negative
    plus ``log N`` is the InfoNCE lower bound on ``I(a; b)`` (van den Oord
    et al. 2018). ``log N`` when every row is the same; ``log(1 + (N-1)
    exp(-1/temperature))`` for orthonormal ``a = b``.
    """
    _need_rows(a.shape[0], "InfoNCE")
    a, b = F.normalize(_wide(a), dim=1), F.normalize(_wide(b), dim=1)
    logits = a @ b.T / temperature  # (N, N): row i scores every candidate j
    target = torch.arange(a.shape[0], device=a.device)
    return F.cross_entropy(logits, target)


def multi_view_info_nce(z: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE of every ordered pair of views ``(k, l)``, ``k != l``, averaged; ``z`` is ``(K, N, F)``."""
    k = z.shape[0]
    terms = [info_nce(z[i], z[j], temperature) for i in range(k) for j in range(k) if i != j]
    return torch.stack(terms).mean()


def club(mu: torch.Tensor, logvar: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """CLUB, the contrastive log-ratio upper bound on ``I(x; y)`` (Cheng et al., ICML 2020), all pairs.

    ``q(y | x_i) = N(mu_i, diag exp(logvar_i))`` from the approximation
    network; ``mu``, ``logvar``, ``y`` are ``(N, F)``. Returns
    ``mean_i log q(y_i|x_i) - mean_i mean_j log q(y_j|x_i)`` (the
    normalisers cancel), as ``CLUB.forward`` of Linear95/CLUB, in closed form
    through the first two moments of ``y`` (O(NF), not O(N^2 F)). 0 when
    ``q`` ignores ``x`` (the same ``mu`` for every row); ``sum_d Var(y_d) /
    sigma_d^2`` (population variance over the batch) for ``y = mu`` exactly.
    """
    _need_rows(y.shape[0], "CLUB")
    mu, logvar, y = _wide(mu), _wide(logvar), _wide(y)
    inv = torch.exp(-logvar)  # (N, F) 1 / sigma^2
    positive = -0.5 * ((y - mu) ** 2 * inv).sum(dim=1)  # (N,)
    m1, m2 = y.mean(dim=0), (y**2).mean(dim=0)  # (F,) E_j[y_j], E_j[y_j^2]
    negative = -0.5 * ((m2 - 2 * mu * m1 + mu**2) * inv).sum(dim=1)  # (N,) mean_j of -(y_j - mu_i)^2 / 2 sigma_i^2
    return (positive - negative).mean()


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


class ClubNet(nn.Module):
    """CLUB's approximation network ``q(z | x)``: Gaussian mean and tanh-bounded log-variance MLPs.

    As ``CLUB`` of Linear95/CLUB (``p_mu``, ``p_logvar``), with one hidden
    layer of ``hidden`` units each. ``x`` ``(N, in_dim)`` -> ``(mu, logvar)``,
    each ``(N, out_dim)``.
    """

    def __init__(self, in_dim: int, out_dim: int, hidden: int) -> None:
        super().__init__()
        self.mu = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))
        self.logvar = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, out_dim), nn.Tanh())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mu(x), self.logvar(x)


def _pool_factor(n: int, side: int) -> int:
    """The smallest factor of ``n`` that brings it to at most ``side``."""
    f = 1
    while n // f > side or n % f:
        f += 1
    return f


def club_input(imgs: torch.Tensor, tokens: torch.Tensor, mcfg: Any, side: int) -> torch.Tensor:
    """What the encoder sees, as CLUB's ``x``: ``(N, (C+1) * h * w)``.

    The visible pixels of ``imgs`` ``(N, C, H, W)`` (masked ones zeroed)
    and the visible-pixel indicator, stacked as channels and average-pooled
    by the smallest factors that bring each side to at most ``side``.
    ``tokens`` is the ``(N, L)`` token mask (1 = masked).
    """
    from hlvm.models.masking import token_pixel_mask

    vis = 1.0 - token_pixel_mask(tokens, mcfg).to(imgs.dtype)  # (N, H, W) 1 = visible
    x = _wide(torch.cat([imgs * vis.unsqueeze(1), vis.unsqueeze(1)], dim=1))  # (N, C+1, H, W)
    fh, fw = _pool_factor(x.shape[2], side), _pool_factor(x.shape[3], side)
    if fh > 1 or fw > 1:
        x = F.avg_pool2d(x, (fh, fw))  # (N, C+1, H/fh, W/fw)
    return x.flatten(1)


# ----------------------------------------------------------------------------- cMIM


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


# ----------------------------------------------------------------------------- options


@dataclass(frozen=True)
class _Opt:
    """One objective option: its default and what values it takes."""

    default: Any
    kind: str = "float"  # float | int | bool | choice
    low: float = 0.0
    strict: bool = False  # > low instead of >= low
    choices: tuple[str, ...] = ()


def _coef(default: float) -> _Opt:
    return _Opt(default)


_FEATURE = _Opt("code", "choice", choices=("code", "cls"))
_DDP_GRAD = _Opt("global", "choice", choices=("global", "local"))

_SPECS: dict[str, dict[str, _Opt]] = {
    "mae": {},
    "umae": {"coef": _coef(0.01), "diagonal": _Opt(False, "bool"), "feature": _FEATURE, "ddp_grad": _DDP_GRAD},
    "mmae": {
        "coef": _coef(0.01),
        "mu": _Opt(1.0, strict=True),
        "centering": _Opt(False, "bool"),
        "feature": _FEATURE,
        "ddp_grad": _DDP_GRAD,
    },
    "mimae": {
        "infonce": _coef(0.1),
        "club": _coef(0.01),
        "views": _Opt(2, "int", low=2),
        "temperature": _Opt(0.2, strict=True),
        "disjoint": _Opt("visible", "choice", choices=("visible", "masked")),
        "club_hidden": _Opt(256, "int", low=1),
        "club_side": _Opt(16, "int", low=1),
    },
    "cmim": {"contrast": _coef(1.0), "recon_std": _Opt(1.0, strict=True)},
}

#: Named settings of an objective: ``name -> (objective, options)``.
PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    # zhangq327/U-MAE: pretrain.sh (--lamb 0.01), loss_func.py (whole N x N mean, GatherLayer),
    # models_mae.py (class token after a second final norm; global_pool False).
    "umae_official": ("umae", {"coef": 0.01, "diagonal": True, "feature": "cls", "ddp_grad": "local"}),
    # yifanzhang-pro/M-MAE: pretrain.sh (--lamb 1e-2 --uniformity_mu 3, centering off),
    # loss_func.py::uniformity_loss_TCR, models_mae.py as U-MAE's.
    "mmae_official": ("mmae", {"coef": 0.01, "mu": 3.0, "centering": False, "feature": "cls", "ddp_grad": "local"}),
    # MI-MAE's control (ours): the same complementary views in one pass and MAE's loss on each, without the
    # information terms; CLUB's q is still fitted (it touches only q), so the runs draw and train exactly alike.
    "mimae_views": ("mimae", {"infonce": 0.0, "club": 0.0}),
}

OBJECTIVES: frozenset[str] = frozenset(_SPECS) | frozenset(PRESETS)

# Objectives with a term over the batch: a batch of one has nothing to contrast with.
_MIN_BATCH = {"umae": 2, "mimae": 2, "cmim": 2}


def _check_value(name: str, key: str, spec: _Opt, v: Any) -> Any:
    if spec.kind == "bool":
        if not isinstance(v, bool):
            raise ConfigError(f"{name}'s {key} must be true or false, got {v!r}")
        return v
    if spec.kind == "choice":
        if v not in spec.choices:
            raise ConfigError(f"{name}'s {key} must be one of {', '.join(spec.choices)}, got {v!r}")
        return v
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        if spec.kind == "int":
            raise ConfigError(f"{name}'s {key} must be an integer >= {int(spec.low)}, got {v!r}")
        raise ConfigError(f"objective coefficient {key} must be a finite number >= 0, got {v!r}")
    if spec.kind == "int":
        if v != int(v) or v < spec.low:
            raise ConfigError(f"{name}'s {key} must be an integer >= {int(spec.low)}, got {v!r}")
        return int(v)
    if v < 0:
        raise ConfigError(f"objective coefficient {key} must be a finite number >= 0, got {v!r}")
    if spec.strict and not v > spec.low:
        raise ConfigError(f"{name}'s {key} must be > {spec.low:g}, got {v}")
    return float(v)


def objective_options(name: str) -> dict[str, Any]:
    """The options ``name`` takes, with their defaults (a preset's own values included)."""
    kind, preset = PRESETS.get(name, (name, {}))
    if kind not in _SPECS:
        raise ConfigError(f"unknown objective {name!r}; known: {', '.join(sorted(OBJECTIVES))}")
    return {**{k: s.default for k, s in _SPECS[kind].items()}, **preset}


# ----------------------------------------------------------------------------- the objective


@dataclass(frozen=True)
class Objective:
    """``objective(output, model=None) -> (total_loss, parts)``; build with :func:`build_objective`.

    ``name`` is the name asked for (a preset's included), ``kind`` the
    objective it is (``mae``, ``umae``, ``mmae``, ``mimae``, ``cmim``),
    ``options`` every option resolved.
    """

    name: str
    kind: str
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def coefs(self) -> dict[str, Any]:
        """The resolved options (the name they had when every option was a coefficient)."""
        return dict(self.options)

    @property
    def views(self) -> int:
        """Masked views of each image per step: K complementary masks for ``mimae``, else 1."""
        return int(self.options["views"]) if self.kind == "mimae" else 1

    @property
    def disjoint(self) -> str:
        """What the views keep apart (``mimae``): ``"visible"`` or ``"masked"`` sets."""
        return str(self.options.get("disjoint", "visible"))

    @property
    def posterior(self) -> str | None:
        """The kind of code the model needs: ``"gaussian"`` for ``cmim``, else None (any)."""
        return "gaussian" if self.kind == "cmim" else None

    @property
    def min_batch(self) -> int:
        """The smallest batch its batch terms can work with."""
        return _MIN_BATCH.get(self.kind, 1)

    # -- what the run must allow
    def check(self, mcfg: Any, *, mask_ratio: float, fixed_mask: bool = False, batch_size: int | None = None) -> None:
        """Raise :class:`ConfigError` if a run of model config ``mcfg`` cannot train this objective."""
        if batch_size is not None and batch_size < self.min_batch:
            raise ConfigError(
                f"objective {self.name!r} needs a batch of at least {self.min_batch} images for its batch term, "
                f"got batch_size {batch_size}"
            )
        if self.options.get("feature") == "cls" and mcfg.arch != "vit":
            raise ConfigError(f"objective {self.name!r} takes the class token (feature 'cls'): it needs a ViT, not the {mcfg.arch} MAE")
        if self.posterior is not None and mcfg.posterior != self.posterior:
            raise ConfigError(f"objective {self.name!r} needs a model with a {self.posterior} posterior (MAEConfig.posterior)")
        if self.views > 1:
            if fixed_mask:
                raise ConfigError(f"objective {self.name!r} draws {self.views} complementary masks per image: it cannot train on one fixed mask")
            from hlvm.models.masking import check_complementary

            try:
                check_complementary(mcfg.num_units, mask_ratio, self.views, self.disjoint)
            except HlvmError as e:
                raise ConfigError(f"objective {self.name!r}: {e}") from None

    def attach(self, model: nn.Module) -> None:
        """Give ``model`` the networks this objective trains beside it (``model.objective_heads``).

        ``mimae``: CLUB's approximation network. Its weights are drawn from
        torch's global generator, after the model's (hlvm.train seeds it
        first), and it is saved and loaded with the model's state dict.
        Nothing for the other objectives; idempotent.
        """
        if self.kind != "mimae" or hasattr(model, "objective_heads"):
            return
        cfg = model.cfg
        c, (h, w) = cfg.in_chans, cfg.img_hw
        side = int(self.options["club_side"])
        in_dim = (c + 1) * (h // _pool_factor(h, side)) * (w // _pool_factor(w, side))
        net = ClubNet(in_dim, cfg.code_dim, int(self.options["club_hidden"]))
        p = next(model.parameters())
        model.objective_heads = nn.ModuleDict({"club": net.to(device=p.device, dtype=p.dtype)})

    # -- the loss
    def __call__(self, output: Any, model: nn.Module | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        total, terms = self.terms(output, model)
        return total, {"mae": output.loss.detach(), **{k: v.detach() for k, v in terms.items()}}

    def terms(self, output: Any, model: nn.Module | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(total_loss, {term: value})`` with every term still in the graph (for inspecting gradients).

        ``model`` is needed by objectives with networks of their own
        (``mimae``: the model :meth:`attach` gave them to).
        """
        if self.kind == "mae":
            return output.loss, {}
        # Every extra term in float32 outside autocast: logdet, squared cosines and log-densities lose
        # too much in bf16.
        with torch.autocast(device_type=output.loss.device.type, enabled=False):
            if self.kind in ("umae", "mmae"):
                terms, total = self._spreading(output)
            elif self.kind == "mimae":
                terms, total = self._mimae(output, model)
            else:
                terms, total = self._cmim(output)
        return total, terms

    def _spreading(self, output: Any) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        o = self.options
        feats = output.features if o["feature"] == "code" else output.cls
        if feats is None:
            raise ConfigError(f"objective {self.name!r} takes the class token, which this model does not have")
        z = gather_features(_wide(feats), grad=o["ddp_grad"])
        if self.kind == "umae":
            key, term = "uniformity", uniformity(z, diagonal=o["diagonal"])
        else:
            key, term = "coding_rate", coding_rate(z, mu=o["mu"], centering=o["centering"])
        return {key: term}, output.loss + o["coef"] * term

    def _mimae(self, output: Any, model: nn.Module | None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        o = self.options
        heads = getattr(model, "objective_heads", None) if model is not None else None
        if heads is None or "club" not in heads:
            raise TypeError("mimae needs the model its approximation network is attached to: objective(output, model)")
        k = self.views
        n = output.features.shape[0]
        if n % k:
            raise ConfigError(f"mimae's output holds {n} rows, not {k} views of one batch")
        b = n // k
        z = _wide(output.features).reshape(k, b, -1)  # (K, B, F) view-major, as the masker stacks them
        x = club_input(output.inputs, output.mask, model.cfg, int(o["club_side"]))  # (K*B, Dx)
        q_mu, q_logvar = heads["club"](x)  # (K*B, F) each
        q_mu, q_logvar = _wide(q_mu).reshape(k, b, -1), _wide(q_logvar).reshape(k, b, -1)
        zg, mug, lvg = (_gather_views(t) for t in (z, q_mu, q_logvar))  # (K, world*B, F)
        nce = multi_view_info_nce(zg, o["temperature"])
        # The bound trains the encoder only (q fixed), q's fit trains q only (features fixed): CLUB's scheme.
        bound = torch.stack([club(mug[i].detach(), lvg[i].detach(), zg[i]) for i in range(k)]).mean()
        fit = torch.stack([gaussian_nll(zg[i].detach(), mug[i], lvg[i]) for i in range(k)]).mean()
        total = output.loss + o["infonce"] * nce + o["club"] * bound + fit
        return {"infonce": nce, "club": bound, "club_fit": fit}, total

    def _cmim(self, output: Any) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        o = self.options
        mu, logvar, z = output.posterior_mean, output.posterior_logvar, output.posterior_sample
        if mu is None:
            raise ConfigError("cmim needs a model with a Gaussian posterior (MAEConfig.posterior='gaussian')")
        mim = mim_loss(masked_recon_nll(output, o["recon_std"]), z, mu, logvar)
        zg, mug, lvg = (gather_features(_wide(t)) for t in (z, mu, logvar))
        con = posterior_contrast(zg, mug, lvg)
        kl = gaussian_kl(mu, logvar).mean()
        return {"mim": mim, "contrast": con, "kl": kl}, mim + o["contrast"] * con


def build_objective(name: str, **options: Any) -> Objective:
    """The objective ``name`` (:data:`OBJECTIVES`) with its options (module docstring).

    A preset (:data:`PRESETS`) resolves to its objective with the preset's
    values, which ``options`` may override. Unknown names or options, and
    values of the wrong kind, negative or non-finite weights, ``views < 2``
    or a non-positive ``mu`` / ``temperature`` / ``recon_std``, raise
    :class:`ConfigError` with one line naming the problem.
    """
    if name not in OBJECTIVES:
        raise ConfigError(f"unknown objective {name!r}; known: {', '.join(sorted(OBJECTIVES))}")
    kind, preset = PRESETS.get(name, (name, {}))
    allowed = _SPECS[kind]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        what = "takes no coefficients" if not allowed else f"takes {', '.join(allowed)}"
        raise ConfigError(f"objective {name!r} {what}; got {unknown[0]!r}")
    resolved = {**{k: s.default for k, s in allowed.items()}, **preset, **options}
    checked = {k: _check_value(kind, k, allowed[k], v) for k, v in resolved.items()}
    return Objective(name, kind, checked)
