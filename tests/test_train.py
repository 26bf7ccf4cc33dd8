"""hlvm.train: schedule, optimizer groups, data streams, run folders, checkpoint and exact resume."""

from __future__ import annotations

import dataclasses
import json
import math
import signal

import numpy as np
import pytest
import torch

from hlvm.errors import ConfigError, DataError
from hlvm.graphs import GridSpec
from hlvm.models import MAEConfig, build_model, get_config
from hlvm.simulate import SimulateConfig, simulate_to_dir
from hlvm.train import (
    CHECKPOINT,
    CONFIG,
    LOSS_PLOT,
    METRICS,
    DataStream,
    TrainConfig,
    TrainingDiverged,
    TrainingInterrupted,
    init_model,
    load_run,
    lr_at,
    mask_generator,
    open_data,
    param_groups,
    resolve_model_config,
    resume,
    train,
)

# The depth-2 grid hierarchy: 4x4 images with 4 channels; a tiny MLP MAE trains on it in ms per step.
TINY_MLP = get_config("mlp", img_size=4, in_chans=4, embed_dim=8, mlp_hidden=(16,), mlp_decoder_hidden=(16,))
TINY_VIT = get_config(
    "vit_small_synth", img_size=4, in_chans=4, patch_size=1, mask_unit=2, embed_dim=16, depth=1, num_heads=2,
    decoder_embed_dim=8, decoder_depth=1, decoder_num_heads=2,
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("data") / "sim"
    simulate_to_dir(SimulateConfig(grid=GridSpec(depth=2), n=40, seed=3), out, progress=False)
    return str(out)


def cfg_for(data: str, out, **kw) -> TrainConfig:
    base = dict(model=TINY_MLP, data=data, steps=6, batch_size=4, warmup=2, ckpt_every=0, log_every=1, out=str(out))
    return TrainConfig(**{**base, **kw})


def rows(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / METRICS).read_text().splitlines()]


# ----------------------------------------------------------------------------- schedule, lr, groups


def test_lr_warms_up_linearly_then_follows_a_half_cosine_to_min_lr():
    total, warm, peak, floor = 100, 10, 2.0, 0.1
    lrs = [lr_at(s, total, warm, peak, floor) for s in range(total)]
    assert lrs[:warm] == pytest.approx([peak * (s + 1) / warm for s in range(warm)])
    assert lrs[warm] == pytest.approx(peak)
    after = lrs[warm:]
    assert all(a >= b for a, b in zip(after, after[1:]))
    mid = warm + (total - warm) // 2
    assert lrs[mid] == pytest.approx(floor + (peak - floor) / 2)
    assert lr_at(total, total, warm, peak, floor) == pytest.approx(floor)


def test_lr_is_blr_times_effective_batch_over_256():
    cfg = TrainConfig(model="mlp", batch_size=64, accum=4, blr=1.5e-4)
    assert cfg.effective_batch(world_size=2) == 512
    assert cfg.lr(world_size=2) == pytest.approx(1.5e-4 * 512 / 256)
    assert cfg.lr() == pytest.approx(1.5e-4 * 256 / 256)


def _group_names(model, groups) -> tuple[set[str], set[str]]:
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)] for p in groups[0]["params"]}, {names[id(p)] for p in groups[1]["params"]}


@pytest.mark.parametrize("mcfg", [TINY_MLP, TINY_VIT, dataclasses.replace(TINY_VIT, bottleneck=2)],
                         ids=["mlp", "vit", "vit_bottleneck"])
def test_weight_decay_is_maes_tokens_decayed_norms_and_biases_not(mcfg):
    # mae: timm 0.3.2's add_weight_decay with no skip list, i.e. no decay iff 1-D or named *.bias.
    model = build_model(mcfg)
    groups = param_groups(model, 0.05)
    no_decay, decay = _group_names(model, groups)
    assert groups[0]["weight_decay"] == 0.0 and groups[1]["weight_decay"] == 0.05
    assert no_decay | decay == {n for n, _ in model.named_parameters()} and not no_decay & decay
    for n, p in model.named_parameters():
        assert (n in no_decay) == (p.ndim == 1 or n.endswith(".bias")), n
    assert any(n.endswith(".bias") for n in no_decay) and all(model.get_parameter(n).ndim >= 2 for n in decay)
    if mcfg.arch == "vit":
        assert {"cls_token", "mask_token", "patch_embed.proj.weight", "blocks.0.attn.qkv.weight"} <= decay
        assert {"norm.weight", "norm.bias", "blocks.0.norm1.weight", "decoder_norm.weight"} <= no_decay
        assert "pos_embed" not in no_decay | decay  # fixed sin-cos positions: a buffer, never optimised


def test_frozen_parameters_are_left_out_and_skip_exempts_by_name():
    model = build_model(TINY_VIT)
    model.patch_embed.proj.weight.requires_grad_(False)
    no_decay, decay = _group_names(model, param_groups(model, 0.05, skip=("cls_token",)))
    assert "patch_embed.proj.weight" not in no_decay | decay
    assert "cls_token" in no_decay and "mask_token" in decay


# ----------------------------------------------------------------------------- config validation


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(mask_ratio=1.0), "mask ratio"),
        (dict(mask_ratio=0.0), "mask ratio"),
        (dict(objective="simclr"), "unknown objective"),
        (dict(steps=5, epochs=2), "exactly one of steps and epochs"),
        (dict(batch_size=0), "batch_size"),
        (dict(accum=0), "accum"),
        (dict(blr=-1.0), "blr"),
        (dict(device="tpu"), "device"),
        (dict(mask=[1]), "mask spec"),
    ],
)
def test_train_config_rejects_bad_values(kw, match):
    with pytest.raises(ConfigError, match=match):
        TrainConfig(**{"model": "mlp", **kw})


def test_train_config_round_trips_through_json():
    for model in ("vit_small_synth", TINY_VIT):
        cfg = TrainConfig(model=model, objective="umae", objective_coefs={"coef": 0.02}, bottleneck=3, seed=7)
        back = TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
        assert back == cfg


