"""``hlvm realmask`` / ``hlvm realmask-report``: bad input is one error line, exit 2, and reaches no study.

The whole study through these commands is tests/test_study_fashion_mnist.py's (its run.py and report.py call them).
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from _cli import assert_one_line_error
from hlvm.cli.main import app

runner = CliRunner()


def test_report_of_a_folder_without_results_json_is_one_line(tmp_path):
    assert_one_line_error(runner.invoke(app, ["realmask-report", str(tmp_path)]), "results.json", str(tmp_path))


def test_report_of_a_results_json_that_is_not_json_is_one_line(tmp_path):
    (tmp_path / "results.json").write_text("{not json")
    assert_one_line_error(runner.invoke(app, ["realmask-report", str(tmp_path)]), "not valid JSON")


@pytest.mark.parametrize("option", ["--workers", "--threads"])
def test_workers_and_threads_below_one_are_one_line_before_anything_runs(tmp_path, monkeypatch, option):
    from hlvm.realmask import study

    monkeypatch.setattr(study, "run", lambda *a, **k: pytest.fail("the study ran"))
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({}))
    r = runner.invoke(app, ["realmask", "--out", str(tmp_path / "o"), "--config", str(cfg), option, "0"])
    assert_one_line_error(r, option, ">= 1")
    assert not (tmp_path / "o").exists()


def test_a_config_that_is_not_a_study_config_is_one_line(tmp_path):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"model": {}}))
    r = runner.invoke(app, ["realmask", "--out", str(tmp_path / "o"), "--config", str(cfg), "--workers", "1",
                            "--threads", "1"])
    assert_one_line_error(r, "study config", "dataset")
    assert not (tmp_path / "o").exists()
