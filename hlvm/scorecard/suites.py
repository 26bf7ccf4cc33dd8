"""The identifiability suites: named, versioned and frozen, so that two users scoring one encoder get the same numbers.

A :class:`Suite` fixes everything a score depends on except the encoder: the
generating process (a grid hierarchy and its mixing, drawn from
``data_seed``), the evaluation cells (mask ratio x masking unit x mask kind),
the held-out samples and masks of each *replicate* (drawn from the suite's
seed and the replicate's index), the training images the linear controls are
fitted on, and the probes (:func:`hlvm.evaluate.evaluate_encoder`'s, seeded by
each mask's seed). The replicates stand where seeds stand in a sweep: every
SE of a scorecard is over them (fresh held-out samples and masks; the
encoder itself is fixed).

``v1`` is the default study's grid (``studies/mask-sweep/config.json``): the
depth-3 binary hierarchy (8x8 images, 5 channels) with the default mixing,
ratios 0.1-0.9 x units 1, 2, random and hierarchy-aligned masks, 3
replicates of 1,000 held-out samples and 2 masks per kind, linear controls
fitted on 20,000 training images. Its ``quick`` tier is a smoke test of the
same process: 6 cells, 2 replicates of 300 samples, one mask each.

Changing a suite makes a new version: a suite's fields are never edited once
published; add ``v2`` beside it (old versions stay runnable).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from hlvm.errors import ConfigError

__all__ = ["Suite", "SUITES", "get_suite", "SUITE_SPAWN_KEY"]

#: Every draw of a suite (held-out samples, masks, training images) comes from ``SeedSequence([data_seed, seed, ...],
#: spawn_key=SUITE_SPAWN_KEY)``: apart from the sweep's and the simulator's own streams.
SUITE_SPAWN_KEY = (0x5C0E,)


@dataclass(frozen=True)
class Suite:
    """One frozen identifiability suite (module docstring)."""

    name: str
    graph: Mapping[str, Any]
    simulate: Mapping[str, Any] = field(default_factory=dict)
    data_seed: int = 0
    mask_ratios: tuple[float, ...] = (0.1, 0.25, 0.4, 0.5, 0.75, 0.9)
    mask_units: tuple[int, ...] = (1, 2)
    mask_kinds: tuple[str, ...] = ("random", "aligned")
    replicates: int = 3
    masks_per_kind: int = 2
    n_eval: int = 1000
    n_train: int = 20000
    description: str = ""

    def simulate_config(self, n: int = 1000) -> Any:
        """The suite's :class:`hlvm.simulate.SimulateConfig` (its generating process; ``n`` is only a default)."""
        from hlvm.simulate import SimulateConfig

        return SimulateConfig.from_dict({**self.simulate, "grid": dict(self.graph), "n": n, "seed": self.data_seed})

    def simulator(self) -> Any:
        """The suite's :class:`hlvm.simulate.Simulator`: train an encoder on its samples to score it fairly."""
        from hlvm.simulate import Simulator

        return Simulator.from_config(self.simulate_config())

    def rng(self, seed: int, *path: int) -> np.random.Generator:
        """The generator of one draw of the suite: ``path`` names it (replicate, purpose)."""
        return np.random.default_rng(np.random.SeedSequence([self.data_seed, int(seed), *path], spawn_key=SUITE_SPAWN_KEY))

    def cells(self) -> list[tuple[str, float, int]]:
        """``(mask_kind, mask_ratio, mask_unit)`` of every feasible cell, in a fixed order."""
        from hlvm.masks import num_masked

        side = int(self.graph.get("branching", 2)) ** int(self.graph.get("depth", 3))
        out = []
        for kind in self.mask_kinds:
            for unit in self.mask_units:
                for ratio in self.mask_ratios:
                    try:
                        num_masked((side // unit) ** 2, ratio)
                    except Exception:  # noqa: BLE001 - an infeasible cell is left out, as a sweep skips it
                        continue
                    out.append((kind, float(ratio), int(unit)))
        return out

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("mask_ratios", "mask_units", "mask_kinds"):
            d[k] = list(d[k])
        d["graph"], d["simulate"] = dict(self.graph), dict(self.simulate)
        return d

    def config_hash(self) -> str:
        """SHA-256 (first 16 hex digits) of the suite's fields: two scorecards of one hash ran the same suite."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]

    def quick(self) -> Suite:
        """The smoke tier: three ratios at the largest unit, both kinds (6 cells), 2 replicates, 300 samples, 1 mask each.

        Two replicates leave ``t`` at 12.7: the tier checks that an encoder
        runs and what its numbers look like; it decides little.
        """
        return replace(self, name=f"{self.name}/quick", mask_ratios=(0.25, 0.5, 0.75), mask_units=(max(self.mask_units),),
                       replicates=2, masks_per_kind=1, n_eval=300, n_train=2000)


SUITES: dict[str, Suite] = {
    "v1": Suite(
        name="v1",
        graph={"depth": 3, "branching": 2},
        description="the default study's grid: depth-3 binary hierarchy, default mixing, ratios 0.1-0.9 x units 1, 2, "
        "random and aligned masks, 3 replicates of 1,000 held-out samples",
    ),
}


def get_suite(name: str, *, quick: bool = False) -> Suite:
    """The suite ``name`` (:data:`SUITES`), or its quick tier; :class:`ConfigError` for an unknown name."""
    if name not in SUITES:
        raise ConfigError(f"unknown suite {name!r}; choose from {', '.join(sorted(SUITES))}")
    suite = SUITES[name]
    return suite.quick() if quick else suite