def test_model_config_gets_the_data_shape_and_overrides(online_spec):
    src = open_data(online_spec)
    assert src.shape == (4, 4, 4)
    mcfg = resolve_model_config(TrainConfig(model="vit_small_synth", patch_size=1, mask_unit=2, bottleneck=5), src.shape)
    assert (mcfg.img_size, mcfg.in_chans, mcfg.patch_size, mcfg.mask_unit, mcfg.bottleneck) == (4, 4, 1, 2, 5)


@pytest.mark.parametrize(
    "kw, error, match",
    [
        (dict(model="vit_small_synth", patch_size=2, mask_unit=3), ConfigError, "multiple"),
        (dict(model="vit_small_synth", patch_size=3, mask_unit=3), ConfigError, "does not divide"),
        (dict(model="no_such_model"), ConfigError, "unknown model config"),
        (dict(model=dataclasses.replace(TINY_MLP, img_size=8)), DataError, "model expects"),
    ],
)
def test_model_config_errors(online_spec, kw, error, match):
    with pytest.raises(error, match=match):
        resolve_model_config(TrainConfig(**kw), (4, 4, 4))


def test_epochs_need_a_finite_data_folder(online_spec, tmp_path):
    with pytest.raises(ConfigError, match="online data has no epochs"):
        train(cfg_for(online_spec, tmp_path / "run", steps=None, epochs=1), progress=False)


def test_sigterm_also_saves_a_checkpoint_first(online_spec, tmp_path):
    def on_step(step, info):
        if step == 2:
            signal.raise_signal(signal.SIGTERM)

    with pytest.raises(TrainingInterrupted):
        train(cfg_for(online_spec, tmp_path / "run"), progress=False, on_step=on_step)
    assert torch.load(tmp_path / "run" / CHECKPOINT, weights_only=False)["step"] == 2
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers put back


def test_bad_data_specs_raise_data_error(tmp_path):
    with pytest.raises(DataError, match="not found"):
        open_data(str(tmp_path / "missing"))
    with pytest.raises(DataError, match="not a simulated dataset"):
        open_data(str(tmp_path))
    with pytest.raises(DataError, match="simulate config not found"):
        open_data("online:" + str(tmp_path / "none.json"))
    with pytest.raises(DataError, match="image folder not found"):
        open_data("imagefolder:" + str(tmp_path / "none"))


def test_folder_with_images_of_the_wrong_shape_is_rejected(folder, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(folder, bad)
    np.save(bad / "images.npy", np.zeros((40, 16), dtype=np.float32))  # (N, C*H*W): not (N, C, H, W)
    with pytest.raises(DataError):
        train(cfg_for(str(bad), tmp_path / "run"), progress=False)
    assert not (tmp_path / "run").exists()


def test_ratio_masking_no_unit_is_rejected_before_anything_is_written(online_spec, tmp_path):
    with pytest.raises(ConfigError, match="masks no unit"):
        train(cfg_for(online_spec, tmp_path / "run", mask_ratio=0.01), progress=False)
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- data streams


def test_folder_stream_shards_ranks_disjointly_and_covers_each_image_once_per_epoch(folder):
    src = open_data(folder)
    images = np.asarray(src.images)
    seen = []
    for rank in range(2):
        stream = DataStream(src, 5, rank=rank, world=2, seed=0)
        assert stream.batches_per_epoch() == 4
        batches = [next(stream).numpy() for _ in range(4)]
        # Map every row back to its index in the folder.
        idx = [int(np.flatnonzero((images == row).all(axis=(1, 2, 3)))[0]) for b in batches for row in b]
        seen.append(idx)
    assert len(set(seen[0])) == 20 and len(set(seen[1])) == 20
    assert not set(seen[0]) & set(seen[1])


def test_folder_stream_reshuffles_each_epoch_and_resumes_exactly(folder):
    src = open_data(folder)
    a = DataStream(src, 8, rank=0, world=1, seed=1)
    first = [next(a) for _ in range(5)]
    state = a.state_dict()
    rest = [next(a) for _ in range(7)]
    b = DataStream(src, 8, rank=0, world=1, seed=1)
    b.load_state_dict(state)
    assert all(torch.equal(x, y) for x, y in zip(rest, [next(b) for _ in range(7)]))
    # 40 images / 8 = 5 batches per epoch: epoch 1 is a different order of the same images.
    assert state["epoch"] == 1 and state["pos"] == 0
    assert not torch.equal(first[0], rest[0])


def test_online_stream_draws_fresh_distinct_samples_per_rank_and_resumes(online_spec):
    src = open_data(online_spec)
    r0, r1 = (DataStream(src, 3, rank=r, world=2, seed=0) for r in range(2))
    x0, x1 = next(r0), next(r1)
    assert x0.shape == (3, 4, 4, 4) and x0.dtype == torch.float32
    assert not torch.equal(x0, x1)
    assert not torch.equal(x0, next(r0))
    state = r0.state_dict()
    want = next(r0)
    again = DataStream(src, 3, rank=0, world=2, seed=0)
    again.load_state_dict(state)
    assert torch.equal(next(again), want)


def test_batch_larger_than_the_folder_is_rejected(folder, tmp_path):
    with pytest.raises(DataError, match="cannot fill one batch"):
        train(cfg_for(folder, tmp_path / "run", batch_size=64), progress=False)


# ----------------------------------------------------------------------------- runs


def test_a_run_folder_holds_config_checkpoint_and_one_metrics_row_per_step(online_spec, tmp_path):
    cfg = cfg_for(online_spec, tmp_path / "run", objective="mae", mask_ratio=0.5)
    run = train(cfg, progress=False)
    events = sorted(p.name for p in run.glob("events.out.tfevents.*"))  # with TensorBoard installed
    assert sorted(p.name for p in run.iterdir()) == sorted([CONFIG, CHECKPOINT, METRICS, LOSS_PLOT, *events])
    info = json.loads((run / CONFIG).read_text())
    assert TrainConfig.from_dict(info["train"]) == cfg
    assert MAEConfig.from_dict(info["model"]) == TINY_MLP
    assert info["lr"] == pytest.approx(cfg.blr * 4 / 256) and info["effective_batch"] == 4
    assert info["provenance"]["git_commit"] is None or len(info["provenance"]["git_commit"]) >= 40
    r = rows(run)
    assert [x["step"] for x in r] == list(range(1, 7))
    assert all(x["mask_ratio"] == 0.5 and math.isfinite(x["loss"]) for x in r)
    assert [x["lr"] for x in r] == pytest.approx([lr_at(s, 6, 2, cfg.lr()) for s in range(6)])
    model, back = load_run(run)
    assert back == cfg and not model.training
    ckpt = torch.load(run / CHECKPOINT, weights_only=False)
    assert ckpt["step"] == 6
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in ckpt["model"].items())


