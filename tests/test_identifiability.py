"""The identifiability check (docs/theory.md Theorem 2), trained for real: minutes of CPU, so marked slow.

Depth-3 grid hierarchy, two fixed masks (a whole quadrant: c = the root; the
quadrant less one pixel: c = that pixel's parent), an MLP MAE with a
``dim_c``-wide bottleneck trained on fresh samples with that mask; its code
of held-out samples must recover the noises of CA (R^2 > 0.9) and hold
nothing of the noises private to either side (R^2 < 0.1). The logic lives in
``bench/identifiability.py``, which prints the same numbers.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

_BENCH = Path(__file__).resolve().parents[1] / "bench" / "identifiability.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_identifiability", _BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name, c", [("quadrant", ["z_0_0_0"]), ("quadrant_less_one", ["z_2_1_1"])])
def test_bottleneck_mlp_mae_recovers_exactly_the_shared_noise(name, c, tmp_path):
    result = _bench().check(name, arch="mlp", steps=1500, root=tmp_path, progress=False)
    assert result["c"] == c and result["code_dim"] == result["dim_c"]
    groups = result["groups"]
    assert groups["CA"]["r2_min"] > 0.9, groups["CA"]
    for private in ("s_m", "s_mc"):
        assert groups[private]["r2_mean"] < 0.1 and groups[private]["r2_max"] < 0.1, groups[private]
