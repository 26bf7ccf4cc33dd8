"""The simulate config (:class:`SimulateConfig`), the block sizes that fix the bytes, and the seeding of every stream."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

import networkx as nx
import numpy as np

from hlvm import graphs
from hlvm.errors import ConfigError, check_keys
from hlvm.graphs import GridSpec
from hlvm.mixing import NOISE_KINDS, MixingSpec


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
