"""Claims about hlvm.objectives: each term's value where it is known in closed form, its gradient against a
plain re-implementation, each objective end to end on a model, bad options, and DDP on the global batch."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from scipy.stats import norm

from hlvm.errors import ConfigError
from hlvm.masks import Mask
from hlvm.models import build_model, get_config, patchify
from hlvm.models.masking import complementary_token_masks
from hlvm.objectives import (
    OBJECTIVES,
    build_objective,
    club,
    club_input,
    coding_rate,
    gather_features,
    gaussian_kl,
    gaussian_log_prob,
    gaussian_nll,
    info_nce,
    masked_recon_nll,
    mim_loss,
    multi_view_info_nce,
    objective_options,
    posterior_contrast,
    std_normal_log_prob,
    uniformity,
)


def _cfg(arch: str, **kw):
    if arch == "mlp":
        return get_config("mlp", img_size=8, in_chans=2, bottleneck=4, mlp_hidden=(32,), mlp_decoder_hidden=(32,), **kw)
    return get_config(
        "vit_small_synth", img_size=8, in_chans=2, embed_dim=32, depth=1, num_heads=2,
        decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2, **kw,
    )  # fmt: skip


def _tiny(arch: str, **kw):
    return build_model(_cfg(arch, **kw))


def _spread(b: int, d: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, d, generator=torch.Generator().manual_seed(seed))


def _collapsed(b: int, d: int, seed: int = 0, noise: float = 0.01) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, d, generator=g) + noise * torch.randn(b, d, generator=g)  # all near one direction


def _g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _run(name: str, arch: str, batch: int = 6, ratio: float = 0.5, **options):
    """One forward pass of a tiny model through objective ``name``, as hlvm.train runs it: ``(total, parts, out, model)``."""
    objective = build_objective(name, **options)
    model = _tiny(arch, posterior=objective.posterior)
    objective.attach(model)
    x = torch.randn(batch, 2, 8, 8, generator=_g(3))
    if objective.views > 1:
        masks = complementary_token_masks(
            model.cfg, batch, ratio, objective.views, disjoint=objective.disjoint, generator=_g(0)
        )
        out = model(x.repeat(objective.views, 1, 1, 1), mask=masks, generator=_g(1))
    else:
        out = model(x, mask_ratio=ratio, generator=_g(0))
    total, parts = objective(out, model)
    return total, parts, out, model


# ----------------------------------------------------------------------------- every objective

EXTRA_PARTS = {
    "mae": set(),
    "umae": {"uniformity"},
    "mmae": {"coding_rate"},
    "umae_official": {"uniformity"},
    "mmae_official": {"coding_rate"},
    "mimae": {"infonce", "club", "club_fit"},
    "mimae_views": {"infonce", "club", "club_fit"},
    "cmim": {"mim", "contrast", "kl"},
}


def test_the_parts_table_covers_every_objective():
    assert set(EXTRA_PARTS) == set(OBJECTIVES)


@pytest.mark.parametrize("arch", ["mlp", "vit"])
@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_every_objective_runs_forward_and_backward(name, arch):
    if objective_options(name).get("feature") == "cls" and arch == "mlp":  # the official settings take the class token
        with pytest.raises(ConfigError, match="needs a ViT"):
            build_objective(name).check(_cfg("mlp"), mask_ratio=0.5)
        return
    total, parts, out, model = _run(name, arch)
    assert total.ndim == 0 and torch.isfinite(total)
    assert parts["mae"] == out.loss.detach()
    assert set(parts) == {"mae"} | EXTRA_PARTS[name]
    total.backward()
    grads = {k: p.grad for k, p in model.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values()), [k for k, g in grads.items() if g is None]


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_objectives_under_bf16_autocast_keep_their_terms_in_float32(name):
    objective = build_objective(name)
    model = _tiny("vit", posterior=objective.posterior)
    objective.attach(model)
    x = torch.randn(6, 2, 8, 8)
    kw = {"mask_ratio": 0.5, "generator": _g(0)}
    if objective.views > 1:
        x = x.repeat(2, 1, 1, 1)
        kw = {"mask": complementary_token_masks(model.cfg, 6, 0.5, 2, generator=_g(0)), "generator": _g(1)}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, **kw)
        total, parts = objective(out, model)
    assert out.pred.dtype == torch.bfloat16  # autocast did apply to the model
    assert total.dtype == torch.float32 and torch.isfinite(total)
    assert all(v.dtype == torch.float32 for v in parts.values())
    total.backward()


def test_mae_objective_is_the_model_loss():
    out = _tiny("mlp")(torch.randn(4, 2, 8, 8), mask_ratio=0.5, generator=_g(0))
    total, _ = build_objective("mae")(out)
    assert total is out.loss


@pytest.mark.parametrize(("name", "key", "weight"), [("umae", "uniformity", 0.01), ("mmae", "coding_rate", 0.01)])
def test_spreading_objectives_add_their_weighted_term_exactly(name, key, weight):
    total, parts, out, _ = _run(name, "mlp")
    assert torch.allclose(total, out.loss + weight * parts[key])
    assert parts[key] == pytest.approx((uniformity if name == "umae" else coding_rate)(out.features).item())


def test_extra_terms_push_features_apart():
    # the gradient of each regulariser, followed a little, makes collapsed features more spread
    for term in (uniformity, coding_rate, lambda z: uniformity(z, diagonal=True), lambda z: coding_rate(z, centering=True)):
        z = _collapsed(32, 8).requires_grad_(True)
        before = uniformity(z).item()
        term(z).backward()
        with torch.no_grad():
            z2 = z - 50.0 * z.grad
        assert uniformity(z2).item() < before


# ----------------------------------------------------------------------------- U-MAE


def test_uniformity_exact_values():
    assert uniformity(torch.eye(6)).item() == pytest.approx(0.0, abs=1e-7)  # orthogonal
    assert uniformity(torch.ones(5, 3) * 7.0).item() == pytest.approx(1.0)  # identical
    z = torch.tensor([[1.0, 0.0], [1.0, 1.0]])  # cos = 1/sqrt(2)
    assert uniformity(z).item() == pytest.approx(0.5)


def test_uniformity_with_the_diagonal_is_the_official_mean_over_the_whole_matrix():
    # the official loss: mean over N x N of (Z Z^T)^2 on normalised rows, the N ones of the diagonal included
    n = 6
    assert uniformity(torch.eye(n), diagonal=True).item() == pytest.approx(1 / n)
    assert uniformity(torch.ones(n, 3), diagonal=True).item() == pytest.approx(1.0)
    z = _spread(n, 4)
    zn = z / z.norm(dim=1, keepdim=True)
    assert uniformity(z, diagonal=True).item() == pytest.approx(((zn @ zn.T) ** 2).mean().item(), rel=1e-6)
    off = uniformity(z).item()
    assert uniformity(z, diagonal=True).item() == pytest.approx((n * (n - 1) * off + n) / n**2, rel=1e-6)


def test_uniformity_is_smaller_for_spread_features_than_collapsed():
    spread, collapsed = uniformity(_spread(256, 32)), uniformity(_collapsed(256, 32))
    assert spread.item() == pytest.approx(1 / 32, rel=0.15)  # E[cos^2] of random directions = 1/d
    assert collapsed.item() > 0.99
    assert uniformity(_spread(256, 32) * 100.0).item() == pytest.approx(spread.item(), rel=1e-5)  # scale-free


def test_the_cls_feature_is_the_class_token_after_a_second_final_norm():
    model = _tiny("vit")
    x = torch.randn(4, 2, 8, 8)
    out = model(x, mask_ratio=0.5, generator=_g(0))
    tokens = torch.as_tensor(out.mask.bool())
    enc, _, _ = model.forward_encoder(model._check_imgs(x), tokens)  # already through model.norm
    torch.testing.assert_close(out.cls, model.norm(enc)[:, 0])
    assert _tiny("mlp")(x, mask_ratio=0.5, generator=_g(0)).cls is None
    _, parts, out, _ = _run("umae", "vit", feature="cls")
    assert parts["uniformity"] == pytest.approx(uniformity(out.cls).item())


# ----------------------------------------------------------------------------- M-MAE


@pytest.mark.parametrize("mu", [1.0, 0.5, 3.0])
def test_coding_rate_exact_values(mu):
    b = d = 8
    # B identical unit rows: Z^T Z = B v v^T, one eigenvalue B
    assert coding_rate(torch.ones(b, d), mu).item() == pytest.approx(-math.log(1 + mu * b / d), rel=1e-5)
    # d orthonormal rows: Z^T Z = I
    assert coding_rate(torch.eye(d), mu).item() == pytest.approx(-d * math.log(1 + mu / d), rel=1e-5)


def test_coding_rate_centring_is_the_official_z_t_j_z():
    z = _spread(10, 4)
    zn = z / z.norm(dim=1, keepdim=True)
    j = torch.eye(10) - torch.ones(10, 10) / 10  # the official centering_matrix
    want = -torch.logdet(torch.eye(4) + 3.0 / 4 * zn.T @ j @ zn)
    assert coding_rate(z, mu=3.0, centering=True).item() == pytest.approx(want.item(), rel=1e-5)
    # identical rows have nothing left after centring: logdet(I) = 0; d orthonormal rows keep d - 1 directions
    assert coding_rate(torch.ones(5, 5), centering=True).item() == pytest.approx(0.0, abs=1e-6)
    assert coding_rate(torch.eye(4), 1.0, centering=True).item() == pytest.approx(-3 * math.log(1 + 1 / 4), rel=1e-5)


def test_coding_rate_is_lower_for_high_rank_features_than_collapsed():
    # M-MAE minimises -logdet(...): lower = more spread (higher matrix entropy), higher = collapsed
    high, low = coding_rate(_spread(256, 32)), coding_rate(_collapsed(256, 32))
    assert high.item() < low.item()
    rank2 = _spread(256, 2) @ _spread(2, 32, seed=1)  # rank 2 in 32 dims
    assert high.item() < coding_rate(rank2).item() < low.item()


# ----------------------------------------------------------------------------- MI-MAE: InfoNCE


@pytest.mark.parametrize("tau", [0.1, 0.5, 1.0])
def test_info_nce_closed_forms(tau):
    n = 6
    eye = torch.eye(n, dtype=torch.float64)  # float64: at tau 0.1 the value is 2e-4, below float32's resolution of a logit 10
    # orthonormal features, a = b: the positive scores 1/tau, every negative 0
    assert info_nce(eye, eye, tau).item() == pytest.approx(math.log(1 + (n - 1) * math.exp(-1 / tau)), rel=1e-5)
    # identical features: no candidate is preferred, chance level log N
    same = torch.ones(n, 3)
    assert info_nce(same, same, tau).item() == pytest.approx(math.log(n), rel=1e-6)
    # swapped partners: a_i matches b_{i+1} exactly, its own b_i not at all
    b = eye
    a = torch.roll(b, 1, dims=0)
    assert info_nce(a, b, tau).item() == pytest.approx(math.log(n - 1 + math.exp(1 / tau)), rel=1e-5)


def _info_nce_plain(a, b, tau):
    """InfoNCE written out sample by sample."""
    terms = []
    for i in range(a.shape[0]):
        scores = torch.stack([torch.dot(a[i], b[j]) / (a[i].norm() * b[j].norm()) / tau for j in range(b.shape[0])])
        terms.append(-(scores[i] - torch.logsumexp(scores, dim=0)))
    return torch.stack(terms).mean()


def test_info_nce_value_and_gradient_match_a_plain_implementation():
    a0, b0 = _spread(7, 5, seed=1).double(), _spread(7, 5, seed=2).double()
    a1, b1 = a0.clone().requires_grad_(True), b0.clone().requires_grad_(True)
    a2, b2 = a0.clone().requires_grad_(True), b0.clone().requires_grad_(True)
    ours, plain = info_nce(a1, b1, 0.3), _info_nce_plain(a2, b2, 0.3)
    ours.backward()
    plain.backward()
    assert ours.item() == pytest.approx(plain.item(), rel=1e-6)
    torch.testing.assert_close(a1.grad.double(), a2.grad, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(b1.grad.double(), b2.grad, rtol=1e-5, atol=1e-7)


def test_multi_view_info_nce_averages_every_ordered_pair():
    z = torch.stack([_spread(5, 4, seed=s) for s in range(3)])  # (K=3, N, F)
    pairs = [info_nce(z[i], z[j], 0.2) for i in range(3) for j in range(3) if i != j]
    assert multi_view_info_nce(z, 0.2).item() == pytest.approx(torch.stack(pairs).mean().item(), rel=1e-6)
    assert len(pairs) == 6


# ----------------------------------------------------------------------------- MI-MAE: CLUB


def test_club_is_zero_when_the_approximation_ignores_x():
    y = _spread(50, 3)
    mu = torch.full((50, 3), 0.7)  # q(y|x) = q(y): the same Gaussian for every x
    logvar = torch.full((50, 3), -0.3)
    assert club(mu, logvar, y).item() == pytest.approx(0.0, abs=1e-5)


def test_club_of_identical_variables_is_their_variance_over_sigma_squared():
    y = _spread(40, 3, seed=4).double()
    logvar = torch.full_like(y, math.log(0.5))  # sigma^2 = 0.5
    want = (y.var(dim=0, unbiased=False) / 0.5).sum().item()  # mean_ij (y_j - y_i)^2 / 2 sigma^2 = Var / sigma^2
    assert club(y, logvar, y).item() == pytest.approx(want, rel=1e-6)


def test_club_of_correlated_gaussians_is_its_closed_form_and_bounds_the_true_mi():
    # (x, y) standard bivariate normal with correlation rho; q the true conditional N(rho x, 1 - rho^2):
    # E[CLUB] = rho^2 / (1 - rho^2) >= I(x; y) = -log(1 - rho^2) / 2 (Cheng et al., Theorem 3.1)
    g = _g(0)
    n, rho = 200_000, 0.6
    x = torch.randn(n, 1, generator=g, dtype=torch.float64)
    y = rho * x + math.sqrt(1 - rho**2) * torch.randn(n, 1, generator=g, dtype=torch.float64)
    got = club(rho * x, torch.full_like(x, math.log(1 - rho**2)), y).item()
    assert got == pytest.approx(rho**2 / (1 - rho**2), rel=0.02)
    assert got > -0.5 * math.log(1 - rho**2)
    # independent: the bound is 0
    assert club(torch.zeros_like(x), torch.zeros_like(x), torch.randn(n, 1, generator=g, dtype=torch.float64)).item() == pytest.approx(0.0, abs=1e-9)


def _club_plain(mu, logvar, y):
    """CLUB all-pairs, by broadcasting every (i, j) pair as Linear95/CLUB's CLUB.forward does."""
    positive = -((mu - y) ** 2) / 2.0 / logvar.exp()  # (N, F)
    negative = -((y.unsqueeze(0) - mu.unsqueeze(1)) ** 2).mean(dim=1) / 2.0 / logvar.exp()  # (N, F)
    return (positive.sum(dim=-1) - negative.sum(dim=-1)).mean()


