"""hlvm.realmask.curve: the regime's learning curve measures every listed step of one run, and redraws its figure."""

from __future__ import annotations

import json
from pathlib import Path

from hlvm.realmask.curve import learning_curve
from hlvm.realmask.data import load_imagefolder

EVAL = {"crop_fraction": 1.0, "probe": {"l2": 0.0001, "max_iter": 10}, "recon_images": 6, "recon_seed": 0,
        "n_examples": 2}
MODEL = {"arch": "vit", "img_size": 32, "in_chans": 1, "patch_size": 4, "mask_unit": 4, "embed_dim": 16, "depth": 1,
         "num_heads": 2, "decoder_embed_dim": 16, "decoder_depth": 1, "decoder_num_heads": 2, "mlp_ratio": 2.0,
         "norm_pix_loss": False}
REGIME = {"seed": 100, "mask_ratio": 0.75, "img_size": 32, "batch_size": 4, "blr": 0.0015, "warmup": 1,
          "weight_decay": 0.05, "candidates": {"tiny": {"steps": 4, "probe_at": [2, 4], "model": MODEL}}}


def test_learning_curve_probes_each_listed_step_and_keeps_its_record(tree, tmp_path):
    splits = load_imagefolder(Path(tree), 1, 28, 0.3, 0)
    out = tmp_path / "curve"
    res = learning_curve(REGIME, EVAL, splits, out, threads=1, work=tmp_path / "work")
    assert [p["step"] for p in res["curves"]["tiny"]] == [2, 4]
    assert 0.0 <= res["baselines"]["pixels"] <= 1.0 and "probe_top1_mean" in res["baselines"]["untrained"]["tiny"]
    assert [e["what"] for e in res["log"]] == ["pixels", "tiny untrained", "tiny step 2", "tiny step 4"]
    assert json.loads(out.with_suffix(".json").read_text())["curves"] == res["curves"]
    assert out.with_suffix(".png").stat().st_size > 1000 and res["losses"]["tiny"][-1][0] == 4
