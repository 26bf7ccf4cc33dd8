"""The learning curve that chose the study's regime: probe top-1 of the ratio-0.75 run against training steps.

    python studies/fashion-mnist-mask/regime.py [--config regime.json] [--out results/learning_curve] [--threads 1]

Fashion-MNIST's training set, one run per candidate of ``regime.json``; hlvm/realmask/curve.py says how.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=HERE / "regime.json")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "learning_curve")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", default=None, help="comma-separated candidate names")
    ap.add_argument("--no-pixels", action="store_true", help="reuse the pixel baseline already in OUT.json")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    from hlvm.realmask import data
    from hlvm.realmask.curve import learning_curve

    torch.set_num_threads(args.threads)
    study = json.loads((HERE / "config.json").read_text())
    ds = study["dataset"]
    splits = data.load("fashion-mnist", source=Path(ds["source"]), package=ds["debian_package"], in_chans=1,
                       size=28, test_fraction=0.2, seed=0)
    learning_curve(json.loads(args.config.read_text()), study["eval"], splits, args.out, threads=args.threads,
                   only=args.only.split(",") if args.only else None, pixels=not args.no_pixels)
    return 0


if __name__ == "__main__":
    sys.exit(main())
