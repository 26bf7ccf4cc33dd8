"""Compiled (numba) kernels of the sampler's forward pass.

The sampler runs a *program*: a list of affine steps over the rows of one
feature-major work array ``work`` (features x samples). Step ``s`` computes,
for each of its ``d`` outputs ``i`` and every sample ``t < n``::

    a = w[i, d] + w[i, 0] * work[in[0], t] + w[i, 1] * work[in[1], t] + ... + w[i, d - 1] * work[in[d - 1], t]
    work[out[i], t] = a if a > 0 else a * slope        (slope 1 on a node's last layer)

with the sum taken left to right, every product and sum rounded on its own
(no fused multiply-add, no reassociation: numba's default, strict IEEE
arithmetic). So a sample's bytes are those of that plain formula: they do not
depend on how many samples a call takes, on the vector width of the CPU, or on
threads, and ``tests/test_kernels.py`` checks them bit for bit against numpy.

The loop over samples is the innermost one, over contiguous rows, two inputs
per pass, which LLVM turns into SIMD code: one affine step costs about 2 ns per
sample on this project's 2-core CI machine (float32, d = 6), against the
~1 us of call overhead per (K, d, d + 1) x (K, d + 1, B) numpy matmul that
the whole graph's hundreds of tiny per-node maps would cost.

Compiled on first use and cached on disk next to this file (``cache=True``),
so later processes load them in well under a second.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["run_program", "rows_from_samples", "samples_from_rows", "STEP_FIELDS"]

#: Columns of a program's step table: weight offset, d, input-rows offset, output-rows offset, activation flag.
STEP_FIELDS = ("w", "d", "inp", "out", "act")


@njit(nogil=True, cache=True, boundscheck=False)
def _affine(w, d, work, rows_in, rows_out, n, slope):  # pragma: no cover - compiled
    """One step: ``work[rows_out[i], :n] = act(w[i, d] + sum_j w[i, j] * work[rows_in[j], :n])``.

    ``w`` is flat, row-major ``(d, d + 1)`` (bias last). Inputs are taken two
    per pass over the samples; the left-to-right order of the sum is kept.
    """
    stride = d + 1
    for i in range(d):
        y = work[rows_out[i]]
        wi = i * stride
        bias = w[wi + d]
        x0 = work[rows_in[0]]
        w0 = w[wi]
        if d == 1:
            for t in range(n):
                a = bias + w0 * x0[t]
                y[t] = a if a > 0 else a * slope
            continue
        for t in range(n):
            y[t] = bias + w0 * x0[t]
        j = 1
        while j + 2 < d:  # pairs of inputs, leaving at least one for the last pass
            xa = work[rows_in[j]]
            xb = work[rows_in[j + 1]]
            wa = w[wi + j]
            wb = w[wi + j + 1]
            for t in range(n):
                y[t] = y[t] + wa * xa[t] + wb * xb[t]
            j += 2
        if j + 2 == d:  # two inputs left: the last pass takes both and applies the activation
            xa = work[rows_in[j]]
            xb = work[rows_in[j + 1]]
            wa = w[wi + j]
            wb = w[wi + j + 1]
            for t in range(n):
                a = y[t] + wa * xa[t] + wb * xb[t]
                y[t] = a if a > 0 else a * slope
        else:  # one input left
            xa = work[rows_in[j]]
            wa = w[wi + j]
            for t in range(n):
                a = y[t] + wa * xa[t]
                y[t] = a if a > 0 else a * slope


@njit(nogil=True, cache=True, boundscheck=False)
def run_program(work, n, weights, steps, rows, slope):  # pragma: no cover - compiled
    """Run every step of a program, in order, on samples ``[0, n)`` of ``work`` (features x samples).

    ``weights`` flat (every step's ``(d, d + 1)`` block), ``steps`` (S, 5) int64
    per :data:`STEP_FIELDS`, ``rows`` flat int64 row indices into ``work``.
    Steps with ``act`` 0 are affine only (slope 1).
    """
    one = work.dtype.type(1.0)
    for s in range(steps.shape[0]):
        w0 = steps[s, 0]
        d = steps[s, 1]
        i0 = steps[s, 2]
        o0 = steps[s, 3]
        _affine(
            weights[w0 : w0 + d * (d + 1)], d, work, rows[i0 : i0 + d], rows[o0 : o0 + d], n,
            slope if steps[s, 4] else one,
        )


_TILE = 16


@njit(nogil=True, cache=True, boundscheck=False)
def rows_from_samples(src, work, row0):  # pragma: no cover - compiled
    """``work[row0 + f, t] = src[t, f]``: sample-major ``src`` (n, F) into feature-major rows, in tiles."""
    n, f = src.shape
    for t0 in range(0, n, _TILE):
        t1 = min(t0 + _TILE, n)
        for f0 in range(0, f, _TILE):
            f1 = min(f0 + _TILE, f)
            for c in range(f0, f1):
                row = work[row0 + c]
                for t in range(t0, t1):
                    row[t] = src[t, c]


@njit(nogil=True, cache=True, boundscheck=False)
def samples_from_rows(work, row0, dst):  # pragma: no cover - compiled
    """``dst[t, f] = work[row0 + f, t]``: feature-major rows into sample-major ``dst`` (n, F), in tiles."""
    n, f = dst.shape
    for f0 in range(0, f, _TILE):
        f1 = min(f0 + _TILE, f)
        for t0 in range(0, n, _TILE):
            t1 = min(t0 + _TILE, n)
            for t in range(t0, t1):
                out = dst[t]
                for c in range(f0, f1):
                    out[c] = work[row0 + c, t]


def warm_up() -> None:
    """Compile (or load from the cache) every kernel for float32 and float64."""
    for dtype in (np.float32, np.float64):
        work = np.zeros((4, 3), dtype)
        run_program(work, 3, np.ones(2, dtype), np.array([[0, 1, 0, 1, 1]], np.int64), np.array([0, 1], np.int64),
                    dtype(0.5))
        rows_from_samples(np.zeros((3, 2), dtype), work, 0)
        samples_from_rows(work, 0, np.zeros((3, 2), dtype))