def test_club_value_and_gradient_match_the_pairwise_form():
    mu0, lv0, y0 = (_spread(9, 4, seed=s).double() for s in (5, 6, 7))
    lv0 = 0.5 * lv0
    ours_in = [t.clone().requires_grad_(True) for t in (mu0, lv0, y0)]
    plain_in = [t.clone().requires_grad_(True) for t in (mu0, lv0, y0)]
    ours, plain = club(*ours_in), _club_plain(*plain_in)
    ours.backward()
    plain.backward()
    assert ours.item() == pytest.approx(plain.item(), rel=1e-5)
    for a, b in zip(ours_in, plain_in):
        torch.testing.assert_close(a.grad.double(), b.grad, rtol=1e-4, atol=1e-6)


def test_gaussian_log_prob_and_nll_are_scipys_normal_log_density():
    z, mu, lv = _spread(5, 3, seed=1).double(), _spread(5, 3, seed=2).double(), 0.3 * _spread(5, 3, seed=3).double()
    want = norm.logpdf(z.numpy(), mu.numpy(), np.exp(0.5 * lv.numpy())).sum(axis=1)
    np.testing.assert_allclose(gaussian_log_prob(z, mu, lv).numpy(), want, rtol=1e-6)
    np.testing.assert_allclose(std_normal_log_prob(z).numpy(), norm.logpdf(z.numpy()).sum(axis=1), rtol=1e-6)
    assert gaussian_nll(z, mu, lv).item() == pytest.approx(-want.mean(), rel=1e-6)


