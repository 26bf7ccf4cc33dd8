"""The linear controls: the cheapest competitors of a trained code of the same width.

A trained code counts as evidence about MAE training only where it beats what
needs no training at its width (docs/theory.md, section 9). Three closed-form,
deterministic encoders of the visible pixels ``x`` (``(N, C * n_visible)``,
flattened as :func:`hlvm.encoders.pixels_encoder` flattens them), each cut to
``k`` dims:

- ``pca`` (:func:`pca_encoder`): the top-``k`` principal components of the
  visible pixels, fitted per evaluation mask on the training split's pixel
  moments (never on the held-out samples);
- ``random_projection`` (:func:`random_projection_encoder`): ``x R`` with a
  seeded Gaussian ``R`` of shape ``(C * n_visible, k)``, entries ``N(0, 1/k)``;
- ``linear_mae`` (:func:`linear_mae_encoder`): the optimum of MAE's loss over
  linear encoder / decoder pairs with a ``k``-wide code, for the evaluation
  mask itself: reduced-rank regression of the masked pixels ``y`` on ``x``
  (:func:`linear_mae`; derived in docs/theory.md, section 9).

All three are fitted from :class:`PixelMoments`, the mean and covariance of
every pixel value of the training images, computed once: a mask's visible and
masked blocks are sub-matrices of it. ``k`` beyond what the mask allows is cut
to it (PCA: ``C * n_visible``; the linear MAE: the rank of its regression,
at most ``min(C * n_visible, C * n_masked)``); the random projection keeps
``k`` (a random map wider than its input is still a ``k``-wide code). The
code's width is in every results row (``rep_dim``).

Nothing here imports torch: the controls are numpy, and a control's code
depends on the training moments, the mask, ``k`` and (random projection) the
seed only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from hlvm.errors import ConfigError, DataError

__all__ = [
    "LINEAR_CONTROLS",
    "PixelMoments",
    "visible_columns",
    "masked_columns",
    "pca_basis",
    "LinearMAE",
    "linear_mae",
    "linear_map_loss",
    "pca_encoder",
    "random_projection_encoder",
    "linear_mae_encoder",
    "linear_control_encoder",
]

#: The controls of this module, as the ``encoder`` column names them.
LINEAR_CONTROLS = ("pca", "random_projection", "linear_mae")

#: Eigenvalues below this share of the largest are treated as zero (a rank-deficient covariance).
_RANK_TOL = 1e-10


@dataclass(frozen=True, eq=False)
class PixelMoments:
    """Mean ``(D,)`` and covariance ``(D, D)`` of every pixel value, ``D = C * H * W`` in ``(C, H, W)`` order.

    Built from training images only (:meth:`of`); every linear control of
    every mask is fitted from these, so the held-out samples never enter a
    fit.
    """

    mean: np.ndarray
    cov: np.ndarray
    n: int
    shape: tuple[int, int, int]

    @classmethod
    def of(cls, images: Any, *, batch: int = 4096) -> PixelMoments:
        """Moments of ``images`` ``(N, C, H, W)`` (an array or a memory map), in float64, two passes in batches."""
        n = len(images)
        if n < 2:
            raise DataError(f"pixel moments need at least 2 training images, got {n}")
        shape = tuple(int(s) for s in images.shape[1:])
        if len(shape) != 3:
            raise DataError(f"training images must be (N, C, H, W), got shape {tuple(images.shape)}")
        d = int(np.prod(shape))
        total = np.zeros(d)
        for s in range(0, n, batch):
            total += np.asarray(images[s : s + batch], dtype=np.float64).reshape(-1, d).sum(axis=0)
        mean = total / n
        scatter = np.zeros((d, d))
        for s in range(0, n, batch):
            x = np.asarray(images[s : s + batch], dtype=np.float64).reshape(-1, d) - mean  # (b, D) centred
            scatter += x.T @ x
        if not (np.isfinite(mean).all() and np.isfinite(scatter).all()):
            raise DataError("training images hold NaN or infinite values")
        return cls(mean, scatter / (n - 1), n, shape)  # type: ignore[arg-type]


def _columns(mask: Any, shape: tuple[int, int, int], visible: bool) -> np.ndarray:
    """Flat indices into a ``(C, H, W)`` vector of the visible (or masked) pixels' values, channel-major."""
    c, h, w = shape
    if tuple(mask.shape) != (h, w):
        raise DataError(f"mask is {mask.shape[0]}x{mask.shape[1]} but the training images are {h}x{w}")
    grid = np.asarray(mask.visible if visible else mask.grid).reshape(-1)
    pix = np.flatnonzero(grid)  # (n,) row-major pixel indices
    return (np.arange(c)[:, None] * (h * w) + pix[None, :]).reshape(-1)  # (C * n,) as x[:, :, m].reshape(N, -1)


