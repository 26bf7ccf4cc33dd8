"""hlvm probe: top-1 of a trained run on a real-photo folder; every bad input is one line and exit code 2."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from hlvm.cli.main import app
from _cli import assert_one_line_error as _one_line_error

runner = CliRunner()



def test_probe_prints_top1_on_the_held_out_split(run, tree, tmp_path):
    out = tmp_path / "probe.json"
    r = runner.invoke(app, ["probe", "--run", str(run), "--data", f"imagefolder:{tree}", "--json", "-q",
                            "--test-fraction", "0.3", "--out", str(out)])
    assert r.exit_code == 0, r.output
    rec = json.loads(r.output)
    # Per class round(0.3 * n): even 10 -> 3, odd 10 -> 3, skimage 6 -> 2 held out.
    assert (rec["n_test"], rec["n_train"], rec["n_classes"], rec["n_features"]) == (8, 18, 3, 32)
    assert rec["top1"] * 8 == pytest.approx(round(rec["top1"] * 8))  # a count of correct images out of 8
    assert rec["config"]["method"] == "lbfgs" and rec["config"]["pool"] == "cls"
    assert json.loads(out.read_text())["top1"] == rec["top1"]
    r = runner.invoke(app, ["probe", "--run", str(run), "--data", f"imagefolder:{tree}", "-q", "--method", "lars",
                            "--epochs", "2", "--batch", "8", "--pool", "mean"])
    assert r.exit_code == 0 and "top-1" in r.output and "lars, mean pool" in r.output, r.output


def test_probe_uses_train_and_val_subfolders_when_present(run, tree, tmp_path):
    import shutil

    root = tmp_path / "split"
    shutil.copytree(tree, root / "train")
    shutil.copytree(tree, root / "val")
    r = runner.invoke(app, ["probe", "--run", str(run), "--data", f"imagefolder:{root}", "--json", "-q"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["n_test"] == 26 and json.loads(r.output)["n_train"] == 26


def test_probe_on_a_checkpoint_without_an_encoder_is_exit_2(tree, tmp_path):
    (tmp_path / "run").mkdir()
    torch.save({"model": {"decoder_pred.weight": torch.zeros(3, 3)}}, tmp_path / "run" / "checkpoint.pt")
    r = runner.invoke(app, ["probe", "--run", str(tmp_path / "run"), "--data", f"imagefolder:{tree}"])
    _one_line_error(r, "no encoder weights")


@pytest.mark.parametrize(
    "args, words",
    [
        (["--data", "imagefolder:/nonexistent/imgs"], ["/nonexistent/imgs", "does not exist"]),
        (["--method", "adam"], ["method"]),
        (["--pool", "max"], ["pool"]),
        (["--test-fraction", "1.5"], ["test_fraction"]),
    ],
)
def test_bad_probe_input_is_one_line_exit_2(run, tree, args, words):
    base = {"--run": str(run), "--data": f"imagefolder:{tree}"}
    for k, v in zip(args[::2], args[1::2], strict=True):
        base[k] = v
    r = runner.invoke(app, ["probe", *[x for kv in base.items() for x in kv]])
    _one_line_error(r, *words)


def test_probe_on_an_empty_folder_and_a_missing_run(run, tmp_path, tree):
    (tmp_path / "empty").mkdir()
    _one_line_error(runner.invoke(app, ["probe", "--run", str(run), "--data", f"imagefolder:{tmp_path / 'empty'}"]),
                    "empty image folder")
    _one_line_error(runner.invoke(app, ["probe", "--run", str(tmp_path / "nope"), "--data", f"imagefolder:{tree}"]),
                    "does not exist")


def test_train_on_an_image_size_the_patch_does_not_divide_is_exit_2(tree, tmp_path):
    r = runner.invoke(app, ["train", "--model", "mae_vit_base_patch16", "--patch-size", "15", "--mask-unit", "15",
                            "--data", f"imagefolder:{tree}", "--steps", "1", "--out", str(tmp_path / "r"), "-q"])
    _one_line_error(r, "patch_size 15 does not divide")
    assert not (tmp_path / "r").exists()


def test_a_probe_on_too_few_held_out_images_warns_with_the_minimum(run, tree):
    from hlvm.probe import MIN_HELD_OUT, SmallHeldOutWarning

    with pytest.warns(SmallHeldOutWarning, match=rf"top-1 on 8 held-out images is noise .* at least {MIN_HELD_OUT}"):
        r = runner.invoke(app, ["probe", "--run", str(run), "--data", f"imagefolder:{tree}", "-q", "--test-fraction", "0.3"])
    assert r.exit_code == 0 and "top-1" in r.output
