"""The report's figures (matplotlib, Agg)."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .stats import Cell, GroupKey, group_label

__all__ = ["figures"]


def _slug(g: GroupKey) -> str:
    kind, obj, d, rep = g
    s = f"{kind}-{obj}" + ("" if d in ("", "None") else f"-d{d}") + ("" if rep == "code" else f"-{rep}")
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in s)


def figures(table: Mapping[tuple[GroupKey, float, int], Cell], out: Path, prediction: list[dict[str, str]] | None) -> dict[GroupKey, list[tuple[str, str]]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figs: dict[GroupKey, list[tuple[str, str]]] = defaultdict(list)
    groups = sorted({k[0] for k in table})
    for g in groups:
        cs = [c for k, c in table.items() if k[0] == g]
        ratios = sorted({c.mask_ratio for c in cs})
        units = sorted({c.mask_unit for c in cs})
        levels = sorted({lvl for c in cs for lvl in c.level_r2})
        get = {(c.mask_ratio, c.mask_unit): c for c in cs}
        colors = plt.get_cmap("viridis")
        slug = _slug(g)

        # 1. recovery by level against ratio, a line per unit; 2. the same against unit, a line per ratio
        for name, xs, lines, xkey, lkey, xlabel, llabel in (
            ("recovery_vs_ratio", ratios, units, 0, 1, "mask ratio", "unit"),
            ("recovery_vs_unit", units, ratios, 1, 0, "masking unit (pixels)", "ratio"),
        ):
            fig, axes = plt.subplots(1, len(levels), figsize=(3.2 * len(levels), 3.2), sharey=True, squeeze=False)
            for ax, lvl in zip(axes[0], levels):
                for i, ln in enumerate(lines):
                    col = colors(i / max(1, len(lines) - 1))
                    pts = []
                    for x in xs:
                        key = (x, ln) if xkey == 0 else (ln, x)
                        if key in get:
                            pts.append((x, get[key].level_r2[lvl], get[key].level_ca[lvl]))
                    if not pts:
                        continue
                    px = [p[0] for p in pts]
                    ax.errorbar(px, [p[1].mean for p in pts], yerr=[0 if math.isnan(p[1].se) else p[1].se for p in pts],
                                color=col, marker="o", ms=3, label=f"{llabel} {ln:g}")
                    ax.plot(px, [p[2].mean for p in pts], color=col, ls="--", lw=1)
                ax.set_title(f"level {lvl}" + (" (root)" if lvl == 0 else ""))
                ax.set_xlabel(xlabel)
                if xkey == 1:
                    ax.set_xscale("log", base=2)
                    ax.set_xticks(xs, [str(x) for x in xs])
                ax.set_ylim(-0.05, 1.05)
                ax.grid(alpha=0.3)
            axes[0][0].set_ylabel("R² of noise ε_v (solid)\nP(v in CA), theory (dashed)")
            axes[0][-1].legend(fontsize=7)
            fig.suptitle(f"Recovery by latent level: {group_label(g)}", fontsize=9)
            fig.tight_layout(rect=(0, 0, 1, 0.95))
            fname = f"{name}_{slug}.png"
            fig.savefig(out / fname, dpi=110)
            plt.close(fig)
            figs[g].append((
                fname,
                f"recovery by latent level against {xlabel}: solid, mean R^2 of the level's noises from the code "
                "(every role, so a wide code's leak of the visible side's private noise shows here); dashed, the "
                "share of the level's nodes in CA on the same masks (what the theory requires the code to hold)",
            ))

        # 3. measured beside predicted abstraction
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
        for ax, xs, lines, xkey, xlabel, llabel in (
            (axes[0], ratios, units, 0, "mask ratio", "unit"),
            (axes[1], units, ratios, 1, "masking unit (pixels)", "ratio"),
        ):
            for i, ln in enumerate(lines):
                col = colors(i / max(1, len(lines) - 1))
                keys = [((x, ln) if xkey == 0 else (ln, x)) for x in xs]
                pts = [(x, get[k]) for x, k in zip(xs, keys) if k in get]
                if not pts:
                    continue
                px = [p[0] for p in pts]
                ax.errorbar(px, [p[1].a_measured.mean for p in pts],
                            yerr=[0 if math.isnan(p[1].a_measured.se) else p[1].a_measured.se for p in pts],
                            color=col, marker="o", ms=3, label=f"{llabel} {ln:g}")
                ax.plot(px, [p[1].a_predicted.mean for p in pts], color=col, ls="--", lw=1)
            ax.set_xlabel(xlabel)
            if xkey == 1:
                ax.set_xscale("log", base=2)
            ax.set_ylabel("A: measured (solid), theory (dashed)")
            if xkey == 1:
                ax.set_xticks(xs, [str(x) for x in xs])
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        fig.suptitle(f"Abstraction of what the code holds: {group_label(g)}", fontsize=9)
        fig.tight_layout(rect=(0, 0, 1, 0.95))
        fname = f"abstraction_{slug}.png"
        fig.savefig(out / fname, dpi=110)
        plt.close(fig)
        figs[g].append((fname, "measured beside predicted abstraction of c"))

        # 4. agreement over the grid
        grid = np.full((len(units), len(ratios)), np.nan)
        for (r, u), c in get.items():
            grid[units.index(u), ratios.index(r)] = c.agreement.mean
        if np.isfinite(grid).any():
            fig, ax = plt.subplots(figsize=(1.2 * len(ratios) + 2, 0.8 * len(units) + 1.5))
            im = ax.imshow(grid, vmin=0, vmax=1, cmap="magma", aspect="auto")
            for i in range(len(units)):
                for j in range(len(ratios)):
                    if np.isfinite(grid[i, j]):
                        ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center",
                                color="white" if grid[i, j] < 0.6 else "black", fontsize=8)
            ax.set_xticks(range(len(ratios)), [f"{r:g}" for r in ratios])
            ax.set_yticks(range(len(units)), [str(u) for u in units])
            ax.set_xlabel("mask ratio")
            ax.set_ylabel("masking unit")
            fig.colorbar(im, ax=ax, label="agreement")
            ax.set_title(f"Agreement: {group_label(g)}", fontsize=8)
            fig.tight_layout()
            fname = f"agreement_{slug}.png"
            fig.savefig(out / fname, dpi=110)
            plt.close(fig)
            figs[g].append((fname, "agreement score (theory's membership vs measured recovery) over the grid"))
    return figs


