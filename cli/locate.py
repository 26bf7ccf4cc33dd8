"""``hlvm locate-c``: which latents a mask shares (thin wrapper of :func:`hlvm.locate.locate`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich.table import Table

from hlvm.cli._common import console, user_errors

if TYPE_CHECKING:
    import networkx as nx

    from hlvm.locate import SharedLatents
    from hlvm.masks import Mask

#: Widest image drawn as a text picture; larger ones are summarised.
MAX_DRAW = 64
#: Node ids listed per table cell before "... +N more".
MAX_IDS = 8


def load_graph(graph: Path | None, spec: dict[str, Any] | None = None, spec_path: Path | None = None) -> tuple[nx.DiGraph, str]:
    """The graph to use and where it came from: ``--graph``, else the spec's ``"graph"``, else the default.

    A relative ``"graph"`` path in a spec is read relative to the spec's folder.
    The default is the graph ``hlvm simulate`` builds on its defaults,
    ``grid_hierarchy(GridSpec())``.
    """
    from hlvm.errors import MaskError
    from hlvm.graphs import GridSpec, grid_hierarchy, read_graph

    if graph is not None:
        return read_graph(graph), str(graph)
    named = (spec or {}).get("graph")
    if named is not None:
        if not isinstance(named, str) or not named:
            raise MaskError(f"'graph' in a mask spec must be a path, got {named!r}")
        path = Path(named)
        if not path.is_absolute() and spec_path is not None:
            path = spec_path.parent / path
        return read_graph(path), str(path)
    return grid_hierarchy(GridSpec()), "default (grid_hierarchy(GridSpec()): depth 4, branching 2)"


def _ids(nodes: list[str]) -> str:
    from hlvm.locate import natural_sorted

    nodes = natural_sorted(nodes)
    shown = ", ".join(nodes[:MAX_IDS])
    return shown + (f", ... +{len(nodes) - MAX_IDS} more" if len(nodes) > MAX_IDS else "")


def result_table(g: nx.DiGraph, r: SharedLatents) -> Table:
    """Rich table of ``c``, ``CA``, ``s_m``, ``s_mc``: one row per set and level, with dims."""
    table = Table(title="What the mask shares (Algorithm 1 and 2)")
    for col, just in (("set", "left"), ("level", "right"), ("nodes", "right"), ("dim", "right"),
                      ("noise dim", "right"), ("ids", "left")):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    sets = (("c", r.c), ("CA (shared)", r.shared), ("s_m (masked-private)", r.s_m),
            ("s_mc (visible-private)", r.s_mc))
    for name, nodes in sets:
        if not nodes:
            table.add_row(name, "-", "0", "0", "0", "(none)")
            continue
        by_level: dict[int, list[str]] = {}
        for v in nodes:
            by_level.setdefault(r.levels[v], []).append(v)
        for i, (level, vs) in enumerate(sorted(by_level.items())):
            table.add_row(
                name if i == 0 else "", str(level), str(len(vs)),
                str(sum(g.nodes[v]["dim"] for v in vs)), str(sum(g.nodes[v]["noise_dim"] for v in vs)), _ids(vs),
            )
        table.add_section()
    return table


def picture(mask: Mask) -> str:
    """Text picture of the image grid: ``#`` masked, ``.`` visible (unit grid if the image is too wide)."""
    h, w = mask.shape
    if w <= MAX_DRAW:
        return mask.render("#", ".")
    if w // mask.unit <= MAX_DRAW:
        units = mask.units
        rows = "\n".join(" ".join("#" if x else "." for x in row) for row in units)
        return f"(one character per {mask.unit}x{mask.unit} unit)\n{rows}"
    return f"({h}x{w} image: too large to draw)"


def locate_c(
    mask: Annotated[Path, typer.Option("--mask", help="Mask spec JSON: {'masked': [...]}, {'grid': [[0,1,...],...]} or {'ratio': r, 'patch_size': u, 'seed': s}; may name its 'graph'.")],
    graph: Annotated[Optional[Path], typer.Option(help="Graph JSON (node-link); default: the spec's 'graph', else the default 'hlvm simulate' graph.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object (c, shared, s_m, s_mc, dims) instead of tables.")] = False,
) -> None:
    """Locate c, the shared latents CA and the private noises s_m, s_mc of a mask (docs/theory.md, Algorithms 1 and 2)."""
    with user_errors():
        from hlvm.graphs import id_grid
        from hlvm.locate import locate
        from hlvm.masks import load_spec, mask_from_spec

        spec = load_spec(mask)
        g, source = load_graph(graph, spec, mask)
        latents = [v for v, k in g.nodes(data="kind") if k == "latent"]
        m = mask_from_spec(spec, id_grid(g), latents)
        r = locate(g, m)
    if json_out:
        obj = {**r.to_json(), "graph": source,
               "mask": {"shape": list(m.shape), "unit": m.unit, "n_masked": m.n_masked, "ratio": m.ratio}}
        typer.echo(json.dumps(obj))
        return
    console.print(f"graph: {source}", markup=False)
    console.print(f"mask: {m.n_masked} of {m.grid.size} pixels masked (ratio {m.ratio:.3f}, unit {m.unit})",
                  markup=False)
    console.print(picture(m), markup=False)
    console.print(result_table(g, r))
    frac = r.frac_noise_shared
    console.print(
        f"dim_c = {r.dim_c}; shared noise dim = {r.noise_shared} ({frac:.1%} of latent noise); "
        f"dim s_m = {r.noise_private_masked}; dim s_mc = {r.noise_private_visible}; "
        f"abstraction of c = {'n/a' if not r.c else f'{r.abstraction:.3f}'}",
        markup=False,
    )
