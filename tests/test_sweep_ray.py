"""hlvm.sweep on Ray: the same rows, commits and failure handling as the process pool, on a local Ray.

One local Ray instance (``ray.init(num_cpus=2)``) serves the module. Without
Ray installed the module is skipped (a plain install must pass); CI installs
it (the README's test command), so there it runs.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

import _sweepfakes  # noqa: E402
from _sweepfakes import NODES, FakeBackend, WhereBackend  # noqa: E402

from hlvm.evaluate import CONTROLS  # noqa: E402
from hlvm.errors import ConfigError  # noqa: E402
from hlvm.sweep import RayExecutor, SweepConfig, run_sweep  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    import signal

    # Ray workers cannot import the tests folder: ship the fake backend's module by value.
    ray.cloudpickle.register_pickle_by_value(_sweepfakes)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR)
    yield
    ray.shutdown()
    for sig, handler in handlers.items():  # ray.init's handlers must not reach the other tests of this worker
        signal.signal(sig, handler)


def small(**kw) -> SweepConfig:
    base = dict(mask_ratios=[0.25, 0.5, 0.75], mask_units=[1, 2], seeds=[0], graph={"depth": 2, "branching": 2},
                eval_masks=2, n_train=100, n_eval=50, steps=5)
    base.update(kw)
    return SweepConfig(**base)


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def canonical(path) -> list[str]:
    return sorted(json.dumps(r, sort_keys=True) for r in read_jsonl(path))


def test_ray_gives_the_process_pools_rows_and_commits_value_for_value(tmp_path):
    cfg = small()
    run_sweep(cfg, tmp_path / "pool", backend=FakeBackend(tmp_path / "l1"), workers=2, threads=1, progress=False)
    s = run_sweep(cfg, tmp_path / "ray", backend=FakeBackend(tmp_path / "l2"), executor=RayExecutor(cpus=1), progress=False)
    assert (s.executor, s.finished, s.failed) == ("ray", len(cfg.points()), [])
    assert canonical(tmp_path / "pool" / "results.jsonl") == canonical(tmp_path / "ray" / "results.jsonl")
    commits = [{c["point_id"]: c["rows"] for c in read_jsonl(tmp_path / d / "points.jsonl")} for d in ("pool", "ray")]
    assert commits[0] == commits[1]
    for name in ("prediction.csv",):
        assert (tmp_path / "pool" / name).read_bytes() == (tmp_path / "ray" / name).read_bytes()
    assert ray.is_initialized()  # the executor leaves a Ray it did not start running


def test_worker_data_mode_needs_no_shared_folder_and_gives_the_same_rows(tmp_path):
    # data="worker": each task prepares its point in a temporary folder of its node and sends its rows and its
    # run folder's files back; only the driver writes --out, and the rows equal the shared mode's.
    cfg = small()
    run_sweep(cfg, tmp_path / "shared", backend=WhereBackend(tmp_path / "l1"), executor=RayExecutor(cpus=1),
              progress=False)
    s = run_sweep(cfg, tmp_path / "worker", backend=WhereBackend(tmp_path / "l2"),
                  executor=RayExecutor(cpus=1, data="worker"), progress=False)
    assert (s.finished, s.failed) == (len(cfg.points()), [])
    assert canonical(tmp_path / "shared" / "results.jsonl") == canonical(tmp_path / "worker" / "results.jsonl")
    made = {p.parent.name: p.read_text() for p in (tmp_path / "worker" / "runs").glob("*/made-in.txt")}
    assert set(made) == {p.point_id for p in cfg.points()}  # every run folder's file came back to the driver
    assert all("hlvm-point-" in where and str(tmp_path) not in where for where in made.values())
    assert {p.read_text() for p in (tmp_path / "shared" / "runs").glob("*/made-in.txt")} == {str(tmp_path / "shared")}


def test_a_tiny_real_mae_grid_on_worker_data_equals_the_shared_one(tmp_path):
    from hlvm.sweep.mae import MAEBackend

    cfg = small(mask_ratios=[0.5], mask_units=[2], controls=["pixels", "pca"], n_train=64, n_eval=40, steps=2,
                batch=8, eval_masks=1, predict_masks=5)
    run_sweep(cfg, tmp_path / "shared", backend=MAEBackend(), executor=RayExecutor(cpus=1), progress=False)
    run_sweep(cfg, tmp_path / "worker", backend=MAEBackend(), executor=RayExecutor(cpus=1, data="worker"),
              progress=False)
    assert canonical(tmp_path / "shared" / "results.jsonl") == canonical(tmp_path / "worker" / "results.jsonl")
    assert sorted(p.name for p in (tmp_path / "worker" / "runs").iterdir()) == sorted(
        p.name for p in (tmp_path / "shared" / "runs").iterdir())


def test_an_unknown_ray_data_mode_is_refused():
    with pytest.raises(ConfigError, match="unknown Ray data mode 'nfs'; choose from shared, worker"):
        RayExecutor(data="nfs")


def test_ray_retries_a_point_whose_worker_died_and_reports_one_that_always_fails(tmp_path):
    cfg, out, log = small(), tmp_path / "out", tmp_path / "log"
    bad = cfg.points()[1]
    fake = FakeBackend(log, fail_ids={bad.point_id}, crash_once=tmp_path / "crashed")
    s = run_sweep(cfg, out, backend=fake, executor=RayExecutor(cpus=1), retries=1, progress=False)
    assert (tmp_path / "crashed").exists()
    assert [(p.point_id, why) for p, why in s.failed] == [(bad.point_id, f"RuntimeError: boom at {bad.label()}")]
    fails = read_jsonl(out / "failures.jsonl")
    crashed = (tmp_path / "crashed").read_text()
    assert any(f["point_id"] == crashed and "boom" not in f["error"] for f in fails)  # the killed worker's attempt
    assert [f["attempt"] for f in fails if f["point_id"] == bad.point_id] == [1, 2]
    rows = read_jsonl(out / "results.jsonl")
    keys = [(r["point_id"], r["mask_index"], r["node"]) for r in rows]
    assert len(keys) == len(set(keys)) == (len(cfg.points()) - 1) * cfg.eval_masks * len(NODES)
    # Fixed, the same sweep resumes on Ray and runs the failed point alone.
    s = run_sweep(cfg, out, backend=FakeBackend(log), executor=RayExecutor(cpus=1), progress=False)
    assert (s.finished, s.failed) == (1, [])


def test_a_point_asking_for_more_than_the_cluster_has_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ConfigError, match="asks for 3 CPUs but the Ray cluster has 2"):
        run_sweep(small(), tmp_path / "o", backend=FakeBackend(tmp_path / "log"), executor=RayExecutor(cpus=3),
                  progress=False)
    with pytest.raises(ConfigError, match="asks for 1 GPUs"):
        run_sweep(small(), tmp_path / "o", backend=FakeBackend(tmp_path / "log"), executor=RayExecutor(gpus=1),
                  progress=False)
    assert not (tmp_path / "o").exists()


def test_a_tiny_real_mae_grid_gives_the_same_numbers_on_ray_as_in_process(tmp_path):
    cfg = SweepConfig(mask_ratios=[0.25], mask_units=[1], seeds=[0], bottlenecks=[None], controls=["pixels"],
                      mask_kinds=["random"], graph={"depth": 2}, n_train=64, n_eval=40, steps=2, batch=16,
                      eval_masks=1, predict_masks=5)
    run_sweep(cfg, tmp_path / "here", workers=1, threads=1, progress=False)
    s = run_sweep(cfg, tmp_path / "ray", executor=RayExecutor(cpus=1, threads=1), progress=False)
    assert s.failed == [] and s.finished == 2
    here, there = canonical(tmp_path / "here" / "results.jsonl"), canonical(tmp_path / "ray" / "results.jsonl")
    assert len(here) == 2 * 5 and here == there


def test_an_executor_that_started_ray_stops_it_and_gives_the_signal_handlers_back(tmp_path):
    import signal

    ray.shutdown()  # this module's instance: the executor must start its own
    try:
        before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        ex = RayExecutor(cpus=1)
        s = run_sweep(small(mask_ratios=[0.5], mask_units=[1]), tmp_path / "o", backend=FakeBackend(tmp_path / "log"),
                      executor=ex, progress=False)
        assert s.finished == 1 + len(CONTROLS) and not ray.is_initialized()  # one trained point, one of each control
        assert {sig: signal.getsignal(sig) for sig in before} == before
    finally:
        ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR)
