"""What the controls (pixels, untrained, oracle) add to a sweep, beside its training.

Every point of a sweep records its wall and CPU seconds in ``points.jsonl``
(trained points: simulate-free training plus evaluation; control points:
evaluation alone). This bench either runs a small sweep with the controls on
(default: depth-3 hierarchy, two ratios at unit 1, one seed, the wide arm on
random training masks and the dim_c arm on aligned ones, 500 steps) or reads
an existing sweep folder (``--results DIR``, e.g. the default study's), and
prints the seconds per kind of point and the controls' share of the total.

Run: ``python bench/controls.py [--results DIR] [--steps N] [--workers W]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path


def summarise(folder: Path) -> dict[str, dict[str, float]]:
    """CPU and wall seconds per encoder of the committed points of a sweep folder."""
    out: dict[str, dict[str, float]] = defaultdict(lambda: {"points": 0, "cpu": 0.0, "wall": 0.0})
    for line in (folder / "points.jsonl").read_text().splitlines():
        rec = json.loads(line)
        enc = rec["point"].get("encoder", "trained")
        out[enc]["points"] += 1
        out[enc]["cpu"] += rec.get("cpu_seconds", 0.0)
        out[enc]["wall"] += rec.get("seconds", 0.0)
    return dict(out)


def run_small(root: Path, steps: int, workers: int) -> Path:
    from hlvm.sweep import SweepConfig, run_sweep

    cfg = SweepConfig(
        mask_ratios=(0.25, 0.4), mask_units=(1,), seeds=(0,), train_mask_kinds=("random", "aligned"),
        bottlenecks=(None, "dim_c"), mask_kinds=("random", "aligned"), graph={"depth": 3}, n_train=20000,
        n_eval=1000, model="mlp", model_options={"mlp_hidden": [256, 256], "mlp_decoder_hidden": [256, 256]},
        steps=steps, batch=256, blr=3e-3, eval_masks=2, predict_masks=200, keep_checkpoints=False,
    )
    out = root / "sweep"
    run_sweep(cfg, out, workers=workers, threads=1, progress=False)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--results", type=Path, default=None, help="an existing sweep folder to summarise instead of running one")
    p.add_argument("--steps", type=int, default=500, help="training steps per point of the small sweep")
    p.add_argument("--workers", type=int, default=1)
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        if args.results is not None:
            if not (args.results / "points.jsonl").is_file():
                print(f"error: {args.results} holds no points.jsonl (not a sweep folder)", file=sys.stderr)
                return 2
            folder = args.results
            where = str(folder)
        else:
            folder = run_small(Path(tmp), args.steps, args.workers)
            where = f"a small sweep ({args.steps} steps a point), run now in {time.perf_counter() - t0:.0f} s"
        s = summarise(folder)
    total = sum(v["cpu"] for v in s.values())
    ctrl = sum(v["cpu"] for k, v in s.items() if k != "trained")
    print(f"controls' cost in {where}")
    print(f"{'encoder':<10} {'points':>6} {'CPU s':>9} {'CPU s/point':>12} {'wall s':>9} {'share of CPU':>13}")
    for enc in ("trained", "pixels", "untrained", "oracle"):
        if enc in s:
            v = s[enc]
            print(f"{enc:<10} {v['points']:>6.0f} {v['cpu']:>9.1f} {v['cpu'] / v['points']:>12.2f} {v['wall']:>9.1f} "
                  f"{v['cpu'] / total:>12.1%}")
    trained = s.get("trained", {"cpu": 0.0})["cpu"]
    print(f"controls add {ctrl:.1f} CPU s to {trained:.1f} CPU s of trained points: {ctrl / max(trained, 1e-9):.1%} "
          f"(baseline: the trained points of the same sweep)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
