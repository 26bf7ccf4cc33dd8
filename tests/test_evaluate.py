"""Claims about hlvm.evaluate: recovery under a fixed mask, set beside Algorithm 1, and the controls.

An oracle encoder that outputs the true c agrees with the theory (agreement
near 1, the masked-side floor near 0); the raw visible pixels hold all of CA
and all of the visible side's private noise (agreement near 0, as for noise);
a random untrained encoder of the visible pixels lies in between.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from hlvm.errors import ConfigError, DataError, MaskError
from hlvm.evaluate import (
    CONTROLS,
    ROW_COLUMNS,
    SUMMARY_KEYS,
    agreement_score,
    control_encoder,
    oracle_encoder,
    pixels_encoder,
    evaluate_encoder,
    evaluate_run,
    heldout_dataset,
    model_encoder,
    resolve_mask,
)
from hlvm.graphs import GridSpec, grid_hierarchy, write_graph
from hlvm.locate import locate
from hlvm.masks import Mask
from hlvm.mixing import MixingSpec, build_mixing
from hlvm.simulate import SimulateConfig, Simulator, load_dataset, simulate_to_dir

# The top-left 2x2 block of a 4x4 image: on the depth-2 grid c = CA = {root},
# s_m = {z_1_0_0}, s_mc = the other three level-1 latents.
QUADRANT = np.zeros((4, 4), dtype=bool)
QUADRANT[:2, :2] = True


@pytest.fixture(scope="module")
def small():
    sim = Simulator.from_config(SimulateConfig(grid=GridSpec(depth=2)))
    return sim.sample(800, np.random.default_rng(1))


@pytest.fixture(scope="module")
def deeper():
    sim = Simulator.from_config(SimulateConfig(grid=GridSpec(depth=3)))
    return sim.sample(800, np.random.default_rng(2))


def oracle(dataset, graph):
    """The library's oracle control, checked here against a plain re-implementation."""
    ours = oracle_encoder(dataset, graph)

    def encode(images, mask):
        plain = np.concatenate([dataset.latent(v) for v in locate(graph, mask).c], axis=1)
        got = ours(images, mask)
        assert np.array_equal(got, plain)
        return got

    return encode


def random_encoder(width: int, seed: int):
    """An untrained encoder: a random tanh layer on the masked-zeroed visible pixels."""

    def encode(images, mask):
        x = (images * mask.visible[None, None]).reshape(len(images), -1)  # (N, C*H*W), masked pixels zeroed
        w = np.random.default_rng(seed).normal(size=(x.shape[1], width)) / np.sqrt(x.shape[1])
        return np.tanh(2.0 * x @ w)

    return encode


# ----------------------------------------------------------------------------- the agreement score


def test_agreement_score_is_held_shared_minus_held_private():
    r2 = np.array([1.0, 0.8, 0.1, -0.3, 0.5])
    classes = np.array(["ca", "ca", "m", "m", "v"])
    # ca 0.9; m (0.1 + 0)/2 = 0.05 (negative clipped); v 0.5
    assert agreement_score(r2, classes, {"ca": 1, "m": 0, "v": 0}) == pytest.approx(0.9 - 0.05 - 0.5)
    assert agreement_score(r2, classes, {"ca": 1, "m": 0}) == pytest.approx(0.85)
    # An absent class adds nothing; no class at all is NaN.
    assert agreement_score(r2, classes, {"ca": 1, "absent": 0}) == pytest.approx(0.9)
    assert np.isnan(agreement_score(r2, classes, {"absent": 0}))
    # The anchors: the true c scores 1, noise 0, a code of everything 0.
    three = np.array(["ca", "m", "v"])
    targets = {"ca": 1, "m": 0, "v": 0}
    assert agreement_score(np.array([1.0, 0.0, 0.0]), three, targets) == 1.0
    assert agreement_score(np.array([0.0, -0.02, 0.01]), three, targets) == pytest.approx(-0.01)
    assert agreement_score(np.array([1.0, 0.0, 1.0]), three, targets) == 0.0


# ----------------------------------------------------------------------------- oracle vs random


