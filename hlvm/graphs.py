"""Hierarchical generating graphs: the grid hierarchy, validation, JSON I/O.

A graph is a ``networkx.DiGraph`` whose nodes carry the attributes of the
graph-file contract (DESIGN.md):

- ``kind``: ``"latent"`` or ``"observed"``;
- ``level``: 0 at the top; observed nodes sit below the deepest latent level;
- ``dim``: the node's dimension;
- ``noise_dim``: the dimension of its own exogenous noise ``eps_v``;
- ``pos``: ``(row, col)`` in the image grid (observed nodes only).

Assumption 1 of Kong et al. (2023) makes every node an invertible function of
its parents and its noise, so ``dim(v) = sum(dim(p) for p in Pa(v)) +
noise_dim(v)``. Observed nodes are pixels; their ``dim`` is the image's channel
count, the same for every pixel.

Everything here is pure: networkx and numpy, no torch, and apart from
:func:`read_graph` / :func:`write_graph` no I/O. Generated graphs are frozen.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np

from hlvm.errors import ConfigError, GraphError
from hlvm.io import read_json

__all__ = [
    "GridSpec",
    "grid_hierarchy",
    "latent_id",
    "observed_id",
    "validate_graph",
    "read_graph",
    "write_graph",
    "graph_to_json",
    "graph_from_json",
    "latent_nodes",
    "observed_nodes",
    "parents",
    "topological_order",
    "image_shape",
    "id_grid",
    "levels",
]

LATENT = "latent"
OBSERVED = "observed"


def latent_id(level: int, row: int, col: int) -> str:
    """Id of the latent at ``(row, col)`` of the ``b**level``-wide grid of ``level``."""
    return f"z_{level}_{row}_{col}"


def observed_id(row: int, col: int) -> str:
    """Id of the observed pixel at ``(row, col)``."""
    return f"x_{row}_{col}"


@dataclass(frozen=True)
class GridSpec:
    """Options of :func:`grid_hierarchy`; validates itself.

    Parameters
    ----------
    depth : number of latent levels (>= 1); the image is ``branching**depth`` wide.
    branching : each latent splits its block into ``branching x branching`` children (>= 2).
    root_dim : dimension of the root latent (>= 1).
    noise_dim : noise dimension of every non-root latent (>= 1).
    obs_noise_dim : noise dimension added at each pixel (>= 1).
    extra_parent_prob : probability that a node also takes a spatially adjacent
        latent of the level above as a second parent.
    seed : seed of the draws that choose extra parents.
    """

    depth: int = 4
    branching: int = 2
    root_dim: int = 2
    noise_dim: int = 1
    obs_noise_dim: int = 1
    extra_parent_prob: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        checks = [
            (self.depth >= 1, f"depth must be >= 1, got {self.depth}"),
            (self.branching >= 2, f"branching must be >= 2, got {self.branching}"),
            (self.root_dim >= 1, f"root_dim must be >= 1, got {self.root_dim}"),
            (self.noise_dim >= 1, f"noise_dim must be >= 1, got {self.noise_dim}"),
            (self.obs_noise_dim >= 1, f"obs_noise_dim must be >= 1, got {self.obs_noise_dim}"),
            (
                0.0 <= self.extra_parent_prob <= 1.0,
                f"extra_parent_prob must be in [0, 1], got {self.extra_parent_prob}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        for name in ("depth", "branching", "root_dim", "noise_dim", "obs_noise_dim", "seed"):
            if not isinstance(getattr(self, name), int | np.integer):
                raise ConfigError(f"{name} must be an integer, got {getattr(self, name)!r}")

    @property
    def side(self) -> int:
        """Image height and width in pixels."""
        return self.branching**self.depth

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _extra_parent_candidates(level: int, row: int, col: int, b: int) -> list[tuple[int, int]]:
    """Latents of ``level - 1`` spatially adjacent to block ``(row, col)`` of ``level``.

    The block touches a neighbouring parent block when it lies on its own
    parent's border on that side; those neighbours, inside the grid, qualify.
    """
    n_above = b ** (level - 1)
    pr, pc = row // b, col // b
    out = []
    if row % b == 0 and pr > 0:
        out.append((pr - 1, pc))
    if row % b == b - 1 and pr < n_above - 1:
        out.append((pr + 1, pc))
    if col % b == 0 and pc > 0:
        out.append((pr, pc - 1))
    if col % b == b - 1 and pc < n_above - 1:
        out.append((pr, pc + 1))
    return out


def grid_hierarchy(spec: GridSpec | None = None, **options: Any) -> nx.DiGraph:
    """Build the grid hierarchy of ``spec`` (or of ``GridSpec(**options)``).

    Level ``l`` holds ``b**l x b**l`` latents, each covering a square block of
    the image; the ``b**depth x b**depth`` observed pixels sit at level
    ``depth``. With ``extra_parent_prob > 0`` a node on the border of its
    parent's block may also take the adjacent latent across that border as a
    second parent, so low-level causes are shared and the graph is a DAG,
    not a tree.

    Examples
    --------
    >>> g = grid_hierarchy(depth=2, branching=2)
    >>> g.number_of_nodes(), image_shape(g)
    (21, (4, 4, 4))
    >>> sorted(g.successors("z_0_0_0"))
    ['z_1_0_0', 'z_1_0_1', 'z_1_1_0', 'z_1_1_1']
    """
    if spec is None:
        spec = GridSpec(**options)
    elif options:
        raise TypeError("pass either a GridSpec or keyword options, not both")
    b, depth = spec.branching, spec.depth
    rng = np.random.default_rng(spec.seed)
    g = nx.DiGraph()

    def in_dim(node_parents: list[str]) -> int:
        return sum(g.nodes[p]["dim"] for p in node_parents)

    g.add_node(
        latent_id(0, 0, 0), kind=LATENT, level=0, dim=spec.root_dim, noise_dim=spec.root_dim, block=(0, 0)
    )
    pixel_parents: dict[tuple[int, int], list[str]] = {}
    for level in range(1, depth + 1):
        n = b**level
        for row in range(n):
            for col in range(n):
                pars = [latent_id(level - 1, row // b, col // b)]
                candidates = _extra_parent_candidates(level, row, col, b)
                # One uniform draw per node with candidates keeps the stream
                # aligned whatever the probability.
                if candidates:
                    u = rng.random()
                    pick = int(rng.integers(len(candidates)))
                    if u < spec.extra_parent_prob:
                        pars.append(latent_id(level - 1, *candidates[pick]))
                if level < depth:
                    node = latent_id(level, row, col)
                    g.add_node(
                        node,
                        kind=LATENT,
                        level=level,
                        dim=in_dim(pars) + spec.noise_dim,
                        noise_dim=spec.noise_dim,
                        block=(row, col),
                    )
                    g.add_edges_from((p, node) for p in pars)
                else:
                    pixel_parents[(row, col)] = pars
    # Every pixel has the image's channel count: its noise tops up its parents' dims.
    channels = max(in_dim(p) for p in pixel_parents.values()) + spec.obs_noise_dim
    for (row, col), pars in pixel_parents.items():
        node = observed_id(row, col)
        g.add_node(node, kind=OBSERVED, level=depth, dim=channels, noise_dim=channels - in_dim(pars), pos=(row, col))
        g.add_edges_from((p, node) for p in pars)
    g.graph.update(generator="grid_hierarchy", **spec.to_dict())
    validate_graph(g)
    return nx.freeze(g)


# ----------------------------------------------------------------------------- queries


def latent_nodes(g: nx.DiGraph) -> list[str]:
    """Latent node ids in topological (then lexicographic) order."""
    return [v for v in topological_order(g) if g.nodes[v]["kind"] == LATENT]


def observed_nodes(g: nx.DiGraph) -> list[str]:
    """Observed node ids in row-major pixel order."""
    obs = [v for v in g.nodes if g.nodes[v]["kind"] == OBSERVED]
    return sorted(obs, key=lambda v: tuple(g.nodes[v]["pos"]))


def parents(g: nx.DiGraph, v: str) -> list[str]:
    """Parents of ``v`` in the fixed order their values are concatenated in."""
    return sorted(g.predecessors(v), key=lambda p: (g.nodes[p]["level"], p))


def topological_order(g: nx.DiGraph) -> list[str]:
    """A deterministic topological order: by level, then by id."""
    return list(nx.lexicographical_topological_sort(g, key=lambda v: (g.nodes[v]["level"], v)))


def levels(g: nx.DiGraph) -> dict[int, list[str]]:
    """Node ids of each level, in topological order."""
    out: dict[int, list[str]] = {}
    for v in topological_order(g):
        out.setdefault(g.nodes[v]["level"], []).append(v)
    return dict(sorted(out.items()))


def image_shape(g: nx.DiGraph) -> tuple[int, int, int]:
    """``(C, H, W)`` of the images the graph's observed nodes form."""
    obs = observed_nodes(g)
    rows = [g.nodes[v]["pos"][0] for v in obs]
    cols = [g.nodes[v]["pos"][1] for v in obs]
    return g.nodes[obs[0]]["dim"], max(rows) + 1, max(cols) + 1