def test_club_input_is_the_visible_pixels_and_their_indicator_pooled():
    mcfg = get_config("vit_small_synth", img_size=32, in_chans=2, patch_size=4, mask_unit=4)
    imgs = torch.randn(3, 2, 32, 32, generator=_g(0))
    tokens = torch.rand(3, mcfg.num_tokens, generator=_g(1)) < 0.5
    x = club_input(imgs, tokens, mcfg, side=16)  # 32 -> 16: 2x2 average pooling
    vis = (~tokens).float().reshape(3, 8, 8).repeat_interleave(4, 1).repeat_interleave(4, 2)  # (3, 32, 32)
    full = torch.cat([imgs * vis[:, None], vis[:, None]], dim=1)  # (3, 3, 32, 32)
    want = full.reshape(3, 3, 16, 2, 16, 2).mean(dim=(3, 5)).flatten(1)
    torch.testing.assert_close(x, want)
    assert club_input(imgs, tokens, mcfg, side=32).shape == (3, 3 * 32 * 32)  # no pooling needed


# ----------------------------------------------------------------------------- cMIM: MIM's terms


def test_gaussian_kl_is_the_expectation_of_log_q_minus_log_p():
    # MIM's prior term against its encoder: KL(q || N(0, I)) in closed form = E_q[log q(z|x) - log p(z)]
    mu, lv = torch.tensor([[0.5, -1.0, 0.0]], dtype=torch.float64), torch.tensor([[-0.5, 0.3, 0.0]], dtype=torch.float64)
    want = 0.5 * (torch.exp(lv) + mu**2 - 1 - lv).sum().item()
    assert gaussian_kl(mu, lv).item() == pytest.approx(want)
    ref = torch.distributions.kl_divergence(
        torch.distributions.Normal(mu, torch.exp(0.5 * lv)), torch.distributions.Normal(0.0, 1.0)
    ).sum().item()
    assert gaussian_kl(mu, lv).item() == pytest.approx(ref, rel=1e-10)
    z = mu + torch.exp(0.5 * lv) * torch.randn(400_000, 3, generator=_g(0), dtype=torch.float64)
    mc = (gaussian_log_prob(z, mu.expand_as(z), lv.expand_as(z)) - std_normal_log_prob(z)).mean().item()
    assert mc == pytest.approx(want, abs=0.01)
    assert gaussian_kl(torch.zeros(2, 4), torch.zeros(2, 4)).tolist() == [0.0, 0.0]  # q = p


