"""Locating ``c``: Algorithms 1 and 2 of Kong et al. (2023), as docs/theory.md derives them.

For a graph satisfying Assumption 1 and a mask (a non-empty, proper set of
masked observed nodes ``x_m``; the rest, ``x_mc``, visible):

- ``info(S)``: every node of ``S`` with all its ancestors;
- ``shared`` (``CA``) ``= info(x_m) & info(x_mc)``: the latents with at least
  one masked and at least one visible observed descendant;
- ``c``: the nodes of ``CA`` with no child in ``CA`` (the lowest shared
  latents; Theorem 1's unique minimal ``c``);
- ``s_m``: the nodes of ``info(x_m) - CA``, whose noises form the information
  private to the masked side (Algorithm 1);
- ``s_mc``: the nodes of ``info(x_mc) - CA``, likewise for the visible side
  (Algorithm 2's canonical choice).

Two engines compute the same sets:

- :func:`locate`: one mask, by two upward graph searches (``O(nodes + edges)``),
  returning a frozen :class:`SharedLatents` with node ids, levels, dims and
  the role of every node;
- :func:`locate_many`: ``K`` masks at once, by sparse matrix algebra. The
  ``(n_latents, n_pixels)`` observable-descendant matrix ``D`` times the
  ``(n_pixels, K)`` mask matrix counts each latent's masked descendants; the
  visible ones are the rest. ``CA`` is "both counts positive"; the
  latent-children matrix times ``CA`` says which ``CA`` nodes have a child in
  ``CA``, and ``c`` is the ``CA`` nodes without one.

Everything here is pure: networkx, numpy and scipy.sparse; no torch, no I/O.
The graph is never mutated.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from types import MappingProxyType

import networkx as nx
import numpy as np
import scipy.sparse as sp

from hlvm.errors import MaskError
from hlvm.masks import Mask

__all__ = [
    "ROLES",
    "SharedLatents",
    "locate",
    "info",
    "abstraction_score",
    "GraphIndex",
    "index_graph",
    "ManyResult",
    "locate_many",
]

#: The role of a node under a mask (:attr:`SharedLatents.roles`), one per node:
#:
#: - ``"c"``: a node of ``c`` (the lowest shared latents);
#: - ``"shared"``: in ``CA`` but not in ``c`` (an ancestor of a ``c`` node);
#: - ``"private_masked"``: in ``info(x_m) - CA``: its noise is part of ``s_m``
#:   (masked pixels themselves have this role);
#: - ``"private_visible"``: in ``info(x_mc) - CA``: its noise is part of
#:   ``s_mc`` (visible pixels themselves have this role);
#: - ``"detached"``: a latent with no observed descendant, in neither side's
#:   information (never on a grid hierarchy).
ROLES = ("c", "shared", "private_masked", "private_visible", "detached")

LATENT, OBSERVED = "latent", "observed"


def abstraction_score(c_levels: Iterable[int], max_latent_level: int) -> float:
    """How close to the top of the hierarchy ``c`` sits: ``1 - mean(level of c) / max_latent_level``.

    1 when ``c`` is the root (level 0) alone, 0 when every node of ``c`` is at
    the deepest latent level; NaN when ``c`` is empty (nothing shared).
    Levels are unweighted: a wide ``c`` of many low nodes scores low even if
    it also holds a high one. A graph whose latents all sit at level 0 scores 1.

    >>> abstraction_score([0], 3), abstraction_score([3, 3], 3), abstraction_score([1, 3], 4)
    (1.0, 0.0, 0.5)
    """
    lv = list(c_levels)
    if not lv:
        return math.nan
    if max_latent_level <= 0:
        return 1.0
    return 1.0 - (sum(lv) / len(lv)) / max_latent_level


def _raw(graph: nx.DiGraph) -> tuple[Mapping[str, dict], Mapping[str, Mapping], Mapping[str, Mapping]]:
    """The graph's node-attribute, predecessor and successor dicts, read-only use only.

    networkx's views add a Python call per lookup; on an 87,381-node graph the
    plain dicts behind them are several times faster. Any DiGraph has them.
    """
    return graph._node, graph._pred, graph._succ


def info(graph: nx.DiGraph, nodes: Iterable[str]) -> set[str]:
    """``info(S)``: the nodes of ``S`` with all their ancestors (one upward search)."""
    _, pred, _ = _raw(graph)
    seen = set(nodes)
    frontier = seen
    while frontier:
        # One layer of parents at a time, as set operations in C rather than a Python loop per edge.
        frontier = set().union(*map(pred.__getitem__, frontier)) - seen
        seen |= frontier
    return seen


def natural_key(v: str) -> tuple[tuple[int, object], ...]:
    """Sort key reading the numbers in a node id as numbers: ``x_0_2`` before ``x_0_10``."""
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in str(v).split("_"))


def natural_sorted(nodes: object) -> list[str]:
    """``nodes`` as a list in :func:`natural_key` order."""
    return sorted(nodes, key=natural_key)  # type: ignore[call-overload]

@dataclass(frozen=True)
class SharedLatents:
    """What a mask shares, by Algorithms 1 and 2 (see the module docstring).

    The node sets are held as frozensets (``*_set`` fields, for fast
    membership); the attributes without the suffix give them as sorted tuples
    (``sorted`` on the ids), built on first use.

    Attributes
    ----------
    masked, visible : the observed nodes ``x_m`` and ``x_mc``.
    shared : ``CA``, the latents with a masked and a visible observed descendant.
    c : the nodes of ``CA`` with no child in ``CA``.
    s_m : nodes of ``info(x_m) - CA``; their noises form ``s_m``.
    s_mc : nodes of ``info(x_mc) - CA``; their noises form ``s_mc``.
    dim_c : sum of the dims of the nodes of ``c`` (the width of ``c`` as one
        concatenated vector, the dimension Theorem 1 minimises).
    noise_shared : sum of ``noise_dim`` over ``CA``: the dimension of the
        information ``c`` carries (its intrinsic dimension; ``<= dim_c``).
    noise_private_masked, noise_private_visible : ``dim(s_m)``, ``dim(s_mc)``
        (sums of ``noise_dim``, pixels' noises included).
    noise_latent_total : sum of ``noise_dim`` over all latents.
    max_latent_level : the deepest latent level of the graph.
    levels : level of every node of the graph (read-only).
    roles : role of every node of the graph, one of :data:`ROLES`; the nodes
        of role ``"private_masked"`` are exactly ``s_m``, of ``"private_visible"``
        exactly ``s_mc``, of ``"c"`` exactly ``c``, and ``"c"`` with
        ``"shared"`` exactly ``CA``.
    """

    masked_set: frozenset[str]
    visible_set: frozenset[str]
    shared_set: frozenset[str]
    c_set: frozenset[str]
    s_m_set: frozenset[str]
    s_mc_set: frozenset[str]
    dim_c: int
    noise_shared: int
    noise_private_masked: int
    noise_private_visible: int
    noise_latent_total: int
    max_latent_level: int
    levels: Mapping[str, int]

    # Sorting ~10^5 ids costs more than Algorithm 1 itself on a depth-8
    # hierarchy, so the sorted views are built only when asked for.
    @cached_property
    def masked(self) -> tuple[str, ...]:
        return tuple(sorted(self.masked_set))

    @cached_property
    def visible(self) -> tuple[str, ...]:
        return tuple(sorted(self.visible_set))

    @cached_property
    def shared(self) -> tuple[str, ...]:
        return tuple(sorted(self.shared_set))

    @cached_property
    def c(self) -> tuple[str, ...]:
        return tuple(sorted(self.c_set))

    @cached_property
    def s_m(self) -> tuple[str, ...]:
        return tuple(sorted(self.s_m_set))

    @cached_property
    def s_mc(self) -> tuple[str, ...]:
        return tuple(sorted(self.s_mc_set))

    @cached_property
    def roles(self) -> Mapping[str, str]:
        # Later updates win: a c node is also in shared, so c goes last.
        roles = dict.fromkeys(self.levels, "detached")
        for role, nodes in (("private_visible", self.s_mc_set), ("private_masked", self.s_m_set),
                            ("shared", self.shared_set), ("c", self.c_set)):
            roles.update(dict.fromkeys(nodes, role))
        return MappingProxyType(roles)

    def role(self, v: str) -> str:
        """Role of node ``v`` (one of :data:`ROLES`)."""
        if v in self.c_set:
            return "c"
        if v in self.shared_set:
            return "shared"
        if v in self.s_m_set:
            return "private_masked"
        if v in self.s_mc_set:
            return "private_visible"
        if v in self.levels:
            return "detached"
        raise MaskError(f"unknown node {v!r}")

    @property
    def c_levels(self) -> tuple[int, ...]:
        """Levels of the nodes of ``c``, in the order of :attr:`c`."""
        return tuple(self.levels[v] for v in self.c)

    @property
    def frac_noise_shared(self) -> float:
        """Fraction of all latent noise dimensions that lie in ``CA``."""
        return self.noise_shared / self.noise_latent_total if self.noise_latent_total else math.nan

    @property
    def abstraction(self) -> float:
        """:func:`abstraction_score` of ``c`` (NaN if nothing is shared)."""
        return abstraction_score(self.c_levels, self.max_latent_level)

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict: the node sets as lists in natural order (``x_0_2`` before ``x_0_10``), the dims, and
        the levels of ``CA``'s nodes."""
        return {
            "c": natural_sorted(self.c),
            "shared": natural_sorted(self.shared),
            "s_m": natural_sorted(self.s_m),
            "s_mc": natural_sorted(self.s_mc),
            "masked": natural_sorted(self.masked),
            "dim_c": self.dim_c,
            "noise_shared": self.noise_shared,
            "noise_private_masked": self.noise_private_masked,
            "noise_private_visible": self.noise_private_visible,
            "noise_latent_total": self.noise_latent_total,
            "abstraction": None if math.isnan(self.abstraction) else self.abstraction,
            "levels": {v: self.levels[v] for v in natural_sorted(self.shared)},
        }


@dataclass(frozen=True, eq=False)
class _Tables:
    """Per-graph lookups :func:`locate` needs on every call, as plain dicts."""

    where: Mapping[tuple[int, int], str]  # pixel (row, col) -> observed id
    shape: tuple[int, int]
    observed: frozenset[str]
    dim: Mapping[str, int]
    noise_dim: Mapping[str, int]
    levels: Mapping[str, int]  # read-only, shared by every result on this graph
    noise_latent_total: int
    max_latent_level: int


# Frozen graphs cannot change their nodes or edges, so their tables are built
# once; their node attributes are taken as fixed too (networkx cannot freeze
# those dicts: edit a thawed copy instead). The weak keys let a graph and its
# tables be collected together.
_TABLES: weakref.WeakKeyDictionary[nx.DiGraph, _Tables] = weakref.WeakKeyDictionary()


def _tables(graph: nx.DiGraph) -> _Tables:
    """The :class:`_Tables` of ``graph``: cached for frozen graphs, rebuilt for mutable ones."""
    if nx.is_frozen(graph):
        cached = _TABLES.get(graph)
        if cached is not None:
            return cached
    nodes, _, _ = _raw(graph)
    where = {tuple(int(x) for x in a["pos"]): v for v, a in nodes.items() if a.get("kind") == OBSERVED}
    if not where:
        raise MaskError("the graph has no observed nodes")
    latent = [a for a in nodes.values() if a["kind"] == LATENT]
    t = _Tables(
        where=where,
        shape=(max(r for r, _ in where) + 1, max(c for _, c in where) + 1),
        observed=frozenset(where.values()),
        dim={v: int(a["dim"]) for v, a in nodes.items()},
        noise_dim={v: int(a["noise_dim"]) for v, a in nodes.items()},
        levels=MappingProxyType({v: int(a["level"]) for v, a in nodes.items()}),
        noise_latent_total=int(sum(a["noise_dim"] for a in latent)),
        max_latent_level=int(max((a["level"] for a in latent), default=0)),
    )
    if nx.is_frozen(graph):
        _TABLES[graph] = t
    return t


def _masked_ids(graph: nx.DiGraph, mask: Mask | np.ndarray | Collection[str]) -> set[str]:
    """The masked observed ids of ``mask``, validated against ``graph``."""
    nodes, _, _ = _raw(graph)
    if isinstance(mask, np.ndarray):
        mask = Mask(mask)
    if isinstance(mask, Mask):
        t = _tables(graph)
        if mask.shape != t.shape:
            raise MaskError(f"mask is {mask.shape[0]}x{mask.shape[1]} but the image is {t.shape[0]}x{t.shape[1]}")
        rows, cols = np.nonzero(mask.grid)
        return set(map(t.where.__getitem__, zip(rows.tolist(), cols.tolist(), strict=True)))
    if isinstance(mask, str) or not isinstance(mask, Iterable):
        raise MaskError(f"a mask must be a Mask or a collection of observed node ids, got {type(mask).__name__}")
    masked = set()
    for v in mask:
        if v not in nodes:
            raise MaskError(f"unknown node {v!r} in mask")
        if nodes[v].get("kind") != OBSERVED:
            raise MaskError(f"{v!r} is a latent node; a mask names observed nodes only")
        masked.add(v)
    if not masked:
        raise MaskError("mask is empty: mask at least one pixel")
    n_obs = sum(1 for a in nodes.values() if a.get("kind") == OBSERVED)
    if len(masked) == n_obs:
        raise MaskError("mask is full: leave at least one pixel visible")
    return masked


def locate(graph: nx.DiGraph, mask: Mask | np.ndarray | Collection[str]) -> SharedLatents:
    """Algorithms 1 and 2: ``CA``, ``c``, ``s_m`` and ``s_mc`` of ``mask`` on ``graph``.

    Parameters
    ----------
    graph : a graph satisfying Assumption 1 (as :func:`hlvm.graphs.grid_hierarchy`
        or :func:`hlvm.graphs.read_graph` return it); never mutated.
    mask : a :class:`hlvm.masks.Mask` (or an ``(H, W)`` bool array) over the
        graph's image, or a collection of masked observed node ids.

    Raises
    ------
    MaskError : unknown node, latent node, empty or full mask, wrong shape.

    Examples
    --------
    >>> from hlvm.graphs import grid_hierarchy
    >>> g = grid_hierarchy(depth=2, branching=2)
    >>> r = locate(g, ["x_0_0", "x_0_1", "x_1_0", "x_1_1"])  # the whole top-left 2x2 block
    >>> r.c, r.shared
    (('z_0_0_0',), ('z_0_0_0',))
    >>> locate(g, ["x_0_0"]).c
    ('z_1_0_0',)
    """
    masked = _masked_ids(graph, mask)
    t = _tables(graph)
    _, _, succ = _raw(graph)
    visible = t.observed - masked
    info_m, info_v = info(graph, masked), info(graph, visible)
    # Observed nodes have no descendants, so each lies in exactly one side's info: CA holds latents only.
    shared = info_m & info_v
    c = {z for z in shared if shared.isdisjoint(succ[z])}
    s_m, s_mc = info_m - shared, info_v - shared

    noise = t.noise_dim.__getitem__
    return SharedLatents(
        masked_set=frozenset(masked),
        visible_set=visible,
        shared_set=frozenset(shared),
        c_set=frozenset(c),
        s_m_set=frozenset(s_m),
        s_mc_set=frozenset(s_mc),
        dim_c=sum(map(t.dim.__getitem__, c)),
        noise_shared=sum(map(noise, shared)),
        noise_private_masked=sum(map(noise, s_m)),
        noise_private_visible=sum(map(noise, s_mc)),
        noise_latent_total=t.noise_latent_total,
        max_latent_level=t.max_latent_level,
        levels=t.levels,
    )


# ----------------------------------------------------------------------------- many masks


@dataclass(frozen=True, eq=False)
class GraphIndex:
    """The arrays :func:`locate_many` works on, built once per graph by :func:`index_graph`.

    Attributes
    ----------
    latents : latent ids, the column order of every ``(K, n_latents)`` result.
    observed : observed ids in row-major pixel order (``observed[r * W + c]``).
    shape : ``(H, W)`` of the image.
    desc : ``(n_latents, H*W)`` CSR 0/1 float32: ``desc[i, p] = 1`` iff pixel
        ``p`` is a descendant of latent ``i``.
    n_desc : ``(n_latents,)`` number of observed descendants of each latent.
    children : ``(n_latents, n_latents)`` CSR 0/1 float32: ``children[i, j] = 1``
        iff latent ``j`` is a child of latent ``i``.
    level, dim, noise_dim : ``(n_latents,)`` int arrays.
    pixel_noise_dim : ``(H*W,)`` int array, row-major.
    """

    latents: tuple[str, ...]
    observed: tuple[str, ...]
    shape: tuple[int, int]
    desc: sp.csr_matrix
    n_desc: np.ndarray
    children: sp.csr_matrix
    level: np.ndarray
    dim: np.ndarray
    noise_dim: np.ndarray
    pixel_noise_dim: np.ndarray

    @property
    def max_latent_level(self) -> int:
        return int(self.level.max(initial=0))


def index_graph(graph: nx.DiGraph) -> GraphIndex:
    """Build the :class:`GraphIndex` of ``graph`` (sparse descendant and child matrices)."""
    attrs = graph.nodes
    latents = tuple(sorted((v for v, k in attrs(data="kind") if k == LATENT), key=lambda v: (attrs[v]["level"], v)))
    obs = [v for v, k in attrs(data="kind") if k == OBSERVED]
    pos = {v: tuple(int(x) for x in attrs[v]["pos"]) for v in obs}
    h = max(r for r, _ in pos.values()) + 1
    w = max(c for _, c in pos.values()) + 1
    observed = [""] * (h * w)
    for v, (r, c) in pos.items():
        observed[r * w + c] = v
    li = {v: i for i, v in enumerate(latents)}
    pi = {v: i for i, v in enumerate(observed)}
    rows_lo, cols_lo, rows_ll, cols_ll = [], [], [], []
    for u, v in graph.edges:
        if v in pi:
            rows_lo.append(li[u])
            cols_lo.append(pi[v])
        else:
            rows_ll.append(li[u])
            cols_ll.append(li[v])
    n, p = len(latents), h * w
    to_pixels = sp.csr_matrix((np.ones(len(rows_lo), np.float32), (rows_lo, cols_lo)), shape=(n, p))
    children = sp.csr_matrix((np.ones(len(rows_ll), np.float32), (rows_ll, cols_ll)), shape=(n, n))
    # Reachability by fixed point: a latent reaches its pixel children and
    # whatever its latent children reach. Each round extends paths by one edge,
    # so it settles after (longest latent path) rounds; binarising keeps it a
    # 0/1 "is a descendant" matrix rather than a path count.
    desc = to_pixels.copy()
    while True:
        new = to_pixels + children @ desc
        new.data[:] = 1.0
        new.eliminate_zeros()
        if new.nnz == desc.nnz:
            break
        desc = new
    desc = desc.tocsr()
    desc.sort_indices()
    return GraphIndex(
        latents=latents,
        observed=tuple(observed),
        shape=(h, w),
        desc=desc,
        n_desc=np.asarray(desc.sum(axis=1)).ravel().astype(np.int64),
        children=children,
        level=np.array([attrs[v]["level"] for v in latents], dtype=np.int64),
        dim=np.array([attrs[v]["dim"] for v in latents], dtype=np.int64),
        noise_dim=np.array([attrs[v]["noise_dim"] for v in latents], dtype=np.int64),
        pixel_noise_dim=np.array([attrs[v]["noise_dim"] for v in observed], dtype=np.int64),
    )


@dataclass(frozen=True, eq=False)
class ManyResult:
    """Algorithm 1 over ``K`` masks; per-mask arrays, latents in :attr:`GraphIndex.latents` order.

    Attributes
    ----------
    index : the graph's :class:`GraphIndex`.
    shared : ``(K, n_latents)`` bool, ``CA`` membership.
    c : ``(K, n_latents)`` bool, ``c`` membership.
    private_masked : ``(K, n_latents)`` bool, latents in ``info(x_m) - CA``.
    dim_c, noise_shared, noise_private_masked, noise_private_visible : ``(K,)``
        int, as in :class:`SharedLatents`.
    n_c, n_shared : ``(K,)`` int, number of nodes of ``c`` and ``CA``.
    abstraction : ``(K,)`` float, :func:`abstraction_score` of each ``c`` (NaN if empty).
    noise_latent_total : int.
    """

    index: GraphIndex
    shared: np.ndarray
    c: np.ndarray
    private_masked: np.ndarray
    dim_c: np.ndarray
    noise_shared: np.ndarray
    noise_private_masked: np.ndarray
    noise_private_visible: np.ndarray
    n_c: np.ndarray
    n_shared: np.ndarray
    abstraction: np.ndarray
    noise_latent_total: int

    def __len__(self) -> int:
        return self.shared.shape[0]

    def c_ids(self, i: int) -> tuple[str, ...]:
        """Sorted ids of the nodes of ``c`` of mask ``i``."""
        return tuple(sorted(self.index.latents[j] for j in np.flatnonzero(self.c[i])))

    def shared_ids(self, i: int) -> tuple[str, ...]:
        """Sorted ids of ``CA`` of mask ``i``."""
        return tuple(sorted(self.index.latents[j] for j in np.flatnonzero(self.shared[i])))

    @property
    def ca_abstraction(self) -> np.ndarray:
        """``(K,)`` abstraction of ``CA``'s noise: ``1 - sum_CA d_v l_v / sum_CA d_v / l_max`` (NaN if CA is empty).

        The theory's *A* of what a code of the visible part must hold
        (:mod:`hlvm.rules`): 1 when ``CA`` is the root alone, lower the more
        low-level noise it shares.
        """
        idx = self.index
        top = idx.max_latent_level
        w = self.shared @ idx.noise_dim  # (K,)
        wl = self.shared @ (idx.noise_dim * idx.level)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(w > 0, 1.0 - wl / np.where(w > 0, w, 1) / top if top > 0 else 1.0, np.nan)

    def c_level_counts(self) -> np.ndarray:
        """``(max_latent_level + 1,)`` number of ``c`` nodes at each level, summed over the masks."""
        lv = self.index.level
        return np.bincount(lv[np.nonzero(self.c)[1]], minlength=self.index.max_latent_level + 1)


def locate_many(
    graph: nx.DiGraph | GraphIndex,
    masks: np.ndarray,
    *,
    chunk: int = 1024,
    on_chunk: Callable[[int], None] | None = None,
) -> ManyResult:
    """Algorithm 1 for ``K`` masks at once (see the module docstring for the algebra).

    Parameters
    ----------
    graph : the graph, or its :class:`GraphIndex` to skip rebuilding it.
    masks : ``(K, H, W)`` bool, ``True`` = masked; every mask non-empty and proper.
    chunk : masks per matrix product (bounds memory at ``chunk * H * W`` floats).
    on_chunk : called with the number of masks done after each chunk (progress bars).

    Raises
    ------
    MaskError : wrong shape, or an empty or full mask (naming its index).
    """
    index = graph if isinstance(graph, GraphIndex) else index_graph(graph)
    masks = np.asarray(masks)
    h, w = index.shape
    if masks.ndim != 3 or masks.shape[1:] != (h, w):
        raise MaskError(f"masks must be (K, {h}, {w}) for this image, got shape {masks.shape}")
    if masks.dtype != bool:
        if not np.isin(masks, (0, 1)).all():
            raise MaskError("mask values must be 0 (visible) or 1 (masked)")
        masks = masks.astype(bool)
    k = masks.shape[0]
    flat = masks.reshape(k, h * w)  # (K, P), row-major pixels as in index.observed
    counts = flat.sum(axis=1)
    for bad, what in ((counts == 0, "empty"), (counts == h * w, "full")):
        if bad.any():
            raise MaskError(f"mask #{int(np.flatnonzero(bad)[0])} is {what}")
    n_lat = len(index.latents)
    shared = np.zeros((k, n_lat), dtype=bool)
    c = np.zeros((k, n_lat), dtype=bool)
    priv_m = np.zeros((k, n_lat), dtype=bool)
    for start in range(0, k, chunk):
        m = flat[start : start + chunk].T.astype(np.float32)  # (P, k')
        masked_desc = (index.desc @ m).T  # (k', n_latents): masked descendants of each latent
        # Counts are integers <= H*W, exact in float32 up to 2**24 pixels.
        has_m = masked_desc > 0.5
        has_v = masked_desc < index.n_desc[None, :] - 0.5
        ca = has_m & has_v
        child_in_ca = (index.children @ ca.T.astype(np.float32)).T > 0.5  # (k', n_latents)
        shared[start : start + chunk] = ca
        c[start : start + chunk] = ca & ~child_in_ca
        priv_m[start : start + chunk] = has_m & ~has_v
        if on_chunk is not None:
            on_chunk(min(start + chunk, k))
    # Latents whose every observed descendant is visible form the latent part of s_mc.
    has_any = index.n_desc > 0
    priv_v = ~shared & ~priv_m & has_any[None, :]
    n_c = c.sum(axis=1)
    lv = index.level
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_level = (c @ lv) / n_c
    top = index.max_latent_level
    abstraction = np.where(n_c > 0, 1.0 - mean_level / top if top > 0 else 1.0, np.nan)
    pixel_noise_m = flat @ index.pixel_noise_dim
    return ManyResult(
        index=index,
        shared=shared,
        c=c,
        private_masked=priv_m,
        dim_c=c @ index.dim,
        noise_shared=shared @ index.noise_dim,
        noise_private_masked=priv_m @ index.noise_dim + pixel_noise_m,
        noise_private_visible=priv_v @ index.noise_dim + (int(index.pixel_noise_dim.sum()) - pixel_noise_m),
        n_c=n_c,
        n_shared=shared.sum(axis=1),
        abstraction=abstraction,
        noise_latent_total=int(index.noise_dim.sum()),
    )
