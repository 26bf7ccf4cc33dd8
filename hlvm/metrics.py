"""Recovery metrics: pure array functions in sklearn's ``(n_samples, n_features)`` orientation.

How much of a true variable ``Y`` (targets) a representation ``X`` holds:

- :func:`r2_linear`: ridge regression, ``alpha`` chosen per target by exact
  leave-one-out on the training split;
- :func:`r2_kernel`: RBF kernel ridge, ``alpha`` and ``gamma`` chosen per
  target by exact leave-one-out; exact kernel up to ``nystroem_above`` samples,
  a Nystroem feature map above;
- :func:`r2_best`: the larger of the two per target (docs/theory.md: prefer the
  larger when a probe may under-fit); :func:`r2_probes` returns all three from
  one split.

Every R^2 is measured on a held-out split (``test_size``), so independent noise
scores near 0 and cannot be inflated by fitting. All preprocessing (centring,
standardisation, the kernel's length scale) is fitted on the training split
only. R^2 is ``1 - SSE / SST`` on the test split with SST about the test mean
(sklearn's ``r2_score``); it can be negative and is not clipped here.

:func:`per_node` / :func:`per_level` aggregate per-dimension scores given a
column index ``{node: (start, stop)}``.

:func:`cca` is closed-form canonical correlation analysis (QR of each centred
view, then the singular values of ``Q1^T Q2``), with an optional ridge;
:func:`effective_rank` is Roy & Vetterli's (2007) ``exp`` of the entropy of the
normalised singular values.

Every random draw (the split, the kernel's landmarks and length-scale sample)
comes from ``random_state``: an int seed or a ``numpy.random.Generator``; the
same seed gives the same numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import numpy as np
import scipy.linalg

from hlvm.errors import ConfigError, DataError

__all__ = [
    "split_indices",
    "r2_score",
    "r2_linear",
    "r2_kernel",
    "r2_best",
    "r2_probes",
    "R2Probes",
    "per_node",
    "per_level",
    "cca",
    "CCAResult",
    "effective_rank",
    "LINEAR_ALPHAS",
    "KERNEL_ALPHAS",
    "GAMMA_SCALES",
]

RandomState = int | np.random.Generator

# Ridge penalties on standardised data (columns of unit variance, so a
# direction of X^T X carries ~n_train): from nearly unregularised to strong.
LINEAR_ALPHAS = tuple(float(a) for a in np.logspace(-3, 5, 9))
# Kernel ridge penalties on K (entries in [0, 1], top eigenvalues ~n_train) for
# standardised targets: near-interpolation for deterministic relations up to
# ~noise variance 100.
KERNEL_ALPHAS = tuple(float(a) for a in np.logspace(-4, 2, 7))
# RBF gamma as multiples of 1 / median squared distance (the median heuristic).
GAMMA_SCALES = (0.1, 0.3, 1.0, 3.0)
# Below this many samples the kernel is exact; above, Nystroem.
NYSTROEM_ABOVE = 3000
N_COMPONENTS = 1000


# ----------------------------------------------------------------------------- input checks


def _rng(random_state: RandomState) -> np.random.Generator:
    if isinstance(random_state, np.random.Generator):
        return random_state
    if isinstance(random_state, bool) or not isinstance(random_state, int | np.integer):
        raise ConfigError(f"random_state must be an int seed or a numpy Generator, got {random_state!r}")
    return np.random.default_rng(int(random_state))


def _as_2d(a: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise DataError(f"{name} must be 2-D (n_samples, n_features), got shape {a.shape}")
    if a.shape[1] == 0:
        raise DataError(f"{name} has no features")
    if not np.isfinite(a).all():
        raise DataError(f"{name} has non-finite values")
    return a


def _pair(X: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    X, Y = _as_2d(X, "X"), _as_2d(Y, "Y")
    if X.shape[0] != Y.shape[0]:
        raise DataError(f"X and Y have different numbers of samples: {X.shape[0]} != {Y.shape[0]}")
    return X, Y


def split_indices(n: int, test_size: float = 0.25, *, random_state: RandomState) -> tuple[np.ndarray, np.ndarray]:
    """A random ``(train, test)`` split of ``range(n)``; ``test`` has ``round(test_size * n)`` samples.

    >>> train, test = split_indices(8, 0.25, random_state=0)
    >>> len(train), len(test), sorted(np.concatenate([train, test]).tolist()) == list(range(8))
    (6, 2, True)
    """
    if not 0.0 < test_size < 1.0:
        raise ConfigError(f"test_size must be in (0, 1), got {test_size}")
    n_test = int(round(test_size * n))
    if n_test < 2 or n - n_test < 3:
        raise DataError(f"{n} samples are too few for a train/test split with test_size {test_size}")
    perm = _rng(random_state).permutation(n)
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def r2_score(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Per-column ``1 - SSE / SST`` (SST about the mean of ``y_true``); NaN for a constant column."""
    y_true, y_pred = _as_2d(y_true, "y_true"), _as_2d(y_pred, "y_pred")
    sse = ((y_true - y_pred) ** 2).sum(axis=0)
    sst = ((y_true - y_true.mean(axis=0)) ** 2).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(sst > 0, 1.0 - sse / np.where(sst > 0, sst, 1.0), np.nan)


