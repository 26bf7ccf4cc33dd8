"""The hierarchy sampler and its on-disk dataset format.

A :class:`Simulator` draws every node's noise ``eps_v`` and runs the graph's
invertible maps (:mod:`hlvm.mixing`) in topological order, a generation's
same-dim nodes as one batched matmul, samples along the last axis: no Python
loop over samples or, within a group, over nodes.

On disk (``simulate_to_dir``), readable with numpy alone::

    OUT/graph.json     node-link graph (graphs.write_graph)
    OUT/config.json    resolved SimulateConfig, seed, sample_block, provenance
    OUT/images.npy     (N, C, H, W)  dtype per config (float32 by default)
    OUT/latents.npy    (N, Dz)       every latent value, columns per index.json
    OUT/noises.npy     (N, De)       every node's noise, columns per index.json
    OUT/index.json     {"n", "image_shape", "dtype", "latents": {id: [start, stop]},
                        "noises": {id: [start, stop]}}

Seeding: the noise of samples ``[k * SAMPLE_BLOCK, (k + 1) * SAMPLE_BLOCK)``
comes from its own generator, SFC64 seeded by ``SeedSequence(seed, spawn_key=(1, k))``, and
every block is computed on its own; the mixing comes from
``SeedSequence(seed, spawn_key=(0,))``. So the bytes depend on the seed and
options only, never on how the run is chunked or threaded.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

import networkx as nx
import numpy as np

from hlvm import graphs
from hlvm.errors import ConfigError, DataError, HlvmError
from hlvm.graphs import GridSpec
from hlvm.io import atomic_dir, provenance, write_json
from hlvm.mixing import NOISE_KINDS, Mixing, MixingSpec, build_mixing, unit_noise

__all__ = [
    "SimulateConfig",
    "ColumnIndex",
    "Dataset",
    "Simulator",
    "simulate",
    "simulate_to_dir",
    "load_dataset",
    "SAMPLE_BLOCK",
    "DATA_FILES",
]

#: Samples per seeded noise block: the unit that fixes the bytes.
SAMPLE_BLOCK = 1024
#: Samples per unit of computation: small enough that a piece's buffers stay in
#: L2, large enough to spread the fixed cost of a piece (~90 us, mostly ~680
#: tiny BLAS calls at depth 4). 96 measured ~7% faster than 64 or 128 (float32,
#: depth 4). Pieces start at fixed offsets in each SAMPLE_BLOCK (the last one
#: is shorter), so the bytes still depend on seed and options only.
COMPUTE_BLOCK = 96
#: Blocks per chunk written to disk at once (memory, not bytes: any value gives the same files).
CHUNK_BLOCKS = 16
DTYPES = ("float32", "float64")
DATA_FILES = ("graph.json", "config.json", "index.json", "images.npy", "latents.npy", "noises.npy")


# ----------------------------------------------------------------------------- config


@dataclass(frozen=True)
class SimulateConfig:
    """Everything that decides a simulated dataset; validates itself, round-trips through JSON.

    Parameters
    ----------
    grid : the grid hierarchy to build (ignored when ``graph`` names a file).
    mixing : the invertible maps.
    noise : distribution of every ``eps_v`` (zero mean, unit variance).
    n : number of samples.
    seed : seed of the mixing and of the noise.
    dtype : dtype of the arrays on disk.
    graph : optional path of a user graph (node-link JSON) used instead of ``grid``.
    """

    grid: GridSpec = field(default_factory=GridSpec)
    mixing: MixingSpec = field(default_factory=MixingSpec)
    noise: Literal["gaussian", "uniform", "laplace"] = "gaussian"
    n: int = 10_000
    seed: int = 0
    dtype: Literal["float32", "float64"] = "float32"
    graph: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.grid, GridSpec):
            raise ConfigError(f"grid must be a GridSpec, got {type(self.grid).__name__}")
        if not isinstance(self.mixing, MixingSpec):
            raise ConfigError(f"mixing must be a MixingSpec, got {type(self.mixing).__name__}")
        if self.noise not in NOISE_KINDS:
            raise ConfigError(f"noise must be one of {', '.join(NOISE_KINDS)}, got {self.noise!r}")
        if not _is_int(self.n) or self.n < 1:
            raise ConfigError(f"n must be an integer >= 1, got {self.n!r}")
        if not _is_int(self.seed) or self.seed < 0:
            raise ConfigError(f"seed must be an integer >= 0, got {self.seed!r}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.graph is not None and not isinstance(self.graph, str):
            raise ConfigError(f"graph must be a file path or null, got {self.graph!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SimulateConfig:
        """Inverse of :meth:`to_dict`; keys that are not config fields (provenance, ...) are ignored."""
        if not isinstance(data, dict):
            raise ConfigError(f"simulate config must be a JSON object, got {type(data).__name__}")
        names = {f.name for f in fields(cls)}
        kw = {k: x for k, x in data.items() if k in names}
        try:
            if "grid" in kw:
                kw["grid"] = GridSpec(**kw["grid"])
            if "mixing" in kw:
                kw["mixing"] = MixingSpec.from_dict(kw["mixing"])
        except TypeError as e:
            raise ConfigError(f"simulate config: {e}") from None
        return cls(**kw)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> SimulateConfig:
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as e:
            raise ConfigError(f"simulate config is not valid JSON: {e}") from None

    def build_graph(self) -> nx.DiGraph:
        """The graph: the user file if ``graph`` is set, else ``grid_hierarchy(grid)``."""
        return graphs.read_graph(self.graph) if self.graph is not None else graphs.grid_hierarchy(self.grid)


def _is_int(x: Any) -> bool:
    return isinstance(x, int | np.integer) and not isinstance(x, bool)


def mixing_rng(seed: int) -> np.random.Generator:
    """The generator that draws the mixing of a run seeded ``seed``."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,)))


