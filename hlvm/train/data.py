"""What a run trains on: a simulated folder, online samples or an image folder, and the batch stream."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from hlvm.errors import DataError, HlvmError
from hlvm.io import read_json



# ----------------------------------------------------------------------------- data


@dataclass
class _Source:
    """Where images come from: an array (memory-mapped), a simulator, or a torch Dataset."""

    kind: Literal["array", "online", "dataset"]
    shape: tuple[int, int, int] | None  # (C, H, W); None until the model config fixes it (image folders)
    images: Any = None  # (N, C, H, W) array-like, kind "array"
    simulator: Any = None  # kind "online"
    dataset: Any = None  # kind "dataset"
    root: str | None = None  # image folder root
    graph: Any = None  # the generating graph of simulated data (its pixel ids name mask specs)

    def __len__(self) -> int:
        if self.kind == "array":
            return int(self.images.shape[0])
        if self.kind == "dataset":
            return len(self.dataset)
        raise TypeError("online data has no length")


def _simulator_from_spec(spec: str) -> Any:
    from hlvm import simulate

    if spec == "online":
        return simulate.Simulator.from_config(simulate.SimulateConfig())
    raw = read_json(spec.split(":", 1)[1], "simulate config", DataError)
    return simulate.Simulator.from_config(simulate.SimulateConfig.from_dict(raw))


def absolute_data(spec: str) -> str:
    """``spec`` with its path made absolute (``online:PATH``, ``imagefolder:PATH``, a folder), so a run can be opened
    from any working directory; ``online`` and names of built-in data are unchanged."""
    for prefix in ("online:", "imagefolder:"):
        if spec.startswith(prefix):
            return prefix + os.path.abspath(spec[len(prefix):])
    if spec == "online" or not Path(spec).exists():
        return spec
    return os.path.abspath(spec)


def open_data(spec: str) -> _Source:
    """Open the data a spec names (module docstring); bad specs raise :class:`DataError`.

    Image folders are opened later (:func:`_open_imagefolder`), once the model
    config fixes the image size.
    """
    if spec == "online" or spec.startswith("online:"):
        sim = _simulator_from_spec(spec)
        shape = tuple(int(s) for s in sim.image_shape)  # (C, H, W)
        return _Source("online", shape, simulator=sim, graph=sim.graph)  # type: ignore[arg-type]
    if spec.startswith("imagefolder:"):
        root = spec.split(":", 1)[1]
        if not Path(root).is_dir():
            raise DataError(f"image folder not found: {root}")
        return _Source("dataset", None, root=root)
    path = Path(spec)
    if not path.exists():
        raise DataError(f"data folder not found: {spec} (give a 'hlvm simulate' folder, 'online[:config.json]' or 'imagefolder:PATH')")
    if not path.is_dir():
        raise DataError(f"data {spec} is not a folder")
    from hlvm.simulate import load_dataset

    try:
        ds = load_dataset(path, mmap=True)
    except HlvmError:
        raise
    except (OSError, ValueError, KeyError) as e:
        raise DataError(f"cannot read simulated data in {path}: {e}") from None
    images = ds.images
    if getattr(images, "ndim", 0) != 4:
        raise DataError(f"images in {path} must be (N, C, H, W), got shape {tuple(getattr(images, 'shape', ()))}")
    n, c, h, w = (int(s) for s in images.shape)
    if n == 0 or c == 0 or h == 0 or w == 0:
        raise DataError(f"images in {path} are empty: shape {tuple(images.shape)}")
    return _Source("array", (c, h, w), images=images, graph=getattr(ds, "graph", None))


def fixed_training_mask(spec: Mapping[str, Any], src: _Source, mcfg: Any) -> Any:
    """The :class:`hlvm.masks.Mask` a ``TrainConfig.mask`` spec names, checked against the model.

    Node ids in a ``masked`` spec are the data's pixel ids (the simulated
    graph's, else ``x_{row}_{col}``). Raises :class:`MaskError` for a spec the
    image or the model's token grid cannot take.
    """
    from hlvm import graphs
    from hlvm.masks import mask_from_spec

    h, w = mcfg.img_hw
    if src.graph is not None:
        ids, latents = graphs.id_grid(src.graph), graphs.latent_nodes(src.graph)
    else:
        ids = np.array([[graphs.observed_id(r, c) for c in range(w)] for r in range(h)], dtype=object)
        latents = []
    mask = mask_from_spec(spec, ids, latents)
    mask.tokens(mcfg.patch_size)  # raises MaskError if a token would be partly masked
    return mask


def _open_imagefolder(src: _Source, img_size: int, in_chans: int) -> None:
    try:
        from hlvm.data import pretrain_dataset
    except ImportError:
        raise DataError("imagefolder data needs hlvm.data.pretrain_dataset, which is not available in this install") from None
    src.dataset = pretrain_dataset(src.root, img_size, in_chans)
    src.shape = (in_chans, img_size, img_size)


class DataStream:
    """One process's endless stream of ``(B, C, H, W)`` float32 batches, resumable exactly.

    Finite data (folders) is read in epochs: epoch ``e`` is the shuffled,
    rank-sharded order of ``DistributedSampler(seed=seed).set_epoch(e)``,
    cut into full batches; the state is ``(epoch, batch position)``. Online
    data draws batch ``k`` of rank ``r`` from the simulator with a generator
    seeded by ``SeedSequence([seed, r, 1, k])``, so the stream is a function
    of the batch count alone (the state), whatever the simulator does with
    its generator (``Generator.spawn``'s counter, for one, is not part of
    ``bit_generator.state``).
    """

    def __init__(self, src: _Source, batch_size: int, *, rank: int, world: int, seed: int, num_workers: int = 0):
        self.src, self.batch_size, self.rank, self.world, self.seed = src, batch_size, rank, world, seed
        self.num_workers = num_workers
        self.epoch, self.pos = 0, 0
        self.drawn = 0  # online batches drawn so far
        self._iter: Iterator[torch.Tensor] | None = None
        if src.kind != "online" and self.batches_per_epoch() == 0:
            raise DataError(
                f"{len(src)} images cannot fill one batch of {batch_size} on each of {world} process(es); "
                "lower --batch-size or simulate more images"
            )

    def batches_per_epoch(self) -> int:
        # DistributedSampler(drop_last=True) gives floor(N / world) indices per rank.
        return (len(self.src) // self.world) // self.batch_size

    def _epoch_batches(self, epoch: int) -> list[list[int]]:
        from torch.utils.data import DistributedSampler

        sampler = DistributedSampler(
            range(len(self.src)), num_replicas=self.world, rank=self.rank, shuffle=True, seed=self.seed, drop_last=True
        )
        sampler.set_epoch(epoch)
        idx = list(sampler)
        b = self.batch_size
        return [idx[i * b : (i + 1) * b] for i in range(len(idx) // b)]

    def _finite(self) -> Iterator[torch.Tensor]:
        while True:
            batches = self._epoch_batches(self.epoch)[self.pos :]
            if self.src.kind == "array":
                for ids in batches:
                    x = np.asarray(self.src.images[np.asarray(ids)], dtype=np.float32)  # (B, C, H, W)
                    self.pos += 1
                    yield torch.from_numpy(x)
            else:
                from torch.utils.data import DataLoader

                loader = DataLoader(
                    self.src.dataset,
                    batch_sampler=batches,
                    num_workers=self.num_workers,
                    pin_memory=torch.cuda.is_available(),
                    persistent_workers=False,
                )
                for x, _ in loader:
                    self.pos += 1
                    yield x.float()
            self.epoch, self.pos = self.epoch + 1, 0

    def __iter__(self) -> DataStream:
        return self

    def __next__(self) -> torch.Tensor:
        if self.src.kind == "online":
            # Distinct, reproducible streams per rank and batch: SeedSequence entropy (seed, rank, purpose, k).
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, self.rank, 1, self.drawn]))
            ds = self.src.simulator.sample(self.batch_size, rng)
            self.drawn += 1
            return torch.from_numpy(np.asarray(ds.images, dtype=np.float32))  # (B, C, H, W)
        if self._iter is None:
            self._iter = self._finite()
        return next(self._iter)

    def state_dict(self) -> dict[str, Any]:
        epoch, pos = self.epoch, self.pos
        if self.src.kind != "online" and pos == self.batches_per_epoch():
            epoch, pos = epoch + 1, 0  # an epoch just ended: the same place, said canonically
        return {"epoch": epoch, "pos": pos, "drawn": self.drawn}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.epoch, self.pos, self.drawn = int(state["epoch"]), int(state["pos"]), int(state["drawn"])
        self._iter = None
