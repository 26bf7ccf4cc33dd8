"""The convergence pilot: train the studies' models at doubling lengths and pick each one's budget by hlvm.rules.budget.

Every run is a point of a study's own sweep config (same model, data, masks, batch, blr), trained to completion
at its length with hlvm.train, logging the held-out reconstruction loss on a fixed batch (TrainConfig.heldout_every);
nothing is probed. Run: python studies/convergence/pilot.py [--workers 2]   (resumable: finished runs are kept in
results/pilot.jsonl and skipped), then python studies/convergence/pilot.py --report (budgets.json, pilot.png).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
RESULTS = HERE / "results"
RUNS = ROOT / "runs" / "convergence"
SEEDS = (0, 1, 2)
#: model -> (its study's config, lengths on a doubling grid, cells as (train mask kind, bottleneck, ratio, unit)).
PILOT = {
    "mlp": ("studies/mask-sweep/config.json", (500, 1000, 2000, 4000, 8000),
            [("aligned", "dim_c", 0.25, 1), ("aligned", "dim_c", 0.1, 2), ("aligned", "dim_c", 0.4, 1), ("random", None, 0.75, 1)]),
    "vit_p1": ("studies/mask-sweep-vit/config.json", (800, 1600, 3200, 6400),
               [("aligned", "dim_c", 0.25, 1), ("aligned", "dim_c", 0.1, 2), ("aligned", "dim_c", 0.4, 1), ("random", None, 0.75, 1)]),
    "vit_p2": ("studies/mask-sweep-vit/config-p2.json", (800, 1600, 3200, 6400),
               [("aligned", "dim_c", 0.25, 2), ("aligned", "dim_c", 0.1, 2), ("random", None, 0.75, 2)]),
}
HELDOUT_EVERY = 100


def _point(cfg, kind: str, bottleneck, ratio: float, unit: int, seed: int):  # noqa: ANN001, ANN202
    for p in cfg.points():
        if (p.trained and p.train_mask_kind == kind and p.bottleneck == bottleneck and p.mask_ratio == ratio
                and p.mask_unit == unit and p.seed == seed):
            return p
    raise SystemExit(f"no trained point {kind}/{bottleneck} at {ratio}/{unit} seed {seed} in the study's config")


def jobs() -> list[dict]:
    out = []
    for model, (config, lengths, cells) in PILOT.items():
        for kind, bottleneck, ratio, unit in cells:
            for steps in lengths:
                for seed in SEEDS:
                    out.append({"model": model, "config": config, "kind": kind, "bottleneck": bottleneck, "ratio": ratio,
                                "unit": unit, "steps": steps, "seed": seed,
                                "id": f"{model}-{kind}-{bottleneck or 'wide'}-r{ratio:g}-u{unit}-s{steps}-seed{seed}"})
    return out


def run(job: dict) -> dict:
    """Train one pilot run (in a worker, one thread) and return its record."""
    import torch

    torch.set_num_threads(1)
    from hlvm.sweep import load_sweep_config
    from hlvm.sweep.mae import MAEBackend
    from hlvm.train import train

    base = load_sweep_config(ROOT / job["config"])
    cfg = dataclasses.replace(base, steps=job["steps"], train={**base.train, "heldout_every": HELDOUT_EVERY})
    point = _point(cfg, job["kind"], job["bottleneck"], job["ratio"], job["unit"], job["seed"])
    tc = MAEBackend._train_config(cfg, point, job["data_dir"], RUNS)
    tc = dataclasses.replace(tc, out=str(RUNS / "runs" / job["id"]), log_every=HELDOUT_EVERY)
    t0, c0 = time.perf_counter(), time.process_time()
    run_dir = train(tc, progress=False, overwrite=True)
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    (run_dir / "checkpoint.pt").unlink(missing_ok=True)
    curve = [[r["step"], r["heldout_loss"]] for r in rows if "heldout_loss" in r]
    job = {k: v for k, v in job.items() if k != "data_dir"}
    return {**job, "blr": cfg.blr, "batch": cfg.batch, "width": point.width, "final_heldout_loss": curve[-1][1],
            "final_train_loss": rows[-1]["loss"], "heldout_curve": curve,
            "train_curve": [[r["step"], r["loss"]] for r in rows],
            "seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0,
            "load_average": list(os.getloadavg())}


def _cell_key(j: dict) -> tuple:
    return (j["model"], j["kind"], j["bottleneck"], j["ratio"], j["unit"])


def _needed(all_jobs: list[dict], recs: dict[str, dict]) -> list[dict]:
    """The runs still needed, adaptively: per cell, lengths in order until the budget rule has its answer.

    A cell runs the next length of its grid only while ``hlvm.rules.budget`` finds no answer in the lengths it has
    (every seed of each); so a cell that converges early never runs the longest, most costly lengths.
    """
    import numpy as np

    from hlvm.rules import budget

    out = []
    by_cell: dict[tuple, list[dict]] = {}
    for j in all_jobs:
        by_cell.setdefault(_cell_key(j), []).append(j)
    for cell_jobs in by_cell.values():
        lengths = sorted({j["steps"] for j in cell_jobs})
        have = {s: [recs[j["id"]] for j in cell_jobs if j["steps"] == s and j["id"] in recs] for s in lengths}
        complete = [s for s in lengths if len(have[s]) == len(SEEDS)]
        losses = {s: float(np.mean([r["final_heldout_loss"] for r in have[s]])) for s in complete}
        if budget(losses) is not None:
            continue
        # the first two lengths, then one more past the longest complete one
        upto = max(lengths[1], max(complete, default=lengths[0]) * 2 if complete else lengths[1])
        out += [j for j in cell_jobs if j["steps"] <= upto and j["id"] not in recs]
    return out


def main_run(workers: int) -> int:
    from concurrent.futures import FIRST_COMPLETED, wait

    from hlvm.sweep import load_sweep_config
    from hlvm.sweep.mae import MAEBackend

    RESULTS.mkdir(parents=True, exist_ok=True)
    log = RESULTS / "pilot.jsonl"
    recs = {json.loads(x)["id"]: json.loads(x) for x in log.read_text().splitlines()} if log.is_file() else {}
    all_jobs = jobs()
    data = {}
    for config in sorted({j["config"] for j in all_jobs}):  # each seed's training data, simulated once, here
        data[config] = MAEBackend().prepare(load_sweep_config(ROOT / config), RUNS)["data_dirs"]
    print(f"pilot: {len(recs)} runs done earlier", flush=True)
    running: dict = {}
    with ProcessPoolExecutor(max_workers=workers) as pool:
        while True:
            for j in sorted(_needed(all_jobs, recs), key=lambda j: -j["steps"]):
                if j["id"] not in {r["id"] for r in running.values()}:
                    running[pool.submit(run, {**j, "data_dir": data[j["config"]][str(j["seed"])]})] = j
            if not running:
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for f in finished:
                running.pop(f)
                rec = f.result()
                recs[rec["id"]] = rec
                with open(log, "a") as fh:  # one line per finished run: an interruption keeps every finished one
                    fh.write(json.dumps(rec) + "\n")
                print(f"[{len(recs)}] {rec['id']}: held-out {rec['final_heldout_loss']:.4f} ({rec['cpu_seconds']:.0f} CPU-s)",
                      flush=True)
    return 0


def main_report() -> int:
    import numpy as np

    from hlvm.rules import CONVERGED_GAIN, budget

    recs = [json.loads(x) for x in (RESULTS / "pilot.jsonl").read_text().splitlines()]
    out: dict = {"rule": f"hlvm.rules.budget: the shortest length whose doubling gains < {CONVERGED_GAIN:.0%} of the "
                         "mean final held-out loss over seeds; a model's budget is the largest over its cells", "models": {}}
    for model, (config, lengths, cells) in PILOT.items():
        per_cell = {}
        for kind, bottleneck, ratio, unit in cells:
            key = f"{kind}-{bottleneck or 'wide'}-r{ratio:g}-u{unit}"
            mine = [r for r in recs if r["model"] == model and r["kind"] == kind and r["bottleneck"] == bottleneck
                    and r["ratio"] == ratio and r["unit"] == unit]
            losses = {s: float(np.mean([r["final_heldout_loss"] for r in mine if r["steps"] == s]))
                      for s in lengths if sum(r["steps"] == s for r in mine) == len(SEEDS)}
            per_cell[key] = {"losses": {str(k): v for k, v in losses.items()}, "budget": budget(losses),
                             "complete": len(losses) == len(lengths)}
        budgets = [c["budget"] for c in per_cell.values()]
        cpu = [r["cpu_seconds"] / r["steps"] * 100 for r in recs if r["model"] == model]
        out["models"][model] = {"config": config, "cells": per_cell,
                                "budget": None if None in budgets or not budgets else max(budgets),
                                "cpu_seconds_per_100_steps": float(np.median(cpu)) if cpu else None}
    (RESULTS / "budgets.json").write_text(json.dumps(out, indent=2) + "\n")
    _figure(recs)
    print(json.dumps({m: {"budget": v["budget"], **{k: c["budget"] for k, c in v["cells"].items()}}
                      for m, v in out["models"].items()}, indent=1))
    return 0


def _figure(recs: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, len(PILOT), figsize=(5 * len(PILOT), 4), squeeze=False)
    for ax, (model, (_, lengths, cells)) in zip(axes[0], PILOT.items()):
        for i, (kind, bottleneck, ratio, unit) in enumerate(cells):
            mine = [r for r in recs if r["model"] == model and r["kind"] == kind and r["bottleneck"] == bottleneck
                    and r["ratio"] == ratio and r["unit"] == unit]
            color = plt.get_cmap("tab10")(i)
            label = f"{kind} {bottleneck or 'wide'} {ratio:g}/{unit}"
            xs = [s for s in lengths if any(r["steps"] == s for r in mine)]
            ys = [np.mean([r["final_heldout_loss"] for r in mine if r["steps"] == s]) for s in xs]
            ax.plot(xs, ys, "o-", color=color, label=label)
            for r in mine:  # the longest runs' own curves, thin
                if r["steps"] == max(xs):
                    c = np.array(r["heldout_curve"])
                    ax.plot(c[:, 0], c[:, 1], color=color, lw=0.5, alpha=0.5)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("steps (run length)")
        ax.set_ylabel("held-out masked MSE (fixed batch)")
        ax.set_title(model, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.suptitle("Final held-out loss of each run length (dots, mean over 3 seeds); thin: the longest runs' curves", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    fig.savefig(RESULTS / "pilot.png", dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--report", action="store_true", help="apply the budget rule to the finished runs")
    a = p.parse_args()
    sys.exit(main_report() if a.report else main_run(a.workers))
