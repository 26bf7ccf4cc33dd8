"""Claims about hlvm.mixing: valid specs, well-conditioned weights, exact inverses, recoverable noise."""

from __future__ import annotations

import doctest

import networkx as nx
import numpy as np
import pytest
from sklearn.kernel_ridge import KernelRidge
from sklearn.metrics import r2_score

from hlvm import graphs, mixing
from hlvm.errors import ConfigError
from hlvm.graphs import GridSpec, grid_hierarchy
from hlvm.mixing import MixingSpec, build_mixing, random_weight, unit_noise
from hlvm.simulate import SimulateConfig, Simulator

# ----------------------------------------------------------------------------- spec


@pytest.mark.parametrize(
    "options,match",
    [
        ({"kind": "relu"}, "mixing kind must be one of"),
        ({"layers": 0}, "layers must be an integer >= 1"),
        ({"layers": 1.5}, "layers must be an integer >= 1"),
        ({"slope": 0.0}, r"slope must be in \(0, 1\]"),
        ({"slope": 1.5}, r"slope must be in \(0, 1\]"),
        ({"sv_min": 0.0}, "sv_min must be > 0"),
        ({"sv_min": 1.0, "sv_max": 0.5}, "sv_max must be >= sv_min"),
        ({"max_cond": 0.9}, "max_cond must be >= 1"),
        ({"bias_scale": -1.0}, "bias_scale must be >= 0"),
        ({"pilot_n": 1}, "pilot_n must be an integer >= 2"),
        ({"slope": float("nan")}, "slope"),
    ],
)
def test_spec_rejects_bad_options(options, match):
    with pytest.raises(ConfigError, match=match):
        MixingSpec(**options)


def test_spec_round_trips_through_a_dict():
    spec = MixingSpec(kind="linear", layers=3, slope=0.3)
    assert MixingSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ConfigError, match="unknown mixing spec key"):
        MixingSpec.from_dict({"depth": 3})


def test_linear_kind_uses_no_activation():
    assert MixingSpec(kind="linear", slope=0.2).activation_slope == 1.0
    assert MixingSpec(slope=0.2).activation_slope == 0.2


# ----------------------------------------------------------------------------- weights


@pytest.mark.parametrize("d", [1, 2, 6, 12])
def test_weights_have_singular_values_in_range_and_bounded_condition(d):
    spec = MixingSpec(sv_min=0.7, sv_max=1.4, max_cond=1.5)
    rng = np.random.default_rng(d)
    for _ in range(20):
        s = np.linalg.svd(random_weight(d, spec, rng), compute_uv=False)
        assert s.min() >= 0.7 - 1e-12 and s.max() <= 1.4 + 1e-12
        assert s.max() / s.min() <= 1.5 + 1e-12


def test_weights_are_redrawn_until_the_condition_bound_holds():
    # With a bound below the singular-value spread, first draws often fail it: only redraws pass.
    spec = MixingSpec(sv_min=0.5, sv_max=2.0, max_cond=1.3)
    rng = np.random.default_rng(0)
    conds = [np.linalg.cond(random_weight(3, spec, rng)) for _ in range(30)]
    assert max(conds) <= 1.3 + 1e-12
    free = MixingSpec(sv_min=0.5, sv_max=2.0, max_cond=4.0)
    assert max(np.linalg.cond(random_weight(3, free, rng)) for _ in range(30)) > 1.3


def test_an_impossible_condition_bound_is_an_error():
    # cond of U diag(s) V^T is max(s)/min(s) > 1 for distinct s: never at most 1 for d >= 2 ...
    spec = MixingSpec(sv_min=1.0, sv_max=2.0, max_cond=1.0)
    with pytest.raises(ConfigError, match="condition number"):
        random_weight(4, spec, np.random.default_rng(0), max_tries=20)
    # ... while a 1 x 1 weight always has condition number 1.
    assert random_weight(1, spec, np.random.default_rng(0)).shape == (1, 1)


# ----------------------------------------------------------------------------- noise


# Gaussian noise has two sources: the compiled ziggurat for SFC64 (the sampler's generators) and
# numpy's standard_normal for any other generator; each test runs on both.
GENERATORS = {"pcg64": np.random.default_rng, "sfc64": lambda seed: np.random.Generator(np.random.SFC64(seed))}


@pytest.mark.parametrize("make_rng", GENERATORS.values(), ids=GENERATORS.keys())
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kind", ["gaussian", "uniform", "laplace"])
def test_noise_has_zero_mean_and_unit_variance(kind, dtype, make_rng):
    x = unit_noise(kind, make_rng(0), (200_000,), dtype)
    assert x.dtype == dtype
    assert abs(x.mean()) < 0.01 and abs(x.var() - 1.0) < 0.02


