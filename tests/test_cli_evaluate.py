"""Claims about ``hlvm evaluate``: a table or JSON for a trained run; bad input is one line and exit 2."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from hlvm.cli.main import app
from hlvm.evaluate import ROW_COLUMNS, SUMMARY_KEYS
from hlvm.graphs import GridSpec
from hlvm.simulate import SimulateConfig, simulate_to_dir
from _cli import assert_one_line_error

runner = CliRunner()

QUADRANT = [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from hlvm.train import TrainConfig, train

    root = tmp_path_factory.mktemp("clieval")
    simulate_to_dir(SimulateConfig(grid=GridSpec(depth=2), n=128), root / "sim", progress=False)
    cfg = TrainConfig(
        model="mlp", data=str(root / "sim"), steps=2, batch_size=16, warmup=1, mask_ratio=0.25, device="cpu", out=str(root / "run")
    )
    return train(cfg, progress=False)


def spec_file(tmp_path, spec, name="spec.json"):
    path = tmp_path / name
    path.write_text(json.dumps(spec))
    return path


def invoke(*args):
    return runner.invoke(app, ["evaluate", *map(str, args)])



def test_json_output_holds_summary_rows_and_c(run_dir, tmp_path):
    result = invoke("--run", run_dir, "--mask", spec_file(tmp_path, {"grid": QUADRANT}), "--n", 200, "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["c"] == ["z_0_0_0"]
    assert tuple(out["summary"]) == SUMMARY_KEYS
    assert out["summary"]["n_samples"] == 200 and out["summary"]["dim_c"] == 2
    assert len(out["rows"]) == 5 and all(tuple(r) == ROW_COLUMNS for r in out["rows"])
    assert {r["node"]: r["role"] for r in out["rows"]}["z_1_0_0"] == "private_masked"
    assert out["meta"]["run"] == str(run_dir)


def test_table_output_names_roles_and_summary(run_dir, tmp_path):
    result = invoke("--run", run_dir, "--mask", spec_file(tmp_path, {"ratio": 0.5, "patch_size": 2, "seed": 0}), "--n", 200)
    assert result.exit_code == 0, result.output
    for text in ("z_0_0_0", "private_visible", "agreement", "r2_private_masked_noise", "c = {"):
        assert text in result.output


def test_run_folder_without_checkpoint_is_exit_2(tmp_path):
    (tmp_path / "run").mkdir()
    result = invoke("--run", tmp_path / "run", "--mask", spec_file(tmp_path, {"ratio": 0.5}))
    assert_one_line_error(result, "no checkpoint")


def test_mask_of_another_image_shape_is_exit_2(run_dir, tmp_path):
    eight = [[0] * 8 for _ in range(8)]
    eight[0][0] = 1
    result = invoke("--run", run_dir, "--mask", spec_file(tmp_path, {"grid": eight}))
    assert_one_line_error(result, "4x4")


def test_empty_grid_and_empty_mask_are_exit_2(run_dir, tmp_path):
    assert_one_line_error(invoke("--run", run_dir, "--mask", spec_file(tmp_path, {"grid": []})), "empty")
    zeros = [[0] * 4 for _ in range(4)]
    assert_one_line_error(invoke("--run", run_dir, "--mask", spec_file(tmp_path, {"grid": zeros}, "zeros.json")), "empty")


def test_missing_or_malformed_spec_and_bad_options_are_exit_2(run_dir, tmp_path):
    assert_one_line_error(invoke("--run", run_dir, "--mask", tmp_path / "nope.json"), "not found")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert_one_line_error(invoke("--run", run_dir, "--mask", bad), "not valid JSON")
    good = spec_file(tmp_path, {"grid": QUADRANT})
    assert_one_line_error(invoke("--run", run_dir, "--mask", good, "--n", 3), "n must be")
    assert_one_line_error(invoke("--run", run_dir, "--mask", good, "--device", "tpu"), "device")


def test_control_scores_the_same_samples_and_mask(run_dir, tmp_path):
    spec = spec_file(tmp_path, {"grid": QUADRANT})
    result = invoke("--run", run_dir, "--mask", spec, "--n", 200, "--control", "pixels", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["meta"]["encoder"] == "pixels" and out["summary"]["code_dim"] == 4 * 12
    table = invoke("--run", run_dir, "--mask", spec, "--n", 200, "--control", "oracle")
    assert table.exit_code == 0 and "control 'oracle'" in table.output
    assert_one_line_error(invoke("--run", run_dir, "--mask", spec, "--control", "noise"), "unknown control 'noise'")


def test_linear_controls_take_the_runs_width_or_width_and_are_fitted_on_the_training_images(run_dir, tmp_path):
    import numpy as np

    from hlvm.controls import PixelMoments, pca_basis, visible_columns
    from hlvm.evaluate import heldout_dataset, resolve_mask, training_moments
    from hlvm.masks import Mask
    from hlvm.simulate import load_dataset

    spec = spec_file(tmp_path, {"grid": QUADRANT})
    got = {}
    for control, width in (("pca", None), ("random_projection", 5), ("linear_mae", 3)):
        args = ["--run", run_dir, "--mask", spec, "--n", 200, "--control", control, "--json"]
        res = invoke(*args, *([] if width is None else ["--width", width]))
        assert res.exit_code == 0, res.output
        got[control] = json.loads(res.output)["summary"]["code_dim"]
    # The run's MLP code is 64 wide: PCA is cut to the 48 visible values; the linear MAE to 3 as asked.
    assert got == {"pca": 48, "random_projection": 5, "linear_mae": 3}
    # PCA's basis comes from the run's training images (the simulate folder), not from the held-out samples.
    sim = str(run_dir.parent / "sim")
    mom = training_moments(sim, 20000)
    stored = PixelMoments.of(load_dataset(sim).images)
    np.testing.assert_array_equal(mom.cov, stored.cov)
    held = heldout_dataset(sim, 200, 0)
    mask = resolve_mask({"grid": QUADRANT}, held.graph)
    assert isinstance(mask, Mask)
    idx = visible_columns(mask, mom.shape)
    held_mom = PixelMoments.of(held.images)
    assert not np.allclose(pca_basis(held_mom.cov[np.ix_(idx, idx)], 2), pca_basis(mom.cov[np.ix_(idx, idx)], 2))
    assert_one_line_error(invoke("--run", run_dir, "--mask", spec, "--width", 3), "width sets a linear control")
    assert_one_line_error(invoke("--run", run_dir, "--mask", spec, "--control", "pca", "--width", 0), "width must be")
