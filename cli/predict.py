"""``hlvm predict``: the theory's curves over mask ratio x masking unit (thin wrapper of :func:`hlvm.predict.predict`)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich import box
from rich.table import Table

from hlvm.cli._common import console, err_console, user_errors


def _parse_list(text: str, cast: type, what: str) -> tuple[Any, ...]:
    from hlvm.errors import ConfigError

    try:
        return tuple(cast(x.strip()) for x in text.split(",") if x.strip())
    except ValueError:
        raise ConfigError(f"--{what} must be a comma-separated list of {cast.__name__}s, got {text!r}") from None


def _num(x: float, fmt: str = ".3f") -> str:
    return "-" if isinstance(x, float) and math.isnan(x) else format(x, fmt)


def predict(
    graph: Annotated[Optional[Path], typer.Option(help="Graph JSON (node-link); default: the default 'hlvm simulate' graph.")] = None,
    ratios: Annotated[str, typer.Option(help="Comma-separated mask ratios in (0, 1).")] = "0.1,0.25,0.4,0.5,0.75,0.9",
    units: Annotated[Optional[str], typer.Option(help="Comma-separated masking units in pixels; default: every power of the branching leaving >= 2 units.")] = None,
    k: Annotated[int, typer.Option(help="Random masks per (kind, ratio, unit) cell.")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the masks (each cell draws from its own stream).")] = 0,
    kinds: Annotated[str, typer.Option("--mask-kinds", help="Comma-separated mask kinds: random (MAE's uniform units), aligned (units depth-first through the hierarchy's blocks), block (BEiT's rectangles), complementary (pairs with disjoint visible sets), variable (ratio drawn per mask from ratio +- --spread).")] = "random,aligned",
    spread: Annotated[float, typer.Option(help="Half-width of the ratio range of variable masks.")] = 0.2,
    out: Annotated[Optional[Path], typer.Option(help="Output folder (default runs/predict-<time>).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a non-empty --out.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Predict from the graph alone which latents c random masks share; judge docs/theory.md's claims 2 and 3.

    Writes predict.csv, figure4.csv, verdicts.json, config.json, heatmap.png and lines.png.
    """
    with user_errors():
        from hlvm import predict as lib
        from hlvm.cli.locate import load_graph
        from hlvm.io import atomic_dir, new_run_dir, provenance

        cfg = lib.PredictConfig(
            ratios=_parse_list(ratios, float, "ratios"),
            units=None if units is None else _parse_list(units, int, "units"),
            k=k, seed=seed, kinds=_parse_list(kinds, str, "kinds"), spread=spread,
        )
        g, source = load_graph(graph)
        unit_list = cfg.units if cfg.units is not None else lib.default_units(g)
        out_dir = out if out is not None else new_run_dir(Path("runs"), "predict")
        n_cells = len(cfg.kinds) * len(cfg.ratios) * len(unit_list)
        with atomic_dir(out_dir, overwrite) as tmp:
            with Progress(TextColumn("predict"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                          console=err_console, transient=True, disable=quiet) as bar:
                task = bar.add_task("cells", total=n_cells)
                rows = lib.predict(g, cfg.ratios, unit_list, cfg.k, cfg.seed, kinds=cfg.kinds, spread=cfg.spread,
                                   on_cell=lambda _row: bar.advance(task))
            fig4 = lib.figure4_rows(g) if lib.graph_branching(g) is not None else []
            verdict = lib.verdicts(rows)
            config = {**cfg.to_dict(), "units": list(unit_list), "graph": source, "provenance": provenance()}
            lib.write_outputs(tmp, g, rows, fig4, verdict, config)

    n_levels = sum(1 for c in rows[0] if c.startswith("c_level_"))
    for kind in cfg.kinds:
        table = Table(title=f"Theory's c over {kind} masks ({cfg.k} per cell)", box=box.SIMPLE_HEAD)
        for col in ("ratio", "unit", "masked", "|c|", "dim_c", "shared", "abstr.", "se", "c levels"):
            table.add_column(col, justify="left" if col == "c levels" else "right")
        for r in (r for r in rows if r["mask_kind"] == kind):
            feasible = r["feasible"]
            # Only the levels holding c nodes: "l3:1.00" = every node of c at level 3.
            levels = " ".join(f"l{lv}:{r[f'c_level_{lv}']:.2f}" for lv in range(n_levels)
                              if r[f"c_level_{lv}"] >= 0.005) if feasible else "-"
            table.add_row(str(r["mask_ratio"]), str(r["mask_unit"]), f"{r['n_masked_units']}/{r['n_units']}",
                          _num(r["mean_c_nodes"], ".1f"), _num(r["mean_dim_c"], ".1f"),
                          _num(r["frac_noise_shared"], ".3f"), _num(r["abstraction"]),
                          _num(r["abstraction_se"], ".4f"), levels)
        console.print(table)
    console.print("shared: mean fraction of latent noise in CA; abstr.: mean abstraction of c (1 = root alone, "
                  "0 = deepest latents); c levels: share of c's nodes per level", markup=False)
    if fig4:
        t4 = Table(title="Figure-4 masks: one whole subtree, a pixel less, a pixel more")
        for col in ("mask", "masked", "c", "dim_c", "abstraction"):
            t4.add_column(col)
        for r in fig4:
            t4.add_row(r["mask"], str(r["n_masked"]), r["c"], str(r["dim_c"]), _num(r["abstraction"]))
        console.print(t4)
    for v in verdict:
        console.print(v["statement"], markup=False)
    console.print(f"wrote: {out_dir}", markup=False)
