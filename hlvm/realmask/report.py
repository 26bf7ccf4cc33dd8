"""report.md and figures of the Fashion-MNIST study, from ``results.json`` alone.

The rules (:mod:`hlvm.realmask.rules`) are printed first, then the numbers, then the
verdicts the rules give on them; nothing in the verdicts is typed by hand.
A partial study (``complete: false``) is reported as far as it goes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from hlvm.realmask import rules
from hlvm.rules import Estimate

METRICS = (("ssim", "SSIM"), ("fsim", "FSIM"), ("psnr", "PSNR (dB)"), ("mse", "MSE"))


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _per_seed(rows: list[dict], key: str) -> dict[int, float]:
    return {r["seed"]: r[key] for r in rows if r.get(key) is not None}


def _cells(res: dict) -> dict[tuple[float, int], list[dict]]:
    out: dict[tuple[float, int], list[dict]] = {}
    for r in res["runs"]:
        out.setdefault((r["mask_ratio"], r["mask_unit"]), []).append(r)
    return out


def _axes(res: dict) -> tuple[int, float, list[float], list[int]]:
    g = res["config"]["grid"]
    return (g["mask_ratios_at_unit"]["unit"], g["mask_units_at_ratio"]["ratio"], sorted(g["mask_ratios_at_unit"]["ratios"]),
            sorted(g["mask_units_at_ratio"]["units"]))


def _pct(e: Estimate) -> str:
    if math.isnan(e.mean):
        return "-"
    return f"{100 * e.mean:.2f}" + ("" if math.isnan(e.se) else f" ± {100 * e.se:.2f}")


def _num(e: Estimate, digits: int = 4) -> str:
    if math.isnan(e.mean):
        return "-"
    return f"{e.mean:.{digits}f}" + ("" if math.isnan(e.se) else f" ± {e.se:.{digits}f}")


def trends(res: dict) -> tuple[dict[str, Any], list[rules.Trend]]:
    """The regime check and every trend the rules judge, on what ``res`` holds."""
    unit0, ratio0, ratios, units = _axes(res)
    cells = _cells(res)
    untrained = {pool: {int(s): v for s, v in res["baselines"]["untrained"][pool].items()} for pool in ("mean", "cls")}
    pixels = res["baselines"]["pixels"]
    out: list[rules.Trend] = []
    regime: dict[str, Any] = {}
    if (ratio0, unit0) in cells and untrained["mean"] and pixels is not None:
        regime = rules.regime(_per_seed(cells[(ratio0, unit0)], "probe_top1_mean"), untrained["mean"], pixels)
    have_ratios = [r for r in ratios if (r, unit0) in cells]
    for pool in ("mean", "cls"):
        if 0.75 in have_ratios and len(have_ratios) > 1:
            t = rules.ratio_peak({r: _per_seed(cells[(r, unit0)], f"probe_top1_{pool}") for r in have_ratios})
            t.name, t.claim = f"{t.name}_{pool}", f"{t.claim} ({pool} pool)"
            out.append(t)
        have_units = [u for u in units if (ratio0, u) in cells]
        if len(have_units) > 1:
            t = rules.unit_trend({u: _per_seed(cells[(ratio0, u)], f"probe_top1_{pool}") for u in have_units})
            t.name, t.claim = f"{t.name}_{pool}", f"{t.claim} ({pool} pool)"
            out.append(t)
    for tag in ("nomask", "trainmask"):
        m = {k: {r: _per_seed(cells[(r, unit0)], f"{tag}_{k}") for r in have_ratios} for k, _ in METRICS}
        if 0.75 in have_ratios and any(r < 0.75 for r in have_ratios):
            out.append(rules.structural_rise(m, tag=tag))
        if 0.75 in have_ratios and 0.9 in have_ratios:
            out.append(rules.pixel_favour(m, tag=tag))
    return regime, out


# --- figures ---------------------------------------------------------------------------------


def _errorbar(ax, xs, rows_by_x, key, scale=1.0, **kw):  # noqa: ANN001
    ests = [Estimate.of(r[key] for r in rows_by_x[x]) for x in xs]
    ax.errorbar(xs, [scale * e.mean for e in ests], yerr=[0 if math.isnan(e.se) else scale * e.se for e in ests],
                capsize=3, **kw)


def figures(res: dict, out: Path) -> list[str]:
    plt = _plt()
    unit0, ratio0, ratios, units = _axes(res)
    cells = _cells(res)
    made = []
    r_x = [r for r in ratios if (r, unit0) in cells]
    u_x = [u for u in units if (ratio0, u) in cells]
    b = res["baselines"]
    # Table 1: probe top-1 against ratio and unit, controls as lines.
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for ax, xs, rows_by_x, label in ((axes[0], r_x, {r: cells[(r, unit0)] for r in r_x}, f"mask ratio (unit {unit0} px)"),
                                     (axes[1], u_x, {u: cells[(ratio0, u)] for u in u_x},
                                      f"masking unit, px (ratio {ratio0:g})")):
        for pool, style in (("mean", "o-"), ("cls", "s--")):
            if xs:
                _errorbar(ax, xs, rows_by_x, f"probe_top1_{pool}", 100, fmt=style, label=f"MAE, {pool} pool")
        for pool, ls in (("mean", ":"), ("cls", (0, (1, 3)))):
            u = Estimate.of(b["untrained"][pool].values())
            if not math.isnan(u.mean):
                ax.axhline(100 * u.mean, color="gray", ls=ls, label=f"untrained encoder, {pool} pool")
        if b["pixels"] is not None:
            ax.axhline(100 * b["pixels"], color="k", ls="-.", lw=0.9, label="raw pixels")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
        if xs and label.startswith("masking unit"):
            ax.set_xscale("log", base=2)
            ax.set_xticks(xs, [str(x) for x in xs])
    axes[0].set_ylabel("linear probe top-1 (%), mean ± SE over seeds")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "probe.png", dpi=110)
    plt.close(fig)
    made.append("probe.png")
    # Figure 5: reconstruction metrics against ratio and unit, with and without masking.
    for tag, title in (("nomask", "without masking (Kong et al.'s protocol)"), ("trainmask", "under each run's training mask")):
        fig, axes = plt.subplots(2, 4, figsize=(12, 5.4))
        for i, (xs, rows_by_x, label) in enumerate(((r_x, {r: cells[(r, unit0)] for r in r_x}, "mask ratio"),
                                                    (u_x, {u: cells[(ratio0, u)] for u in u_x}, "unit (px)"))):
            for j, (key, name) in enumerate(METRICS):
                ax = axes[i][j]
                if xs:
                    _errorbar(ax, xs, rows_by_x, f"{tag}_{key}", fmt="o-")
                if tag == "nomask":
                    u = Estimate.of(r.get(f"nomask_{key}", math.nan) for r in res["untrained"])
                    if not math.isnan(u.mean):
                        ax.axhline(u.mean, color="gray", ls=":", label="untrained")
                ax.set_title(name, fontsize=9)
                ax.set_xlabel(label)
                ax.grid(alpha=0.3)
                if xs and label.startswith("unit"):
                    ax.set_xscale("log", base=2)
                    ax.set_xticks(xs, [str(x) for x in xs])
        fig.suptitle(f"Reconstruction of {res['config']['eval']['recon_images']} test images {title}; mean ± SE over seeds",
                     fontsize=10)
        fig.tight_layout()
        fig.savefig(out / f"recon_{tag}.png", dpi=110)
        plt.close(fig)
        made.append(f"recon_{tag}.png")
    # The held-out loss against the step, per cell (every seed drawn thin, the mean thick).
    curves = {key: [r["heldout_losses"] for r in rows if r.get("heldout_losses")] for key, rows in sorted(cells.items())}
    curves = {k: v for k, v in curves.items() if v}
    if curves:
        fig, ax = plt.subplots(figsize=(6, 3.8))
        for i, (key, logs) in enumerate(curves.items()):
            color = f"C{i}"
            for log in logs:
                ax.plot([s for s, _ in log], [v for _, v in log], color=color, alpha=0.3, lw=0.8)
            steps = [s for s, _ in logs[0]]
            if all([s for s, _ in log] == steps for log in logs):
                ax.plot(steps, np.mean([[v for _, v in log] for log in logs], axis=0), color=color, lw=1.8,
                        label=f"ratio {key[0]:g}, unit {key[1]} ({len(logs)} seeds)")
        ax.set_xlabel("training step")
        ax.set_ylabel("held-out masked loss (log scale)")
        ax.set_yscale("log")  # the untrained model's loss at step 0 is many times the trained one's
        ax.set_title(f"MAE loss on {res['config']['train'].get('heldout_n')} test images, fixed masks", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "heldout_loss.png", dpi=110)
        plt.close(fig)
        made.append("heldout_loss.png")
    # Examples and attention maps (the first seed), from the uint8 arrays in results.json.
    ex = res.get("examples") or {}
    names = [n for n in sorted(ex, key=lambda n: (n == "untrained", n)) if "original" in ex[n]]
    if names:
        k = len(ex[names[0]]["original"])
        fig, axes = plt.subplots(len(names) + 1, 3 * k, figsize=(0.9 * 3 * k, 1.0 * (len(names) + 1)), squeeze=False)
        orig = np.asarray(ex[names[0]]["original"])
        for j in range(k):
            axes[0][j].imshow(orig[j], cmap="gray", vmin=0, vmax=255)
        for i, n in enumerate(names, start=1):
            e = ex[n]
            for j in range(k):
                if "trainmask" in e:
                    pair = np.concatenate([np.asarray(e["trainmask"]["masked"][j]),
                                           np.asarray(e["trainmask"]["reconstruction"][j])], axis=0)
                    axes[i][j].imshow(pair, cmap="gray", vmin=0, vmax=255)
                axes[i][k + j].imshow(np.asarray(e["nomask"]["reconstruction"][j]), cmap="gray", vmin=0, vmax=255)
                axes[i][2 * k + j].imshow(np.asarray(e["attention"][j]), cmap="inferno")
            axes[i][0].set_ylabel(n, fontsize=6)
        for row in axes:
            for ax in row:
                ax.set_xticks([])
                ax.set_yticks([])
        axes[0][0].set_title("masked input / reconstruction", fontsize=7, loc="left")
        axes[0][k].set_title("reconstruction without masking", fontsize=7, loc="left")
        axes[0][2 * k].set_title("cls attention, last block (head mean)", fontsize=7, loc="left")
        fig.tight_layout(pad=0.2)
        fig.savefig(out / "examples.png", dpi=110)
        plt.close(fig)
        made.append("examples.png")
    return made


# --- markdown ----------------------------------------------------------------------------------


def _part_line(p: rules.Part, scale: float, unit: str) -> str:
    m = rules.margin(p.d)
    mt = "-" if math.isnan(m) else f"{scale * m:.3g}"
    return (f"  - {p.label} = {_num(Estimate(scale * p.d.mean, scale * p.d.se, p.d.n), 3)}{unit} "
            f"(t·SE {mt}{unit}, min effect {scale * p.min_effect:g}{unit}): **{p.verdict}**")


def _scale(trend: rules.Trend) -> tuple[float, str]:
    if trend.name.startswith("table1"):
        return 100.0, " pts"
    return 1.0, ""


def _strongest_lines(res: dict, order: list, cells: dict, untrained: dict[int, float]) -> list[str]:
    """Each cell's mean-pool probe against the strongest control (``rules.strongest``), decided by ``rules.beats``."""
    b = res["baselines"]
    best = rules.strongest(untrained, b["pixels"], b.get("pca"))
    if best is None:
        return []
    value = Estimate.of(untrained.values()).mean if best == "untrained" else b[best]
    names = {"untrained": "the untrained encoder (mean over seeds)", "pixels": "the raw pixels",
             "pca": "the PCA of the pixels"}
    lines = ["", "## Against the strongest control", "",
             f"The strongest control is {names[best]} at {100 * value:.2f} %. A cell *beats* it if its mean-pool "
             "top-1 is at least one point above it beyond t·SE (`hlvm.realmask.rules.beats`: hold), *does not "
             "beat* it if it is below that point by more than t·SE (fail), else inconclusive.", "",
             "| ratio | unit | seeds | Δ strongest (points) | t·SE | verdict |", "|---|---|---|---|---|---|"]
    for key in order:
        rows = cells.get(key, [])
        if not rows:
            continue
        d, v = rules.beats(_per_seed(rows, "probe_top1_mean"), value)
        m = rules.margin(d)
        word = {"hold": "**beats it**", "fail": "**does not beat it**"}.get(v, "inconclusive")
        lines.append(f"| {key[0]:g} | {key[1]} | {len(rows)} | {100 * d.mean:+.2f} | "
                     f"{'-' if math.isnan(m) else format(100 * m, '.2f')} | {word} |")
    return lines


