"""Fashion-MNIST mask study: Kong et al.'s Table 1 and Figure 5 trends at CPU scale, one command.

    python studies/fashion-mnist-mask/run.py --out runs/fashion-mnist-mask            # CPU, all cores
    python studies/fashion-mnist-mask/run.py --out runs/fashion-mnist-mask --resume   # continue a stopped study
    python studies/fashion-mnist-mask/run.py --out runs/fashion-mnist-mask --device cuda
    python studies/fashion-mnist-mask/run.py --out runs/fm --workers 1 --threads 1   # one core only

Trains one small ViT MAE per (mask ratio or masking unit, seed) on the full
Fashion-MNIST training set (installing Debian's ``dataset-fashion-mnist``
with apt-get when it is missing), measures each on the 10,000 test images
(linear probe on mean-pooled and cls features, Figure 5's MSE / PSNR / SSIM /
FSIM with and without masking, effective rank, attention maps), beside the
raw-pixel and untrained-encoder controls, and writes ``results.json``,
``report.md`` and the figures into ``--out``. Every piece of work is
committed as it finishes: ``--resume`` continues a killed or interrupted
study and redoes nothing that finished (hlvm/realmask/runner.py).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--out", type=Path, required=True, help="output folder")
    ap.add_argument("--config", type=Path, default=HERE / "config.json", help="study config (default: beside this script)")
    ap.add_argument("--data", default="fashion-mnist",
                    help="'fashion-mnist' (Debian's idx files, installed if missing) or 'imagefolder:PATH'")
    ap.add_argument("--resume", action="store_true", help="continue the study in --out (same config and data)")
    ap.add_argument("--overwrite", action="store_true", help="delete --out's study and start again")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"), help="where to train (default cpu)")
    ap.add_argument("--workers", type=int, default=None,
                    help="items done at once, each in its own process (default: one per core on cpu, 1 on cuda)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads per worker (default: the cores divided among the workers)")
    ap.add_argument("--no-install", action="store_true", help="never run apt-get; a missing dataset is an error")
    ap.add_argument("--no-progress", action="store_true", help="log lines instead of a progress bar")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    cores = os.cpu_count() or 1
    if args.workers is None:
        args.workers = 1 if args.device == "cuda" else cores
    if args.threads is None:
        args.threads = max(1, cores // args.workers)
    for name in ("workers", "threads"):
        if getattr(args, name) < 1:
            print(f"error: --{name} must be >= 1, got {getattr(args, name)}", file=sys.stderr)
            return 2
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import signal

    import torch

    from hlvm.errors import HlvmError

    torch.set_num_threads(args.threads)

    def term(signum, frame):  # noqa: ANN001
        raise KeyboardInterrupt  # SIGTERM stops the study as Ctrl-C does: finished work kept, training checkpointed

    old = signal.signal(signal.SIGTERM, term)
    try:
        return _run(args)
    except HlvmError as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted: finished work is kept in {args.out}; run the same command with --resume to continue",
              file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, old)


def _run(args: argparse.Namespace) -> int:
    from hlvm.realmask import data as fdata
    from hlvm.realmask import runner
    from hlvm.realmask.report import write_report
    from hlvm.train import pick_device

    cfg = runner.load_config(args.config)
    device = pick_device(args.device)
    ds = cfg["dataset"]
    study = {"config": cfg, "data": args.data}
    # Every check that needs no data comes first; nothing is written or deleted until the data have loaded.
    runner.prepare_out(args.out, study, resume=args.resume, overwrite=args.overwrite)
    splits = fdata.load(args.data, source=Path(ds["source"]), package=ds["debian_package"],
                        in_chans=cfg["model"]["in_chans"], size=ds.get("source_size", 28),
                        test_fraction=ds.get("test_fraction", 0.2), seed=ds.get("split_seed", 0),
                        install=not args.no_install)
    study["data_counts"] = {"train": len(splits.train), "test": len(splits.test)}
    runner.open_out(args.out, study, overwrite=args.overwrite)
    n = len(runner.items(cfg))
    print(f"{splits.source}: {len(splits.train)} training and {len(splits.test)} test images; {n} items into "
          f"{args.out} on {device}, {args.workers} worker(s) x {args.threads} thread(s)", flush=True)
    results = runner.run_study(cfg, splits, args.out, device=device, study=study, workers=args.workers,
                               progress=not args.no_progress)
    write_report(results, args.out)
    print(f"report: {args.out / 'report.md'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
