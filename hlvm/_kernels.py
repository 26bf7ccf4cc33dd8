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
per pass, which LLVM turns into SIMD code: a d = 6 step costs about 2 ns per
sample in float32 on this project's 2-core machine. numpy's batched matmuls
pay a BLAS call per node at these sizes (d <= 7, hundreds of nodes), which
cost the sampler more than the arithmetic.

The module also holds the sampler's Gaussian noise source,
:func:`gaussian_fill`: a 256-layer ziggurat (Marsaglia and Tsang, 2000) fed by
numpy's SFC64 bit generator, whose raw 64-bit stream it reproduces word for
word (numpy keeps bit generators' raw streams stable across releases). It
takes 3.3 ns a value here, where ``Generator.standard_normal`` takes 8.5 (of
which the bit generator is 1.9).

Compiled on first use (about 2 s) and cached on disk next to this file
(``cache=True``; numba falls back to a per-user cache where that folder is
read-only), so later processes only load them.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = [
    "run_program",
    "rows_from_samples",
    "samples_from_rows",
    "ZIGGURAT",
    "ziggurat_tables",
    "gaussian_fill",
    "sfc64_fill",
]

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

    ``weights`` flat (every step's ``(d, d + 1)`` block); ``steps`` (S, 5)
    int64, a row per step: weight offset, ``d``, input-rows offset, output-rows
    offset, activation flag (0: affine only, slope 1); ``rows`` flat int64 row
    indices into ``work``.
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


_SAMPLES = 8


@njit(nogil=True, cache=True, boundscheck=False)
def samples_from_rows(work, row0, dst):  # pragma: no cover - compiled
    """``dst[t, f] = work[row0 + f, t]``: feature-major rows into sample-major ``dst`` (n, F).

    Eight samples at a time (a constant, so the inner loop is unrolled): one
    short contiguous read per row, eight writes into eight output rows that
    stay in L1 while every feature goes by. About twice as fast as square tiles
    here, where the output is the image (1536 features per sample at depth 4).
    """
    n, f = dst.shape
    full = n - n % _SAMPLES
    for t0 in range(0, full, _SAMPLES):
        for c in range(f):
            row = work[row0 + c]
            for b in range(_SAMPLES):
                dst[t0 + b, c] = row[t0 + b]
    for c in range(f):
        row = work[row0 + c]
        for t in range(full, n):
            dst[t, c] = row[t]


# ----------------------------------------------------------------------------- Gaussian noise

_LAYERS = 256
_MASK52 = np.uint64((1 << 52) - 1)
_U1, _U3, _U8, _U9, _U11, _U24, _U40, _U255 = (np.uint64(x) for x in (1, 3, 8, 9, 11, 24, 40, 255))


def _density(x: float) -> float:
    return math.exp(-0.5 * x * x)


def _layers(r: float) -> tuple[float, list[float]]:
    """Layer area ``v`` and right edges ``X_1 = r > X_2 > ...`` of the ziggurat whose base edge is ``r``.

    Returns at most the 255 edges ``X_1 .. X_255``, fewer if the layers reach the top (``f = 1``) early.
    """
    v = r * _density(r) + math.sqrt(math.pi / 2) * math.erfc(r / math.sqrt(2))
    xs = [r]
    while len(xs) < _LAYERS - 1:
        top = _density(xs[-1]) + v / xs[-1]
        if top >= 1.0:
            break
        xs.append(math.sqrt(-2.0 * math.log(top)))
    return v, xs


def ziggurat_tables() -> dict[str, np.ndarray | float]:
    """The 256-layer ziggurat of the (unnormalised) density ``f(x) = exp(-x^2 / 2)`` on ``x >= 0``.

    Layer ``i >= 1`` is the box ``[0, X_i] x [f(X_i), f(X_{i+1})]``; layer 0 is
    ``[0, r] x [0, f(r)]`` plus the tail beyond ``r``, drawn as a box of
    width ``X_0 = v / f(r)``. All have area ``v``, and ``X_256 = 0``. The base
    edge ``r`` is found by bisection so that the 255th layer ends exactly at the
    top (``f(X_255) + v / X_255 = 1``): r = 3.65415288536101, Marsaglia and
    Tsang's value. Returned: ``w`` (X_i / 2^52, a 52-bit integer times it is a
    point in the layer), ``k`` (the integers below which that point lies
    inside the next layer's edge, ``floor(2^52 X_{i+1} / X_i)``), ``f``
    (f(X_i), 257 entries with f(X_256) = 1), ``r`` and ``v``.
    """
    lo, hi = 3.0, 4.0  # the layers overshoot the top at r = 3 and fall short of it at r = 4
    while True:
        mid = 0.5 * (lo + hi)
        if not lo < mid < hi:
            break
        v, xs = _layers(mid)
        overshoot = len(xs) < _LAYERS - 1 or _density(xs[-1]) + v / xs[-1] >= 1.0
        lo, hi = (mid, hi) if overshoot else (lo, mid)
    r = hi
    v, xs = _layers(r)
    edges = np.array([v / _density(r), *xs, 0.0])  # X_0 .. X_256
    scale = float(1 << 52)
    w = edges[:-1] / scale
    k = np.floor(edges[1:] / edges[:-1] * scale).astype(np.uint64)
    f = np.exp(-0.5 * edges**2)
    f[-1] = 1.0
    return {"w": w, "k": k, "f": f, "r": r, "v": v}


ZIGGURAT = ziggurat_tables()


@njit(nogil=True, cache=True, inline="always")
def _sfc64(s):  # pragma: no cover - compiled
    """One word of SFC64 (Doty-Humphrey), state ``s = [a, b, c, counter]`` updated in place: numpy's SFC64."""
    a, b, c, n = s[0], s[1], s[2], s[3]
    out = a + b + n
    s[0] = b ^ (b >> _U11)
    s[1] = c + (c << _U3)
    s[2] = ((c << _U24) | (c >> _U40)) + out
    s[3] = n + _U1
    return out


@njit(nogil=True, cache=True, inline="always")
def _uniform(s):  # pragma: no cover - compiled
    """A double in [0, 1): the top 53 bits of one word."""
    return np.float64(_sfc64(s) >> _U11) * (1.0 / 9007199254740992.0)


@njit(nogil=True, cache=True)
def sfc64_fill(s, out):  # pragma: no cover - compiled
    """``out[i]`` = the next raw words of the SFC64 state ``s`` (to check it against numpy's)."""
    for i in range(out.size):
        out[i] = _sfc64(s)


@njit(nogil=True, cache=True, boundscheck=False)
def gaussian_fill(s, out, w, k, f, r):  # pragma: no cover - compiled
    """Fill the 1-D ``out`` with standard normal values from the SFC64 state ``s`` (advanced in place).

    One word per try: its low 8 bits pick the layer, the next the sign, the
    next 52 the point. A point inside the next layer's edge is returned at
    once (~99% of tries); otherwise layer 0 draws from the tail beyond ``r``
    (Marsaglia's method) and the others test the wedge against the density,
    retrying on a miss. The value is computed in float64 and rounded to
    ``out``'s dtype. The state lives in registers on the fast path (SFC64
    inlined: 3.3 ns a value, against 3.9 calling :func:`_sfc64` on the state
    array, same bytes); the sign is applied by a multiply, not a branch, which
    would mispredict half the time.
    """
    a, b, c, n = s[0], s[1], s[2], s[3]
    for i in range(out.size):
        while True:
            u = a + b + n  # SFC64, as in _sfc64
            n += _U1
            a = b ^ (b >> _U11)
            b = c + (c << _U3)
            c = ((c << _U24) | (c >> _U40)) + u
            layer = np.intp(u & _U255)
            sign = 1.0 - 2.0 * np.float64((u >> _U8) & _U1)
            bits = (u >> _U9) & _MASK52
            x = np.float64(bits) * w[layer]
            if bits < k[layer]:
                break
            s[0], s[1], s[2], s[3] = a, b, c, n  # the rare paths draw through the state array
            accept = True
            if layer == 0:
                while True:
                    xx = -math.log1p(-_uniform(s)) / r
                    yy = -math.log1p(-_uniform(s))
                    if yy + yy > xx * xx:
                        break
                x = r + xx
            else:
                accept = f[layer] + _uniform(s) * (f[layer + 1] - f[layer]) < math.exp(-0.5 * x * x)
            a, b, c, n = s[0], s[1], s[2], s[3]
            if accept:
                break
        out[i] = sign * x
    s[0], s[1], s[2], s[3] = a, b, c, n
