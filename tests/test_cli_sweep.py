"""`hlvm sweep` through typer's CliRunner: what reaches the library, resume, bad input, and one real tiny run."""

from __future__ import annotations

import csv
import json
import os
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hlvm.cli.main import app
from _cli import assert_one_line_error as one_line_error

runner = CliRunner()



@pytest.fixture
def captured(monkeypatch):
    """Replace the library's run_sweep; record the config and options it is called with."""
    import hlvm.sweep as sweep

    calls = []

    def fake(cfg, out, **kw):
        calls.append((cfg, out, kw))
        if kw.get("on_start"):
            kw["on_start"]()
        return sweep.SweepSummary(out, len(cfg.points()), 0, len(cfg.points()), 0, cfg.infeasible(), 0.0)

    monkeypatch.setattr(sweep, "run_sweep", fake)
    return calls


def test_options_build_the_config(tmp_path, captured):
    r = runner.invoke(app, ["sweep", "--ratios", "0.25,0.75", "--units", "1,2", "--seeds", "0,1,2", "--objectives", "mae,umae",
                            "--bottlenecks", "none,8,dim_c", "--train-mask-kinds", "aligned", "--controls", "pixels,oracle",
                            "--mask-kinds", "random,aligned", "--depth", "3", "--steps", "7",
                            "--workers", "2", "--threads", "1", "--out", str(tmp_path / "o"), "--no-report", "-q"])
    assert r.exit_code == 0, r.output
    (cfg, out, kw), = captured
    assert cfg.mask_ratios == (0.25, 0.75) and cfg.mask_units == (1, 2) and cfg.seeds == (0, 1, 2)
    assert cfg.objectives == ("mae", "umae") and cfg.bottlenecks == (None, 8, "dim_c") and cfg.mask_kinds == ("random", "aligned")
    assert cfg.train_mask_kinds == ("aligned",) and cfg.controls == ("pixels", "oracle")
    assert cfg.graph["depth"] == 3 and cfg.steps == 7
    assert out == tmp_path / "o" and kw["workers"] == 2 and kw["threads"] == 1 and kw["progress"] is False
    # 2 ratios x 2 units x 2 objectives x 3 bottlenecks x 3 seeds; pixels and oracle per ratio, unit and seed
    assert "72 trained points" in r.output and "24 control points (pixels, oracle)" in r.output


def test_arms_option_builds_the_arms(tmp_path, captured):
    r = runner.invoke(app, ["sweep", "--ratios", "0.25", "--units", "1", "--depth", "2", "--arms",
                            "random:mae:none,aligned:mae:dim_c", "--out", str(tmp_path / "o"), "--no-report", "-q"])
    assert r.exit_code == 0, r.output
    (cfg, _, _), = captured
    assert cfg.arms == ({"train_mask_kind": "random", "objective": "mae", "bottleneck": None, "boundary_ignore": 0},
                        {"train_mask_kind": "aligned", "objective": "mae", "bottleneck": "dim_c", "boundary_ignore": 0})


def test_controls_none_turns_them_off(tmp_path, captured):
    r = runner.invoke(app, ["sweep", "--ratios", "0.5", "--units", "1", "--depth", "2", "--controls", "none",
                            "--out", str(tmp_path / "o"), "--no-report", "-q"])
    assert r.exit_code == 0, r.output
    (cfg, _, _), = captured
    assert cfg.controls == () and all(p.trained for p in cfg.points())


def test_config_file_and_default_out_a_new_folder_under_runs_never_the_study_results(tmp_path, captured, monkeypatch):
    (tmp_path / "study" / "results").mkdir(parents=True)
    conf = tmp_path / "study" / "config.json"
    conf.write_text(json.dumps({"_comment": "x", "mask_ratios": [0.5], "mask_units": [1], "graph": {"depth": 2}, "steps": 3}))
    monkeypatch.chdir(tmp_path)
    r = runner.invoke(app, ["sweep", "--config", str(conf), "--seeds", "4", "--no-report", "-q"])
    assert r.exit_code == 0, r.output
    (cfg, out, _), = captured
    assert cfg.steps == 3 and cfg.seeds == (4,)
    assert out.parent == Path("runs") and out.name.startswith("sweep-") and not out.exists()


