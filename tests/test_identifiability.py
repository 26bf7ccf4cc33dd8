"""The identifiability check (docs/theory.md Theorem 2), trained for real: minutes of CPU, so marked slow.

Depth-3 grid hierarchy, two fixed masks (a whole quadrant: c = the root; the
quadrant less one pixel: c = that pixel's parent), an MLP MAE with a
``dim_c``-wide bottleneck trained on fresh samples with that mask, once per
seed (3 seeds, the replicates); by ``hlvm.rules.theorem2``, the rule every
report uses, its code of held-out samples must recover the noises of CA and
hold nothing of the visible side's private noise (the bounds ``R^2(CA) - t SE
>= 0.9`` and ``leak + t SE <= 0.1``), and the masked side's floor must stay
under ``hlvm.rules.FLOOR_MAX``. The logic lives in ``bench/identifiability.py``,
which prints the same numbers.
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
    from hlvm.rules import FLOOR_MAX

    bench = _bench()
    results = [bench.check(name, arch="mlp", steps=1500, seed=s, root=tmp_path / str(s), progress=False) for s in (0, 1, 2)]
    for result in results:
        assert result["c"] == c and result["code_dim"] == result["dim_c"]
    v = bench.verdict(results)
    assert v["verdict"] == "hold", v
    assert v["floor"].mean < FLOOR_MAX, v
