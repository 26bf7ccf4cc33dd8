"""`hlvm train`: options reach the library, runs land on disk, bad input is one line and exit 2."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from hlvm.cli.main import app
from hlvm.graphs import GridSpec
from hlvm.simulate import SimulateConfig, simulate_to_dir
from _cli import assert_one_line_error

runner = CliRunner()


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("data") / "sim"
    simulate_to_dir(SimulateConfig(grid=GridSpec(depth=2), n=32, seed=1), out, progress=False)
    return str(out)


def invoke(*args: str):
    return runner.invoke(app, ["train", *args])



def test_train_writes_a_run_with_the_options_given(online_spec, tmp_path):
    out = tmp_path / "run"
    result = invoke(
        "--model", "mlp", "--data", online_spec, "--steps", "4", "--batch-size", "8", "--mask-ratio", "0.5",
        "--bottleneck", "3", "--warmup", "1", "--seed", "5", "--accum", "2",
        "--blr", "1e-3", "--log-every", "1", "--ckpt-every", "2", "--out", str(out), "--quiet",
        "--objective", "mmae", "--objective-coef", "coef=0.5", "--objective-coef", "mu=2",
    )
    assert result.exit_code == 0, result.output
    assert f"trained: {out}" in result.output
    info = json.loads((out / "config.json").read_text())
    t = info["train"]
    assert (t["model"], t["mask_ratio"], t["bottleneck"], t["seed"], t["accum"], t["steps"]) == ("mlp", 0.5, 3, 5, 2, 4)
    assert (t["objective"], t["objective_coefs"]) == ("mmae", {"coef": 0.5, "mu": 2.0})
    assert info["model"]["bottleneck"] == 3 and info["model"]["img_size"] == 4 and info["model"]["in_chans"] == 4
    assert info["lr"] == pytest.approx(1e-3 * 16 / 256)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and all(r["mask_ratio"] == 0.5 for r in rows)
    assert (out / "checkpoint.pt").is_file()


def test_train_on_a_folder_then_resume_a_finished_run_is_a_no_op(folder, tmp_path):
    out = tmp_path / "run"
    args = ["--model", "mlp", "--data", folder, "--epochs", "2", "--batch-size", "8", "--out", str(out), "-q"]
    assert invoke(*args).exit_code == 0
    info = json.loads((out / "config.json").read_text())
    assert info["total_steps"] == 8 and info["train"]["steps"] is None  # 32 images / 8 per batch x 2 epochs
    before = (out / "metrics.jsonl").read_text()
    result = invoke("--resume", str(out), "-q")
    assert result.exit_code == 0, result.output
    assert (out / "metrics.jsonl").read_text() == before


def test_preset_fills_the_options_not_given(monkeypatch, tmp_path):
    pytest.importorskip("hlvm.recipes")
    from hlvm import train as lib
    from hlvm.recipes import get_preset

    seen = {}

    def fake_train(cfg, progress=True, **kw):
        seen["cfg"] = cfg
        return tmp_path

    monkeypatch.setattr(lib, "train", fake_train)
    result = invoke("--preset", "mae_pretrain_1gpu", "--data", "online", "--batch-size", "32", "-q")
    assert result.exit_code == 0, result.output
    cfg, recipe = seen["cfg"], get_preset("mae_pretrain_1gpu")
    assert cfg.model == recipe.model and cfg.epochs == recipe.train["epochs"] and cfg.steps is None
    assert cfg.accum == recipe.train["accum"] and cfg.warmup == recipe.train["warmup"]
    assert cfg.batch_size == 32  # given on the command line: the user wins
    assert cfg.norm_pix_loss is True and cfg.data == "online"


@pytest.mark.parametrize(
    "args, words",
    [
        (["--model", "vit_small_synth", "--patch-size", "2", "--mask-unit", "3"], ["mask_unit 3", "multiple"]),
        (["--model", "vit_small_synth", "--patch-size", "3", "--mask-unit", "3"], ["does not divide"]),
        (["--mask-ratio", "1.5"], ["mask ratio", "(0, 1)"]),
        (["--mask-ratio", "0"], ["mask ratio"]),
        (["--model", "resnet50"], ["unknown model config", "resnet50"]),
        (["--objective", "simclr"], ["unknown objective", "simclr"]),
        (["--steps", "0"], ["steps"]),
        (["--preset", "nope"], ["unknown preset"]),
        (["--mask", "/nonexistent/spec.json"], ["mask spec not found"]),
        (["--epochs", "2"], ["online data has no epochs"]),
        (["--objective", "umae", "--objective-coef", "mu=1"], ["takes coef", "mu"]),
        (["--objective", "umae", "--objective-coef", "coef"], ["NAME=VALUE"]),
        (["--objective", "umae", "--objective-coef", "coef="], ["NAME=VALUE"]),
        (["--objective", "mimae", "--objective-coef", "infonce=-1"], ["infonce", "finite number >= 0"]),
        (["--objective", "mimae", "--objective-coef", "club=nan"], ["club", "finite number >= 0"]),
        (["--objective", "cmim", "--objective-coef", "contrast=inf"], ["contrast", "finite number >= 0"]),
        (["--objective", "mimae", "--objective-coef", "views=1"], ["views", "integer >= 2"]),
        (["--objective", "mimae", "--mask-ratio", "0.25"], ["2 masks with disjoint visible sets"]),
        (["--objective", "mimae", "--batch-size", "1"], ["batch of at least 2"]),
        (["--objective", "cmim", "--batch-size", "1"], ["batch of at least 2"]),
        (["--objective", "umae", "--objective-coef", "diagonal=maybe"], ["diagonal", "true or false"]),
        (["--model", "mlp", "--objective", "umae_official"], ["needs a ViT"]),
        (["--mask-kind", "diagonal"], ["unknown train mask kind", "diagonal"]),
        (["--mask-kind", "variable", "--mask-ratio", "0.1"], ["variable ratio range", "inside (0, 1)"]),
        (["--boundary-ignore", "-1"], ["boundary_ignore must be an integer >= 0"]),
        (["--boundary-ignore", "16", "--mask-ratio", "0.5"], ["leaves no masked pixel in the loss"]),
        (["--mask-kind", "aligned", "--model", "mlp", "--mask-unit", "4", "--mask-ratio", "0.5"], ["mask ratio 0.5 of 1 units"]),
    ],
)
def test_bad_options_are_one_line_errors(online_spec, tmp_path, args, words):
    out = tmp_path / "run"
    result = invoke("--data", online_spec, "--out", str(out), "-q", *args)
    assert_one_line_error(result, *words)
    assert not out.exists()


def test_fixed_mask_from_a_spec_file(online_spec, tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"masked": ["x_0_0", "x_3_3"]}))
    out = tmp_path / "run"
    result = invoke("--model", "mlp", "--data", online_spec, "--mask", str(spec), "--steps", "2", "--out", str(out), "-q")
    assert result.exit_code == 0, result.output
    assert json.loads((out / "config.json").read_text())["train"]["mask"] == {"masked": ["x_0_0", "x_3_3"]}


def test_missing_data_folder(tmp_path):
    assert_one_line_error(invoke("--data", str(tmp_path / "nowhere"), "-q"), "not found")


def test_data_folder_of_the_wrong_shape(folder, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(folder, bad)
    np.save(bad / "images.npy", np.zeros((32, 4, 4), dtype=np.float32))  # (N, H, W): no channel axis
    assert_one_line_error(invoke("--model", "mlp", "--data", str(bad), "--out", str(tmp_path / "r"), "-q"), str(bad))
    assert not (tmp_path / "r").exists()


def test_folder_that_is_not_simulated_data(tmp_path):
    (tmp_path / "junk").mkdir()
    assert_one_line_error(invoke("--data", str(tmp_path / "junk"), "-q"), "not a simulated dataset")


def test_resume_without_a_checkpoint(tmp_path):
    assert_one_line_error(invoke("--resume", str(tmp_path)), "no checkpoint")
    assert_one_line_error(invoke("--resume", str(tmp_path / "missing")), "not found")


def test_out_not_empty(online_spec, tmp_path):
    (tmp_path / "x.txt").write_text("keep")
    assert_one_line_error(invoke("--model", "mlp", "--data", online_spec, "--out", str(tmp_path), "-q"), "not empty")


def test_ctrl_c_reports_the_saved_checkpoint_and_exits_130(monkeypatch, tmp_path):
    from hlvm import train as lib

    def interrupted(cfg, progress=True, **kw):
        raise lib.TrainingInterrupted(tmp_path / "run", 7)

    monkeypatch.setattr(lib, "train", interrupted)
    result = invoke("--model", "mlp", "--out", str(tmp_path / "run"), "-q")
    assert result.exit_code == 130
    assert "interrupted at step 7" in result.output and f"--resume {tmp_path / 'run'}" in result.output


def test_small_vit_on_an_image_folder_takes_img_size_and_in_chans(tmp_path):
    """A small config trains on real images once the CLI can set their size and channels."""
    from _imagetree import build_tree

    tree = build_tree(tmp_path / "tree")
    out = tmp_path / "run"
    result = invoke(
        "--model", "vit_small_synth", "--data", f"imagefolder:{tree}", "--img-size", "32", "--in-chans", "1",
        "--patch-size", "4", "--mask-unit", "8", "--steps", "2", "--batch-size", "4", "--warmup", "1",
        "--out", str(out), "-q",
    )
    assert result.exit_code == 0, result.output
    model = json.loads((out / "config.json").read_text())["model"]
    assert (model["img_size"], model["in_chans"], model["patch_size"], model["mask_unit"]) == (32, 1, 4, 8)


def test_img_size_that_disagrees_with_simulated_data(folder, tmp_path):
    out = tmp_path / "run"
    assert_one_line_error(invoke("--data", folder, "--img-size", "8", "--out", str(out), "-q"), "img_size 8", "4x4x4")
    assert not out.exists()


def test_objective_options_reach_the_library_typed(monkeypatch, tmp_path):
    from hlvm import train as lib

    seen = {}
    monkeypatch.setattr(lib, "train", lambda cfg, progress=True, **kw: seen.setdefault("cfg", cfg) and tmp_path)
    result = invoke("--objective", "mimae", "--objective-coef", "views=3", "--objective-coef", "infonce=0.5",
                    "--objective-coef", "disjoint=masked", "--mask-ratio", "0.25", "-q")
    assert result.exit_code == 0, result.output
    assert seen["cfg"].objective_coefs == {"views": 3, "infonce": 0.5, "disjoint": "masked"}
    assert isinstance(seen["cfg"].objective_coefs["views"], int)
    seen.clear()
    assert invoke("--objective", "umae", "--objective-coef", "diagonal=true", "--objective-coef", "feature=cls",
                  "--model", "vit_small_synth", "-q").exit_code == 0
    assert seen["cfg"].objective_coefs == {"diagonal": True, "feature": "cls"}


def test_official_presets_train_their_objective_and_options_refine_it(monkeypatch, tmp_path):
    from hlvm import train as lib
    from hlvm.recipes import get_preset

    seen = {}
    monkeypatch.setattr(lib, "train", lambda cfg, progress=True, **kw: seen.setdefault("cfg", cfg) and tmp_path)
    assert invoke("--preset", "mmae_official", "--data", "online", "--model", "vit_small_synth", "-q").exit_code == 0
    recipe = get_preset("mmae_official")
    assert (seen["cfg"].objective, recipe.model, recipe.effective_batch()) == ("mmae_official", "mae_vit_large_patch16", 1024)
    assert seen["cfg"].objective_coefs is None and seen["cfg"].epochs == 200 and seen["cfg"].batch_size == 128
    seen.clear()
    result = invoke("--preset", "umae_official", "--objective", "umae", "--objective-coef", "coef=0.1", "--model",
                    "vit_small_synth", "--data", "online", "-q")
    assert result.exit_code == 0, result.output
    assert (seen["cfg"].objective, seen["cfg"].objective_coefs) == ("umae", {"coef": 0.1})


def test_a_tiny_official_umae_run_through_the_cli(online_spec, tmp_path):
    out = tmp_path / "run"
    result = invoke("--objective", "umae_official", "--model", "vit_small_synth", "--patch-size", "1", "--mask-unit", "1",
                    "--data", online_spec, "--steps", "2", "--batch-size", "4", "--out", str(out), "-q")
    assert result.exit_code == 0, result.output
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["objective"] == "umae_official" and "loss_uniformity" in rows[-1]


def test_resume_says_in_one_warning_line_which_options_it_ignores(online_spec, tmp_path):
    run = tmp_path / "run"
    assert invoke("--model", "mlp", "--data", online_spec, "--steps", "2", "--batch-size", "4", "--out", str(run),
                  "-q").exit_code == 0
    r = invoke("--resume", str(run), "--steps", "50", "--blr", "3", "-q")
    assert r.exit_code == 0, r.output
    warnings = [line for line in r.output.splitlines() if line.startswith("warning:")]
    assert warnings == ["warning: --resume continues the run with its saved config; ignoring --steps, --blr"]
    r = invoke("--resume", str(run), "-q")
    assert r.exit_code == 0 and "warning" not in r.output


def test_a_typo_in_an_online_simulate_config_is_refused(tmp_path):
    spec = tmp_path / "sim.json"
    spec.write_text(json.dumps({"grid": {"depth": 2}, "nosie": "laplace"}))
    out = tmp_path / "r"
    assert_one_line_error(invoke("--model", "mlp", "--data", f"online:{spec}", "--out", str(out), "--steps", "1", "-q"),
                          "unknown simulate config key 'nosie'; did you mean 'noise'?")
    assert not out.exists()