def test_load_run_without_a_checkpoint_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="no checkpoint"):
        load_run(tmp_path)
    with pytest.raises(DataError, match="not found"):
        load_run(tmp_path / "nope")
    with pytest.raises(DataError, match="no checkpoint"):
        resume(tmp_path)


def test_a_non_empty_out_is_not_overwritten_silently(online_spec, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "keep.txt").write_text("x")
    with pytest.raises(ConfigError, match="not empty"):
        train(cfg_for(online_spec, tmp_path / "run"), progress=False)
    assert (tmp_path / "run" / "keep.txt").read_text() == "x"


def test_same_seed_same_run_different_seed_different_run(online_spec, tmp_path):
    a = rows(train(cfg_for(online_spec, tmp_path / "a"), progress=False))
    b = rows(train(cfg_for(online_spec, tmp_path / "b"), progress=False))
    c = rows(train(cfg_for(online_spec, tmp_path / "c", seed=1), progress=False))
    assert [x["loss"] for x in a] == [x["loss"] for x in b]
    assert [x["loss"] for x in a] != [x["loss"] for x in c]


def test_accumulation_consumes_accum_batches_per_step(folder, tmp_path):
    cfg = cfg_for(folder, tmp_path / "run", steps=3, accum=3, batch_size=4)
    run = train(cfg, progress=False)
    ckpt = torch.load(run / CHECKPOINT, weights_only=False)
    data = ckpt["rng"][0]["data"]
    assert data["epoch"] * 10 + data["pos"] == 9  # 40 images / 4 = 10 batches per epoch
    assert json.loads((run / CONFIG).read_text())["lr"] == pytest.approx(cfg.blr * 12 / 256)


def test_accumulated_gradient_is_the_mean_of_the_micro_batch_gradients(folder, tmp_path):
    """With lr so small that weights barely move, one accum=2 step equals a step on the mean gradient.

    Checked exactly instead through the optimizer state: AdamW's first moment
    after one step is (1 - beta1) * grad, and grad must be the mean of the
    two micro-batches' gradients, which we recompute by hand.
    """
    cfg = cfg_for(folder, tmp_path / "run", steps=1, accum=2, batch_size=4, warmup=0)
    run = train(cfg, progress=False)
    ckpt = torch.load(run / CHECKPOINT, weights_only=False)
    # Recompute: fresh model with the same init, the same two batches and masks.
    torch.manual_seed(cfg.seed)
    model = build_model(TINY_MLP)
    src = open_data(folder)
    stream = DataStream(src, 4, rank=0, world=1, seed=cfg.seed)
    gen = mask_generator(cfg.seed, rank=0)
    grads = [torch.zeros_like(p) for p in model.parameters()]
    for _ in range(2):
        model.zero_grad()
        model(next(stream), mask_ratio=cfg.mask_ratio, generator=gen).loss.backward()
        grads = [g + p.grad / 2 for g, p in zip(grads, model.parameters())]
    exp_avg = [s["exp_avg"] for _, s in sorted(ckpt["optimizer"]["state"].items())]
    order = {id(p): i for i, p in enumerate(model.parameters())}
    groups = param_groups(model, 0.05)
    flat = [order[id(p)] for g in groups for p in g["params"]]
    for k, i in enumerate(flat):
        torch.testing.assert_close(exp_avg[k], 0.1 * grads[i], rtol=1e-5, atol=1e-8)


def test_training_lowers_the_loss(online_spec, tmp_path):
    cfg = cfg_for(online_spec, tmp_path / "run", steps=150, batch_size=64, blr=1e-2, warmup=10, log_every=1)
    r = rows(train(cfg, progress=False))
    first, last = np.mean([x["loss"] for x in r[:10]]), np.mean([x["loss"] for x in r[-10:]])
    assert last < 0.8 * first


# ----------------------------------------------------------------------------- resume and Ctrl-C


def _interrupt_at(k):
    def on_step(step, info):
        if step == k:
            signal.raise_signal(signal.SIGINT)

    return on_step


@pytest.mark.parametrize("data", ["online", "folder"])
@pytest.mark.parametrize("mcfg", [TINY_MLP, TINY_VIT], ids=["mlp", "vit"])
def test_interrupt_then_resume_is_bit_for_bit_the_straight_run(data, mcfg, online_spec, folder, tmp_path):
    spec = online_spec if data == "online" else folder
    k = 5
    kw = dict(model=mcfg, steps=2 * k, accum=2, ckpt_every=3, warmup=3)
    straight = train(cfg_for(spec, tmp_path / "straight", **kw), progress=False)

    with pytest.raises(TrainingInterrupted) as info:
        train(cfg_for(spec, tmp_path / "split", **kw), progress=False, on_step=_interrupt_at(k))
    assert info.value.step == k
    assert torch.load(tmp_path / "split" / CHECKPOINT, weights_only=False)["step"] == k
    assert [x["step"] for x in rows(tmp_path / "split")] == list(range(1, k + 1))
    resumed = resume(tmp_path / "split", progress=False)

    a, b = rows(straight), rows(resumed)
    assert [x["step"] for x in b] == list(range(1, 2 * k + 1))
    assert [x["loss"] for x in a] == [x["loss"] for x in b]  # exactly equal, not approximately
    wa = torch.load(straight / CHECKPOINT, weights_only=False)["model"]
    wb = torch.load(resumed / CHECKPOINT, weights_only=False)["model"]
    assert all(torch.equal(wa[n], wb[n]) for n in wa)


