"""Claims about hlvm.evaluate: recovery under a fixed mask, set beside Algorithm 1.

An oracle encoder that outputs the true c agrees with the theory (agreement
near 1, the masked-side floor near 0); a random untrained encoder of the
visible pixels clearly agrees less (it keeps visible-side private noise).
"""

from __future__ import annotations

import numpy as np
import pytest

from hlvm.errors import ConfigError, DataError, MaskError
from hlvm.evaluate import (
    ROW_COLUMNS,
    SUMMARY_KEYS,
    agreement_score,
    evaluate_encoder,
    evaluate_run,
    heldout_dataset,
    resolve_mask,
)
from hlvm.graphs import GridSpec, grid_hierarchy, write_graph
from hlvm.locate import locate
from hlvm.masks import Mask
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
    """Outputs the true c: the concatenated values of Algorithm 1's c nodes (ignores the images)."""

    def encode(images, mask):
        return np.concatenate([dataset.latent(v) for v in locate(graph, mask).c], axis=1)

    return encode


def random_encoder(width: int, seed: int):
    """An untrained encoder: a random tanh layer on the masked-zeroed visible pixels."""

    def encode(images, mask):
        x = (images * mask.visible[None, None]).reshape(len(images), -1)  # (N, C*H*W), masked pixels zeroed
        w = np.random.default_rng(seed).normal(size=(x.shape[1], width)) / np.sqrt(x.shape[1])
        return np.tanh(2.0 * x @ w)

    return encode


# ----------------------------------------------------------------------------- the agreement score


def test_agreement_score_is_one_minus_balanced_mean_error():
    r2 = np.array([1.0, 0.8, 0.1, -0.3, 0.5])
    classes = np.array(["ca", "ca", "m", "m", "v"])
    # errors: ca (0 + 0.2)/2 = 0.1; m (0.1 + 0)/2 = 0.05 (negative clipped); v 0.5
    assert agreement_score(r2, classes, {"ca": 1, "m": 0, "v": 0}) == pytest.approx(1 - (0.1 + 0.05 + 0.5) / 3)
    assert agreement_score(r2, classes, {"ca": 1, "m": 0}) == pytest.approx(1 - 0.075)
    # An absent class is skipped; no class at all is NaN.
    assert agreement_score(r2, classes, {"ca": 1, "absent": 0}) == pytest.approx(0.9)
    assert np.isnan(agreement_score(r2, classes, {"absent": 0}))
    assert agreement_score(np.array([1.0, 0.0]), np.array(["ca", "m"]), {"ca": 1, "m": 0}) == 1.0


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
    assert s["agreement"] > 0.95
    assert s["r2_ca_noise"] > 0.95 and s["r2_c_value"] > 0.95
    assert abs(s["r2_private_masked_noise"]) < 0.05  # the floor
    assert abs(s["r2_private_visible_noise"]) < 0.05  # c is independent of s_mc
    assert s["cca_c"] > 0.99  # the code is c itself

    res_random = evaluate_encoder(random_encoder(64, 0), ds, ds.graph, mask, 0)
    r = res_random.summary
    assert r["agreement"] < s["agreement"] - 0.15
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


def test_evaluate_run_without_a_checkpoint_is_a_data_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no checkpoint"):
        evaluate_run(tmp_path / "empty", {"ratio": 0.5})


def test_floor_counts_the_masked_pixels_own_noise(small):
    """One masked pixel: no latent is private to the masked side, but the pixel's own noise is (THEORY.md's s_m)."""
    grid = np.zeros(small.images.shape[2:], dtype=bool)
    grid[0, 0] = True
    res = evaluate_encoder(oracle(small, small.graph), small, small.graph, Mask(grid), 0)
    s = res.summary
    assert res.located.s_m == ("x_0_0",)
    assert np.isnan(s["r2_private_masked_latent_noise"])
    assert abs(s["r2_private_masked_noise"]) < 0.1  # defined, and at the floor
    assert abs(s["r2_private_visible_noise"]) < 0.05