def id_grid(g: nx.DiGraph) -> np.ndarray:
    """``(H, W)`` object array of observed node ids, indexed by pixel position."""
    _, h, w = image_shape(g)
    grid = np.empty((h, w), dtype=object)
    for v in observed_nodes(g):
        grid[tuple(g.nodes[v]["pos"])] = v
    return grid


# ----------------------------------------------------------------------------- validation


def _is_int(x: Any) -> bool:
    return isinstance(x, int | np.integer) and not isinstance(x, bool)


def validate_graph(g: nx.DiGraph) -> None:
    """Check Assumption 1 and the graph contract; raise :class:`GraphError` on the first violation.

    Checked, in order: a directed graph with nodes; every node's attributes
    (``kind``, integer ``level``, ``dim >= 1``, ``noise_dim >= 0``); acyclic;
    no edge between observed nodes; observed nodes have no children; every
    dim adds up; observed nodes sit below every latent; all observed nodes
    share one dim (the channel count); observed positions form a full grid.
    """
    if not isinstance(g, nx.DiGraph) or g.is_multigraph():
        raise GraphError("graph must be a directed graph without parallel edges")
    if g.number_of_nodes() == 0:
        raise GraphError("graph has no nodes")
    for v, a in g.nodes(data=True):
        kind = a.get("kind")
        if kind not in (LATENT, OBSERVED):
            raise GraphError(f"node {v!r}: kind must be 'latent' or 'observed', got {kind!r}")
        for key, low in (("level", 0), ("dim", 1), ("noise_dim", 0)):
            if key not in a:
                raise GraphError(f"node {v!r}: missing attribute {key!r}")
            if not _is_int(a[key]) or a[key] < low:
                raise GraphError(f"node {v!r}: {key} must be an integer >= {low}, got {a[key]!r}")
        if kind == OBSERVED:
            pos = a.get("pos")
            if pos is None or len(pos) != 2 or not all(_is_int(p) and p >= 0 for p in pos):
                raise GraphError(f"observed node {v!r}: pos must be [row, col] of non-negative integers, got {pos!r}")
    if not nx.is_directed_acyclic_graph(g):
        cycle = nx.find_cycle(g)
        raise GraphError(f"graph has a cycle: {' -> '.join(str(e[0]) for e in cycle)} -> {cycle[0][0]}")
    for u, v in g.edges:
        if g.nodes[u]["kind"] == OBSERVED:
            what = "an observed-observed edge" if g.nodes[v]["kind"] == OBSERVED else "a child"
            raise GraphError(f"observed node {u!r} has {what} ({u!r} -> {v!r})")
    for v, a in g.nodes(data=True):
        expected = sum(g.nodes[p]["dim"] for p in g.predecessors(v)) + a["noise_dim"]
        if a["dim"] != expected:
            raise GraphError(
                f"node {v!r}: dims do not add up: dim {a['dim']} != parents' dims + noise_dim = {expected}"
            )
    obs = [v for v in g.nodes if g.nodes[v]["kind"] == OBSERVED]
    lat = [v for v in g.nodes if g.nodes[v]["kind"] == LATENT]
    if not obs:
        raise GraphError("graph has no observed nodes")
    if not lat:
        raise GraphError("graph has no latent nodes")
    deepest = max(g.nodes[v]["level"] for v in lat)
    for v in obs:
        if g.nodes[v]["level"] <= deepest:
            raise GraphError(
                f"observed node {v!r}: level {g.nodes[v]['level']} is not below the deepest latent level {deepest}"
            )
    channels = g.nodes[obs[0]]["dim"]
    for v in obs:
        if g.nodes[v]["dim"] != channels:
            raise GraphError(f"observed node {v!r}: dim {g.nodes[v]['dim']} differs from {obs[0]!r}'s {channels}")
    seen: dict[tuple[int, int], str] = {}
    for v in obs:
        pos = tuple(int(p) for p in g.nodes[v]["pos"])
        if pos in seen:
            raise GraphError(f"observed nodes {seen[pos]!r} and {v!r} share pos {list(pos)}")
        seen[pos] = v
    h = max(p[0] for p in seen) + 1
    w = max(p[1] for p in seen) + 1
    if len(seen) != h * w:
        missing = next((r, c) for r in range(h) for c in range(w) if (r, c) not in seen)
        raise GraphError(f"observed positions do not form a full {h}x{w} grid: no pixel at {list(missing)}")


