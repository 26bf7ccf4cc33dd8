"""DDP on CPU: 2 processes, gloo, joined from the environment as torchrun would.

Claims: the ranks see disjoint shards of a folder, the weights stay equal on
both ranks after every step (with gradient accumulation, so DDP's no_sync
path runs), the logged loss is the mean over ranks, the lr
counts both processes, and only rank 0 writes into the run folder.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from hlvm.graphs import GridSpec
from hlvm.models import get_config
from hlvm.simulate import SimulateConfig, load_dataset, simulate_to_dir
from hlvm.train import TrainConfig, train

WORLD = 2
TINY_MLP = get_config("mlp", img_size=4, in_chans=4, embed_dim=8, mlp_hidden=(16,), mlp_decoder_hidden=(16,))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, cfg_dict: dict, record_dir: str) -> None:
    # What torchrun puts in each worker's environment.
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    records = []

    def on_step(step: int, info: dict) -> None:
        records.append(
            {
                "step": step,
                "loss": info["loss"],
                "parts": dict(info["parts"]),
                "batch": info["batch"].clone(),
                "params": [p.detach().clone() for p in info["model"].parameters()],
            }
        )

    train(TrainConfig.from_dict(cfg_dict), progress=False, on_step=on_step)
    torch.save(records, Path(record_dir) / f"rank{rank}.pt")


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    data = root / "sim"
    simulate_to_dir(SimulateConfig(grid=GridSpec(depth=2), n=48, seed=2), data, progress=False)
    cfg = TrainConfig(
        model=TINY_MLP, data=str(data), steps=6, batch_size=2, accum=2, warmup=1, ckpt_every=2, log_every=1,
        device="cpu", out=str(root / "run"), blr=1e-2, objective="umae",  # its feature gather runs under DDP too
    )
    records = root / "records"
    records.mkdir()
    # fork, not spawn: the children inherit the imported torch/timm instead of paying ~15 s each to
    # import them again on a busy CPU; nothing in this process has started a process group or CUDA.
    mp.start_processes(_worker, args=(_free_port(), cfg.to_dict(), str(records)), nprocs=WORLD, start_method="fork")
    recs = [torch.load(records / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    return cfg, data, Path(cfg.out), recs


def test_ranks_see_disjoint_shards_of_each_epoch(ddp_run):
    cfg, data, _, recs = ddp_run
    images = np.asarray(load_dataset(data).images)

    def index(row: np.ndarray) -> int:
        return int(np.flatnonzero((images == row).all(axis=(1, 2, 3)))[0])

    # 48 images / 2 ranks / 2 per batch = 12 micro-batches per rank per epoch: the 6 steps of accum 2
    # are one epoch; the records hold each step's last micro-batch.
    seen = [[index(row) for rec in recs[r] for row in rec["batch"].numpy()] for r in range(WORLD)]
    assert all(len(s) == len(set(s)) == 12 for s in seen)
    assert not set(seen[0]) & set(seen[1])


def test_weights_stay_in_sync_and_move(ddp_run):
    _, _, _, recs = ddp_run
    for a, b in zip(*recs):
        assert a["step"] == b["step"]
        assert all(torch.equal(p, q) for p, q in zip(a["params"], b["params"]))
    first, last = recs[0][0]["params"], recs[0][-1]["params"]
    assert any(not torch.equal(p, q) for p, q in zip(first, last))
    # Different data on each rank gives different local losses, which the sync must have averaged.
    assert any(a["loss"] != b["loss"] for a, b in zip(*recs))


def test_only_rank_zero_writes_and_logs_the_mean_loss(ddp_run):
    cfg, _, run, recs = ddp_run
    events = [p.name for p in run.glob("events.out.tfevents.*")]  # one writer, rank 0's, with TensorBoard installed
    assert len(events) <= 1
    assert sorted(p.name for p in run.iterdir()) == sorted(["checkpoint.pt", "config.json", "metrics.jsonl", "loss.png", *events])
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 7))
    for row, a, b in zip(rows, *recs):
        assert row["loss"] == pytest.approx((a["loss"] + b["loss"]) / 2, rel=1e-12)
        for part, value in a["parts"].items():  # the parts too, so that they add up to the logged loss
            assert row[f"loss_{part}"] == pytest.approx((value + b["parts"][part]) / 2, rel=1e-12)
    info = json.loads((run / "config.json").read_text())
    assert info["world_size"] == 2 and info["effective_batch"] == 8
    assert info["lr"] == pytest.approx(cfg.blr * 8 / 256)
    ckpt = torch.load(run / "checkpoint.pt", weights_only=False)
    assert ckpt["step"] == 6 and len(ckpt["rng"]) == 2  # every rank's RNG and data state, for resume
    assert all(torch.equal(p, q) for p, q in zip(ckpt["model"].values(), recs[1][-1]["params"]))


@pytest.mark.slow
def test_torchrun_runs_the_cli(tmp_path):
    """The real launcher: ``torchrun --nproc-per-node 2 hlvm train ...`` on CPU."""
    spec = tmp_path / "sim.json"
    spec.write_text(SimulateConfig(grid=GridSpec(depth=2)).to_json())
    out = tmp_path / "run"
    hlvm = Path(sys.executable).with_name("hlvm")
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "--no-python",
        str(hlvm), "train", "--model", "mlp", "--data", f"online:{spec}", "--steps", "3", "--batch-size", "4",
        "--device", "cpu", "--out", str(out), "-q",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("trained:") == 1  # rank 0 only
    info = json.loads((out / "config.json").read_text())
    assert info["world_size"] == 2


@pytest.mark.parametrize("objective", ["mimae", "cmim"])
def test_ddp_trains_objectives_with_networks_and_views_of_their_own(tmp_path, objective):
    """MI-MAE's approximation network runs outside the model's forward, its K views inside one; cMIM's posterior
    head inside. Under DDP every weight, theirs included, stays equal on both ranks and moves."""
    data = tmp_path / "sim"
    simulate_to_dir(SimulateConfig(grid=GridSpec(depth=2), n=32, seed=2), data, progress=False)
    cfg = TrainConfig(
        model=TINY_MLP, data=str(data), steps=3, batch_size=2, accum=2, warmup=1, ckpt_every=0, log_every=1,
        device="cpu", out=str(tmp_path / "run"), blr=1e-2, objective=objective, mask_ratio=0.5,
    )
    records = tmp_path / "records"
    records.mkdir()
    mp.start_processes(_worker, args=(_free_port(), cfg.to_dict(), str(records)), nprocs=WORLD, start_method="fork")
    recs = [torch.load(records / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    for a, b in zip(*recs):
        assert all(torch.equal(p, q) for p, q in zip(a["params"], b["params"]))
        assert a["parts"].keys() == b["parts"].keys() and a["loss"] != b["loss"]
    first, last = recs[0][0]["params"], recs[0][-1]["params"]
    assert all(not torch.equal(p, q) for p, q in zip(first, last) if p.ndim == 2)  # every weight matrix moved
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)["model"]
    assert any(k.startswith("objective_heads.") for k in state) == (objective == "mimae")
