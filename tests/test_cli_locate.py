"""`hlvm locate-c`: the default graph, tables and picture, one JSON object, and bad input as one line + exit 2."""

from __future__ import annotations

import json

import networkx as nx
import pytest
from typer.testing import CliRunner

from hlvm.cli.main import app
from hlvm.graphs import GridSpec, graph_to_json, grid_hierarchy, write_graph
from hlvm.locate import locate
from hlvm.masks import Mask
from _cli import assert_one_line_error

runner = CliRunner()
DEFAULT = grid_hierarchy(GridSpec())  # what `hlvm simulate` builds on its defaults: 16x16, depth 4


def invoke(*args: str):
    return runner.invoke(app, ["locate-c", *args])


def spec_file(tmp_path, spec, name="spec.json"):
    path = tmp_path / name
    path.write_text(spec if isinstance(spec, str) else json.dumps(spec))
    return str(path)



def test_json_without_a_graph_uses_the_default_simulate_graph(tmp_path):
    spec = {"ratio": 0.25, "patch_size": 4, "seed": 3}
    result = invoke("--mask", spec_file(tmp_path, spec), "--json")
    assert result.exit_code == 0, result.output
    obj = json.loads(result.output)  # exactly one JSON object, nothing else on stdout
    expected = locate(DEFAULT, Mask.random(16, 16, 0.25, 4, seed=3))
    for key in ("c", "shared", "s_m", "s_mc", "masked"):  # the same sets, in natural order: x_0_2 before x_0_10
        assert sorted(obj[key]) == sorted(getattr(expected, key))
        assert obj[key] == sorted(obj[key], key=lambda v: (v.split("_")[0], [int(p) for p in v.split("_")[1:]]))
    assert obj["dim_c"] == expected.dim_c and obj["mask"]["shape"] == [16, 16]
    assert "default" in obj["graph"]


def test_json_lists_ids_in_natural_order(tmp_path):
    result = invoke("--mask", spec_file(tmp_path, {"masked": ["x_0_10", "x_0_2", "x_1_0", "x_0_11"]}), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["masked"] == ["x_0_2", "x_0_10", "x_0_11", "x_1_0"]  # not x_0_10 before x_0_2


def test_tables_and_grid_picture(tmp_path):
    masked = [f"x_{r}_{c}" for r in range(4) for c in range(4)]  # exactly the block of z_2_0_0
    result = invoke("--mask", spec_file(tmp_path, {"masked": masked}))
    assert result.exit_code == 0, result.output
    out = result.output
    assert "# # # # . . . . . . . . . . . ." in out.splitlines()  # first row of the 16x16 picture
    assert "z_1_0_0" in out and "dim_c = 3" in out  # c lifts to the block's parent, dim 2 + 1
    for name in ("c", "CA (shared)", "s_m", "s_mc"):
        assert name in out


def test_graph_option_and_spec_graph_key(tmp_path):
    g = grid_hierarchy(depth=2, branching=2)
    write_graph(g, tmp_path / "g.json")
    sub = tmp_path / "specs"
    sub.mkdir()
    spec = {"grid": [[1, 1, 0, 0], [1, 1, 0, 0], [0] * 4, [0] * 4]}
    a = invoke("--mask", spec_file(tmp_path, spec), "--graph", str(tmp_path / "g.json"), "--json")
    # A relative "graph" in a spec is read relative to the spec's folder.
    b = invoke("--mask", spec_file(sub, {**spec, "graph": "../g.json"}), "--json")
    for result in (a, b):
        assert result.exit_code == 0, result.output
        obj = json.loads(result.output)
        assert obj["c"] == ["z_0_0_0"] and obj["dim_c"] == 2


# ----------------------------------------------------------------------------- bad input, one test each


def test_unknown_node(tmp_path):
    assert_one_line_error(invoke("--mask", spec_file(tmp_path, {"masked": ["x_99_0"]})), "unknown node 'x_99_0'")


def test_latent_in_masked(tmp_path):
    assert_one_line_error(invoke("--mask", spec_file(tmp_path, {"masked": ["z_1_0_1"]})), "latent node")


def test_empty_mask(tmp_path):
    assert_one_line_error(invoke("--mask", spec_file(tmp_path, {"grid": [[0] * 16] * 16})), "mask is empty")


def test_full_mask(tmp_path):
    assert_one_line_error(invoke("--mask", spec_file(tmp_path, {"grid": [[1] * 16] * 16})), "mask is full")


def test_grid_of_the_wrong_shape(tmp_path):
    assert_one_line_error(invoke("--mask", spec_file(tmp_path, {"grid": [[0, 1]] * 16})), "16x16")


def test_grid_values_other_than_0_1(tmp_path):
    grid = [[0] * 16 for _ in range(16)]
    grid[3][4] = 7
    assert_one_line_error(invoke("--mask", spec_file(tmp_path, {"grid": grid})), "0 (visible) or 1 (masked)")


@pytest.mark.parametrize("ratio", [0.0, 1.0, 1.5, -0.2])
def test_ratio_outside_open_unit_interval(tmp_path, ratio):
    assert_one_line_error(invoke("--mask", spec_file(tmp_path, {"ratio": ratio})), "(0, 1)")


def test_unit_that_does_not_divide_the_image(tmp_path):
    result = invoke("--mask", spec_file(tmp_path, {"ratio": 0.5, "patch_size": 3}))
    assert_one_line_error(result, "does not divide the 16x16 image")


def test_malformed_json(tmp_path):
    assert_one_line_error(invoke("--mask", spec_file(tmp_path, '{"ratio": 0.5,')), "not valid JSON")


def test_two_forms_at_once(tmp_path):
    spec = {"ratio": 0.5, "grid": [[0] * 16] * 16}
    assert_one_line_error(invoke("--mask", spec_file(tmp_path, spec)), "exactly one of", "'grid' and 'ratio'")


def test_graph_file_that_fails_validation(tmp_path):
    data = graph_to_json(grid_hierarchy(depth=2, branching=2))
    data["links"].append({"source": "z_1_0_0", "target": "z_0_0_0"})  # a cycle
    (tmp_path / "cyclic.json").write_text(json.dumps(data))
    result = invoke("--mask", spec_file(tmp_path, {"masked": ["x_0_0"]}), "--graph", str(tmp_path / "cyclic.json"))
    assert_one_line_error(result, "cycle")


def test_missing_spec_file(tmp_path):
    assert_one_line_error(invoke("--mask", str(tmp_path / "nope.json")), "mask spec not found")


def test_spec_naming_a_missing_graph(tmp_path):
    result = invoke("--mask", spec_file(tmp_path, {"masked": ["x_0_0"], "graph": "missing.json"}))
    assert_one_line_error(result, "graph file not found")


def test_graph_is_not_changed_by_the_command(tmp_path):
    g = nx.DiGraph(grid_hierarchy(depth=2, branching=2))
    write_graph(g, tmp_path / "g.json")
    before = (tmp_path / "g.json").read_bytes()
    assert invoke("--mask", spec_file(tmp_path, {"masked": ["x_0_0"]}), "--graph", str(tmp_path / "g.json")).exit_code == 0
    assert (tmp_path / "g.json").read_bytes() == before
