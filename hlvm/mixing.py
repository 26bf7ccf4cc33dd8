"""Invertible mixing: for every node ``v`` a random invertible map ``g_v``.

Assumption 1 makes every variable an invertible function of its parents and
its own noise, ``v = g_v(Pa(v), eps_v)``, with ``dim(v) = sum(dim(Pa(v))) +
noise_dim(v)``. So ``g_v`` maps ``R^d -> R^d`` with ``d = dim(v)``; its input
is the parents' values concatenated in :func:`hlvm.graphs.parents` order,
followed by the noise.

The default map is a leaky-ReLU MLP of ``layers`` square affine layers (a
leaky ReLU between layers, none after the last), as in the nonlinear-ICA
literature. Every weight matrix is ``U diag(s) V^T`` with Haar-random
orthogonal ``U, V`` and singular values ``s`` uniform in ``[sv_min, sv_max]``,
redrawn until its condition number is at most ``max_cond``. The output is then
standardised, ``v = (h - mu) / sigma`` per coordinate, with ``mu, sigma``
measured on a pilot sample and kept, so values stay O(1) down the hierarchy.

Why the defaults (slope 0.5, two layers, singular values in [0.7, 1.4]):
every level composes one more map, and a depth-4 pixel is five maps below the
root. Steep slopes and spread singular values compound, squeezing the root's
noise into a sliver of the pixel's range that no probe can read back (with
slope 0.2, three layers, singular values over [0.5, 2] the root's noise is
lost). The defaults keep each map close to an isometry, so every ancestor's
noise stays recoverable from a single pixel (``tests/test_mixing.py`` checks
it with a kernel-ridge probe).

Nodes of one topological generation with the same dim are stacked into a
:class:`MixingGroup`, the layout the sampler's compiled program
(:mod:`hlvm.simulate`) is built from; :meth:`MixingGroup.apply` is its plain
numpy reference.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import networkx as nx
import numpy as np

from hlvm import graphs
from hlvm._kernels import ZIGGURAT, gaussian_fill
from hlvm.errors import ConfigError, check_keys

__all__ = ["MixingSpec", "NodeMap", "MixingGroup", "Mixing", "build_mixing", "random_weight", "unit_noise"]

MIXING_KINDS = ("mlp", "linear")
NOISE_KINDS = ("gaussian", "uniform", "laplace")


@dataclass(frozen=True)
class MixingSpec:
    """Options of :func:`build_mixing`; validates itself.

    Parameters
    ----------
    kind : ``"mlp"`` (leaky-ReLU MLP) or ``"linear"`` (the same layers, no activation).
    layers : number of square affine layers per node (>= 1).
    slope : negative-side slope of the leaky ReLU, in (0, 1].
    sv_min, sv_max : singular values of every weight matrix are drawn uniform in this range.
    max_cond : a weight matrix is redrawn until its condition number is at most this.
    bias_scale : standard deviation of the biases.
    pilot_n : samples of the pilot run that measures the standardising constants.
    """

    kind: Literal["mlp", "linear"] = "mlp"
    layers: int = 2
    slope: float = 0.5
    sv_min: float = 0.7
    sv_max: float = 1.4
    max_cond: float = 1.8
    bias_scale: float = 0.2
    pilot_n: int = 4096

    def __post_init__(self) -> None:
        checks = [
            (self.kind in MIXING_KINDS, f"mixing kind must be one of {', '.join(MIXING_KINDS)}, got {self.kind!r}"),
            (_is_int(self.layers) and self.layers >= 1, f"mixing layers must be an integer >= 1, got {self.layers!r}"),
            (_is_num(self.slope) and 0.0 < self.slope <= 1.0, f"leaky-ReLU slope must be in (0, 1], got {self.slope!r}"),
            (_is_num(self.sv_min) and self.sv_min > 0.0, f"sv_min must be > 0, got {self.sv_min!r}"),
            (
                _is_num(self.sv_max) and self.sv_max >= self.sv_min,
                f"sv_max must be >= sv_min ({self.sv_min}), got {self.sv_max!r}",
            ),
            (_is_num(self.max_cond) and self.max_cond >= 1.0, f"max_cond must be >= 1, got {self.max_cond!r}"),
            (_is_num(self.bias_scale) and self.bias_scale >= 0.0, f"bias_scale must be >= 0, got {self.bias_scale!r}"),
            (_is_int(self.pilot_n) and self.pilot_n >= 2, f"pilot_n must be an integer >= 2, got {self.pilot_n!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    @property
    def activation_slope(self) -> float:
        """Slope used on the negative side: 1 (identity) for the linear kind."""
        return 1.0 if self.kind == "linear" else float(self.slope)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MixingSpec:
        if not isinstance(data, dict):
            raise ConfigError(f"mixing spec must be a JSON object, got {type(data).__name__}")
        check_keys(data, cls.__dataclass_fields__, "mixing spec")
        return cls(**data)


def _is_int(x: Any) -> bool:
    return isinstance(x, int | np.integer) and not isinstance(x, bool)


def _is_num(x: Any) -> bool:
    return isinstance(x, int | float | np.integer | np.floating) and not isinstance(x, bool) and np.isfinite(x)


def random_weight(d: int, spec: MixingSpec, rng: np.random.Generator, max_tries: int = 10_000) -> np.ndarray:
    """A ``(d, d)`` matrix ``U diag(s) V^T``, redrawn until ``cond <= spec.max_cond``.

    ``U, V`` are Haar-random orthogonal matrices (QR of a Gaussian matrix with
    the sign fix), ``s`` uniform in ``[sv_min, sv_max]``.
    """
    for _ in range(max_tries):
        u = _haar_orthogonal(d, rng)
        v = _haar_orthogonal(d, rng)
        s = rng.uniform(spec.sv_min, spec.sv_max, size=d)
        w = (u * s) @ v.T  # (d, d)
        if np.linalg.cond(w) <= spec.max_cond:
            return w
    raise ConfigError(
        f"no {d}x{d} weight with condition number <= {spec.max_cond} in {max_tries} draws; "
        f"raise max_cond or narrow [sv_min, sv_max]"
    )


def _haar_orthogonal(d: int, rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    # Multiplying by the signs of R's diagonal makes Q Haar-distributed.
    return q * np.sign(np.diag(r))


def unit_noise(
    kind: str, rng: np.random.Generator, size: tuple[int, ...], dtype: Any = np.float64, out: np.ndarray | None = None
) -> np.ndarray:
    """Draw zero-mean, unit-variance noise of ``kind`` (gaussian, uniform, laplace) in ``dtype``.

    Gaussian noise from an SFC64 generator (the sampler's) comes from
    :func:`hlvm._kernels.gaussian_fill`, an exact ziggurat over SFC64's raw
    words that advances ``rng`` as it draws, about 2.6x faster than numpy's;
    its float32 values are its float64 values rounded. Gaussian noise from any
    other generator comes from ``rng.standard_normal``. The other kinds are
    drawn in float64 and rounded. With ``out`` (C-contiguous, of ``size`` and
    ``dtype``) the values are written there.
    """
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"noise dtype must be float32 or float64, got {dtype}")
    if kind == "gaussian":
        if isinstance(rng.bit_generator, np.random.SFC64):
            return _sfc64_gaussian(rng.bit_generator, np.empty(size, dtype) if out is None else out)
        if out is not None:
            return rng.standard_normal(dtype=dtype, out=out)
        return rng.standard_normal(size, dtype=dtype)
    if kind == "uniform":
        x = rng.uniform(-np.sqrt(3.0), np.sqrt(3.0), size)
    elif kind == "laplace":
        x = rng.laplace(0.0, 1.0 / np.sqrt(2.0), size)
    else:
        raise ConfigError(f"noise must be one of {', '.join(NOISE_KINDS)}, got {kind!r}")
    if out is not None:
        out[...] = x
        return out
    return x if dtype == np.float64 else x.astype(dtype)


def _sfc64_gaussian(bit_generator: np.random.SFC64, out: np.ndarray) -> np.ndarray:
    """Fill ``out`` (C-contiguous) with standard normals from ``bit_generator``, advancing its state."""
    if not out.flags.c_contiguous:
        raise ValueError("out must be C-contiguous")
    z = ZIGGURAT
    with bit_generator.lock:  # as numpy's own draws: one thread at a time per generator
        state = bit_generator.state
        words = np.array(state["state"]["state"], dtype=np.uint64)
        gaussian_fill(words, out.reshape(-1), z["w"], z["k"], z["f"], z["r"])
        # A 32-bit half word numpy may have buffered is dropped: the next draws start from fresh words.
        bit_generator.state = {**state, "state": {"state": words}, "has_uint32": 0, "uinteger": 0}
    return out


@dataclass(frozen=True)
class NodeMap:
    """The map ``g_v`` of one node and its exact inverse.

    ``weights`` (L, d, d) and ``biases`` (L, d) are the raw layers; ``mu`` and
    ``sigma`` (d,) the standardising constants: ``v = (h_L - mu) / sigma``.
    """

    node: str
    weights: np.ndarray
    biases: np.ndarray
    mu: np.ndarray
    sigma: np.ndarray
    slope: float
    inverse_weights: np.ndarray = field(repr=False)

    @property
    def dim(self) -> int:
        return self.weights.shape[-1]

    def raw(self, inputs: np.ndarray) -> np.ndarray:
        """``(N, d) -> (N, d)``: the MLP before standardisation."""
        h = np.asarray(inputs, dtype=np.float64)
        n_layers = len(self.weights)
        for i in range(n_layers):
            h = h @ self.weights[i].T + self.biases[i]
            if i < n_layers - 1 and self.slope != 1.0:
                h = np.maximum(h, self.slope * h)
        return h

    def forward(self, inputs: np.ndarray) -> np.ndarray:
        """``(N, d) -> (N, d)``: ``g_v`` of the concatenated (parents, noise)."""
        return (self.raw(inputs) - self.mu) / self.sigma

    def inverse(self, value: np.ndarray) -> np.ndarray:
        """``(N, d) -> (N, d)``: the concatenated (parents, noise) that made ``value``."""
        h = np.asarray(value, dtype=np.float64) * self.sigma + self.mu
        n_layers = len(self.weights)
        for i in reversed(range(n_layers)):
            if i < n_layers - 1 and self.slope != 1.0:
                # Leaky ReLU with slope <= 1 is undone by min(h, h / slope).
                h = np.minimum(h, h / self.slope)
            h = (h - self.biases[i]) @ self.inverse_weights[i].T
        return h


@dataclass(frozen=True)
class MixingGroup:
    """Nodes of one topological generation with one dim and kind, run as one batched map.

    ``weights`` (L, K, d, d + 1) stacks the K nodes' layers, each with its
    bias as the last column (inputs carry a constant-1 row), and with the
    standardisation folded into the last layer; so the forward pass is L
    matmuls with L - 1 activations. Observed nodes are sorted row-major by
    pixel position.
    """

    nodes: tuple[str, ...]
    observed: bool
    weights: np.ndarray
    slope: float

    @property
    def dim(self) -> int:
        return self.weights.shape[-2]

    def apply(self, x: np.ndarray) -> np.ndarray:
        """``(K, d, N) -> (K, d, N)``: every node's map at once, feature-major (a reference path)."""
        k, d, n = x.shape
        h = np.concatenate([x, np.ones((k, 1, n))], axis=1)  # (K, d + 1, N)
        n_layers = len(self.weights)
        for i in range(n_layers):
            out = np.matmul(self.weights[i], h)  # (K, d, d + 1) @ (K, d + 1, N) -> (K, d, N)
            if i == n_layers - 1:
                return out
            if self.slope != 1.0:
                np.maximum(out, self.slope * out, out=out)
            h = np.concatenate([out, np.ones((k, 1, n))], axis=1)
        raise AssertionError("unreachable")


class Mixing:
    """Every node's invertible map for one graph.

    ``maps[v]`` is the :class:`NodeMap` of ``v``; :meth:`forward` and
    :meth:`inverse` work on one node, :attr:`groups` (in topological order)
    batch the nodes that can run together.
    """

    def __init__(self, graph: nx.DiGraph, spec: MixingSpec, maps: dict[str, NodeMap]):
        self.graph = graph
        self.spec = spec
        self.maps = maps
        self.groups: tuple[MixingGroup, ...] = tuple(_make_groups(graph, maps))

    def forward(self, v: str, parent_values: list[np.ndarray] | dict[str, np.ndarray], noise: np.ndarray) -> np.ndarray:
        """Value ``(N, dim(v))`` of ``v`` from its parents' values and its noise ``(N, noise_dim(v))``."""
        pars = graphs.parents(self.graph, v)
        if isinstance(parent_values, dict):
            parent_values = [parent_values[p] for p in pars]
        if len(parent_values) != len(pars):
            raise ValueError(f"{v}: expected {len(pars)} parent values, got {len(parent_values)}")
        inputs = np.concatenate([*parent_values, noise], axis=1)  # (N, d)
        return self.maps[v].forward(inputs)

    def inverse(self, v: str, value: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Exact inverse of ``g_v``: ``value`` (N, dim(v)) -> (parents' values by id, noise (N, noise_dim))."""
        inputs = self.maps[v].inverse(value)  # (N, d)
        out: dict[str, np.ndarray] = {}
        start = 0
        for p in graphs.parents(self.graph, v):
            d = self.graph.nodes[p]["dim"]
            out[p] = inputs[:, start : start + d]
            start += d
        return out, inputs[:, start:]


def _generations(graph: nx.DiGraph) -> list[list[str]]:
    """Topological generations (no edge inside one), each in topological order."""
    order = {v: i for i, v in enumerate(graphs.topological_order(graph))}
    return [sorted(gen, key=order.__getitem__) for gen in nx.topological_generations(graph)]


def _make_groups(graph: nx.DiGraph, maps: dict[str, NodeMap]) -> list[MixingGroup]:
    groups = []
    for gen in _generations(graph):
        by_key: dict[tuple[int, bool], list[str]] = {}
        for v in gen:
            key = (graph.nodes[v]["dim"], graph.nodes[v]["kind"] == "observed")
            by_key.setdefault(key, []).append(v)
        for (_, observed), nodes in by_key.items():
            if observed:
                nodes = sorted(nodes, key=lambda v: tuple(graph.nodes[v]["pos"]))
            ms = [maps[v] for v in nodes]
            w = np.stack([m.weights for m in ms], axis=1)  # (L, K, d, d)
            b = np.stack([m.biases for m in ms], axis=1)[..., None]  # (L, K, d, 1)
            w = np.concatenate([w, b], axis=-1)  # (L, K, d, d + 1): bias as the last column
            # Fold (h - mu) / sigma into the last layer: one affine step fewer per sample.
            sigma = np.stack([m.sigma for m in ms])[..., None]  # (K, d, 1)
            mu = np.stack([m.mu for m in ms])  # (K, d)
            w[-1] = w[-1] / sigma
            w[-1, :, :, -1] -= mu / sigma[..., 0]
            groups.append(MixingGroup(tuple(nodes), observed, np.ascontiguousarray(w), ms[0].slope))
    return groups


def build_mixing(graph: nx.DiGraph, spec: MixingSpec | None = None, rng: np.random.Generator | None = None) -> Mixing:
    """Draw every node's map for ``graph`` and measure its standardising constants.

    Weights and biases are drawn node by node in topological order from
    ``rng``; then a pilot of ``spec.pilot_n`` samples of standard Gaussian
    noise (also from ``rng``) runs down the graph, and each node's ``mu`` and
    ``sigma`` are its raw output's mean and standard deviation on the pilot.
    Other noise kinds are scaled to unit variance, so they stay near
    standardised too.

    Examples
    --------
    >>> g = graphs.grid_hierarchy(depth=1, branching=2)
    >>> m = build_mixing(g, MixingSpec(), np.random.default_rng(0))
    >>> value = m.forward("z_0_0_0", [], np.ones((3, 2)))
    >>> bool(np.allclose(m.inverse("z_0_0_0", value)[1], 1.0))
    True
    """
    spec = MixingSpec() if spec is None else spec
    if rng is None:
        raise ValueError("build_mixing needs a seeded numpy Generator (rng)")
    order = graphs.topological_order(graph)
    slope = spec.activation_slope
    drawn = {}
    for v in order:
        d = graph.nodes[v]["dim"]
        w = np.stack([random_weight(d, spec, rng) for _ in range(spec.layers)])  # (L, d, d)
        b = rng.normal(0.0, spec.bias_scale, size=(spec.layers, d)) if spec.bias_scale > 0 else np.zeros((spec.layers, d))
        drawn[v] = (w, b)
    noise_dims = {v: graph.nodes[v]["noise_dim"] for v in order}
    pilot_noise = {v: rng.standard_normal((spec.pilot_n, noise_dims[v])) for v in order}
    values: dict[str, np.ndarray] = {}
    maps: dict[str, NodeMap] = {}
    for v in order:
        w, b = drawn[v]
        inv = np.stack([np.linalg.inv(wi) for wi in w])
        m = NodeMap(v, w, b, np.zeros(len(b[0])), np.ones(len(b[0])), slope, inv)
        inputs = np.concatenate([*(values[p] for p in graphs.parents(graph, v)), pilot_noise[v]], axis=1)
        raw = m.raw(inputs)
        mu, sigma = raw.mean(axis=0), raw.std(axis=0)
        sigma = np.where(sigma > 0, sigma, 1.0)
        maps[v] = NodeMap(v, w, b, mu, sigma, slope, inv)
        values[v] = (raw - mu) / sigma
    return Mixing(graph, spec, maps)