def test_a_resumed_log_has_the_uninterrupted_runs_rows_not_the_interruptions_extra_one(online_spec, tmp_path):
    # Ctrl-C at step 5 writes a row there (the log shows where it stopped); log_every 4 does not: after the
    # resume the log must hold the straight run's rows, 4, 8 and 10, with their losses.
    kw = dict(model=TINY_MLP, steps=10, warmup=1, ckpt_every=0, log_every=4)
    straight = train(cfg_for(online_spec, tmp_path / "straight", **kw), progress=False)
    with pytest.raises(TrainingInterrupted):
        train(cfg_for(online_spec, tmp_path / "split", **kw), progress=False, on_step=_interrupt_at(5))
    assert [x["step"] for x in rows(tmp_path / "split")] == [4, 5]
    resumed = resume(tmp_path / "split", progress=False)
    a, b = rows(straight), rows(resumed)
    assert [x["step"] for x in a] == [x["step"] for x in b] == [4, 8, 10]
    assert [x["loss"] for x in a] == [x["loss"] for x in b]


def test_a_run_begun_with_the_tokens_exempt_from_decay_resumes_with_them_exempt(online_spec, tmp_path, monkeypatch):
    import hlvm.train as T
    import hlvm.train.optim as O

    current = T.param_groups
    # A large lr and decay, so that decaying the tokens or not changes their bits within 6 steps.
    kw = dict(model=TINY_VIT, steps=6, warmup=1, blr=1.0, weight_decay=0.5)
    now = train(cfg_for(online_spec, tmp_path / "now", **kw), progress=False)
    monkeypatch.setattr(O, "param_groups", lambda m, wd: current(m, wd, skip=T.PRE_MAE_NO_DECAY))  # as the loop calls it
    before = train(cfg_for(online_spec, tmp_path / "before", **kw), progress=False)
    with pytest.raises(TrainingInterrupted):
        train(cfg_for(online_spec, tmp_path / "split", **kw), progress=False, on_step=_interrupt_at(3))
    monkeypatch.undo()
    resumed = resume(tmp_path / "split", progress=False)
    w_now, w_before, w_resumed = (torch.load(r / CHECKPOINT, weights_only=False)["model"] for r in (now, before, resumed))
    assert not torch.equal(w_now["cls_token"], w_before["cls_token"])
    assert all(torch.equal(w_before[n], w_resumed[n]) for n in w_before)


def test_a_checkpoint_whose_optimizer_groups_fit_no_grouping_is_refused(online_spec, tmp_path):
    run = train(cfg_for(online_spec, tmp_path / "run", model=TINY_VIT, steps=2), progress=False)
    ckpt = torch.load(run / CHECKPOINT, weights_only=False)
    ckpt["optimizer"]["param_groups"][0]["params"] = ckpt["optimizer"]["param_groups"][0]["params"][:-3]
    ckpt["total_steps"], ckpt["config"]["train"]["steps"] = 4, 4
    torch.save(ckpt, run / CHECKPOINT)
    with pytest.raises(ConfigError, match="optimizer has parameter groups of"):
        resume(run, progress=False)


def test_resume_drops_metrics_rows_written_after_the_checkpoint(online_spec, tmp_path):
    cfg = cfg_for(online_spec, tmp_path / "run", steps=6)
    with pytest.raises(TrainingInterrupted):
        train(cfg, progress=False, on_step=_interrupt_at(3))
    # As if the process died after logging steps 4 and 5 but before their checkpoint.
    with open(tmp_path / "run" / METRICS, "a") as f:
        f.write(json.dumps({"step": 4, "loss": -1.0}) + "\n" + json.dumps({"step": 5, "loss": -1.0}) + "\n")
    straight = rows(train(dataclasses.replace(cfg, out=str(tmp_path / "straight")), progress=False))
    resumed = rows(resume(tmp_path / "run", progress=False))
    assert [x["step"] for x in resumed] == list(range(1, 7))
    assert [x["loss"] for x in resumed] == [x["loss"] for x in straight]


# ----------------------------------------------------------------------------- mask kinds and init


def test_aligned_training_masks_are_whole_blocks_and_resume_exactly(online_spec, tmp_path):
    # depth-2 grid: 4x4 pixels, 2x2 blocks; ratio 0.4 of 16 pixels masks 6 = one block + 2 pixels of another
    masks = []
    cfg = cfg_for(online_spec, tmp_path / "run", mask_kind="aligned", mask_ratio=0.4)
    run = train(cfg, progress=False, on_step=lambda step, info: masks.append(info["output"].mask.clone()))
    for m in masks:
        blocks = m.reshape(4, 2, 2, 2, 2).sum(dim=(2, 4))  # (B, 2, 2) masked pixels per block
        assert (m.sum(1) == 6).all() and sorted(blocks[0].flatten().tolist()) == [0, 0, 2, 4]
    assert len({tuple(m[0].tolist()) for m in masks}) > 1
    assert all(r["mask_kind"] == "aligned" for r in rows(run))
    assert load_run(run)[1].mask_kind == "aligned"
    # a run stopped at step 3 and resumed equals the straight run, masks included
    _assert_resume_is_exact(run, cfg_for(online_spec, tmp_path / "stopped", mask_kind="aligned", mask_ratio=0.4))


def _assert_resume_is_exact(straight, cfg):
    """``cfg`` stopped by Ctrl-C at step 3 and resumed ends with the weights of the straight run ``straight``."""
    with pytest.raises(TrainingInterrupted):
        train(cfg, progress=False, on_step=_interrupt_at(3))
    resume(cfg.out, progress=False)
    a, b = load_run(straight)[0].state_dict(), load_run(cfg.out)[0].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("kind", ["block", "variable", "complementary"])
def test_every_mask_kind_trains_with_its_counts_and_resumes_exactly(online_spec, tmp_path, kind):
    masks = []
    cfg = cfg_for(online_spec, tmp_path / "run", mask_kind=kind, mask_ratio=0.5, mask_spread=0.2)
    run = train(cfg, progress=False, on_step=lambda step, info: masks.append(info["output"].mask.clone()))
    counts = torch.cat([m.sum(1) for m in masks])
    if kind == "variable":  # 16 pixels, ratio 0.3-0.7: 5 to 11 masked, drawn per sample
        assert counts.min() >= 5 and counts.max() <= 11 and len(set(counts.tolist())) > 1
    else:
        assert (counts == 8).all()
    if kind == "complementary":  # 2 images under 2 masks each: the pairs' visible sets are disjoint
        for m in masks:
            assert not ((m[:2] == 0) & (m[2:] == 0)).any()
    assert all(r["mask_kind"] == kind for r in rows(run))
    _assert_resume_is_exact(run, cfg_for(online_spec, tmp_path / "stopped", mask_kind=kind, mask_ratio=0.5, mask_spread=0.2))


