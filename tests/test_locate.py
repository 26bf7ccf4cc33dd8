"""Claims about hlvm.locate: Algorithms 1 and 2 as docs/theory.md derives them."""

from __future__ import annotations

import itertools
import math

import networkx as nx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hlvm.errors import MaskError
from hlvm.graphs import GridSpec, graph_to_json, grid_hierarchy, id_grid, validate_graph
from hlvm.locate import ROLES, abstraction_score, index_graph, locate, locate_many
from hlvm.masks import Mask, random_unit_masks

# ----------------------------------------------------------------------------- motifs


def worked_tree() -> nx.DiGraph:
    """docs/theory.md's binary tree: z1 -> z2, z3; z2 -> x1, x2; z3 -> x3, x4 (pixels on a 1x4 grid)."""
    g = nx.DiGraph()
    g.add_node("z1", kind="latent", level=0, dim=1, noise_dim=1)
    for z in ("z2", "z3"):
        g.add_node(z, kind="latent", level=1, dim=2, noise_dim=1)
        g.add_edge("z1", z)
    for i, x in enumerate(("x1", "x2", "x3", "x4")):
        g.add_node(x, kind="observed", level=2, dim=3, noise_dim=1, pos=(0, i))
        g.add_edge("z2" if i < 2 else "z3", x)
    validate_graph(g)
    return nx.freeze(g)


WORKED = [
    # masked, CA, c, s_m (nodes whose noise)
    ({"x1"}, {"z1", "z2"}, {"z2"}, {"x1"}),
    ({"x1", "x2"}, {"z1"}, {"z1"}, {"z2", "x1", "x2"}),
    ({"x1", "x2", "x3"}, {"z1", "z3"}, {"z3"}, {"z2", "x1", "x2", "x3"}),
    ({"x1", "x3"}, {"z1", "z2", "z3"}, {"z2", "z3"}, {"x1", "x3"}),
]


@pytest.mark.parametrize(("masked", "ca", "c", "s_m"), WORKED)
def test_theory_worked_examples_exactly(masked, ca, c, s_m):
    r = locate(worked_tree(), masked)
    assert set(r.shared) == ca
    assert set(r.c) == c
    assert set(r.s_m) == s_m
    everything = {"z1", "z2", "z3", "x1", "x2", "x3", "x4"}
    assert set(r.s_mc) == everything - ca - s_m  # on a tree every node is on one side or shared


def test_worked_example_dims_and_roles():
    r = locate(worked_tree(), ["x1", "x3"])
    assert r.dim_c == 4  # z2 and z3, dim 2 each
    assert r.noise_shared == 3  # eps of z1, z2, z3
    assert r.noise_private_masked == 2 and r.noise_private_visible == 2
    assert r.noise_latent_total == 3 and r.frac_noise_shared == 1.0
    assert dict(r.roles) == {
        "z1": "shared",
        "z2": "c",
        "z3": "c",
        "x1": "private_masked",
        "x3": "private_masked",
        "x2": "private_visible",
        "x4": "private_visible",
    }
    assert r.role("z1") == "shared"
    assert r.c_levels == (1, 1) and r.abstraction == 0.0
    assert locate(worked_tree(), ["x1", "x2"]).abstraction == 1.0


def test_whole_subtree_lifts_c_to_its_parent_and_a_little_less_or_more_does_not():
    g = grid_hierarchy(depth=3, branching=2)  # 8x8 image; level-1 latents cover 4x4 blocks
    block = np.zeros((8, 8), bool)
    block[:2, :2] = True  # exactly the subtree of z_2_0_0
    r = locate(g, Mask(block))
    assert r.c == ("z_1_0_0",) and r.shared == ("z_0_0_0", "z_1_0_0")
    less = block.copy()
    less[1, 1] = False
    assert locate(g, Mask(less)).c == ("z_2_0_0",)
    more = block.copy()
    more[0, 2] = True
    assert locate(g, Mask(more)).c == ("z_2_0_1",)  # x_0_2's 2x2 block is now mixed


