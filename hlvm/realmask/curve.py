"""The learning curve that chooses a study's regime: probe top-1 of one ratio-0.75 run against training steps.

For each candidate model of a regime config (``studies/fashion-mnist-mask/regime.json``) one
run is trained for the candidate's length with the regime's own seed (one the study never
uses, so the study's runs are not the run the regime was chosen on); after each step listed
in ``probe_at`` the frozen encoder is probed exactly as the study probes it
(:func:`hlvm.realmask.measure.encoder_row`), beside the raw-pixel and untrained-encoder
baselines. A point before the last is a checkpoint in the middle of a cosine schedule (a
higher learning rate than a run of that length would end at), so it is a conservative
estimate of a run trained for that many steps.

``OUT.json`` is written after every point (a killed run keeps what it measured) and the
figure ``OUT.png`` redrawn; CPU seconds (this process) and the load average are logged
beside every wall time.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch


def plot(res: dict, path: Path) -> None:
    """Probe top-1 against steps per candidate and pool, the baselines as lines."""
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


def learning_curve(reg: dict[str, Any], ev: dict[str, Any], splits: Any, out: Path, *, threads: int,
                   only: Iterable[str] | None = None, pixels: bool = True,
                   work: Path | None = None) -> dict[str, Any]:
    """Measure every candidate of ``reg`` (or those in ``only``) into ``OUT.json`` / ``OUT.png``; return the record.

    ``ev`` is the study config's ``eval``. ``pixels=False`` reuses the
    pixel baseline already in ``OUT.json``. Each candidate trains afresh in
    ``work/NAME`` (default ``$TMPDIR/hlvm-fmnist-regime``).
    """
    from hlvm.io import provenance, write_json
    from hlvm.models import MAEConfig
    from hlvm.realmask.measure import encoder_row, pixel_probe
    from hlvm.realmask.pretrain import RunSpec, train_run
    from hlvm.train import init_model

    json_path = out.with_suffix(".json")
    work = Path(os.environ.get("TMPDIR", "/tmp")) / "hlvm-fmnist-regime" if work is None else work
    res = json.loads(json_path.read_text()) if json_path.is_file() else {}
    res.update({"regime": reg, "eval": ev, "threads": threads, "provenance": provenance()})
    res.setdefault("baselines", {}).setdefault("untrained", {})
    res.setdefault("curves", {})
    res.setdefault("log", [])
    dev = torch.device("cpu")

    def log(what: str, t_wall: float, t_cpu: float, **kw: Any) -> None:
        entry = {"what": what, "wall_s": round(t_wall, 1), "cpu_s": round(t_cpu, 1), "load": os.getloadavg(), **kw}
        res["log"].append(entry)
        print(json.dumps(entry), flush=True)
        write_json(json_path, res)

    size = reg["img_size"]
    if pixels or res["baselines"].get("pixels") is None:
        t, c = time.time(), time.process_time()
        p = pixel_probe(splits.train, splits.test, ev, size)
        res["baselines"]["pixels"] = p["top1"]
        log("pixels", time.time() - t, time.process_time() - c, top1=p["top1"])
    only = set(only) if only else None
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
        res["curves"][name] = []
        measure = functools.partial(encoder_row, train=splits.train, test=splits.test, ev=ev, img_size=size, device=dev)
        snap = _snapshot(name, res["curves"][name], measure, log, lambda: plot(res, out.with_suffix(".png")))
        snaps = {s: functools.partial(snap, step=s) for s in cand["probe_at"]}
        shutil.rmtree(work / name, ignore_errors=True)  # a fresh run: the curve's points must come from one run
        _, losses = train_run(spec, mcfg, splits.train, work / name, device=dev, ckpt_every=0, snapshots=snaps)
        res.setdefault("losses", {})[name] = losses
        write_json(json_path, res)
    plot(res, out.with_suffix(".png"))
    return res


def _snapshot(name: str, curve: list, measure: Callable[[Any], dict], log: Callable[..., None],
              redraw: Callable[[], None]) -> Callable[[Any, int], None]:
    """``snap(model, step)``: measure the model into ``curve``, with training time kept apart from probing time."""
    clock = {"t": time.time(), "c": time.process_time(), "train_wall": 0.0, "train_cpu": 0.0}

    def snap(model: Any, step: int) -> None:
        clock["train_wall"] += time.time() - clock["t"]
        clock["train_cpu"] += time.process_time() - clock["c"]
        t0, c0 = time.time(), time.process_time()
        r = measure(model)
        curve.append({"step": step, **r, "train_wall_s": clock["train_wall"], "train_cpu_s": clock["train_cpu"]})
        log(f"{name} step {step}", time.time() - t0, time.process_time() - c0,
            top1_mean=r["probe_top1_mean"], top1_cls=r["probe_top1_cls"],
            train_wall_s=round(clock["train_wall"]), train_cpu_s=round(clock["train_cpu"]))
        redraw()
        clock["t"], clock["c"] = time.time(), time.process_time()

    return snap