def test_boundary_ignore_changes_the_loss_and_keeps_plain_mae_exact(online_spec, tmp_path):
    plain = rows(train(cfg_for(online_spec, tmp_path / "a", mask_ratio=0.75), progress=False))
    zero = rows(train(cfg_for(online_spec, tmp_path / "b", mask_ratio=0.75, boundary_ignore=0), progress=False))
    one = rows(train(cfg_for(online_spec, tmp_path / "c", mask_ratio=0.75, boundary_ignore=1), progress=False))
    assert [r["loss"] for r in plain] == [r["loss"] for r in zero]
    assert [r["loss"] for r in plain] != [r["loss"] for r in one] and all(r["boundary_ignore"] == 1 for r in one)


@pytest.mark.parametrize(
    ("kw", "error", "match"),
    [
        (dict(mask_kind="diagonal"), ConfigError, "unknown train mask kind 'diagonal'"),
        (dict(mask_kind="variable", mask_ratio=0.5, mask_spread=0.6), ConfigError, "must lie inside \\(0, 1\\)"),
        (dict(mask_spread=-1.0), ConfigError, "mask_spread must be a number >= 0"),
        (dict(boundary_ignore=-1), ConfigError, "boundary_ignore must be an integer >= 0"),
        (dict(boundary_ignore=4, mask_ratio=0.5), ConfigError, "leaves no masked pixel in the loss"),
        (dict(mask_kind="complementary", batch_size=3), ConfigError, "batch size must be even"),
        (dict(mask_kind="complementary", mask_ratio=0.25), ConfigError, "disjoint visible sets"),
        (dict(boundary_ignore=1, objective="cmim"), ConfigError, "cmim replaces that loss"),
        (dict(mask_kind="aligned", mask={"masked": ["x_0_0"]}), ConfigError, "not both"),
        (dict(mask_kind="aligned", mask_unit=4, mask_ratio=0.5), ConfigError, "mask ratio 0.5 of 1 units|power of 2"),
    ],
)
def test_bad_mask_kinds_are_rejected_before_anything_is_written(online_spec, tmp_path, kw, error, match):
    with pytest.raises(error, match=match):
        train(cfg_for(online_spec, tmp_path / "run", **kw), progress=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("mcfg", [TINY_MLP, TINY_VIT], ids=["mlp", "vit"])
def test_init_model_is_the_model_training_starts_from(online_spec, tmp_path, mcfg, monkeypatch):
    import hlvm.train.loop as lib  # the loop's own name for it

    seen, real = {}, lib.init_model

    def spy(m, seed):  # the weights the loop starts from, before any step
        model = real(m, seed)
        seen.update({k: v.clone() for k, v in model.state_dict().items()})
        return model

    monkeypatch.setattr(lib, "init_model", spy)
    train(cfg_for(online_spec, tmp_path / "run", model=mcfg, seed=5), progress=False)
    again, other = init_model(mcfg, 5).state_dict(), init_model(mcfg, 6).state_dict()
    assert all(torch.equal(seen[k], again[k]) for k in again)
    assert not all(torch.equal(other[k], again[k]) for k in again)


# ----------------------------------------------------------------------------- fixed mask


def test_a_fixed_mask_is_the_mask_of_every_sample_at_every_step(online_spec, tmp_path):
    spec = {"masked": ["x_0_0", "x_0_1", "x_1_0", "x_1_1", "x_2_3"]}
    want = torch.zeros(16)
    want[[0, 1, 4, 5, 11]] = 1.0  # row-major pixel tokens of the 4x4 image
    masks = []
    cfg = cfg_for(online_spec, tmp_path / "run", mask=spec)
    run = train(cfg, progress=False, on_step=lambda step, info: masks.append(info["output"].mask.clone()))
    assert len(masks) == 6
    assert all(torch.equal(m, want.expand(4, 16)) for m in masks)
    assert all(r["mask_ratio"] == 5 / 16 and r["fixed_mask"] for r in rows(run))
    assert load_run(run)[1].mask == spec


@pytest.mark.parametrize(
    "spec, match",
    [
        ({"masked": ["x_9_9"]}, "unknown node"),
        ({"masked": ["z_0_0_0"]}, "latent"),
        ({"grid": [[1, 0], [0, 0]]}, "4x4"),
        ({"grid": [[1] * 4] * 4}, "full"),
    ],
)
def test_bad_fixed_masks_are_rejected_before_anything_is_written(online_spec, tmp_path, spec, match):
    from hlvm.errors import MaskError

    with pytest.raises(MaskError, match=match):
        train(cfg_for(online_spec, tmp_path / "run", mask=spec), progress=False)
    assert not (tmp_path / "run").exists()


def test_a_fixed_mask_must_be_whole_tokens_but_not_whole_masking_units(online_spec, tmp_path):
    from hlvm.errors import MaskError

    patch2 = dataclasses.replace(TINY_VIT, patch_size=2)
    with pytest.raises(MaskError, match="whole 2x2"):
        train(cfg_for(online_spec, tmp_path / "run", model=patch2, mask={"masked": ["x_0_0"]}), progress=False)
    # Tokens of 1 pixel: one pixel is a valid fixed mask although random masks use 2x2 units.
    train(cfg_for(online_spec, tmp_path / "ok", model=TINY_VIT, mask={"masked": ["x_0_0"]}, steps=1), progress=False)


# ----------------------------------------------------------------------------- real images


def test_imagefolder_data_trains_through_hlvm_data(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for k in range(8):
        folder = tmp_path / "imgs" / f"class{k % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (24, 20, 3), dtype=np.uint8)).save(folder / f"{k}.png")
    rgb = dataclasses.replace(TINY_VIT, img_size=16, in_chans=3, mask_unit=4)
    seen = []
    cfg = cfg_for(f"imagefolder:{tmp_path / 'imgs'}", tmp_path / "run", model=rgb, steps=3, batch_size=4)
    run = train(cfg, progress=False, on_step=lambda s, info: seen.append(info["batch"].shape))
    assert seen == [(4, 3, 16, 16)] * 3
    assert [r["epoch"] for r in rows(run)] == [0, 0, 1]  # 0-based epoch of the step's batch: 8 images / 4 = 2 per epoch


@pytest.mark.slow
def test_compiled_training_matches_eager(online_spec, tmp_path):
    """torch.compile (inductor on CPU: tens of seconds to compile) changes speed, not the losses."""
    eager = rows(train(cfg_for(online_spec, tmp_path / "eager", steps=4), progress=False))
    compiled = rows(train(cfg_for(online_spec, tmp_path / "compiled", steps=4, compile=True), progress=False))
    assert [x["loss"] for x in compiled] == pytest.approx([x["loss"] for x in eager], rel=1e-5)
    model, cfg = load_run(tmp_path / "compiled")
    assert cfg.compile and not any(k.startswith("_orig_mod") for k in model.state_dict())


def test_overwrite_replaces_the_old_run_files(online_spec, tmp_path):
    train(cfg_for(online_spec, tmp_path / "run", steps=5), progress=False)
    run = train(cfg_for(online_spec, tmp_path / "run", steps=3), progress=False, overwrite=True)
    assert [x["step"] for x in rows(run)] == [1, 2, 3]
    assert torch.load(run / CHECKPOINT, weights_only=False)["step"] == 3


# ----------------------------------------------------------------------------- objectives in the loop


NEW_OBJECTIVES = ("mae", "umae", "mmae", "mimae", "cmim")


@pytest.mark.parametrize("name", NEW_OBJECTIVES + ("umae_official", "mmae_official"))
def test_each_objective_trains_20_steps_on_the_default_online_data(name, tmp_path):
    # the default online data: SimulateConfig()'s depth-4 hierarchy, 16x16 images with 6 channels
    official = name.endswith("_official")  # these take the class token: a ViT
    model = get_config("vit_small_synth", embed_dim=32, depth=1, num_heads=2, decoder_embed_dim=16, decoder_depth=1,
                       decoder_num_heads=2) if official else get_config("mlp", mlp_hidden=(64,), mlp_decoder_hidden=(64,))
    cfg = TrainConfig(model=model, data="online", objective=name, steps=20, batch_size=8, warmup=2, blr=1e-3,
                      log_every=1, ckpt_every=0, device="cpu", out=str(tmp_path / "run"))
    r = rows(train(cfg, progress=False))
    assert [x["step"] for x in r] == list(range(1, 21))
    for x in r:
        parts = {k: v for k, v in x.items() if k.startswith("loss")}
        assert parts and all(math.isfinite(v) for v in parts.values()), x
    model, back = load_run(tmp_path / "run")  # the objective's networks (MI-MAE's) load with the model
    assert back.objective == name
    assert (model.cfg.posterior == "gaussian") == (name == "cmim")


def test_mimae_trains_on_complementary_views_of_each_image(online_spec, tmp_path):
    seen = []
    cfg = cfg_for(online_spec, tmp_path / "run", objective="mimae", objective_coefs={"views": 3}, mask_ratio=0.7)
    train(cfg, progress=False, on_step=lambda step, info: seen.append((info["batch"], info["output"])))
    for batch, out in seen:
        assert out.mask.shape == (3 * 4, 16)  # 3 views x batch 4, 4x4 tokens
        assert torch.equal(out.inputs, batch.repeat(3, 1, 1, 1))
        visible = ~out.mask.bool().reshape(3, 4, 16)
        assert (visible.sum(-1) == 5).all() and (visible.sum(0) <= 1).all()  # 16 - round(0.7 x 16) each, disjoint
    assert len({tuple(out.mask[0].tolist()) for _, out in seen}) > 1  # fresh masks every step


@pytest.mark.parametrize("name", ["mimae", "cmim"])
@pytest.mark.parametrize("mcfg", [TINY_MLP, TINY_VIT], ids=["mlp", "vit"])
def test_mimae_and_cmim_resume_bit_for_bit(name, mcfg, online_spec, tmp_path):
    # their random draws (K complementary masks, posterior noise) come from the checkpointed mask generator
    kw = dict(model=mcfg, objective=name, steps=6, warmup=2, mask_ratio=0.5, mask_kind="aligned" if name == "mimae" else "random")
    straight = train(cfg_for(online_spec, tmp_path / "straight", **kw), progress=False)
    with pytest.raises(TrainingInterrupted):
        train(cfg_for(online_spec, tmp_path / "split", **kw), progress=False, on_step=_interrupt_at(3))
    resumed = resume(tmp_path / "split", progress=False)
    assert [x["loss"] for x in rows(straight)] == [x["loss"] for x in rows(resumed)]
    wa = torch.load(straight / CHECKPOINT, weights_only=False)["model"]
    wb = torch.load(resumed / CHECKPOINT, weights_only=False)["model"]
    assert wa.keys() == wb.keys() and all(torch.equal(wa[n], wb[n]) for n in wa)
    assert any(k.startswith("objective_heads.") for k in wa) == (name == "mimae")


def test_mimae_and_cmim_start_from_the_plain_models_initial_weights(online_spec, tmp_path, monkeypatch):
    # what the objective adds (CLUB's network, the posterior head) comes after init_model's weights
    from hlvm.objectives import Objective

    seen, real = {}, Objective.attach

    def spy(self, model):  # the weights when the objective attaches its own: the loop's starting point
        seen[self.name] = {k: v.clone() for k, v in model.state_dict().items()}
        real(self, model)
        seen[self.name + " attached"] = set(model.state_dict())

    monkeypatch.setattr(Objective, "attach", spy)
    for name in ("mimae", "cmim"):
        train(cfg_for(online_spec, tmp_path / name, objective=name, mask_ratio=0.5, seed=5), progress=False)
    plain = init_model(resolve_model_config(cfg_for(online_spec, None), (4, 4, 4)), 5).state_dict()
    for name in ("mimae", "cmim"):
        assert all(torch.equal(seen[name][k], v) for k, v in plain.items()), name
    assert set(seen["cmim"]) - set(plain) == {"posterior_logvar.weight", "posterior_logvar.bias"}
    added = seen["mimae attached"] - set(plain)
    assert added and all(k.startswith("objective_heads.club.") for k in added)


def test_models_without_a_posterior_draw_nothing_from_the_generator_they_are_passed(online_spec, tmp_path):
    # the masker now hands the mask generator on with aligned and fixed masks too; the aligned masks of a
    # plain run must still be exactly the generator's successive aligned draws
    from hlvm.models.masking import aligned_token_mask

    masks = []
    cfg = cfg_for(online_spec, tmp_path / "run", mask_kind="aligned", mask_ratio=0.4, seed=2)
    train(cfg, progress=False, on_step=lambda step, info: masks.append(info["output"].mask.bool()))
    gen = mask_generator(2, 0)
    mcfg = resolve_model_config(cfg, (4, 4, 4))
    for m in masks:
        assert torch.equal(m, aligned_token_mask(mcfg, 4, 0.4, 2, generator=gen))


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        (dict(objective="mimae", mask_ratio=0.25), "2 masks with disjoint visible sets need 2 x 12 <= 16 units"),
        (dict(objective="mimae", objective_coefs={"views": 4}, mask_ratio=0.5), "4 masks with disjoint visible sets"),
        (dict(objective="mimae", mask={"masked": ["x_0_0"]}), "cannot train on one fixed mask"),
        (dict(objective="umae", objective_coefs={"feature": "cls"}), "needs a ViT"),
        (dict(objective="umae_official"), "needs a ViT"),
        (dict(objective="mimae", objective_coefs={"views": 1}), "views must be an integer >= 2"),
        (dict(objective="cmim", objective_coefs={"contrast": -1.0}), "contrast must be a finite number >= 0"),
        (dict(objective="mimae", objective_coefs={"club": float("nan")}), "club must be a finite number >= 0"),
        (dict(objective="cmim", batch_size=1), "needs a batch of at least 2 images"),
        (dict(objective="mimae", batch_size=1), "needs a batch of at least 2 images"),
        (dict(objective="nope"), "unknown objective 'nope'"),
    ],
)
def test_bad_objective_settings_are_rejected_before_anything_is_written(online_spec, tmp_path, kw, match):
    with pytest.raises(ConfigError, match=match) as e:
        train(cfg_for(online_spec, tmp_path / "run", **kw), progress=False)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "run").exists()