def test_nothing_shared_gives_empty_c():
    # Two disconnected trees: masking all of one shares nothing with the other.
    g = nx.DiGraph()
    for z, xs in (("a", ("x0", "x1")), ("b", ("x2", "x3"))):
        g.add_node(z, kind="latent", level=0, dim=1, noise_dim=1)
        for x in xs:
            g.add_node(x, kind="observed", level=1, dim=2, noise_dim=1, pos=(0, int(x[1])))
            g.add_edge(z, x)
    validate_graph(g)
    r = locate(g, ["x0", "x1"])
    assert r.shared == () and r.c == () and r.dim_c == 0
    assert math.isnan(r.abstraction)
    assert set(r.s_m) == {"a", "x0", "x1"} and set(r.s_mc) == {"b", "x2", "x3"}


def test_latent_without_observed_descendant_is_detached():
    g = nx.DiGraph(worked_tree())
    g.add_node("z4", kind="latent", level=1, dim=2, noise_dim=1)
    g.add_edge("z1", "z4")
    validate_graph(g)
    r = locate(g, ["x1"])
    assert r.role("z4") == "detached"
    assert "z4" not in r.shared + r.s_m + r.s_mc


def test_graph_is_never_mutated():
    g = grid_hierarchy(depth=2, branching=2, extra_parent_prob=0.5, seed=3)
    thawed = nx.DiGraph(g)  # a mutable copy: freezing would hide a mutation attempt as an error
    before = graph_to_json(thawed)
    locate(thawed, ["x_0_0", "x_3_3"])
    locate_many(thawed, random_unit_masks(5, 4, 4, 0.5, 1, np.random.default_rng(0)))
    assert graph_to_json(thawed) == before


def test_mask_object_and_id_collection_agree():
    g = grid_hierarchy(depth=3, branching=2)
    m = Mask.random(8, 8, ratio=0.3, unit=2, seed=4)
    assert locate(g, m) == locate(g, m.masked_ids(id_grid(g))) == locate(g, m.grid)


@pytest.mark.parametrize(
    ("mask", "message"),
    [
        (["x_9_9"], "unknown node 'x_9_9'"),
        (["z_1_0_0"], "'z_1_0_0' is a latent node"),
        ([], "mask is empty"),
        ([f"x_{r}_{c}" for r in range(4) for c in range(4)], "mask is full"),
        (Mask(np.eye(8, dtype=bool)), "mask is 8x8 but the image is 4x4"),
        ("x_0_0", "collection of observed node ids"),
    ],
)
def test_bad_masks_raise_one_line_mask_errors(mask, message):
    g = grid_hierarchy(depth=2, branching=2)
    with pytest.raises(MaskError, match=message) as e:
        locate(g, mask)
    assert "\n" not in str(e.value)


def test_abstraction_score_definition():
    assert abstraction_score([0], 3) == 1.0
    assert abstraction_score([3, 3], 3) == 0.0
    assert abstraction_score([1, 3], 4) == 0.5
    assert abstraction_score([0], 0) == 1.0
    assert math.isnan(abstraction_score([], 3))


# ----------------------------------------------------------------------------- random DAGs


@st.composite
def small_dags(draw) -> nx.DiGraph:
    """A random graph satisfying Assumption 1: up to 7 latents over a 1x2 to 2x3 pixel grid.

    Latent ``i`` may be a parent of latent ``j > i`` (so acyclic) and of any
    pixel; levels are longest-path depths; dims add up by construction.
    Every noise_dim is >= 1, the generic case in which a node's noise is new
    information (a 0-dim noise makes a node a mere copy of its parents, and
    node sets then stop describing information uniquely).
    """
    n_lat = draw(st.integers(1, 7))
    h, w = draw(st.sampled_from([(1, 2), (1, 3), (2, 2), (1, 4), (2, 3)]))
    lat = [f"z{i}" for i in range(n_lat)]
    pix = [(r, c) for r in range(h) for c in range(w)]
    g = nx.DiGraph()
    pairs = [(i, j) for i in range(n_lat) for j in range(i + 1, n_lat)]
    chosen = draw(st.lists(st.booleans(), min_size=len(pairs), max_size=len(pairs)))
    level = {}
    for j in range(n_lat):
        pars = [lat[i] for (i, jj), on in zip(pairs, chosen, strict=True) if on and jj == j]
        noise = draw(st.integers(1, 2))
        level[lat[j]] = max((level[p] + 1 for p in pars), default=0)
        g.add_node(lat[j], kind="latent", level=level[lat[j]], dim=sum(g.nodes[p]["dim"] for p in pars) + noise,
                   noise_dim=noise)
        g.add_edges_from((p, lat[j]) for p in pars)
    pix_parents = {
        rc: draw(st.lists(st.sampled_from(lat), unique=True, max_size=min(3, n_lat))) for rc in pix
    }
    channels = max(sum(g.nodes[p]["dim"] for p in ps) for ps in pix_parents.values()) + 1
    bottom = max(level.values()) + 1
    for (r, c), ps in pix_parents.items():
        x = f"x_{r}_{c}"
        in_dim = sum(g.nodes[p]["dim"] for p in ps)
        g.add_node(x, kind="observed", level=bottom, dim=channels, noise_dim=channels - in_dim, pos=(r, c))
        g.add_edges_from((p, x) for p in ps)
    validate_graph(g)
    return nx.freeze(g)


