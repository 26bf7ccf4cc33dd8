"""`hlvm sweep` through typer's CliRunner: what reaches the library, resume, bad input, and one real tiny run."""

from __future__ import annotations

import csv
import json

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
        return sweep.SweepSummary(out, len(cfg.points()), 0, len(cfg.points()), 0, cfg.infeasible(), 0.0)

    monkeypatch.setattr(sweep, "run_sweep", fake)
    return calls


def test_options_build_the_config(tmp_path, captured):
    r = runner.invoke(app, ["sweep", "--ratios", "0.25,0.75", "--units", "1,2", "--seeds", "0,1,2", "--objectives", "mae,umae",
                            "--bottlenecks", "none,8", "--mask-kinds", "random,aligned", "--depth", "3", "--steps", "7",
                            "--workers", "2", "--threads", "1", "--out", str(tmp_path / "o"), "--no-report", "-q"])
    assert r.exit_code == 0, r.output
    (cfg, out, kw), = captured
    assert cfg.mask_ratios == (0.25, 0.75) and cfg.mask_units == (1, 2) and cfg.seeds == (0, 1, 2)
    assert cfg.objectives == ("mae", "umae") and cfg.bottlenecks == (None, 8) and cfg.mask_kinds == ("random", "aligned")
    assert cfg.graph["depth"] == 3 and cfg.steps == 7
    assert out == tmp_path / "o" and kw["workers"] == 2 and kw["threads"] == 1 and kw["progress"] is False
    assert "48 points" in r.output


def test_config_file_and_default_out_beside_it(tmp_path, captured):
    (tmp_path / "study").mkdir()
    conf = tmp_path / "study" / "config.json"
    conf.write_text(json.dumps({"_comment": "x", "mask_ratios": [0.5], "mask_units": [1], "graph": {"depth": 2}, "steps": 3}))
    r = runner.invoke(app, ["sweep", "--config", str(conf), "--seeds", "4", "--no-report", "-q"])
    assert r.exit_code == 0, r.output
    (cfg, out, _), = captured
    assert cfg.steps == 3 and cfg.seeds == (4,) and out == tmp_path / "study" / "results"


@pytest.mark.parametrize(
    "args, text",
    [
        (["--ratios", ""], "empty grid: mask_ratios has no values"),
        (["--objectives", "mae,bogus"], "unknown objective 'bogus'"),
        (["--ratios", "0.5,x"], "--ratios must be comma-separated numbers"),
        (["--units", "3"], "does not divide"),
        (["--bottlenecks", "wide"], "--bottlenecks must be integers or 'none'"),
        (["--mask-kinds", "diagonal"], "unknown mask kind"),
        (["--workers", "0"], "--workers must be >= 1"),
        (["--config", "/nonexistent/study.json"], "sweep config not found"),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path, captured, args, text):
    r = runner.invoke(app, ["sweep", "--out", str(tmp_path / "o"), "--depth", "3", "-q", *args])
    one_line_error(r, text)
    assert captured == []


def test_malformed_config_file(tmp_path, captured):
    conf = tmp_path / "c.json"
    conf.write_text("{not json")
    one_line_error(runner.invoke(app, ["sweep", "--config", str(conf)]), "not valid JSON")
    conf.write_text(json.dumps({"ratios": [0.5]}))
    one_line_error(runner.invoke(app, ["sweep", "--config", str(conf)]), "unknown sweep config key 'ratios'")


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
        "mask_ratios": [0.5], "mask_units": [1], "seeds": [0], "bottlenecks": [None, 2],
        "mask_kinds": ["random", "aligned"], "graph": {"depth": 2}, "n_train": 128, "n_eval": 64,
        "steps": 5, "batch": 32, "eval_masks": 1, "predict_masks": 10, "keep_checkpoints": False,
    }))
    args = ["sweep", "--config", str(conf), "--out", str(out), "--workers", "1", "--threads", "1", "-q"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    # 5 latents (root + 4 at level 1) x 2 mask kinds x 1 mask, for the plain model's code and the
    # bottleneck model's code and plain representation
    assert len(rows) == 5 * 2 * 3
    got = {(r["bottleneck"], r["representation"], r["rep_dim"]) for r in rows}
    assert got == {("", "code", "64"), ("2", "code", "2"), ("2", "plain", "512")}
    assert {r["mask_kind"] for r in rows} == {"random", "aligned"}
    assert {r["role"] for r in rows} <= {"c", "shared", "private_masked", "private_visible"}
    assert all(-10 < float(r["r2_noise"]) <= 1 for r in rows)
    assert not list(out.glob("runs/*/checkpoint.pt")) and len(list(out.glob("runs/*/config.json"))) == 2
    assert (out / "prediction.csv").is_file() and (out / "report.md").is_file()
    assert "claim 1:" in r.output
    before = (out / "results.csv").read_bytes()
    r = runner.invoke(app, args)
    assert r.exit_code == 0 and "0 points run, 2 finished earlier" in r.output
    assert (out / "results.csv").read_bytes() == before
