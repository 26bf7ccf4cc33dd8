"""Claims about hlvm.models: configs, masking, the ViT and MLP MAEs, official checkpoints."""

from __future__ import annotations

import argparse
import dataclasses
import json
import warnings

import numpy as np
import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from hlvm.errors import ConfigError, DataError, MaskError
from hlvm.masks import Mask, num_masked
from hlvm.models import (
    MODEL_CONFIGS,
    MAEConfig,
    MLPMAE,
    ViTMAE,
    aligned_token_mask,
    build_model,
    get_config,
    load_official_checkpoint,
    patchify,
    random_token_mask,
    unpatchify,
)
from hlvm.models.checkpoint import UnloadedWeightsWarning
from hlvm.models.pos_embed import sincos_2d

BIG = ("mae_vit_base_patch16", "mae_vit_large_patch16", "mae_vit_huge_patch14")
SMALL = ("mlp", "vit_small_synth", "vit_tiny_synth")

# Every (config, image, patch p, unit u) the configs are meant for: the synthetic 16x16 images
# with units of 1, 2, 4 pixels and p = 1 or 2; Kong et al.'s ViT patch 8 with units 8/16/32 at
# 224; the official patch 16 / 14 with their own and doubled units.
COMBOS = [
    *[(name, 16, p, u) for name in SMALL for p in (1, 2) for u in (1, 2, 4) if u % p == 0],
    *[("mae_vit_base_patch16", 224, 8, u) for u in (8, 16, 32)],
    *[("mae_vit_base_patch16", 224, 16, u) for u in (16, 32)],
    *[("mae_vit_large_patch16", 224, 16, u) for u in (16, 32)],
    *[("mae_vit_huge_patch14", 224, 14, u) for u in (14, 28)],
]


def tiny_vit(**over) -> MAEConfig:
    base = dict(
        img_size=8, in_chans=2, patch_size=2, mask_unit=2, embed_dim=32, depth=2, num_heads=2,
        decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2,
    )  # fmt: skip
    return get_config("vit_small_synth", **{**base, **over})


def tiny_mlp(**over) -> MAEConfig:
    return get_config("mlp", **{**dict(img_size=8, in_chans=2, mlp_hidden=(64,), mlp_decoder_hidden=(64,)), **over})


TINY = {
    "vit": tiny_vit,
    "vit_bottleneck": lambda **o: tiny_vit(bottleneck=3, **o),
    "mlp": tiny_mlp,
    "mlp_bottleneck": lambda **o: tiny_mlp(bottleneck=3, **o),
}


def imgs_for(cfg: MAEConfig, b: int = 4, seed: int = 0) -> torch.Tensor:
    h, w = cfg.img_hw
    return torch.randn(b, cfg.in_chans, h, w, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- the package


def _imports_within_models() -> dict[str, set[str]]:
    """module -> the hlvm.models modules it imports, at any depth of its code (TYPE_CHECKING blocks aside)."""
    import ast
    from pathlib import Path

    import hlvm.models

    here = Path(hlvm.models.__file__).parent
    found: dict[str, set[str]] = {}
    for path in here.glob("*.py"):
        if path.name == "__init__.py":
            continue
        names: set[str] = set()

        def visit(node: ast.AST, names: set[str] = names) -> None:
            if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
                return
            if isinstance(node, ast.ImportFrom) and node.module:
                mod = node.module if node.level == 0 else "hlvm.models." + node.module
                if mod.startswith("hlvm.models."):
                    names.add(mod.removeprefix("hlvm.models."))
            for child in ast.iter_child_nodes(node):
                visit(child)

        visit(ast.parse(path.read_text()))
        found[path.stem] = names
    return found


def test_no_two_modules_of_the_package_import_each_other():
    graph = _imports_within_models()
    assert "patches" in graph["masking"] and "patches" in graph["base"]
    assert "base" not in graph["masking"]  # masking once imported patchify from base, inside a function
    circles = sorted((a, b) for a, deps in graph.items() for b in deps if a < b and a in graph.get(b, ()))
    assert circles == []


def test_patchify_is_importable_where_it_was():
    from hlvm.models.base import patchify as from_base
    from hlvm.models.patches import patchify as from_patches

    assert from_base is from_patches is patchify


# ----------------------------------------------------------------------------- configs


@pytest.mark.parametrize("name", list(MODEL_CONFIGS))
def test_every_named_config_round_trips_through_json(name):
    cfg = MODEL_CONFIGS[name]
    again = MAEConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    assert get_config(name) == cfg


def test_base_config_is_maes_vit_b():
    cfg = MODEL_CONFIGS["mae_vit_base_patch16"]
    assert (cfg.embed_dim, cfg.depth, cfg.num_heads) == (768, 12, 12)
    assert (cfg.decoder_embed_dim, cfg.decoder_depth, cfg.decoder_num_heads) == (512, 8, 16)
    assert (cfg.img_size, cfg.patch_size, cfg.in_chans) == (224, 16, 3)


def test_overrides_apply_and_revalidate():
    cfg = get_config("mae_vit_base_patch16", patch_size=8, mask_unit=32, bottleneck=16, in_chans=1)
    assert (cfg.token_grid, cfg.unit_grid, cfg.code_dim) == ((28, 28), (7, 7), 16)
    with pytest.raises(ConfigError, match="not a multiple"):
        dataclasses.replace(cfg, mask_unit=12)


def test_non_square_images_are_allowed():
    cfg = tiny_vit(img_size=(8, 12))
    assert cfg.token_grid == (4, 6)
    assert MAEConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    out = build_model(cfg)(imgs_for(cfg), mask_ratio=0.5, generator=torch.Generator().manual_seed(0))
    assert out.pred.shape == (4, 24, 8)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: get_config("vit_tiny"), "unknown model config 'vit_tiny'"),
        (lambda: get_config("mlp", depthh=3), "unknown model config field 'depthh'"),
        (lambda: get_config("vit_small_synth", patch_size=2, mask_unit=3), "mask_unit 3 is not a multiple of patch_size 2"),
        (lambda: get_config("vit_small_synth", img_size=15), "patch_size 2 does not divide the 15x15 image"),
        (lambda: get_config("vit_small_synth", patch_size=1, mask_unit=3), "mask_unit 3 does not divide"),
        (lambda: get_config("vit_small_synth", embed_dim=130), "not divisible by num_heads"),
        (lambda: get_config("vit_small_synth", embed_dim=6, num_heads=3), "multiple of 4"),
        (lambda: get_config("mlp", in_chans=1, norm_pix_loss=True), "norm_pix_loss needs more than one value"),
        (lambda: get_config("mlp", bottleneck=0), "bottleneck must be a positive integer"),
        (lambda: get_config("mlp", arch="cnn"), "arch must be one of"),
        (lambda: MAEConfig.from_dict({"arch": "vit", "colour": 1}), "unknown model config key 'colour'"),
    ],
)
def test_bad_configs_raise_config_error_with_one_line(make, message):
    with pytest.raises(ConfigError, match=message) as e:
        make()
    assert "\n" not in str(e.value)