def noise_generator(seed: int | np.random.SeedSequence) -> np.random.Generator:
    """A noise generator: SFC64, whose gaussians numpy draws 15-20% faster than PCG64's (the noise
    draw is the largest single cost of sampling); statistically sound for simulation."""
    return np.random.Generator(np.random.SFC64(seed))


def block_rng(seed: int, block: int) -> np.random.Generator:
    """The generator of the noise of samples ``[block * SAMPLE_BLOCK, (block + 1) * SAMPLE_BLOCK)``."""
    return noise_generator(np.random.SeedSequence(seed, spawn_key=(1, block)))


def block_generators(rng: np.random.Generator, k: int) -> list[np.random.Generator]:
    """``k`` independent generators seeded by ``k`` draws from ``rng``.

    Unlike ``rng.spawn``, whose counter lives outside ``rng.bit_generator.state``,
    this advances ``rng``'s own state: saving and restoring that state (as a
    training checkpoint does) replays the same samples.
    """
    seeds = rng.integers(0, 2**63 - 1, size=k, dtype=np.int64)
    return [noise_generator(int(s)) for s in seeds]


# ----------------------------------------------------------------------------- dataset


@dataclass(frozen=True)
class ColumnIndex:
    """Which columns of ``latents`` and ``noises`` belong to which node.

    ``latents`` maps every latent id to its slice of the ``(N, Dz)`` latent
    array; ``noises`` every node id (latents, then pixels row-major) to its
    slice of the ``(N, De)`` noise array.
    """

    latents: dict[str, slice]
    noises: dict[str, slice]

    @classmethod
    def for_graph(cls, graph: nx.DiGraph) -> ColumnIndex:
        lat, noi = {}, {}
        start = 0
        for v in graphs.latent_nodes(graph):
            d = graph.nodes[v]["dim"]
            lat[v] = slice(start, start + d)
            start += d
        start = 0
        for v in [*graphs.latent_nodes(graph), *graphs.observed_nodes(graph)]:
            d = graph.nodes[v]["noise_dim"]
            noi[v] = slice(start, start + d)
            start += d
        return cls(lat, noi)

    @property
    def latent_dim(self) -> int:
        """Dz: total width of the latent array."""
        return max((s.stop for s in self.latents.values()), default=0)

    @property
    def noise_dim(self) -> int:
        """De: total width of the noise array."""
        return max((s.stop for s in self.noises.values()), default=0)

    def to_json(self) -> dict[str, dict[str, list[int]]]:
        return {
            "latents": {v: [s.start, s.stop] for v, s in self.latents.items()},
            "noises": {v: [s.start, s.stop] for v, s in self.noises.items()},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ColumnIndex:
        try:
            return cls(
                {v: slice(int(a), int(b)) for v, (a, b) in data["latents"].items()},
                {v: slice(int(a), int(b)) for v, (a, b) in data["noises"].items()},
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise DataError(f"index.json: malformed latents/noises columns ({e})") from None


@dataclass(frozen=True, eq=False)
class Dataset:
    """Samples of a hierarchy: images and every latent value and noise, by node id.

    ``images`` (N, C, H, W), ``latents`` (N, Dz), ``noises`` (N, De); the
    arrays may be memory-mapped (:func:`load_dataset`).
    """

    images: np.ndarray
    latents: np.ndarray
    noises: np.ndarray
    graph: nx.DiGraph
    index: ColumnIndex
    config: SimulateConfig | None = None

    def __len__(self) -> int:
        return len(self.images)

    def latent(self, v: str) -> np.ndarray:
        """``(N, dim(v))`` values of latent ``v``."""
        if v not in self.index.latents:
            raise KeyError(f"{v!r} is not a latent node of this dataset")
        return self.latents[:, self.index.latents[v]]

    def noise(self, v: str) -> np.ndarray:
        """``(N, noise_dim(v))`` noise ``eps_v`` of any node."""
        if v not in self.index.noises:
            raise KeyError(f"{v!r} is not a node of this dataset")
        return self.noises[:, self.index.noises[v]]

    def pixel(self, v: str) -> np.ndarray:
        """``(N, C)`` values of observed node ``v``."""
        r, c = self.graph.nodes[v]["pos"]
        return self.images[:, :, r, c]

    def value(self, v: str) -> np.ndarray:
        """``(N, dim(v))`` value of any node (latent or pixel)."""
        return self.pixel(v) if self.graph.nodes[v]["kind"] == "observed" else self.latent(v)


# ----------------------------------------------------------------------------- simulator


@dataclass(frozen=True)
class _Plan:
    """Where one mixing group reads and writes in the simulator's feature-major work array.

    ``inputs`` (K, d + 1): per node, the rows of its parents' values, of its
    noise, and the constant-1 row (for the bias column). For latents,
    ``outputs`` is the first value row when the group's rows form one
    contiguous run (the last layer writes there in place), else the (K * d,)
    rows to scatter to. For pixels, ``outputs`` holds their row-major pixel
    indices, and ``pixels`` their range when it is contiguous (written in
    place).
    """

    inputs: np.ndarray
    outputs: np.ndarray | int
    pixels: tuple[int, int] | None = None


class _Workspace:
    """Buffers and views of one thread for pieces of exactly ``b`` samples in ``dtype``.

    Reused piece after piece: fresh multi-megabyte arrays per piece cost
    page faults that take longer than the arithmetic, and building the views
    once saves numpy call overhead, which at these matrix sizes is a large
    share of the time.
    """

    def __init__(self, sim: Simulator, b: int, dtype: np.dtype):
        c, h, w = sim.image_shape
        self.b = b
        self.work = np.empty((sim._dz + sim._de + 1, b), dtype)  # (Dz + De + 1, B): values, noises, ones
        self.work[-1] = 1.0
        self.noise_rows = self.work[sim._dz : sim._dz + sim._de]  # (De, B)
        self.latent_rows = self.work[: sim._dz]  # (Dz, B)
        self.pix = np.empty((c, h * w, b), dtype)  # (C, H*W, B)
        self.steps = []
        buffers: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        for group, plan, wts in zip(sim.mixing.groups, sim._plans, sim._weights(dtype), strict=True):
            k, d = len(group.nodes), group.dim
            if (k, d) not in buffers:
                hid = np.empty((k, d + 1, b), dtype)  # hidden layer plus its ones row
                hid[:, d] = 1.0
                # (K, d + 1, B) gathered inputs; (K, d, B) scratch for the activation and scattered outputs
                buffers[k, d] = (np.empty((k, d + 1, b), dtype), hid, np.empty((k, d, b), dtype))
            x, hid, tmp = buffers[k, d]
            if group.observed:
                dest = self.pix[:, plan.pixels[0] : plan.pixels[1]].transpose(1, 0, 2) if plan.pixels else tmp  # (K, C, B)
            elif isinstance(plan.outputs, int):
                dest = self.work[plan.outputs : plan.outputs + k * d].reshape(k, d, b)  # (K, d, B) view
            else:
                dest = tmp
            # Each layer: (weights (K, d, d + 1), input (K, d + 1, B), output (K, d, B)); the last writes dest.
            layers = [(wts[i], x if i == 0 else hid, hid[:, :d]) for i in range(len(wts) - 1)]
            layers.append((wts[-1], x if len(wts) == 1 else hid, dest))
            scatter = None
            if dest is tmp:
                scatter = (self.pix, (slice(None), plan.outputs), tmp.transpose(1, 0, 2)) if group.observed else (
                    self.work, plan.outputs, tmp.reshape(k * d, b))  # pixels: (C, K, B); latents: (K * d, B)
            act = (hid[:, :d], tmp, group.slope) if group.slope != 1.0 and len(wts) > 1 else None
            self.steps.append((plan.inputs, x, layers, act, scatter))


class Simulator:
    """Samples ``(images, latents, noises)`` from a graph and its mixing.

    Parameters
    ----------
    graph : a validated hierarchy graph.
    mixing : its maps (:func:`hlvm.mixing.build_mixing`).
    noise : ``"gaussian"``, ``"uniform"`` or ``"laplace"`` (unit variance).
    threads : worker threads over sample blocks (numpy releases the GIL in matmul).

    Examples
    --------
    >>> sim = Simulator.from_config(SimulateConfig(grid=GridSpec(depth=2)))
    >>> data = sim.sample(5, np.random.default_rng(0))
    >>> data.images.shape, data.latents.shape, data.noises.shape
    ((5, 4, 4, 4), (5, 14), (5, 22))
    """

    def __init__(self, graph: nx.DiGraph, mixing: Mixing, noise: str = "gaussian", *, threads: int | None = None):
        if noise not in NOISE_KINDS:
            raise ConfigError(f"noise must be one of {', '.join(NOISE_KINDS)}, got {noise!r}")
        if set(mixing.maps) != set(graph.nodes):
            raise ValueError("mixing was built for a different graph")
        self.graph = graph
        self.mixing = mixing
        self.noise = noise
        self.threads = max(1, min(os.cpu_count() or 1, 2)) if threads is None else int(threads)
        self.index = ColumnIndex.for_graph(graph)
        self.image_shape = graphs.image_shape(graph)
        self.config: SimulateConfig | None = None
        self._dz = self.index.latent_dim
        self._de = self.index.noise_dim
        self._plans = [self._plan(g) for g in mixing.groups]
        self._cast: dict[np.dtype, list[np.ndarray]] = {}

    @classmethod
    def from_config(cls, cfg: SimulateConfig, graph: nx.DiGraph | None = None, **kw: Any) -> Simulator:
        """The simulator of ``cfg``: its graph, and its mixing drawn from ``cfg.seed``."""
        graph = cfg.build_graph() if graph is None else graph
        sim = cls(graph, build_mixing(graph, cfg.mixing, mixing_rng(cfg.seed)), cfg.noise, **kw)
        sim.config = cfg
        return sim

    def _plan(self, group: Any) -> _Plan:
        g, dz, ones = self.graph, self._dz, self._dz + self._de
        rows = []
        for v in group.nodes:
            r = [np.arange(self.index.latents[p].start, self.index.latents[p].stop) for p in graphs.parents(g, v)]
            s = self.index.noises[v]
            r += [np.arange(dz + s.start, dz + s.stop), [ones]]
            rows.append(np.concatenate(r))
        inputs = np.stack(rows)  # (K, d + 1)
        if group.observed:
            _, _, w = self.image_shape
            flat = np.array([g.nodes[v]["pos"][0] * w + g.nodes[v]["pos"][1] for v in group.nodes])
            if np.array_equal(flat, np.arange(flat[0], flat[0] + len(flat))):
                return _Plan(inputs, flat, (int(flat[0]), int(flat[-1]) + 1))
            return _Plan(inputs, flat)
        out = np.concatenate([np.arange(self.index.latents[v].start, self.index.latents[v].stop) for v in group.nodes])
        if np.array_equal(out, np.arange(out[0], out[0] + len(out))):
            return _Plan(inputs, int(out[0]))
        return _Plan(inputs, out)

    # -- noise

    @property
    def noise_width(self) -> int:
        """De: total noise dimension of one sample."""
        return self._de

    def draw_noise(
        self, n: int, rng: np.random.Generator, dtype: Any = np.float64, out: np.ndarray | None = None
    ) -> np.ndarray:
        """``(n, De)`` noise in ``dtype``, columns per :attr:`index`, from ``rng`` (into ``out`` if given)."""
        return unit_noise(self.noise, rng, (n, self._de), dtype, out)

    def seeded_noise(self, seed: int, start: int, stop: int, dtype: Any = np.float64) -> np.ndarray:
        """``(stop - start, De)`` noise of samples ``[start, stop)`` of the seeded stream (block-aligned start)."""
        if start % SAMPLE_BLOCK:
            raise ValueError(f"start must be a multiple of {SAMPLE_BLOCK}, got {start}")
        parts = []
        for b0 in range(start, stop, SAMPLE_BLOCK):
            parts.append(self.draw_noise(min(SAMPLE_BLOCK, stop - b0), block_rng(seed, b0 // SAMPLE_BLOCK), dtype))
        return np.concatenate(parts) if parts else np.empty((0, self._de), dtype)

    # -- forward

    def _weights(self, dtype: np.dtype) -> list[np.ndarray]:
        """Every group's stacked weights in the compute dtype (cast once, kept)."""
        if dtype not in self._cast:
            self._cast[dtype] = [np.ascontiguousarray(g.weights, dtype=dtype) for g in self.mixing.groups]
        return self._cast[dtype]

    def _forward_block(self, ws: _Workspace, noises: np.ndarray, images: np.ndarray, latents: np.ndarray) -> None:
        """Run one piece: ``noises`` (B, De) -> ``images`` (B, C, H, W), ``latents`` (B, Dz), written in place.

        Feature-major (features x samples), so each node's layer is one small
        gemm over the piece's samples and a generation's nodes one batched
        matmul; layers write straight into the next one's input buffer. All
        arithmetic is in the workspace's dtype.
        """
        b = len(noises)
        c, h, w = self.image_shape
        matmul, take, multiply, maximum = np.matmul, np.take, np.multiply, np.maximum
        ws.noise_rows[...] = noises.T
        work = ws.work
        for inputs, x, layers, act, scatter in ws.steps:
            # mode="clip": with the default "raise", take buffers the whole output first.
            take(work, inputs, axis=0, out=x, mode="clip")  # (K, d + 1, B)
            last = len(layers) - 1
            for i, (wt, src, dst) in enumerate(layers):
                matmul(wt, src, out=dst)  # (K, d, d + 1) @ (K, d + 1, B) -> (K, d, B)
                if i < last and act is not None:
                    layer, tmp, slope = act
                    multiply(layer, slope, out=tmp)
                    maximum(layer, tmp, out=layer)  # leaky ReLU
            if scatter is not None:
                target, where, value = scatter
                target[where] = value
        latents[...] = ws.latent_rows.T
        pix = ws.pix
        if images.flags.c_contiguous:
            flat = images.reshape(b, c, h * w)
            for ch in range(c):
                # One channel at a time: the (H*W, B) source then stays in L1/L2 while it is transposed.
                flat[:, ch] = pix[ch].T
        else:
            images[...] = pix.transpose(2, 0, 1).reshape(b, c, h, w)

    def _run(
        self,
        noises: np.ndarray,
        images: np.ndarray,
        latents: np.ndarray,
        block_rngs: Callable[[int], np.random.Generator] | None = None,
    ) -> None:
        """Fill ``images`` and ``latents`` (and, with ``block_rngs``, ``noises``) block by block.

        The arithmetic runs in ``noises``' dtype (float32 or float64).
        Threads take whole :data:`SAMPLE_BLOCK` blocks, every ``threads``-th
        one, each with its own buffers; numpy drops the GIL inside matmul and
        ufuncs, so they run in parallel. With ``block_rngs``, block ``k``'s
        noise is drawn from ``block_rngs(k)`` inside the thread, just before
        it is used. Within a block, :data:`COMPUTE_BLOCK`-sample pieces run
        one after another. Every piece is computed alone, at an offset fixed
        by its block, so a sample's bytes depend neither on the thread count
        nor on how a run is chunked.
        """
        n = len(noises)
        dtype = noises.dtype
        starts = list(range(0, n, SAMPLE_BLOCK))
        threads = max(1, min(self.threads, len(starts)))

        def run(part: list[int]) -> None:
            spaces: dict[int, _Workspace] = {}  # by piece size: the full one, and at most one short tail
            for s in part:
                e = min(s + SAMPLE_BLOCK, n)
                if block_rngs is not None:
                    self.draw_noise(e - s, block_rngs(s // SAMPLE_BLOCK), dtype, out=noises[s:e])
                for cs in range(s, e, COMPUTE_BLOCK):
                    ce = min(cs + COMPUTE_BLOCK, e)
                    if ce - cs not in spaces:
                        spaces[ce - cs] = _Workspace(self, ce - cs, dtype)
                    self._forward_block(spaces[ce - cs], noises[cs:ce], images[cs:ce], latents[cs:ce])

        parts = [starts[i::threads] for i in range(threads)]
        if threads > 1:
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(run, parts))
        else:
            run(parts[0])

    def _empty(self, n: int, dtype: Any = np.float64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return (np.empty((n, *self.image_shape), dtype), np.empty((n, self._dz), dtype),
                np.empty((n, self._de), dtype))

    def forward(
        self, noises: np.ndarray, *, images: np.ndarray | None = None, latents: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Images ``(N, C, H, W)`` and latents ``(N, Dz)`` made from ``noises`` ``(N, De)``.

        Computed in float32 when ``noises`` are float32 (so stored float32
        noise replays its stored samples byte for byte), else in float64.
        ``images`` / ``latents`` may be given to write into (any float dtype).
        """
        noises = np.asarray(noises)
        dtype = np.float32 if noises.dtype == np.float32 else np.float64
        noises = np.ascontiguousarray(noises, dtype=dtype)
        n = len(noises)
        if noises.ndim != 2 or noises.shape[1] != self._de:
            raise ValueError(f"noises must be (N, {self._de}), got {noises.shape}")
        images = np.empty((n, *self.image_shape), dtype) if images is None else images
        latents = np.empty((n, self._dz), dtype) if latents is None else latents
        self._run(noises, images, latents)
        return images, latents

    def transform(self, noises: np.ndarray) -> Dataset:
        """The :class:`Dataset` that ``noises`` (N, De) make: float32 from float32 noise, else float64."""
        noises = np.asarray(noises)
        noises = np.ascontiguousarray(noises, dtype=np.float32 if noises.dtype == np.float32 else np.float64)
        images, latents = self.forward(noises)
        return Dataset(images, latents, noises, self.graph, self.index, self.config)

    def sample(self, n: int, rng: np.random.Generator) -> Dataset:
        """``n`` fresh samples (float64, in memory) with noise from ``rng``.

        Block ``k`` of :data:`SAMPLE_BLOCK` samples draws its noise from its
        own generator (:func:`block_generators`), so the threads draw in
        parallel and the result depends on ``rng``'s state only.
        """
        if not _is_int(n) or n < 1:
            raise ConfigError(f"n must be an integer >= 1, got {n!r}")
        n = int(n)
        children = block_generators(rng, -(-n // SAMPLE_BLOCK))
        images, latents, noises = self._empty(n)
        self._run(noises, images, latents, children.__getitem__)
        return Dataset(images, latents, noises, self.graph, self.index, self.config)

    def sample_seeded(
        self,
        seed: int,
        start: int,
        stop: int,
        *,
        dtype: Any = np.float64,
        out: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    ) -> Dataset:
        """Samples ``[start, stop)`` of the seeded stream that :func:`simulate_to_dir` writes in ``dtype``.

        ``start`` must be a multiple of :data:`SAMPLE_BLOCK`. One compute
        dtype per output dtype: float32 draws float32 noise and computes in
        float32 (half the memory traffic, twice the SIMD width); float64 draws
        and computes in float64. Images, latents and noises all come in ``dtype``,
        written into ``out`` = (images, latents, noises) when given (C-contiguous,
        of that dtype and shape): reusing buffers saves the page faults of fresh ones.
        """
        if start % SAMPLE_BLOCK:
            raise ValueError(f"start must be a multiple of {SAMPLE_BLOCK}, got {start}")
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64, got {dtype}")
        first = start // SAMPLE_BLOCK
        if out is None:
            images, latents, noises = self._empty(stop - start, dtype)
        else:
            images, latents, noises = out
            shapes = ((stop - start, *self.image_shape), (stop - start, self._dz), (stop - start, self._de))
            for arr, shape in zip(out, shapes, strict=True):
                if arr.shape != shape or arr.dtype != dtype or not arr.flags.c_contiguous:
                    raise ValueError(f"out arrays must be C-contiguous {dtype} of shapes {shapes}")
        self._run(noises, images, latents, lambda k: block_rng(seed, first + k))
        return Dataset(images, latents, noises, self.graph, self.index, self.config)


def simulate(cfg: SimulateConfig) -> Dataset:
    """The dataset of ``cfg`` in memory, in ``cfg.dtype``: the samples :func:`simulate_to_dir` writes."""
    return Simulator.from_config(cfg).sample_seeded(cfg.seed, 0, cfg.n, dtype=cfg.dtype)


# ----------------------------------------------------------------------------- disk


def _chunks(n: int, chunk: int) -> Iterator[tuple[int, int]]:
    for s in range(0, n, chunk):
        yield s, min(s + chunk, n)


def _create_npy(path: Path, shape: tuple[int, ...], dtype: str) -> int:
    """Create ``path`` as an .npy file of ``shape`` (sparse, unfilled); return its data offset."""
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    offset = mm.offset
    del mm  # unmapped at once: chunks go in with plain writes, which keep the pages out of our RSS
    return offset


def simulate_to_dir(
    cfg: SimulateConfig,
    out: str | os.PathLike[str],
    overwrite: bool = False,
    progress: bool = True,
    *,
    graph: nx.DiGraph | None = None,
    chunk_blocks: int = CHUNK_BLOCKS,
    threads: int | None = None,
) -> Path:
    """Simulate ``cfg`` into the folder ``out`` (format in the module docstring); return its path.

    The folder is built under a temporary name and renamed when complete, so
    an error or Ctrl-C leaves nothing behind. Samples are streamed in chunks of
    ``chunk_blocks * SAMPLE_BLOCK``, so memory stays flat in ``n``; the bytes
    do not depend on ``chunk_blocks`` or ``threads``.
    """
    out = Path(out)
    graph = cfg.build_graph() if graph is None else graph
    sim = Simulator.from_config(cfg, graph=graph, threads=threads)
    n, dtype = cfg.n, cfg.dtype
    c, h, w = sim.image_shape
    dz, de = sim.index.latent_dim, sim.index.noise_dim
    chunk = max(1, int(chunk_blocks)) * SAMPLE_BLOCK
    with atomic_dir(out, overwrite) as tmp:
        tmp.chmod(0o755)  # mkdtemp makes it owner-only; a dataset folder is for sharing
        graphs.write_graph(graph, tmp / "graph.json")
        write_json(tmp / "index.json", {"n": n, "image_shape": [c, h, w], "dtype": dtype, **sim.index.to_json()})
        write_json(tmp / "config.json", {**cfg.to_dict(), "sample_block": SAMPLE_BLOCK, "provenance": provenance()})
        targets = {
            "images": (tmp / "images.npy", (n, c, h, w)),
            "latents": (tmp / "latents.npy", (n, dz)),
            "noises": (tmp / "noises.npy", (n, de)),
        }
        offsets = {k: _create_npy(p, shape, dtype) for k, (p, shape) in targets.items()}
        files = {k: open(p, "r+b") for k, (p, _) in targets.items()}  # noqa: SIM115 - closed below
        try:
            buffers = sim._empty(min(chunk, n), dtype)  # reused chunk after chunk: no fresh pages to fault in
            with _progress(progress, n) as advance:
                for s, e in _chunks(n, chunk):
                    part = sim.sample_seeded(cfg.seed, s, e, dtype=dtype, out=tuple(b[: e - s] for b in buffers))
                    arrays = (("images", part.images), ("latents", part.latents), ("noises", part.noises))
                    for key, arr in arrays:
                        f = files[key]
                        f.seek(offsets[key] + s * arr[0].nbytes)
                        arr.tofile(f)
                    advance(e - s)
        finally:
            for f in files.values():
                f.close()
        for f in tmp.iterdir():
            f.chmod(0o644)
    return out


class _progress:
    """A rich progress bar over samples, or nothing when ``show`` is off."""

    def __init__(self, show: bool, total: int):
        self.show, self.total, self.bar = show, total, None

    def __enter__(self):  # type: ignore[no-untyped-def]
        if not self.show:
            return lambda k: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        self.bar = Progress("simulating", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=True)
        self.bar.__enter__()
        task = self.bar.add_task("simulate", total=self.total)
        return lambda k: self.bar.advance(task, k)

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)


def load_dataset(path: str | os.PathLike[str], mmap: bool = True) -> Dataset:
    """Open a folder written by :func:`simulate_to_dir` (arrays memory-mapped unless ``mmap=False``)."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"dataset folder not found: {path}")
    missing = [f for f in DATA_FILES if not (path / f).is_file()]
    if missing:
        raise DataError(f"{path} is not a simulated dataset: missing {', '.join(missing)}")
    try:
        index = json.loads((path / "index.json").read_text())
        config_data = json.loads((path / "config.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: malformed JSON ({e})") from None
    try:
        graph = graphs.read_graph(path / "graph.json")
        config = SimulateConfig.from_dict(config_data)
    except HlvmError as e:
        raise DataError(f"{path}: {e}") from None
    if config.graph is not None:
        # The user's graph file may have moved since; the folder keeps its own copy.
        config = replace(config, graph=str(path / "graph.json"))
    columns = ColumnIndex.from_json(index)
    mode = "r" if mmap else None
    try:
        images = np.load(path / "images.npy", mmap_mode=mode)
        latents = np.load(path / "latents.npy", mmap_mode=mode)
        noises = np.load(path / "noises.npy", mmap_mode=mode)
    except (ValueError, OSError) as e:
        raise DataError(f"{path}: unreadable array ({e})") from None
    n = index.get("n")
    expected = {
        "images.npy": (images, (n, *index.get("image_shape", []))),
        "latents.npy": (latents, (n, columns.latent_dim)),
        "noises.npy": (noises, (n, columns.noise_dim)),
    }
    for name, (arr, shape) in expected.items():
        if arr.shape != tuple(shape):
            raise DataError(f"{path / name}: shape {arr.shape} does not match index.json's {tuple(shape)}")
    if tuple(index["image_shape"]) != graphs.image_shape(graph):
        raise DataError(f"{path}: index.json image_shape {index['image_shape']} does not match graph.json")
    return Dataset(images, latents, noises, graph, columns, config)
