"""The linear controls (hlvm.controls): PCA, random projection and the linear MAE, against brute force."""

from __future__ import annotations

import numpy as np
import pytest

from hlvm.controls import (
    PixelMoments,
    linear_control_encoder,
    linear_mae,
    linear_mae_encoder,
    linear_map_loss,
    masked_columns,
    pca_basis,
    pca_encoder,
    random_projection_encoder,
    visible_columns,
)
from hlvm.errors import ConfigError, DataError
from hlvm.evaluate import pixels_encoder
from hlvm.masks import Mask


def _moments(d: int, rng: np.random.Generator) -> np.ndarray:
    """A random covariance of full rank, ``(d, d)``."""
    a = rng.standard_normal((d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def _split(cov: np.ndarray, dx: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return cov[:dx, :dx], cov[:dx, dx:], cov[dx:, dx:]


def _best_loss_given_encoder(sxx, sxy, syy, e: np.ndarray) -> float:
    """The loss of encoder ``e`` ``(d_x, k)`` with its least-squares decoder: the best any decoder can do."""
    szz = e.T @ sxx @ e
    szy = e.T @ sxy
    return float(np.trace(syy) - np.trace(szy.T @ np.linalg.solve(szz, szy)))


def _sphere(n: int) -> np.ndarray:
    """``n`` nearly uniform unit vectors in R^3 (a Fibonacci lattice), ``(n, 3)``."""
    i = np.arange(n) + 0.5
    phi = np.arccos(1 - 2 * i / n)
    theta = np.pi * (1 + 5**0.5) * i
    return np.stack([np.cos(theta) * np.sin(phi), np.sin(theta) * np.sin(phi), np.cos(phi)], axis=1)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("k", [1, 2])
def test_linear_mae_is_the_brute_force_optimum_over_every_rank_k_map(seed, k):
    # d_x = 3: a rank-k map's loss (with its best decoder) depends on the encoder's row space alone, a line (k = 1)
    # or a plane (k = 2, given by its normal) in R^3; a fine lattice over the sphere searches all of them.
    rng = np.random.default_rng(seed)
    sxx, sxy, syy = _split(_moments(5, rng), 3)
    got = linear_mae(sxx, sxy, syy, k)
    dirs = _sphere(40_000)
    if k == 1:
        losses = [_best_loss_given_encoder(sxx, sxy, syy, v[:, None]) for v in dirs[::4]]
    else:
        losses = []
        for nrm in dirs[::4]:
            basis = np.linalg.svd(nrm[None, :])[2][1:].T  # (3, 2): the plane orthogonal to nrm
            losses.append(_best_loss_given_encoder(sxx, sxy, syy, basis))
    brute = min(losses)
    assert got.width == k
    assert got.loss <= brute + 1e-9  # nothing beats the closed form
    assert brute - got.loss < 1e-3 * np.trace(syy)  # and the search comes within its lattice's resolution
    # The stated optimum is the loss of the map it returns.
    w = got.encoder @ got.decoder
    assert linear_map_loss(sxx, sxy, syy, w) == pytest.approx(got.loss, rel=1e-10, abs=1e-10)


def test_linear_mae_matches_a_gradient_fit_of_the_factorised_map_in_more_dims():
    from scipy.optimize import minimize

    rng = np.random.default_rng(5)
    dx, dy, k = 6, 5, 2
    sxx, sxy, syy = _split(_moments(dx + dy, rng), dx)
    got = linear_mae(sxx, sxy, syy, k)

    def f(theta):
        e, d = theta[: dx * k].reshape(dx, k), theta[dx * k :].reshape(k, dy)
        return linear_map_loss(sxx, sxy, syy, e @ d)

    best = min(minimize(f, rng.standard_normal(dx * k + k * dy), method="BFGS", options={"gtol": 1e-10}).fun for _ in range(8))
    assert got.loss <= best + 1e-9
    assert best == pytest.approx(got.loss, rel=1e-6)


def test_linear_mae_at_full_rank_is_least_squares_and_its_loss_is_the_sum_of_the_dropped_singular_values():
    rng = np.random.default_rng(3)
    sxx, sxy, syy = _split(_moments(7, rng), 4)
    full = linear_mae(sxx, sxy, syy, 10)  # k beyond the rank min(4, 3) = 3 is cut to it
    assert full.width == 3
    ols = np.linalg.solve(sxx, sxy)  # (d_x, d_y)
    np.testing.assert_allclose(full.encoder @ full.decoder, ols, atol=1e-10)
    one = linear_mae(sxx, sxy, syy, 1)
    assert one.loss == pytest.approx(full.loss + float(np.sum(one.singular_values[1:] ** 2)), rel=1e-10)


def test_on_samples_the_linear_mae_reconstructs_the_masked_pixels_better_than_any_other_linear_code_of_its_width():
    rng = np.random.default_rng(0)
    imgs = rng.standard_normal((3000, 2, 4, 4)) @ np.diag([1.0, 0.5, 2.0, 1.0])  # (N, C, H, W), correlated columns
    imgs = imgs + 0.8 * imgs[:, :, :1, :1]  # every pixel shares one pixel's signal
    mom = PixelMoments.of(imgs)
    mask = Mask.random(4, 4, ratio=0.5, unit=1, seed=1)
    y = imgs[:, :, mask.grid].reshape(len(imgs), -1)
    y = y - y.mean(0)

    def recon_loss(code):
        code = code - code.mean(0)
        dec, *_ = np.linalg.lstsq(code, y, rcond=None)
        return float(np.mean((y - code @ dec) ** 2))

    k = 3
    lmae = recon_loss(linear_mae_encoder(mom, k)(imgs, mask))
    assert lmae < recon_loss(pca_encoder(mom, k)(imgs, mask))
    assert lmae < recon_loss(random_projection_encoder(k, 0)(imgs, mask))
    # The in-sample loss of the fitted codes equals the closed form's, per masked value.
    vi, mi = visible_columns(mask, mom.shape), masked_columns(mask, mom.shape)
    model = linear_mae(mom.cov[np.ix_(vi, vi)], mom.cov[np.ix_(vi, mi)], mom.cov[np.ix_(mi, mi)], k)
    assert lmae == pytest.approx(model.loss / len(mi) * (len(imgs) - 1) / len(imgs), rel=1e-8)


def test_moments_equal_numpy_and_do_not_depend_on_the_batch():
    rng = np.random.default_rng(1)
    imgs = rng.standard_normal((101, 2, 3, 3)).astype(np.float32)
    a, b = PixelMoments.of(imgs, batch=7), PixelMoments.of(imgs, batch=4096)
    flat = imgs.reshape(101, -1).astype(np.float64)
    np.testing.assert_allclose(a.cov, np.cov(flat, rowvar=False), atol=1e-12)
    np.testing.assert_allclose(a.mean, flat.mean(0), atol=1e-12)
    np.testing.assert_allclose(a.cov, b.cov, atol=1e-12)
    assert a.shape == (2, 3, 3) and a.n == 101


def test_columns_pick_exactly_the_values_the_pixels_control_sees():
    rng = np.random.default_rng(2)
    imgs = rng.standard_normal((5, 3, 4, 4))
    mask = Mask.random(4, 4, ratio=0.25, unit=2, seed=3)
    idx = visible_columns(mask, (3, 4, 4))
    np.testing.assert_array_equal(imgs.reshape(5, -1)[:, idx], pixels_encoder()(imgs, mask))
    both = np.sort(np.concatenate([idx, masked_columns(mask, (3, 4, 4))]))
    np.testing.assert_array_equal(both, np.arange(48))


def test_pca_codes_are_uncorrelated_with_the_top_variances_in_order():
    rng = np.random.default_rng(4)
    imgs = rng.standard_normal((4000, 1, 4, 4)) * np.linspace(0.2, 2.0, 16).reshape(1, 1, 4, 4)
    mom = PixelMoments.of(imgs)
    mask = Mask.random(4, 4, ratio=0.25, unit=1, seed=0)
    code = pca_encoder(mom, 4)(imgs, mask)
    cov = np.cov(code, rowvar=False)
    vi = visible_columns(mask, mom.shape)
    top = np.sort(np.linalg.eigvalsh(mom.cov[np.ix_(vi, vi)]))[::-1][:4]
    np.testing.assert_allclose(np.diag(cov), top, rtol=1e-8)
    np.testing.assert_allclose(cov - np.diag(np.diag(cov)), 0.0, atol=1e-8)
    # k beyond the visible values is cut to them.
    assert pca_encoder(mom, 99)(imgs, mask).shape == (4000, len(vi))
    basis = pca_basis(mom.cov[np.ix_(vi, vi)], 3)
    np.testing.assert_allclose(basis.T @ basis, np.eye(3), atol=1e-12)


def test_random_projection_is_seeded_and_keeps_its_width():
    imgs = np.random.default_rng(0).standard_normal((10, 2, 4, 4))
    mask = Mask.random(4, 4, ratio=0.75, unit=1, seed=0)  # 4 visible pixels: 8 values
    a = random_projection_encoder(16, 7)(imgs, mask)
    assert a.shape == (10, 16)
    assert a.tobytes() == random_projection_encoder(16, 7)(imgs, mask).tobytes()
    assert not np.allclose(a, random_projection_encoder(16, 8)(imgs, mask))


def test_the_same_moments_give_the_same_bytes():
    imgs = np.random.default_rng(9).standard_normal((200, 2, 4, 4))
    mask = Mask.random(4, 4, ratio=0.5, unit=2, seed=2)
    for name in ("pca", "linear_mae"):
        a = linear_control_encoder(name, 2, moments=PixelMoments.of(imgs))(imgs, mask)
        b = linear_control_encoder(name, 2, moments=PixelMoments.of(imgs))(imgs, mask)
        assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("k", [0, -1, True, 1.5, "2"])
def test_a_bad_width_is_a_config_error(k):
    with pytest.raises(ConfigError, match="width"):
        random_projection_encoder(k, 0)


def test_bad_training_images_are_data_errors():
    with pytest.raises(DataError, match="at least 2"):
        PixelMoments.of(np.zeros((1, 1, 2, 2)))
    bad = np.zeros((4, 1, 2, 2))
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        PixelMoments.of(bad)
    with pytest.raises(ConfigError, match="PixelMoments"):
        linear_control_encoder("pca", 2)
    with pytest.raises(ConfigError, match="unknown linear control"):
        linear_control_encoder("ica", 2)
    mom = PixelMoments.of(np.random.default_rng(0).standard_normal((4, 1, 2, 2)))
    with pytest.raises(DataError, match="training images are 2x2"):
        pca_encoder(mom, 1)(np.zeros((3, 1, 4, 4)), Mask.random(4, 4, ratio=0.5, unit=1, seed=0))