def test_mim_latent_part_has_its_closed_form_expectation():
    # E_q[-1/2 (log p(z) + log q(z|x))] = 1/4 sum(mu^2 + sigma^2 + 1 + logvar + 2 log 2 pi)
    mu, lv = torch.tensor([[0.5, -1.0]], dtype=torch.float64), torch.tensor([[-0.5, 0.3]], dtype=torch.float64)
    want = 0.25 * (mu**2 + torch.exp(lv) + 1 + lv + 2 * math.log(2 * math.pi)).sum().item()
    z = mu + torch.exp(0.5 * lv) * torch.randn(400_000, 2, generator=_g(1), dtype=torch.float64)
    zero = torch.zeros(())
    assert mim_loss(zero, z, mu.expand_as(z), lv.expand_as(z)).item() == pytest.approx(want, abs=0.01)
    # and at given draws it is the scipy log-densities, term by term
    zs = z[:5]
    each = -0.5 * (norm.logpdf(zs.numpy()).sum(1) + norm.logpdf(zs.numpy(), mu.numpy(), np.exp(0.5 * lv.numpy())).sum(1))
    recon = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0], dtype=torch.float64)
    got = mim_loss(recon, zs, mu.expand_as(zs), lv.expand_as(zs)).item()
    assert got == pytest.approx(0.5 * 3.0 + each.mean(), rel=1e-9)


