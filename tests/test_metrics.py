"""Claims about hlvm.metrics, sanity-tested in disentanglement_lib's manner.

A perfect representation scores R^2 near 1, independent noise near 0 (held
out, so it cannot be inflated), an invertible nonlinear transform near 1
nonlinearly and clearly less linearly; a rotation scores CCA 1; effective rank
is exact on codes whose singular values theory gives.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.cross_decomposition import CCA as SkCCA
from sklearn.kernel_ridge import KernelRidge
from sklearn.linear_model import Ridge

from hlvm.errors import ConfigError, DataError
from hlvm.metrics import (
    cca,
    effective_rank,
    per_level,
    per_node,
    r2_best,
    r2_kernel,
    r2_linear,
    r2_probes,
    r2_score,
    split_indices,
)


def latents(n: int, k: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-2, 2, size=(n, k))


def triangular_map(z: np.ndarray) -> np.ndarray:
    """An invertible nonlinear map (each output adds a function of earlier inputs): z = f^-1(x) exists."""
    x1 = z[:, 0]
    x2 = z[:, 1] + x1**2
    x3 = z[:, 2] + np.sin(2 * x2)
    return np.stack([x1, x2, x3], axis=1)


# ----------------------------------------------------------------------------- split and score


def test_split_is_a_seeded_partition():
    train, test = split_indices(100, 0.3, random_state=5)
    assert len(test) == 30 and len(train) == 70
    assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(100))
    again = split_indices(100, 0.3, random_state=5)
    assert np.array_equal(train, again[0]) and np.array_equal(test, again[1])
    assert not np.array_equal(test, split_indices(100, 0.3, random_state=6)[1])


def test_r2_score_matches_definition_and_marks_constant_targets():
    y = np.array([[1.0, 2.0], [2.0, 2.0], [3.0, 2.0], [4.0, 2.0]])
    pred = np.array([[1.0, 2.0], [2.0, 2.0], [3.0, 2.0], [5.0, 2.0]])
    r2 = r2_score(y, pred)
    assert r2[0] == pytest.approx(1 - 1 / 5)
    assert np.isnan(r2[1])


# ----------------------------------------------------------------------------- R^2 sanity


@pytest.mark.parametrize("probe", [r2_linear, r2_kernel, r2_best])
def test_true_latents_score_near_one(probe):
    z = latents(600, 4, 0)
    assert (probe(z, z, random_state=0) > 0.99).all()


@pytest.mark.parametrize("probe", [r2_linear, r2_kernel, r2_best])
def test_independent_noise_scores_near_zero_held_out(probe):
    z = latents(600, 4, 0)
    noise = np.random.default_rng(1).normal(size=(600, 30))
    r2 = probe(noise, z, random_state=0)
    # Held out: no fit on 30 junk features can push R^2 up; the max of two probes stays tiny.
    assert np.abs(r2).max() < 0.06
    assert abs(r2.mean()) < 0.03


def test_invertible_nonlinear_transform_near_one_nonlinearly_and_less_linearly():
    z = latents(800, 3, 2)
    x = triangular_map(z)
    probes = r2_probes(x, z, random_state=0)
    assert (probes.kernel > 0.95).all(), probes.kernel
    # z2 = x2 - x1^2 and z3 = x3 - sin(2 x2) are far from linear in x.
    assert probes.linear[1:].max() < 0.8, probes.linear
    assert (probes.kernel[1:] - probes.linear[1:] > 0.2).all()
    assert np.array_equal(probes.best, np.fmax(probes.linear, probes.kernel))


def test_partial_information_scores_in_between():
    rng = np.random.default_rng(3)
    z = rng.normal(size=(1000, 1))
    x = z + rng.normal(size=(1000, 1))  # best predictor E[z|x] = x/2 has R^2 = 1/2
    assert r2_linear(x, z, random_state=0)[0] == pytest.approx(0.5, abs=0.07)
    assert r2_kernel(x, z, random_state=0)[0] == pytest.approx(0.5, abs=0.07)


def test_linear_probe_agrees_with_sklearn_ridge_at_the_chosen_penalty():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(300, 8))
    Y = X @ rng.normal(size=(8, 2)) + rng.normal(size=(300, 2))
    train, test = split_indices(300, 0.25, random_state=7)
    ours = r2_linear(X, Y, random_state=7, alphas=[10.0])
    mx, sx = X[train].mean(0), X[train].std(0)
    ref = Ridge(alpha=10.0).fit((X[train] - mx) / sx, Y[train]).predict((X[test] - mx) / sx)
    np.testing.assert_allclose(ours, r2_score(Y[test], ref), atol=1e-10)


def test_exact_kernel_probe_agrees_with_sklearn_kernel_ridge_at_one_penalty():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(300, 3))
    Y = np.sin(X[:, :1]) + 0.1 * rng.normal(size=(300, 1))
    train, test = split_indices(300, 0.25, random_state=1)
    mx, sx = X[train].mean(0), X[train].std(0)
    my, sy = Y[train].mean(0), Y[train].std(0)
    Xtr, Xte = (X[train] - mx) / sx, (X[test] - mx) / sx
    # Only one gamma scale and one alpha: the result is a plain KernelRidge at the median-heuristic gamma.
    ours = r2_kernel(X, Y, random_state=1, alphas=[0.1], gamma_scales=[1.0])
    # Reproduce the length scale from the same stream: split first, then the median sample.
    gen = np.random.default_rng(1)
    split_indices(300, 0.25, random_state=gen)
    sub = Xtr[gen.choice(len(Xtr), size=len(Xtr), replace=False)]
    d = ((sub[:, None] - sub[None]) ** 2).sum(-1)[np.triu_indices(len(sub), 1)]
    model = KernelRidge(kernel="rbf", alpha=0.1, gamma=1 / np.median(d)).fit(Xtr, (Y[train] - my) / sy)
    np.testing.assert_allclose(ours, r2_score(Y[test], model.predict(Xte) * sy + my), atol=1e-8)


def test_nystroem_path_tracks_the_exact_kernel():
    z = latents(900, 3, 6)
    x = triangular_map(z)
    exact = r2_kernel(x, z, random_state=0)
    approx = r2_kernel(x, z, random_state=0, nystroem_above=100, n_components=300)
    np.testing.assert_allclose(approx, exact, atol=0.03)
    assert (approx > 0.93).all()


def test_probes_are_deterministic_in_the_seed_and_accept_generators():
    z = latents(300, 2, 8)
    x = triangular_map(np.c_[z, z[:, :1]])
    a = r2_probes(x, z, random_state=3)
    b = r2_probes(x, z, random_state=3)
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    c = r2_probes(x, z, random_state=np.random.default_rng(3))
    assert all(np.array_equal(u, v) for u, v in zip(a, c))


def test_preprocessing_is_fitted_on_train_only():
    """A target that is constant on the training rows cannot be predicted on test rows."""
    rng = np.random.default_rng(9)
    X = rng.normal(size=(200, 3))
    train, test = split_indices(200, 0.25, random_state=0)
    y = np.zeros(200)
    y[test] = X[test, 0]  # only test rows vary: any leak of test statistics would fit it
    r2 = r2_linear(X, y, random_state=0)
    assert r2[0] < 0.01


def test_bad_inputs_raise_domain_errors():
    z = latents(50, 2, 0)
    with pytest.raises(DataError, match="different numbers of samples"):
        r2_linear(z, z[:40], random_state=0)
    with pytest.raises(DataError, match="non-finite"):
        r2_linear(np.full((50, 2), np.nan), z, random_state=0)
    with pytest.raises(DataError, match="too few"):
        r2_linear(z[:4], z[:4], random_state=0)
    with pytest.raises(ConfigError, match="test_size"):
        r2_linear(z, z, random_state=0, test_size=1.5)
    with pytest.raises(ConfigError, match="random_state"):
        r2_linear(z, z, random_state=0.5)


# ----------------------------------------------------------------------------- aggregation


def test_per_node_and_per_level_aggregate_by_columns():
    scores = np.array([1.0, 0.0, 0.5, 0.25, 0.75])
    index = {"z_0_0_0": (0, 2), "z_1_0_0": (2, 3), "z_1_0_1": (3, 5)}
    assert per_node(scores, index) == {"z_0_0_0": 0.5, "z_1_0_0": 0.5, "z_1_0_1": 0.5}
    assert per_node(scores, index, reduce=np.min)["z_1_0_1"] == 0.25
    by_level = per_level(scores, index, {0: ["z_0_0_0"], 1: ["z_1_0_0", "z_1_0_1"], 2: ["x_0_0"]})
    assert by_level == {0: 0.5, 1: pytest.approx(0.5)}
    with pytest.raises(DataError, match="outside"):
        per_node(scores, {"a": (3, 9)})


# ----------------------------------------------------------------------------- CCA


def test_cca_of_a_rotation_and_rescaling_is_one():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(300, 4))
    rot = np.linalg.qr(rng.normal(size=(4, 4)))[0]
    res = cca(z, (z @ rot) * [1.0, 10.0, 0.1, 3.0] + 5.0)
    np.testing.assert_allclose(res.correlations, 1.0, atol=1e-10)
    assert res.mean == pytest.approx(1.0)


def test_cca_matches_sklearn_on_a_small_case():
    rng = np.random.default_rng(1)
    shared = rng.normal(size=(400, 2))
    X = np.c_[shared, rng.normal(size=(400, 2))] @ rng.normal(size=(4, 4))
    Y = np.c_[shared + 0.7 * rng.normal(size=(400, 2)), rng.normal(size=(400, 1))] @ rng.normal(size=(3, 3))
    ours = cca(X, Y).correlations
    model = SkCCA(n_components=3, max_iter=5000, tol=1e-12).fit(X, Y)
    a, b = model.transform(X, Y)
    ref = np.array([np.corrcoef(a[:, k], b[:, k])[0, 1] for k in range(3)])
    np.testing.assert_allclose(ours, ref, atol=1e-6)


def test_cca_of_independent_views_is_small_and_rank_deficiency_does_not_inflate_it():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(2000, 3))
    Y = rng.normal(size=(2000, 3))
    assert cca(X, Y).correlations.max() < 0.1
    # A duplicated column adds no direction: still 3 correlations, still small.
    X_dup = np.c_[X, X[:, :1] * 2.0]
    res = cca(X_dup, Y)
    assert len(res.correlations) == 3 and res.correlations.max() < 0.1


def test_cca_ridge_shrinks_towards_zero_and_zero_ridge_is_plain_cca():
    rng = np.random.default_rng(3)
    z = rng.normal(size=(500, 2))
    X, Y = z + 0.3 * rng.normal(size=(500, 2)), z + 0.3 * rng.normal(size=(500, 2))
    plain, ridged = cca(X, Y), cca(X, Y, ridge=0.5)
    assert (ridged.correlations < plain.correlations).all()
    np.testing.assert_allclose(cca(X, Y, ridge=1e-12).correlations, plain.correlations, atol=1e-8)
    with pytest.raises(ConfigError):
        cca(X, Y, ridge=-1.0)


# ----------------------------------------------------------------------------- effective rank


@pytest.mark.parametrize("k", [1, 2, 5])
def test_effective_rank_of_equal_singular_values_is_exactly_k(k):
    # k orthonormal columns scaled alike: k equal singular values, so exp(log k) = k.
    q = np.linalg.qr(np.random.default_rng(k).normal(size=(50, 8)))[0][:, :k]
    assert effective_rank(np.c_[3.0 * q, np.zeros((50, 2))], center=False) == pytest.approx(k, abs=1e-10)


def test_effective_rank_of_isotropic_code_approaches_k_and_rank_one_is_one():
    rng = np.random.default_rng(0)
    assert effective_rank(rng.normal(size=(50_000, 6))) == pytest.approx(6.0, abs=0.01)
    assert effective_rank(rng.normal(size=(500, 1)) @ rng.normal(size=(1, 7))) == pytest.approx(1.0, abs=1e-9)
    # An offset is not a direction when centring.
    assert effective_rank(np.ones((10, 3)) + np.arange(10)[:, None] * [1.0, 2.0, 3.0]) == pytest.approx(1.0)
    with pytest.raises(DataError):
        effective_rank(np.zeros((5, 2)))


def test_effective_rank_lies_between_one_and_the_rank():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(100, 5)) * [10.0, 1.0, 1.0, 0.1, 0.01]
    er = effective_rank(X)
    assert 1.0 < er < 5.0
