"""hlvm recon: metrics, effective rank and figures of a trained run; bad input is one line and exit code 2."""

from __future__ import annotations

import json

import pytest
from PIL import Image
from typer.testing import CliRunner

from hlvm.cli.main import app
from hlvm.masks import num_masked

runner = CliRunner()


def test_recon_writes_metrics_images_and_attention(run, tree, tmp_path):
    out = tmp_path / "recon"
    r = runner.invoke(app, ["recon", "--run", str(run), "--data", f"imagefolder:{tree}", "--out", str(out),
                            "--n-images", "10", "--n-saved", "4", "--mask-ratio", "0.5", "--json", "-q"])
    assert r.exit_code == 0, r.output
    s = json.loads(r.output)
    full = json.loads((out / "recon.json").read_text())
    assert s["n_images"] == 10 and s["mask_ratio"] == 0.5 and s["mask_unit"] == 8
    assert len(full["per_image"]["ssim"]) == 10
    # Visible pixels are copied, so the whole-image MSE is the masked-pixel MSE times the masked share.
    share = num_masked(16, 0.5) / 16
    assert s["mse"] == pytest.approx(s["mse_masked"] * share, rel=1e-5)
    assert 0 < s["ssim"] < 1 and 0 < s["fsim"] < 1 and s["psnr"] > 0
    assert 1.0 <= s["effective_rank"] <= min(10, full["feature_dim"])
    for name in ("reconstructions.png", "attention.png"):
        with Image.open(out / name) as im:
            assert im.size[0] > 100
    assert full["provenance"]["git_commit"] is None or len(full["provenance"]["git_commit"]) >= 40


def test_recon_defaults_to_the_runs_mask_ratio_and_is_seeded(run, tree, tmp_path):
    outs = []
    for name in ("a", "b"):
        r = runner.invoke(app, ["recon", "--run", str(run), "--data", f"imagefolder:{tree}",
                                "--out", str(tmp_path / name), "--n-images", "6", "--json", "-q"])
        assert r.exit_code == 0, r.output
        outs.append(json.loads(r.output))
    assert outs[0] == outs[1] and outs[0]["mask_ratio"] == 0.75


def test_bad_recon_input_is_one_line_exit_2(run, tree, tmp_path):
    def err(args, *words):
        r = runner.invoke(app, ["recon", "--run", str(run), "--data", f"imagefolder:{tree}", *args])
        assert r.exit_code == 2, r.output
        lines = [ln for ln in r.output.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), r.output
        for w in words:
            assert w in lines[0]

    err(["--out", str(tmp_path / "o"), "--mask-ratio", "0.01"], "mask ratio 0.01")
    err(["--out", str(tmp_path / "o"), "--mask-ratio", "1.0"], "mask ratio")
    err(["--out", str(tmp_path / "o"), "--data", "imagefolder:/no/such/dir"], "/no/such/dir")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep me")
    err(["--out", str(tmp_path / "full")], "not empty")
    assert (tmp_path / "full" / "x").read_text() == "keep me"
    assert not (tmp_path / "o").exists()
