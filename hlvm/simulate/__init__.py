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

The package: :mod:`~hlvm.simulate.config` (the config, block sizes, seeding),
:mod:`~hlvm.simulate.sampler` (:class:`Simulator`, :class:`Dataset`) and
:mod:`~hlvm.simulate.store` (the folder format, sizes, :func:`simulate_to_dir`,
:func:`load_dataset`); ``from hlvm.simulate import ...`` gives every public name.
"""

from __future__ import annotations

from .config import (
    CHUNK_BLOCKS,
    COMPUTE_BLOCK,
    DATA_FILES,
    DTYPES,
    SAMPLE_BLOCK,
    SAVED_KEYS,
    SimulateConfig,
    block_generators,
    block_rng,
    mixing_rng,
    noise_generator,
)
from .sampler import ColumnIndex, Dataset, Simulator, simulate
from .store import NODE_LIMIT, SIZE_LIMIT, OutputSize, check_free_space, load_dataset, output_size, simulate_to_dir

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
    "check_free_space",
    "block_rng",
    "block_generators",
    "mixing_rng",
    "noise_generator",
    "COMPUTE_BLOCK",
    "CHUNK_BLOCKS",
    "DTYPES",
    "SAVED_KEYS",
]