def _heldout_lines(order: list, cells: dict) -> list[str]:
    """The held-out loss at the end, at half the steps and at a quarter, and the last doubling's gain, per cell."""
    rows_with = {k: [r for r in cells.get(k, []) if r.get("heldout_losses")] for k in order}
    rows_with = {k: v for k, v in rows_with.items() if v}
    if not rows_with:
        return []
    lines = ["", "## Held-out loss", "",
             "MAE's masked loss on the fixed held-out test images (`train.heldout_n`), fixed masks, the model in "
             "eval mode; mean ± SE over seeds. *Gain over the last doubling*: 1 - L(S) / L(S/2) within each run "
             "(a diagnostic of the run as trained: the convergence protocol's rule compares whole runs of each "
             "length, each with its own cosine schedule, and was not run here).", "",
             "| ratio | unit | L(S/4) | L(S/2) | L(S) | gain over the last doubling |", "|---|---|---|---|---|---|"]
    for key, rows in rows_with.items():
        def at(r: dict, frac: float) -> float:
            log = r["heldout_losses"]
            target = log[-1][0] * frac
            return min(log, key=lambda e: abs(e[0] - target))[1]

        q, h, f = ([at(r, x) for r in rows] for x in (0.25, 0.5, 1.0))
        gain = Estimate.of(1 - fi / hi for fi, hi in zip(f, h, strict=True))
        lines.append(f"| {key[0]:g} | {key[1]} | {_num(Estimate.of(q), 4)} | {_num(Estimate.of(h), 4)} | "
                     f"{_num(Estimate.of(f), 4)} | {_pct(gain)} % |")
    return lines


