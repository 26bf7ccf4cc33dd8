"""The learning curve that chose the study's regime: probe top-1 of the ratio-0.75 run against training steps.

    python studies/fashion-mnist-mask/regime.py [--config regime.json] [--out results/learning_curve] [--threads 1]

For each candidate model in ``regime.json`` one ratio-0.75, unit-4 run is
trained for the candidate's length, on the full Fashion-MNIST training set,
with a seed the study itself never uses (so the study's runs are not the run
the regime was chosen on); at each listed step the frozen encoder is probed
exactly as the study probes it (60,000 training images -> 10,000 test
images). The raw-pixel and untrained-encoder baselines are measured with the
same probe. A point before the last is a checkpoint in the middle of a cosine
schedule (a higher learning rate than a run of that length would end at), so
it is a conservative estimate of a run trained for that many steps.

Writes ``OUT.json`` after every point (a killed run keeps what it measured)
and ``OUT.png``. CPU seconds (this process) and the load average are logged
beside every wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _load() -> tuple[float, float, float]:
    return os.getloadavg()


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    b = res["baselines"]
    for ax, pool in zip(axes, ("mean", "cls"), strict=True):
        for i, (name, pts) in enumerate(res["curves"].items()):
            pts = [p for p in pts if p.get(f"probe_top1_{pool}") is not None]
            color = f"C{i}"
            ax.plot([p["step"] for p in pts], [100 * p[f"probe_top1_{pool}"] for p in pts], "o-", color=color,
                    label=f"{name}: MAE, ratio 0.75")
            u = b.get("untrained", {}).get(name, {}).get(f"probe_top1_{pool}")
            if u is not None:
                ax.axhline(100 * u, color=color, ls=":", label=f"{name}: untrained encoder")
        if b.get("pixels") is not None:
            ax.axhline(100 * b["pixels"], color="k", ls="-.", lw=0.9, label="raw pixels")
        ax.set_xlabel(f"training steps (batch {res['regime']['batch_size']})")
        ax.set_title(f"{pool} pool", fontsize=10)
        ax.set_xscale("log")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("linear probe top-1 on the 10,000 test images (%)")
    axes[0].legend(fontsize=7, loc="lower right")
    fig.suptitle("Fashion-MNIST: learning curve of the ratio-0.75 MAE (probe fitted on all 60,000 training images)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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

    torch.set_num_threads(args.threads)
    from hlvm.io import provenance, write_json
    from hlvm.models import MAEConfig
    from hlvm.realmask import data as fdata
    from hlvm.realmask.measure import encoder_row, pixel_probe
    from hlvm.realmask.pretrain import RunSpec, train_run
    from hlvm.train import init_model

    reg = json.loads(args.config.read_text())
    study = json.loads((HERE / "config.json").read_text())
    ev = study["eval"]
    ds = study["dataset"]
    splits = fdata.load("fashion-mnist", source=Path(ds["source"]), package=ds["debian_package"], in_chans=1,
                        size=28, test_fraction=0.2, seed=0)
    json_path = args.out.with_suffix(".json")
    res = json.loads(json_path.read_text()) if json_path.is_file() else {}
    res.update({"regime": reg, "eval": ev, "threads": args.threads, "provenance": provenance()})
    res.setdefault("baselines", {}).setdefault("untrained", {})
    res.setdefault("curves", {})
    res.setdefault("log", [])
    dev = torch.device("cpu")

    def log(what: str, t_wall: float, t_cpu: float, **kw) -> None:
        entry = {"what": what, "wall_s": round(t_wall, 1), "cpu_s": round(t_cpu, 1), "load": _load(), **kw}
        res["log"].append(entry)
        print(json.dumps(entry), flush=True)
        write_json(json_path, res)

    size = reg["img_size"]
    if not args.no_pixels or res["baselines"].get("pixels") is None:
        t, c = time.time(), time.process_time()
        p = pixel_probe(splits.train, splits.test, ev, size)
        res["baselines"]["pixels"] = p["top1"]
        log("pixels", time.time() - t, time.process_time() - c, top1=p["top1"])
    only = set(args.only.split(",")) if args.only else None
    for name, cand in reg["candidates"].items():
        if only and name not in only:
            continue
        fields = cand["model"]
        mcfg = MAEConfig(**fields)
        t, c = time.time(), time.process_time()
        row = encoder_row(init_model(mcfg, reg["seed"]), splits.train, splits.test, ev, size, device=dev)
        res["baselines"]["untrained"][name] = row
        log(f"{name} untrained", time.time() - t, time.process_time() - c,
            top1_mean=row["probe_top1_mean"], top1_cls=row["probe_top1_cls"])
        spec = RunSpec(name=name, mask_ratio=reg["mask_ratio"], mask_unit=fields["mask_unit"], seed=reg["seed"],
                       steps=cand["steps"], batch_size=reg["batch_size"], blr=reg["blr"],
                       warmup=reg["warmup"], weight_decay=reg["weight_decay"])
        curve = res["curves"][name] = []
        clock = {"t": time.time(), "c": time.process_time(), "train_wall": 0.0, "train_cpu": 0.0}

        def snap(model, step):  # noqa: ANN001
            clock["train_wall"] += time.time() - clock["t"]
            clock["train_cpu"] += time.process_time() - clock["c"]
            t0, c0 = time.time(), time.process_time()
            r = encoder_row(model, splits.train, splits.test, ev, size, device=dev)
            point = {"step": step, **r, "train_wall_s": clock["train_wall"], "train_cpu_s": clock["train_cpu"]}
            curve.append(point)
            log(f"{name} step {step}", time.time() - t0, time.process_time() - c0,
                top1_mean=r["probe_top1_mean"], top1_cls=r["probe_top1_cls"],
                train_wall_s=round(clock["train_wall"]), train_cpu_s=round(clock["train_cpu"]))
            plot(res, args.out.with_suffix(".png"))
            clock["t"], clock["c"] = time.time(), time.process_time()

        snaps = {s: (lambda m, s=s: snap(m, s)) for s in cand["probe_at"]}
        work = Path(os.environ.get("TMPDIR", "/tmp")) / "hlvm-fmnist-regime" / name
        import shutil

        shutil.rmtree(work, ignore_errors=True)  # a fresh run: the curve's points must come from one run
        _, losses = train_run(spec, mcfg, splits.train, work, device=dev, ckpt_every=0, snapshots=snaps)
        res.setdefault("losses", {})[name] = losses
        write_json(json_path, res)
    plot(res, args.out.with_suffix(".png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