@st.composite
def dag_and_mask(draw):
    g = draw(small_dags())
    obs = sorted(v for v, k in g.nodes(data="kind") if k == "observed")
    masked = draw(st.sets(st.sampled_from(obs), min_size=1, max_size=len(obs) - 1))
    return g, masked


def oracle_c(g: nx.DiGraph, masked: set[str]) -> list[set[str]]:
    """Every minimum-dimension ``c`` that meets Theorem 1's conditions, by brute force.

    Written from the theory, not from Algorithm 1. ``info(S)`` is ``S`` with
    all its ancestors (``nx.ancestors``); a set ``S`` of latents carries exactly
    the noises of ``info(S)``. Theorem 1 asks for ``c`` with:

    1. ``c`` a function of ``x_m`` and of ``x_mc``: ``info(c) <= info(x_m)`` and
       ``info(c) <= info(x_mc)``;
    2. ``s_m`` (the noises of ``info(x_m)`` outside ``info(c)``) independent of
       ``(c, s_mc)``, so no noise of both sides may be left out of ``c``:
       ``info(x_m) & info(x_mc) <= info(c)``.

    Together: ``info(c) == info(x_m) & info(x_mc)``. Among all subsets ``S`` of
    the latents meeting it, return those of minimum ``sum(dim(v) for v in S)``
    (the width of ``c`` as a concatenated vector).
    """
    obs = {v for v, k in g.nodes(data="kind") if k == "observed"}
    latents = sorted(v for v, k in g.nodes(data="kind") if k == "latent")

    def info_of(nodes):
        out = set(nodes)
        for v in nodes:
            out |= nx.ancestors(g, v)
        return out

    target = info_of(masked) & info_of(obs - masked)
    best, best_dim = [], math.inf
    for r in range(len(latents) + 1):
        for subset in itertools.combinations(latents, r):
            if info_of(subset) != target:
                continue
            d = sum(g.nodes[v]["dim"] for v in subset)
            if d < best_dim:
                best, best_dim = [set(subset)], d
            elif d == best_dim:
                best.append(set(subset))
    return best


FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(dag_and_mask())
def test_c_is_the_unique_minimum_of_a_brute_force_search(case):
    g, masked = case
    minima = oracle_c(g, masked)
    assert len(minima) == 1  # Theorem 1: the minimal c is unique
    assert set(locate(g, masked).c) == minima[0]


@FAST
@given(dag_and_mask())
def test_invariants_of_ca_c_s_m_and_roles(case):
    g, masked = case
    r = locate(g, masked)
    ca, c = set(r.shared), set(r.c)
    anc_or_self = {v: nx.ancestors(g, v) | {v} for v in g}
    assert c <= ca
    assert all(u not in anc_or_self[v] for u in c for v in c if u != v)  # c is an antichain
    assert all(any(a in anc_or_self[v] for v in c) for a in ca)  # CA lies above c
    assert not set(r.s_m) & ca and not set(r.s_mc) & ca
    info_c = set().union(*(anc_or_self[v] for v in c)) if c else set()
    assert info_c == ca
    assert all(a in ca for v in ca for a in nx.ancestors(g, v))  # CA closed under ancestors
    assert set(r.roles) == set(g) and set(r.roles.values()) <= set(ROLES)
    by_role = {role: {v for v, x in r.roles.items() if x == role} for role in ROLES}
    assert by_role["c"] == c and by_role["shared"] == ca - c
    assert by_role["private_masked"] == set(r.s_m) and by_role["private_visible"] == set(r.s_mc)
    assert set(r.masked) == set(masked) and not set(r.masked) & set(r.visible)
    assert r.dim_c == sum(g.nodes[v]["dim"] for v in c)
    assert r.noise_shared == sum(g.nodes[v]["noise_dim"] for v in ca)
    assert r.noise_private_masked == sum(g.nodes[v]["noise_dim"] for v in r.s_m)


