"""``mimae``: MAE's loss on several orthogonal masks of each image, plus MI-MAE's two information terms.

Huang, Ma, You and Xu, "Learning Mask Invariant Mutual Information for
Masked Image Modeling" (ICLR 2025, arXiv 2502.19718), (docs/theory.md,
reference 6). Only the paper's public abstract-level text was available to
this implementation; what it states: ``L_rec`` (MAE's loss) plus a
maximisation term, InfoNCE between the latent features of several
*orthogonal* masks of the same image, plus a minimisation term, a CLUB-based
upper bound on ``I(x; z)`` (Cheng et al., "CLUB: A Contrastive Log-ratio
Upper Bound of Mutual Information", ICML 2020) with a learned approximation
network. Ours, where that text is silent:

- ``views`` K = 2 complementary masks per image, ``disjoint="visible"``:
  their *visible* sets are pairwise disjoint (needs ``K (1 - ratio) <= 1``,
  e.g. K <= 4 at MAE's 0.75), so the views share nothing but what their
  disjoint pixel sets have in common, the theory's ``c`` for that split;
  ``"masked"`` makes the masked sets disjoint instead (``K ratio <= 1``).
  Every view masks the training ratio; all K go through one forward pass,
  stacked along the batch (:func:`hlvm.models.masking.complementary_token_masks`);
- ``infonce`` 0.1, the weight of the maximisation term: the InfoNCE loss
  (van den Oord et al. 2018) of cosine similarities over ``temperature``
  0.2, each view's features against every other view's over the batch
  (the other samples are the negatives), averaged over ordered view pairs,
  on ``c_hat`` (no projection head, so the term shapes what the bench
  probes);
- ``club`` 0.01, the weight of the minimisation term: CLUB in its
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

The preset ``mimae_views`` (:data:`hlvm.objectives.PRESETS`) is MI-MAE's
control, the multi-view MAE without the information terms (``infonce`` and
``club`` 0): the same complementary masks, MAE's loss on every view, so that
what the MI terms add is told apart from what the multi-view masking adds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from hlvm.errors import ConfigError

from .batch import _gather_views, _need_rows, _wide
from .gaussian import gaussian_nll
from .options import Opt, weight

if TYPE_CHECKING:
    from .registry import Objective

__all__ = ["info_nce", "multi_view_info_nce", "club", "ClubNet", "club_input"]

OPTIONS: dict[str, Opt] = {
    "infonce": weight(0.1),
    "club": weight(0.01),
    "views": Opt(2, "int", low=2),
    "temperature": Opt(0.2, strict=True),
    "disjoint": Opt("visible", "choice", choices=("visible", "masked")),
    "club_hidden": Opt(256, "int", low=1),
    "club_side": Opt(16, "int", low=1),
}
MIN_BATCH = 2


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


def attach(obj: Objective, model: nn.Module) -> None:
    """Give ``model`` CLUB's approximation network as ``model.objective_heads["club"]`` (idempotent).

    Its weights are drawn from torch's global generator, after the model's
    (hlvm.train seeds it first), on the model's device and in its dtype.
    """
    if hasattr(model, "objective_heads"):
        return
    cfg = model.cfg
    c, (h, w) = cfg.in_chans, cfg.img_hw
    side = int(obj.options["club_side"])
    in_dim = (c + 1) * (h // _pool_factor(h, side)) * (w // _pool_factor(w, side))
    net = ClubNet(in_dim, cfg.code_dim, int(obj.options["club_hidden"]))
    p = next(model.parameters())
    model.objective_heads = nn.ModuleDict({"club": net.to(device=p.device, dtype=p.dtype)})


def terms(obj: Objective, output: Any, model: nn.Module | None = None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """``({"infonce", "club", "club_fit"}, L_MAE + infonce * InfoNCE + club * CLUB + club_fit)`` over the K views."""
    o = obj.options
    heads = getattr(model, "objective_heads", None) if model is not None else None
    if heads is None or "club" not in heads:
        raise TypeError("mimae needs the model its approximation network is attached to: objective(output, model)")
    k = obj.views
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
