"""studies/mask-sweep-vit: its two sweep configs are the default study's grid at token patch 1 and 2,
and compare.py puts the MLP's and the ViTs' verdicts side by side."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from hlvm.sweep import load_sweep_config

STUDY = Path(__file__).resolve().parents[1] / "studies" / "mask-sweep-vit"
DEFAULT = STUDY.parent / "mask-sweep" / "config.json"


def _compare():
    spec = importlib.util.spec_from_file_location("mask_sweep_vit_compare", STUDY / "compare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_vit_configs_are_the_default_grid_at_token_patch_1_and_2():
    mlp, p1, p2 = (load_sweep_config(p) for p in (DEFAULT, STUDY / "config.json", STUDY / "config-p2.json"))
    shared = ("mask_ratios", "seeds", "arms", "controls", "mask_kinds", "graph", "n_train", "n_eval", "data_seed",
              "eval_masks", "predict_masks")  # fmt: skip
    for vit in (p1, p2):
        assert vit.model == "vit_tiny_synth" and len(vit.seeds) == 3
        assert {k: getattr(vit, k) for k in shared} == {k: getattr(mlp, k) for k in shared}
    assert p1.mask_units == mlp.mask_units == (1, 2) and "patch_size" not in p1.model_options  # the config's patch 1
    assert p2.model_options == {"patch_size": 2} and p2.mask_units == (2, 4)  # u = p and 2p, as Kong et al.'s Table 1
    assert (p1.steps, p1.batch, p1.blr) == (p2.steps, p2.batch, p2.blr)  # the patch is the only difference
    assert (len(p1.points()), len(p2.points())) == (72 + 360, 60 + 300)  # trained + controls (6 per cell and seed, 4 per width)


def _verdicts(folder: Path, trained: dict[str, str], t2: list[str], *, model: str, units: list[int], patch=None) -> Path:
    """A results folder with a verdicts.json (hlvm.report's layout) and the sweep.json naming its model."""
    folder.mkdir(parents=True)
    claims = []
    for claim, verdict in trained.items():
        claims += [
            {"claim": claim, "measure": "R^2" if claim == "1" else "A", "panel": "random eval masks; mae, random-trained, no bottleneck",
             "representation": "code", "verdicts": {"trained": verdict, "pixels": "hold", "theory": "fail"},
             "trained_vs_pixels": "evidence about MAE in 1 of 2 parts" if claim == "2" else
                                  "explained without training (0 of 1 parts differ from the pixels)",
             "evidence": [{"scope": "s", "label": "x", "d": -0.25, "se": 0.01, "n": 3}]},
            # the linear-probe twin and another representation are left out of the table
            {"claim": claim, "measure": "A_linear", "panel": "random eval masks; mae, random-trained, no bottleneck",
             "representation": "code", "verdicts": {"trained": "WRONG"}, "trained_vs_pixels": "WRONG"},
            {"claim": claim, "measure": "R^2", "panel": "random eval masks; mae, random-trained, no bottleneck",
             "representation": "plain", "verdicts": {"trained": "WRONG"}, "trained_vs_pixels": "WRONG"},
        ]  # fmt: skip
    cells = [{"panel": "aligned eval masks; mae, aligned-trained, bottleneck dim_c", "verdicts": {"trained": v, "pixels": "fail"},
              "trained_vs_pixels": "evidence about MAE" if v == "hold" else "explained without training"} for v in t2]  # fmt: skip
    (folder / "verdicts.json").write_text(json.dumps({"seeds": [0, 1, 2], "claims": claims, "theorem2": cells}))
    options = {} if patch is None else {"patch_size": patch}
    cfg = {"model": model, "model_options": options, "mask_units": units, "steps": 800, "batch": 64}
    (folder / "sweep.json").write_text(json.dumps({"config": cfg}))
    return folder


def test_compare_writes_one_row_per_claim_and_panel_with_each_model_in_its_column(tmp_path):
    mlp = _verdicts(tmp_path / "mlp", {"1": "hold", "2": "fail"}, ["hold", "hold"], model="mlp", units=[1, 2])
    p1 = _verdicts(tmp_path / "p1", {"1": "inconclusive", "2": "hold"}, ["hold", "fail"], model="vit_tiny_synth", units=[1, 2])
    p2 = _verdicts(tmp_path / "p2", {"1": "fail"}, ["fail"], model="vit_tiny_synth", units=[2, 4], patch=2)
    out = tmp_path / "comparison.md"
    assert _compare().main(["--mlp", str(mlp), "--vit", str(p1), "--vit", str(p2 / "verdicts.json"), "--out", str(out)]) == 0
    text = out.read_text()
    assert "WRONG" not in text
    rows = [line.split(" | ") for line in text.splitlines() if line.startswith("| 1.") or line.startswith("| 2.") or line.startswith("| T2.")]
    assert len(rows) == 3
    head = next(line for line in text.splitlines() if line.startswith("| claim"))
    assert head.endswith("| MLP trained | vit_tiny_synth p=1 trained | vit_tiny_synth p=2 trained (its pixels) |")
    c1, c2, t2 = rows
    # pixels and theory from the MLP study; each trained model's verdict with its own evidence
    assert c1[2:4] == ["hold", "n/a"] and c1[4].startswith("**hold**: explained without training (0/1 parts)")
    assert "Δ R^2(CA) -0.250 ± 0.010" in c1[4]
    assert c1[5].startswith("inconclusive: ") and c1[6].startswith("**fail** (hold): ")  # p=2 runs other units
    assert c2[3] == "fail" and c2[4].startswith("**fail**: evidence about MAE (1/2 parts)")
    assert c2[5].startswith("**hold**: evidence about MAE") and c2[6].strip(" |") == "-"  # p=2 has no claim-2 row
    # Theorem 2: hlvm.rules.overall over the cells, and how many cells differ from the pixels
    assert t2[4] == "**hold**: evidence about MAE (2/2 cells)"
    assert t2[5] == "**mixed**: evidence about MAE (1/2 cells)"
    assert t2[6].strip(" |") == "**fail** (fail): explained without training (0/1 cells)"


def test_compare_refuses_old_or_missing_verdicts_in_one_line(tmp_path, capsys):
    old = tmp_path / "old"
    old.mkdir()
    (old / "verdicts.json").write_text(json.dumps({"claims": {"1": {"verdict": "hold"}}, "parts": []}))  # before controls
    new = _verdicts(tmp_path / "new", {"1": "hold"}, [], model="vit_tiny_synth", units=[1, 2])
    compare = _compare()
    for argv, message in [
        (["--mlp", str(old), "--vit", str(new)], "re-run `hlvm report"),
        (["--mlp", str(tmp_path / "none"), "--vit", str(new)], "not found"),
        (["--mlp", str(new), "--vit", str(new), "--out", str(tmp_path)], "is a folder"),
    ]:
        assert compare.main([*argv, "--out", str(tmp_path / "c.md")] if "--out" not in argv else argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "c.md").exists()


def test_compare_bad_options_exit_2():
    with pytest.raises(SystemExit) as e:
        _compare().main(["--nope"])
    assert e.value.code == 2
