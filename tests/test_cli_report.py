"""`hlvm report` through typer's CliRunner."""

from __future__ import annotations

from typer.testing import CliRunner

from hlvm.cli.main import app
from test_report import CLAIM2, toy_rows, write_rows

runner = CliRunner()


def test_report_prints_verdicts_and_writes_files(tmp_path):
    write_rows(tmp_path / "results.csv", toy_rows(CLAIM2) + toy_rows(CLAIM2, encoder="pixels"))
    r = runner.invoke(app, ["report", str(tmp_path), "--out", str(tmp_path / "rep")])
    assert r.exit_code == 0, r.output
    out = " ".join(r.output.split())
    assert ("claim 2 (random eval masks; mae, random-trained, no bottleneck): trained hold, pixels hold, theory hold; "
            "vs pixels: explained without training") in out
    assert "vs its width's controls: no control of the same width" in out
    assert (tmp_path / "rep" / "report.md").is_file() and (tmp_path / "rep" / "verdicts.json").is_file()


def test_missing_columns_exit_2_with_one_line(tmp_path):
    write_rows(tmp_path / "results.csv", toy_rows(CLAIM2), drop=("role", "level"))
    r = runner.invoke(app, ["report", str(tmp_path)])
    assert r.exit_code == 2
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "lacks column(s) level, role" in lines[0]


def test_missing_results_exit_2(tmp_path):
    r = runner.invoke(app, ["report", str(tmp_path / "nothing")])
    assert r.exit_code == 2 and "results file not found" in r.output
