"""The compiled sampler kernels, bit for bit against plain numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from hlvm._kernels import ZIGGURAT, gaussian_fill, rows_from_samples, run_program, samples_from_rows, sfc64_fill


def _random_program(rng: np.random.Generator, dims: list[int], n_rows: int, acts: list[int]):
    """Steps that read random rows and write fresh rows (never one they read)."""
    steps, rows, weights = [], [], []
    w_at = r_at = 0
    for d, act in zip(dims, acts, strict=True):
        perm = rng.permutation(n_rows)
        src, dst = perm[:d], perm[d : 2 * d]
        rows += [src, dst]
        weights.append(rng.normal(size=d * (d + 1)))
        steps.append((w_at, d, r_at, r_at + d, act))
        w_at += d * (d + 1)
        r_at += 2 * d
    return np.array(steps, np.int64), np.concatenate(rows).astype(np.int64), np.concatenate(weights)


def _reference(work, n, weights, steps, rows, slope):
    """The kernel's contract in numpy: left-to-right sums, one rounding per operation."""
    work = work.copy()
    for w0, d, i0, o0, act in steps:
        w = weights[w0 : w0 + d * (d + 1)].reshape(d, d + 1)
        x = work[rows[i0 : i0 + d], :n]
        y = np.empty((d, n), work.dtype)
        for i in range(d):
            a = np.full(n, w[i, d], work.dtype)
            for j in range(d):
                a = a + w[i, j] * x[j]
            y[i] = np.where(a > 0, a, a * slope) if act else a
        work[rows[o0 : o0 + d], :n] = y
    return work


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 7, 64, 129])
def test_program_is_bitwise_the_plain_formula(dtype, n):
    rng = np.random.default_rng(n)
    dims = [1, 2, 3, 4, 5, 6, 7, 9]
    steps, rows, weights = _random_program(rng, dims, 24, [1, 0, 1, 1, 0, 1, 1, 0])
    weights = weights.astype(dtype)
    work = rng.normal(size=(24, 131)).astype(dtype)
    slope = dtype(0.5)
    want = _reference(work, n, weights, steps, rows, slope)
    got = work.copy()
    run_program(got, n, weights, steps, rows, slope)
    assert np.array_equal(got, want)  # bit for bit: no fused multiply-add, no reordering
    assert np.array_equal(got[:, n:], work[:, n:])  # samples past n untouched


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_sample_does_not_depend_on_the_samples_run_with_it(dtype):
    rng = np.random.default_rng(1)
    steps, rows, weights = _random_program(rng, [6, 6, 5, 3], 30, [1, 0, 1, 0])
    weights = weights.astype(dtype)
    work = rng.normal(size=(30, 100)).astype(dtype)
    whole = work.copy()
    run_program(whole, 100, weights, steps, rows, dtype(0.3))
    for t in (0, 13, 99):
        one = np.ascontiguousarray(work[:, t : t + 1])
        run_program(one, 1, weights, steps, rows, dtype(0.3))
        assert np.array_equal(one[:, 0], whole[:, t])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 1), (5, 3), (17, 40), (130, 33)])
def test_transposes_round_trip(dtype, shape):
    rng = np.random.default_rng(2)
    n, f = shape
    src = rng.normal(size=(n, f)).astype(dtype)
    work = np.zeros((f + 3, n + 2), dtype)
    rows_from_samples(src, work, 2)
    assert np.array_equal(work[2 : 2 + f, :n], src.T)
    assert not work[:2].any() and not work[:, n:].any()
    back = np.empty((n, f), dtype)
    samples_from_rows(work, 2, back)
    assert np.array_equal(back, src)


# ----------------------------------------------------------------------------- Gaussian noise


def test_sfc64_reproduces_numpys_raw_stream():
    for seed in (0, 1, 2**40 + 3):
        bg = np.random.SFC64(seed)
        state = np.array(bg.state["state"]["state"], np.uint64)
        got = np.empty(1000, np.uint64)
        sfc64_fill(state, got)
        assert np.array_equal(got, bg.random_raw(1000))
        assert np.array_equal(state, bg.state["state"]["state"])


def test_ziggurat_layers_all_have_the_same_area_and_reach_the_top():
    z = ZIGGURAT
    edges = z["w"] * 2.0**52  # X_0 .. X_255
    f = z["f"]  # f(X_0) .. f(X_255), then f(X_256) = f(0) = 1
    assert len(edges) == 256 and len(f) == 257 and f[-1] == 1.0
    assert z["r"] == pytest.approx(3.6541528853610088, rel=1e-15)  # Marsaglia and Tsang (2000)
    assert z["v"] == pytest.approx(4.92867323399e-3, rel=1e-11)
    assert edges[1] == z["r"] and np.all(np.diff(edges) < 0)
    tail = math.sqrt(math.pi / 2) * math.erfc(z["r"] / math.sqrt(2))
    areas = [z["r"] * f[1] + tail, edges[0] * f[1]] + [edges[i] * (f[i + 1] - f[i]) for i in range(1, 256)]
    np.testing.assert_allclose(areas, z["v"], rtol=1e-12)
    # k[i] / 2^52 is the fraction of layer i inside the next layer's edge; the top layer has none.
    np.testing.assert_allclose(z["k"][:-1] / 2.0**52, edges[1:] / edges[:-1], rtol=1e-15)
    assert z["k"][-1] == 0


def _normals(n: int, seed: int) -> np.ndarray:
    z = ZIGGURAT
    state = np.array(np.random.SFC64(seed).state["state"]["state"], np.uint64)
    out = np.empty(n)
    gaussian_fill(state, out, z["w"], z["k"], z["f"], z["r"])
    return out


def test_ziggurat_draws_are_standard_normal():
    x = _normals(2_000_000, 11)
    n = len(x)
    # Kolmogorov-Smirnov at the 1e-4 level (critical value sqrt(-log(1e-4 / 2) / 2) / sqrt(n)).
    assert stats.kstest(x, "norm").statistic < 2.23 / math.sqrt(n)
    assert abs(x.mean()) < 4 / math.sqrt(n) and abs(x.var() - 1) < 4 * math.sqrt(2 / n)
    # Every region the algorithm treats apart holds its share: the fast path, the wedges, the tail.
    for lo, hi in [(0, 0.5), (0.5, 1.5), (1.5, 2.5), (2.5, 3.3), (3.3, ZIGGURAT["r"]), (ZIGGURAT["r"], np.inf)]:
        p = 2 * (stats.norm.cdf(hi) - stats.norm.cdf(lo))
        count = np.count_nonzero((np.abs(x) >= lo) & (np.abs(x) < hi))
        assert abs(count - n * p) < 5 * math.sqrt(n * p * (1 - p)), (lo, hi)
    assert abs(np.mean(x > 0) - 0.5) < 5 * 0.5 / math.sqrt(n)


def test_ziggurat_tail_beyond_r_is_the_normal_tail():
    r = ZIGGURAT["r"]
    tail = np.abs(_normals(20_000_000, 12))
    tail = tail[tail > r]
    assert len(tail) > 4000
    # |z| given |z| > r: survival function sf(x) / sf(r).
    cdf = lambda t: 1 - stats.norm.sf(t) / stats.norm.sf(r)  # noqa: E731
    assert stats.kstest(tail, cdf).statistic < 2.23 / math.sqrt(len(tail))
