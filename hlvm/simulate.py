"""The hierarchy sampler and its on-disk dataset format.

A :class:`Simulator` draws every node's noise ``eps_v`` and runs the graph's
invertible maps (:mod:`hlvm.mixing`) in topological order, all of them in one
compiled program (:mod:`hlvm._kernels`) over pieces of samples, SIMD across
the samples: no Python loop over samples or over nodes.

On disk (``simulate_to_dir``), readable with numpy alone::

    OUT/graph.json     node-link graph (graphs.write_graph)
    OUT/config.json    resolved SimulateConfig, seed, sample_block, provenance
    OUT/images.npy     (N, C, H, W)  dtype per config (float32 by default)
    OUT/latents.npy    (N, Dz)       every latent value, columns per index.json
    OUT/noises.npy     (N, De)       every node's noise, columns per index.json
    OUT/index.json     {"n", "image_shape", "dtype", "latents": {id: [start, stop]},
                        "noises": {id: [start, stop]}}

Seeding: the noise of samples ``[k * SAMPLE_BLOCK, (k + 1) * SAMPLE_BLOCK)``
comes from its own generator, SFC64 seeded by ``SeedSequence(noise_seed,
spawn_key=(1, k))`` (Gaussians through :func:`hlvm._kernels.gaussian_fill`;
``noise_seed`` is ``sample_seed`` when set, else ``seed``), and every sample
is computed on its own; the mixing comes from ``SeedSequence(seed,
spawn_key=(0,))``. So the bytes depend on the seed and
options only, never on how the run is chunked or threaded.
"""

from __future__ import annotations

import errno
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
from hlvm._kernels import rows_from_samples, run_program, samples_from_rows
from hlvm.errors import ConfigError, DataError, HlvmError, check_keys
from hlvm.graphs import GridSpec
from hlvm.io import atomic_dir, output_lock, provenance, write_json
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
    "OutputSize",
    "output_size",
    "SIZE_LIMIT",
    "NODE_LIMIT",
]

#: Samples per seeded noise block: the unit that fixes the bytes.
SAMPLE_BLOCK = 1024
#: Samples per unit of computation (a speed knob only: the kernels compute each
#: sample on its own, so no piece size changes a byte). Long rows for the SIMD
#: loops over samples; 256 measured 4-7% faster than 128 and than 512 at depth 4.
COMPUTE_BLOCK = 256
#: Blocks per chunk written to disk at once (memory, not bytes: any value gives the same files).
CHUNK_BLOCKS = 16
DTYPES = ("float32", "float64")
#: Keys a saved ``OUT/config.json`` carries beside the config's own fields.
SAVED_KEYS = ("sample_block", "provenance")
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
    sample_seed : seed of the noise alone (``None``: ``seed``). The same
        ``seed`` with another ``sample_seed`` is the same generating process
        (graph and mixing) with a fresh draw of samples: what a replicate
        needs.
    dtype : dtype of the arrays on disk.
    graph : optional path of a user graph (node-link JSON) used instead of ``grid``.
    """

    grid: GridSpec = field(default_factory=GridSpec)
    mixing: MixingSpec = field(default_factory=MixingSpec)
    noise: Literal["gaussian", "uniform", "laplace"] = "gaussian"
    n: int = 10_000
    seed: int = 0
    sample_seed: int | None = None
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
        if self.sample_seed is not None and (not _is_int(self.sample_seed) or self.sample_seed < 0):
            raise ConfigError(f"sample_seed must be an integer >= 0 or null, got {self.sample_seed!r}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.graph is not None and not isinstance(self.graph, str):
            raise ConfigError(f"graph must be a file path or null, got {self.graph!r}")

    @property
    def noise_seed(self) -> int:
        """The seed of the samples' noise stream: ``sample_seed``, else ``seed``."""
        return self.seed if self.sample_seed is None else self.sample_seed

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SimulateConfig:
        """Inverse of :meth:`to_dict`; an unknown key is a :class:`ConfigError` naming the nearest known one.

        The bookkeeping a saved ``config.json`` carries (:data:`SAVED_KEYS`) and ``_comment`` keys are allowed.
        """
        if not isinstance(data, dict):
            raise ConfigError(f"simulate config must be a JSON object, got {type(data).__name__}")
        names = {f.name for f in fields(cls)}
        check_keys(data, names, "simulate config", ignore=SAVED_KEYS)
        kw = {k: x for k, x in data.items() if k in names}
        try:
            if "grid" in kw:
                if not isinstance(kw["grid"], dict):
                    raise ConfigError(f"simulate config: grid must be a JSON object, got {kw['grid']!r}")
                check_keys(kw["grid"], [f.name for f in fields(GridSpec)], "grid")
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
    """A noise generator: SFC64, a fast, statistically sound generator for simulation, whose raw
    words :func:`hlvm.mixing.unit_noise` turns into Gaussians with a compiled ziggurat."""
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