@pytest.mark.parametrize(
    ("which", "mask"),
    [
        ("small", Mask(QUADRANT)),
        ("deeper", Mask.random(8, 8, ratio=0.5, unit=2, seed=0)),
    ],
)
def test_oracle_encoder_agrees_and_random_encoder_clearly_less(which, mask, request):
    ds = request.getfixturevalue(which)
    res_oracle = evaluate_encoder(oracle(ds, ds.graph), ds, ds.graph, mask, 0)
    s = res_oracle.summary
    assert s["agreement"] > 0.9
    assert s["r2_ca_noise"] > 0.95 and s["r2_c_value"] > 0.95
    assert abs(s["r2_private_masked_noise"]) < 0.05  # the floor
    assert abs(s["r2_private_visible_noise"]) < 0.05  # c is independent of s_mc
    assert s["cca_c"] > 0.99  # the code is c itself
    assert s["selectivity"] > 0.9 and s["r2_ca_noise_linear"] <= s["r2_ca_noise"] + 1e-12

    res_random = evaluate_encoder(random_encoder(64, 0), ds, ds.graph, mask, 0)
    r = res_random.summary
    assert r["agreement"] < s["agreement"] - 0.3
    assert abs(r["r2_private_masked_noise"]) < 0.05  # no encoder of x_mc sees s_m
    assert r["r2_private_visible_noise"] > 0.3  # a wide random code keeps the visible side's noise
    assert np.isnan(r["cca_c"])  # 64 wide against dim_c: CCA withheld


def test_rows_follow_the_theory_roles_and_the_stable_columns(small):
    mask = Mask(QUADRANT)
    res = evaluate_encoder(oracle(small, small.graph), small, small.graph, mask, 0)
    assert [tuple(r) for r in res.rows] == [ROW_COLUMNS] * len(res.rows)
    assert tuple(res.summary) == SUMMARY_KEYS
    roles = {r["node"]: r["role"] for r in res.rows}
    assert roles == {
        "z_0_0_0": "c",
        "z_1_0_0": "private_masked",
        "z_1_0_1": "private_visible",
        "z_1_1_0": "private_visible",
        "z_1_1_1": "private_visible",
    }
    rows = {r["node"]: r for r in res.rows}
    assert rows["z_0_0_0"]["in_ca"] and not rows["z_1_0_0"]["in_ca"]
    assert rows["z_1_0_0"]["dim"] == 3 and rows["z_1_0_0"]["noise_dim"] == 1
    for r in res.rows:
        assert r["r2_noise"] == pytest.approx(max(r["r2_noise_linear"], r["r2_noise_kernel"]))
    # A child's value holds its parent (root) plus its own noise: about dim 2 of 3 recovered.
    assert 0.3 < rows["z_1_0_0"]["r2_value"] < 0.9
    s = res.summary
    assert (s["n_c"], s["n_ca"], s["n_private_masked"], s["n_private_visible"]) == (1, 1, 1, 3)
    assert (s["dim_c"], s["code_dim"], s["n_samples"]) == (2, 2, 800)
    assert s["mask_ratio"] == 0.25 and s["mask_unit"] == 1
    assert set(res.by_level) == {0, 1}
    assert res.by_level[0] == pytest.approx(rows["z_0_0_0"]["r2_noise"])
    js = res.to_json()
    assert js["c"] == ["z_0_0_0"] and len(js["rows"]) == 5


def test_results_are_deterministic_in_the_seed(small):
    mask = Mask(QUADRANT)
    a = evaluate_encoder(random_encoder(16, 1), small, small.graph, mask, 3)
    b = evaluate_encoder(random_encoder(16, 1), small, small.graph, mask, 3)
    assert a.to_json() == b.to_json()  # NaN as None, so equal NaNs compare equal


def test_bad_encoder_output_and_mask_shapes_raise(small):
    with pytest.raises(DataError, match="encoder output"):
        evaluate_encoder(lambda x, m: np.zeros((3, 2)), small, small.graph, Mask(QUADRANT), 0)
    with pytest.raises(MaskError, match="8x8"):
        evaluate_encoder(oracle(small, small.graph), small, small.graph, Mask.random(8, 8, 0.5, seed=0), 0)


# ----------------------------------------------------------------------------- controls


def fixed_mask_d3() -> Mask:
    """A fixed mask of the depth-3 grid: the top-left quadrant less pixel (3, 3) (c = its parent, z_2_1_1)."""
    grid = np.zeros((8, 8), dtype=bool)
    grid[:4, :4] = True
    grid[3, 3] = False
    return Mask(grid)


