"""The sampler: the columns of a dataset, the compiled program of the graph's maps, and :class:`Simulator`."""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import networkx as nx
import numpy as np

from hlvm import graphs
from hlvm._kernels import rows_from_samples, run_program, samples_from_rows
from hlvm.errors import ConfigError, DataError
from hlvm.mixing import NOISE_KINDS, Mixing, build_mixing, unit_noise

from .config import COMPUTE_BLOCK, SAMPLE_BLOCK, SimulateConfig, _is_int, block_generators, block_rng, mixing_rng


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