def visible_columns(mask: Any, shape: tuple[int, int, int]) -> np.ndarray:
    """Indices of the visible pixel values in the order :func:`hlvm.encoders.pixels_encoder` flattens them."""
    return _columns(mask, shape, True)


def masked_columns(mask: Any, shape: tuple[int, int, int]) -> np.ndarray:
    """Indices of the masked pixel values, in the same channel-major order."""
    return _columns(mask, shape, False)


def _sym_eig(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (descending) and eigenvectors of a symmetric matrix, each vector's largest entry made positive."""
    vals, vecs = np.linalg.eigh((a + a.T) / 2.0)
    order = np.argsort(vals)[::-1]
    vals, vecs = vals[order], vecs[:, order]
    return vals, _fix_signs(vecs)


def _fix_signs(vecs: np.ndarray) -> np.ndarray:
    """Each column's entry of largest magnitude made positive: a deterministic sign for a basis."""
    if vecs.size == 0:
        return vecs
    idx = np.argmax(np.abs(vecs), axis=0)
    signs = np.sign(vecs[idx, np.arange(vecs.shape[1])])
    signs[signs == 0] = 1.0
    return vecs * signs


def _check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ConfigError(f"a control's width must be a positive integer, got {k!r}")
    return int(k)


def pca_basis(cov_xx: np.ndarray, k: int) -> np.ndarray:
    """The top-``min(k, rank)`` principal directions of ``cov_xx`` as columns ``(d, k')``, in descending variance."""
    k = _check_k(k)
    vals, vecs = _sym_eig(cov_xx)
    rank = int((vals > _RANK_TOL * max(vals[0], 0.0)).sum()) if vals.size and vals[0] > 0 else 0
    return vecs[:, : min(k, max(rank, 1))]


@dataclass(frozen=True, eq=False)
class LinearMAE:
    """A linear MAE for one mask: ``y_hat - mu_y = ((x - mu_x) @ encoder) @ decoder``.

    ``encoder`` ``(d_x, k)``, ``decoder`` ``(k, d_y)``; ``singular_values``
    are all those of ``Sigma_yx Sigma_xx^{-1/2}`` (descending), and ``loss``
    the optimum's expected squared error summed over the masked values,
    ``tr Sigma_yy - sum_{i <= k} s_i^2`` (divide by ``d_y`` for MAE's mean).
    """

    encoder: np.ndarray
    decoder: np.ndarray
    singular_values: np.ndarray
    loss: float

    @property
    def width(self) -> int:
        return int(self.encoder.shape[1])


def linear_mae(cov_xx: np.ndarray, cov_xy: np.ndarray, cov_yy: np.ndarray, k: int) -> LinearMAE:
    """The optimum of ``E ||y - D E x||^2`` over linear ``E`` (``k`` x ``d_x``) and ``D`` (centred moments).

    Reduced-rank regression (docs/theory.md, section 9): with ``C = Sigma_yx
    Sigma_xx^{-1/2} = U S V^T``, the best rank-``k`` map is ``W = U_k U_k^T
    Sigma_yx Sigma_xx^{-1}`` (Eckart-Young on ``C``), so the encoder is
    ``Sigma_xx^{-1} Sigma_xy U_k`` (the code is the least-squares prediction
    of the masked pixels in its top-``k`` principal axes) and the decoder
    ``U_k^T``. ``k`` is cut to the rank of ``C``. A rank-deficient
    ``Sigma_xx`` is inverted on its range (pseudo-inverse).

    >>> m = linear_mae(np.eye(2), np.array([[1.0], [0.0]]), np.array([[2.0]]), 1)
    >>> m.loss, m.width
    (1.0, 1)
    """
    k = _check_k(k)
    vals, vecs = _sym_eig(cov_xx)
    keep = vals > _RANK_TOL * max(vals[0], 0.0) if vals.size and vals[0] > 0 else np.zeros(len(vals), bool)
    vals, vecs = vals[keep], vecs[:, keep]
    inv_sqrt = (vecs / np.sqrt(vals)) @ vecs.T  # Sigma_xx^{-1/2} on its range, (d_x, d_x)
    inv = (vecs / vals) @ vecs.T  # Sigma_xx^{+}
    c = cov_xy.T @ inv_sqrt  # (d_y, d_x)
    u, s, _ = np.linalg.svd(c, full_matrices=False)
    u = _fix_signs(u)
    rank = int((s > np.sqrt(_RANK_TOL) * s[0]).sum()) if s.size and s[0] > 0 else 0
    kk = min(k, max(rank, 1))
    uk = u[:, :kk]  # (d_y, k')
    encoder = inv @ cov_xy @ uk  # (d_x, k')
    loss = float(np.trace(cov_yy) - np.sum(s[:kk] ** 2))
    return LinearMAE(encoder, uk.T.copy(), s, loss)


def linear_map_loss(cov_xx: np.ndarray, cov_xy: np.ndarray, cov_yy: np.ndarray, w: np.ndarray) -> float:
    """``E ||y - W^T x||^2`` (centred moments) of a linear map ``W`` ``(d_x, d_y)``: ``tr(Syy - 2 W^T Sxy + W^T Sxx W)``."""
    return float(np.trace(cov_yy) - 2.0 * np.trace(w.T @ cov_xy) + np.trace(w.T @ cov_xx @ w))


EncodeFn = Callable[[np.ndarray, Any], np.ndarray]


def _visible(images: np.ndarray, mask: Any, moments: PixelMoments | None) -> np.ndarray:
    x = np.asarray(images)
    if moments is not None and tuple(x.shape[1:]) != moments.shape:
        raise DataError(f"images are {tuple(x.shape[1:])} but the control was fitted on {moments.shape}")
    return x[:, :, np.asarray(mask.visible)].reshape(len(x), -1).astype(np.float64)  # (N, C * n_visible)


def pca_encoder(moments: PixelMoments, k: int) -> EncodeFn:
    """The ``pca`` control: the visible pixels' top-``k`` principal components (training moments), ``(N, k')``."""
    k = _check_k(k)

    def encode(images: np.ndarray, mask: Any) -> np.ndarray:
        idx = visible_columns(mask, moments.shape)
        basis = pca_basis(moments.cov[np.ix_(idx, idx)], k)  # (d_x, k')
        return (_visible(images, mask, moments) - moments.mean[idx]) @ basis

    return encode


def random_projection_encoder(k: int, seed: int) -> EncodeFn:
    """The ``random_projection`` control: ``x R``, ``R`` ``(C * n_visible, k)`` Gaussian ``N(0, 1/k)`` from ``seed``.

    ``R`` depends on ``seed`` and the number of visible values only, so the
    same seed gives the same projection for every mask of a cell.
    """
    k = _check_k(k)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ConfigError(f"the random projection's seed must be a non-negative integer, got {seed!r}")

    def encode(images: np.ndarray, mask: Any) -> np.ndarray:
        x = _visible(images, mask, None)
        r = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(0x52A9,))).standard_normal((x.shape[1], k))
        return x @ (r / np.sqrt(k))  # (N, k)

    return encode