def test_controls_on_a_fixed_mask_of_the_depth3_grid(deeper):
    mask = fixed_mask_d3()
    g = deeper.graph
    pix = evaluate_encoder(control_encoder("pixels", dataset=deeper, graph=g), deeper, g, mask, 0).summary
    assert pix["r2_ca_noise"] >= 0.9 and pix["r2_private_visible_noise"] >= 0.9  # holds everything visible
    assert abs(pix["r2_private_masked_noise"]) < 0.05
    assert pix["code_dim"] == 5 * (64 - 15)  # C x visible pixels
    assert abs(pix["selectivity"]) < 0.1 and abs(pix["agreement"]) < 0.1  # as much as noise: nothing sorted out
    orc = evaluate_encoder(control_encoder("oracle", dataset=deeper, graph=g), deeper, g, mask, 0).summary
    assert orc["r2_ca_noise"] >= 0.95 and orc["r2_private_visible_noise"] <= 0.1
    assert orc["code_dim"] == orc["dim_c"] == 4 and orc["agreement"] > 0.9 and orc["cca_c"] > 0.99
    from hlvm.models import get_config

    arch = get_config("mlp", img_size=8, in_chans=5, mlp_hidden=(32,), mlp_decoder_hidden=(32,))
    unt = evaluate_encoder(control_encoder("untrained", dataset=deeper, graph=g, model_config=arch, seed=0), deeper, g, mask, 0)
    assert unt.summary["code_dim"] == 64
    assert all(np.isfinite(unt.summary[k]) for k in ("r2_ca_noise", "r2_private_visible_noise", "agreement", "selectivity"))
    assert all(np.isfinite(r["r2_noise"]) for r in unt.rows)


def test_pixels_control_keeps_exactly_the_visible_pixels():
    images = np.arange(2 * 3 * 4 * 4, dtype=float).reshape(2, 3, 4, 4)
    code = pixels_encoder()(images, Mask(QUADRANT))
    assert code.shape == (2, 3 * 12)
    assert np.array_equal(code[1].reshape(3, 12), images[1][:, ~QUADRANT])


def test_oracle_of_a_mask_sharing_nothing_is_one_constant_column(small):
    import networkx as nx

    from hlvm.graphs import validate_graph

    # Two separate trees, one per image row: masking row 0 shares nothing (c is empty).
    g = nx.DiGraph()
    for r, root in enumerate(("a", "b")):
        g.add_node(root, kind="latent", level=0, dim=1, noise_dim=1)
        for c in range(2):
            g.add_node(f"x_{r}_{c}", kind="observed", level=1, dim=2, noise_dim=1, pos=(r, c))
            g.add_edge(root, f"x_{r}_{c}")
    validate_graph(g)
    data = Simulator(g, build_mixing(g, MixingSpec(), np.random.default_rng(0))).sample(50, np.random.default_rng(1))
    code = oracle_encoder(data, g)(data.images, Mask(np.array([[True, True], [False, False]])))
    assert code.shape == (50, 1) and not code.any()
    # The oracle reads its dataset's latents: images of another size are refused.
    with pytest.raises(DataError, match="latents of its dataset"):
        oracle_encoder(small, small.graph)(small.images[:10], Mask(QUADRANT))


def test_cca_counts_dim_c_correlations_missing_ones_as_zero(deeper):
    # c of the fixed mask is z_2_1_1 (4 dims); a code of its first 2 coordinates has at most 2 correlations.
    mask = fixed_mask_d3()
    half = lambda images, m: np.asarray(deeper.latent("z_2_1_1"))[:, :2]  # noqa: E731
    s = evaluate_encoder(half, deeper, deeper.graph, mask, 0).summary
    assert s["cca_c"] == pytest.approx(0.5, abs=1e-6)


def test_unknown_control_is_a_config_error(small):
    with pytest.raises(ConfigError, match="unknown control 'noise'; choose from pixels, untrained, oracle, pca, random_projection, linear_mae"):
        control_encoder("noise", dataset=small, graph=small.graph)
    assert CONTROLS == ("pixels", "untrained", "oracle", "pca", "random_projection", "linear_mae")
    with pytest.raises(ConfigError, match="needs a width"):
        control_encoder("pca", dataset=small, graph=small.graph)


# ----------------------------------------------------------------------------- masks and held-out data