def _check_many_equals_single(g, masks):
    res = locate_many(g, masks, chunk=7)  # a small chunk exercises the chunk boundaries
    for i, m in enumerate(masks):
        one = locate(g, Mask(m))
        assert res.shared_ids(i) == one.shared
        assert res.c_ids(i) == one.c
        assert res.dim_c[i] == one.dim_c
        assert res.n_c[i] == len(one.c) and res.n_shared[i] == len(one.shared)
        assert res.noise_shared[i] == one.noise_shared
        assert res.noise_private_masked[i] == one.noise_private_masked
        assert res.noise_private_visible[i] == one.noise_private_visible
        pm = {res.index.latents[j] for j in np.flatnonzero(res.private_masked[i])}
        assert pm == {v for v in one.s_m if g.nodes[v]["kind"] == "latent"}
        assert res.abstraction[i] == pytest.approx(one.abstraction, nan_ok=True)
    assert res.noise_latent_total == one.noise_latent_total


@FAST
@given(small_dags(), st.integers(0, 2**32 - 1))
def test_many_mask_engine_equals_single_mask_on_random_dags(g, seed):
    rng = np.random.default_rng(seed)
    h, w = id_grid(g).shape
    masks = rng.random((12, h, w)) < 0.5
    flat = masks.reshape(12, -1)
    masks = masks[flat.any(1) & ~flat.all(1)]
    if len(masks):
        _check_many_equals_single(g, masks)


@pytest.mark.parametrize("extra", [0.0, 0.6])
@pytest.mark.parametrize(("ratio", "unit"), [(0.1, 1), (0.5, 1), (0.75, 2), (0.25, 4)])
def test_many_mask_engine_equals_single_mask_on_grid_hierarchies(extra, ratio, unit):
    g = grid_hierarchy(GridSpec(depth=3, branching=2, extra_parent_prob=extra, seed=1))
    masks = random_unit_masks(30, 8, 8, ratio, unit, np.random.default_rng(7))
    _check_many_equals_single(g, masks)


def test_many_mask_index_is_reusable_and_levels_count():
    g = grid_hierarchy(depth=3, branching=2)
    idx = index_graph(g)
    assert idx.desc.shape == (1 + 4 + 16, 64) and idx.n_desc.tolist()[:2] == [64, 16]
    masks = random_unit_masks(20, 8, 8, 0.5, 2, np.random.default_rng(0))
    a, b = locate_many(idx, masks), locate_many(g, masks)
    assert (a.c == b.c).all()
    counts = a.c_level_counts()
    assert counts.sum() == a.n_c.sum() and counts.shape == (3,)
    assert counts[2] == 0  # units of 2 are whole level-2 blocks: no level-2 latent is mixed


@pytest.mark.parametrize(
    ("masks", "message"),
    [
        (np.zeros((2, 4, 4), bool), "mask #0 is empty"),
        (np.concatenate([np.eye(4, dtype=bool)[None], np.ones((1, 4, 4), bool)]), "mask #1 is full"),
        (np.zeros((2, 4, 3), bool), "masks must be"),
        (np.full((1, 4, 4), 2), "0 \\(visible\\) or 1"),
    ],
)
def test_many_mask_engine_rejects_bad_masks(masks, message):
    with pytest.raises(MaskError, match=message):
        locate_many(grid_hierarchy(depth=2, branching=2), masks)


def test_a_mutable_graph_is_read_afresh_on_every_call():
    # Per-graph tables are cached only for frozen graphs; a thawed graph may change between calls.
    g = nx.DiGraph(worked_tree())
    assert locate(g, ["x1"]).dim_c == 2
    g.nodes["z2"]["dim"] = 7  # not a valid graph any more, but locate must not answer from a stale table
    assert locate(g, ["x1"]).dim_c == 7
    frozen = worked_tree()
    assert locate(frozen, ["x1"]).levels is locate(frozen, ["x1"]).levels  # shared, read-only
    with pytest.raises(TypeError):
        locate(frozen, ["x1"]).levels["z1"] = 5
