"""Device choice, the process group under torchrun, and each rank's mask generator."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from hlvm.errors import ConfigError


# ----------------------------------------------------------------------------- distributed


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(device: torch.device) -> _Dist:
    """Join the process group ``torchrun`` describes in the environment (if any)."""
    if dist.is_available() and dist.is_initialized():
        return _Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)), False)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend)
    return _Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)), True)


def mask_generator(seed: int, rank: int = 0) -> torch.Generator:
    """The CPU generator of a rank's random masks: a distinct, reproducible stream per (seed, rank)."""
    entropy = np.random.SeedSequence([seed, rank, 2]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator(device="cpu").manual_seed(int(entropy) & ((1 << 63) - 1))


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    """The torch device ``"auto"``, ``"cpu"`` or ``"cuda"`` names; :class:`ConfigError` for CUDA without CUDA."""
    if name not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"device must be 'auto', 'cpu' or 'cuda', got {name!r}")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError("device 'cuda' asked for but CUDA is not available")
    return torch.device("cuda", local_rank)
