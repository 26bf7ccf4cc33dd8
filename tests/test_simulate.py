"""Claims about hlvm.simulate: the sampler, its exact inverse, and the on-disk format."""

from __future__ import annotations

from dataclasses import replace

import doctest
import hashlib
import json
from pathlib import Path

import networkx as nx
import numpy as np
import pytest

from hlvm import graphs, simulate
from hlvm.errors import ConfigError, DataError
from hlvm.graphs import GridSpec, grid_hierarchy
from hlvm.mixing import MixingSpec, build_mixing
from hlvm.simulate import (
    SAMPLE_BLOCK,
    SimulateConfig,
    Simulator,
    load_dataset,
    simulate_to_dir,
)

ARRAYS = ("images.npy", "latents.npy", "noises.npy")


def reference_sample(sim: Simulator, noises: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The brute-force oracle: every node one by one in topological order, through its own map."""
    values: dict[str, np.ndarray] = {}
    for v in graphs.topological_order(sim.graph):
        eps = noises[:, sim.index.noises[v]]
        values[v] = sim.mixing.forward(v, [values[p] for p in graphs.parents(sim.graph, v)], eps)
    c, h, w = sim.image_shape
    images = np.empty((len(noises), c, h, w))
    for v in graphs.observed_nodes(sim.graph):
        r, col = sim.graph.nodes[v]["pos"]
        images[:, :, r, col] = values[v]
    return images, values


def user_graph() -> nx.DiGraph:
    """A non-grid DAG: a collider and a fork, pixels with different noise dims."""
    g = nx.DiGraph()
    g.add_node("a", kind="latent", level=0, dim=2, noise_dim=2)
    g.add_node("b", kind="latent", level=1, dim=3, noise_dim=1)
    g.add_node("c", kind="latent", level=1, dim=3, noise_dim=1)
    g.add_node("d", kind="latent", level=2, dim=7, noise_dim=1)
    g.add_node("x_0_0", kind="observed", level=3, dim=8, noise_dim=1, pos=(0, 0))
    g.add_node("x_0_1", kind="observed", level=3, dim=8, noise_dim=5, pos=(0, 1))
    g.add_node("x_1_0", kind="observed", level=3, dim=8, noise_dim=1, pos=(1, 0))
    g.add_node("x_1_1", kind="observed", level=3, dim=8, noise_dim=5, pos=(1, 1))
    g.add_edges_from([("a", "b"), ("a", "c"), ("b", "d"), ("c", "d"), ("d", "x_0_0"), ("c", "x_0_1"),
                      ("d", "x_1_0"), ("b", "x_1_1")])
    graphs.validate_graph(g)
    return nx.freeze(g)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ----------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "options,match",
    [
        ({"n": 0}, "n must be an integer >= 1"),
        ({"n": 2.5}, "n must be an integer >= 1"),
        ({"seed": -1}, "seed must be an integer >= 0"),
        ({"sample_seed": -2}, "sample_seed must be an integer >= 0 or null"),
        ({"sample_seed": "1"}, "sample_seed must be an integer >= 0 or null"),
        ({"noise": "cauchy"}, "noise must be one of"),
        ({"dtype": "int8"}, "dtype must be one of"),
        ({"grid": {"depth": 2}}, "grid must be a GridSpec"),
        ({"mixing": None}, "mixing must be a MixingSpec"),
        ({"graph": 3}, "graph must be a file path"),
    ],
)
def test_config_rejects_bad_values(options, match):
    with pytest.raises(ConfigError, match=match):
        SimulateConfig(**options)


def test_config_round_trips_through_json():
    cfg = SimulateConfig(
        grid=GridSpec(depth=3, branching=3, extra_parent_prob=0.2, seed=4),
        mixing=MixingSpec(kind="linear", layers=3),
        noise="laplace", n=123, seed=9, sample_seed=11, dtype="float64", graph="g.json",
    )
    assert SimulateConfig.from_json(cfg.to_json()) == cfg
    extra = {**cfg.to_dict(), "provenance": {"git_commit": "x"}, "sample_block": 1024}
    assert SimulateConfig.from_dict(extra) == cfg
    assert SimulateConfig.from_dict({}) == SimulateConfig()


def test_config_json_errors_are_config_errors():
    with pytest.raises(ConfigError, match="not valid JSON"):
        SimulateConfig.from_json("{")
    with pytest.raises(ConfigError, match="depth must be >= 1"):
        SimulateConfig.from_dict({"grid": {"depth": 0}})
    with pytest.raises(ConfigError, match="unknown grid key 'width'; known: branching, depth"):
        SimulateConfig.from_dict({"grid": {"width": 3}})


def test_a_misspelt_key_is_refused_with_the_nearest_known_one():
    # one rule for every config (hlvm.errors.check_keys); a saved config.json's bookkeeping is still accepted
    with pytest.raises(ConfigError, match="unknown simulate config key 'nosie'; did you mean 'noise'"):
        SimulateConfig.from_dict({"grid": {"depth": 2}, "nosie": "laplace"})
    with pytest.raises(ConfigError, match="unknown grid key 'dpeth'; did you mean 'depth'"):
        SimulateConfig.from_dict({"grid": {"dpeth": 2}})
    with pytest.raises(ConfigError, match="unknown mixing spec key 'slop'; did you mean 'slope'"):
        SimulateConfig.from_dict({"mixing": {"slop": 0.2}})
    saved = {**SimulateConfig(n=5).to_dict(), "sample_block": 256, "provenance": {}, "_comment": "x"}
    assert SimulateConfig.from_dict(saved) == SimulateConfig(n=5)


def test_default_config_builds_the_default_grid():
    assert graphs.graph_to_json(SimulateConfig().build_graph()) == graphs.graph_to_json(grid_hierarchy(GridSpec()))


# ----------------------------------------------------------------------------- sampling


@pytest.fixture(scope="module")
def default_sim() -> Simulator:
    return Simulator.from_config(SimulateConfig())


@pytest.fixture(scope="module")
def default_data(default_sim):
    return default_sim.sample(700, np.random.default_rng(0))


def test_dataset_shapes_and_columns(default_sim, default_data):
    g, data = default_sim.graph, default_data
    c, h, w = graphs.image_shape(g)
    assert data.images.shape == (700, c, h, w) and data.images.dtype == np.float64
    dz = sum(g.nodes[v]["dim"] for v in graphs.latent_nodes(g))
    de = sum(g.nodes[v]["noise_dim"] for v in g)
    assert data.latents.shape == (700, dz) and data.noises.shape == (700, de)
    assert len(data) == 700
    # Columns tile the arrays exactly, in latent-then-pixel order.
    lat = list(data.index.latents.values())
    assert lat[0].start == 0 and all(a.stop == b.start for a, b in zip(lat, lat[1:])) and lat[-1].stop == dz
    noi = list(data.index.noises.values())
    assert noi[0].start == 0 and all(a.stop == b.start for a, b in zip(noi, noi[1:])) and noi[-1].stop == de
    assert list(data.index.noises) == graphs.latent_nodes(g) + graphs.observed_nodes(g)
    for v in g:
        assert data.noise(v).shape == (700, g.nodes[v]["noise_dim"])
        assert data.value(v).shape == (700, g.nodes[v]["dim"])
    with pytest.raises(KeyError):
        data.latent("x_0_0")
    with pytest.raises(KeyError):
        data.noise("nope")


def assert_inverts(sim: Simulator, data) -> float:
    """Invert every node back to its parents and noise; return the max error."""
    worst = 0.0
    for v in graphs.topological_order(sim.graph):
        back, eps = sim.mixing.inverse(v, data.value(v))
        worst = max(worst, float(np.abs(eps - data.noise(v)).max()))
        for p, x in back.items():
            worst = max(worst, float(np.abs(x - data.latent(p)).max()))
    assert worst < 1e-6
    return worst


def test_every_node_inverts_to_its_parents_and_noise_at_depth_4(default_sim, default_data):
    assert_inverts(default_sim, default_data)


@pytest.mark.parametrize(
    "cfg",
    [
        SimulateConfig(grid=GridSpec(depth=3, extra_parent_prob=0.7, seed=2), noise="laplace"),
        SimulateConfig(grid=GridSpec(depth=2, branching=3, root_dim=3, noise_dim=2), mixing=MixingSpec(kind="linear")),
        SimulateConfig(grid=GridSpec(depth=2), mixing=MixingSpec(layers=3, slope=0.3), noise="uniform"),
    ],
    ids=["extra-parents-laplace", "branching3-linear", "three-layers-uniform"],
)
def test_every_node_inverts_on_other_graphs_and_mixings(cfg):
    sim = Simulator.from_config(cfg)
    assert_inverts(sim, sim.sample(300, np.random.default_rng(1)))


def test_user_graph_samples_and_inverts():
    g = user_graph()
    sim = Simulator(g, build_mixing(g, MixingSpec(), np.random.default_rng(0)))
    data = sim.sample(257, np.random.default_rng(1))
    assert data.images.shape == (257, 8, 2, 2)
    assert_inverts(sim, data)


@pytest.mark.parametrize(
    "g,spec",
    [
        (grid_hierarchy(depth=3, extra_parent_prob=0.6, seed=1), MixingSpec()),
        (user_graph(), MixingSpec()),
        (grid_hierarchy(depth=4), MixingSpec()),
        (grid_hierarchy(depth=2, branching=3), MixingSpec(layers=3)),
        (grid_hierarchy(depth=2), MixingSpec(layers=1, kind="linear")),
    ],
    ids=["extra-parents", "user-dag", "default", "branching3-three-layers", "one-layer"],
)
def test_vectorised_sampler_matches_the_per_node_oracle(g, spec):
    sim = Simulator(g, build_mixing(g, spec, np.random.default_rng(0)))
    noises = sim.draw_noise(300, np.random.default_rng(4))  # 300: full pieces and a partial one
    data = sim.transform(noises)
    images, values = reference_sample(sim, noises)
    np.testing.assert_allclose(data.images, images, rtol=0, atol=1e-10)
    for v in graphs.latent_nodes(g):
        np.testing.assert_allclose(data.latent(v), values[v], rtol=0, atol=1e-10)
    # The float32 path computes the same maps to float32 precision.
    single = sim.transform(noises.astype(np.float32))
    assert single.images.dtype == np.float32
    np.testing.assert_allclose(single.images, images, rtol=0, atol=1e-4)


def test_threads_do_not_change_the_bytes(default_sim):
    noises = default_sim.draw_noise(1100, np.random.default_rng(3))
    default_sim.threads = 1
    one = default_sim.forward(noises)
    default_sim.threads = 2
    two = default_sim.forward(noises)
    assert all(np.array_equal(a, b) for a, b in zip(one, two))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_piece_size_does_not_change_the_bytes(default_sim, monkeypatch, dtype):
    """Each sample is computed on its own: any piece size (including ones the SIMD loops split
    into vector and scalar parts) gives the same bytes, and a sample alone equals it in a crowd."""
    noises = default_sim.draw_noise(300, np.random.default_rng(8), dtype)
    want = default_sim.forward(noises)
    for piece in (1, 7, 64, 300):
        monkeypatch.setattr(simulate.sampler, "COMPUTE_BLOCK", piece)  # where the sampler reads it
        got = default_sim.forward(noises)
        assert all(np.array_equal(a, b) for a, b in zip(got, want)), piece
    alone = default_sim.forward(noises[17:18])
    assert np.array_equal(alone[0][0], want[0][17]) and np.array_equal(alone[1][0], want[1][17])


def test_sampled_bytes_do_not_depend_on_threads(default_sim):
    default_sim.threads = 1
    one = default_sim.sample(2100, np.random.default_rng(9))
    default_sim.threads = 2
    two = default_sim.sample(2100, np.random.default_rng(9))
    for name in ("images", "latents", "noises"):
        assert np.array_equal(getattr(one, name), getattr(two, name)), name
    # And the sample is its own noise replayed.
    assert np.array_equal(default_sim.transform(two.noises).images, two.images)


def test_restoring_the_generator_state_replays_the_samples(default_sim):
    rng = np.random.default_rng(21)
    default_sim.sample(30, rng)
    state = rng.bit_generator.state
    first = default_sim.sample(1500, rng)
    rng.bit_generator.state = state
    assert np.array_equal(default_sim.sample(1500, rng).images, first.images)
    assert not np.array_equal(default_sim.sample(1500, rng).images, first.images)


def test_sampling_is_deterministic_in_the_generator(default_sim):
    a = default_sim.sample(50, np.random.default_rng(11))
    b = default_sim.sample(50, np.random.default_rng(11))
    c = default_sim.sample(50, np.random.default_rng(12))
    assert np.array_equal(a.images, b.images) and np.array_equal(a.noises, b.noises)
    assert not np.array_equal(a.images, c.images)


@pytest.mark.parametrize("noise,check", [
    ("uniform", lambda e: np.abs(e).max() <= np.sqrt(3.0)),
    ("laplace", lambda e: np.mean(e**4) / np.mean(e**2) ** 2 > 4.0),
    ("gaussian", lambda e: 2.5 < np.mean(e**4) / np.mean(e**2) ** 2 < 3.5),
])
def test_noise_law_reaches_every_node(noise, check):
    sim = Simulator.from_config(SimulateConfig(grid=GridSpec(depth=2), noise=noise))
    data = sim.sample(20_000, np.random.default_rng(0))
    assert check(data.noises)


def test_sample_rejects_bad_n(default_sim):
    with pytest.raises(ConfigError, match="n must be"):
        default_sim.sample(0, np.random.default_rng(0))
    with pytest.raises(ConfigError, match="noise must be one of"):
        Simulator(default_sim.graph, default_sim.mixing, noise="cauchy")


def test_seeded_stream_does_not_depend_on_where_it_is_cut(default_sim):
    whole = default_sim.seeded_noise(5, 0, 3 * SAMPLE_BLOCK)
    tail = default_sim.seeded_noise(5, SAMPLE_BLOCK, 3 * SAMPLE_BLOCK)
    assert np.array_equal(whole[SAMPLE_BLOCK:], tail)
    with pytest.raises(ValueError, match="multiple of"):
        default_sim.seeded_noise(5, 3, 10)


def test_sample_seeded_into_given_buffers_is_the_same_sample(default_sim):
    fresh = default_sim.sample_seeded(7, SAMPLE_BLOCK, SAMPLE_BLOCK + 300, dtype=np.float32)
    bufs = (np.full((300, *default_sim.image_shape), np.nan, np.float32),
            np.full(fresh.latents.shape, np.nan, np.float32), np.full(fresh.noises.shape, np.nan, np.float32))
    into = default_sim.sample_seeded(7, SAMPLE_BLOCK, SAMPLE_BLOCK + 300, dtype=np.float32, out=bufs)
    assert into.images is bufs[0] and into.noises is bufs[2]
    for name in ("images", "latents", "noises"):
        assert np.array_equal(getattr(into, name), getattr(fresh, name)), name
    with pytest.raises(ValueError, match="out arrays must be"):
        default_sim.sample_seeded(7, 0, 300, dtype=np.float64, out=bufs)


# ----------------------------------------------------------------------------- on disk


SMALL = SimulateConfig(grid=GridSpec(depth=3, extra_parent_prob=0.3), n=2500, seed=3)


@pytest.fixture(scope="module")
def small_dir(tmp_path_factory) -> Path:
    return simulate_to_dir(SMALL, tmp_path_factory.mktemp("sim") / "out", progress=False)


def test_folder_holds_the_contract_files(small_dir):
    assert sorted(p.name for p in small_dir.iterdir()) == sorted(simulate.DATA_FILES)
    index = json.loads((small_dir / "index.json").read_text())
    assert index["n"] == 2500 and index["dtype"] == "float32"
    g = graphs.read_graph(small_dir / "graph.json")
    assert index["image_shape"] == list(graphs.image_shape(g))
    config = json.loads((small_dir / "config.json").read_text())
    assert config["seed"] == 3 and config["n"] == 2500
    assert {"hlvm_version", "git_commit"} <= set(config["provenance"])
    assert not list(small_dir.parent.glob(".*"))  # no temporary folder left beside it


def test_disk_data_equal_the_in_memory_simulation(small_dir):
    data = load_dataset(small_dir)
    assert isinstance(data.images, np.memmap)
    mem = simulate.simulate(SMALL)
    for name in ("images", "latents", "noises"):
        stored = getattr(data, name)
        assert stored.dtype == np.float32
        assert np.array_equal(stored, getattr(mem, name).astype(np.float32)), name
    assert data.config == SMALL
    assert graphs.graph_to_json(data.graph) == graphs.graph_to_json(SMALL.build_graph())


def test_numpy_only_recipe_reads_a_node(small_dir):
    # The README's recipe: numpy and json, no hlvm.
    index = json.loads((small_dir / "index.json").read_text())
    latents = np.load(small_dir / "latents.npy", mmap_mode="r")
    noises = np.load(small_dir / "noises.npy", mmap_mode="r")
    images = np.load(small_dir / "images.npy", mmap_mode="r")
    a, b = index["latents"]["z_1_0_1"]
    e0, e1 = index["noises"]["x_3_4"]
    data = load_dataset(small_dir)
    assert np.array_equal(latents[:, a:b], data.latent("z_1_0_1"))
    assert np.array_equal(noises[:, e0:e1], data.noise("x_3_4"))
    assert images.shape == (index["n"], *index["image_shape"])


def test_loaded_config_rebuilds_the_simulator(small_dir):
    data = load_dataset(small_dir, mmap=False)
    assert not isinstance(data.images, np.memmap)
    sim = Simulator.from_config(data.config, graph=data.graph)
    again = sim.transform(np.asarray(data.noises[:100], dtype=np.float64))
    # A float64 replay of the stored float32 noise matches to float32 precision.
    np.testing.assert_allclose(again.images, data.images[:100], atol=1e-4)
    # Float32 data were computed in float32 from exactly the stored noise: replaying it gives the bytes.
    same = sim.transform(data.noises)
    assert same.images.dtype == np.float32
    assert np.array_equal(same.images, data.images) and np.array_equal(same.latents, data.latents)


def test_same_seed_same_bytes_and_other_seeds_differ(tmp_path, small_dir):
    again = simulate_to_dir(SMALL, tmp_path / "again", progress=False)
    for name in (*ARRAYS, "index.json", "graph.json"):
        assert sha(again / name) == sha(small_dir / name), name
    other = simulate_to_dir(SimulateConfig(**{**SMALL.__dict__, "seed": 4}), tmp_path / "other", progress=False)
    assert sha(other / "images.npy") != sha(small_dir / "images.npy")


def test_sample_seed_redraws_the_samples_of_the_same_process(tmp_path, small_dir):
    # sample_seed = seed is the default stream; another sample_seed is new noise through the same maps.
    same = simulate_to_dir(replace(SMALL, sample_seed=SMALL.seed), tmp_path / "same", progress=False)
    for name in ARRAYS:
        assert sha(same / name) == sha(small_dir / name), name
    redraw = load_dataset(simulate_to_dir(replace(SMALL, sample_seed=77), tmp_path / "redraw", progress=False))
    base = load_dataset(small_dir)
    assert not np.array_equal(redraw.noises, base.noises)
    # The same mixing: replaying the redrawn noise through the base config's simulator gives its images.
    replay = Simulator.from_config(SMALL).transform(np.asarray(redraw.noises))
    assert np.array_equal(replay.images, redraw.images)
    assert redraw.config.sample_seed == 77 and redraw.config.noise_seed == 77


def test_bytes_do_not_depend_on_chunking_or_threads(tmp_path, small_dir):
    # small_dir used 16-block chunks and the default threads; here 1024-sample chunks, one thread.
    out = simulate_to_dir(SMALL, tmp_path / "chunked", progress=False, chunk_blocks=1, threads=1)
    for name in ARRAYS:
        assert sha(out / name) == sha(small_dir / name), name


def test_float64_on_disk_is_the_in_memory_data(tmp_path):
    cfg = SimulateConfig(grid=GridSpec(depth=2), n=300, seed=1, dtype="float64")
    data = load_dataset(simulate_to_dir(cfg, tmp_path / "f64", progress=False))
    mem = simulate.simulate(cfg)
    assert np.array_equal(data.images, mem.images) and np.array_equal(data.noises, mem.noises)


def test_a_user_graph_file_drives_the_simulation(tmp_path):
    graphs.write_graph(user_graph(), tmp_path / "g.json")
    cfg = SimulateConfig(n=40, graph=str(tmp_path / "g.json"))
    data = load_dataset(simulate_to_dir(cfg, tmp_path / "out", progress=False))
    assert data.images.shape == (40, 8, 2, 2)
    assert set(data.index.latents) == {"a", "b", "c", "d"}
    # The loaded config points at the folder's own copy of the graph, so it rebuilds without the original.
    (tmp_path / "g.json").unlink()
    replay = Simulator.from_config(data.config).sample_seeded(cfg.seed, 0, 40, dtype=np.float32)
    assert np.array_equal(replay.images, data.images)


def test_existing_output_needs_overwrite(tmp_path):
    cfg = SimulateConfig(grid=GridSpec(depth=1), n=10)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty"):
        simulate_to_dir(cfg, out, progress=False)
    assert (out / "keep.txt").read_text() == "mine"
    simulate_to_dir(cfg, out, overwrite=True, progress=False)
    assert not (out / "keep.txt").exists() and (out / "images.npy").is_file()


@pytest.mark.parametrize("error", [KeyboardInterrupt, RuntimeError])
def test_a_failure_midway_leaves_no_folder(tmp_path, monkeypatch, error):
    calls = {"n": 0}
    real = Simulator.sample_seeded

    def failing(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise error("stop")
        return real(self, *a, **k)

    monkeypatch.setattr(Simulator, "sample_seeded", failing)
    cfg = SimulateConfig(grid=GridSpec(depth=2), n=3000)
    with pytest.raises(error):
        simulate_to_dir(cfg, tmp_path / "out", progress=False, chunk_blocks=1)
    assert calls["n"] == 2
    assert list(tmp_path.iterdir()) == []


def test_load_dataset_names_what_is_wrong(tmp_path, small_dir):
    with pytest.raises(DataError, match="not found"):
        load_dataset(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="missing graph.json"):
        load_dataset(tmp_path / "empty")
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in small_dir.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    np.save(broken / "latents.npy", np.zeros((3, 2), dtype=np.float32))
    with pytest.raises(DataError, match="does not match index.json"):
        load_dataset(broken)
    (broken / "index.json").write_text("{")
    with pytest.raises(DataError, match="malformed JSON"):
        load_dataset(broken)


def test_doctests():
    assert doctest.testmod(simulate).failed == 0


@pytest.mark.parametrize("grid", [GridSpec(depth=2), GridSpec(depth=3, branching=3, root_dim=3, noise_dim=2, obs_noise_dim=2),
                                  GridSpec(depth=3, extra_parent_prob=0.5, seed=1)])
def test_output_size_is_what_simulate_writes_and_a_lower_bound_before_the_graph_exists(tmp_path, grid):
    from hlvm.simulate import output_size

    cfg = SimulateConfig(grid=grid, n=7, dtype="float64")
    before, exact = output_size(cfg), output_size(cfg, cfg.build_graph())
    out = simulate_to_dir(cfg, tmp_path / "d", progress=False)
    data = sum(np.load(out / f"{k}.npy", mmap_mode="r").nbytes for k in ("images", "latents", "noises"))
    assert exact.nbytes == data and exact.exact
    assert exact.nodes == cfg.build_graph().number_of_nodes() == before.nodes
    assert before.exact == (grid.extra_parent_prob == 0)
    assert (before.nbytes == exact.nbytes) if before.exact else (before.nbytes <= exact.nbytes)


def test_a_run_larger_than_the_free_space_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**6, 10**6 - 1000, 1000))
    with pytest.raises(ConfigError, match=r"the output needs .* KiB but .* has 1000 B free"):
        simulate_to_dir(SimulateConfig(grid=GridSpec(depth=2), n=100), tmp_path / "d", progress=False)
    assert list(tmp_path.iterdir()) == []
