"""The compiled sampler kernels, bit for bit against plain numpy."""

from __future__ import annotations

import numpy as np
import pytest

from hlvm._kernels import rows_from_samples, run_program, samples_from_rows


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
