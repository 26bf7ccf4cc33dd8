"""``hlvm sweep``: run (or resume) a grid of MAE trainings and measure what each recovers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from hlvm.cli._common import console, err_console, user_errors


def _floats(text: str, name: str) -> list[float]:
    from hlvm.errors import ConfigError

    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--{name} must be comma-separated numbers, got {text!r}") from None


def _ints(text: str, name: str) -> list[int]:
    from hlvm.errors import ConfigError

    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--{name} must be comma-separated integers, got {text!r}") from None


def _bottlenecks(text: str) -> list[int | str | None]:
    from hlvm.errors import ConfigError

    out: list[int | str | None] = []
    for x in text.split(","):
        x = x.strip().lower()
        if not x:
            continue
        if x in ("none", "null", "no"):
            out.append(None)
            continue
        if x == "dim_c":
            out.append(x)
            continue
        try:
            out.append(int(x))
        except ValueError:
            raise ConfigError(f"--bottlenecks must be integers, 'dim_c' or 'none', got {x!r}") from None
    return out


def _arms(text: str) -> list[dict]:
    from hlvm.errors import ConfigError

    out = []
    for item in _words(text):
        parts = item.split(":")
        if len(parts) not in (3, 4):
            raise ConfigError(f"--arms takes train_mask_kind:objective:bottleneck[:boundary_ignore] items, got {item!r}")
        kind, obj, d = parts[:3]
        arm = {"train_mask_kind": kind, "objective": obj, "bottleneck": _bottlenecks(d)[0] if d else None}
        if len(parts) == 4:
            try:
                arm["boundary_ignore"] = int(parts[3])
            except ValueError:
                raise ConfigError(f"--arms: boundary_ignore must be an integer, got {parts[3]!r}") from None
        out.append(arm)
    return out


def _controls(text: str) -> list[str]:
    words = _words(text)
    return [] if [w.lower() for w in words] == ["none"] else words


def _words(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def sweep(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="Study config JSON (SweepConfig fields); options below override it.")] = None,
    out: Annotated[Path | None, typer.Option(help="Results folder; an existing sweep folder is resumed. Default: a new runs/sweep-<time>.")] = None,
    ratios: Annotated[str | None, typer.Option(help="Mask ratios, comma-separated, e.g. 0.1,0.25,0.5,0.75,0.9.")] = None,
    units: Annotated[str | None, typer.Option(help="Masking units in pixels, comma-separated, e.g. 1,2,4.")] = None,
    seeds: Annotated[str | None, typer.Option(help="Training seeds, comma-separated.")] = None,
    objectives: Annotated[str | None, typer.Option(help="Objectives, comma-separated: mae, umae, mmae, mimae, cmim, umae_official, mmae_official.")] = None,
    bottlenecks: Annotated[str | None, typer.Option(help="Bottleneck widths, comma-separated; 'none' for no bottleneck; 'dim_c' for Theorem 2's width, resolved per cell to Algorithm 1's dim_c of the training masks (cells where dim_c varies between masks, as with random masks, are skipped and listed).")] = None,
    train_mask_kinds: Annotated[str | None, typer.Option(help="Training mask kinds, comma-separated: random (MAE's), aligned (whole hierarchy blocks), block, complementary, variable.")] = None,
    arms: Annotated[str | None, typer.Option(help="Trained arms instead of the product of training mask kinds, objectives and bottlenecks: comma-separated train_mask_kind:objective:bottleneck[:boundary_ignore], e.g. random:mae:none,aligned:mae:dim_c,random:mae:none:1.")] = None,
    controls: Annotated[str | None, typer.Option(help="Controls probed beside the trained points, comma-separated: pixels, untrained, oracle, pca, random_projection, linear_mae (default all; the last three are linear codes of each trained code's width); 'none' for none.")] = None,
    mask_kinds: Annotated[str | None, typer.Option(help="Evaluation mask kinds, comma-separated: random, aligned, block.")] = None,
    depth: Annotated[int | None, typer.Option(help="Latent levels of the grid hierarchy.")] = None,
    branching: Annotated[int | None, typer.Option(help="Branching of the grid hierarchy.")] = None,
    model: Annotated[str | None, typer.Option(help="Model config name (mlp is the fast path; vit_small_synth).")] = None,
    steps: Annotated[int | None, typer.Option(help="Training steps per point.")] = None,
    batch: Annotated[int | None, typer.Option("--batch-size", help="Training batch size (the config's batch).")] = None,
    blr: Annotated[float | None, typer.Option(help="Base learning rate (lr = blr * batch / 256).")] = None,
    n_train: Annotated[int | None, typer.Option(help="Simulated training samples.")] = None,
    n_eval: Annotated[int | None, typer.Option(help="Held-out samples per evaluation.")] = None,
    eval_masks: Annotated[int | None, typer.Option(help="Held-out masks per point and mask kind.")] = None,
    backend: Annotated[str, typer.Option(help="Where points run: process (a pool on this machine) or ray (Ray tasks, on this machine or a cluster).")] = "process",
    ray_address: Annotated[str | None, typer.Option(help="Ray cluster to join: auto (a 'ray start --head' here) or HOST:PORT; default: start Ray on this machine.")] = None,
    ray_data: Annotated[str | None, typer.Option(help="Ray: where points find their data: shared (every node mounts --out at the same path) or worker (each task simulates its data from the seeds on its node and sends its results back; no shared filesystem). Default: shared on this machine, worker with --ray-address.")] = None,
    cpus_per_point: Annotated[float | None, typer.Option(help="Ray: CPUs each point asks for (default 1); its torch threads.")] = None,
    gpus_per_point: Annotated[float | None, typer.Option(help="Ray: GPUs each point asks for (default 0).")] = None,
    workers: Annotated[int | None, typer.Option(help="process: worker processes (default: min(cores, points)); ray: most points in flight (default: all).")] = None,
    threads: Annotated[int | None, typer.Option(help="Torch threads per point (default: cores // workers; ray: its CPUs).")] = None,
    retries: Annotated[int, typer.Option(help="Attempts at a failed point after the first, before it is reported.")] = 2,
    report: Annotated[bool, typer.Option("--report/--no-report", help="Write the report (hlvm report) when the sweep finishes.")] = True,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
) -> None:
    """Train an MAE per grid point (ratio x unit x training masks x objective x bottleneck x seed) and measure recovery beside controls.

    Every trained point is probed on held-out masks, and so are the controls
    (pixels, untrained, oracle, and the linear codes pca, random_projection,
    linear_mae at each trained code's width) on the same samples and masks. Every finished
    point is appended to OUT/results.csv and results.jsonl at once;
    re-running the same command resumes and skips finished points. The
    theory's prediction for the grid goes to OUT/prediction.csv. Points run
    in a process pool on this machine, or as Ray tasks (--backend ray); a
    failed point is retried, then listed at the end (exit 1).
    """
    with user_errors():
        import time

        from hlvm.errors import ConfigError
        from hlvm.io import new_run_dir
        from hlvm.sweep import SweepConfig, load_sweep_config, run_sweep

        base: dict[str, Any] = load_sweep_config(config).to_dict() if config is not None else SweepConfig().to_dict()
        given = {
            "mask_ratios": None if ratios is None else _floats(ratios, "ratios"),
            "mask_units": None if units is None else _ints(units, "units"),
            "seeds": None if seeds is None else _ints(seeds, "seeds"),
            "objectives": None if objectives is None else _words(objectives),
            "bottlenecks": None if bottlenecks is None else _bottlenecks(bottlenecks),
            "train_mask_kinds": None if train_mask_kinds is None else _words(train_mask_kinds),
            "arms": None if arms is None else _arms(arms),
            "controls": None if controls is None else _controls(controls),
            "mask_kinds": None if mask_kinds is None else _words(mask_kinds),
            "model": model,
            "steps": steps,
            "batch": batch,
            "blr": blr,
            "n_train": n_train,
            "n_eval": n_eval,
            "eval_masks": eval_masks,
        }
        base.update({k: v for k, v in given.items() if v is not None})
        graph = dict(base["graph"])
        if depth is not None:
            graph["depth"] = depth
        if branching is not None:
            graph["branching"] = branching
        base["graph"] = graph
        cfg = SweepConfig.from_dict(base)
        if out is None:
            # Never the study's committed results/ beside --config: a run there would rewrite them.
            out = new_run_dir("runs", "sweep")
        if workers is not None and workers < 1:
            raise ConfigError(f"--workers must be >= 1, got {workers}")
        if retries < 0:
            raise ConfigError(f"--retries must be >= 0, got {retries}")
        executor = _executor(backend, ray_address, cpus_per_point, gpus_per_point, workers, threads, ray_data)

        def plan() -> None:
            # Printed once the sweep is checked and prepared: bad input gets its one error line alone.
            points = cfg.points()
            trained = sum(p.trained for p in points)
            console.print(
                f"[bold]sweep[/] {trained} trained points ({len(cfg.mask_ratios)} ratios x {len(cfg.mask_units)} units x "
                f"{len(cfg.trained_arms())} arms x {len(cfg.seeds)} seeds"
                f"{', less skipped combinations' if cfg.infeasible() else ''}) and {len(points) - trained} control points "
                f"({', '.join(cfg.controls) or 'none'}) -> {out}"
            )
            for why in cfg.infeasible():
                console.print(f"  skipped: {why}", markup=False)

        t0 = time.perf_counter()
        try:
            summary = run_sweep(cfg, out, executor=executor, workers=workers, threads=threads, retries=retries,
                                progress=not quiet, console=console, on_start=plan)
        except KeyboardInterrupt:
            err_console.print(
                f"interrupted: every finished point is kept in {out}; run the same command again to resume", markup=False
            )
            raise typer.Exit(code=130) from None
        console.print(
            f"done: {summary.finished} points run, {summary.skipped} finished earlier, {summary.rows} rows appended, "
            f"{time.perf_counter() - t0:.1f} s -> {out / 'results.csv'}"
        )
        if summary.failed:
            err_console.print(
                f"failed: {len(summary.failed)} point(s) after {retries + 1} attempt(s) each (tracebacks in "
                f"{out / 'failures.jsonl'}); run the same command again to retry them:", markup=False
            )
            for point, why in summary.failed:
                err_console.print(f"  {point.label()}: {why}", markup=False)
            raise typer.Exit(code=1)
        if report:
            from hlvm.report import build_report

            from hlvm.report import summary_lines

            path = build_report(out)
            for line in summary_lines(path):
                console.print(line, markup=False)
            console.print(f"report: {path}")



def _executor(kind: str, address: str | None, cpus: float | None, gpus: float | None, workers: int | None,
              threads: int | None, data: str | None = None) -> Any:
    """The executor ``--backend`` names (``None``: run_sweep's process pool)."""
    from hlvm.errors import ConfigError

    if kind == "process":
        for name, value in (("--ray-address", address), ("--ray-data", data), ("--cpus-per-point", cpus),
                            ("--gpus-per-point", gpus)):
            if value is not None:
                raise ConfigError(f"{name} applies to --backend ray; the process pool takes --workers and --threads")
        return None
    if kind != "ray":
        raise ConfigError(f"unknown --backend {kind!r}; choose from process, ray")
    from hlvm.sweep import RayExecutor

    return RayExecutor(address, cpus=1 if cpus is None else cpus, gpus=0 if gpus is None else gpus, threads=threads,
                       limit=workers, data=data)