class _Program:
    """The forward pass of one graph as a flat program for :func:`hlvm._kernels.run_program`.

    One feature-major work array per thread holds, row by row: every latent
    value (``Dz`` rows, the latent array's columns), every noise (``De``
    rows), every pixel channel (``C * H * W`` rows, channel-major, so a
    sample's image is ``C * H * W`` consecutive rows) and two hidden layers of
    scratch. Each node's map is ``L`` affine steps in topological order: the
    first reads its parents' and its noise's rows, the last writes the node's
    rows, a leaky ReLU after every step but the last. The standardisation is
    already folded into the last layer (:class:`hlvm.mixing.MixingGroup`).
    """

    def __init__(self, sim: Simulator):
        g, index = sim.graph, sim.index
        c, h, w = sim.image_shape
        dz, de = index.latent_dim, index.noise_dim
        self.noise_row, self.pixel_row = dz, dz + de
        dmax = max(grp.dim for grp in sim.mixing.groups)
        hidden = self.pixel_row + c * h * w
        self.rows_total = hidden + 2 * dmax
        steps, rows, weights = [], [], []
        w_at = r_at = 0

        def add_rows(r: np.ndarray) -> int:
            nonlocal r_at
            rows.append(np.asarray(r, np.int64))
            r_at += len(r)
            return r_at - len(r)

        for grp in sim.mixing.groups:
            n_layers, _, d, _ = grp.weights.shape
            for k, v in enumerate(grp.nodes):
                inputs = [np.arange(index.latents[p].start, index.latents[p].stop) for p in graphs.parents(g, v)]
                inputs.append(dz + np.arange(index.noises[v].start, index.noises[v].stop))
                src = add_rows(np.concatenate(inputs))
                if grp.observed:
                    r, col = g.nodes[v]["pos"]
                    final = self.pixel_row + np.arange(c) * (h * w) + r * w + col
                else:
                    final = np.arange(index.latents[v].start, index.latents[v].stop)
                for layer in range(n_layers):
                    last = layer == n_layers - 1
                    dst = add_rows(final if last else hidden + (layer % 2) * dmax + np.arange(d))
                    weights.append(grp.weights[layer, k].reshape(-1))
                    steps.append((w_at, d, src, dst, 0 if last else int(grp.slope != 1.0)))
                    w_at += d * (d + 1)
                    src = dst
        self.steps = np.array(steps, np.int64).reshape(-1, 5)
        self.rows = np.concatenate(rows)
        self.weights = np.concatenate(weights)  # float64; cast per dtype in weights_as
        self.slope = sim.mixing.groups[0].slope if sim.mixing.groups else 1.0
        self._cast: dict[np.dtype, np.ndarray] = {}

    def weights_as(self, dtype: np.dtype) -> np.ndarray:
        if dtype not in self._cast:
            self._cast[dtype] = self.weights.astype(dtype)
        return self._cast[dtype]