def markdown(res: dict, made: list[str]) -> str:
    cfg = res["config"]
    m, t, g, ev = cfg["model"], cfg["train"], cfg["grid"], cfg["eval"]
    unit0, ratio0, ratios, units = _axes(res)
    cells = _cells(res)
    b = res["baselines"]
    regime, ts = trends(res)
    timing = res.get("timing", {})
    lines = [
        "# Fashion-MNIST mask study: results",
        "",
        f"Generated from `results.json` by `studies/fashion-mnist-mask/report.py` (git "
        f"{res['provenance'].get('git_commit')}). Data: `{res['data']}`. "
        + ("**Complete.**" if res["complete"] else f"**Partial: {res['items_done']} of {res['items_total']} items done.**"),
        "",
        f"Model: ViT MAE, encoder {m['embed_dim']} wide x {m['depth']} blocks ({m['num_heads']} heads), decoder "
        f"{m['decoder_embed_dim']} x {m['decoder_depth']}, {m['img_size']} px, token patch {m['patch_size']}, "
        f"{'norm-pix' if m.get('norm_pix_loss') else 'pixel'} loss. Training: {t['steps']} steps of batch "
        f"{t['batch_size']} (blr {t['blr']:g}, warmup {t['warmup']}, weight decay {t['weight_decay']}), seeds "
        f"{', '.join(map(str, g['seeds']))}. Probe: L-BFGS, L2 {ev['probe']['l2']:g}, {ev['probe']['max_iter']} "
        f"iterations, fitted on every training image, top-1 on every test image. Reconstructions: "
        f"{ev['recon_images']} test images. Time: {timing.get('seconds_this_call', float('nan')) / 60:.1f} min in the "
        f"last call on {timing.get('device')} with {timing.get('threads')} thread(s).",
        "",
        "## The rules (fixed before the numbers)",
        "",
        rules.RULES,
        "",
        "## Trained regime",
        "",
    ]
    if regime:
        for k, (d, v) in regime.items():
            need = rules.REGIME_VS_UNTRAINED if k == "untrained" else rules.REGIME_VS_PIXELS
            lines.append(f"- ratio {ratio0:g} (mean pool) minus {k}: {_num(Estimate(100 * d.mean, 100 * d.se, d.n), 2)} "
                         f"points (needs {100 * need:g}): **{v}**")
        trained = all(v == "hold" for _, v in regime.values())
        lines += ["", "The encoders are trained by the study's own bar." if trained else
                  "**The encoders are not trained by the study's bar: the trends below say little about MAE.**"]
    else:
        lines.append("- not measured yet")
    # Probe table, controls beside every row.
    lines += ["", "## Linear probe (Table 1)", "",
              f"Top-1 (%) on the test images, mean ± SE over seeds. Controls: raw pixels "
              f"{'-' if b['pixels'] is None else format(100 * b['pixels'], '.2f')} %; untrained encoder "
              f"{_pct(Estimate.of(b['untrained']['mean'].values()))} (mean pool), "
              f"{_pct(Estimate.of(b['untrained']['cls'].values()))} (cls)"
              + ("" if b.get("pca") is None else f"; PCA of the pixels to {res['pca']['width']} components (the "
                 f"encoder's width, {100 * res['pca']['explained_variance']:.1f} % of the variance) "
                 f"{100 * b['pca']:.2f} %")
              + ". Δ: paired by seed for the untrained encoder; the label is `hlvm.rules.evidence` (differs from "
              "the control by at least one point beyond t·SE, either way) with a one-point minimum.", "",
              "| ratio | unit | seeds | mean pool | cls | Δ untrained (mean) | Δ pixels (mean) | Δ PCA (mean) | "
              "eff. rank (mean) | final loss | final held-out loss |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    order = [(r, unit0) for r in ratios] + [(ratio0, u) for u in units if u != unit0]
    untrained = {int(s): v for s, v in b["untrained"]["mean"].items()}
    for key in order:
        rows = cells.get(key, [])
        if not rows:
            lines.append(f"| {key[0]:g} | {key[1]} | 0 | - | - | - | - | - | - | - | - |")
            continue
        run = _per_seed(rows, "probe_top1_mean")
        ctl = rules.control(run, untrained, b["pixels"], b.get("pca")) if b["pixels"] is not None else {}
        du = ctl.get("untrained")
        dp = ctl.get("pixels")
        dq = ctl.get("pca")
        lines.append(
            f"| {key[0]:g} | {key[1]} | {len(rows)} | {_pct(Estimate.of(run.values()))} | "
            f"{_pct(Estimate.of(r['probe_top1_cls'] for r in rows))} | "
            + (f"{_num(Estimate(100 * du[0].mean, 100 * du[0].se, du[0].n), 2)} ({du[1]}) | " if du else "- | ")
            + (f"{_num(Estimate(100 * dp[0].mean, 100 * dp[0].se, dp[0].n), 2)} ({dp[1]}) | " if dp else "- | ")
            + (f"{_num(Estimate(100 * dq[0].mean, 100 * dq[0].se, dq[0].n), 2)} ({dq[1]}) | " if dq else "- | ")
            + f"{_num(Estimate.of(r['effective_rank_mean'] for r in rows), 1)} | "
            f"{_num(Estimate.of(r['final_loss'] for r in rows), 4)} | "
            f"{_num(Estimate.of(r.get('final_heldout_loss', math.nan) for r in rows), 4)} |")
    if res["untrained"]:
        lines.append(f"| untrained | - | {len(res['untrained'])} | {_pct(Estimate.of(untrained.values()))} | "
                     f"{_pct(Estimate.of(b['untrained']['cls'].values()))} | 0 | - | - | "
                     f"{_num(Estimate.of(r['effective_rank_mean'] for r in res['untrained']), 1)} | - | - |")
    if b["pixels"] is not None:
        lines.append(f"| raw pixels | - | - | {100 * b['pixels']:.2f} | - | - | 0 | - | - | - | - |")
    if b.get("pca") is not None:
        lines.append(f"| PCA, {res['pca']['width']} components | - | - | {100 * b['pca']:.2f} | - | - | - | 0 | - | - | - |")
    lines += _strongest_lines(res, order, cells, untrained)
    lines += _heldout_lines(order, cells)
    # Figure 5 table.
    lines += ["", "## Reconstruction (Figure 5)", "",
              "Means ± SE over seeds; *no mask*: every token visible, the whole image predicted (Kong et al.'s "
              "protocol); *train mask*: each run's own ratio and unit, visible patches pasted back, masks seeded "
              "alike for every run.", "",
              "| ratio | unit | SSIM | FSIM | PSNR | MSE | SSIM (train mask) | FSIM (train mask) | PSNR (train mask) | "
              "MSE (train mask) | MSE on masked pixels |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for key in order:
        rows = cells.get(key, [])
        if not rows:
            continue
        vals = [_num(Estimate.of(r[f"{tag}_{k}"] for r in rows), 2 if k == "psnr" else 4)
                for tag in ("nomask", "trainmask") for k, _ in METRICS]
        vals.append(_num(Estimate.of(r["trainmask_mse_masked"] for r in rows), 4))
        lines.append(f"| {key[0]:g} | {key[1]} | " + " | ".join(vals) + " |")
    if res["untrained"]:
        vals = [_num(Estimate.of(r[f"nomask_{k}"] for r in res["untrained"]), 2 if k == "psnr" else 4) for k, _ in METRICS]
        lines.append("| untrained | - | " + " | ".join(vals) + " | - | - | - | - | - |")
    # Verdicts.
    lines += ["", "## Verdicts", ""]
    if not ts:
        lines.append("Not enough cells measured yet." if not res["complete"] else
                     "None: this grid has too few cells for any trend (each needs two or more ratios, or units, "
                     "measured); the probe against the controls above is this study's result.")
    for tr in ts:
        scale, unit = _scale(tr)
        lines.append(f"- **{tr.claim}**: {tr.verdict}" + (f"; {tr.note}" if tr.note else ""))
        lines += [_part_line(p, scale, unit) for p in tr.parts]
    lines += ["", "## Figures", ""] + [f"![{f}]({f})" for f in made]
    return "\n".join(lines) + "\n"


def write_report(res: Mapping[str, Any], out: Path) -> Path:
    """Figures and ``report.md`` into ``out`` from the results dict (``results.json``'s content)."""
    res = dict(res)
    made = figures(res, out)
    path = out / "report.md"
    from hlvm.io import atomic_file

    with atomic_file(path) as f:
        f.write(markdown(res, made))
    return path


def report_folder(out: Path) -> Path:
    """Redraw ``out``'s figures and ``report.md`` from ``out/results.json``; DataError if that file is unusable."""
    from hlvm.errors import DataError
    from hlvm.io import read_json

    return write_report(read_json(out / "results.json", "results", DataError), out)
