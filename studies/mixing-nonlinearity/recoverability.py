"""The check that picked this study's mixings, run before any MAE was trained: writes recoverability.json.

For every candidate mixing of the depth-3 hierarchy (data_seed 0, as the study's sweeps draw it), the
existing recoverability check (hlvm.recoverability: each ancestor's noise from one pixel, best of linear and
kernel probes, smallest over 5 pixels, bar 0.9) and how much of the hierarchy a linear probe of the whole
image reads. Run: python studies/mixing-nonlinearity/recoverability.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from hlvm.graphs import GridSpec
from hlvm.mixing import MixingSpec
from hlvm.recoverability import recoverability
from hlvm.simulate import SimulateConfig, Simulator

HERE = Path(__file__).resolve().parent
#: Candidates in order of nonlinearity (leaky-ReLU slope; 1 = linear), all else the default mixing.
CANDIDATES = {
    "linear": {"kind": "linear"},
    "slope0.5": {},
    "slope0.4": {"slope": 0.4},
    "slope0.35": {"slope": 0.35},
    "slope0.3": {"slope": 0.3},
    "slope0.25": {"slope": 0.25},
    "slope0.2": {"slope": 0.2},
    "slope0.1": {"slope": 0.1},
}


def main() -> int:
    out = {}
    print(f"{'mixing':<10} {'one pixel (min)':>15} {'recoverable':>11} {'linear, image':>13} {'per level (linear)':>24}")
    for name, mixing in CANDIDATES.items():
        sim = Simulator.from_config(SimulateConfig(grid=GridSpec(depth=3), mixing=MixingSpec(**mixing), seed=0))
        r = recoverability(sim, n=2000, seed=0)
        out[name] = {"mixing": mixing, **r.to_dict()}
        levels = " ".join(f"{v:.3f}" for v in r.by_level("linear").values())
        print(f"{name:<10} {r.worst_one_pixel:>15.3f} {str(r.recoverable):>11} {r.linear_readability():>13.3f} {levels:>24}")
    (HERE / "recoverability.json").write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
