"""`hlvm predict`: options reach the library, outputs land atomically, bad input is one line and exit 2."""

from __future__ import annotations

import csv
import json

import pytest
from typer.testing import CliRunner

from hlvm.cli.main import app
from hlvm.graphs import grid_hierarchy, write_graph
from hlvm.predict import predict, predict_columns
from _cli import assert_one_line_error

runner = CliRunner()
G3 = grid_hierarchy(depth=3, branching=2)


def invoke(*args: str):
    return runner.invoke(app, ["predict", *args])


@pytest.fixture(scope="module")
def graph_file(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("g") / "g.json"
    write_graph(G3, path)
    return str(path)



def test_predict_writes_the_library_rows_and_prints_the_verdicts(tmp_path, graph_file):
    out = tmp_path / "pred"
    result = invoke("--graph", graph_file, "--ratios", "0.1,0.5,0.9", "--units", "1,2", "--k", "25",
                    "--seed", "4", "--out", str(out), "-q")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json", "figure4.csv", "heatmap.png", "lines.png", "predict.csv", "verdicts.json"
    ]
    with open(out / "predict.csv") as f:
        table = list(csv.DictReader(f))
    expected = predict(G3, (0.1, 0.5, 0.9), (1, 2), 25, 4)
    assert list(table[0]) == predict_columns(G3) and len(table) == len(expected)
    for row, exp in zip(table, expected, strict=True):
        assert (row["mask_kind"], float(row["mask_ratio"]), int(row["mask_unit"])) == (
            exp["mask_kind"], exp["mask_ratio"], exp["mask_unit"])
        assert float(row["mean_dim_c"]) == pytest.approx(exp["mean_dim_c"])
    config = json.loads((out / "config.json").read_text())
    assert config["k"] == 25 and config["seed"] == 4 and config["units"] == [1, 2]
    assert config["ratios"] == [0.1, 0.5, 0.9] and "git_commit" in config["provenance"]
    verdicts = json.loads((out / "verdicts.json").read_text())
    assert {(v["claim"], v["mask_kind"]) for v in verdicts} == {(2, "random"), (3, "random"), (2, "aligned"), (3, "aligned")}
    for v in verdicts:
        assert v["statement"].split(";")[0] in result.output
    assert "subtree_l1_exact" in result.output


def test_default_units_and_single_kind(tmp_path, graph_file):
    out = tmp_path / "p"
    result = invoke("--graph", graph_file, "--k", "5", "--mask-kinds", "random", "--out", str(out), "-q")
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert config["units"] == [1, 2, 4] and config["kinds"] == ["random"]
    assert config["ratios"] == [0.1, 0.25, 0.4, 0.5, 0.75, 0.9]


def test_existing_output_needs_overwrite_and_is_left_alone(tmp_path, graph_file):
    out = tmp_path / "p"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = invoke("--graph", graph_file, "--k", "2", "--out", str(out), "-q")
    assert_one_line_error(result, "--overwrite")
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    ok = invoke("--graph", graph_file, "--k", "2", "--units", "2", "--out", str(out), "--overwrite", "-q")
    assert ok.exit_code == 0 and not (out / "keep.txt").exists()


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--ratios", "0.5,1.2"], ["(0, 1)"]),
        (["--ratios", "half"], ["--ratios", "comma-separated"]),
        (["--units", "3"], ["does not divide the 8x8 image"]),
        (["--units", "two"], ["--units"]),
        (["--k", "0"], ["positive integer"]),
        (["--mask-kinds", "random,blocky"], ["unknown mask kind 'blocky'"]),
    ],
)
def test_bad_options(tmp_path, graph_file, args, words):
    out = tmp_path / "never"
    assert_one_line_error(invoke("--graph", graph_file, *args, "--out", str(out), "-q"), *words)
    assert not out.exists()


def test_graph_file_that_fails_validation(tmp_path):
    (tmp_path / "bad.json").write_text('{"nodes": [{"id": "a", "kind": "latent"}], "links": []}')
    assert_one_line_error(invoke("--graph", str(tmp_path / "bad.json"), "--out", str(tmp_path / "o")), "level")


def test_every_mask_kind_has_a_prediction_and_bad_kinds_are_one_line(tmp_path, graph_file):
    out = tmp_path / "p"
    result = invoke("--graph", graph_file, "--k", "20", "--mask-kind", "block,complementary,variable", "--ratios", "0.25,0.5",
                    "--units", "1", "--out", str(out), "-q")
    assert result.exit_code == 0, result.output
    with open(out / "predict.csv", newline="") as f:
        rows = {(r["mask_kind"], r["mask_ratio"]): r for r in csv.DictReader(f)}
    assert rows[("block", "0.5")]["feasible"] == "True" and float(rows[("block", "0.5")]["mean_dim_c"]) > 0
    assert rows[("complementary", "0.25")]["feasible"] == "False"  # two disjoint visible sets of 3/4 cannot exist
    assert rows[("variable", "0.25")]["feasible"] == "True"  # 0.05-0.45
    assert_one_line_error(invoke("--graph", graph_file, "--mask-kinds", "checker", "--out", str(tmp_path / "q")), "unknown mask kind 'checker'")
    assert_one_line_error(invoke("--graph", graph_file, "--mask-kinds", "variable", "--spread", "0.7", "--out", str(tmp_path / "r")), "spread")