def test_resolve_mask_accepts_specs_and_rejects_other_image_shapes(tmp_path):
    g = grid_hierarchy(depth=2)
    assert resolve_mask({"grid": QUADRANT.astype(int).tolist()}, g) == Mask(QUADRANT)
    assert resolve_mask({"masked": ["x_0_0"]}, g).n_masked == 1
    spec = tmp_path / "spec.json"
    spec.write_text('{"ratio": 0.5, "patch_size": 2, "seed": 1}')
    assert resolve_mask(spec, g) == Mask.random(4, 4, 0.5, unit=2, seed=1)
    with pytest.raises(MaskError, match="4x4"):
        resolve_mask({"grid": [[0, 1], [1, 0]]}, g)
    with pytest.raises(MaskError, match="8x8"):
        resolve_mask(Mask.random(8, 8, 0.5, seed=0), g)
    other = tmp_path / "g3.json"
    write_graph(grid_hierarchy(depth=3), other)
    with pytest.raises(MaskError, match="8x8 images but the run's data are 4x4"):
        resolve_mask({"graph": str(other), "ratio": 0.5}, g)
    with pytest.raises(MaskError, match="empty"):
        resolve_mask({"grid": []}, g)


def test_heldout_samples_come_from_the_same_simulator_but_not_the_stored_ones(tmp_path):
    cfg = SimulateConfig(grid=GridSpec(depth=2), n=64, seed=4)
    simulate_to_dir(cfg, tmp_path / "sim", progress=False)
    stored = load_dataset(tmp_path / "sim")
    held = heldout_dataset(str(tmp_path / "sim"), 100, seed=0)
    assert held.images.shape == (100, *stored.images.shape[1:])
    # Fresh noise: no held-out sample repeats a stored one.
    assert not np.isin(held.noises[:, 0], stored.noises[:, 0]).any()
    # Same simulator: re-running its maps on the held-out noise reproduces the held-out images.
    sim = Simulator.from_config(cfg)
    np.testing.assert_allclose(sim.transform(held.noises).images, held.images)
    again = heldout_dataset(str(tmp_path / "sim"), 100, seed=0)
    assert np.array_equal(again.images, held.images)
    assert not np.array_equal(heldout_dataset(str(tmp_path / "sim"), 100, seed=1).images, held.images)


def test_heldout_rejects_real_images_and_bad_sizes(tmp_path):
    with pytest.raises(DataError, match="known latents"):
        heldout_dataset("imagefolder:/nowhere", 100, 0)
    with pytest.raises(DataError, match="not found"):
        heldout_dataset(str(tmp_path / "missing"), 100, 0)
    with pytest.raises(ConfigError, match="n must be"):
        heldout_dataset("online", 2, 0)


# ----------------------------------------------------------------------------- trained runs


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from hlvm.train import TrainConfig, train

    root = tmp_path_factory.mktemp("evalrun")
    simulate_to_dir(SimulateConfig(grid=GridSpec(depth=2), n=128), root / "sim", progress=False)
    cfg = TrainConfig(
        model="mlp", data=str(root / "sim"), steps=2, batch_size=16, warmup=1, mask_ratio=0.25, device="cpu", out=str(root / "run")
    )
    return train(cfg, progress=False)


def test_evaluate_run_encodes_held_out_samples_with_the_trained_model(tiny_run):
    res = evaluate_run(tiny_run, {"grid": QUADRANT.astype(int).tolist()}, n=300, seed=0)
    assert res.located.c == ("z_0_0_0",)
    assert res.meta["objective"] == "mae" and res.meta["train_mask_ratio"] == 0.25
    assert res.summary["n_samples"] == 300
    assert abs(res.summary["r2_private_masked_noise"]) < 0.08  # the floor holds for any encoder
    # The same call gives the same numbers.
    assert evaluate_run(tiny_run, {"grid": QUADRANT.astype(int).tolist()}, n=300, seed=0).to_json() == res.to_json()