@pytest.mark.parametrize("norm_pix", [False, True])
def test_masked_recon_nll_is_the_gaussian_log_density_of_the_masked_values(norm_pix):
    mcfg = get_config("vit_small_synth", img_size=8, in_chans=2, embed_dim=32, depth=1, num_heads=2,
                      decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2, norm_pix_loss=norm_pix)
    model = build_model(mcfg)
    x = torch.randn(4, 2, 8, 8, generator=_g(0))
    out = model(x, mask_ratio=0.5, generator=_g(1))
    target = patchify(x, 2)
    if norm_pix:
        target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6) ** 0.5
    m = out.mask.bool()
    for std in (1.0, 0.3):
        brute = -norm.logpdf(target[m].numpy(), out.pred.detach()[m].numpy(), std).sum() / 4  # per sample
        assert masked_recon_nll(out, std).item() == pytest.approx(brute, rel=1e-5)


# ----------------------------------------------------------------------------- cMIM: the contrast


def test_posterior_contrast_closed_forms():
    n = 5
    # identical posteriors: every sample as likely under each, chance level log N
    mu, lv = torch.zeros(n, 3), torch.zeros(n, 3)
    z = _spread(n, 3)
    assert posterior_contrast(z, mu, lv).item() == pytest.approx(math.log(n), rel=1e-6)
    # well separated: each draw is only explained by its own posterior
    mu = 10.0 * torch.eye(n)
    assert posterior_contrast(mu + 0.01 * _spread(n, n), mu, torch.full((n, n), math.log(0.01**2))).item() < 1e-6
    # two samples in one dimension, by hand: log q(z_i|x_j) = -(z_i - mu_j)^2 / 2 (unit variances)
    z, mu = torch.tensor([[0.0], [1.0]]), torch.tensor([[0.0], [2.0]])
    want = 0.5 * (math.log(1 + math.exp(-2.0)) + math.log(1 + math.exp(0.0)))  # rows: -[0, -2] and -[-1/2, -1/2]
    assert posterior_contrast(z, mu, torch.zeros(2, 1)).item() == pytest.approx(want, rel=1e-6)


def _contrast_plain(z, mu, lv):
    """The contrast by broadcasting every (i, j) log-density in full."""
    logq = (-0.5 * ((z[:, None, :] - mu[None, :, :]) ** 2 * torch.exp(-lv[None]) + lv[None] + math.log(2 * math.pi))).sum(-1)
    return (torch.logsumexp(logq, dim=1) - logq.diagonal()).mean()


def test_posterior_contrast_value_and_gradient_match_the_broadcast_form():
    z0, mu0, lv0 = (_spread(6, 4, seed=s).double() for s in (1, 2, 3))
    lv0 = 0.5 * lv0
    ours_in = [t.clone().requires_grad_(True) for t in (z0, mu0, lv0)]
    plain_in = [t.clone().requires_grad_(True) for t in (z0, mu0, lv0)]
    ours, plain = posterior_contrast(*ours_in), _contrast_plain(*plain_in)
    ours.backward()
    plain.backward()
    assert ours.item() == pytest.approx(plain.item(), rel=1e-5)
    for a, b in zip(ours_in, plain_in):
        torch.testing.assert_close(a.grad.double(), b.grad, rtol=1e-4, atol=1e-6)


def test_posterior_contrast_stays_accurate_for_sharp_posteriors_in_float32():
    # sigma at hlvm's floor (e^-5), posteriors a fraction of sigma apart and far from the origin: a plain
    # expansion of (z_i - mu_j)^2 would cancel; the value is still far from both 0 and log N
    g = _g(2)
    sigma = math.exp(-5)
    mu = 3.0 + 0.2 * sigma * torch.randn(16, 64, generator=g, dtype=torch.float64)
    lv = torch.full_like(mu, -10.0)
    z = mu + sigma * torch.randn(16, 64, generator=g, dtype=torch.float64)
    want = _contrast_plain(z, mu, lv).item()
    assert 0.3 < want < math.log(16) - 0.3
    assert posterior_contrast(z.float(), mu.float(), lv.float()).item() == pytest.approx(want, abs=2e-3)


# ----------------------------------------------------------------------------- MI-MAE and cMIM end to end


