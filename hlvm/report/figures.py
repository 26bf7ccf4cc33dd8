"""The report's figures (matplotlib, Agg), one set per panel (evaluation mask kind x trained arm x representation)."""

from __future__ import annotations

import math
from pathlib import Path

from .stats import Panel, Series

__all__ = ["figures", "training_curves", "ENCODER_STYLE"]

#: Resolution of every figure: readable on screen, small enough for a committed study.
DPI = 90

#: Colour and marker of each encoder in every figure.
ENCODER_STYLE = {
    "trained": ("#1f77b4", "o"),
    "pixels": ("#d62728", "s"),
    "untrained": ("#7f7f7f", "^"),
    "oracle": ("#2ca02c", "*"),
    "pca": ("#ff7f0e", "D"),
    "random_projection": ("#9467bd", "v"),
    "linear_mae": ("#8c564b", "P"),
    "theory": ("#000000", ""),
}


def _err(e) -> float:  # noqa: ANN001
    return 0.0 if math.isnan(e.se) else e.se


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _scatter(panel: Panel, out: Path) -> tuple[str, str]:
    """R^2(CA) against the leak R^2(s_mc), one point per encoder and cell: trained vs controls at a glance."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4), sharex=True, sharey=True)
    for ax, suffix, title in ((axes[0], "", "best of linear and kernel probe"), (axes[1], "_linear", "linear probe alone")):
        ax.add_patch(plt.Rectangle((-0.05, 0.9), 0.15, 0.15, color="#2ca02c", alpha=0.12, lw=0))
        for enc, series in panel.series.items():
            color, marker = ENCODER_STYLE[enc]
            xs, ys, xe, ye = [], [], [], []
            for key in series.cells:
                x, y = series.stat(key, "leak" + suffix), series.stat(key, "ca" + suffix)
                if math.isnan(x.mean) or math.isnan(y.mean):
                    continue
                xs.append(x.mean), ys.append(y.mean), xe.append(_err(x)), ye.append(_err(y))
            if xs:
                ax.errorbar(xs, ys, xerr=xe, yerr=ye, fmt=marker, color=color, ms=6 if marker != "*" else 9,
                            alpha=0.85, label=f"{enc} ({len(xs)} cells)", elinewidth=0.8)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("leak: R² of the visible side's private noise s_mc")
        ax.set_xlim(-0.05, 1.05)
        ax.set_ylim(-0.05, 1.05)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("R² of CA's noise")
    axes[0].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"Trained vs controls, one point per cell (mean ± SE over seeds): {panel.label()}\n"
                 "green corner: Theorem 2's dim_c code (R²(CA) ≥ 0.9, leak ≤ 0.1)", fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.9))
    name = f"controls_{panel.slug()}.png"
    fig.savefig(out / name, dpi=DPI)
    plt.close(fig)
    return name, ("R^2 of CA's noise against the leak R^2(s_mc), one point per encoder and cell (mean ± SE over seeds); "
                  "left the best probe, right the linear probe alone. The raw pixels sit at the top right (they hold "
                  "everything visible); Theorem 2's code sits in the green corner")


def _curves(ax, series: Series, name: str, xs, lines, xkey: int, color_of, style: str, label_of) -> None:  # noqa: ANN001
    for i, ln in enumerate(lines):
        keys = [((x, ln) if xkey == 0 else (ln, x)) for x in xs]
        pts = [(x, series.stat(k, name)) for x, k in zip(xs, keys) if k in series.seeds]
        pts = [(x, e) for x, e in pts if not math.isnan(e.mean)]
        if not pts:
            continue
        ax.errorbar([p[0] for p in pts], [p[1].mean for p in pts], yerr=[_err(p[1]) for p in pts],
                    color=color_of(i), ls=style, marker="o" if style == "-" else "", ms=3, lw=1.2,
                    label=label_of(ln))


def _abstraction(panel: Panel, out: Path) -> tuple[str, str]:
    """A (best probe, then linear) against ratio and unit: trained, pixels and the theory."""
    plt = _plt()
    trained = panel.trained
    ratios = sorted({k[0] for k in trained.cells})
    units = sorted({k[1] for k in trained.cells})
    cmap = plt.get_cmap("viridis")
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), sharey=True)
    for row, name in enumerate(("a", "a_linear")):
        for col, (xs, lines, xkey, xlabel, llabel) in enumerate(
            ((ratios, units, 0, "mask ratio", "unit"), (units, ratios, 1, "masking unit (pixels)", "ratio"))
        ):
            ax = axes[row, col]
            color_of = lambda i, n=len(lines): cmap(i / max(1, n - 1))  # noqa: E731
            _curves(ax, trained, name, xs, lines, xkey, color_of, "-", lambda ln: f"{llabel} {ln:g}")
            # One legend entry per colour (the trained line); the y label says what each line style is.
            if "pixels" in panel.series:
                _curves(ax, panel.series["pixels"], name, xs, lines, xkey, color_of, ":", lambda ln: None)
            _curves(ax, trained, "a_pred", xs, lines, xkey, color_of, "--", lambda ln: None)
            ax.set_xlabel(xlabel)
            if xkey == 1:
                ax.set_xscale("log", base=2)
                ax.set_xticks(xs, [str(x) for x in xs])
            ax.set_ylabel(("A (best probe)" if name == "a" else "A (linear probe)") + "\nsolid trained, dotted pixels, dashed theory")
            ax.grid(alpha=0.3)
            ax.set_ylim(-0.05, 1.05)
            if row == 0:
                ax.legend(fontsize=6, ncol=2)
    fig.suptitle(f"Abstraction A of what the code holds of CA: {panel.label()}", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    name = f"abstraction_{panel.slug()}.png"
    fig.savefig(out / name, dpi=DPI)
    plt.close(fig)
    return name, ("A of what the code holds (top: best probe; bottom: linear probe) against mask ratio and unit: "
                  "solid the trained model, dotted the pixels control, dashed the theory on the same masks "
                  "(mean ± SE over seeds). A is 1 for a code of the root alone, so read it beside R^2(CA)")


def _levels(panel: Panel, out: Path) -> tuple[str, str]:
    """R^2 of each latent level's noise against the mask ratio (a line per unit), beside the theory's share in CA."""
    plt = _plt()
    trained = panel.trained
    ratios = sorted({k[0] for k in trained.cells})
    units = sorted({k[1] for k in trained.cells})
    levels = sorted({lvl for per in trained.levels.values() for v in per.values() for lvl in v[0]})
    cmap = plt.get_cmap("viridis")
    fig, axes = plt.subplots(1, len(levels), figsize=(3.2 * len(levels), 3.3), sharey=True, squeeze=False)
    for ax, lvl in zip(axes[0], levels):
        for i, u in enumerate(units):
            col = cmap(i / max(1, len(units) - 1))
            pts = [(r, trained.level_stat((r, u), lvl, 0), trained.level_stat((r, u), lvl, 1)) for r in ratios if (r, u) in trained.seeds]
            if not pts:
                continue
            ax.errorbar([p[0] for p in pts], [p[1].mean for p in pts], yerr=[_err(p[1]) for p in pts],
                        color=col, marker="o", ms=3, label=f"unit {u}")
            ax.plot([p[0] for p in pts], [p[2].mean for p in pts], color=col, ls="--", lw=1)
        ax.set_title(f"level {lvl}" + (" (root)" if lvl == 0 else ""))
        ax.set_xlabel("mask ratio")
        ax.set_ylim(-0.05, 1.05)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("R² of noise ε_v (solid)\nP(v in CA), theory (dashed)")
    axes[0][-1].legend(fontsize=7)
    fig.suptitle(f"Recovery by latent level, trained model: {panel.label()}", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    name = f"levels_{panel.slug()}.png"
    fig.savefig(out / name, dpi=DPI)
    plt.close(fig)
    return name, ("the trained model's mean R^2 of each latent level's noises against the mask ratio (solid; every "
                  "role, so a wide code's leak shows here) beside the share of the level's nodes in CA on the same "
                  "masks (dashed, what the theory requires the code to hold)")


def _selectivity(panel: Panel, out: Path) -> tuple[str, str]:
    """Selectivity (R^2(CA) - leak) per cell: the trained code beside each control, bars with SE over seeds."""
    plt = _plt()
    keys = panel.trained.cells
    encs = [e for e in ENCODER_STYLE if e in panel.series]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(keys) + 2), 3.8))
    width = 0.8 / max(1, len(encs))
    for i, enc in enumerate(encs):
        series = panel.series[enc]
        stats = [series.stat(k, "selectivity") if k in series.seeds else None for k in keys]
        xs = [j + (i - (len(encs) - 1) / 2) * width for j in range(len(keys))]
        ys = [float("nan") if e is None else e.mean for e in stats]
        es = [0.0 if e is None else _err(e) for e in stats]
        ax.bar(xs, ys, width=width, yerr=es, color=ENCODER_STYLE[enc][0], label=enc, error_kw={"elinewidth": 0.7})
    ax.set_xticks(range(len(keys)), [f"{r:g}/{u}" for r, u in keys], fontsize=7)
    ax.set_xlabel("mask ratio / unit")
    ax.set_ylabel("selectivity: R²(CA) - leak")
    ax.axhline(0.0, color="black", lw=0.6)
    ax.set_ylim(-0.1, 1.05)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=6, ncol=4, loc="upper right")
    fig.suptitle(f"How much of CA the code keeps beyond the visible side's private noise: {panel.label()}", fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    name = f"selectivity_{panel.slug()}.png"
    fig.savefig(out / name, dpi=DPI)
    plt.close(fig)
    return name, ("selectivity R^2(CA) - leak per cell (mean ± SE over seeds) for the trained code and every control: "
                  "a trained code that isolates c better than what needs no training stands above the linear codes "
                  "(pca, random_projection, linear_mae) and the untrained network of its width")


def figures(panels: list[Panel], out: Path) -> dict[str, list[tuple[str, str]]]:
    """Write the figures of every panel of the code representation into ``out``; ``{panel slug: [(file, caption), ...]}``.

    The other representations (a bottleneck's plain layer, cMIM's decoder) are
    in the report's tables; their figures would double the folder for little.
    """
    figs: dict[str, list[tuple[str, str]]] = {}
    for p in panels:
        if p.representation == "code":
            figs[p.slug()] = [_scatter(p, out), _selectivity(p, out), _abstraction(p, out), _levels(p, out)]
    return figs


def training_curves(src: Path, out: Path) -> list[str]:
    """The report's lines for one figure of every trained run's loss curve (``src/runs/*/metrics.jsonl``), or none.

    Each curve is labelled with its point (from ``points.jsonl``) and
    coloured by mask ratio; the figure goes to ``out/training_loss.png``.
    """
    from hlvm.curves import plot_loss, read_metrics
    from hlvm.errors import DataError

    import json

    points: dict[str, dict] = {}
    commits = src / "points.jsonl"
    if commits.is_file():
        for line in commits.read_text().splitlines():
            try:
                rec = json.loads(line)
                points[rec["point_id"]] = rec.get("point", {})
            except (ValueError, KeyError, TypeError):
                continue
    curves, ratios = {}, {}
    runs = sorted(src.glob("runs/*/metrics.jsonl"), key=lambda m: json.dumps(points.get(m.parent.name, {}), sort_keys=True))
    for metrics in runs:
        pid = metrics.parent.name
        try:
            rows = read_metrics(metrics)
        except DataError:
            continue  # a run's log the report cannot read is left out of the figure, not the report
        p = points.get(pid, {})
        label = pid if not p else (
            f"r={p.get('mask_ratio'):g} u={p.get('mask_unit')} {p.get('objective') or ''}"
            f"{'' if p.get('bottleneck') is None else ' d=' + str(p.get('bottleneck'))} seed={p.get('seed')}"
        )
        curves[label] = rows
        if isinstance(p.get("mask_ratio"), int | float):
            ratios[label] = float(p["mask_ratio"])
    if ratios:
        lo, hi = min(ratios.values()), max(ratios.values())
        ratios = {k: (v - lo) / (hi - lo) if hi > lo else 0.5 for k, v in ratios.items()}
    path = plot_loss(curves, out / "training_loss.png", title=f"training loss of the sweep's {len(curves)} runs",
                     colors=ratios or None)
    if path is None:
        return []
    caption = f"Training loss against optimizer step of each of the {len(curves)} trained runs, coloured by mask ratio"
    return ["## Training", "", f"![{caption}]({path.name})", "", f"*{caption}.*", ""]
