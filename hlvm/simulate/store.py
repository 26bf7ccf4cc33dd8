"""The on-disk dataset: its size before it is written, :func:`simulate_to_dir` and :func:`load_dataset`."""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np

from hlvm import graphs
from hlvm.errors import ConfigError, DataError, HlvmError
from hlvm.io import atomic_dir, output_lock, provenance, write_json

from .config import CHUNK_BLOCKS, DATA_FILES, SAMPLE_BLOCK, SimulateConfig
from .sampler import ColumnIndex, Dataset, Simulator


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