@pytest.mark.parametrize(
    "args, text",
    [
        (["--ratios", ""], "empty grid: mask_ratios has no values"),
        (["--objectives", "mae,bogus"], "unknown objective 'bogus'"),
        (["--ratios", "0.5,x"], "--ratios must be comma-separated numbers"),
        (["--units", "3"], "does not divide"),
        (["--bottlenecks", "wide"], "--bottlenecks must be integers, 'dim_c' or 'none'"),
        (["--mask-kinds", "diagonal"], "unknown mask kind"),
        (["--controls", "pixels,noise"], "unknown control 'noise'"),
        (["--train-mask-kinds", "diagonal"], "unknown train mask kind 'diagonal'"),
        (["--arms", "random:mae"], "--arms takes train_mask_kind:objective:bottleneck[:boundary_ignore] items"),
        (["--arms", "random:mae:none", "--bottlenecks", "4"], "not both"),
        (["--bottlenecks", "dim_c", "--train-mask-kinds", "random", "--units", "1"], "dim_c varies between random training masks"),
        (["--workers", "0"], "--workers must be >= 1"),
        (["--retries", "-1"], "--retries must be >= 0"),
        (["--backend", "dask"], "unknown --backend 'dask'; choose from process, ray"),
        (["--cpus-per-point", "2"], "--cpus-per-point applies to --backend ray"),
        (["--ray-address", "auto"], "--ray-address applies to --backend ray"),
        (["--ray-data", "worker"], "--ray-data applies to --backend ray"),
        (["--config", "/nonexistent/study.json"], "sweep config not found"),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path, captured, args, text):
    r = runner.invoke(app, ["sweep", "--out", str(tmp_path / "o"), "--depth", "3", "-q", *args])
    one_line_error(r, text)
    assert captured == []


def test_backend_ray_builds_a_ray_executor_with_the_options(tmp_path, captured):
    pytest.importorskip("ray")
    r = runner.invoke(app, ["sweep", "--ratios", "0.5", "--units", "1", "--depth", "2", "--backend", "ray",
                            "--ray-address", "10.0.0.1:6379", "--cpus-per-point", "2", "--gpus-per-point", "0.5",
                            "--workers", "3", "--retries", "4", "--out", str(tmp_path / "o"), "--no-report", "-q"])
    assert r.exit_code == 0, r.output
    (_, _, kw), = captured
    ex = kw["executor"]
    assert (ex.name, ex.address, ex.cpus, ex.gpus, ex.capacity, ex.threads) == ("ray", "10.0.0.1:6379", 2, 0.5, 3, 2)
    assert ex.data == "worker"  # a cluster: no shared filesystem assumed
    assert kw["retries"] == 4
    r = runner.invoke(app, ["sweep", "--ratios", "0.5", "--units", "1", "--depth", "2", "--backend", "ray",
                            "--ray-data", "shared", "--out", str(tmp_path / "q"), "--no-report", "-q"])
    assert r.exit_code == 0, r.output
    assert captured[-1][2]["executor"].data == "shared"
    r = runner.invoke(app, ["sweep", "--ratios", "0.5", "--units", "1", "--depth", "2", "--out", str(tmp_path / "p"),
                            "--no-report", "-q"])
    assert captured[-1][2]["executor"] is None  # the process pool stays the default


def test_backend_ray_without_ray_says_how_to_install_it(tmp_path, captured, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError, as without the package
    r = runner.invoke(app, ["sweep", "--ratios", "0.5", "--units", "1", "--depth", "2", "--backend", "ray",
                            "--out", str(tmp_path / "o"), "-q"])
    one_line_error(r, "--backend ray needs Ray", "pip install 'hlvm[ray]'")
    assert captured == [] and not (tmp_path / "o").exists()


def test_failed_points_are_listed_with_why_and_the_exit_code_is_1(tmp_path, monkeypatch):
    import hlvm.sweep as sweep

    def failing(cfg, out, **kw):
        pts = cfg.points()
        return sweep.SweepSummary(out, len(pts), 0, len(pts) - 1, 3, [], 0.0, failed=[(pts[0], "RuntimeError: boom")])

    monkeypatch.setattr(sweep, "run_sweep", failing)
    r = runner.invoke(app, ["sweep", "--out", str(tmp_path / "o"), "--depth", "2", "--ratios", "0.5", "--units", "1",
                            "--retries", "1", "-q"])
    assert r.exit_code == 1
    assert "failed: 1 point(s) after 2 attempt(s) each" in r.output and "failures.jsonl" in r.output
    assert "r=0.5 u=1 mae seed=0: RuntimeError: boom" in r.output
    assert "report:" not in r.output  # no report from a sweep with holes


def test_malformed_config_file(tmp_path, captured):
    conf = tmp_path / "c.json"
    conf.write_text("{not json")
    one_line_error(runner.invoke(app, ["sweep", "--config", str(conf)]), "not valid JSON")
    conf.write_text(json.dumps({"ratios": [0.5]}))
    one_line_error(runner.invoke(app, ["sweep", "--config", str(conf)]), "unknown sweep config key 'ratios'")


def test_a_typo_in_the_simulate_block_is_refused_before_anything_is_written(tmp_path, captured):
    conf = tmp_path / "c.json"
    conf.write_text(json.dumps({"simulate": {"nosie": "laplace"}}))
    one_line_error(runner.invoke(app, ["sweep", "--config", str(conf), "--out", str(tmp_path / "o")]),
                   "unknown simulate key 'nosie'; did you mean 'noise'?")
    conf.write_text(json.dumps({"graph": {"dpeth": 3}}))
    one_line_error(runner.invoke(app, ["sweep", "--config", str(conf), "--out", str(tmp_path / "o")]),
                   "unknown graph key 'dpeth'; did you mean 'depth'?")
    assert not (tmp_path / "o").exists() and captured == []


def test_a_depth_30_sweep_is_refused_at_once_from_the_size_estimate(tmp_path, captured):
    import time

    t0 = time.perf_counter()
    r = runner.invoke(app, ["sweep", "--out", str(tmp_path / "o"), "--depth", "30", "-q"])
    one_line_error(r, "the sweep's data would be")
    assert "lower graph.depth" in r.output and time.perf_counter() - t0 < 5
    assert not (tmp_path / "o").exists() and captured == []


def test_an_unreachable_ray_address_is_one_line_within_seconds(tmp_path):
    import socket
    import time

    pytest.importorskip("ray")
    with socket.socket() as s:  # a port where, once closed, nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.perf_counter()
    r = runner.invoke(app, ["sweep", "--out", str(tmp_path / "o"), "--depth", "3", "-q", "--backend", "ray",
                            "--ray-address", f"127.0.0.1:{port}"])
    one_line_error(r, f"cannot reach the Ray cluster at 127.0.0.1:{port}: connection refused")
    assert time.perf_counter() - t0 < 30 and not (tmp_path / "o").exists()


def test_ctrl_c_says_finished_points_are_kept(tmp_path, monkeypatch):
    import hlvm.sweep as sweep

    def interrupted(cfg, out, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(sweep, "run_sweep", interrupted)
    r = runner.invoke(app, ["sweep", "--out", str(tmp_path / "o"), "--depth", "2", "--ratios", "0.5", "--units", "1", "-q"])
    assert r.exit_code == 130
    assert "every finished point is kept" in r.output


def test_a_real_tiny_sweep_runs_resumes_and_reports(tmp_path):
    out, conf = tmp_path / "o", tmp_path / "tiny.json"
    conf.write_text(json.dumps({
        "mask_ratios": [0.25], "mask_units": [1], "seeds": [0, 1], "bottlenecks": [None, "dim_c"],
        "train_mask_kinds": ["aligned"], "mask_kinds": ["random", "aligned"], "graph": {"depth": 2}, "n_train": 128,
        "n_eval": 64, "steps": 5, "batch": 32, "eval_masks": 1, "predict_masks": 10, "keep_checkpoints": False,
    }))
    args = ["sweep", "--config", str(conf), "--out", str(out), "--workers", "1", "--threads", "1", "-q"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    # 5 latents (root + 4 at level 1) x 2 mask kinds x 1 mask x 2 seeds, for: the wide model's code; the dim_c
    # model's code and plain representation; pixels; oracle; the untrained wide code; the untrained dim_c code and plain;
    # the three linear codes at each of the two widths.
    assert len(rows) == 5 * 2 * 2 * (1 + 2 + 1 + 1 + 1 + 2 + 3 * 2)
    got = {(r["encoder"], r["bottleneck"], r["bottleneck_width"], r["representation"], r["rep_dim"]) for r in rows
           if r["encoder"] != "oracle"}
    # ratio 0.25 of 16 pixels, aligned: one whole 2x2 block, c = the root (dim 2)
    assert got == {
        ("trained", "", "", "code", "64"), ("trained", "dim_c", "2", "code", "2"), ("trained", "dim_c", "2", "plain", "512"),
        ("pixels", "", "", "code", str(4 * 12)),
        ("untrained", "", "", "code", "64"), ("untrained", "2", "2", "code", "2"), ("untrained", "2", "2", "plain", "512"),
        # The wide code's linear competitors are cut to what the mask allows: PCA to the 48 visible values, the
        # linear MAE to its regression's rank (the 4 masked pixels' 16 values); the random projection keeps 64.
        ("pca", "", "", "code", "48"), ("random_projection", "", "", "code", "64"), ("linear_mae", "", "", "code", "16"),
        ("pca", "2", "2", "code", "2"), ("random_projection", "2", "2", "code", "2"), ("linear_mae", "2", "2", "code", "2"),
    }
    assert all(r["rep_dim"] == r["dim_c"] for r in rows if r["encoder"] == "oracle")  # the oracle is c itself
    assert {r["mask_kind"] for r in rows} == {"random", "aligned"} and {r["seed"] for r in rows} == {"0", "1"}
    assert {r["train_mask_kind"] for r in rows if r["encoder"] == "trained"} == {"aligned"}
    # every encoder of a (seed, kind, mask) sees the same mask, and seeds see different masks
    masks = {}
    for r in rows:
        masks.setdefault((r["seed"], r["mask_kind"], r["mask_index"]), set()).add(r["mask_seed"])
    assert all(len(v) == 1 for v in masks.values())
    assert masks[("0", "random", "0")] != masks[("1", "random", "0")]
    # the oracle recovers c = the root exactly, the pixels hold the visible side's private noise
    orc = [r for r in rows if r["encoder"] == "oracle" and r["node"] == "z_0_0_0"]
    assert all(float(r["r2_noise"]) > 0.9 for r in orc)
    assert all(float(r["r2_private_visible_noise"]) > 0.5 for r in rows if r["encoder"] == "pixels")
    assert all(-10 < float(r["r2_noise"]) <= 1 for r in rows)
    assert not list(out.glob("runs/*/checkpoint.pt")) and len(list(out.glob("runs/*/config.json"))) == 4
    assert len(list(out.glob("data/sim-*"))) == 2  # one training draw per seed
    assert (out / "prediction.csv").is_file() and (out / "report.md").is_file()
    assert (out / "training_loss.png").is_file() and "## Training" in (out / "report.md").read_text()
    umask = os.umask(0)
    os.umask(umask)
    for name in ("sweep.json", "verdicts.json", "results.csv", "report.md"):  # all alike, none owner-only
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o666 & ~umask, name
    assert all(stat.S_IMODE((p / "config.json").stat().st_mode) == 0o666 & ~umask for p in out.glob("runs/*"))
    assert len(list(out.glob("runs/*/loss.png"))) == 4
    assert "claim 1 (aligned eval masks; mae, aligned-trained, bottleneck dim_c)" in " ".join(res.output.split())
    before = (out / "results.csv").read_bytes()
    res = runner.invoke(app, args)
    assert res.exit_code == 0 and "0 points run, 24 finished earlier" in res.output  # 4 trained, 20 controls
    assert (out / "results.csv").read_bytes() == before
