"""``hlvm score`` and ``hlvm.score``: a frozen suite on any encoder, a scorecard beside every control, bad encoders refused."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import hlvm
from hlvm.cli.main import app
from hlvm.errors import ConfigError
from hlvm.rules import SAME_WIDTH
from hlvm.scorecard import SUITES, from_object, get_suite
from _cli import assert_one_line_error

runner = CliRunner()
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
CELL_KEYS = {"mask_kind", "mask_ratio", "mask_unit", "dim_c", "code_width", "r2_ca_noise", "r2_private_visible_noise",
             "selectivity", "r2_ca_noise_linear", "r2_private_visible_noise_linear", "selectivity_linear", "verdict",
             "strongest_control"}


def invoke(*args, cwd: Path | None = None, monkeypatch=None):
    if cwd is not None:
        monkeypatch.chdir(cwd)
    return runner.invoke(app, ["score", *map(str, args)])


@pytest.fixture(scope="module")
def card_dir(tmp_path_factory):
    """The example encoder (2x2 average pooling) scored on the quick tier, through the CLI, from its own folder."""
    out = tmp_path_factory.mktemp("score") / "card"
    mp = pytest.MonkeyPatch()
    try:
        res = invoke("--encoder", "avgpool_encoder:make", "--out", out, "--quick", "-q", cwd=EXAMPLES, monkeypatch=mp)
    finally:
        mp.undo()
        sys.modules.pop("avgpool_encoder", None)
    assert res.exit_code == 0, res.output
    return out


def test_a_user_module_gets_a_scorecard_with_every_cell_and_control(card_dir):
    card = json.loads((card_dir / "scorecard.json").read_text())
    assert card["suite"]["name"] == "v1/quick" and card["encoder"]["encoder"] == "avgpool_encoder:make"
    assert len(card["cells"]) >= 6
    for cell in card["cells"]:
        assert CELL_KEYS <= set(cell), CELL_KEYS - set(cell)
        assert cell["code_width"] == 5 * 4 * 4  # 2x2 pooling of 5 channels of 8x8
        assert cell["verdict"].startswith("not applicable")  # 80 dims is not dim_c: Theorem 2 does not apply
        sc = cell["strongest_control"]
        assert set(sc["per_control"]) == {"pca", "random_projection", "linear_mae"}  # no architecture: no untrained
        assert sc["control"] in sc["per_control"]
    assert set(card["controls"]) == {"pixels", "oracle", "pca", "random_projection", "linear_mae"}
    assert all(len(v) == len(card["cells"]) for v in card["controls"].values())
    # The true c is dim_c wide on every mask, Theorem 2's ideal: it never fails (2 replicates decide little: t = 12.7).
    oracle = [c["verdict"] for c in card["controls"]["oracle"]]
    assert "hold" in oracle and all(v in ("hold", "inconclusive") or v.startswith("not applicable") for v in oracle)
    prov = card["provenance"]
    for key in ("hlvm_version", "git_commit", "config_hash", "python", "numpy", "torch", "platform", "created_utc"):
        assert key in prov
    assert "argv" not in prov  # the command line names --out: it would change the bytes
    text = (card_dir / "scorecard.md").read_text()
    assert "![" in text and "| strongest control of its width |" in text
    assert (card_dir / "scorecard.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_same_encoder_suite_and_seed_give_the_same_bytes_but_for_the_time(card_dir, tmp_path, monkeypatch):
    res = invoke("--encoder", "avgpool_encoder:make", "--out", tmp_path / "again", "--quick", "-q", cwd=EXAMPLES,
                 monkeypatch=monkeypatch)
    sys.modules.pop("avgpool_encoder", None)
    assert res.exit_code == 0, res.output

    def without_time(p: Path) -> str:
        card = json.loads(p.read_text())
        card["provenance"].pop("created_utc")
        return json.dumps(card, sort_keys=True)

    assert without_time(card_dir / "scorecard.json") == without_time(tmp_path / "again" / "scorecard.json")
    assert (card_dir / "scorecard.png").read_bytes() == (tmp_path / "again" / "scorecard.png").read_bytes()


def test_the_python_api_hands_the_mask_to_an_encoder_that_takes_one():
    # An encoder that returns exactly the visible pixels, found through the mask it is handed, is the pixels control.
    def visible(images, mask):
        return images[:, :, ~mask].reshape(len(images), -1)

    card = hlvm.score(visible, suite="v1", quick=True)
    for mine, pix in zip(card["cells"], card["controls"]["pixels"], strict=True):
        for key in ("r2_ca_noise", "r2_private_visible_noise", "selectivity", "r2_ca_noise_linear"):
            assert mine[key] == pix[key], key


def test_a_run_is_scored_beside_its_untrained_twin_and_a_run_of_another_shape_is_refused(tmp_path):
    from hlvm.train import TrainConfig, train

    suite = get_suite("v1")
    spec = tmp_path / "sim.json"
    spec.write_text(suite.simulate_config().to_json())
    run = train(TrainConfig(model="mlp", data=f"online:{spec}", steps=2, batch_size=16, warmup=1, device="cpu",
                            out=str(tmp_path / "run"), bottleneck=2), progress=False)
    res = runner.invoke(app, ["score", "--run", str(run), "--out", str(tmp_path / "card"), "--quick", "-q"])
    assert res.exit_code == 0, res.output
    card = json.loads((tmp_path / "card" / "scorecard.json").read_text())
    assert "untrained" in card["controls"]
    assert set(card["cells"][0]["strongest_control"]["per_control"]) == set(SAME_WIDTH)
    # A 2-wide code where dim_c is 2 (aligned masks whose c is the root): Theorem 2 applies and is decided by the rule.
    aligned = [c for c in card["cells"] if c["mask_kind"] == "aligned" and c["dim_c"] == 2]
    assert aligned and all(c["verdict"] in ("hold", "fail", "inconclusive") for c in aligned)
    other = tmp_path / "other.json"
    other.write_text(get_suite("v1").simulate_config().to_json().replace('"depth": 3', '"depth": 2'))
    small = train(TrainConfig(model="mlp", data=f"online:{other}", steps=1, batch_size=8, warmup=1, device="cpu",
                              out=str(tmp_path / "small")), progress=False)
    assert_one_line_error(runner.invoke(app, ["score", "--run", str(small), "--out", str(tmp_path / "c2"), "-q"]),
                          "its model takes 4x4 images")
    assert not (tmp_path / "c2").exists()


def test_a_timm_architecture_loads_its_checkpoint_and_a_checkpoint_without_its_weights_is_refused(tmp_path):
    import timm

    opts = {"patch_size": 2, "embed_dim": 16, "depth": 1, "num_heads": 2}
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=8, in_chans=5, **opts)
    ckpt = tmp_path / "ckpt.pt"
    torch.save({"model": {**model.state_dict(), "decoder_pred.weight": torch.zeros(1)}}, ckpt)
    args = ["score", "--timm", "vit_tiny_patch16_224", "--timm-options", json.dumps(opts), "--checkpoint", str(ckpt), "--quick", "-q"]
    res = runner.invoke(app, [*args, "--out", str(tmp_path / "card")])
    assert res.exit_code == 0, res.output
    card = json.loads((tmp_path / "card" / "scorecard.json").read_text())
    assert card["encoder"]["dropped_keys"] == 1 and card["cells"][0]["code_width"] == 16 and "untrained" in card["controls"]
    torch.save({"model": {"pos_embed": model.state_dict()["pos_embed"]}}, tmp_path / "bad.pt")
    bad = [a if a != str(ckpt) else str(tmp_path / "bad.pt") for a in args]
    assert_one_line_error(runner.invoke(app, [*bad, "--out", str(tmp_path / "c2")]), "lacks")
    assert not (tmp_path / "c2").exists()


BAD_MODULE = '''
import numpy as np

def wrong_shape():
    return lambda x: x.reshape(len(x), -1)[:, :3][:1]

def nan_codes():
    return lambda x: np.full((len(x), 4), np.nan)

def no_width():
    return lambda x: np.zeros((len(x), 0))

def raises():
    raise RuntimeError("cannot build")

def not_an_encoder():
    return 42

value = 3
'''


@pytest.mark.parametrize("spec, message", [
    ("nosuch:make", "no module 'nosuch'"),
    ("badenc:missing", "has no 'missing'"),
    ("badenc:value", "'value' is not callable"),
    ("badenc:raises", "raises() failed: RuntimeError: cannot build"),
    ("badenc:not_an_encoder", "must be a torch.nn.Module or a function"),
    ("badenc:wrong_shape", "returned shape (1, 3) for a batch of"),
    ("badenc:nan_codes", "returned NaN codes"),
    ("badenc:no_width", "codes of width 0"),
    ("badenc", "must be MODULE:CALLABLE"),
])
def test_a_bad_encoder_is_one_line_exit_2_and_leaves_no_scorecard(spec, message, tmp_path, monkeypatch):
    (tmp_path / "badenc.py").write_text(BAD_MODULE)
    sys.modules.pop("badenc", None)
    res = invoke("--encoder", spec, "--out", tmp_path / "card", "--quick", "-q", cwd=tmp_path, monkeypatch=monkeypatch)
    sys.modules.pop("badenc", None)
    assert_one_line_error(res, message)
    assert not (tmp_path / "card").exists()


@pytest.mark.parametrize("args, message", [
    ([], "give exactly one encoder source"),
    (["--encoder", "a:b", "--timm", "vit_tiny_patch16_224"], "got --encoder, --timm"),
    (["--encoder", "a:b", "--checkpoint", "x.pt"], "--checkpoint goes with --timm"),
    (["--encoder", "a:b", "--suite", "v0"], "unknown suite 'v0'; choose from v1"),
    (["--encoder", "a:b", "--device", "tpu"], "device must be cpu or cuda"),
    (["--encoder", "a:b", "--batch-size", "0"], "batch size must be >= 1"),
    (["--timm", "vit_tiny_patch16_224", "--timm-options", "{"], "--timm-options is not JSON"),
])
def test_bad_options_are_refused_before_anything_runs(args, message, tmp_path):
    assert_one_line_error(runner.invoke(app, ["score", *args, "--out", str(tmp_path / "card")]), message)
    assert not (tmp_path / "card").exists()


def test_a_model_on_another_device_is_refused():
    model = torch.nn.Linear(3, 2, device="meta")
    with pytest.raises(ConfigError, match="on meta but scoring runs on cpu"):
        from_object(model, device="cpu")


def test_v1_is_the_default_studys_grid_and_frozen():
    from hlvm.sweep import load_sweep_config

    study = load_sweep_config(Path(__file__).resolve().parents[1] / "studies" / "mask-sweep" / "config.json")
    v1 = SUITES["v1"]
    assert (v1.mask_ratios, v1.mask_units, tuple(v1.mask_kinds), dict(v1.graph), v1.n_eval) == (
        study.mask_ratios, study.mask_units, study.mask_kinds, study.graph, study.n_eval)
    assert len(v1.cells()) == 24
    # The hash pins every field: editing v1 in place would change it (make a v2 instead).
    assert v1.config_hash() == "17833f8e78c27124"
    np.testing.assert_equal(get_suite("v1", quick=True).mask_units, (2,))