# ----------------------------------------------------------------------------- masking


@pytest.mark.parametrize(("name", "img", "p", "u"), COMBOS)
@pytest.mark.parametrize("ratio", [0.1, 0.5, 0.75, 0.9])
def test_random_masks_have_exact_counts_of_whole_units(name, img, p, u, ratio):
    cfg = get_config(name, img_size=img, patch_size=p, mask_unit=u)
    tokens = random_token_mask(cfg, 8, ratio, generator=torch.Generator().manual_seed(1))  # (B, L)
    gh, gw = cfg.token_grid
    k = u // p
    blocks = tokens.reshape(8, gh // k, k, gw // k, k)  # (B, units_h, k, units_w, k)
    units = blocks.all(dim=4).all(dim=2)
    assert torch.equal(units, blocks.any(dim=4).any(dim=2)), "a unit is partly masked"
    assert (units.flatten(1).sum(1) == num_masked(cfg.num_units, ratio, cfg.mask_count)).all()
    assert (tokens.sum(1) == num_masked(cfg.num_units, ratio, cfg.mask_count) * k * k).all()
    assert len({tuple(t.tolist()) for t in tokens}) > 1, "every sample got the same mask"


@pytest.mark.parametrize(("img", "p", "u", "b", "ratio"), [(8, 1, 1, 2, 0.4), (16, 2, 2, 2, 0.1), (16, 1, 2, 2, 0.75), (27, 1, 1, 3, 0.3)])
def test_aligned_token_masks_count_units_and_fill_whole_blocks_depth_first(img, p, u, b, ratio):
    cfg = get_config("mlp", img_size=img, in_chans=1, patch_size=p, mask_unit=u)
    tokens = aligned_token_mask(cfg, 64, ratio, b, generator=torch.Generator().manual_seed(2))  # (B, L)
    n = num_masked(cfg.num_units, ratio)
    k, side = u // p, cfg.unit_grid[0]
    units = tokens.reshape(64, side, k, side, k).all(dim=4).all(dim=2)  # (B, S, S)
    assert (tokens.sum(1) == n * k * k).all() and (units.flatten(1).sum(1) == n).all()
    size = side  # depth-first filling: at every block level at most one block is partly masked
    while size > 1:
        size //= b
        blocks = units.reshape(64, side // size, size, side // size, size).sum(dim=(2, 4))
        assert (((blocks > 0) & (blocks < size * size)).flatten(1).sum(1) <= 1).all()
    assert len({tuple(t.tolist()) for t in tokens}) > 1


def test_aligned_token_masks_are_seeded_and_uniform_over_units():
    cfg = get_config("mlp", img_size=8, in_chans=1)
    a = aligned_token_mask(cfg, 4000, 0.4, 2, generator=torch.Generator().manual_seed(3))
    b = aligned_token_mask(cfg, 4000, 0.4, 2, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert (a.float().mean(0) - 26 / 64).abs().max() < 0.035  # every unit alike: sd 0.008
    # the same distribution as hlvm.masks.aligned_unit_masks: how many level-2 blocks are whole
    from hlvm.masks import aligned_unit_masks

    ref = torch.from_numpy(aligned_unit_masks(4000, 8, 8, 0.4, 1, 2, np.random.default_rng(0)).reshape(4000, 64))
    whole = lambda t: t.reshape(-1, 4, 2, 4, 2).all(dim=4).all(dim=2).flatten(1).sum(1).float().mean()  # noqa: E731
    assert whole(a) == whole(ref) == 6  # 26 pixels depth-first: one quadrant (4 blocks) + 2 blocks + 2 pixels


@pytest.mark.parametrize(("img", "u", "b", "message"), [(8, 1, 3, "power of 3"), (12, 4, 2, "power of 2"), (8, 1, 1, "branching")])
def test_aligned_token_masks_reject_grids_that_are_not_a_hierarchy(img, u, b, message):
    cfg = get_config("mlp", img_size=img, in_chans=1, mask_unit=u)
    with pytest.raises(MaskError, match=message):
        aligned_token_mask(cfg, 2, 0.5, b)


def test_random_masks_are_reproducible_and_uniform_over_units():
    cfg = get_config("vit_small_synth", mask_unit=4)  # 16 units
    a = random_token_mask(cfg, 4000, 0.25, generator=torch.Generator().manual_seed(3))
    b = random_token_mask(cfg, 4000, 0.25, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    freq = a.float().mean(0)  # each unit is masked with probability 4/16
    assert (freq - 0.25).abs().max() < 0.03  # 4000 draws: sd 0.007


@pytest.mark.parametrize("kind", list(TINY))
def test_a_fixed_mask_is_the_mask_used(kind):
    cfg = TINY[kind](mask_unit=4)
    model = build_model(cfg)
    x = imgs_for(cfg)
    m = Mask.random(8, 8, ratio=0.5, unit=2, seed=5)  # finer than the model's unit: allowed when passed
    out = model(x, mask=m)
    expected = torch.from_numpy(m.tokens(cfg.patch_size).copy()).float()
    assert torch.equal(out.mask, expected.expand(4, -1))
    units = torch.from_numpy(np.stack([Mask.random(8, 8, 0.5, unit=4, seed=s).units for s in range(4)]))
    out = model(x, mask=units)  # (B, H/u, W/u)
    k = cfg.mask_unit // cfg.patch_size
    assert torch.equal(out.mask.reshape(4, *cfg.token_grid)[:, ::k, ::k].bool(), units)
    tokens = out.mask.bool()
    assert torch.equal(model(x, mask=tokens).mask, out.mask)  # (B, L)


@pytest.mark.parametrize("kind", list(TINY))
def test_encode_ignores_masked_pixels_and_features_equal_encode(kind):
    cfg = TINY[kind]()
    model = build_model(cfg).eval()
    m = Mask.random(8, 8, ratio=0.5, unit=2, seed=0)
    x = imgs_for(cfg)
    y = x.clone()
    y[:, :, torch.from_numpy(m.grid.copy())] = 100.0  # change only masked pixels
    with torch.no_grad():
        c = model.encode(x, m)
        assert torch.allclose(c, model.encode(y, m), atol=1e-5)
        assert c.shape == (4, cfg.code_dim)
        assert torch.allclose(model(x, mask=m).features, c, atol=1e-6)
        z = x.clone()
        z[:, :, torch.from_numpy(~m.grid.copy())] += 1.0  # visible pixels do reach the code
        assert not torch.allclose(c, model.encode(z, m), atol=1e-3)
    with pytest.raises(MaskError, match="encode needs a mask"):
        model.encode(x, None)


@pytest.mark.parametrize(
    ("mask", "message"),
    [
        (torch.tensor([[1, 0] * 8, [1, 1] * 4 + [1, 0] * 4, [1, 0] * 8, [1, 0] * 8]), "same number of tokens"),
        (torch.zeros(4, 16, dtype=torch.bool), "empty"),
        (torch.ones(4, 2, 2), "full"),
        (torch.zeros(4, 3, 3), r"unit mask must be \(B, 2, 2\)"),
        (torch.zeros(4, 15), r"token mask must be \(B, 16\)"),
        (torch.full((4, 16), 0.5), "must be 0"),
        (Mask.random(8, 8, 0.5, unit=1, seed=0), "whole 2x2 units"),
        (Mask.random(4, 4, 0.5, unit=2, seed=0), "mask is 4x4 but the model's image is 8x8"),
    ],
)
def test_bad_masks_raise_mask_error(mask, message):
    model = build_model(tiny_vit(mask_unit=4))
    with pytest.raises(MaskError, match=message) as e:
        model(imgs_for(model.cfg), mask=mask)
    assert "\n" not in str(e.value)


def test_unequal_counts_are_named_from_least_to_most():
    mask = torch.tensor([[1, 0] * 8, [1, 1] * 4 + [1, 0] * 4, [1, 0] * 8, [1, 0] * 8])  # 8, 12, 8, 8 masked
    with pytest.raises(MaskError, match="got counts from 8 to 12$"):
        build_model(tiny_vit(mask_unit=4))(imgs_for(tiny_vit()), mask=mask)


@pytest.mark.parametrize("kind", list(TINY))
def test_the_visible_count_of_a_passed_mask_is_its_first_samples(kind):
    cfg = TINY[kind]()
    model = build_model(cfg)
    x = imgs_for(cfg)
    tokens = model.token_mask(x, 0.25, generator=torch.Generator().manual_seed(0))  # (4, 16)
    if cfg.arch == "mlp":  # the MLP takes unequal counts
        tokens[1:] = False
        tokens[1:, :3] = True
    units = torch.from_numpy(np.stack([Mask.random(8, 8, 0.5, unit=cfg.mask_unit, seed=s).units for s in range(4)]))
    for mask in (Mask.random(8, 8, ratio=0.5, unit=2, seed=1), tokens, tokens.float(), units):
        got, keep = model._mask_and_keep(x, 0.5, mask, None)
        assert isinstance(keep, int) and keep == cfg.num_tokens - int(got[0].sum())


class _HostReads(torch.overrides.TorchFunctionMode):
    """Records every read of tensor data to the host (``bool()``, ``int()``, ``item()``, ``tolist()`` ...)."""

    READS = {torch.Tensor.__bool__, torch.Tensor.__int__, torch.Tensor.__index__, torch.Tensor.__float__,
             torch.Tensor.item, torch.Tensor.tolist}  # fmt: skip

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in self.READS:
            self.seen.append(func.__name__)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("kind", list(TINY))
def test_a_passed_mask_is_read_to_the_host_once_at_most(kind):
    # Each read is a device sync on GPU and a torch.compile graph break. A tensor mask is read once, to validate
    # it; the number of visible tokens comes from that read, not from an int(tokens[0].sum()) of its own.
    cfg = TINY[kind]()
    model = build_model(cfg)
    x = imgs_for(cfg)
    tokens = model.token_mask(x, 0.5, generator=torch.Generator().manual_seed(0))
    for mask, reads in ((tokens, ["tolist"]), (Mask.random(8, 8, 0.5, unit=2, seed=0), []), (None, [])):
        with _HostReads() as host:
            model(x, mask=mask, mask_ratio=0.5)
        assert host.seen == reads, mask


_GRAPH_BREAKS = """
import json, torch, torch._dynamo as dynamo
from hlvm.models import build_model, get_config
out = {}
for name, cfg in (
    ("mlp", get_config("mlp", img_size=8, in_chans=2, mlp_hidden=(64,), mlp_decoder_hidden=(64,))),
    ("vit", get_config("vit_small_synth", img_size=8, in_chans=2, patch_size=2, mask_unit=2, embed_dim=32, depth=2,
                       num_heads=2, decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2)),
):
    model = build_model(cfg)
    x = torch.randn(4, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    tokens = model.token_mask(x, 0.5, generator=torch.Generator().manual_seed(0))
    dynamo.reset()
    e = dynamo.explain(lambda imgs, mask: model(imgs, mask=mask).loss)(x, tokens)
    out[name] = [e.graph_break_count, [str(b.reason).splitlines()[0] for b in e.break_reasons]]
print(json.dumps(out))
"""


@pytest.mark.slow
def test_torch_compile_breaks_the_graph_of_a_forward_with_a_passed_mask_once():
    # The one break is the validating read (a bad mask must still raise MaskError); there were 3 (MLP) and 4 (ViT).
    # In a fresh interpreter (5-10 s of imports, hence slow): after dynamo has run in a process, autograd's next
    # first backward there starts worker threads, and the fork-based DDP tests in that process then fail.
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", _GRAPH_BREAKS], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    breaks = json.loads(done.stdout.splitlines()[-1])
    assert {k: n for k, (n, _) in breaks.items()} == {"mlp": 1, "vit": 1}, breaks


@pytest.mark.parametrize("ratio", [0.0, 1.0, -0.2, 1.5, float("nan")])
def test_ratio_outside_open_unit_interval_raises(ratio):
    model = build_model(tiny_mlp())
    with pytest.raises(MaskError, match="ratio"):
        model(imgs_for(model.cfg), mask_ratio=ratio)


def test_wrong_image_shape_raises_data_error():
    model = build_model(tiny_vit())
    with pytest.raises(DataError, match=r"\(B, 2, 8, 8\)"):
        model(torch.zeros(2, 3, 8, 8))


# ----------------------------------------------------------------------------- loss


def test_patchify_layout_and_inverse():
    x = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).reshape(2, 3, 4, 6)
    t = patchify(x, 2)  # (2, 6, 12)
    # token (row 1, col 2) is pixels [2:4, 4:6], laid out (p, p, C)
    assert torch.equal(t[1, 1 * 3 + 2], x[1, :, 2:4, 4:6].permute(1, 2, 0).reshape(-1))
    assert torch.equal(unpatchify(t, 2, (2, 3), 3), x)


@pytest.mark.parametrize("norm_pix", [False, True])
def test_loss_is_mean_token_error_over_masked_tokens_only(norm_pix):
    cfg = tiny_vit(norm_pix_loss=norm_pix)
    model = build_model(cfg)
    x = imgs_for(cfg)
    gen = torch.Generator().manual_seed(0)
    mask = random_token_mask(cfg, 4, 0.5, generator=gen).float()  # (B, L)
    pred = torch.randn(4, cfg.num_tokens, 8, generator=gen)
    # brute-force oracle: loop over samples and masked tokens
    errs = []
    for b in range(4):
        for t in range(cfg.num_tokens):
            if mask[b, t]:
                r, c = divmod(t, 4)
                target = x[b, :, 2 * r : 2 * r + 2, 2 * c : 2 * c + 2].permute(1, 2, 0).reshape(-1)
                if norm_pix:
                    target = (target - target.mean()) / (target.var() + 1e-6).sqrt()
                errs.append(((pred[b, t] - target) ** 2).mean())
    loss = model.masked_loss(x, pred, mask)
    assert torch.allclose(loss, torch.stack(errs).mean(), atol=1e-6)
    pix = unpatchify(mask.unsqueeze(-1).expand(-1, -1, 8), 2, (4, 4), 2).bool()  # (B, C, H, W) masked pixels
    noise = 5.0 * torch.randn(x.shape, generator=gen)  # not constant per token: norm_pix_loss would undo a shift
    visible_changed = torch.where(pix, x, x + noise)
    assert torch.allclose(model.masked_loss(visible_changed, pred, mask), loss, atol=1e-6)
    masked_changed = torch.where(pix, x + noise, x)
    assert not torch.allclose(model.masked_loss(masked_changed, pred, mask), loss, atol=1e-3)


def mae_forward_loss(imgs, pred, mask, p, norm_pix_loss):
    """The operations of models_mae.py's forward_loss, in its order (patchify is ours, tested above)."""
    target = patchify(imgs, p)
    if norm_pix_loss:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1.0e-6) ** 0.5
    loss = ((pred - target) ** 2).mean(dim=-1)
    return (loss * mask).sum() / mask.sum()


@pytest.mark.parametrize("norm_pix", [False, True])
@pytest.mark.parametrize("kind", list(TINY))
def test_float32_loss_is_maes_bit_for_bit(kind, norm_pix):
    cfg = TINY[kind](norm_pix_loss=norm_pix)
    model = build_model(cfg)
    x = imgs_for(cfg)
    out = model(x, mask_ratio=0.5, generator=torch.Generator().manual_seed(0))
    assert out.loss.dtype == torch.float32
    assert torch.equal(out.loss, mae_forward_loss(x, out.pred, out.mask, cfg.patch_size, norm_pix))


@pytest.mark.parametrize("norm_pix", [False, True])
@pytest.mark.parametrize("kind", list(TINY))
def test_a_float64_model_has_a_float64_loss(kind, norm_pix):
    cfg = TINY[kind](norm_pix_loss=norm_pix)
    model = build_model(cfg).double()
    x = imgs_for(cfg).double()
    out = model(x, mask_ratio=0.5, generator=torch.Generator().manual_seed(0))
    assert out.pred.dtype == torch.float64 and out.loss.dtype == torch.float64
    assert torch.equal(out.loss, mae_forward_loss(x, out.pred, out.mask, cfg.patch_size, norm_pix))
    out.loss.backward()
    assert all(p.grad.dtype == torch.float64 for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("kind", ["vit", "mlp"])
def test_under_bf16_autocast_the_loss_is_float32_with_an_exact_mask_count(kind):
    # mae's mask is float32 and pred - target promotes bf16 to float32. 29 samples with 9/16 of
    # their tokens masked: 261 (ViT) or 1044 (MLP) masked tokens, which bf16 (8 significant bits) cannot hold.
    cfg = TINY[kind]()
    model = build_model(cfg)
    x = imgs_for(cfg, b=29)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, mask_ratio=9 / 16, generator=torch.Generator().manual_seed(0))
    count = out.mask.double().sum().item()
    assert count in (261, 1044) and torch.tensor(count, dtype=torch.bfloat16).item() != count
    assert out.pred.dtype == torch.bfloat16 and out.loss.dtype == torch.float32
    assert torch.equal(out.loss, mae_forward_loss(x, out.pred, out.mask.float(), cfg.patch_size, False))


@pytest.mark.parametrize("kind", ["vit_bottleneck", "mlp_bottleneck"])
def test_with_a_bottleneck_the_decoder_sees_nothing_but_the_code(kind):
    cfg = TINY[kind]()
    model = build_model(cfg)
    proj = model.bottleneck_proj if isinstance(model, ViTMAE) else model.encoder[-1]
    with torch.no_grad():  # a constant code: the prediction must not depend on the image at all
        proj.weight.zero_()
        proj.bias.fill_(0.3)
    m = Mask.random(8, 8, 0.5, unit=2, seed=0)
    a, b = model(imgs_for(cfg, seed=1), mask=m), model(imgs_for(cfg, seed=2), mask=m)
    assert torch.allclose(a.pred, b.pred, atol=1e-6)
    assert not torch.allclose(a.loss, b.loss)


def test_without_a_bottleneck_visible_tokens_reach_the_decoder():
    # the control for the test above: the same surgery on the wide ViT leaves the image visible
    model = build_model(tiny_vit())
    m = Mask.random(8, 8, 0.5, unit=2, seed=0)
    a, b = model(imgs_for(model.cfg, seed=1), mask=m), model(imgs_for(model.cfg, seed=2), mask=m)
    assert not torch.allclose(a.pred, b.pred, atol=1e-3)


@pytest.mark.parametrize("name", SMALL)
@pytest.mark.parametrize("bottleneck", [None, 5])
def test_small_named_configs_run_as_configured(name, bottleneck):
    cfg = get_config(name, bottleneck=bottleneck)
    model = build_model(cfg)
    out = model(imgs_for(cfg, b=2), generator=torch.Generator().manual_seed(0))
    per_unit = (cfg.mask_unit // cfg.patch_size) ** 2
    assert (out.mask.sum(1) == num_masked(cfg.num_units, 0.75) * per_unit).all()
    assert out.pred.shape == (2, cfg.num_tokens, cfg.patch_size**2 * cfg.in_chans)
    assert out.features.shape == (2, bottleneck or cfg.embed_dim)
    out.loss.backward()


@pytest.mark.parametrize("kind", list(TINY))
def test_forward_backward_and_output_shapes(kind):
    cfg = TINY[kind]()
    model = build_model(cfg)
    out = model(imgs_for(cfg).double(), mask_ratio=0.75, generator=torch.Generator().manual_seed(0))
    assert out.pred.shape == (4, cfg.num_tokens, cfg.patch_size**2 * cfg.in_chans)
    assert out.mask.shape == out.ids_restore.shape == (4, cfg.num_tokens)
    assert out.features.shape == (4, cfg.code_dim)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    ids_shuffle = torch.argsort(out.ids_restore, dim=1)  # visible tokens first, then masked
    n_vis = cfg.num_tokens - int(out.mask[0].sum())
    assert (out.mask.gather(1, ids_shuffle)[:, :n_vis] == 0).all()
    out.loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("kind", list(TINY))
def test_a_tiny_model_overfits_a_tiny_batch(kind):
    torch.manual_seed(0)
    cfg = TINY[kind]()
    model = build_model(cfg)
    x = imgs_for(cfg)
    m = Mask.random(8, 8, 0.5, unit=2, seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = model(x, mask=m).loss.item()
    for _ in range(200 if kind.startswith("vit") else 100):
        opt.zero_grad()
        loss = model(x, mask=m).loss
        loss.backward()
        opt.step()
    assert loss.item() < 0.05 * first, (first, loss.item())


# ----------------------------------------------------------------------------- the ViT


def test_position_embeddings_match_maes_formula():
    dim, gh, gw = 8, 2, 3
    emb = sincos_2d(dim, (gh, gw), cls_token=True).numpy()
    assert emb.shape == (1 + gh * gw, dim) and not emb[0].any()
    omega = 1.0 / 10000 ** (np.arange(dim // 4) / (dim / 4))
    for r in range(gh):
        for c in range(gw):
            want = np.concatenate([np.sin(c * omega), np.cos(c * omega), np.sin(r * omega), np.cos(r * omega)])
            np.testing.assert_allclose(emb[1 + r * gw + c], want, atol=1e-6)


def test_forward_features_sees_every_token_with_cls_first():
    cfg = tiny_vit()
    model = build_model(cfg).eval()
    x = imgs_for(cfg)
    feats = model.forward_features(x)
    assert feats.shape == (4, 1 + cfg.num_tokens, cfg.embed_dim)


def test_vit_tiny_synth_trains_20_steps_on_the_depth3_grid_and_encodes_under_a_fixed_mask(tmp_path):
    # The studies' ViT end to end on CPU: hlvm.train with one fixed mask (the top-left quadrant less
    # pixel (3, 3), where c is z_2_1_1, dim_c 4) and a dim_c-wide bottleneck, then encode held-out images.
    from hlvm.graphs import GridSpec
    from hlvm.simulate import SimulateConfig, Simulator
    from hlvm.train import METRICS, TrainConfig, load_run, train

    spec = tmp_path / "simulate.json"
    spec.write_text(SimulateConfig(grid=GridSpec(depth=3), seed=0).to_json())
    grid = np.zeros((8, 8), dtype=int)
    grid[:4, :4] = 1
    grid[3, 3] = 0
    cfg = TrainConfig(model="vit_tiny_synth", data=f"online:{spec}", mask={"grid": grid.tolist()}, bottleneck=4,
                      steps=20, batch_size=32, blr=8e-3, warmup=5, log_every=1, ckpt_every=0, device="cpu",
                      out=str(tmp_path / "run"))  # fmt: skip
    run = train(cfg, progress=False)
    losses = [json.loads(line)["loss"] for line in (run / METRICS).read_text().splitlines()]
    assert len(losses) == 20 and all(np.isfinite(losses))
    assert np.mean(losses[-5:]) < 0.9 * losses[0], losses  # it learns

    model, _ = load_run(run)
    mcfg = model.cfg
    assert (mcfg.img_hw, mcfg.in_chans, mcfg.patch_size, mcfg.code_dim) == ((8, 8), 5, 1, 4)
    data = Simulator.from_config(SimulateConfig(grid=GridSpec(depth=3), seed=0)).sample(16, np.random.default_rng(1))
    x = torch.as_tensor(np.asarray(data.images), dtype=torch.float32)  # (16, 5, 8, 8)
    mask = Mask(grid.astype(bool))
    with torch.no_grad():
        code = model.encode(x, mask)  # (16, 4)
        masked_changed = model.encode(torch.where(torch.from_numpy(grid.astype(bool)), x + 1.0, x), mask)
        visible_changed = x.clone()
        visible_changed[:, :, 3, 3] += 1.0  # the one visible pixel of z_2_1_1's block
        pixel_changed = model.encode(visible_changed, mask)
    assert code.shape == (16, 4) and torch.isfinite(code).all()
    assert torch.allclose(code, masked_changed, atol=1e-5)  # E(x_mc): blind to the masked pixels
    assert not torch.allclose(code, pixel_changed, atol=1e-3)


@pytest.mark.parametrize("name", BIG)
def test_big_configs_match_timm_vit_parameter_counts(name):
    cfg = MODEL_CONFIGS[name]
    with torch.device("meta"):
        ours = build_model(cfg)
        ref = VisionTransformer(
            img_size=cfg.img_size, patch_size=cfg.patch_size, embed_dim=cfg.embed_dim,
            depth=cfg.depth, num_heads=cfg.num_heads, num_classes=0,
        )  # fmt: skip
    enc = {k: v.shape for k, v in ours.state_dict().items() if not k.startswith(("decoder", "mask_token"))}
    assert enc == {k: v.shape for k, v in ref.state_dict().items()}
    dd, depth = cfg.decoder_embed_dim, cfg.decoder_depth
    # Linear(D, Dd) + mask token + blocks (qkv, proj, fc1, fc2 at mlp_ratio 4, two norms) + norm + Linear(Dd, p*p*3)
    per_block = 12 * dd * dd + 13 * dd
    pred = dd * cfg.patch_size**2 * 3 + cfg.patch_size**2 * 3
    want = (cfg.embed_dim + 1) * dd + dd + depth * per_block + 2 * dd + pred
    n_dec = sum(p.numel() for k, p in ours.named_parameters() if k.startswith(("decoder", "mask_token")))
    assert n_dec == want


@pytest.mark.slow  # 86M parameters to initialise: seconds, not CI
def test_vit_base_runs_on_a_tiny_image():
    cfg = get_config("mae_vit_base_patch16", img_size=32, mask_unit=16, in_chans=1)
    model = build_model(cfg)
    out = model(torch.randn(1, 1, 32, 32), mask_ratio=0.75, generator=torch.Generator().manual_seed(0))
    assert out.pred.shape == (1, 4, 256) and int(out.mask.sum()) == 3


# ----------------------------------------------------------------------------- official checkpoints


def _timm_and_ours():
    torch.manual_seed(0)
    ref = VisionTransformer(img_size=16, patch_size=4, in_chans=2, embed_dim=32, depth=2, num_heads=2, num_classes=0)
    cfg = tiny_vit(img_size=16, patch_size=4, mask_unit=4)
    return ref.eval(), build_model(cfg).eval()


def test_official_checkpoint_loads_into_the_encoder(tmp_path):
    ref, model = _timm_and_ours()
    sd = {k: v.clone() for k, v in ref.state_dict().items()}
    sd["decoder_pred.weight"] = torch.zeros(1)  # decoder keys are skipped by default
    path = tmp_path / "mae_pretrain.pth"
    torch.save({"model": sd}, path)
    with pytest.warns(UnloadedWeightsWarning, match="1 decoder tensor in the checkpoint skipped"):
        loaded = load_official_checkpoint(model, path)
    assert set(loaded) == set(ref.state_dict())
    x = torch.randn(3, 2, 16, 16)
    with torch.no_grad():
        assert torch.allclose(model.forward_features(x), ref.forward_features(x), atol=1e-5)


def test_a_checkpoint_written_by_maes_training_script_loads(tmp_path):
    # util/misc.py's save_model: the whole model, AdamW's state, the epoch, the loss scaler's state,
    # and main_pretrain.py's argparse.Namespace, which weights_only loading refuses unless allowed.
    cfg = tiny_vit()
    torch.manual_seed(0)
    src, dst = build_model(cfg), build_model(cfg)
    opt = torch.optim.AdamW(src.parameters(), lr=1e-4, betas=(0.9, 0.95))
    src(imgs_for(cfg), mask_ratio=0.5, generator=torch.Generator().manual_seed(0)).loss.backward()
    opt.step()
    args = argparse.Namespace(
        batch_size=64, epochs=800, accum_iter=1, model="mae_vit_base_patch16", input_size=224, mask_ratio=0.75,
        norm_pix_loss=True, weight_decay=0.05, lr=2.4e-3, blr=1.5e-4, min_lr=0.0, warmup_epochs=40,
        data_path="/datasets/imagenet", output_dir="./output_dir", device="cuda", seed=0, resume="",
        start_epoch=0, num_workers=10, pin_mem=True, world_size=8, local_rank=-1, dist_on_itp=False,
        dist_url="env://", distributed=True, rank=0, gpu=0, dist_backend="nccl",
    )  # fmt: skip
    scaler = {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000, "_growth_tracker": 0}
    path = tmp_path / "checkpoint-3.pth"
    torch.save({"model": src.state_dict(), "optimizer": opt.state_dict(), "epoch": 3, "scaler": scaler, "args": args}, path)
    loaded = load_official_checkpoint(dst, path, decoder=True)
    assert set(loaded) == set(src.state_dict())
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v), k


@pytest.mark.parametrize(
    ("edit", "error", "message"),
    [
        (lambda sd: sd.pop("blocks.1.mlp.fc2.bias"), ConfigError, "lacks keys the model needs: blocks.1.mlp.fc2.bias"),
        (lambda sd: sd.update({"dist_token": torch.zeros(1, 1, 32)}), ConfigError, "has keys the model lacks: dist_token"),
        (
            lambda sd: sd.update({"pos_embed": torch.zeros(1, 5, 32)}),
            ConfigError,
            r"pos_embed has shape \(1, 5, 32\), the model needs \(1, 17, 32\)",
        ),
    ],
)
def test_mismatched_checkpoints_name_the_problem(edit, error, message):
    ref, model = _timm_and_ours()
    sd = dict(ref.state_dict())
    edit(sd)
    with pytest.raises(error, match=message) as e:
        load_official_checkpoint(model, {"model": sd})
    assert "\n" not in str(e.value)


def _umae_style(model) -> dict[str, torch.Tensor]:
    """The model's own keys plus U-MAE's / M-MAE's monitoring classifier (fc) and its global-pool norm (fc_norm)."""
    d = model.cfg.embed_dim
    fc = {"fc.weight": torch.randn(10, d), "fc.bias": torch.zeros(10)}
    return {**model.state_dict(), **fc, "fc_norm.weight": torch.ones(d), "fc_norm.bias": torch.zeros(d)}


def test_a_umae_checkpoint_loads_without_its_classifier_named_in_one_warning(tmp_path):
    from hlvm.models.checkpoint import DroppedKeysWarning

    cfg = tiny_vit()
    torch.manual_seed(0)
    src, dst = build_model(cfg), build_model(cfg)
    path = tmp_path / "umae.pth"
    torch.save({"model": _umae_style(src)}, path)
    with pytest.warns(DroppedKeysWarning) as record:
        loaded = load_official_checkpoint(dst, path, decoder=True)
    dropped = [r for r in record if issubclass(r.category, DroppedKeysWarning)]
    assert len(dropped) == 1 and not any(issubclass(r.category, UnloadedWeightsWarning) for r in record)
    message = str(dropped[0].message)
    assert "\n" not in message and message.endswith("left out: fc.bias, fc.weight, fc_norm.bias, fc_norm.weight")
    assert set(loaded) == set(src.state_dict())
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v), k


def test_timms_head_is_left_out_too():
    from hlvm.models.checkpoint import DroppedKeysWarning

    ref, model = _timm_and_ours()
    sd = {**ref.state_dict(), "head.weight": torch.zeros(3, 32), "head.bias": torch.zeros(3)}
    with pytest.warns(UnloadedWeightsWarning, match="the decoder"):  # a timm ViT has none
        with pytest.warns(DroppedKeysWarning, match="left out: head.bias, head.weight$"):
            load_official_checkpoint(model, {"model": sd})


def test_a_stray_key_beside_the_classifier_still_raises():
    cfg = tiny_vit()
    src = build_model(cfg)
    sd = {**_umae_style(src), "fc_extra.weight": torch.zeros(1)}  # shares a prefix with fc, but is not fc.*
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing is warned about before it raises
        with pytest.raises(ConfigError, match="checkpoint has keys the model lacks: fc_extra.weight$"):
            load_official_checkpoint(build_model(cfg), {"model": sd}, decoder=True)


def test_a_visualize_checkpoint_loads_the_decoder_too_when_asked():
    cfg = tiny_vit()
    torch.manual_seed(0)
    src, dst = build_model(cfg).eval(), build_model(cfg).eval()
    loaded = load_official_checkpoint(dst, {"model": src.state_dict()}, decoder=True)
    assert "decoder_pred.weight" in loaded and "mask_token" in loaded
    m = Mask.random(8, 8, 0.5, unit=2, seed=0)
    x = imgs_for(cfg)
    with torch.no_grad():
        assert torch.allclose(dst(x, mask=m).pred, src(x, mask=m).pred, atol=1e-6)
    with pytest.raises(ConfigError, match="decoder_embed.weight has shape"):  # a bottleneck decoder differs
        load_official_checkpoint(build_model(tiny_vit(bottleneck=3)), {"model": src.state_dict()}, decoder=True)


def _encoder_only(model):
    return {k: v for k, v in model.state_dict().items() if not k.startswith(("decoder_", "mask_token", "bottleneck_proj"))}


@pytest.mark.parametrize(
    ("kind", "checkpoint", "named"),
    [
        ("vit", "visualize", ["the decoder (", "decoder tensors in the checkpoint skipped; pass decoder=True"]),
        ("vit", "encoder", ["the decoder (the checkpoint has none)"]),
        ("vit_bottleneck", "encoder", ["the decoder (the checkpoint has none)", "bottleneck projection bottleneck_proj"]),
    ],
)
def test_weights_left_at_random_init_are_named_in_one_warning(kind, checkpoint, named):
    cfg = TINY[kind]()
    torch.manual_seed(0)
    src, dst = build_model(tiny_vit()), build_model(cfg)
    sd = src.state_dict() if checkpoint == "visualize" else _encoder_only(src)
    with pytest.warns(UnloadedWeightsWarning) as record:
        load_official_checkpoint(dst, {"model": sd})
    assert len(record) == 1
    message = str(record[0].message)
    assert "\n" not in message and message.startswith("not loaded from the checkpoint, left at random initialisation")
    for words in named:
        assert words in message
    assert ("bottleneck" in message) == (cfg.bottleneck is not None)


@pytest.mark.parametrize("kind", ["vit", "vit_bottleneck"])
def test_nothing_is_warned_when_every_weight_is_loaded(kind):
    # A visualize checkpoint with decoder=True; for a bottleneck model, an hlvm state dict holding the projection.
    cfg = TINY[kind]()
    torch.manual_seed(0)
    src, dst = build_model(cfg), build_model(cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnloadedWeightsWarning)
        loaded = load_official_checkpoint(dst, {"model": src.state_dict()}, decoder=True)
    assert set(loaded) == set(src.state_dict())
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v), k


def test_missing_or_corrupt_checkpoint_file_raises_data_error(tmp_path):
    _, model = _timm_and_ours()
    with pytest.raises(DataError, match="not found"):
        load_official_checkpoint(model, tmp_path / "nope.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="cannot read checkpoint"):
        load_official_checkpoint(model, bad)
    with pytest.raises(ConfigError, match="ViT MAE"):
        load_official_checkpoint(build_model(tiny_mlp()), {})


def test_build_model_takes_a_config_or_a_name():
    assert isinstance(build_model("mlp"), MLPMAE)
    assert isinstance(build_model(tiny_vit()), ViTMAE)
    with pytest.raises(ConfigError, match="unknown model config"):
        build_model("resnet50")
    with pytest.raises(TypeError):
        build_model({"arch": "vit"})


# ----------------------------------------------------------------------------- the theory's encoder


@pytest.mark.slow  # ~10 s of training per mask on one free core; minutes on a loaded machine
@pytest.mark.parametrize("less_one", [False, True], ids=["quadrant", "quadrant_less_one"])
def test_mlp_bottleneck_of_dim_c_recovers_the_shared_noise_and_nothing_private(less_one):
    """docs/theory.md Theorem 2 on a depth-2 grid hierarchy (4x4 pixels), one fixed mask.

    A quadrant masked puts ``c`` at the root; leaving one of its pixels
    visible puts ``c`` at that pixel's parent. A ``dim_c``-wide MLP code must
    carry ``CA``'s noise (held-out nonlinear R^2 > 0.9) and neither side's
    private noise (R^2 < 0.1).
    """
    from hlvm.graphs import GridSpec
    from hlvm.locate import locate
    from hlvm.metrics import r2_best
    from hlvm.simulate import SimulateConfig, Simulator

    torch.manual_seed(0)
    sim = Simulator.from_config(SimulateConfig(grid=GridSpec(depth=2)))
    chans, side, _ = sim.image_shape
    grid = np.zeros((side, side), dtype=bool)
    grid[:2, :2] = True
    if less_one:
        grid[1, 1] = False
    mask = Mask(grid)
    shared = locate(sim.graph, mask)
    assert shared.c == (("z_1_0_0",) if less_one else ("z_0_0_0",))
    train, test = sim.sample(8000, np.random.default_rng(1)), sim.sample(1000, np.random.default_rng(2))
    x, xt = (torch.tensor(d.images, dtype=torch.float32) for d in (train, test))
    mean, std = x.mean((0, 2, 3), keepdim=True), x.std((0, 2, 3), keepdim=True)
    x, xt = (x - mean) / std, (xt - mean) / std
    cfg = get_config(
        "mlp", img_size=side, in_chans=chans, bottleneck=shared.dim_c, mlp_hidden=(128, 128), mlp_decoder_hidden=(128, 128)
    )
    model = build_model(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(800):
        loss = model(x[torch.randint(0, len(x), (256,), generator=gen)], mask=mask).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        code = model.encode(xt, mask).numpy()

    def r2(nodes):
        return float(np.mean(r2_best(code, np.concatenate([test.noise(v) for v in nodes], 1), random_state=0)))

    assert r2(shared.shared) > 0.9
    assert r2(shared.s_m) < 0.1
    assert r2(shared.s_mc) < 0.1


# ----------------------------------------------------------------------------- complementary masks (MI-MAE's views)


@pytest.mark.parametrize(("ratio", "views", "disjoint"), [(0.75, 4, "visible"), (0.5, 2, "visible"), (0.6, 2, "visible"),
                                                           (0.25, 4, "masked"), (0.3, 3, "masked")])
@pytest.mark.parametrize("kind", ["random", "aligned"])
def test_complementary_masks_are_disjoint_exact_and_their_first_view_is_the_plain_mask(ratio, views, disjoint, kind):
    from hlvm.models.masking import complementary_token_masks

    cfg = get_config("mlp", img_size=8, in_chans=1)  # 64 units of one pixel
    m = complementary_token_masks(cfg, 5, ratio, views, disjoint=disjoint, kind=kind, generator=torch.Generator().manual_seed(1))
    assert m.shape == (views * 5, 64) and m.dtype == torch.bool
    n = num_masked(64, ratio)
    assert (m.sum(1) == n).all()  # every view masks the training ratio
    sets = (~m if disjoint == "visible" else m).reshape(views, 5, 64)
    assert (sets.sum(0) <= 1).all()  # pairwise disjoint
    plain = (random_token_mask(cfg, 5, ratio, generator=torch.Generator().manual_seed(1)) if kind == "random"
             else aligned_token_mask(cfg, 5, ratio, 2, generator=torch.Generator().manual_seed(1)))
    assert torch.equal(m[:5], plain)


def test_complementary_random_views_are_each_distributed_as_maes_mask():
    from hlvm.models.masking import complementary_token_masks

    cfg = get_config("vit_small_synth", mask_unit=4)  # 16 units
    m = complementary_token_masks(cfg, 4000, 0.75, 4, generator=torch.Generator().manual_seed(3)).reshape(4, 4000, -1)
    for view in m:
        assert (view.float().mean(0) - 0.75).abs().max() < 0.03  # each unit masked with probability 12/16
    # aligned views at ratio 0.75 on an 8x8 grid keep exactly one whole quadrant visible each
    cfg = get_config("mlp", img_size=8, in_chans=1)
    a = complementary_token_masks(cfg, 50, 0.75, 4, kind="aligned", generator=torch.Generator().manual_seed(0))
    vis = (~a).reshape(200, 2, 4, 2, 4).sum(dim=(2, 4))  # (views*B, 2, 2) visible pixels per quadrant
    assert sorted(vis.reshape(200, 4).max(1).values.unique().tolist()) == [16]


@pytest.mark.parametrize(("ratio", "views", "disjoint", "message"), [
    (0.5, 3, "visible", "3 masks with disjoint visible sets need 3 x 32 <= 64"),
    (0.75, 2, "masked", "2 masks with disjoint masked sets need 2 x 48 <= 64"),
    (0.5, 1, "visible", "at least 2 views"),
    (0.5, 2, "both", "disjoint must be one of"),
])
def test_complementary_masks_that_cannot_exist_raise_mask_error(ratio, views, disjoint, message):
    from hlvm.models.masking import complementary_token_masks

    with pytest.raises(MaskError, match=message):
        complementary_token_masks(get_config("mlp", img_size=8, in_chans=1), 2, ratio, views, disjoint=disjoint)


# ----------------------------------------------------------------------------- posterior code and decoder features


@pytest.mark.parametrize("kind", list(TINY))
def test_a_gaussian_posterior_adds_one_head_after_every_other_weight(kind):
    torch.manual_seed(0)
    plain = build_model(TINY[kind]()).state_dict()
    torch.manual_seed(0)
    model = build_model(TINY[kind](posterior="gaussian"))
    state = model.state_dict()
    assert set(state) - set(plain) == {"posterior_logvar.weight", "posterior_logvar.bias"}
    assert all(torch.equal(state[k], v) for k, v in plain.items())
    x = imgs_for(model.cfg)
    out = model(x, mask_ratio=0.5, generator=torch.Generator().manual_seed(0))
    width = model.cfg.bottleneck or (model.cfg.embed_dim if model.cfg.arch == "vit" else model.cfg.code_dim)
    assert out.posterior_mean.shape[-1] == out.posterior_logvar.shape[-1] == width
    if kind == "vit":  # every visible token (class token first) is its own Gaussian
        assert out.posterior_mean.shape == (4, 1 + 8, 32) and torch.equal(out.posterior_mean, out.latent)
    else:
        assert torch.equal(out.posterior_mean, out.features)
    assert (out.posterior_logvar >= -10.0).all()  # the floor
    with pytest.raises(ConfigError, match="posterior must be null or 'gaussian'"):
        TINY[kind](posterior="laplace")


@pytest.mark.parametrize("kind", list(TINY))
def test_decoder_features_see_only_the_visible_part(kind):
    cfg = TINY[kind](posterior="gaussian")
    model = build_model(cfg).train()  # the mean is decoded even in training mode
    m = Mask.random(8, 8, ratio=0.5, unit=2, seed=0)
    x = imgs_for(cfg)
    y = x.clone()
    y[:, :, torch.from_numpy(m.grid.copy())] = 100.0  # change only masked pixels
    with torch.no_grad():
        f = model.decoder_features(x, m)
        width = 64 if cfg.arch == "mlp" else cfg.decoder_depth * cfg.decoder_embed_dim
        assert f.shape == (4, width)
        assert torch.allclose(f, model.decoder_features(y, m), atol=1e-5)
        assert torch.equal(f, model.decoder_features(x, m))  # deterministic: no posterior draw
        z = x.clone()
        z[:, :, torch.from_numpy(~m.grid.copy())] += 1.0
        assert not torch.allclose(f, model.decoder_features(z, m), atol=1e-3)
    with pytest.raises(ConfigError, match="no hidden layers"):
        build_model(tiny_mlp(mlp_decoder_hidden=())).decoder_features(x, m)


def test_mlp_decoder_features_are_the_hidden_activations_of_the_decoded_code():
    cfg = tiny_mlp(mlp_decoder_hidden=(16, 8))
    model = build_model(cfg).eval()
    m = Mask.random(8, 8, ratio=0.5, seed=1)
    x = imgs_for(cfg)
    with torch.no_grad():
        pix = torch.from_numpy(m.grid.copy()).float().expand(4, 8, 8).flatten(1)
        h1 = torch.nn.functional.gelu(model.decoder[0](torch.cat([model.encode(x, m), pix], dim=1)))
        h2 = torch.nn.functional.gelu(model.decoder[2](h1))
        torch.testing.assert_close(model.decoder_features(x, m), torch.cat([h1, h2], dim=1))


# ----------------------------------------------------------------------------- the boundary-ignoring loss


def test_boundary_ignore_drops_masked_pixels_next_to_visible_ones_on_a_hand_made_mask():
    from hlvm.models.masking import boundary_keep, boundary_keep_numpy

    # 6x6 image, the left 4 columns masked: K=1 keeps columns 0-2, K=2 columns 0-1, K=3 column 0, K=4 nothing
    cfg = get_config("mlp", img_size=6, in_chans=1)
    grid = np.zeros((6, 6), dtype=bool)
    grid[:, :4] = True
    tokens = torch.from_numpy(grid.reshape(1, -1))
    for k, cols in ((1, 3), (2, 2), (3, 1), (4, 0)):
        keep = boundary_keep(tokens, cfg, k).reshape(6, 6).bool().numpy()
        want = np.zeros((6, 6), dtype=bool)
        want[:, :cols] = True
        assert (keep == want).all(), k
        assert (boundary_keep_numpy(grid[None], k)[0] == want).all()
    # the loss: a prediction error of 1 everywhere except 3 on column 0; K = 2 keeps columns 0 and 1
    model = build_model(cfg)
    imgs = torch.zeros(1, 1, 6, 6)
    err = torch.ones(6, 6)
    err[:, 0] = 3.0
    pred = err.reshape(1, 36, 1)  # (B, L, p*p*C) with p = 1
    mask = tokens.float()
    assert model.masked_loss(imgs, pred, mask).item() == pytest.approx((6 * 9 + 18 * 1) / 24)  # MAE: every masked pixel
    assert model.masked_loss(imgs, pred, mask, boundary_ignore=2).item() == pytest.approx((6 * 9 + 6 * 1) / 12)
    assert model.masked_loss(imgs, pred, mask, boundary_ignore=4).item() == 0.0  # nothing left: no gradient, no NaN


def test_boundary_ignore_works_per_pixel_inside_a_token_patch():
    # 4x4 image, token patch 2: mask the left half; K = 1 keeps column 0 only, so each masked token keeps half its pixels
    cfg = get_config("vit_small_synth", img_size=4, in_chans=1, patch_size=2, mask_unit=2, embed_dim=16, depth=1,
                     num_heads=2, decoder_embed_dim=8, decoder_depth=1, decoder_num_heads=2)
    model = build_model(cfg)
    mask = torch.tensor([[1.0, 0.0, 1.0, 0.0]])  # (B, L) tokens row-major: the left column of tokens
    imgs = torch.zeros(1, 1, 4, 4)
    pred = torch.tensor([[[2.0, 0.0, 2.0, 0.0]] * 4])  # (1, 4, p*p) errors 4 on each token's left pixels, 0 on the right
    assert model.masked_loss(imgs, pred, mask).item() == pytest.approx(2.0)  # the mean over all 4 pixels of a token
    assert model.masked_loss(imgs, pred, mask, boundary_ignore=1).item() == pytest.approx(4.0)  # the left pixels only


@pytest.mark.parametrize("ratio, mae_masked", [(0.7, 138), (0.2, 40), (0.9, 177), (0.75, 147)])
def test_the_official_configs_mask_as_many_tokens_as_mae(ratio, mae_masked):
    # facebookresearch/mae's random_masking keeps len_keep = int(L * (1 - mask_ratio)) of L = 196 tokens;
    # hlvm's own configs round ratio * L to the nearest count (137, 39, 176, 147 here).
    from hlvm.masks import num_masked
    from hlvm.models.masking import random_token_mask

    L = 196
    assert L - int(L * (1 - ratio)) == mae_masked  # MAE's own arithmetic, as written in models_mae.py
    cfg = get_config("mae_vit_base_patch16")
    assert cfg.mask_count == "mae" and cfg.num_tokens == L
    tokens = random_token_mask(cfg, 3, ratio, generator=torch.Generator().manual_seed(0))
    assert tokens.sum(dim=1).tolist() == [mae_masked] * 3
    assert num_masked(L, ratio) == round(ratio * L + 1e-9)  # hlvm's rule elsewhere
    ours = get_config("mae_vit_base_patch16", mask_count="nearest")
    assert random_token_mask(ours, 1, ratio, generator=torch.Generator().manual_seed(0)).sum().item() == num_masked(L, ratio)