@pytest.mark.parametrize("make_rng", GENERATORS.values(), ids=GENERATORS.keys())
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kind", ["gaussian", "uniform", "laplace"])
def test_noise_drawn_into_out_is_the_same_draw(kind, dtype, make_rng):
    fresh = unit_noise(kind, make_rng(5), (300, 7), dtype)
    out = np.full((300, 7), np.nan, dtype)
    assert unit_noise(kind, make_rng(5), (300, 7), dtype, out=out) is out
    assert np.array_equal(out, fresh)
    with pytest.raises(ValueError, match="float32 or float64"):
        unit_noise(kind, make_rng(5), (3,), np.float16)


@pytest.mark.parametrize("make_rng", GENERATORS.values(), ids=GENERATORS.keys())
def test_gaussian_draws_continue_the_generator(make_rng):
    """Two draws in a row are one longer draw: the generator's state moves on by what was used."""
    rng = make_rng(9)
    parts = [unit_noise("gaussian", rng, (n,)) for n in (1, 1000, 37)]
    assert np.array_equal(np.concatenate(parts), unit_noise("gaussian", make_rng(9), (1038,)))
    assert not np.array_equal(unit_noise("gaussian", rng, (5,)), parts[1][:5])


def test_sfc64_float32_gaussians_are_the_float64_ones_rounded():
    wide = unit_noise("gaussian", GENERATORS["sfc64"](3), (10_000,), np.float64)
    narrow = unit_noise("gaussian", GENERATORS["sfc64"](3), (10_000,), np.float32)
    assert np.array_equal(narrow, wide.astype(np.float32))


def test_noise_kinds_differ_in_shape_and_unknown_kinds_fail():
    rng = np.random.default_rng(0)
    u = unit_noise("uniform", rng, (100_000,))
    assert np.abs(u).max() <= np.sqrt(3.0)
    lap = unit_noise("laplace", rng, (100_000,))
    kurt = lambda z: np.mean(z**4) / np.mean(z**2) ** 2  # noqa: E731
    assert kurt(u) < 2.0 < 4.0 < kurt(lap)  # 1.8 (uniform) vs 6 (Laplace)
    with pytest.raises(ConfigError, match="noise must be one of"):
        unit_noise("cauchy", rng, (3,))


# ----------------------------------------------------------------------------- maps and inverses


def chain_fork_collider() -> nx.DiGraph:
    """A small hand-made DAG: a chain into a collider and a fork, with two pixels."""
    g = nx.DiGraph()
    g.add_node("a", kind="latent", level=0, dim=2, noise_dim=2)
    g.add_node("b", kind="latent", level=1, dim=3, noise_dim=1)
    g.add_node("c", kind="latent", level=1, dim=3, noise_dim=1)
    g.add_node("d", kind="latent", level=2, dim=7, noise_dim=1)  # collider of b and c
    g.add_node("x_0_0", kind="observed", level=3, dim=8, noise_dim=1, pos=(0, 0))
    g.add_node("x_0_1", kind="observed", level=3, dim=8, noise_dim=5, pos=(0, 1))
    g.add_edges_from([("a", "b"), ("a", "c"), ("b", "d"), ("c", "d"), ("d", "x_0_0"), ("c", "x_0_1")])
    graphs.validate_graph(g)
    return nx.freeze(g)


@pytest.mark.parametrize("spec", [MixingSpec(), MixingSpec(kind="linear"), MixingSpec(layers=4, slope=0.2)], ids=str)
def test_every_node_map_inverts_exactly(spec):
    g = chain_fork_collider()
    m = build_mixing(g, spec, np.random.default_rng(1))
    rng = np.random.default_rng(2)
    for v in g:
        d = g.nodes[v]["dim"]
        u = rng.standard_normal((500, d)) * 3.0  # both signs of every pre-activation
        assert np.abs(m.maps[v].inverse(m.maps[v].forward(u)) - u).max() < 1e-10


def test_forward_and_inverse_split_parents_and_noise_by_id():
    g = chain_fork_collider()
    m = build_mixing(g, MixingSpec(), np.random.default_rng(0))
    rng = np.random.default_rng(1)
    b, c, eps = rng.standard_normal((10, 3)), rng.standard_normal((10, 3)), rng.standard_normal((10, 1))
    value = m.forward("d", {"c": c, "b": b}, eps)
    assert np.array_equal(value, m.forward("d", [b, c], eps))  # parents in graphs.parents order
    back, noise = m.inverse("d", value)
    assert list(back) == ["b", "c"]
    np.testing.assert_allclose(back["b"], b, atol=1e-12)
    np.testing.assert_allclose(back["c"], c, atol=1e-12)
    np.testing.assert_allclose(noise, eps, atol=1e-12)
    with pytest.raises(ValueError, match="expected 2 parent values"):
        m.forward("d", [b], eps)


def test_linear_maps_are_affine_and_mlp_maps_are_not():
    g = grid_hierarchy(depth=1)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((50, 3)), rng.standard_normal((50, 3))
    for kind, affine in (("linear", True), ("mlp", False)):
        f = build_mixing(g, MixingSpec(kind=kind), np.random.default_rng(3)).maps["x_0_0"].forward
        gap = np.abs(f(0.3 * x + 0.7 * y) - (0.3 * f(x) + 0.7 * f(y))).max()
        assert (gap < 1e-12) == affine, (kind, gap)


