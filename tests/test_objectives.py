"""Claims about hlvm.objectives: MAE, U-MAE's uniformity, M-MAE's coding rate, DDP gathering."""

from __future__ import annotations

import math
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from hlvm.errors import ConfigError
from hlvm.masks import Mask
from hlvm.models import build_model, get_config
from hlvm.objectives import OBJECTIVES, build_objective, coding_rate, gather_features, uniformity


def _tiny(arch: str):
    if arch == "mlp":
        cfg = get_config("mlp", img_size=8, in_chans=2, bottleneck=4, mlp_hidden=(32,), mlp_decoder_hidden=(32,))
    else:
        cfg = get_config(
            "vit_small_synth", img_size=8, in_chans=2, embed_dim=32, depth=1, num_heads=2,
            decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2,
        )  # fmt: skip
    return build_model(cfg)


def _spread(b: int, d: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, d, generator=torch.Generator().manual_seed(seed))


def _collapsed(b: int, d: int, seed: int = 0, noise: float = 0.01) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, d, generator=g) + noise * torch.randn(b, d, generator=g)  # all near one direction


# ----------------------------------------------------------------------------- every objective


@pytest.mark.parametrize("arch", ["mlp", "vit"])
@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_every_objective_runs_forward_and_backward(name, arch):
    model = _tiny(arch)
    objective = build_objective(name)
    out = model(torch.randn(6, 2, 8, 8), mask_ratio=0.5, generator=torch.Generator().manual_seed(0))
    total, parts = objective(out)
    assert total.ndim == 0 and torch.isfinite(total)
    assert parts["mae"] == out.loss.detach()
    extra = {"mae": set(), "umae": {"uniformity"}, "mmae": {"coding_rate"}}[name]
    assert set(parts) == {"mae"} | extra
    for key in extra:  # total = mae + coef * term, exactly
        assert torch.allclose(total, out.loss + 0.01 * parts[key])
    total.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_objectives_under_bf16_autocast_keep_their_terms_in_float32(name):
    model = _tiny("vit")
    x = torch.randn(6, 2, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, mask_ratio=0.5, generator=torch.Generator().manual_seed(0))
        total, parts = build_objective(name)(out)
    assert out.pred.dtype == torch.bfloat16  # autocast did apply to the model
    assert total.dtype == torch.float32 and torch.isfinite(total)
    assert all(v.dtype == torch.float32 for v in parts.values())
    total.backward()


def test_mae_objective_is_the_model_loss():
    out = _tiny("mlp")(torch.randn(4, 2, 8, 8), mask_ratio=0.5, generator=torch.Generator().manual_seed(0))
    total, _ = build_objective("mae")(out)
    assert total is out.loss


def test_extra_terms_push_features_apart():
    # the gradient of each regulariser, followed a little, makes collapsed features more spread
    for term in (uniformity, coding_rate):
        z = _collapsed(32, 8).requires_grad_(True)
        before = uniformity(z).item()
        term(z).backward()
        with torch.no_grad():
            z2 = z - 50.0 * z.grad
        assert uniformity(z2).item() < before


# ----------------------------------------------------------------------------- U-MAE


def test_uniformity_exact_values():
    assert uniformity(torch.eye(6)).item() == pytest.approx(0.0, abs=1e-7)  # orthogonal
    assert uniformity(torch.ones(5, 3) * 7.0).item() == pytest.approx(1.0)  # identical
    z = torch.tensor([[1.0, 0.0], [1.0, 1.0]])  # cos = 1/sqrt(2)
    assert uniformity(z).item() == pytest.approx(0.5)


def test_uniformity_is_smaller_for_spread_features_than_collapsed():
    spread, collapsed = uniformity(_spread(256, 32)), uniformity(_collapsed(256, 32))
    assert spread.item() == pytest.approx(1 / 32, rel=0.15)  # E[cos^2] of random directions = 1/d
    assert collapsed.item() > 0.99
    assert uniformity(_spread(256, 32) * 100.0).item() == pytest.approx(spread.item(), rel=1e-5)  # scale-free


# ----------------------------------------------------------------------------- M-MAE


@pytest.mark.parametrize("mu", [1.0, 0.5])
def test_coding_rate_exact_values(mu):
    b = d = 8
    # B identical unit rows: Z^T Z = B v v^T, one eigenvalue B
    assert coding_rate(torch.ones(b, d), mu).item() == pytest.approx(-math.log(1 + mu * b / d), rel=1e-5)
    # d orthonormal rows: Z^T Z = I
    assert coding_rate(torch.eye(d), mu).item() == pytest.approx(-d * math.log(1 + mu / d), rel=1e-5)