class _Standardiser:
    """Centre and scale columns with statistics of the training rows only."""

    def __init__(self, a: np.ndarray) -> None:
        self.mean = a.mean(axis=0)
        std = a.std(axis=0)
        # A constant training column carries nothing; keep it at zero rather than divide by 0.
        self.std = np.where(std > 1e-12 * (1.0 + np.abs(self.mean)), std, 1.0)

    def __call__(self, a: np.ndarray) -> np.ndarray:
        return (a - self.mean) / self.std


# ----------------------------------------------------------------------------- ridge with exact leave-one-out


class _Fit(NamedTuple):
    loo_mse: np.ndarray  # (T,) best leave-one-out MSE per target
    test_pred: np.ndarray  # (n_test, T) test predictions at the chosen penalty
    alpha: np.ndarray  # (T,) chosen penalty


def _select(
    loo_mse: np.ndarray, alphas: np.ndarray, predict: Callable[[np.ndarray], np.ndarray]
) -> _Fit:
    """Pick per target the penalty of least LOO error; ``predict(alpha_index_per_target)`` gives test predictions."""
    best = np.argmin(loo_mse, axis=0)  # (T,)
    return _Fit(loo_mse[best, np.arange(loo_mse.shape[1])], predict(best), alphas[best])


def _loo_mse(U: np.ndarray, UtY: np.ndarray, Y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Mean squared LOO residual per (alpha, target) for hat matrices ``H_a = U diag(weights[a]) U^T``.

    ``U`` is ``(n, r)``, ``UtY = U^T Y`` and ``weights`` is ``(n_alphas, r)``;
    the LOO residual of a linear smoother is ``(Y - H Y) / (1 - diag H)``.
    """
    U2 = U**2
    loo = np.empty((len(weights), Y.shape[1]))
    for i, w in enumerate(weights):
        h = U2 @ w  # (n,) diag of the hat matrix
        resid = (Y - U @ (w[:, None] * UtY)) / (1.0 - h)[:, None]
        loo[i] = (resid**2).mean(axis=0)
    return loo


def _ridge_primal(
    F: np.ndarray, Y: np.ndarray, F_test: np.ndarray, alphas: np.ndarray, proj: np.ndarray | None = None
) -> _Fit:
    """Ridge on features ``F`` (or ``F @ proj``), every alpha's LOO error in closed form.

    With features ``Phi``, ``Phi^T Phi = V diag(s2) V^T`` and ``P = Phi V``, the
    hat matrix is ``H = P diag(1 / (s2 + alpha)) P^T``, so ``diag(H)`` and
    ``H Y`` cost one ``(n, r)`` product per alpha, and the LOO residual is
    ``(Y - H Y) / (1 - diag H)``. Passing ``proj`` instead of forming
    ``F @ proj`` saves one ``(n, m, m)`` product (the Nystroem map).
    """
    gram = F.T @ F if proj is None else proj.T @ (F.T @ F) @ proj
    s2, V = np.linalg.eigh(gram)
    keep = s2 > s2.max() * 1e-12
    s2, V = s2[keep], V[:, keep]
    B = V if proj is None else proj @ V  # (m, r): from F's columns to the eigenbasis
    P = F @ B  # (n, r)
    PtY = P.T @ Y  # (r, T)
    loo = _loo_mse(P, PtY, Y, 1.0 / (s2[None, :] + alphas[:, None]))  # (A, T)
    FtV = F_test @ B  # (n_test, r)

    def predict(best: np.ndarray) -> np.ndarray:
        inv = 1.0 / (s2[:, None] + alphas[best][None, :])  # (r, T)
        return FtV @ (inv * PtY)

    return _select(loo, alphas, predict)


def _ridge_dual(K: np.ndarray, Y: np.ndarray, K_test: np.ndarray, alphas: np.ndarray) -> _Fit:
    """Kernel ridge ``(K + alpha I) a = Y`` with every alpha's LOO error in closed form.

    With ``K = Q diag(lam) Q^T`` the hat matrix is ``Q diag(lam / (lam + alpha)) Q^T``.
    """
    lam, Q = np.linalg.eigh(K)
    lam = np.clip(lam, 0.0, None)  # round-off can leave tiny negative eigenvalues of a PSD kernel
    QtY = Q.T @ Y  # (n, T)
    loo = _loo_mse(Q, QtY, Y, lam[None, :] / (lam[None, :] + alphas[:, None]))  # (A, T)
    KtQ = K_test @ Q  # (n_test, n)

    def predict(best: np.ndarray) -> np.ndarray:
        inv = 1.0 / (lam[:, None] + alphas[best][None, :])  # (n, T)
        return KtQ @ (inv * QtY)

    return _select(loo, alphas, predict)


def _sq_dists(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """``(len(A), len(B))`` squared Euclidean distances, clipped at 0 against round-off."""
    d = (A**2).sum(1)[:, None] + (B**2).sum(1)[None, :] - 2.0 * A @ B.T
    return np.clip(d, 0.0, None)


def _median_sq_dist(X: np.ndarray, rng: np.random.Generator, max_points: int = 1000) -> float:
    sub = X[rng.choice(len(X), size=min(len(X), max_points), replace=False)]
    d = _sq_dists(sub, sub)[np.triu_indices(len(sub), k=1)]
    med = float(np.median(d)) if d.size else 0.0
    # All points equal: any length scale fits; 1 keeps gamma finite.
    return med if med > 0 else 1.0


# ----------------------------------------------------------------------------- R^2 probes


class _Prepared(NamedTuple):
    X_train: np.ndarray
    X_test: np.ndarray
    Y_train: np.ndarray
    Y_test: np.ndarray


def _prepare(X: np.ndarray, Y: np.ndarray, test_size: float, rng: np.random.Generator) -> _Prepared:
    X, Y = _pair(X, Y)
    train, test = split_indices(len(X), test_size, random_state=rng)
    sx, sy = _Standardiser(X[train]), _Standardiser(Y[train])
    return _Prepared(sx(X[train]), sx(X[test]), sy(Y[train]), sy(Y[test]))


def _linear(p: _Prepared, alphas: Sequence[float]) -> np.ndarray:
    fit = _ridge_primal(p.X_train, p.Y_train, p.X_test, np.asarray(alphas, dtype=float))
    return r2_score(p.Y_test, fit.test_pred)


def _kernel(
    p: _Prepared,
    rng: np.random.Generator,
    alphas: Sequence[float],
    gamma_scales: Sequence[float],
    nystroem_above: int,
    n_components: int,
) -> np.ndarray:
    alphas_arr = np.asarray(alphas, dtype=float)
    gamma0 = 1.0 / _median_sq_dist(p.X_train, rng)
    n = len(p.X_train)
    nystroem = n > nystroem_above
    if nystroem:
        landmarks = p.X_train[np.sort(rng.choice(n, size=min(n_components, n), replace=False))]
        D_train, D_test = _sq_dists(p.X_train, landmarks), _sq_dists(p.X_test, landmarks)  # (n, m), (n_test, m)
        D_mm = _sq_dists(landmarks, landmarks)
    else:
        D_train, D_test = _sq_dists(p.X_train, p.X_train), _sq_dists(p.X_test, p.X_train)
    best_loo = np.full(p.Y_train.shape[1], np.inf)
    pred = np.zeros_like(p.Y_test)
    for scale in gamma_scales:
        gamma = gamma0 * scale
        if nystroem:
            # Feature map Phi = K_nm U diag(w)^-1/2, so Phi Phi^T = K_nm K_mm^+ K_mn ~ K.
            w, U = np.linalg.eigh(np.exp(-gamma * D_mm))
            keep = w > w.max() * 1e-10
            proj = U[:, keep] / np.sqrt(w[keep])  # (m, r)
            fit = _ridge_primal(np.exp(-gamma * D_train), p.Y_train, np.exp(-gamma * D_test), alphas_arr, proj)
        else:
            fit = _ridge_dual(np.exp(-gamma * D_train), p.Y_train, np.exp(-gamma * D_test), alphas_arr)
        better = fit.loo_mse < best_loo
        best_loo = np.where(better, fit.loo_mse, best_loo)
        pred[:, better] = fit.test_pred[:, better]
    return r2_score(p.Y_test, pred)


def r2_linear(
    X: np.ndarray,
    Y: np.ndarray,
    *,
    random_state: RandomState,
    test_size: float = 0.25,
    alphas: Sequence[float] = LINEAR_ALPHAS,
) -> np.ndarray:
    """Held-out R^2 of each column of ``Y`` from a ridge regression on ``X``.

    Parameters
    ----------
    X : (n_samples, n_features) representation.
    Y : (n_samples, n_targets) or (n_samples,) true variables.
    random_state : int seed or Generator for the train/test split.
    test_size : fraction of samples held out for scoring.
    alphas : ridge penalties on standardised data; chosen per target by exact
        leave-one-out on the training split.

    Returns
    -------
    (n_targets,) R^2 on the test split (NaN for a constant target).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> z = rng.normal(size=(400, 2))
    >>> r2_linear(z @ [[1.0, 2.0], [0.5, -1.0]], z, random_state=0).round(3)
    array([1., 1.])
    """
    rng = _rng(random_state)
    return _linear(_prepare(X, Y, test_size, rng), alphas)


def r2_kernel(
    X: np.ndarray,
    Y: np.ndarray,
    *,
    random_state: RandomState,
    test_size: float = 0.25,
    alphas: Sequence[float] = KERNEL_ALPHAS,
    gamma_scales: Sequence[float] = GAMMA_SCALES,
    nystroem_above: int = NYSTROEM_ABOVE,
    n_components: int = N_COMPONENTS,
) -> np.ndarray:
    """Held-out R^2 of each column of ``Y`` from RBF kernel ridge on ``X``.

    ``k(x, x') = exp(-gamma |x - x'|^2)`` on standardised ``X``;
    ``gamma = scale / median squared distance`` for each of ``gamma_scales``.
    ``alpha`` and ``gamma`` are chosen per target by exact leave-one-out on the
    training split (one eigendecomposition per gamma covers every alpha).
    Above ``nystroem_above`` training samples the kernel is replaced by a
    Nystroem feature map on ``n_components`` random training landmarks, which
    costs ``O(n m^2)`` instead of ``O(n^3)``.

    Returns ``(n_targets,)`` R^2 on the test split, as :func:`r2_linear`.
    """
    rng = _rng(random_state)
    p = _prepare(X, Y, test_size, rng)
    return _kernel(p, rng, alphas, gamma_scales, nystroem_above, n_components)


class R2Probes(NamedTuple):
    """Per-target held-out R^2 of both probes on one split, and their maximum."""

    linear: np.ndarray
    kernel: np.ndarray
    best: np.ndarray


def r2_probes(
    X: np.ndarray,
    Y: np.ndarray,
    *,
    random_state: RandomState,
    test_size: float = 0.25,
    linear_alphas: Sequence[float] = LINEAR_ALPHAS,
    kernel_alphas: Sequence[float] = KERNEL_ALPHAS,
    gamma_scales: Sequence[float] = GAMMA_SCALES,
    nystroem_above: int = NYSTROEM_ABOVE,
    n_components: int = N_COMPONENTS,
) -> R2Probes:
    """Linear and kernel R^2 from the same train/test split, and ``best = max(linear, kernel)``.

    Both probes are fitted on the training split only and scored on the same
    test split, so taking the per-target maximum selects between two fitted
    models on held-out data (a small optimistic bias of order the test
    noise of R^2; see the tests for its size under independent noise).
    """
    rng = _rng(random_state)
    p = _prepare(X, Y, test_size, rng)
    lin = _linear(p, linear_alphas)
    ker = _kernel(p, rng, kernel_alphas, gamma_scales, nystroem_above, n_components)
    return R2Probes(lin, ker, np.fmax(lin, ker))


def r2_best(X: np.ndarray, Y: np.ndarray, *, random_state: RandomState, **options) -> np.ndarray:
    """Per-target ``max(linear R^2, kernel R^2)`` from one split; options as :func:`r2_probes`."""
    return r2_probes(X, Y, random_state=random_state, **options).best


# ----------------------------------------------------------------------------- aggregation


def per_node(
    scores: np.ndarray,
    index: Mapping[str, tuple[int, int]],
    reduce: Callable[[np.ndarray], float] = np.mean,
) -> dict[str, float]:
    """Aggregate per-dimension ``scores`` into one number per node.

    ``index`` maps a node to the ``(start, stop)`` columns of its dimensions in
    the target matrix the scores came from. A node with no columns
    (``start == stop``) gets NaN.

    >>> per_node(np.array([1.0, 0.5, 0.0]), {"a": (0, 2), "b": (2, 3)})
    {'a': 0.75, 'b': 0.0}
    """
    scores = np.asarray(scores, dtype=float)
    out = {}
    for node, (start, stop) in index.items():
        if not 0 <= start <= stop <= len(scores):
            raise DataError(f"index of {node!r}: columns {start}:{stop} outside 0:{len(scores)}")
        out[node] = float(reduce(scores[start:stop])) if stop > start else float("nan")
    return out


def per_level(
    scores: np.ndarray,
    index: Mapping[str, tuple[int, int]],
    levels: Mapping[int, Sequence[str]],
) -> dict[int, float]:
    """Mean of per-dimension ``scores`` over the dimensions of each level's nodes.

    ``levels`` is ``{level: [node, ...]}`` as :func:`hlvm.graphs.levels` gives
    it; nodes absent from ``index`` (e.g. pixels when only latents were
    probed) are skipped, and a level with none left is left out. Every
    dimension weighs the same, so a level's wide nodes count more.

    >>> per_level(np.array([1.0, 0.5, 0.0]), {"a": (0, 2), "b": (2, 3)}, {0: ["a"], 1: ["b", "x"]})
    {0: 0.75, 1: 0.0}
    """
    scores = np.asarray(scores, dtype=float)
    out = {}
    for level, nodes in levels.items():
        cols = [np.arange(*index[v]) for v in nodes if v in index]
        cols = np.concatenate(cols) if cols else np.array([], dtype=int)
        if cols.size:
            out[int(level)] = float(scores[cols].mean())
    return out


# ----------------------------------------------------------------------------- CCA and effective rank


class CCAResult(NamedTuple):
    """All canonical correlations, descending (``min(rank X, rank Y)`` of them), and their mean."""

    correlations: np.ndarray
    mean: float


def _orthobasis(A: np.ndarray, ridge: float) -> np.ndarray:
    """Orthonormal basis of the centred view ``A``'s column space (ridge: of ``[A; sqrt(lam) I]``, top rows)."""
    n, p = A.shape
    if ridge > 0:
        # [A; sqrt(lam) I] = Q R gives R^T R = A^T A + lam I, so A R^-1 = Q[:n]:
        # the whitening of ridge CCA (Vinod 1976) without forming a covariance.
        lam = ridge * float((A**2).sum()) / p
        Q, _ = np.linalg.qr(np.vstack([A, np.sqrt(lam) * np.eye(p)]))
        return Q[:n]
    # Pivoted QR exposes the rank: columns beyond it would add arbitrary
    # directions and inflate the correlations.
    Q, R, _ = scipy.linalg.qr(A, mode="economic", pivoting=True)
    d = np.abs(np.diag(R))
    rank = int((d > d[0] * max(n, p) * np.finfo(float).eps).sum()) if d.size and d[0] > 0 else 0
    return Q[:, :rank]


def cca(X: np.ndarray, Y: np.ndarray, *, ridge: float = 0.0) -> CCAResult:
    """Canonical correlations of two views, in closed form.

    Centre each view, take an orthonormal basis ``Q1``, ``Q2`` of its column
    space (pivoted QR, dropping rank-deficient directions), and return the
    singular values of ``Q1^T Q2``: the cosines of the principal angles between
    the two column spaces, which are the canonical correlations.

    ``ridge > 0`` regularises each view's covariance, ``C + lam I`` with
    ``lam = ridge * mean column variance * n`` (so ``ridge`` is relative to
    the data's scale); correlations then shrink towards 0, and the result is
    no longer invariant to rescaling single columns.

    Correlations are in-sample: a view as wide as the sample count scores 1
    against anything. docs/theory.md: report CCA only where the representation's
    width is close to ``dim_c``.

    >>> rng = np.random.default_rng(0)
    >>> z = rng.normal(size=(500, 3))
    >>> rot = np.linalg.qr(rng.normal(size=(3, 3)))[0]
    >>> cca(z, z @ rot).correlations.round(6)
    array([1., 1., 1.])
    """
    X, Y = _pair(X, Y)
    if ridge < 0 or not np.isfinite(ridge):
        raise ConfigError(f"ridge must be >= 0, got {ridge}")
    Q1 = _orthobasis(X - X.mean(axis=0), ridge)
    Q2 = _orthobasis(Y - Y.mean(axis=0), ridge)
    if Q1.shape[1] == 0 or Q2.shape[1] == 0:
        return CCAResult(np.zeros(0), float("nan"))
    rho = np.clip(np.linalg.svd(Q1.T @ Q2, compute_uv=False), 0.0, 1.0)
    return CCAResult(rho, float(rho.mean()))


def effective_rank(X: np.ndarray, *, center: bool = True) -> float:
    """Effective rank (Roy & Vetterli 2007): ``exp(H(p))`` with ``p = s / sum(s)`` over singular values ``s``.

    Between 1 and ``rank(X)``; equal to ``k`` when ``k`` singular values are
    equal and the rest zero. ``center`` removes column means first, so a
    constant offset does not count as a direction.

    >>> round(effective_rank(np.eye(4)[:, :3], center=False), 10)
    3.0
    """
    X = _as_2d(X, "X")
    if center:
        X = X - X.mean(axis=0)
    s = np.linalg.svd(X, compute_uv=False)
    total = s.sum()
    if total <= 0:
        raise DataError("effective rank of an all-zero matrix is undefined")
    p = s[s > 0] / total
    return float(np.exp(-(p * np.log(p)).sum()))
