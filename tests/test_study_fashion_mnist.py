"""studies/fashion-mnist-mask: the runner resumes without redoing work, reports from results.json alone,
and refuses bad input with one line; its training loop resumes bit for bit; its verdict rules decide as written.

Everything runs on the tiny real-photo tree (tests/_imagetree.py) with a tiny config, never on Fashion-MNIST.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

STUDY = Path(__file__).resolve().parents[1] / "studies" / "fashion-mnist-mask"
sys.path.insert(0, str(STUDY))

from hlvm.realmask import grid, rules, runner  # noqa: E402
from hlvm.realmask.pretrain import CHECKPOINT, MODEL, RunSpec, batch_indices, train_run  # noqa: E402

TINY = {
    "dataset": {"source": "/nonexistent/fashion-mnist", "debian_package": "dataset-fashion-mnist", "source_size": 28,
                "test_fraction": 0.3, "split_seed": 0},
    "model": {"arch": "vit", "img_size": 32, "in_chans": 1, "patch_size": 4, "embed_dim": 16, "depth": 1,
              "num_heads": 2, "decoder_embed_dim": 16, "decoder_depth": 1, "decoder_num_heads": 2, "mlp_ratio": 2.0,
              "norm_pix_loss": False},
    "train": {"steps": 6, "batch_size": 4, "blr": 0.0015, "warmup": 1, "weight_decay": 0.05, "ckpt_every": 2,
              "heldout_every": 4, "heldout_n": 5},
    "grid": {"mask_ratios_at_unit": {"unit": 4, "ratios": [0.75, 0.9]},
             "mask_units_at_ratio": {"ratio": 0.75, "units": [4, 8]}, "seeds": [0, 1]},
    "eval": {"crop_fraction": 1.0, "probe": {"l2": 0.0001, "max_iter": 10}, "recon_images": 6, "recon_seed": 0,
             "n_examples": 2, "pca": True},
}


def _config(tmp_path: Path, **changes) -> Path:
    cfg = json.loads(json.dumps(TINY))
    for dotted, value in changes.items():
        *path, last = dotted.split(".")
        d = cfg
        for k in path:
            d = d[k]
        d[last] = value
    p = tmp_path / f"config-{len(list(tmp_path.glob('config-*.json')))}.json"
    p.write_text(json.dumps(cfg))
    return p


def _main(*argv: str) -> int:
    import run  # studies/fashion-mnist-mask/run.py

    return run.main([*argv, "--workers", "1", "--threads", "1", "--no-progress", "--no-install"])


def _one_error_line(capsys, code: int, *words: str) -> None:
    captured = capsys.readouterr()
    assert code == 2, captured
    lines = [ln for ln in captured.err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert "Traceback" not in captured.err + captured.out
    for w in words:
        assert w in lines[0], lines[0]


@pytest.fixture(scope="module")
def finished(tree, tmp_path_factory):
    """One whole tiny study on the tree: (out folder, config path)."""
    tmp = tmp_path_factory.mktemp("fm")
    cfg = _config(tmp)
    out = tmp / "out"
    assert _main("--config", str(cfg), "--data", f"imagefolder:{tree}", "--out", str(out)) == 0
    return out, cfg


# --- the runner ------------------------------------------------------------------------------


def test_results_json_top_level_holds_probe_top1_per_run_and_both_baselines(finished):
    out, _ = finished
    res = json.loads((out / "results.json").read_text())
    assert res["complete"] and res["items_done"] == res["items_total"] == 2 + 2 * (1 + 3)  # pixels, pca, per seed
    assert set(res["probe_top1"]) == {"r0.75-u4", "r0.9-u4", "r0.75-u8"}
    for per_pool in res["probe_top1"].values():
        assert set(per_pool) == {"mean", "cls"} and set(per_pool["mean"]) == {"0", "1"}
        assert all(0.0 <= v <= 1.0 for v in per_pool["mean"].values())
    assert 0.0 <= res["baselines"]["pixels"] <= 1.0
    assert set(res["baselines"]["untrained"]["mean"]) == {"0", "1"}
    assert 0.0 <= res["baselines"]["pca"] <= 1.0 and res["pca"]["width"] == TINY["model"]["embed_dim"]
    row = next(r for r in res["runs"] if r["run"] == "r0.9-u4" and r["seed"] == 1)
    for key in ("nomask_ssim", "nomask_fsim", "nomask_psnr", "nomask_mse", "trainmask_ssim", "trainmask_mse_masked",
                "effective_rank_mean", "effective_rank_cls", "final_loss"):
        assert np.isfinite(row[key]), key
    assert row["mask_ratio"] == 0.9 and row["steps"] == 6 and row["losses"][-1][0] == 6
    assert [s for s, _ in row["heldout_losses"]] == [0, 4, 6] and row["final_heldout_loss"] == row["heldout_losses"][-1][1]
    assert (out / "report.md").is_file() and (out / "probe.png").is_file() and (out / "examples.png").is_file()
    assert (out / "heldout_loss.png").is_file()
    md = (out / "report.md").read_text()
    assert "## Against the strongest control" in md and "## Held-out loss" in md and "PCA, 16 components" in md


def test_the_untrained_control_is_each_seeds_initial_encoder(finished, tree):
    # A run's step 0 is init_model(mcfg, seed): the control of seed s must differ from seed s' and equal a fresh init.
    out, _ = finished
    from hlvm.train import init_model

    res = json.loads((out / "results.json").read_text())
    cfg = res["config"]
    a, b = (init_model(grid.model_config(cfg, 4), s) for s in (0, 1))
    assert not torch.equal(a.blocks[0].attn.qkv.weight, b.blocks[0].attn.qkv.weight)
    # The unit changes the masks, never the weights: one untrained control serves every unit of a seed.
    c = init_model(grid.model_config(cfg, 8), 0)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), c.state_dict().values(), strict=True))


def test_report_is_produced_from_results_json_alone(finished, tmp_path):
    out, _ = finished
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(out / "results.json", alone / "results.json")
    import report  # studies/fashion-mnist-mask/report.py

    assert report.main([str(alone)]) == 0
    assert (alone / "report.md").read_text() == (out / "report.md").read_text()
    for fig in ("probe.png", "recon_nomask.png", "recon_trainmask.png", "examples.png"):
        assert (alone / fig).stat().st_size > 1000, fig
    text = (alone / "report.md").read_text()
    # The rules come before the numbers, and every run row has its controls beside it.
    assert text.index("## The rules") < text.index("## Linear probe") < text.index("## Verdicts")
    assert text.count("explained without training") + text.count("evidence about MAE") >= 2 * 3


def test_an_interrupted_study_resumes_without_redoing_finished_items(tree, tmp_path, monkeypatch, capsys):
    cfg = _config(tmp_path)
    out = tmp_path / "out"
    calls: list[str] = []
    real = runner.do_item

    def stop_at_fourth(item, *args, **kwargs):  # noqa: ANN001
        calls.append(item.folder)
        if len(calls) == 4:
            raise KeyboardInterrupt  # Ctrl-C while the fourth item is being measured
        return real(item, *args, **kwargs)

    monkeypatch.setattr(runner, "do_item", stop_at_fourth)
    assert _main("--config", str(cfg), "--data", f"imagefolder:{tree}", "--out", str(out)) == 130
    assert "--resume" in capsys.readouterr().err
    first = calls[:3]
    done = {f: (out / f / "result.json").stat().st_mtime_ns for f in first}
    partial = json.loads((out / "results.json").read_text())
    assert not partial["complete"] and partial["items_done"] == 3
    # Without --resume the folder is refused; with it, only what is left is done.
    assert _main("--config", str(cfg), "--data", f"imagefolder:{tree}", "--out", str(out)) == 2
    calls.clear()
    monkeypatch.setattr(runner, "do_item", lambda item, *a, **k: (calls.append(item.folder), real(item, *a, **k))[1])
    assert _main("--config", str(cfg), "--data", f"imagefolder:{tree}", "--out", str(out), "--resume") == 0
    assert not set(calls) & set(first) and len(calls) == 10 - 3
    assert {f: (out / f / "result.json").stat().st_mtime_ns for f in first} == done
    assert json.loads((out / "results.json").read_text())["complete"]
    # A finished study resumed again does nothing.
    calls.clear()
    assert _main("--config", str(cfg), "--data", f"imagefolder:{tree}", "--out", str(out), "--resume") == 0
    assert calls == []


def test_two_worker_processes_stop_together_resume_and_match_one_process(finished, tree, tmp_path):
    # Interrupted from the parent after the second item: the workers stop (checkpointed), finished items stay;
    # resumed with two workers, the study's numbers are those of the single-process study, bit for bit.
    from hlvm.realmask.data import load_imagefolder

    out_ref, _ = finished
    ref = json.loads((out_ref / "results.json").read_text())
    cfg = grid.load_config(_config(tmp_path))
    splits = load_imagefolder(Path(tree), 1, 28, 0.3, 0)
    study = {"config": cfg, "data": f"imagefolder:{tree}"}
    out = tmp_path / "out"
    runner.open_out(out, study, overwrite=False)
    lines: list[str] = []

    def log(msg: str) -> None:
        lines.append(msg)
        if len(lines) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        runner.run_study(cfg, splits, out, device=torch.device("cpu"), study=study, workers=2, progress=False, log=log)
    kept = json.loads((out / "results.json").read_text())
    assert 2 <= sum((out / i.folder / "result.json").is_file() for i in grid.items(cfg)) < kept["items_total"]
    res = runner.run_study(cfg, splits, out, device=torch.device("cpu"), study=study, workers=2, progress=False,
                           log=lambda m: None)
    assert res["complete"] and res["probe_top1"] == ref["probe_top1"] and res["baselines"] == ref["baselines"]
    key = lambda r: (r["run"], r["seed"])  # noqa: E731
    for a, b in zip(sorted(res["runs"], key=key), sorted(ref["runs"], key=key), strict=True):
        assert a["losses"] == b["losses"] and a["nomask_ssim"] == b["nomask_ssim"]


def test_resuming_with_another_config_is_refused(finished, tree, tmp_path, capsys):
    out, _ = finished
    other = _config(tmp_path, **{"train.steps": 7})
    code = _main("--config", str(other), "--data", f"imagefolder:{tree}", "--out", str(out), "--resume")
    _one_error_line(capsys, code, "another config", "train.steps")


# --- bad input: one line, exit 2, nothing written ---------------------------------------------


def test_existing_out_without_resume_or_overwrite_is_one_line(finished, tree, capsys):
    out, cfg = finished
    before = sorted(p.name for p in out.iterdir())
    code = _main("--config", str(cfg), "--data", f"imagefolder:{tree}", "--out", str(out))
    _one_error_line(capsys, code, str(out), "--resume", "--overwrite")
    assert sorted(p.name for p in out.iterdir()) == before


def test_missing_dataset_that_cannot_be_installed_is_one_line(tmp_path, capsys):
    cfg = _config(tmp_path)
    code = _main("--config", str(cfg), "--out", str(tmp_path / "out"))  # fashion-mnist at /nonexistent, --no-install
    _one_error_line(capsys, code, "Fashion-MNIST not found", "/nonexistent/fashion-mnist")
    assert not (tmp_path / "out").exists()


def test_without_apt_get_the_install_is_one_data_error(tmp_path, monkeypatch):
    from hlvm.errors import DataError
    from hlvm.realmask import data as fdata

    monkeypatch.setattr(fdata.shutil, "which", lambda name: None)
    with pytest.raises(DataError, match="apt-get is not available") as e:
        fdata.ensure_fashion_mnist(tmp_path, "dataset-fashion-mnist")
    assert "\n" not in str(e.value)


def test_unreadable_image_is_one_line_naming_it_and_writes_nothing(tree, tmp_path, capsys):
    bad = tmp_path / "tree"
    shutil.copytree(tree, bad)
    (bad / "odd" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really" * 20)
    cfg = _config(tmp_path)
    code = _main("--config", str(cfg), "--data", f"imagefolder:{bad}", "--out", str(tmp_path / "out"))
    _one_error_line(capsys, code, "broken.png")
    assert not (tmp_path / "out").exists()
    # With --overwrite over an existing study, the old study survives the failed start.
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "keep.txt").write_text("x")
    code = _main("--config", str(cfg), "--data", f"imagefolder:{bad}", "--out", str(tmp_path / "old"), "--overwrite")
    _one_error_line(capsys, code, "broken.png")
    assert (tmp_path / "old" / "keep.txt").is_file()


@pytest.mark.parametrize("change, words", [
    ({"grid.seeds": []}, ["seeds"]),
    ({"grid.mask_ratios_at_unit.ratios": [0.001]}, ["0.001"]),
    ({"model.mask_unit": 4}, ["mask_unit"]),
    ({"model.embed_dim": 15}, ["embed_dim"]),
    ({"train.heldout_n": 0}, ["heldout_every", "heldout_n"]),
    ({"train.heldout_every": -1}, ["heldout_every"]),
    ({"eval.pca": "yes"}, ["eval.pca"]),
])
def test_bad_config_is_one_line(tree, tmp_path, capsys, change, words):
    code = _main("--config", str(_config(tmp_path, **change)), "--data", f"imagefolder:{tree}", "--out",
                 str(tmp_path / "out"))
    _one_error_line(capsys, code, *words)
    assert not (tmp_path / "out").exists()


def test_malformed_config_and_data_spec_are_one_line(tree, tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    _one_error_line(capsys, _main("--config", str(bad), "--out", str(tmp_path / "o")), "not valid JSON")
    code = _main("--config", str(_config(tmp_path)), "--data", "mnist", "--out", str(tmp_path / "o"))
    _one_error_line(capsys, code, "--data", "mnist")


# --- the training loop -------------------------------------------------------------------------


def _tiny_training(tree):
    from hlvm.realmask.data import load_imagefolder

    splits = load_imagefolder(Path(tree), 1, 28, 0.3, 0)
    mcfg = grid.model_config(TINY, 4)
    spec = RunSpec("r0.75-u4", 0.75, 4, 3, steps=7, batch_size=4, blr=0.0015, warmup=2)
    return splits, mcfg, spec


def test_an_interrupted_run_resumes_bit_for_bit(tree, tmp_path):
    splits, mcfg, spec = _tiny_training(tree)
    ref, ref_losses = train_run(spec, mcfg, splits.train, tmp_path / "ref", device=torch.device("cpu"),
                                ckpt_every=0, log_every=2)

    def ctrl_c_after_step_3(step):  # noqa: ANN001
        if step == 3:
            os.kill(os.getpid(), signal.SIGINT)  # the loop finishes the step, checkpoints, and stops

    from hlvm.realmask.pretrain import Interrupted

    with pytest.raises(Interrupted):
        train_run(spec, mcfg, splits.train, tmp_path / "cut", device=torch.device("cpu"), ckpt_every=0,
                  log_every=2, on_step=ctrl_c_after_step_3)
    assert (tmp_path / "cut" / CHECKPOINT).is_file() and not (tmp_path / "cut" / MODEL).exists()
    model, losses = train_run(spec, mcfg, splits.train, tmp_path / "cut", device=torch.device("cpu"), log_every=2)
    assert losses == ref_losses and [s for s, _ in losses] == [2, 4, 6, 7]
    for (k, a), b in zip(ref.state_dict().items(), model.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    assert (tmp_path / "cut" / MODEL).is_file() and not (tmp_path / "cut" / CHECKPOINT).exists()


def test_the_heldout_loss_leaves_training_bit_for_bit_and_resumes_with_it(tree, tmp_path):
    from hlvm.data import eval_resize
    from hlvm.realmask.pretrain import HeldOut, Interrupted

    splits, mcfg, spec = _tiny_training(tree)
    images = eval_resize(splits.test.images[:5], 32, crop_fraction=1.0)
    cpu = torch.device("cpu")
    plain, plain_losses = train_run(spec, mcfg, splits.train, tmp_path / "plain", device=cpu, ckpt_every=0)
    held = HeldOut(images, every=3)
    model, losses = train_run(spec, mcfg, splits.train, tmp_path / "held", device=cpu, ckpt_every=0, heldout=held)
    assert losses == plain_losses  # its own mask stream and eval mode: training is untouched
    for (k, a), b in zip(plain.state_dict().items(), model.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    assert [s for s, _ in held.log] == [0, 3, 6, 7] and all(np.isfinite(v) for _, v in held.log)
    assert held.log[-1][1] == pytest.approx(held.measure(model, spec, cpu), abs=0.0)  # the same masks every time

    def ctrl_c_after_step_4(step):  # noqa: ANN001
        if step == 4:
            os.kill(os.getpid(), signal.SIGINT)

    cut = HeldOut(images, every=3)
    with pytest.raises(Interrupted):
        train_run(spec, mcfg, splits.train, tmp_path / "cut", device=cpu, ckpt_every=0, heldout=cut,
                  on_step=ctrl_c_after_step_4)
    again = HeldOut(images, every=3)
    train_run(spec, mcfg, splits.train, tmp_path / "cut", device=cpu, heldout=again)
    assert again.log == held.log
    from hlvm.realmask.pretrain import load_trained

    assert load_trained(tmp_path / "cut", cpu)[2] == held.log
    with pytest.raises(Exception, match="heldout_every"):
        HeldOut(images, every=0)


def test_the_pca_control_keeps_the_top_k_eigenvalues_of_the_training_pixels(tree):
    from hlvm.realmask import measure
    from hlvm.realmask.data import load_imagefolder

    splits = load_imagefolder(Path(tree), 1, 28, 0.3, 0)
    ev = TINY["eval"]
    x = measure.pixels(splits.train, 32, 1.0).astype(np.float64)
    vals = np.sort(np.linalg.eigvalsh(np.cov(x, rowvar=False)))[::-1]  # brute force, on the training split only
    got = measure.pca_probe(splits.train, splits.test, ev, 32, 3)
    assert got["width"] == 3 and 0.0 <= got["top1"] <= 1.0
    assert got["explained_variance"] == pytest.approx(vals[:3].sum() / vals.sum(), rel=1e-9)
    assert measure.pca_probe(splits.train, splits.test, ev, 32, 3) == got  # deterministic


def test_the_strongest_control_and_beating_it_by_a_point():
    untrained = _seeds(0.70, 0.71, 0.705)
    assert rules.strongest(untrained, pixels=0.84, pca=0.86) == "pca"
    assert rules.strongest(untrained, pixels=0.84, pca=None) == "pixels"
    assert rules.strongest(_seeds(0.9, 0.9, 0.9), pixels=0.84, pca=0.86) == "untrained"
    assert rules.strongest({}, pixels=None, pca=None) is None
    d, v = rules.beats(_seeds(0.875, 0.88, 0.878), 0.86)
    assert d.mean == pytest.approx(0.0176667, abs=1e-6) and v == "hold"
    assert rules.beats(_seeds(0.80, 0.81, 0.805), 0.84)[1] == "fail"
    assert rules.beats(_seeds(0.84, 0.88, 0.86), 0.86)[1] == "inconclusive"  # the SE spans both sides
    c = rules.control(_seeds(0.875, 0.88, 0.878), untrained, pixels=0.84, pca=0.86)
    assert set(c) == {"untrained", "pixels", "pca"} and c["pca"][1] == "evidence about MAE"


def test_a_checkpoint_of_another_run_is_refused(tree, tmp_path):
    from hlvm.errors import ConfigError

    splits, mcfg, spec = _tiny_training(tree)
    def stop_at_3(step):  # noqa: ANN001
        if step == 3:
            raise KeyboardInterrupt  # killed between checkpoints: the one of step 2 stays

    with pytest.raises(KeyboardInterrupt):
        train_run(spec, mcfg, splits.train, tmp_path / "r", device=torch.device("cpu"), ckpt_every=2, on_step=stop_at_3)
    assert torch.load(tmp_path / "r" / CHECKPOINT, weights_only=False)["step"] == 2
    other = RunSpec("r0.75-u4", 0.75, 4, 4, steps=7, batch_size=4, blr=0.0015, warmup=2)  # another seed
    with pytest.raises(ConfigError, match="another run"):
        train_run(other, mcfg, splits.train, tmp_path / "r", device=torch.device("cpu"))


def test_each_epoch_visits_every_image_once_in_a_seeded_order():
    n, b = 50, 8  # 6 full batches per epoch; the last 2 images of each epoch's order wait for another epoch
    epoch0 = torch.cat([batch_indices(n, b, seed=5, step=s) for s in range(6)])
    assert len(set(epoch0.tolist())) == 48
    assert torch.equal(batch_indices(n, b, 5, 7), batch_indices(n, b, 5, 7))
    assert not torch.equal(batch_indices(n, b, 5, 0), batch_indices(n, b, 5, 6))  # epoch 1 is reshuffled
    assert not torch.equal(batch_indices(n, b, 5, 0), batch_indices(n, b, 6, 0))


# --- the verdict rules ---------------------------------------------------------------------------


def _seeds(*values):
    return dict(enumerate(values))


def test_ratio_peak_appears_only_when_075_beats_every_other_ratio_by_a_point():
    base = {0.1: _seeds(0.80, 0.81, 0.80), 0.5: _seeds(0.82, 0.83, 0.82), 0.9: _seeds(0.81, 0.80, 0.81)}
    peak = rules.ratio_peak({**base, 0.75: _seeds(0.86, 0.87, 0.86)})
    assert peak.verdict == rules.APPEARS and [p.verdict for p in peak.parts] == ["hold"] * 3
    flat = rules.ratio_peak({**base, 0.75: _seeds(0.82, 0.83, 0.825)})  # level with 0.5
    assert flat.verdict == rules.ABSENT and flat.parts[1].verdict == "fail"
    noisy = rules.ratio_peak({**base, 0.75: _seeds(0.80, 0.90, 0.85)})  # mean well above, SE too wide
    assert noisy.verdict == rules.INCONCLUSIVE


def test_unit_trend_and_figure5_rules_on_hand_made_numbers():
    u = rules.unit_trend({4: _seeds(0.80, 0.81, 0.80), 8: _seeds(0.84, 0.85, 0.84), 16: _seeds(0.78, 0.79, 0.78)})
    assert u.verdict == rules.APPEARS and [p.verdict for p in u.parts] == ["hold", "hold"]
    u = rules.unit_trend({4: _seeds(0.84, 0.85, 0.84), 8: _seeds(0.80, 0.81, 0.80)})
    assert u.verdict == rules.ABSENT
    m = {"ssim": {0.1: _seeds(0.5, 0.5, 0.5), 0.75: _seeds(0.6, 0.61, 0.6)},
         "fsim": {0.1: _seeds(0.7, 0.7, 0.7), 0.75: _seeds(0.8, 0.8, 0.81)},
         "psnr": {0.75: _seeds(20.0, 20.1, 20.0), 0.9: _seeds(21.0, 21.0, 21.1)},
         "mse": {0.75: _seeds(0.010, 0.010, 0.011), 0.9: _seeds(0.008, 0.008, 0.008)}}
    assert rules.structural_rise(m).verdict == rules.APPEARS
    assert rules.pixel_favour(m).verdict == rules.APPEARS
    m["mse"][0.9] = _seeds(0.012, 0.012, 0.012)  # 0.9 worse in MSE: the pixel trend does not appear
    assert rules.pixel_favour(m).verdict == rules.ABSENT


def test_controls_use_the_studys_one_point_minimum():
    run, untrained = _seeds(0.855, 0.86, 0.858), _seeds(0.70, 0.71, 0.705)
    c = rules.control(run, untrained, pixels=0.853)
    assert c["untrained"][1] == "evidence about MAE"
    assert c["pixels"][1] == "explained without training"  # 0.5 points above the pixels: under one point
    r = rules.regime(run, untrained, pixels=0.853)
    assert r["untrained"][1] == "hold" and r["pixels"][1] == "fail"


@pytest.mark.parametrize(("l4000", "expected"), [(0.49, 2000), (0.47, None)])
def test_budget_script_applies_the_convergence_rule_to_the_two_lengths(tmp_path, capsys, l4000, expected):
    import importlib.util

    spec = importlib.util.spec_from_file_location("fm_budget", STUDY / "budget.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    folders = {2000: tmp_path / "a", 4000: tmp_path / "b"}
    for steps, folder in folders.items():
        folder.mkdir()
        loss = 0.495 if steps == 2000 else l4000  # seed 1's loss; seed 0 adds 0.01, so the means are +0.005
        runs = [{"kind": "run", "seed": s, "final_heldout_loss": loss + 0.01 * (s == 0), "probe_top1_mean": 0.8}
                for s in (0, 1)] + [{"kind": "untrained", "seed": 0}]
        (folder / "results.json").write_text(json.dumps({"runs": runs}))
    mod.FOLDERS = folders
    assert mod.main() == 0
    out = json.loads((folders[4000] / "budget.json").read_text())
    assert out["budget"] == expected and out["seeds"] == [0, 1]
    assert out["gain"] == pytest.approx(1 - (l4000 + 0.005) / 0.5)  # 0.49: 1.0 % < 2 %; 0.47: 5.0 %
    assert ("budget 2000" if expected else "not found") in capsys.readouterr().out
    (folders[2000] / "results.json").unlink()
    assert mod.main() == 2