def test_mimae_total_is_its_weighted_terms_and_each_gradient_reaches_only_its_network():
    total, parts, out, model = _run("mimae", "mlp", infonce=0.5, club=0.2)
    assert torch.allclose(total, out.loss + 0.5 * parts["infonce"] + 0.2 * parts["club"] + parts["club_fit"])
    # CLUB's scheme: the bound trains the encoder (q held fixed), q's fit trains q (the features held fixed)
    objective = build_objective("mimae")
    for which in ("club", "club_fit", "infonce"):
        model.zero_grad()
        out = model(out.inputs, mask=out.mask.bool())
        _, terms = objective.terms(out, model)
        terms[which].backward()
        encoder = [p.grad for p in model.encoder.parameters()]
        q = [p.grad for p in model.objective_heads.parameters()]
        if which == "club_fit":
            assert all(g is None for g in encoder) and all(g is not None and g.abs().sum() > 0 for g in q)
        else:
            assert all(g is not None and g.abs().sum() > 0 for g in encoder) and all(g is None for g in q)


def test_mimae_views_is_mimae_without_its_information_terms_so_the_encoder_learns_maes_loss_alone():
    total, parts, out, model = _run("mimae_views", "mlp")
    assert torch.allclose(total, out.loss + parts["club_fit"])
    assert parts["infonce"] > 0  # still measured, weighted 0
    model.zero_grad()
    out = model(out.inputs, mask=out.mask.bool())
    total, _ = build_objective("mimae_views").terms(out, model)
    total.backward()
    got = [p.grad.clone() for p in model.encoder.parameters()]
    model.zero_grad()
    out = model(out.inputs, mask=out.mask.bool())
    out.loss.backward()
    want = [p.grad for p in model.encoder.parameters()]
    assert all(torch.allclose(g, w) for g, w in zip(got, want, strict=True))
    assert build_objective("mimae_views").views == 2 and build_objective("mimae_views").options["infonce"] == 0.0


def test_mimae_views_see_disjoint_pixels_and_the_features_are_view_major():
    _, parts, out, model = _run("mimae", "mlp", batch=4, ratio=0.75, views=3, disjoint="visible")
    vis = ~out.mask.bool().reshape(3, 4, -1)  # (K, B, L)
    assert (vis.sum(dim=0) <= 1).all() and (vis.sum(dim=-1) == vis.sum(dim=-1)[0, 0]).all()
    assert torch.equal(out.inputs[:4], out.inputs[4:8])  # the same images under each view
    z = out.features.reshape(3, 4, -1)
    assert parts["infonce"] == pytest.approx(multi_view_info_nce(z, 0.2).item(), rel=1e-6)


def test_mimae_needs_its_model():
    _, _, out, _ = _run("mimae", "mlp")
    with pytest.raises(TypeError, match="approximation network"):
        build_objective("mimae")(out)


def test_cmim_total_is_mim_plus_the_weighted_contrast_and_logs_the_kl():
    total, parts, out, _ = _run("cmim", "mlp", contrast=0.3)
    assert torch.allclose(total, parts["mim"] + 0.3 * parts["contrast"])
    want = mim_loss(masked_recon_nll(out), out.posterior_sample, out.posterior_mean, out.posterior_logvar)
    assert parts["mim"] == pytest.approx(want.item(), rel=1e-6)
    assert parts["kl"] == pytest.approx(gaussian_kl(out.posterior_mean, out.posterior_logvar).mean().item(), rel=1e-6)
    assert parts["contrast"].item() >= 0.0
    with pytest.raises(ConfigError, match="Gaussian posterior"):
        build_objective("cmim")(_tiny("mlp")(torch.randn(4, 2, 8, 8), mask_ratio=0.5, generator=_g(0)))


def test_a_posterior_model_decodes_a_draw_in_training_and_the_mean_in_eval():
    model = _tiny("mlp", posterior="gaussian")
    x = torch.randn(4, 2, 8, 8)
    a = model(x, mask_ratio=0.5, generator=_g(0))
    b = model(x, mask_ratio=0.5, generator=_g(0))
    torch.testing.assert_close(a.posterior_sample, b.posterior_sample)  # the noise comes from the generator
    sigma = torch.exp(0.5 * a.posterior_logvar)
    torch.testing.assert_close(sigma, torch.full_like(sigma, 0.1), rtol=1e-3, atol=0)  # a fresh head: sigma 0.1
    assert not torch.equal(a.posterior_sample, a.posterior_mean)
    model.eval()
    c = model(x, mask_ratio=0.5, generator=_g(0))
    assert torch.equal(c.posterior_sample, c.posterior_mean)
    torch.testing.assert_close(c.features, model.encode(x, c.mask.bool()))


# ----------------------------------------------------------------------------- building