def linear_mae_encoder(moments: PixelMoments, k: int) -> EncodeFn:
    """The ``linear_mae`` control: the code of the optimal ``k``-wide linear MAE for the mask (:func:`linear_mae`)."""
    k = _check_k(k)

    def encode(images: np.ndarray, mask: Any) -> np.ndarray:
        vi, mi = visible_columns(mask, moments.shape), masked_columns(mask, moments.shape)
        cov = moments.cov
        model = linear_mae(cov[np.ix_(vi, vi)], cov[np.ix_(vi, mi)], cov[np.ix_(mi, mi)], k)
        return (_visible(images, mask, moments) - moments.mean[vi]) @ model.encoder  # (N, k')

    return encode


def linear_control_encoder(name: str, k: int, *, moments: PixelMoments | None = None, seed: int = 0) -> EncodeFn:
    """The encoder of linear control ``name`` (:data:`LINEAR_CONTROLS`) at width ``k``."""
    if name == "random_projection":
        return random_projection_encoder(k, seed)
    if name in ("pca", "linear_mae"):
        if moments is None:
            raise ConfigError(f"the {name} control is fitted on training images: give their PixelMoments")
        return pca_encoder(moments, k) if name == "pca" else linear_mae_encoder(moments, k)
    raise ConfigError(f"unknown linear control {name!r}; choose from {', '.join(LINEAR_CONTROLS)}")