def test_coding_rate_is_lower_for_high_rank_features_than_collapsed():
    # M-MAE minimises -logdet(...): lower = more spread (higher matrix entropy), higher = collapsed
    high, low = coding_rate(_spread(256, 32)), coding_rate(_collapsed(256, 32))
    assert high.item() < low.item()
    rank2 = _spread(256, 2) @ _spread(2, 32, seed=1)  # rank 2 in 32 dims
    assert high.item() < coding_rate(rank2).item() < low.item()


# ----------------------------------------------------------------------------- building


@pytest.mark.parametrize(
    ("name", "coefs", "message"),
    [
        ("simclr", {}, "unknown objective 'simclr'"),
        ("mae", {"coef": 0.1}, "'mae' takes no coefficients"),
        ("umae", {"mu": 1.0}, "'umae' takes coef"),
        ("umae", {"coef": -1.0}, "finite number >= 0"),
        ("mmae", {"coef": float("nan")}, "finite number >= 0"),
        ("mmae", {"mu": 0.0}, "mu must be > 0"),
    ],
)
def test_bad_objectives_raise_config_error(name, coefs, message):
    with pytest.raises(ConfigError, match=message) as e:
        build_objective(name, **coefs)
    assert "\n" not in str(e.value)


def test_defaults_follow_the_papers():
    assert build_objective("umae").coefs == {"coef": 0.01}
    assert build_objective("mmae").coefs == {"coef": 0.01, "mu": 1.0}
    assert build_objective("umae", coef=0.1).coefs == {"coef": 0.1}


def test_gather_is_the_identity_without_distributed():
    z = torch.randn(3, 2)
    assert gather_features(z) is z


# ----------------------------------------------------------------------------- DDP


DDP_OBJECTIVES = ("umae", "mmae")


def _ddp_worker(rank: int, world: int, init_file: str, out_file: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        results = {}
        for name in DDP_OBJECTIVES:
            torch.manual_seed(0)
            model = _tiny("mlp")  # same initial weights on both ranks, as DDP would broadcast
            x = torch.randn(8, 2, 8, 8, generator=torch.Generator().manual_seed(1))
            local = x[rank * 4 : (rank + 1) * 4]  # (4, C, H, W) this rank's half of the batch
            out = model(local, mask=Mask.random(8, 8, 0.5, unit=2, seed=0))
            assert gather_features(out.features).shape == (8, 4)
            total, parts = build_objective(name, coef=1.0)(out)
            total.backward()
            # DDP's gradient averaging, done by hand: wrapping in DistributedDataParallel would cost
            # each worker seconds importing torch._dynamo, and adds nothing this test checks.
            grads = {}
            for k, p in model.named_parameters():
                dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
                grads[k] = p.grad / world
            results[name] = {"grads": grads, "parts": {k: v.item() for k, v in parts.items()}}
        if rank == 0:
            torch.save(results, out_file)
    finally:
        dist.destroy_process_group()


def test_ddp_with_two_gloo_ranks_equals_one_process_on_the_whole_batch(tmp_path):
    """The regulariser sees the global batch, and DDP-averaged gradients equal one process's on it."""
    out_file = str(tmp_path / "rank0.pt")
    # torch.multiprocessing.spawn's machinery with fork: spawned children would spend ~10 s of CPU
    # re-importing torch; torch's threads are 1 here (conftest), which is what makes fork safe.
    ctx = mp.start_processes(
        _ddp_worker, args=(2, str(tmp_path / "init"), out_file), nprocs=2, join=False, start_method="fork"
    )
    deadline = time.monotonic() + 120
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for proc in ctx.processes:
                proc.kill()
            pytest.fail("DDP workers did not finish in 120 s")
    got = torch.load(out_file, weights_only=True)
    for name in DDP_OBJECTIVES:
        torch.manual_seed(0)
        model = _tiny("mlp")
        x = torch.randn(8, 2, 8, 8, generator=torch.Generator().manual_seed(1))
        out = model(x, mask=Mask.random(8, 8, 0.5, unit=2, seed=0))
        total, parts = build_objective(name, coef=1.0)(out)
        total.backward()
        key = "uniformity" if name == "umae" else "coding_rate"
        assert got[name]["parts"][key] == pytest.approx(parts[key].item(), rel=1e-5)  # the term saw all 8
        assert got[name]["parts"]["mae"] != pytest.approx(parts["mae"].item(), rel=1e-3)  # each rank's MAE is local
        for k, p in model.named_parameters():
            assert torch.allclose(got[name]["grads"][k], p.grad, atol=1e-6, rtol=1e-4), (name, k)