@pytest.mark.parametrize(
    ("name", "coefs", "message"),
    [
        ("simclr", {}, "unknown objective 'simclr'"),
        ("mae", {"coef": 0.1}, "'mae' takes no coefficients"),
        ("umae", {"mu": 1.0}, "'umae' takes coef"),
        ("umae", {"coef": -1.0}, "finite number >= 0"),
        ("mmae", {"coef": float("nan")}, "finite number >= 0"),
        ("mmae", {"mu": 0.0}, "mu must be > 0"),
        ("umae", {"diagonal": 1}, "diagonal must be true or false"),
        ("umae", {"feature": "pooled"}, "feature must be one of code, cls"),
        ("mmae", {"ddp_grad": "sum"}, "ddp_grad must be one of global, local"),
        ("mimae", {"infonce": -0.1}, "infonce must be a finite number >= 0"),
        ("mimae", {"club": float("nan")}, "club must be a finite number >= 0"),
        ("mimae", {"club": float("inf")}, "club must be a finite number >= 0"),
        ("mimae", {"views": 1}, "views must be an integer >= 2"),
        ("mimae", {"views": 2.5}, "views must be an integer >= 2"),
        ("mimae", {"temperature": 0.0}, "temperature must be > 0"),
        ("mimae", {"disjoint": "both"}, "disjoint must be one of visible, masked"),
        ("cmim", {"contrast": -1.0}, "contrast must be a finite number >= 0"),
        ("cmim", {"recon_std": 0.0}, "recon_std must be > 0"),
        ("cmim", {"views": 2}, "'cmim' takes contrast, recon_std"),
        ("umae_official", {"mu": 3.0}, "'umae_official' takes coef"),
    ],
)
def test_bad_objectives_raise_config_error(name, coefs, message):
    with pytest.raises(ConfigError, match=message) as e:
        build_objective(name, **coefs)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    ("name", "opts", "kw", "message"),
    [
        ("mimae", {}, dict(mask_ratio=0.25), "2 masks with disjoint visible sets need 2 x 48 <= 64 units"),
        ("mimae", {"views": 5}, dict(mask_ratio=0.75), "5 masks with disjoint visible sets"),
        ("mimae", {"disjoint": "masked"}, dict(mask_ratio=0.75), "disjoint masked sets need 2 x 48 <= 64"),
        ("mimae", {}, dict(mask_ratio=0.5, fixed_mask=True), "cannot train on one fixed mask"),
        ("mimae", {}, dict(mask_ratio=0.5, batch_size=1), "at least 2 images"),
        ("cmim", {}, dict(mask_ratio=0.5, batch_size=1), "at least 2 images"),
        ("umae", {}, dict(mask_ratio=0.5, batch_size=1), "at least 2 images"),
        ("umae", {"feature": "cls"}, dict(mask_ratio=0.5), "needs a ViT"),
    ],
)
def test_objectives_check_the_run_they_are_given(name, opts, kw, message):
    mcfg = get_config("mlp", img_size=8, in_chans=2, posterior="gaussian" if name == "cmim" else None)
    with pytest.raises(ConfigError, match=message) as e:
        build_objective(name, **opts).check(mcfg, **kw)
    assert "\n" not in str(e.value)
    build_objective("mimae").check(mcfg, mask_ratio=0.5, batch_size=2)  # 2 x 32 visible units of 64: fine
    with pytest.raises(ConfigError, match="posterior"):
        build_objective("cmim").check(get_config("mlp"), mask_ratio=0.5)


def test_defaults_and_presets_say_where_they_come_from():
    assert build_objective("umae").coefs == {"coef": 0.01, "diagonal": False, "feature": "code", "ddp_grad": "global"}
    assert build_objective("mmae").coefs == {"coef": 0.01, "mu": 1.0, "centering": False, "feature": "code", "ddp_grad": "global"}
    assert build_objective("umae", coef=0.1).coefs["coef"] == 0.1
    # the official code: U-MAE's pretrain.sh / loss_func.py / models_mae.py, M-MAE's pretrain.sh (mu 3)
    u, m = build_objective("umae_official"), build_objective("mmae_official")
    assert (u.kind, u.coefs) == ("umae", {"coef": 0.01, "diagonal": True, "feature": "cls", "ddp_grad": "local"})
    assert (m.kind, m.coefs) == ("mmae", {"coef": 0.01, "mu": 3.0, "centering": False, "feature": "cls", "ddp_grad": "local"})
    assert build_objective("mmae_official", mu=1.0).coefs["mu"] == 1.0  # a preset's options can be overridden
    assert objective_options("mimae")["views"] == 2 and build_objective("mimae", views=3.0).views == 3
    assert build_objective("cmim").posterior == "gaussian" and build_objective("mimae").posterior is None


def test_gather_is_the_identity_without_distributed():
    z = torch.randn(3, 2)
    assert gather_features(z) is z and gather_features(z, grad="local") is z


def test_attach_adds_the_approximation_network_once_after_the_models_weights():
    torch.manual_seed(0)
    model = _tiny("mlp")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    objective = build_objective("mimae", club_hidden=7)
    objective.attach(model)
    heads = model.objective_heads
    objective.attach(model)
    assert model.objective_heads is heads  # idempotent
    assert heads["club"].mu[0].out_features == 7 and heads["club"].mu[-1].out_features == model.cfg.code_dim
    assert heads["club"].mu[0].in_features == (2 + 1) * 8 * 8
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items() if k in before)
    assert {k for k in model.state_dict() if k not in before} == {k for k in model.state_dict() if k.startswith("objective_heads.")}
    build_objective("umae").attach(model := _tiny("mlp"))
    assert not hasattr(model, "objective_heads")