def test_cmim_gets_a_gaussian_posterior_and_its_decoder_decodes_draws(online_spec, tmp_path):
    mcfg = resolve_model_config(cfg_for(online_spec, None, objective="cmim"), (4, 4, 4))
    assert mcfg.posterior == "gaussian"
    assert resolve_model_config(cfg_for(online_spec, None), (4, 4, 4)).posterior is None
    outs = []
    train(cfg_for(online_spec, tmp_path / "run", objective="cmim"), progress=False,
          on_step=lambda step, info: outs.append(info["output"]))
    assert all(not torch.equal(o.posterior_sample, o.posterior_mean) for o in outs)


# ----------------------------------------------------------------------------- what a run leaves behind


def test_identical_runs_write_identical_checkpoint_bytes(online_spec, tmp_path):
    cfg = cfg_for(online_spec, tmp_path / "run", steps=3)
    first = (train(cfg, progress=False) / CHECKPOINT).read_bytes()
    second = (train(cfg, progress=False, overwrite=True) / CHECKPOINT).read_bytes()
    assert first == second  # the zip's member names do not carry a random temporary file name
    assert b"archive/data.pkl" in first


def test_run_files_take_the_umask_like_any_file(online_spec, tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        run = train(cfg_for(online_spec, tmp_path / "run", steps=2), progress=False)
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in run.iterdir()}
    assert modes[CONFIG] == modes[CHECKPOINT] == modes[METRICS] == modes[LOSS_PLOT] == 0o644, modes


