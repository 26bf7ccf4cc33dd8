"""hlvm.sweep: the grid, append-only crash-safe storage, resume, parallel workers.

The backend here is a stand-in (no simulation or training) so that the
engine's guarantees are tested on their own and fast; the real backend has
its own end-to-end test at the bottom.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest

from hlvm.evaluate import CONTROLS
from hlvm.errors import ConfigError, DataError
from hlvm.sweep import ROW_COLUMNS, ResultsStore, SweepConfig, run_sweep
from hlvm.sweep.grid import KNOWN_OBJECTIVES

from _sweepfakes import NODES, FakeBackend, expected_r2


def small(**kw) -> SweepConfig:
    base = dict(mask_ratios=[0.25, 0.5, 0.75], mask_units=[1, 2], seeds=[0, 1], graph={"depth": 2, "branching": 2},
                eval_masks=2, n_train=100, n_eval=50, steps=5)
    base.update(kw)
    return SweepConfig(**base)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def row_keys(rows) -> list[tuple]:
    return [(r["point_id"], str(r["mask_index"]), r["node"]) for r in rows]


# ----------------------------------------------------------------------------- config


def test_grid_counts_and_skips_infeasible_pairs():
    # 4x4 image: unit 2 gives 4 units; ratio 0.1 masks none of them, 0.9 all of them.
    cfg = small(mask_ratios=[0.1, 0.5, 0.9], mask_units=[1, 2], seeds=[0], controls=[])
    pts = cfg.points()
    assert sorted((p.mask_unit, p.mask_ratio) for p in pts) == [(1, 0.1), (1, 0.5), (1, 0.9), (2, 0.5)]
    assert len(cfg.infeasible()) == 2 and all("unit 2" in s for s in cfg.infeasible())
    assert len({p.point_id for p in pts}) == len(pts)


def test_controls_are_points_once_per_cell_seed_and_architecture():
    cfg = small(mask_ratios=[0.5], mask_units=[1], seeds=[0, 1], objectives=["mae", "umae"], bottlenecks=[None, 2])
    pts = cfg.points()
    trained = [p for p in pts if p.trained]
    assert len(trained) == 2 * 2 * 2  # objectives x bottlenecks x seeds
    for seed in (0, 1):
        ctrl = [(p.encoder, p.width) for p in pts if not p.trained and p.seed == seed]
        # not once per objective: pixels and oracle once; untrained and the linear codes once per code width
        want = [("oracle", None), ("pixels", None)] + [(c, w) for c in ("untrained", "pca", "random_projection", "linear_mae") for w in (2, None)]
        assert sorted(ctrl, key=str) == sorted(want, key=str)
    assert all(p.objective is None and p.train_mask_kind is None for p in pts if not p.trained)
    assert len({p.point_id for p in pts}) == len(pts)
    assert [p for p in small(controls=[]).points() if not p.trained] == []
    assert {p.encoder for p in small(controls=["pixels"]).points()} == {"trained", "pixels"}


def test_arms_replace_the_product_of_training_kinds_objectives_and_bottlenecks():
    cfg = small(mask_ratios=[0.25], mask_units=[1], seeds=[0],
                arms=[{"train_mask_kind": "random"}, {"train_mask_kind": "aligned", "bottleneck": "dim_c"}])
    got = {(p.train_mask_kind, p.objective, p.bottleneck, p.width) for p in cfg.points() if p.trained}
    assert got == {("random", "mae", None, None), ("aligned", "mae", "dim_c", 2)}
    assert SweepConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ConfigError, match="not both"):
        small(arms=[{"train_mask_kind": "random"}], bottlenecks=[None, 4])
    with pytest.raises(ConfigError, match="unknown arm key 'kind'"):
        small(arms=[{"kind": "random"}])
    with pytest.raises(ConfigError, match="twice"):
        small(arms=[{}, {"train_mask_kind": "random", "objective": "mae"}])


def test_dim_c_resolves_per_cell_for_aligned_training_masks_and_is_skipped_where_it_varies():
    # depth 2 (4x4, 2x2 blocks): aligned ratio 0.25 of 16 pixels masks one block, c = root (dim 2);
    # ratio 0.5 of 16 masks two blocks, c = root; at ratio 0.1 (2 pixels) c is one level-1 node (dim 3).
    cfg = small(mask_ratios=[0.1, 0.25, 0.5], mask_units=[1], seeds=[0], train_mask_kinds=["random", "aligned"],
                bottlenecks=["dim_c", None], controls=["untrained"])
    pts = cfg.points()
    widths = {(p.mask_ratio, p.train_mask_kind, p.bottleneck): p.width for p in pts if p.trained}
    assert widths[(0.25, "aligned", "dim_c")] == 2 and widths[(0.5, "aligned", "dim_c")] == 2
    assert widths[(0.1, "aligned", "dim_c")] == 3
    assert (0.5, "random", "dim_c") not in widths and widths[(0.5, "random", None)] is None
    assert any("dim_c with random training masks at ratio 0.5" in s and "varies" in s for s in cfg.infeasible())
    assert {p.width for p in pts if p.encoder == "untrained" and p.mask_ratio == 0.25} == {2, None}
    with pytest.raises(ConfigError, match="empty grid: no trained point is feasible .*dim_c varies"):
        small(mask_ratios=[0.5], mask_units=[1], train_mask_kinds=["random"], bottlenecks=["dim_c"])


def test_point_ids_depend_on_shared_settings_but_not_on_other_axis_values():
    a, b, c = small(), small(mask_ratios=[0.5]), small(steps=6)
    ida = {p.axes["mask_ratio"]: p.point_id for p in a.points() if p.mask_unit == 1 and p.seed == 0}
    idb = {p.axes["mask_ratio"]: p.point_id for p in b.points() if p.mask_unit == 1 and p.seed == 0}
    idc = {p.axes["mask_ratio"]: p.point_id for p in c.points() if p.mask_unit == 1 and p.seed == 0}
    assert ida[0.5] == idb[0.5]
    assert ida[0.5] != idc[0.5]


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(mask_ratios=[]), "empty grid"),
        (dict(seeds=[]), "empty grid"),
        (dict(objectives=["mae", "nope"]), "unknown objective 'nope'"),
        (dict(mask_kinds=["diagonal"]), "unknown mask kind"),
        (dict(mask_ratios=[1.5]), "in \\(0, 1\\)"),
        (dict(mask_units=[3]), "does not divide"),
        (dict(mask_ratios=[0.1], mask_units=[2]), "empty grid: no .* feasible"),
        (dict(bottlenecks=[0]), "bottleneck"),
        (dict(bottlenecks=["dim_a"]), "bottleneck must be a positive integer, 'dim_c' or null"),
        (dict(train_mask_kinds=["diagonal"]), "unknown train mask kind 'diagonal'"),
        (dict(controls=["noise"]), "unknown control 'noise'"),
        (dict(simulate={"seed": 3}), "set by the sweep"),
        (dict(mask_ratios=[0.5, 0.5]), "twice"),
        (dict(graph={"depth": 0}), "depth"),
        (dict(eval_masks=0), "eval_masks"),
        (dict(blr=float("inf")), "blr must be a positive finite number"),
        (dict(blr=float("nan")), "blr must be a positive finite number"),
        (dict(train={"warmpu": 3}), "train: unknown TrainConfig field 'warmpu'"),
        (dict(train={"steps": 3}), "train: 'steps' is set by the sweep \\(steps\\)"),
        (dict(train={"seed": 1}), "train: 'seed' is set by the sweep \\(seeds\\)"),
        (dict(model_options={"patch_size": 2}), "mask unit 1 is not a multiple of the token patch 2 .*run units 2 here"),
        (dict(model_options={"patch_size": 0}), "patch_size must be a positive integer"),
    ],
)
def test_bad_configs_raise_config_error(kw, match):
    with pytest.raises(ConfigError, match=match):
        small(**kw)


def test_a_token_patch_in_model_options_takes_units_that_are_multiples_of_it():
    cfg = small(mask_units=[2, 4], graph={"depth": 3, "branching": 2}, model_options={"patch_size": 2})
    assert sorted({p.mask_unit for p in cfg.points()}) == [2, 4]


def test_a_real_vit_sweep_at_token_patch_2_trains_and_probes_every_unit(tmp_path):
    # vit_tiny_synth's own patch and unit are 1: model_options' patch 2 must reach the model with the point's unit.
    cfg = small(mask_ratios=[0.5], mask_units=[2, 4], seeds=[0], graph={"depth": 3, "branching": 2},
                model="vit_tiny_synth", model_options={"patch_size": 2}, controls=["untrained"], eval_masks=1,
                n_train=64, n_eval=40, steps=2, batch=8, predict_masks=5)  # fmt: skip
    run_sweep(cfg, tmp_path / "o", workers=1, threads=1, progress=False)
    rows = read_csv(tmp_path / "o" / "results.csv")
    assert {(r["encoder"], r["mask_unit"]) for r in rows} == {("trained", "2"), ("trained", "4"), ("untrained", "2"), ("untrained", "4")}
    for run in (tmp_path / "o" / "runs").iterdir():
        model = json.loads((run / "config.json").read_text())["model"]
        assert model["patch_size"] == 2 and model["mask_unit"] in (2, 4)


def test_config_json_round_trip_and_unknown_key():
    cfg = small(bottlenecks=[None, 4], mask_kinds=["random", "aligned"])
    assert SweepConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ConfigError, match="unknown sweep config key 'ratios'"):
        SweepConfig.from_dict({"ratios": [0.5]})


# ----------------------------------------------------------------------------- running and storage


def test_run_writes_every_row_once_in_both_formats_with_point_columns(tmp_path):
    cfg = small()
    s = run_sweep(cfg, tmp_path / "out", backend=FakeBackend(tmp_path / "log"), workers=1, progress=False)
    n_points = len(cfg.points())
    assert (s.total, s.finished, s.skipped) == (n_points, n_points, 0)
    rows_csv = read_csv(tmp_path / "out" / "results.csv")
    rows_json = read_jsonl(tmp_path / "out" / "results.jsonl")
    assert len(rows_csv) == len(rows_json) == n_points * cfg.eval_masks * len(NODES) == s.rows
    assert row_keys(rows_csv) == row_keys(rows_json)
    assert list(rows_csv[0])[: len(ROW_COLUMNS)] == ROW_COLUMNS
    by_id = {p.point_id: p for p in cfg.points()}
    for r in rows_json:
        p = by_id[r["point_id"]]
        assert (r["mask_ratio"], r["mask_unit"], r["seed"], r["objective"]) == (p.mask_ratio, p.mask_unit, p.seed, p.objective)
        assert r["r2_noise"] == expected_r2(p.mask_ratio, r["level"], r["mask_index"])
    # CSV numbers round-trip exactly
    assert [float(r["r2_noise"]) for r in rows_csv] == [r["r2_noise"] for r in rows_json]
    commits = read_jsonl(tmp_path / "out" / "points.jsonl")
    assert sorted(c["point_id"] for c in commits) == sorted(by_id)
    pred = read_csv(tmp_path / "out" / "prediction.csv")
    assert len(pred) == len(cfg.mask_units) * len(cfg.mask_ratios)
    assert json.loads((tmp_path / "out" / "sweep.json").read_text())["config"] == cfg.to_dict()


def test_interrupted_sweep_resumes_without_redoing_points_or_duplicating_rows(tmp_path):
    cfg, out, log = small(), tmp_path / "out", tmp_path / "log"
    assert {p.encoder for p in cfg.points()} == {"trained", *CONTROLS}  # controls resume too
    seen = []

    def stop_after_three(point, rows):
        seen.append(point.point_id)
        if len(seen) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sweep(cfg, out, backend=FakeBackend(log), workers=1, progress=False, on_point=stop_after_three)
    assert len(read_csv(out / "results.csv")) == 3 * cfg.eval_masks * len(NODES)

    s = run_sweep(cfg, out, backend=FakeBackend(log), workers=1, progress=False)
    assert (s.skipped, s.finished) == (3, len(cfg.points()) - 3)
    calls = log.read_text().split()
    assert sorted(calls) == sorted(p.point_id for p in cfg.points())  # every point ran exactly once
    rows = read_csv(out / "results.csv")
    assert len(rows) == len(set(row_keys(rows))) == len(cfg.points()) * cfg.eval_masks * len(NODES)
    # a third run has nothing to do
    s = run_sweep(cfg, out, backend=FakeBackend(log), workers=1, progress=False)
    assert s.finished == 0 and len(log.read_text().split()) == len(cfg.points())


def test_ctrl_c_inside_a_point_keeps_the_finished_ones(tmp_path):
    cfg, out, log = small(), tmp_path / "out", tmp_path / "log"
    with pytest.raises(KeyboardInterrupt):
        run_sweep(cfg, out, backend=FakeBackend(log, interrupt_at=6), workers=1, progress=False)
    assert len(read_jsonl(out / "points.jsonl")) == 6
    run_sweep(cfg, out, backend=FakeBackend(log), workers=1, progress=False)
    rows = read_jsonl(out / "results.jsonl")
    assert len(rows) == len(set(row_keys(rows))) == len(cfg.points()) * cfg.eval_masks * len(NODES)


def test_a_failing_point_is_retried_then_reported_and_the_others_finish(tmp_path):
    cfg, out, log = small(), tmp_path / "out", tmp_path / "log"
    bad = cfg.points()[3]
    fake = FakeBackend(log, fail_ids={bad.point_id})
    s = run_sweep(cfg, out, backend=fake, workers=1, progress=False, retries=2)
    assert fake.attempts().count(bad.point_id) == 3  # the first attempt and two retries
    assert [(p.point_id, why) for p, why in s.failed] == [(bad.point_id, f"RuntimeError: boom at {bad.label()}")]
    assert s.finished == len(cfg.points()) - 1
    committed = {c["point_id"] for c in read_jsonl(out / "points.jsonl")}
    assert committed == {p.point_id for p in cfg.points()} - {bad.point_id}
    assert bad.point_id not in {r["point_id"] for r in read_jsonl(out / "results.jsonl")}
    fails = read_jsonl(out / "failures.jsonl")
    assert [f["attempt"] for f in fails] == [1, 2, 3] and {f["point_id"] for f in fails} == {bad.point_id}
    assert "Traceback" in fails[0]["traceback"] and "boom" in fails[0]["traceback"]
    # Fixed, the same call runs the failed point alone.
    s = run_sweep(cfg, out, backend=FakeBackend(log), workers=1, progress=False)
    assert (s.finished, s.skipped, s.failed) == (1, len(cfg.points()) - 1, [])
    rows = read_jsonl(out / "results.jsonl")
    assert len(rows) == len(set(row_keys(rows))) == len(cfg.points()) * cfg.eval_masks * len(NODES)


def test_a_point_that_fails_once_is_committed_on_its_retry(tmp_path):
    cfg, out, log = small(seeds=[0]), tmp_path / "out", tmp_path / "log"
    flaky = cfg.points()[0]
    s = run_sweep(cfg, out, backend=FakeBackend(log, flaky_ids={flaky.point_id}), workers=1, progress=False)
    assert s.failed == [] and s.finished == len(cfg.points())
    assert [f["error"] for f in read_jsonl(out / "failures.jsonl")] == ["RuntimeError: flaky"]


def test_no_retries_reports_at_the_first_failure(tmp_path):
    cfg, out, log = small(seeds=[0]), tmp_path / "out", tmp_path / "log"
    flaky = cfg.points()[0]
    fake = FakeBackend(log, flaky_ids={flaky.point_id})
    s = run_sweep(cfg, out, backend=fake, workers=1, progress=False, retries=0)
    assert [p.point_id for p, _ in s.failed] == [flaky.point_id] and fake.attempts().count(flaky.point_id) == 1
    with pytest.raises(ConfigError, match="retries must be an integer >= 0"):
        run_sweep(cfg, out, backend=fake, workers=1, progress=False, retries=-1)


def test_a_killed_pool_worker_costs_one_attempt_of_the_points_in_flight(tmp_path):
    cfg, out, log = small(seeds=[0]), tmp_path / "out", tmp_path / "log"
    fake = FakeBackend(log, crash_once=tmp_path / "crashed")
    s = run_sweep(cfg, out, backend=fake, workers=2, threads=1, progress=False)
    assert (tmp_path / "crashed").exists() and s.failed == [] and s.finished == len(cfg.points())
    fails = read_jsonl(out / "failures.jsonl")
    assert 1 <= len(fails) <= 2 and all(f["error"].startswith("WorkerDied") for f in fails)
    rows = read_jsonl(out / "results.jsonl")
    assert len(rows) == len(set(row_keys(rows))) == len(cfg.points()) * cfg.eval_masks * len(NODES)
    assert sorted(log.read_text().split()) == sorted(p.point_id for p in cfg.points())  # each finished once


def test_torn_and_uncommitted_tails_are_cut_on_resume(tmp_path):
    cfg, out, log = small(), tmp_path / "out", tmp_path / "log"
    seen = []

    def stop_after_two(point, rows):
        seen.append(point)
        if len(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sweep(cfg, out, backend=FakeBackend(log), workers=1, progress=False, on_point=stop_after_two)
    good = {p: (out / p).read_bytes() for p in ("results.csv", "results.jsonl", "points.jsonl")}
    # A crash mid-append: rows of a third point without its commit, and a torn commit line.
    third = [p for p in cfg.points() if p not in seen][0]
    with open(out / "results.csv", "a") as f:
        f.write(f"{third.point_id},0.5,1,0,mae,,mlp,5,2,2,random,code,,0,1\n{third.point_id},0.5")
    with open(out / "results.jsonl", "a") as f:
        f.write(json.dumps({"point_id": third.point_id, "node": "z_0_0_0"}) + "\n{\"point_id\": \"" + third.point_id)
    with open(out / "points.jsonl", "a") as f:
        f.write('{"point_id": "' + third.point_id + '", "rows": 6, "csv_e')
    done = ResultsStore(out).recover()
    assert set(done) == {p.point_id for p in seen}
    for name, data in good.items():
        assert (out / name).read_bytes() == data  # cut back to exactly the committed bytes

    run_sweep(cfg, out, backend=FakeBackend(log), workers=1, progress=False)
    rows = read_csv(out / "results.csv")
    assert len(rows) == len(set(row_keys(rows))) == len(cfg.points()) * cfg.eval_masks * len(NODES)
    assert (out / "results.csv").read_bytes().startswith(good["results.csv"])  # finished rows never rewritten


def test_row_file_shorter_than_its_commits_is_a_data_error(tmp_path):
    cfg, out = small(mask_ratios=[0.5], seeds=[0]), tmp_path / "out"
    run_sweep(cfg, out, backend=FakeBackend(tmp_path / "log"), workers=1, progress=False)
    data = (out / "results.csv").read_bytes()
    (out / "results.csv").write_bytes(data[:-10])
    with pytest.raises(DataError, match="results.csv .* committed rows"):
        run_sweep(cfg, out, backend=FakeBackend(tmp_path / "log"), workers=1, progress=False)


@pytest.mark.parametrize("name", ["results.csv", "results.jsonl"])
def test_a_finished_row_edited_in_place_is_refused_on_resume(tmp_path, name):
    cfg, out = small(mask_ratios=[0.25, 0.5], seeds=[0]), tmp_path / "out"
    run_sweep(cfg, out, backend=FakeBackend(tmp_path / "log"), workers=1, progress=False)
    ResultsStore(out).recover()  # intact: accepted
    text = (out / name).read_text()
    i = text.index("0.", len(text) // 2)  # a number in the last point's rows, same length after the edit
    (out / name).write_text(text[:i] + ("9" if text[i] != "9" else "8") + text[i + 1 :])
    with pytest.raises(DataError, match=rf"{name}: the rows of point .* differ from what the sweep wrote"):
        run_sweep(cfg, out, backend=FakeBackend(tmp_path / "log"), workers=1, progress=False)


def test_resuming_with_other_shared_settings_is_refused_but_a_wider_grid_is_not(tmp_path):
    out, log = tmp_path / "out", tmp_path / "log"
    run_sweep(small(mask_ratios=[0.5]), out, backend=FakeBackend(log), workers=1, progress=False)
    with pytest.raises(ConfigError, match="other shared settings \\(steps\\)"):
        run_sweep(small(mask_ratios=[0.5], steps=9), out, backend=FakeBackend(log), workers=1, progress=False)
    s = run_sweep(small(), out, backend=FakeBackend(log), workers=1, progress=False)
    assert s.skipped == len(small(mask_ratios=[0.5]).points())


def test_parallel_workers_give_the_same_rows_as_one(tmp_path):
    cfg = small(seeds=[0])
    run_sweep(cfg, tmp_path / "one", backend=FakeBackend(tmp_path / "log1"), workers=1, progress=False)
    s = run_sweep(cfg, tmp_path / "two", backend=FakeBackend(tmp_path / "log2"), workers=2, progress=False)
    assert s.finished == len(cfg.points())
    one = sorted(map(json.dumps, read_jsonl(tmp_path / "one" / "results.jsonl")))
    two = sorted(map(json.dumps, read_jsonl(tmp_path / "two" / "results.jsonl")))
    assert one == two


def test_bad_workers_and_out_path(tmp_path):
    with pytest.raises(ConfigError, match="workers must be a positive integer"):
        run_sweep(small(), tmp_path / "o", backend=FakeBackend(tmp_path / "log"), workers=0, progress=False)
    with pytest.raises(ConfigError, match="threads must be a positive integer"):
        run_sweep(small(), tmp_path / "o", backend=FakeBackend(tmp_path / "log"), threads=0, progress=False)
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match="not a folder"):
        run_sweep(small(), tmp_path / "f", backend=FakeBackend(tmp_path / "log"), workers=1, progress=False)
    assert os.listdir(tmp_path) == ["f"]  # nothing created for bad input


def test_bad_model_options_fail_before_the_settings_are_pinned(tmp_path):
    # The real backend checks every (unit, bottleneck) model config before sweep.json is written,
    # so the corrected command can reuse the folder.
    out = tmp_path / "o"
    with pytest.raises(ConfigError, match="unknown model config field 'mlp_width'"):
        run_sweep(small(model_options={"mlp_width": [8]}), out, workers=1, progress=False)
    assert not (out / "sweep.json").exists()
    with pytest.raises(ConfigError, match="multiple of"):
        run_sweep(small(model="vit_small_synth"), out, workers=1, progress=False)  # its patch 2 > unit 1
    assert not (out / "sweep.json").exists()


def test_a_real_sweep_over_mimae_and_cmim_probes_cmims_decoder_and_its_untrained_control(tmp_path):
    cfg = small(mask_ratios=[0.5], mask_units=[1], seeds=[0], objectives=["mimae", "cmim"], controls=["untrained"],
                eval_masks=1, n_train=64, n_eval=40, steps=3, batch=8, predict_masks=5)
    run_sweep(cfg, tmp_path / "o", workers=1, threads=1, progress=False)
    rows = read_csv(tmp_path / "o" / "results.csv")
    got = {(r["encoder"], r["objective"], r["representation"], r["rep_dim"]) for r in rows}
    # the MLP's decoder is 512-512 wide: its informative embedding has 1024 dims
    assert got == {
        ("trained", "mimae", "code", "64"), ("trained", "cmim", "code", "64"), ("trained", "cmim", "decoder", "1024"),
        ("untrained", "", "code", "64"), ("untrained", "", "decoder", "1024"),
    }
    assert all(-10 < float(r["r2_noise"]) <= 1 for r in rows)
    assert "mimae" in KNOWN_OBJECTIVES and "cmim" in KNOWN_OBJECTIVES


def test_a_killed_driver_resumes_without_losing_or_duplicating_points(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    cfg, out, log = small(seeds=[0]), tmp_path / "out", tmp_path / "log"
    (tmp_path / "cfg.json").write_text(json.dumps(cfg.to_dict()))
    script = (
        "import json, sys; sys.path.insert(0, sys.argv[1]);"
        "from _sweepfakes import FakeBackend; from hlvm.sweep import SweepConfig, run_sweep;"
        "cfg = SweepConfig.from_dict(json.load(open(sys.argv[2])));"
        "run_sweep(cfg, sys.argv[3], backend=FakeBackend(sys.argv[4], sleep=0.3), workers=1, progress=False)"
    )
    tests = str(Path(__file__).parent)
    proc = subprocess.Popen([sys.executable, "-c", script, tests, str(tmp_path / "cfg.json"), str(out), str(log)])
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if (out / "points.jsonl").is_file() and len((out / "points.jsonl").read_text().splitlines()) >= 2:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the driver finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(30)
    committed = len(read_jsonl(out / "points.jsonl"))
    assert 2 <= committed < len(cfg.points())
    s = run_sweep(cfg, out, backend=FakeBackend(log), workers=1, progress=False)
    assert (s.skipped, s.finished) == (committed, len(cfg.points()) - committed)
    rows = read_jsonl(out / "results.jsonl")
    assert len(rows) == len(set(row_keys(rows))) == len(cfg.points()) * cfg.eval_masks * len(NODES)


def test_a_second_writer_of_the_same_folder_is_refused_while_the_first_holds_it(tmp_path):
    import fcntl

    from hlvm.sweep.store import LOCK, sweep_lock

    cfg, out = small(seeds=[0]), tmp_path / "out"
    run_sweep(cfg, out, backend=FakeBackend(tmp_path / "log"), workers=1, progress=False)
    before = {p: (out / p).read_bytes() for p in ("results.csv", "points.jsonl", "sweep.json")}
    with sweep_lock(out):  # as a first sweep still running would
        with pytest.raises(ConfigError, match=f"another hlvm sweep \\(pid {os.getpid()} on .*\\) is writing to {out}"):
            run_sweep(cfg, out, backend=FakeBackend(tmp_path / "log"), workers=1, progress=False)
        assert {p: (out / p).read_bytes() for p in before} == before
        # an OS lock: another open file description is refused too, and the lock goes with its holder
        with open(out / LOCK) as f, pytest.raises(BlockingIOError):
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    run_sweep(cfg, out, backend=FakeBackend(tmp_path / "log"), workers=1, progress=False)  # released


def test_a_non_empty_folder_without_a_sweep_is_refused_and_left_alone(tmp_path):
    out = tmp_path / "photos"
    out.mkdir()
    (out / "holiday.jpg").write_bytes(b"x")
    with pytest.raises(ConfigError, match="is not empty and holds no sweep \\(it has holiday.jpg\\)"):
        run_sweep(small(), out, backend=FakeBackend(tmp_path / "log"), workers=1, progress=False)
    assert os.listdir(out) == ["holiday.jpg"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_sweep(small(seeds=[0]), empty, backend=FakeBackend(tmp_path / "log"), workers=1, progress=False).finished


def test_bad_input_found_while_preparing_leaves_no_folder(tmp_path):
    class Refusing(FakeBackend):
        def prepare(self, cfg, out):
            raise ConfigError("mlp_hidden must be a list of positive integers")

    out = tmp_path / "new" / "out"
    with pytest.raises(ConfigError, match="mlp_hidden"):
        run_sweep(small(), out, backend=Refusing(tmp_path / "log"), workers=1, progress=False)
    assert not out.exists()


def test_a_resume_keeps_the_first_runs_provenance_and_appends_its_own(tmp_path, monkeypatch):
    import hlvm.io

    cfg, out = small(mask_ratios=[0.5], seeds=[0]), tmp_path / "out"
    stamps = iter(["2026-01-01T00:00:00+00:00", "2026-02-02T00:00:00+00:00", "2026-03-03T00:00:00+00:00"])
    real = hlvm.io.provenance
    monkeypatch.setattr(hlvm.io, "provenance", lambda *a, **k: {**real(*a, **k), "created_utc": next(stamps)})
    run_sweep(cfg, out, backend=FakeBackend(tmp_path / "log"), workers=1, progress=False)
    first = json.loads((out / "sweep.json").read_text())
    assert "resumes" not in first
    run_sweep(small(seeds=[0]), out, backend=FakeBackend(tmp_path / "log"), workers=1, progress=False)  # wider grid
    run_sweep(small(seeds=[0]), out, backend=FakeBackend(tmp_path / "log"), workers=1, progress=False)
    data = json.loads((out / "sweep.json").read_text())
    assert data["provenance"] == first["provenance"] and data["provenance"]["created_utc"] == "2026-01-01T00:00:00+00:00"
    assert [r["provenance"]["created_utc"] for r in data["resumes"]] == ["2026-02-02T00:00:00+00:00", "2026-03-03T00:00:00+00:00"]
    assert data["resumes"][0]["axes"]["mask_ratios"] == [0.25, 0.5, 0.75] and data["config"] == small(seeds=[0]).to_dict()
    # Every commit record carries the provenance of the call that wrote it, config hash included.
    commits = read_jsonl(out / "points.jsonl")
    assert {c["provenance"]["created_utc"] for c in commits} == {"2026-01-01T00:00:00+00:00", "2026-02-02T00:00:00+00:00"}
    assert all(len(c["provenance"]["config_hash"]) == 16 for c in commits)


def test_the_linear_controls_of_a_point_are_fitted_on_its_seeds_training_images_at_the_trained_codes_width(tmp_path):
    from hlvm.controls import PixelMoments, linear_control_encoder
    from hlvm.evaluate import evaluate_encoder, heldout_dataset
    from hlvm.simulate import load_dataset
    from hlvm.sweep.mae import MAEBackend, point_masks, rows_of

    cfg = SweepConfig(mask_ratios=[0.5], mask_units=[1], seeds=[1], graph={"depth": 2}, n_train=300, n_eval=60,
                      steps=2, batch=16, eval_masks=1, predict_masks=10, mask_kinds=["random"],
                      arms=[{"train_mask_kind": "aligned", "bottleneck": "dim_c"}, {"train_mask_kind": "random"}])
    backend = MAEBackend()
    ctx = backend.prepare(cfg, tmp_path)
    points = {(p.encoder, p.width) for p in cfg.points()}
    assert {("pca", None), ("pca", 2), ("linear_mae", None), ("random_projection", 2)} <= points
    data_dir = ctx["data_dirs"]["1"]
    held = heldout_dataset(data_dir, cfg.n_eval, (cfg.data_seed, 1))
    moments = PixelMoments.of(load_dataset(data_dir).images)
    for p in cfg.points():
        if p.encoder not in ("pca", "linear_mae", "random_projection"):
            continue
        got = backend.run_point(cfg, p, ctx)
        ((mseed, mask),) = point_masks(cfg, p, "random", held.graph)
        k = 64 if p.width is None else p.width  # the MLP's own code width beside the wide arm
        enc = linear_control_encoder(p.encoder, k, moments=moments, seed=p.seed)
        want = rows_of(evaluate_encoder(enc, held, held.graph, mask, mseed), mask_kind="random", mask_index=0,
                       mask_seed=mseed, representation="code")
        assert [r["r2_noise"] for r in got] == [r["r2_noise"] for r in want]
        assert {r["rep_dim"] for r in got} == {r["rep_dim"] for r in want}


def test_damaged_simulated_data_are_made_again_not_failed_on(tmp_path):
    # A truncated images.npy or a garbled index.json under OUT/data: the data derive from seeds, so the next
    # prepare (a resumed sweep) simulates them again, with a warning, and gets the same bytes.
    from hlvm.sweep.mae import MAEBackend

    cfg = small(seeds=[0, 1], n_train=64)
    dirs = MAEBackend().prepare(cfg, tmp_path)["data_dirs"]
    images = Path(dirs["0"]) / "images.npy"
    index = Path(dirs["1"]) / "index.json"
    good = images.read_bytes(), index.read_bytes()
    images.write_bytes(good[0][: len(good[0]) // 2])
    index.write_text("{garbled")
    with pytest.warns(UserWarning, match="are damaged .* simulating them again") as record:
        assert MAEBackend().prepare(cfg, tmp_path)["data_dirs"] == dirs
    assert len(record) == 2
    assert (images.read_bytes(), index.read_bytes()) == good
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # intact data: nothing is said, nothing made again
        MAEBackend().prepare(cfg, tmp_path)


def test_ctrl_c_stops_the_workers_at_once_not_after_their_points(tmp_path):
    # Points of 60 s each in a pool of 2: Ctrl-C must end the sweep in seconds (the in-flight points are dropped,
    # their rows never committed), not wait for the workers to finish them.
    import os
    import signal
    import subprocess
    import sys
    import time

    here = Path(__file__).resolve().parent
    script = f"""
import sys
sys.path.insert(0, {str(here)!r})
from _sweepfakes import FakeBackend
from hlvm.sweep import SweepConfig, run_sweep
cfg = SweepConfig(mask_ratios=[0.25, 0.5, 0.75], mask_units=[1, 2], seeds=[0], graph={{"depth": 2, "branching": 2}},
                  eval_masks=2, n_train=100, n_eval=50, steps=5)
run_sweep(cfg, {str(tmp_path / "out")!r}, backend=FakeBackend({str(tmp_path / "log")!r}, sleep=60), workers=2, progress=False)
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(here), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    attempts = tmp_path / "log.attempts"
    deadline = time.monotonic() + 60
    while not (attempts.exists() and len(attempts.read_text().split()) >= 2):  # both workers are inside a point
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=30)
    assert time.monotonic() - t0 < 15
    assert not (tmp_path / "log").exists() or (tmp_path / "log").read_text() == ""  # no point finished