# ----------------------------------------------------------------------------- JSON


def graph_to_json(g: nx.DiGraph) -> dict[str, Any]:
    """Node-link dict of ``g`` (networkx's layout, edges under ``"links"``)."""
    nodes = []
    for v in topological_order(g):
        a = dict(g.nodes[v])
        for key in ("pos", "block"):
            if key in a:
                a[key] = [int(x) for x in a[key]]
        nodes.append({"id": v, **{k: (int(x) if _is_int(x) else x) for k, x in a.items()}})
    links = [{"source": p, "target": v} for v in topological_order(g) for p in parents(g, v)]
    graph_attrs = {k: (x.item() if isinstance(x, np.generic) else x) for k, x in g.graph.items()}
    return {"directed": True, "multigraph": False, "graph": graph_attrs, "nodes": nodes, "links": links}


def graph_from_json(data: Any) -> nx.DiGraph:
    """Build and validate a graph from a node-link dict (``"links"`` or ``"edges"``)."""
    if not isinstance(data, dict) or not isinstance(data.get("nodes"), list):
        raise GraphError("graph JSON must be an object with a 'nodes' list (networkx node-link format)")
    edges = data.get("links", data.get("edges", []))
    if not isinstance(edges, list):
        raise GraphError("graph JSON: 'links' must be a list")
    if data.get("multigraph"):
        raise GraphError("graph JSON: multigraphs are not supported")
    g = nx.DiGraph()
    g.graph.update(data.get("graph") or {})
    for i, node in enumerate(data["nodes"]):
        if not isinstance(node, dict) or "id" not in node:
            raise GraphError(f"graph JSON: node #{i} has no 'id'")
        attrs = {k: x for k, x in node.items() if k != "id"}
        for key in ("pos", "block"):
            if isinstance(attrs.get(key), list):
                attrs[key] = tuple(attrs[key])
        if node["id"] in g:
            raise GraphError(f"graph JSON: node {node['id']!r} appears twice")
        g.add_node(node["id"], **attrs)
    for i, e in enumerate(edges):
        if not isinstance(e, dict) or "source" not in e or "target" not in e:
            raise GraphError(f"graph JSON: link #{i} needs 'source' and 'target'")
        for end in ("source", "target"):
            if e[end] not in g:
                raise GraphError(f"graph JSON: link #{i} names unknown node {e[end]!r}")
        g.add_edge(e["source"], e["target"])
    validate_graph(g)
    return nx.freeze(g)


def write_graph(g: nx.DiGraph, path: str | os.PathLike[str]) -> None:
    """Write ``g`` as node-link JSON (atomically: a temporary file, then rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(graph_to_json(g), indent=1) + "\n")
    os.replace(tmp, path)


def read_graph(path: str | os.PathLike[str]) -> nx.DiGraph:
    """Read and validate a node-link JSON graph file; bad files raise :class:`GraphError`."""
    data = read_json(path, "graph file", GraphError, require_object=False)  # graph_from_json says what a graph needs
    try:
        return graph_from_json(data)
    except GraphError as e:
        raise GraphError(f"{path}: {e}") from None