def test_a_loss_that_turns_nan_before_any_checkpoint_leaves_nothing(online_spec, tmp_path):
    out = tmp_path / "new" / "run"
    with pytest.raises(TrainingDiverged, match=r"loss is nan at step 2 of 6 .*lower --blr.*nothing is kept in"):
        train(cfg_for(online_spec, out, blr=1e30), progress=False)
    assert not out.exists()
    # an existing empty folder stays, empty: it was the user's
    (tmp_path / "mine").mkdir()
    with pytest.raises(TrainingDiverged):
        train(cfg_for(online_spec, tmp_path / "mine", blr=1e30), progress=False)
    assert list((tmp_path / "mine").iterdir()) == []
    train(cfg_for(online_spec, out, steps=2), progress=False)  # the same --out is usable at once


def test_a_loss_that_turns_nan_after_a_checkpoint_keeps_it_and_resume_continues(online_spec, tmp_path):
    def poison(step, info):
        if step == 5:  # after the checkpoint of step 4
            with torch.no_grad():
                for p in info["model"].parameters():
                    p.fill_(float("nan"))

    cfg = cfg_for(online_spec, tmp_path / "run", steps=6, ckpt_every=2)
    with pytest.raises(TrainingDiverged, match=r"at step 6 of 6 .*the checkpoint of step 4 stays in .*--resume"):
        train(cfg, progress=False, on_step=poison)
    assert torch.load(tmp_path / "run" / CHECKPOINT, weights_only=False)["step"] == 4
    assert (tmp_path / "run" / LOSS_PLOT).is_file()
    straight = rows(train(dataclasses.replace(cfg, out=str(tmp_path / "straight")), progress=False))
    resumed = rows(resume(tmp_path / "run", progress=False))
    assert [x["loss"] for x in resumed] == [x["loss"] for x in straight]


def test_resume_ignores_a_torn_last_metrics_line_but_not_a_corrupt_one_before_it(online_spec, tmp_path):
    cfg = cfg_for(online_spec, tmp_path / "run", steps=6)
    with pytest.raises(TrainingInterrupted):
        train(cfg, progress=False, on_step=_interrupt_at(3))
    with open(tmp_path / "run" / METRICS, "a") as f:
        f.write('{"step": 4, "lo')  # killed mid-write
    assert [x["step"] for x in rows_tolerant(tmp_path / "run")] == [1, 2, 3]
    resumed = rows(resume(tmp_path / "run", progress=False))
    assert [x["step"] for x in resumed] == list(range(1, 7))
    text = (tmp_path / "run" / METRICS).read_text().splitlines()
    (tmp_path / "run" / METRICS).write_text("\n".join(["garbage", *text]) + "\n")
    with pytest.raises(DataError, match="line 1 is not a metrics row"):
        resume(tmp_path / "run", progress=False)


