"""Is a generating process recoverable, and how linear is it? Checks made before any MAE is trained.

Assumption 1 makes every pixel an invertible function of its own noise and
its ancestors' (docs/theory.md, section 1). With finite samples that is only
useful if a probe can read the ancestors' noise back: steep leaky-ReLU slopes
and spread singular values compound down the hierarchy and squeeze a high
node's noise into a sliver of a pixel's range (:mod:`hlvm.mixing`).
:func:`recoverability` measures, from simulated samples:

- ``from_one_pixel``: per checked pixel and per node of ``An*(pixel)``, the
  held-out R^2 (the larger of the linear and kernel probes,
  :func:`hlvm.metrics.r2_best`; the smallest over the node's noise dims) of
  the node's noise from that one pixel's value; a process is *recoverable*
  when the smallest of these is at least ``threshold`` (0.9, the bar
  ``tests/test_mixing.py`` holds the default mixing to);
- ``linear_from_image``: per latent node, the held-out R^2 of a *linear*
  probe (ridge, :func:`hlvm.metrics.r2_linear`) of its noise from every
  pixel of the image, and ``kernel_from_image`` the same from the kernel
  probe: how much of the hierarchy a linear code of the pixels can read at
  all. 1 for a linear mixing; the further below 1, the more the mixing hides
  from linear codes (PCA, the linear MAE) what a nonlinear one could recover.

Both use held-out samples and the probes' seeded splits; the same
configuration and seed give the same numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
import numpy as np

from hlvm import graphs
from hlvm.errors import ConfigError
from hlvm.metrics import r2_best, r2_kernel, r2_linear

__all__ = ["Recoverability", "recoverability", "THRESHOLD"]

#: The smallest R^2 from one pixel that counts a process as recoverable.
THRESHOLD = 0.9


@dataclass(frozen=True)
class Recoverability:
    """What :func:`recoverability` measured (module docstring); every R^2 held out."""

    from_one_pixel: dict[str, dict[str, float]]  # pixel -> {node of An*(pixel): min R^2 over its noise dims}
    linear_from_image: dict[str, float]  # latent node -> mean linear R^2 of its noise from every pixel
    kernel_from_image: dict[str, float]  # latent node -> mean kernel R^2 of its noise from every pixel
    levels: dict[str, int] = field(default_factory=dict)
    threshold: float = THRESHOLD

    @property
    def worst_one_pixel(self) -> float:
        return min(min(v.values()) for v in self.from_one_pixel.values())

    @property
    def recoverable(self) -> bool:
        return self.worst_one_pixel >= self.threshold

    def linear_readability(self) -> float:
        """Mean over latent nodes of the linear R^2 of their noise from the whole image."""
        return float(np.mean(list(self.linear_from_image.values())))

    def by_level(self, which: str = "linear") -> dict[int, float]:
        """Mean R^2 per latent level, ``which`` ``"linear"`` or ``"kernel"`` (from the whole image)."""
        src = self.linear_from_image if which == "linear" else self.kernel_from_image
        out: dict[int, list[float]] = {}
        for v, r in src.items():
            out.setdefault(self.levels[v], []).append(r)
        return {lvl: float(np.mean(x)) for lvl, x in sorted(out.items())}

    def to_dict(self) -> dict[str, Any]:
        return {
            "recoverable": self.recoverable,
            "worst_one_pixel": self.worst_one_pixel,
            "threshold": self.threshold,
            "linear_readability": self.linear_readability(),
            "linear_by_level": {str(k): v for k, v in self.by_level("linear").items()},
            "kernel_by_level": {str(k): v for k, v in self.by_level("kernel").items()},
            "from_one_pixel": self.from_one_pixel,
            "linear_from_image": self.linear_from_image,
            "kernel_from_image": self.kernel_from_image,
        }


def _corner_pixels(graph: Any) -> list[str]:
    """The four corner pixels and one near the centre: far apart in the hierarchy."""
    _, h, w = graphs.image_shape(graph)
    spots = [(0, 0), (0, w - 1), (h - 1, 0), (h - 1, w - 1), (h // 2, w // 2 - 1)]
    return [graphs.observed_id(r, c) for r, c in dict.fromkeys(spots)]


def recoverability(
    sim: Any,
    *,
    n: int = 2000,
    seed: int = 0,
    pixels: Sequence[str] | None = None,
    threshold: float = THRESHOLD,
) -> Recoverability:
    """Measure a :class:`hlvm.simulate.Simulator`'s recoverability on ``n`` fresh samples (module docstring).

    ``pixels`` default to the four corners and one pixel near the centre.
    Samples and probe splits are seeded by ``seed``.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 40:
        raise ConfigError(f"n must be an integer >= 40 (samples for held-out probes), got {n!r}")
    graph = sim.graph
    data = sim.sample(n, np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0x5EC0,))))
    pixels = list(pixels) if pixels is not None else _corner_pixels(graph)
    one: dict[str, dict[str, float]] = {}
    for i, px in enumerate(pixels):
        if px not in graph or graph.nodes[px].get("kind") != "observed":
            raise ConfigError(f"{px!r} is not a pixel of this graph")
        x = np.asarray(data.pixel(px), dtype=np.float64).reshape(n, -1)  # (N, C)
        nodes = sorted(nx.ancestors(graph, px)) + [px]
        cols, blocks, start = {}, [], 0
        for v in nodes:
            y = np.asarray(data.noise(v), dtype=np.float64).reshape(n, -1)
            cols[v] = (start, start + y.shape[1])
            start += y.shape[1]
            blocks.append(y)
        r2 = r2_best(x, np.concatenate(blocks, axis=1), random_state=seed + i)
        one[px] = {v: float(r2[a:b].min()) for v, (a, b) in cols.items()}
    latents = graphs.latent_nodes(graph)
    images = np.asarray(data.images, dtype=np.float64).reshape(n, -1)  # (N, C*H*W)
    cols, blocks, start = {}, [], 0
    for v in latents:
        y = np.asarray(data.noise(v), dtype=np.float64).reshape(n, -1)
        cols[v] = (start, start + y.shape[1])
        start += y.shape[1]
        blocks.append(y)
    targets = np.concatenate(blocks, axis=1)
    lin = r2_linear(images, targets, random_state=seed)
    ker = r2_kernel(images, targets, random_state=seed)
    return Recoverability(
        from_one_pixel=one,
        linear_from_image={v: float(lin[a:b].mean()) for v, (a, b) in cols.items()},
        kernel_from_image={v: float(ker[a:b].mean()) for v, (a, b) in cols.items()},
        levels={v: int(graph.nodes[v]["level"]) for v in latents},
        threshold=threshold,
    )