@pytest.mark.parametrize("control", CONTROLS)
def test_evaluate_run_scores_a_control_on_the_same_samples_and_mask(tiny_run, control):
    spec = {"grid": QUADRANT.astype(int).tolist()}
    res = evaluate_run(tiny_run, spec, n=300, seed=0, control=control)
    assert res.meta["encoder"] == control and res.summary["n_samples"] == 300
    if control == "pixels":
        assert res.summary["code_dim"] == 4 * 12 and res.summary["r2_private_visible_noise"] > 0.5
    if control == "oracle":
        assert res.summary["code_dim"] == 2 and res.summary["agreement"] > 0.8
    if control == "untrained":
        from hlvm.train import init_model, load_run

        model, cfg = load_run(tiny_run)
        assert res.summary["code_dim"] == model.cfg.code_dim
        # the untrained weights are the run's starting point, not its result
        start = init_model(model.cfg, cfg.seed).state_dict()
        assert any(not np.array_equal(start[k].numpy(), v.numpy()) for k, v in model.state_dict().items())
    with pytest.raises(ConfigError, match="unknown control"):
        evaluate_run(tiny_run, spec, n=300, control="random")


def test_a_run_trained_with_a_relative_data_path_evaluates_from_another_folder(tmp_path, monkeypatch):
    from hlvm.train import TrainConfig, train

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    simulate_to_dir(SimulateConfig(grid=GridSpec(depth=2), n=64), "sim", progress=False)
    run = train(TrainConfig(model="mlp", data="sim", steps=1, batch_size=16, warmup=1, device="cpu", out="run"),
                progress=False)
    saved = json.loads((tmp_path / "a" / "run" / "config.json").read_text())
    assert saved["train"]["data"] == str(tmp_path / "a" / "sim")  # stored resolved
    monkeypatch.chdir(tmp_path / "b")
    res = evaluate_run(tmp_path / "a" / run, {"grid": QUADRANT.astype(int).tolist()}, n=40, seed=0)
    assert res.summary["n_samples"] == 40


def test_evaluate_run_without_a_checkpoint_is_a_data_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no checkpoint"):
        evaluate_run(tmp_path / "empty", {"ratio": 0.5})


def test_floor_counts_the_masked_pixels_own_noise(small):
    """One masked pixel: no latent is private to the masked side, but the pixel's own noise is (docs/theory.md's s_m)."""
    grid = np.zeros(small.images.shape[2:], dtype=bool)
    grid[0, 0] = True
    res = evaluate_encoder(oracle(small, small.graph), small, small.graph, Mask(grid), 0)
    s = res.summary
    assert res.located.s_m == ("x_0_0",)
    assert np.isnan(s["r2_private_masked_latent_noise"])
    assert abs(s["r2_private_masked_noise"]) < 0.1  # defined, and at the floor
    assert abs(s["r2_private_visible_noise"]) < 0.05


# ----------------------------------------------------------------------------- Theorem 2 across a cell


def test_a_dim_c_bottleneck_trained_on_aligned_masks_of_one_cell_holds_ca_and_drops_the_leak(tmp_path):
    """Theorem 2 with masks that vary per sample: depth 2, aligned ratio 0.25 (one whole 2x2 block), c = the root."""
    from hlvm.masks import aligned_unit_masks
    from hlvm.models import get_config
    from hlvm.train import TrainConfig, load_run, train

    spec = tmp_path / "sim.json"
    spec.write_text(SimulateConfig(grid=GridSpec(depth=2)).to_json())
    arch = get_config("mlp", img_size=4, in_chans=4, mlp_hidden=(32, 32), mlp_decoder_hidden=(32, 32), bottleneck=2)
    cfg = TrainConfig(model=arch, data=f"online:{spec}", mask_kind="aligned", mask_ratio=0.25, steps=300, batch_size=128,
                      blr=3e-3, warmup=50, ckpt_every=0, log_every=100, device="cpu", out=str(tmp_path / "run"))
    model, _ = load_run(train(cfg, progress=False))
    data = heldout_dataset(f"online:{spec}", 800, 0)
    for s in range(2):  # two masks of the cell
        mask = Mask(aligned_unit_masks(1, 4, 4, 0.25, 1, 2, np.random.default_rng(s))[0])
        summary = evaluate_encoder(model_encoder(model), data, data.graph, mask, s).summary
        assert summary["dim_c"] == summary["code_dim"] == 2
        assert summary["r2_ca_noise"] >= 0.9 and summary["r2_private_visible_noise"] <= 0.1, summary
        pix = evaluate_encoder(pixels_encoder(), data, data.graph, mask, s).summary
        assert pix["r2_private_visible_noise"] >= 0.9  # the pixels cannot drop the leak: training did this