class Simulator:
    """Samples ``(images, latents, noises)`` from a graph and its mixing.

    Parameters
    ----------
    graph : a validated hierarchy graph.
    mixing : its maps (:func:`hlvm.mixing.build_mixing`).
    noise : ``"gaussian"``, ``"uniform"`` or ``"laplace"`` (unit variance).
    threads : worker threads over sample blocks (the compiled kernels release the GIL).

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
        self._program = _Program(self)

    @classmethod
    def from_config(cls, cfg: SimulateConfig, graph: nx.DiGraph | None = None, **kw: Any) -> Simulator:
        """The simulator of ``cfg``: its graph, and its mixing drawn from ``cfg.seed``."""
        graph = cfg.build_graph() if graph is None else graph
        sim = cls(graph, build_mixing(graph, cfg.mixing, mixing_rng(cfg.seed)), cfg.noise, **kw)
        sim.config = cfg
        return sim

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

    def _forward_piece(self, work: np.ndarray, noises: np.ndarray, images: np.ndarray, latents: np.ndarray) -> None:
        """One piece of samples: ``noises`` (B, De) -> ``images`` (B, C, H, W), ``latents`` (B, Dz), in place.

        The noise goes into the work array's rows, the compiled program runs
        every node's map over the piece's samples (SIMD across samples), and
        the latent and pixel rows come back out sample-major. All arithmetic
        is in ``work``'s dtype; the outputs must be C-contiguous of that dtype.
        """
        b, prog = len(noises), self._program
        rows_from_samples(noises, work, prog.noise_row)
        run_program(work, b, prog.weights_as(work.dtype), prog.steps, prog.rows, work.dtype.type(prog.slope))
        samples_from_rows(work, 0, latents)
        samples_from_rows(work, prog.pixel_row, images.reshape(b, -1))

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
        one, each with its own work array; the compiled kernels and numpy's
        noise draws release the GIL, so the threads run in parallel. With
        ``block_rngs``, block ``k``'s noise is drawn from ``block_rngs(k)``
        inside the thread, just before it is used. Within a block,
        :data:`COMPUTE_BLOCK`-sample pieces run one after another. The
        kernels compute every sample on its own, so a sample's bytes depend
        neither on the thread count, nor on the piece size, nor on how a run
        is chunked.
        """
        n = len(noises)
        dtype = noises.dtype
        starts = list(range(0, n, SAMPLE_BLOCK))
        threads = max(1, min(self.threads, len(starts)))

        def run(part: list[int]) -> None:
            work = np.zeros((self._program.rows_total, min(COMPUTE_BLOCK, n)), dtype)
            for s in part:
                e = min(s + SAMPLE_BLOCK, n)
                if block_rngs is not None:
                    self.draw_noise(e - s, block_rngs(s // SAMPLE_BLOCK), dtype, out=noises[s:e])
                for cs in range(s, e, COMPUTE_BLOCK):
                    ce = min(cs + COMPUTE_BLOCK, e)
                    self._forward_piece(work, noises[cs:ce], images[cs:ce], latents[cs:ce])

        parts = [starts[i::threads] for i in range(threads)]
        if threads > 1:
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(run, parts))
        else:
            run(parts[0])

    def _empty(self, n: int, dtype: Any = np.float64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return (np.empty((n, *self.image_shape), dtype), np.empty((n, self._dz), dtype),
                np.empty((n, self._de), dtype))

    def forward(self, noises: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Images ``(N, C, H, W)`` and latents ``(N, Dz)`` made from ``noises`` ``(N, De)``.

        Computed in float32 when ``noises`` are float32 (so stored float32
        noise replays its stored samples byte for byte), else in float64.
        """
        noises = np.asarray(noises)
        dtype = np.float32 if noises.dtype == np.float32 else np.float64
        noises = np.ascontiguousarray(noises, dtype=dtype)
        n = len(noises)
        if noises.ndim != 2 or noises.shape[1] != self._de:
            raise ValueError(f"noises must be (N, {self._de}), got {noises.shape}")
        images, latents = np.empty((n, *self.image_shape), dtype), np.empty((n, self._dz), dtype)
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
    return Simulator.from_config(cfg).sample_seeded(cfg.noise_seed, 0, cfg.n, dtype=cfg.dtype)


# ----------------------------------------------------------------------------- disk


def _chunks(n: int, chunk: int) -> Iterator[tuple[int, int]]:
    for s in range(0, n, chunk):
        yield s, min(s + chunk, n)


#: Above this many bytes of output, ``hlvm simulate`` asks for ``--yes``.
SIZE_LIMIT = 64 * 2**30
#: Above this many graph nodes (building the graph alone takes minutes and GBs), ``hlvm simulate`` asks for ``--yes``.
NODE_LIMIT = 1_000_000


def _human(nbytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if nbytes < 1024 or unit == "PiB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class OutputSize:
    """What :func:`simulate_to_dir` writes for a config: arrays ``(n, C, H, W)``, ``(n, latent_dim)``, ``(n, noise_dim)``.

    ``exact`` is False for a grid hierarchy with extra parents sized before
    its graph is built: the dims are then those without extra parents, a
    lower bound.
    """

    n: int
    image_shape: tuple[int, int, int]
    latent_dim: int
    noise_dim: int
    nodes: int
    itemsize: int
    exact: bool = True

    @property
    def nbytes(self) -> int:
        c, h, w = self.image_shape
        return self.n * (c * h * w + self.latent_dim + self.noise_dim) * self.itemsize

    def describe(self) -> str:
        c, h, w = self.image_shape
        at_least = "" if self.exact else "at least "
        return (f"{self.n:,} samples of {c}x{h}x{w} images with {self.latent_dim:,} latent and {self.noise_dim:,} noise "
                f"dims from a graph of {self.nodes:,} nodes: {at_least}{_human(self.nbytes)}")

    def over_limits(self) -> list[str]:
        """Why this run is beyond :data:`SIZE_LIMIT` or :data:`NODE_LIMIT` (empty if it is not)."""
        out = []
        if self.nbytes > SIZE_LIMIT:
            out.append(f"{_human(self.nbytes)} of output is more than {_human(SIZE_LIMIT)}")
        if self.nodes > NODE_LIMIT:
            out.append(f"a graph of {self.nodes:,} nodes (more than {NODE_LIMIT:,}) takes minutes and GBs to build")
        return out


def output_size(cfg: SimulateConfig, graph: nx.DiGraph | None = None) -> OutputSize:
    """The size of ``simulate_to_dir(cfg)``'s output, from ``graph`` or, for a grid hierarchy, without building it."""
    itemsize = np.dtype(cfg.dtype).itemsize
    if graph is None and cfg.graph is None:
        g = cfg.grid
        b, depth = g.branching, g.depth
        dims = [g.root_dim + l * g.noise_dim for l in range(depth)]  # per latent level, without extra parents
        counts = [b ** (2 * l) for l in range(depth)]
        c = dims[-1] + g.obs_noise_dim
        side = b**depth
        latent = sum(k * d for k, d in zip(counts, dims))
        noise = g.root_dim + sum(counts[1:]) * g.noise_dim + side * side * g.obs_noise_dim
        return OutputSize(cfg.n, (c, side, side), latent, noise, sum(counts) + side * side, itemsize,
                          exact=g.extra_parent_prob == 0)
    graph = cfg.build_graph() if graph is None else graph
    c, h, w = graphs.image_shape(graph)
    latent = sum(graph.nodes[v]["dim"] for v in graph.nodes if graph.nodes[v]["kind"] == graphs.LATENT)
    noise = sum(graph.nodes[v]["noise_dim"] for v in graph.nodes)
    return OutputSize(cfg.n, (c, h, w), latent, noise, graph.number_of_nodes(), itemsize)


def check_free_space(out: str | os.PathLike[str], nbytes: int) -> None:
    """Raise :class:`ConfigError` if the filesystem of ``out`` (or of its nearest existing parent) has less than ``nbytes`` free."""
    import shutil

    where = Path(out)
    while not where.exists() and where != where.parent:
        where = where.parent
    free = shutil.disk_usage(where).free
    if nbytes > free:
        raise ConfigError(
            f"the output needs {_human(nbytes)} but {where} has {_human(free)} free; lower --n or choose another --out"
        )


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
    an error or Ctrl-C leaves nothing behind; a filesystem with less free space
    than the output needs is a :class:`ConfigError` before anything is
    written. Samples are streamed in chunks of
    ``chunk_blocks * SAMPLE_BLOCK``, so memory stays flat in ``n``; the bytes
    do not depend on ``chunk_blocks`` or ``threads``.
    """
    out = Path(out)
    graph = cfg.build_graph() if graph is None else graph
    check_free_space(out, output_size(cfg, graph).nbytes)  # memmap would fail with a bare OSError, or the disk fill up
    sim = Simulator.from_config(cfg, graph=graph, threads=threads)
    chunk = max(1, int(chunk_blocks)) * SAMPLE_BLOCK
    try:
        with output_lock(out, "simulate"):  # a second simulate into one --out is refused, not silently lost
            return _write_dir(cfg, sim, graph, out, overwrite, progress, chunk)
    except OSError as e:  # the disk filled, or a file-size limit, after the free-space check: nothing is left behind
        if e.errno not in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT) and "requested and" not in str(e):
            raise
        raise DataError(f"writing {out} failed: the disk is full or a file-size limit was hit "
                        f"({e.strerror or e}); nothing was written. Free space, lower --n or choose another --out") from None


def _write_dir(cfg: SimulateConfig, sim: Simulator, graph: nx.DiGraph, out: Path, overwrite: bool, progress: bool,
               chunk: int) -> Path:
    n, dtype = cfg.n, cfg.dtype
    c, h, w = sim.image_shape
    dz, de = sim.index.latent_dim, sim.index.noise_dim
    with atomic_dir(out, overwrite) as tmp:
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
                    part = sim.sample_seeded(cfg.noise_seed, s, e, dtype=dtype, out=tuple(b[: e - s] for b in buffers))
                    arrays = (("images", part.images), ("latents", part.latents), ("noises", part.noises))
                    for key, arr in arrays:
                        f = files[key]
                        f.seek(offsets[key] + s * arr[0].nbytes)
                        arr.tofile(f)
                    advance(e - s)
        finally:
            for f in files.values():
                f.close()
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
