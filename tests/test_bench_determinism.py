"""bench/determinism.py: rows, summaries and verdicts of two sweep folders compared value for value."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "determinism.py"
COLS = ["point_id", "mask_kind", "mask_index", "representation", "node", "encoder", "r2_ca_noise", "r2_noise"]


def folder(root: Path, name: str, r2: float, verdict: str, d: float) -> Path:
    out = root / name
    out.mkdir()
    rows = [["p0", "random", "0", "code", "z_0", "trained", str(r2), "0.5"],
            ["p1", "random", "0", "code", "z_0", "pixels", "0.9", "0.4"]]
    with open(out / "results.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLS)
        w.writerows(rows)
    verdicts = {"provenance": {"created_utc": name},  # provenance differs between any two runs: never compared
                "claims": [{"claim": "1", "verdicts": {"trained": verdict, "pixels": "hold"},
                            "evidence": [{"label": "x", "d": d, "se": 0.01, "n": 3}]}]}
    (out / "verdicts.json").write_text(json.dumps(verdicts))
    return out


def run(*args: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True)


def test_identical_folders_report_everything_identical(tmp_path):
    a, b = folder(tmp_path, "a", 0.7, "hold", 0.2), folder(tmp_path, "b", 0.7, "hold", 0.2)
    res = run(a, b, "--json", tmp_path / "o.json")
    assert res.returncode == 0, res.stderr
    assert "trained                 1 of      1 rows identical" in res.stdout
    assert "3 of 3 identical; largest difference 0.00e+00" in res.stdout  # d, se, n; provenance left out
    assert "verdicts: 3 in each; 0 differ" in res.stdout  # two verdicts and the evidence label


def test_a_moved_row_a_moved_summary_and_a_flipped_verdict_are_each_named(tmp_path):
    a, b = folder(tmp_path, "a", 0.7, "hold", 0.2), folder(tmp_path, "b", 0.725, "fail", 0.203)
    res = run(a, b, "--json", tmp_path / "o.json")
    assert res.returncode == 0, res.stderr
    assert "trained                 0 of      1 rows identical; largest R^2 difference 2.50e-02" in res.stdout
    assert "pixels                  1 of      1 rows identical" in res.stdout
    assert "2 of 3 identical; largest difference 3.00e-03 at /claims[0]/evidence[0]/d" in res.stdout
    assert "1 differ" in res.stdout and "/claims[0]/verdicts/trained: 'hold' -> 'fail'" in res.stdout
    out = json.loads((tmp_path / "o.json").read_text())
    assert out["verdicts_changed"] == ["/claims[0]/verdicts/trained"]
    assert abs(out["summaries"]["max_abs_diff"] - 0.003) < 1e-12


def test_folders_of_different_rows_are_refused_with_one_line(tmp_path):
    a = folder(tmp_path, "a", 0.7, "hold", 0.2)
    b = folder(tmp_path, "b", 0.7, "hold", 0.2)
    lines = (b / "results.csv").read_text().splitlines()
    (b / "results.csv").write_text("\n".join(lines[:2]) + "\n")
    res = run(a, b)
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "different rows (1 keys differ)" in res.stderr
