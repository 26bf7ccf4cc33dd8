"""The convergence protocol's rule on the Fashion-MNIST MAE: is 2,000 steps its budget?

Reads the 2,000-step run (``results/``) and its doubling (``results-4000/``), both from
``hlvm realmask`` with the same held-out images and masks, takes each length's mean final
held-out loss over seeds and applies ``hlvm.rules.budget`` (L(2S) > 0.98 L(S)); prints the
losses, the gain and the budget, and the probe's top-1 per seed at both lengths, and writes
``results-4000/budget.json``.

    python studies/fashion-mnist-mask/budget.py
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from hlvm.rules import CONVERGED_GAIN, budget

HERE = Path(__file__).resolve().parent
FOLDERS = {2000: HERE / "results", 4000: HERE / "results-4000"}


def runs(folder: Path) -> dict[int, dict]:
    res = json.loads((folder / "results.json").read_text())
    return {r["seed"]: r for r in res["runs"] if r["kind"] == "run"}


def main() -> int:
    missing = [str(f) for f in FOLDERS.values() if not (f / "results.json").is_file()]
    if missing:
        print(f"error: no results.json in {', '.join(missing)}", file=sys.stderr)
        return 2
    by = {s: runs(f) for s, f in FOLDERS.items()}
    seeds = sorted(set.intersection(*(set(r) for r in by.values())))
    loss = {s: statistics.fmean(by[s][k]["final_heldout_loss"] for k in seeds) for s in by}
    top1 = {s: {k: by[s][k]["probe_top1_mean"] for k in seeds} for s in by}
    gain = 1.0 - loss[4000] / loss[2000]
    found = budget(loss)
    for s in sorted(by):
        print(f"{s:5d} steps: mean final held-out loss {loss[s]:.4f} over seeds {seeds}; probe top-1 "
              + ", ".join(f"{100 * top1[s][k]:.2f}" for k in seeds))
    print(f"the doubling 2000 -> 4000 gains {100 * gain:.1f} % (rule: a budget where it gains less than "
          f"{100 * CONVERGED_GAIN:.0f} %): budget {found if found is not None else 'not found (more than 4000 steps)'}")
    out = {"seeds": seeds, "heldout_loss": loss, "gain": gain, "budget": found, "top1": top1}
    (FOLDERS[4000] / "budget.json").write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