def rows_tolerant(run_dir):
    from hlvm.curves import read_metrics

    return read_metrics(run_dir / METRICS)


@pytest.mark.parametrize("drop", ["config", "optimizer", "rng"])
def test_a_checkpoint_without_what_a_resume_needs_is_a_data_error(online_spec, tmp_path, drop):
    run = train(cfg_for(online_spec, tmp_path / "run", steps=2), progress=False)
    ckpt = torch.load(run / CHECKPOINT, weights_only=False)
    del ckpt[drop]
    torch.save(ckpt, run / CHECKPOINT)
    with pytest.raises(DataError, match=f"lacks {drop}: not a run hlvm train wrote"):
        resume(run, progress=False)
    if drop == "config":
        with pytest.raises(DataError, match="lacks config"):
            load_run(run)


def test_loss_png_at_the_end_and_when_interrupted(online_spec, tmp_path):
    run = train(cfg_for(online_spec, tmp_path / "run", steps=4), progress=False)
    assert (run / LOSS_PLOT).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(TrainingInterrupted):
        train(cfg_for(online_spec, tmp_path / "cut", steps=6), progress=False, on_step=_interrupt_at(2))
    assert (tmp_path / "cut" / LOSS_PLOT).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_without_tensorboard_nothing_is_written_and_nothing_fails(online_spec, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    run = train(cfg_for(online_spec, tmp_path / "run", steps=3), progress=False)
    assert not list(run.glob("events.out.tfevents.*")) and (run / CHECKPOINT).is_file()


def test_tensorboard_events_hold_the_loss_each_term_the_lr_and_images_per_s(online_spec, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = cfg_for(online_spec, tmp_path / "run", steps=6, objective="umae", log_every=2)
    with pytest.raises(TrainingInterrupted):
        train(cfg, progress=False, on_step=_interrupt_at(4))
    resume(tmp_path / "run", progress=False)
    acc = EventAccumulator(str(tmp_path / "run"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"loss", "lr", "images_per_s"} <= tags and {t for t in tags if t.startswith("loss/")} == {"loss/mae", "loss/uniformity"}
    metrics = rows(tmp_path / "run")
    assert [e.step for e in acc.Scalars("loss")] == [r["step"] for r in metrics] == [2, 4, 6]
    assert [e.value for e in acc.Scalars("loss")] == pytest.approx([r["loss"] for r in metrics], rel=1e-6)


# ----------------------------------------------------------------------------- the held-out loss (convergence protocol)


@pytest.mark.parametrize("kind", ["random", "aligned"])
def test_the_heldout_loss_is_logged_on_a_fixed_batch_and_changes_nothing_the_run_trains(kind, online_spec, tmp_path):
    base = dict(model="mlp", data=online_spec, steps=12, batch_size=16, warmup=2, mask_ratio=0.5, mask_kind=kind,
                device="cpu", log_every=4, ckpt_every=0, seed=3)
    plain = train(TrainConfig(**base, out=str(tmp_path / "plain")), progress=False)
    with_h = train(TrainConfig(**base, heldout_every=6, heldout_n=40, out=str(tmp_path / "h")), progress=False)
    again = train(TrainConfig(**base, heldout_every=6, heldout_n=40, out=str(tmp_path / "h2")), progress=False)
    rows = [json.loads(x) for x in (with_h / "metrics.jsonl").read_text().splitlines()]
    plain_rows = [json.loads(x) for x in (plain / "metrics.jsonl").read_text().splitlines()]
    # Rows at the log steps and at the held-out steps; the training losses are those of the plain run.
    assert [r["step"] for r in rows] == [4, 6, 8, 12]
    assert {r["step"] for r in rows if "heldout_loss" in r} == {6, 12}
    by_step = {r["step"]: r["loss"] for r in rows}
    assert all(by_step[r["step"]] == r["loss"] for r in plain_rows)
    a = torch.load(plain / "checkpoint.pt", weights_only=False)["model"]
    b = torch.load(with_h / "checkpoint.pt", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    # The same run gives the same held-out losses (fixed samples, fixed masks), and they are MAE's masked MSE.
    again_rows = [json.loads(x) for x in (again / "metrics.jsonl").read_text().splitlines()]
    assert [r.get("heldout_loss") for r in rows] == [r.get("heldout_loss") for r in again_rows]
    assert all(0 < r["heldout_loss"] < 10 for r in rows if "heldout_loss" in r)


def test_heldout_every_needs_simulated_data(tree, tmp_path):
    cfg = TrainConfig(model="mlp", data=f"imagefolder:{tree}", img_size=16, in_chans=3, steps=2, batch_size=4,
                      heldout_every=1, device="cpu", out=str(tmp_path / "r"))
    with pytest.raises(ConfigError, match="heldout_every needs simulated data"):
        train(cfg, progress=False)
    with pytest.raises(ConfigError, match="heldout_n must be an integer >= 8"):
        TrainConfig(heldout_n=2)


def test_one_run_into_two_folders_writes_the_same_checkpoint_bytes(online_spec, tmp_path):
    kw = dict(model=TINY_MLP, steps=3, warmup=1)
    a = train(cfg_for(online_spec, tmp_path / "a", **kw), progress=False)
    b = train(cfg_for(online_spec, tmp_path / "elsewhere" / "b", **kw), progress=False)
    assert (a / CHECKPOINT).read_bytes() == (b / CHECKPOINT).read_bytes()
    assert load_run(b)[1].out == str(b)


def test_eval_loss_weights_chunks_by_images_and_restores_the_mode_even_on_failure():
    from hlvm.train.heldout import eval_loss

    model = torch.nn.Linear(1, 1).train()
    images = torch.arange(5.0).reshape(5, 1, 1, 1)  # chunks of 2: [0, 1], [2, 3], [4]
    seen = []

    def chunk(x):
        seen.append((model.training, torch.is_grad_enabled()))
        return float(x.mean())

    assert eval_loss(model, images, 2, chunk) == pytest.approx(2.0)  # the mean over images, not over chunks (7/3)
    assert seen == [(False, False)] * 3 and model.training

    def fails(x):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        eval_loss(model, images, 2, fails)
    assert model.training
