"""Claims about hlvm.graphs: the grid hierarchy, Assumption 1's checks, and the JSON contract."""

from __future__ import annotations

import copy
import doctest
import json

import networkx as nx
import numpy as np
import pytest

from hlvm import graphs
from hlvm.errors import ConfigError, GraphError
from hlvm.graphs import GridSpec, grid_hierarchy


def dims_add_up(g: nx.DiGraph) -> bool:
    return all(
        a["dim"] == sum(g.nodes[p]["dim"] for p in g.predecessors(v)) + a["noise_dim"] for v, a in g.nodes(data=True)
    )


SPECS = [
    GridSpec(depth=1, branching=2),
    GridSpec(depth=2, branching=3, root_dim=3, noise_dim=2, obs_noise_dim=2),
    GridSpec(depth=3, branching=2, extra_parent_prob=0.5, seed=7),
    GridSpec(),
    GridSpec(depth=3, branching=2, extra_parent_prob=1.0),
]


# ----------------------------------------------------------------------------- the grid hierarchy


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_dims_add_up_on_generated_graphs(spec):
    g = grid_hierarchy(spec)
    assert dims_add_up(g)
    graphs.validate_graph(g)


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_dims_add_up_on_loaded_graphs(spec, tmp_path):
    graphs.write_graph(grid_hierarchy(spec), tmp_path / "g.json")
    g = graphs.read_graph(tmp_path / "g.json")
    assert dims_add_up(g)


@pytest.mark.parametrize("depth,b", [(1, 2), (2, 2), (2, 3), (4, 2)])
def test_grid_has_one_latent_per_block_and_a_full_pixel_grid(depth, b):
    g = grid_hierarchy(depth=depth, branching=b)
    by_level = graphs.levels(g)
    assert sorted(by_level) == list(range(depth + 1))
    for level in range(depth):
        assert len(by_level[level]) == b ** (2 * level)
        assert all(g.nodes[v]["kind"] == "latent" for v in by_level[level])
    assert len(by_level[depth]) == b ** (2 * depth)
    c, h, w = graphs.image_shape(g)
    assert (h, w) == (b**depth, b**depth)
    assert nx.is_tree(g.to_undirected()) and nx.is_arborescence(g)


def test_default_dims_follow_assumption_1_exactly():
    g = grid_hierarchy(GridSpec())
    # root 2; each level adds its parent's dim + 1 noise dim; pixels add 1 more.
    expected = {0: 2, 1: 3, 2: 4, 3: 5, 4: 6}
    for level, nodes in graphs.levels(g).items():
        assert {g.nodes[v]["dim"] for v in nodes} == {expected[level]}
    assert graphs.image_shape(g) == (6, 16, 16)


def test_children_split_their_parents_block():
    b = 3
    g = grid_hierarchy(depth=2, branching=b)
    for v in graphs.levels(g)[1]:
        r, c = g.nodes[v]["block"]
        kids = {g.nodes[k]["pos"] for k in g.successors(v)}
        assert kids == {(r * b + i, c * b + j) for i in range(b) for j in range(b)}


def test_grid_spec_and_keywords_give_the_same_graph():
    a = graphs.graph_to_json(grid_hierarchy(GridSpec(depth=2, extra_parent_prob=0.3, seed=2)))
    b = graphs.graph_to_json(grid_hierarchy(depth=2, extra_parent_prob=0.3, seed=2))
    assert a == b
    with pytest.raises(TypeError):
        grid_hierarchy(GridSpec(), depth=2)


def test_generated_graphs_are_frozen():
    g = grid_hierarchy(depth=1)
    with pytest.raises(nx.NetworkXError):
        g.add_node("z_9_9_9")


# ----------------------------------------------------------------------------- extra parents


def test_extra_parents_make_shared_low_level_causes():
    g = grid_hierarchy(depth=3, branching=2, extra_parent_prob=1.0)
    assert not nx.is_tree(g.to_undirected())
    two = [v for v in g if g.in_degree(v) == 2]
    assert two, "with probability 1 every border node takes a second parent"
    for v in two:
        main, extra = graphs.parents(g, v)
        # Both parents one level up, and spatially adjacent blocks.
        assert g.nodes[main]["level"] == g.nodes[extra]["level"] == g.nodes[v]["level"] - 1
        (r1, c1), (r2, c2) = g.nodes[main]["block"], g.nodes[extra]["block"]
        assert abs(r1 - r2) + abs(c1 - c2) == 1
    # A latent whose children lie outside its own block: a shared cause.
    shared = [u for u in g if g.nodes[u]["kind"] == "latent" and any(g.in_degree(k) == 2 for k in g.successors(u))]
    assert shared
    assert dims_add_up(g)


def test_only_border_nodes_get_extra_parents():
    b = 3
    g = grid_hierarchy(depth=2, branching=b, extra_parent_prob=1.0)
    for v in graphs.levels(g)[1]:
        r, c = g.nodes[v]["block"]
        if r % b == 1 and c % b == 1:  # the middle child touches no other parent's block
            assert g.in_degree(v) == 1


