"""Benchmark hlvm.metrics against scikit-learn's defaults, in the same run.

1. Nonlinear R^2 of 20 targets from a 256-dim representation at 10,000
   samples (7,500 fit, 2,500 scored): ``hlvm.metrics.r2_kernel`` (alpha and
   gamma chosen per target by exact leave-one-out over 7 x 4 values, Nystroem
   map on 1,000 landmarks) beside ``sklearn.kernel_ridge.KernelRidge`` on all
   7,500 training samples, both at its defaults (``kernel="rbf"``, alpha 1,
   gamma 1 / n_features) and at hlvm's median-heuristic gamma with alpha 1
   (the same hyperparameters as a single-setting hlvm run, so the numbers
   differ only by the Nystroem approximation).
2. CCA of 5,000 x 50 against 5,000 x 50: ``hlvm.metrics.cca`` (closed form)
   beside ``sklearn.cross_decomposition.CCA(n_components=50)`` (iterative,
   default ``max_iter`` and ``tol``), whose canonical correlations are those
   of its paired scores.

Prints each time (CPU seconds of this process, which on a machine shared
with other jobs tracks the work better than wall time; equal to wall time on
an idle machine with one BLAS thread), the speed ratio (baseline / hlvm) and how far the numbers
agree. Usage: ``python bench/metrics.py [--threads N]`` (default 1 BLAS
thread for both sides).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

if __name__ == "__main__":
    _threads = "1"
    if "--threads" in sys.argv:
        _threads = sys.argv[sys.argv.index("--threads") + 1]
    # BLAS reads these at import: both sides get the same thread count.
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_var] = _threads

import numpy as np  # noqa: E402


def timed(fn, *args, **kwargs):  # noqa: ANN001, ANN201
    """Result and CPU seconds of this process (wall time is noisy on a shared machine; BLAS is pinned)."""
    t0 = time.process_time()
    out = fn(*args, **kwargs)
    return out, time.process_time() - t0


def representation(n: int, k: int, width: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``k`` latents and a ``width``-dim smooth nonlinear, noisy representation of them."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, k))
    h = np.tanh(z @ rng.normal(size=(k, 64)) / np.sqrt(k))  # (n, 64)
    x = np.tanh(h @ rng.normal(size=(64, width)) / 4.0) + 0.05 * rng.normal(size=(n, width))  # (n, width)
    return x, z


def bench_kernel(n: int = 10_000, k: int = 20, width: int = 256, seed: int = 0) -> None:
    from sklearn.kernel_ridge import KernelRidge

    from hlvm.metrics import _median_sq_dist, r2_kernel, r2_score, split_indices

    X, Z = representation(n, k, width, seed)
    print(f"\n== nonlinear R^2: {k} targets from a {width}-dim representation, {n} samples (25% held out)")
    ours, t_ours = timed(r2_kernel, X, Z, random_state=seed)
    ours1, t_ours1 = timed(r2_kernel, X, Z, random_state=seed, alphas=[1.0], gamma_scales=[1.0])

    # The same split and train-only standardisation as hlvm, then sklearn on all training samples.
    gen = np.random.default_rng(seed)
    train, test = split_indices(n, 0.25, random_state=gen)
    gamma_median = 1.0 / _median_sq_dist((X[train] - X[train].mean(0)) / X[train].std(0), gen)
    mx, sx, mz, sz = X[train].mean(0), X[train].std(0), Z[train].mean(0), Z[train].std(0)
    Xtr, Xte, Ztr = (X[train] - mx) / sx, (X[test] - mx) / sx, (Z[train] - mz) / sz

    def sk(**kw):  # noqa: ANN003, ANN202
        return r2_score(Z[test], KernelRidge(kernel="rbf", **kw).fit(Xtr, Ztr).predict(Xte) * sz + mz)

    base, t_base = timed(sk)
    base1, t_base1 = timed(sk, alpha=1.0, gamma=gamma_median)

    def line(name: str, r2: np.ndarray, t: float) -> None:
        print(f"  {name:<64} {t:8.2f} s   mean R^2 {r2.mean():.4f}  min {r2.min():.4f}")

    line("hlvm r2_kernel (LOO over 7 alphas x 4 gammas, Nystroem 1000)", ours, t_ours)
    line("sklearn KernelRidge(kernel='rbf') defaults, exact, 7500 samples", base, t_base)
    print(f"    ratio sklearn / hlvm: {t_base / t_ours:.2f}x   |R^2 hlvm - sklearn|: mean {np.abs(ours - base).mean():.4f}, max {np.abs(ours - base).max():.4f}")
    print(
        f"    (sklearn has no leave-one-out for KernelRidge: choosing among the same 28 settings takes >= 28 fits,"
        f" ~{28 * t_base:.0f} s extrapolated from the fit above, {28 * t_base / t_ours:.0f}x hlvm; not run)"
    )
    line("hlvm r2_kernel, alpha 1 and median gamma only (Nystroem 1000)", ours1, t_ours1)
    line("sklearn KernelRidge, alpha 1 and the same gamma, exact", base1, t_base1)
    print(f"    ratio sklearn / hlvm: {t_base1 / t_ours1:.2f}x   |R^2 hlvm - sklearn|: mean {np.abs(ours1 - base1).mean():.4f}, max {np.abs(ours1 - base1).max():.4f}  (Nystroem error)")


def bench_cca(n: int = 5_000, p: int = 50, shared: int = 10, seed: int = 1) -> None:
    from sklearn.cross_decomposition import CCA

    from hlvm.metrics import cca

    rng = np.random.default_rng(seed)
    s = rng.normal(size=(n, shared))
    X = np.c_[s, rng.normal(size=(n, p - shared))] @ rng.normal(size=(p, p))
    Y = np.c_[s + 0.5 * rng.normal(size=(n, shared)), rng.normal(size=(n, p - shared))] @ rng.normal(size=(p, p))
    print(f"\n== CCA: {n} x {p} against {n} x {p} ({shared} shared directions)")
    ours, t_ours = timed(cca, X, Y)
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model, t_base = timed(CCA(n_components=p).fit, X, Y)
    a, b = model.transform(X, Y)
    base = np.array([np.corrcoef(a[:, j], b[:, j])[0, 1] for j in range(p)])
    print(f"  {'hlvm cca (pivoted QR + SVD)':<64} {t_ours:8.3f} s   mean rho {ours.mean:.4f}")
    n_warn = sum("converge" in str(w.message).lower() for w in caught)
    print(f"  {'sklearn CCA(n_components=50), default max_iter/tol':<64} {t_base:8.3f} s   mean rho {base.mean():.4f}   ({n_warn} convergence warnings)")
    diff = np.abs(ours.correlations - base)
    top = slice(0, shared)
    print(
        f"    ratio sklearn / hlvm: {t_base / t_ours:.1f}x   |rho hlvm - sklearn|: first {shared} max {diff[top].max():.2e}, "
        f"all 50 mean {diff.mean():.2e}, max {diff.max():.2e}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads for both sides (set before import)")
    args = parser.parse_args()
    print(f"BLAS threads: {args.threads}; numpy {np.__version__}")
    bench_kernel()
    bench_cca()


if __name__ == "__main__":
    main()