# ----------------------------------------------------------------------------- DDP


def _ddp_cases():
    return [
        ("umae", {"coef": 1.0}, ("uniformity",)),
        ("umae", {"coef": 1.0, "diagonal": True}, ("uniformity",)),
        ("mmae", {"coef": 1.0, "centering": True}, ("coding_rate",)),
        ("mimae", {"infonce": 1.0, "club": 1.0}, ("infonce", "club", "club_fit")),
        ("cmim", {"contrast": 1.0}, ("contrast",)),
    ]


def _case_forward(name, opts, x, rank_slice):
    """The tiny MLP through ``name`` on the images ``x[rank_slice]``: ``(model, total, parts)``."""
    objective = build_objective(name, **opts)
    torch.manual_seed(0)
    model = _tiny("mlp", posterior=objective.posterior)  # same initial weights on both ranks, as DDP broadcasts
    objective.attach(model)
    local = x[rank_slice]
    b = local.shape[0]
    if objective.views > 1:
        # every rank draws its own masks; here each sample's masks are fixed by its global index
        masks = complementary_token_masks(model.cfg, x.shape[0], 0.5, 2, generator=_g(0)).reshape(2, x.shape[0], -1)
        masks = masks[:, rank_slice].reshape(2 * b, -1)
        out = model(local.repeat(2, 1, 1, 1), mask=masks)
    else:
        out = model(local, mask=Mask.random(8, 8, 0.5, unit=2, seed=0), generator=_g(9))
    if objective.posterior is not None:  # the same posterior draws on one process and on two
        model.eval()
        out = model(local, mask=Mask.random(8, 8, 0.5, unit=2, seed=0))
        noise = torch.randn(x.shape[0], 4, generator=_g(5))[rank_slice]
        out.posterior_sample = out.posterior_mean + torch.exp(0.5 * out.posterior_logvar) * noise
    total, parts = objective(out, model)
    return model, total, parts


def _ddp_worker(rank: int, world: int, init_file: str, out_file: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        results = {}
        x = torch.randn(8, 2, 8, 8, generator=_g(1))
        for i, (name, opts, _) in enumerate(_ddp_cases()):
            model, total, parts = _case_forward(name, opts, x, slice(rank * 4, (rank + 1) * 4))
            total.backward()
            # DDP's gradient averaging, done by hand: wrapping in DistributedDataParallel would cost
            # each worker seconds importing torch._dynamo, and adds nothing this test checks.
            grads = {}
            for k, p in model.named_parameters():
                dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
                grads[k] = p.grad / world
            results[i] = {"grads": grads, "parts": {k: v.item() for k, v in parts.items()}}
        # the official GatherLayer's gradient: the term's, divided by the world size
        for grad in ("global", "local"):
            z = torch.randn(8, 3, generator=_g(2))[rank * 4 : (rank + 1) * 4].requires_grad_(True)
            uniformity(gather_features(z, grad=grad)).backward()
            results[grad] = z.grad.clone()  # this rank's shard; DDP would average it over ranks
        if rank == 0:
            torch.save(results, out_file)
    finally:
        dist.destroy_process_group()


def test_ddp_with_two_gloo_ranks_equals_one_process_on_the_whole_batch(tmp_path):
    """Every batch term sees the global batch, and DDP-averaged gradients equal one process's on it."""
    out_file = str(tmp_path / "rank0.pt")
    # torch.multiprocessing.spawn's machinery with fork: spawned children would spend ~10 s of CPU
    # re-importing torch; torch's threads are 1 here (conftest), which is what makes fork safe.
    ctx = mp.start_processes(
        _ddp_worker, args=(2, str(tmp_path / "init"), out_file), nprocs=2, join=False, start_method="fork"
    )
    deadline = time.monotonic() + 120
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for proc in ctx.processes:
                proc.kill()
            pytest.fail("DDP workers did not finish in 120 s")
    got = torch.load(out_file, weights_only=True)
    x = torch.randn(8, 2, 8, 8, generator=_g(1))
    for i, (name, opts, keys) in enumerate(_ddp_cases()):
        model, total, parts = _case_forward(name, opts, x, slice(0, 8))
        total.backward()
        for key in keys:  # every batch term saw all 8 samples
            assert got[i]["parts"][key] == pytest.approx(parts[key].item(), rel=1e-5), (name, key)
        for k, p in model.named_parameters():
            assert torch.allclose(got[i]["grads"][k], p.grad, atol=1e-6, rtol=1e-4), (name, k)
    # rank 0's shard of the features: every rank computes the term, so the global gather hands rank 0
    # world x the one-process gradient, which DDP's mean over ranks brings back to exactly it; the official
    # GatherLayer hands it 1 x, so after DDP's mean the term gets 1 / world of its gradient
    z = torch.randn(8, 3, generator=_g(2)).requires_grad_(True)
    uniformity(z).backward()
    torch.testing.assert_close(got["global"], 2 * z.grad[:4], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(got["local"], z.grad[:4], rtol=1e-5, atol=1e-7)