def test_extra_parent_probability_zero_keeps_a_tree():
    g = grid_hierarchy(depth=3, extra_parent_prob=0.0, seed=5)
    assert nx.is_arborescence(g)


def test_extra_parent_draws_are_deterministic_in_the_seed():
    a = graphs.graph_to_json(grid_hierarchy(depth=3, extra_parent_prob=0.5, seed=1))
    b = graphs.graph_to_json(grid_hierarchy(depth=3, extra_parent_prob=0.5, seed=1))
    c = graphs.graph_to_json(grid_hierarchy(depth=3, extra_parent_prob=0.5, seed=2))
    assert a == b
    assert a["links"] != c["links"]


# ----------------------------------------------------------------------------- queries


def test_parents_order_is_by_level_then_id():
    g = grid_hierarchy(depth=3, extra_parent_prob=1.0)
    for v in g:
        ps = graphs.parents(g, v)
        assert ps == sorted(g.predecessors(v), key=lambda p: (g.nodes[p]["level"], p))


def test_topological_order_and_node_lists():
    g = grid_hierarchy(depth=2, extra_parent_prob=0.5, seed=3)
    order = graphs.topological_order(g)
    pos = {v: i for i, v in enumerate(order)}
    assert all(pos[u] < pos[v] for u, v in g.edges)
    assert graphs.latent_nodes(g) == [v for v in order if g.nodes[v]["kind"] == "latent"]
    obs = graphs.observed_nodes(g)
    assert [g.nodes[v]["pos"] for v in obs] == [(r, c) for r in range(4) for c in range(4)]


def test_id_grid_places_every_pixel_at_its_position():
    g = grid_hierarchy(depth=2, branching=3)
    grid = graphs.id_grid(g)
    assert grid.shape == (9, 9)
    for (r, c), v in np.ndenumerate(grid):
        assert v == graphs.observed_id(r, c) and g.nodes[v]["pos"] == (r, c)


# ----------------------------------------------------------------------------- GridSpec validation


@pytest.mark.parametrize(
    "options,match",
    [
        ({"depth": 0}, "depth must be >= 1"),
        ({"branching": 1}, "branching must be >= 2"),
        ({"root_dim": 0}, "root_dim must be >= 1"),
        ({"noise_dim": 0}, "noise_dim must be >= 1"),
        ({"obs_noise_dim": 0}, "obs_noise_dim must be >= 1"),
        ({"extra_parent_prob": -0.1}, r"extra_parent_prob must be in \[0, 1\]"),
        ({"extra_parent_prob": 1.5}, r"extra_parent_prob must be in \[0, 1\]"),
        ({"depth": 2.5}, "depth must be an integer"),
    ],
)
def test_grid_spec_rejects_bad_options(options, match):
    with pytest.raises(ConfigError, match=match):
        GridSpec(**options)


# ----------------------------------------------------------------------------- validation errors


def tiny() -> dict:
    """Node-link JSON of z -> x_0_0, x_0_1 (a valid one-level graph)."""
    return {
        "directed": True,
        "multigraph": False,
        "graph": {},
        "nodes": [
            {"id": "z", "kind": "latent", "level": 0, "dim": 2, "noise_dim": 2},
            {"id": "x_0_0", "kind": "observed", "level": 1, "dim": 3, "noise_dim": 1, "pos": [0, 0]},
            {"id": "x_0_1", "kind": "observed", "level": 1, "dim": 3, "noise_dim": 1, "pos": [0, 1]},
        ],
        "links": [{"source": "z", "target": "x_0_0"}, {"source": "z", "target": "x_0_1"}],
    }


def node(data: dict, v: str) -> dict:
    return next(n for n in data["nodes"] if n["id"] == v)


def test_the_tiny_graph_is_valid():
    g = graphs.graph_from_json(tiny())
    assert graphs.image_shape(g) == (3, 1, 2)


def _bad_kind(d):
    node(d, "z")["kind"] = "hidden"


def _missing_level(d):
    del node(d, "z")["level"]


def _zero_dim(d):
    node(d, "z")["dim"] = 0


def _float_noise_dim(d):
    node(d, "z")["noise_dim"] = 1.5


def _bad_pos(d):
    node(d, "x_0_0")["pos"] = [0]


def _cycle(d):
    d["nodes"].append({"id": "w", "kind": "latent", "level": 0, "dim": 2, "noise_dim": 0})
    node(d, "z")["noise_dim"] = 0
    d["links"] += [{"source": "z", "target": "w"}, {"source": "w", "target": "z"}]


def _observed_edge(d):
    d["links"].append({"source": "x_0_0", "target": "x_0_1"})


def _observed_child(d):
    d["nodes"].append({"id": "y", "kind": "latent", "level": 2, "dim": 3, "noise_dim": 0})
    d["links"].append({"source": "x_0_0", "target": "y"})


def _dims_wrong(d):
    node(d, "x_0_1")["dim"] = 4


