"""``hlvm simulate``: sample a hierarchy to disk (thin wrapper of :func:`hlvm.simulate.simulate_to_dir`)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.table import Table

from hlvm.cli._common import console, user_errors

if TYPE_CHECKING:
    import networkx as nx

#: From this many samples on, a progress bar shows.
PROGRESS_FROM = 50_000


def _size(nbytes: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if nbytes < 1024 or unit == "GiB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024  # type: ignore[assignment]
    raise AssertionError("unreachable")


def summary_table(g: nx.DiGraph) -> Table:
    """One row per level: node count, dims and noise dims (per node where they agree, else a range)."""
    from hlvm.graphs import levels

    table = Table(title="Hierarchy")
    for col in ("level", "kind", "nodes", "dim", "noise dim", "total dim"):
        table.add_column(col, justify="left" if col == "kind" else "right")

    def spread(xs: list[int]) -> str:
        return str(xs[0]) if min(xs) == max(xs) else f"{min(xs)}-{max(xs)}"

    for level, nodes in levels(g).items():
        kinds = sorted({g.nodes[v]["kind"] for v in nodes})
        dims = [g.nodes[v]["dim"] for v in nodes]
        noise = [g.nodes[v]["noise_dim"] for v in nodes]
        table.add_row(str(level), "/".join(kinds), str(len(nodes)), spread(dims), spread(noise), str(sum(dims)))
    return table


def simulate(
    depth: Annotated[int, typer.Option(help="Latent levels; the image is branching**depth pixels wide.")] = 4,
    branching: Annotated[int, typer.Option(help="Each latent splits its block into branching x branching children.")] = 2,
    n: Annotated[int, typer.Option("--n", "-n", help="Number of samples.")] = 10_000,
    root_dim: Annotated[int, typer.Option(help="Dimension of the root latent.")] = 2,
    noise_dim: Annotated[int, typer.Option(help="Noise dimension of every non-root latent.")] = 1,
    obs_noise_dim: Annotated[int, typer.Option(help="Noise dimension added at each pixel.")] = 1,
    extra_parent_prob: Annotated[
        float, typer.Option(help="Probability that a node also takes an adjacent latent of the level above as a parent.")
    ] = 0.0,
    graph_seed: Annotated[int, typer.Option(help="Seed of the extra-parent draws.")] = 0,
    graph: Annotated[
        Optional[Path], typer.Option("--graph", help="A user graph (node-link JSON) instead of the grid hierarchy.")
    ] = None,
    mixing: Annotated[str, typer.Option(help="Per-node map: 'mlp' (leaky-ReLU MLP) or 'linear'.")] = "mlp",
    layers: Annotated[int, typer.Option(help="Square layers per node map.")] = 2,
    slope: Annotated[float, typer.Option(help="Leaky-ReLU negative slope, in (0, 1].")] = 0.5,
    sv_min: Annotated[float, typer.Option(help="Smallest singular value of the weight matrices.")] = 0.7,
    sv_max: Annotated[float, typer.Option(help="Largest singular value of the weight matrices.")] = 1.4,
    max_cond: Annotated[float, typer.Option(help="Weight matrices are redrawn until their condition number is at most this.")] = 1.8,
    noise: Annotated[str, typer.Option(help="Noise law: gaussian, uniform or laplace (unit variance).")] = "gaussian",
    seed: Annotated[int, typer.Option(help="Seed of the mixing and the noise.")] = 0,
    sample_seed: Annotated[
        Optional[int], typer.Option(help="Seed of the noise alone: the same process (--seed), a fresh draw of samples.")
    ] = None,
    dtype: Annotated[str, typer.Option(help="dtype of the arrays on disk: float32 or float64.")] = "float32",
    out: Annotated[Optional[Path], typer.Option(help="Output folder (default: a new folder under runs/).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing non-empty --out.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Go ahead with a run over the size limits (64 GiB of output, a graph of 1,000,000 nodes).")] = False,
) -> None:
    """Sample images, every latent and every noise of a hierarchy, and write them to a folder."""
    from hlvm.errors import ConfigError
    from hlvm.graphs import GridSpec, image_shape
    from hlvm.io import check_out_dir, check_writable, new_run_dir
    from hlvm.mixing import MixingSpec
    from hlvm.simulate import SimulateConfig, check_free_space, output_size, simulate_to_dir

    with user_errors():
        grid = GridSpec(
            depth=depth,
            branching=branching,
            root_dim=root_dim,
            noise_dim=noise_dim,
            obs_noise_dim=obs_noise_dim,
            extra_parent_prob=extra_parent_prob,
            seed=graph_seed,
        )
        mix = MixingSpec(kind=mixing, layers=layers, slope=slope, sv_min=sv_min, sv_max=sv_max, max_cond=max_cond)
        cfg = SimulateConfig(grid=grid, mixing=mix, noise=noise, n=n, seed=seed, sample_seed=sample_seed, dtype=dtype,
                             graph=str(graph) if graph is not None else None)
        target = out if out is not None else new_run_dir("runs", "simulate")
        check_out_dir(target, overwrite)
        check_writable(target)
        # Said before the graph is built: a deep hierarchy takes minutes to build before any sample.
        size = output_size(cfg)
        too_big = size.over_limits()
        if too_big and not yes:
            raise ConfigError(f"{size.describe()}; {'; '.join(too_big)}: pass --yes to go ahead, or lower --depth or --n")
        check_free_space(target, size.nbytes)
        console.print(f"simulating {size.describe()} -> {target}", markup=False)
        g = cfg.build_graph()
        start = time.perf_counter()
        path = simulate_to_dir(cfg, target, overwrite=overwrite, progress=n >= PROGRESS_FROM, graph=g)
        elapsed = time.perf_counter() - start

    c, h, w = image_shape(g)
    console.print(summary_table(g))
    size = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
    console.print(f"image shape (C, H, W): ({c}, {h}, {w})   samples: {n:,}   seed: {seed}"
                  + ("" if sample_seed is None else f"   sample seed: {sample_seed}"))
    console.print(f"wrote {path} ({_size(size)} on disk) in {elapsed:.1f} s ({n / max(elapsed, 1e-9):,.0f} samples/s)")