def test_outputs_are_standardised_down_the_hierarchy():
    sim = Simulator.from_config(SimulateConfig())
    data = sim.sample(4000, np.random.default_rng(5))
    for v in graphs.topological_order(sim.graph):
        x = data.value(v)
        assert np.abs(x.mean(axis=0)).max() < 0.1, v
        assert np.abs(x.std(axis=0) - 1.0).max() < 0.1, v


def test_batched_groups_match_the_per_node_maps():
    g = grid_hierarchy(depth=2, extra_parent_prob=0.5, seed=1)
    m = build_mixing(g, MixingSpec(), np.random.default_rng(0))
    assert sum(len(grp.nodes) for grp in m.groups) == g.number_of_nodes()
    rng = np.random.default_rng(1)
    for grp in m.groups:
        x = rng.standard_normal((len(grp.nodes), grp.dim, 7))  # (K, d, N)
        out = grp.apply(x)
        for k, v in enumerate(grp.nodes):
            np.testing.assert_allclose(out[k].T, m.maps[v].forward(x[k].T), rtol=1e-12, atol=1e-12)


def test_same_rng_same_mixing_and_different_seeds_differ():
    g = grid_hierarchy(depth=2)
    a = build_mixing(g, MixingSpec(), np.random.default_rng(7))
    b = build_mixing(g, MixingSpec(), np.random.default_rng(7))
    c = build_mixing(g, MixingSpec(), np.random.default_rng(8))
    for v in g:
        assert np.array_equal(a.maps[v].weights, b.maps[v].weights)
        assert np.array_equal(a.maps[v].mu, b.maps[v].mu)
    assert not np.array_equal(a.maps["z_0_0_0"].weights, c.maps["z_0_0_0"].weights)


def test_build_mixing_needs_a_generator():
    with pytest.raises(ValueError, match="seeded numpy Generator"):
        build_mixing(grid_hierarchy(depth=1), MixingSpec())


def test_doctests():
    assert doctest.testmod(mixing).failed == 0


# ----------------------------------------------------------------------------- conditioning: noise stays recoverable


def probe_r2(spec: MixingSpec, pixel: str, n: int, seed: int = 0, select: bool = False) -> dict[str, float]:
    """Smallest held-out R^2, per ancestor of ``pixel`` (and the pixel), of a kernel-ridge
    probe from that one pixel's value to the node's noise, at depth 4.

    The pixel is bijective with the noises of itself and its ancestors, so an
    ideal probe scores 1; a badly conditioned hierarchy squeezes ancestors'
    noise into directions no finite-sample probe can read back.
    """
    sim = Simulator.from_config(SimulateConfig(grid=GridSpec(depth=4), mixing=spec, seed=seed))
    data = sim.sample(n, np.random.default_rng(seed + 1))
    x = data.pixel(pixel)
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    fit, val = int(0.6 * n), int(0.8 * n)
    grid = [(g, a) for g in (0.03, 0.1, 0.3) for a in (1e-3, 1e-2)] if select else [(0.1, 1e-2)]
    out = {}
    for v in [*nx.ancestors(sim.graph, pixel), pixel]:
        y = data.noise(v)
        best = max(
            grid,
            key=lambda ga: r2_score(
                y[fit:val], KernelRidge(kernel="rbf", gamma=ga[0], alpha=ga[1]).fit(x[:fit], y[:fit]).predict(x[fit:val])
            ),
        )
        model = KernelRidge(kernel="rbf", gamma=best[0], alpha=best[1]).fit(x[:val], y[:val])
        pred = model.predict(x[val:]).reshape(len(y) - val, -1)
        out[v] = min(r2_score(y[val:, j], pred[:, j]) for j in range(y.shape[1]))
    return out


def test_default_mixing_keeps_every_ancestor_noise_recoverable_from_one_pixel():
    r2 = probe_r2(MixingSpec(), "x_0_0", n=1500)
    assert len(r2) == 5  # root, three latents, the pixel
    assert min(r2.values()) >= 0.9, r2


@pytest.mark.slow
@pytest.mark.parametrize("pixel", ["x_0_0", "x_7_8", "x_15_15", "x_5_10"])
def test_default_mixing_recovery_holds_across_pixels_with_more_samples(pixel):
    r2 = probe_r2(MixingSpec(), pixel, n=4000, seed=3, select=True)
    assert min(r2.values()) >= 0.9, r2


@pytest.mark.slow
def test_the_conditioning_trap_loses_high_level_noise():
    # The warning, as a control that the probe can fail: slope 0.2,
    # three layers, singular values over [0.5, 2].
    trap = MixingSpec(slope=0.2, layers=3, sv_min=0.5, sv_max=2.0, max_cond=4.0)
    r2 = probe_r2(trap, "x_0_0", n=4000, seed=3, select=True)
    assert min(r2[v] for v in ("z_0_0_0", "z_1_0_0", "z_2_0_0")) < 0.9, r2