def _observed_not_below(d):
    node(d, "x_0_0")["level"] = 0


def _channels_differ(d):
    node(d, "x_0_1")["dim"] = 4
    node(d, "x_0_1")["noise_dim"] = 2


def _shared_pos(d):
    node(d, "x_0_1")["pos"] = [0, 0]


def _not_full_grid(d):
    node(d, "x_0_1")["pos"] = [1, 1]


def _no_observed(d):
    d["nodes"] = d["nodes"][:1]
    d["links"] = []


def _no_latent(d):
    d["nodes"] = [n for n in d["nodes"] if n["kind"] == "observed"]
    for n in d["nodes"]:
        n["noise_dim"] = 3
    d["links"] = []


def _no_nodes(d):
    d["nodes"], d["links"] = [], []


@pytest.mark.parametrize(
    "break_it,match",
    [
        (_bad_kind, "kind must be 'latent' or 'observed'"),
        (_missing_level, "missing attribute 'level'"),
        (_zero_dim, "dim must be an integer >= 1"),
        (_float_noise_dim, "noise_dim must be an integer >= 0"),
        (_bad_pos, "pos must be"),
        (_cycle, "graph has a cycle"),
        (_observed_edge, "observed-observed edge"),
        (_observed_child, "has a child"),
        (_dims_wrong, "dims do not add up"),
        (_observed_not_below, "not below the deepest latent level"),
        (_channels_differ, "differs from"),
        (_shared_pos, "share pos"),
        (_not_full_grid, "do not form a full"),
        (_no_observed, "no observed nodes"),
        (_no_latent, "no latent nodes"),
        (_no_nodes, "no nodes"),
    ],
    ids=lambda x: getattr(x, "__name__", "")[1:] if callable(x) else "",
)
def test_each_violation_is_named(break_it, match):
    data = copy.deepcopy(tiny())
    break_it(data)
    with pytest.raises(GraphError, match=match) as info:
        graphs.graph_from_json(data)
    assert "\n" not in str(info.value)


def test_validate_graph_rejects_multigraphs():
    with pytest.raises(GraphError, match="parallel edges"):
        graphs.validate_graph(nx.MultiDiGraph())


@pytest.mark.parametrize(
    "data,match",
    [
        ([], "must be an object with a 'nodes' list"),
        ({"nodes": [{"kind": "latent"}], "links": []}, "has no 'id'"),
        ({"nodes": [{"id": "a"}, {"id": "a"}], "links": []}, "appears twice"),
        ({"nodes": [{"id": "a"}], "links": [{"source": "a"}]}, "needs 'source' and 'target'"),
        ({"nodes": [{"id": "a"}], "links": [{"source": "a", "target": "b"}]}, "unknown node 'b'"),
        ({"nodes": [], "links": {}}, "'links' must be a list"),
        ({"nodes": [], "multigraph": True}, "multigraphs are not supported"),
    ],
)
def test_malformed_json_is_named(data, match):
    with pytest.raises(GraphError, match=match):
        graphs.graph_from_json(data)


def test_read_graph_names_the_file_and_the_problem(tmp_path):
    with pytest.raises(GraphError, match="graph file not found"):
        graphs.read_graph(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(GraphError, match="is not valid JSON"):
        graphs.read_graph(tmp_path / "bad.json")
    data = tiny()
    node(data, "x_0_1")["dim"] = 4
    (tmp_path / "dims.json").write_text(json.dumps(data))
    with pytest.raises(GraphError, match=r"dims\.json: node 'x_0_1': dims do not add up"):
        graphs.read_graph(tmp_path / "dims.json")


def test_edges_key_is_accepted_as_well_as_links():
    data = tiny()
    data["edges"] = data.pop("links")
    assert graphs.graph_from_json(data).number_of_edges() == 2


# ----------------------------------------------------------------------------- JSON round trip


@pytest.mark.parametrize("spec", SPECS[:3], ids=str)
def test_json_round_trip_keeps_nodes_attributes_and_edges(spec, tmp_path):
    g = grid_hierarchy(spec)
    graphs.write_graph(g, tmp_path / "g.json")
    h = graphs.read_graph(tmp_path / "g.json")
    assert dict(g.nodes(data=True)) == dict(h.nodes(data=True))
    assert set(g.edges) == set(h.edges)
    assert g.graph == h.graph
    assert graphs.graph_to_json(h) == graphs.graph_to_json(g)
    assert not list(tmp_path.glob("*.tmp"))


def test_graph_file_is_node_link_json_with_the_contract_attributes(tmp_path):
    graphs.write_graph(grid_hierarchy(depth=1), tmp_path / "g.json")
    data = json.loads((tmp_path / "g.json").read_text())
    assert data["directed"] is True and "links" in data
    for n in data["nodes"]:
        assert {"id", "kind", "level", "dim", "noise_dim"} <= set(n)
        assert ("pos" in n) == (n["kind"] == "observed")


def test_doctests():
    assert doctest.testmod(graphs).failed == 0
