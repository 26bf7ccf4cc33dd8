"""Figures and report.md of the Fashion-MNIST mask study, from results.json and the saved arrays.

The verdicts are computed from the numbers with the rules written next to
them, never typed in: Kong et al. claim (Table 1) that probe accuracy rises
with the mask ratio up to 0.75 and falls at 0.9, and (Figure 5) that SSIM and
FSIM rise from 0.1 to 0.75 while 0.9 is better on the low-level metrics
(PSNR, -MSE) than 0.75; and that accuracy and SSIM/FSIM grow with the masking
unit up to some size.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

METRICS = [("ssim", "SSIM"), ("fsim", "FSIM"), ("psnr", "PSNR (dB)"), ("mse", "-MSE")]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _series(rows, key, x):
    rows = sorted(rows, key=lambda r: r[x])
    return [r[x] for r in rows], [(-r[key] if key.endswith("_mse") else r[key]) for r in rows]


def _split(result):
    g = result["config"]["grid"]
    unit0, ratio0 = g["mask_ratios_at_unit"]["unit"], g["mask_units_at_ratio"]["ratio"]
    by_ratio = [r for r in result["rows"] if r["mask_unit"] == unit0]
    by_unit = [r for r in result["rows"] if r["mask_ratio"] == ratio0]
    return by_ratio, by_unit


def figures(result, arrays: Path, out: Path) -> list[str]:
    plt = _plt()
    by_ratio, by_unit = _split(result)
    made = []
    # Table 1 analogue: probe accuracy.
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, rows, x, label in ((axes[0], by_ratio, "mask_ratio", "mask ratio (unit 4)"),
                               (axes[1], by_unit, "mask_unit", "masking unit, px (ratio 0.75)")):
        for pool, style in (("mean", "o-"), ("cls", "s--")):
            xs, ys = _series(rows, f"probe_top1_{pool}", x)
            ax.plot(xs, [100 * y for y in ys], style, label=f"{pool} pool")
        b = result["baselines"]
        ax.axhline(100 * b["untrained_top1_mean"], color="gray", ls=":", label="untrained encoder (mean)")
        ax.axhline(100 * b["raw_pixels_top1"], color="k", ls="-.", lw=0.8, label="raw pixels")
        ax.set_xlabel(label)
        ax.set_ylabel("linear probe top-1 (%)")
        if x == "mask_unit":
            ax.set_xscale("log", base=2)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "probe.png", dpi=110)
    plt.close(fig)
    made.append("probe.png")
    # Figure 5 analogue: reconstruction metrics, without masking and under the training mask.
    for tag, title in (("nomask", "without masking (Kong et al.'s protocol)"), ("trainmask", "under the training mask")):
        fig, axes = plt.subplots(2, 4, figsize=(12, 5.2))
        for r_i, (rows, x, label) in enumerate(((by_ratio, "mask_ratio", "mask ratio"), (by_unit, "mask_unit", "unit (px)"))):
            for c_i, (key, name) in enumerate(METRICS):
                xs, ys = _series(rows, f"{tag}_{key}", x)
                ax = axes[r_i][c_i]
                ax.plot(xs, ys, "o-")
                ax.set_xlabel(label)
                ax.set_title(name, fontsize=9)
                if x == "mask_unit":
                    ax.set_xscale("log", base=2)
        fig.suptitle(f"Reconstruction of held-out images {title}", fontsize=10)
        fig.tight_layout()
        fig.savefig(out / f"recon_{tag}.png", dpi=110)
        plt.close(fig)
        made.append(f"recon_{tag}.png")
    # Examples: per run, original / masked / reconstruction, and the cls attention.
    rows = sorted(result["rows"], key=lambda r: (r["mask_unit"], r["mask_ratio"]))
    k = result["config"]["eval"]["n_figure_images"]
    fig, axes = plt.subplots(len(rows) + 1, 2 * k, figsize=(1.0 * 2 * k, 1.1 * (len(rows) + 1)), squeeze=False)
    first = np.load(arrays / f"{rows[0]['run']}-trainmask.npy")  # (3, k, H, W): original, masked, reconstruction
    for j in range(k):
        axes[0][j].imshow(first[0, j], cmap="gray", vmin=0, vmax=1)
        axes[0][k + j].imshow(first[0, j], cmap="gray", vmin=0, vmax=1)
    axes[0][0].set_ylabel("original", fontsize=7)
    for i, r in enumerate(rows, start=1):
        a = np.load(arrays / f"{r['run']}-trainmask.npy")
        att = np.load(arrays / f"{r['run']}-attention.npy")  # (k, h, w)
        for j in range(k):
            axes[i][j].imshow(np.concatenate([a[1, j], a[2, j]], axis=0), cmap="gray", vmin=0, vmax=1)
            axes[i][k + j].imshow(att[j], cmap="inferno")
        axes[i][0].set_ylabel(f"r{r['mask_ratio']} u{r['mask_unit']}", fontsize=7)
    for row in axes:
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0][0].set_title("masked input over reconstruction", fontsize=7, loc="left")
    axes[0][k].set_title("last-layer cls attention (head mean)", fontsize=7, loc="left")
    fig.tight_layout(pad=0.2)
    fig.savefig(out / "examples.png", dpi=110)
    plt.close(fig)
    made.append("examples.png")
    return made


def verdicts(result) -> list[str]:
    """Each claim, the rule applied to our numbers, and the outcome."""
    by_ratio, by_unit = _split(result)
    acc = {r["mask_ratio"]: r["probe_top1_mean"] for r in by_ratio}
    ratios = sorted(acc)
    best = max(ratios, key=lambda r: acc[r])
    out = []
    rising = all(acc[a] < acc[b] for a, b in zip(ratios, ratios[1:]) if b <= 0.75)
    out.append(
        f"Table 1, mask ratio (probe, mean pool): best ratio {best} ({100 * acc[best]:.1f}%); Kong et al.'s peak is 0.75. "
        f"Accuracy strictly rising over 0.1..0.75: {'yes' if rising else 'no'}; "
        f"0.9 below 0.75: {'yes' if acc.get(0.9, 1) < acc.get(0.75, 0) else 'no'}. "
        f"Trend {'appears' if rising and best == 0.75 else 'does not appear (fully)'}."
    )
    acc_u = {r["mask_unit"]: r["probe_top1_mean"] for r in by_unit}
    units = sorted(acc_u)
    best_u = max(units, key=lambda u: acc_u[u])
    out.append(
        f"Table 1, masking unit at ratio 0.75 (probe, mean pool): "
        + ", ".join(f"unit {u}: {100 * acc_u[u]:.1f}%" for u in units)
        + f"; best unit {best_u}. Kong et al. (ImageNet, ViT patch 8): 8 < 16 < 32 in Table 1."
    )
    for tag in ("nomask", "trainmask"):
        s = {r["mask_ratio"]: r for r in by_ratio}
        rise = {m: all(s[a][f"{tag}_{m}"] < s[b][f"{tag}_{m}"] for a, b in zip(ratios, ratios[1:]) if b <= 0.75)
                for m in ("ssim", "fsim")}
        low9 = {m: (s[0.9][f"{tag}_{m}"] > s[0.75][f"{tag}_{m}"]) if m == "psnr" else
                (s[0.9][f"{tag}_mse"] < s[0.75][f"{tag}_mse"]) for m in ("psnr", "mse")} if 0.9 in s and 0.75 in s else {}
        out.append(
            f"Figure 5 ({'no masking' if tag == 'nomask' else 'training mask'}): SSIM rising 0.1..0.75: "
            f"{'yes' if rise['ssim'] else 'no'}; FSIM rising 0.1..0.75: {'yes' if rise['fsim'] else 'no'}; "
            f"0.9 better than 0.75 on PSNR: {'yes' if low9.get('psnr') else 'no'}, on MSE: {'yes' if low9.get('mse') else 'no'}."
        )
    return out


def _table(rows, keys, fmt):
    head = "| " + " | ".join(k for k, _ in keys) + " |\n|" + "---|" * len(keys) + "\n"
    body = ""
    for r in rows:
        body += "| " + " | ".join(fmt(k, r[k]) for _, k in keys) + " |\n"
    return head + body


def write_report(result, arrays: Path, out: Path) -> None:
    made = figures(result, arrays, out)
    cfg = result["config"]
    rows = sorted(result["rows"], key=lambda r: (r["mask_unit"] != cfg["grid"]["mask_ratios_at_unit"]["unit"],
                                                 r["mask_unit"], r["mask_ratio"]))

    def fmt(k, v):
        if k in ("mask_ratio", "mask_unit"):
            return str(v)
        if k.startswith("probe"):
            return f"{100 * v:.2f}"
        if k.endswith("mse") or k.endswith("mse_masked"):
            return f"{v:.5f}"
        if isinstance(v, float):
            return f"{v:.4f}" if abs(v) < 10 else f"{v:.2f}"
        return str(v)

    keys = [("ratio", "mask_ratio"), ("unit", "mask_unit"), ("loss", "final_loss"),
            ("probe mean %", "probe_top1_mean"), ("probe cls %", "probe_top1_cls"), ("eff. rank", "effective_rank"),
            ("SSIM", "nomask_ssim"), ("FSIM", "nomask_fsim"), ("PSNR", "nomask_psnr"), ("MSE", "nomask_mse"),
            ("SSIM m", "trainmask_ssim"), ("FSIM m", "trainmask_fsim"), ("PSNR m", "trainmask_psnr"),
            ("MSE m", "trainmask_mse"), ("masked-px MSE", "trainmask_mse_masked")]
    b = result["baselines"]
    prov = result["provenance"]
    text = f"""# Fashion-MNIST mask study: results

Generated by `studies/fashion-mnist-mask/run.py` (git {prov.get('git_commit')}, {prov.get('created_utc')}),
{result['total_seconds']:.0f} s in all with {result['torch_threads']} torch thread(s) on CPU. Raw numbers:
`results.json`. Data: {result['counts']['train']} training and {result['counts']['val']} held-out images
(class-balanced, seed {cfg['dataset']['subset_seed']}), 28 px resized to {cfg['model']['img_size']} px.
Model: ViT {cfg['model']['embed_dim']}/{cfg['model']['depth']}/{cfg['model']['num_heads']}, decoder
{cfg['model']['decoder_embed_dim']}/{cfg['model']['decoder_depth']}, token patch {cfg['model']['patch_size']},
pixel loss; {cfg['train']['steps']} steps of batch {cfg['train']['batch_size']} per run, one seed.

Columns without "m": reconstruction without masking (Kong et al.'s Figure 5 protocol); with "m": under the
run's own training mask (visible patches copied, so only the masked pixels differ). Probe: L-BFGS linear
probe (standardised features) trained on the training images, top-1 on the held-out ones.

Baselines: raw pixels {100 * b['raw_pixels_top1']:.2f}%; untrained encoder {100 * b['untrained_top1_mean']:.2f}% (mean
pool), {100 * b['untrained_top1_cls']:.2f}% (cls).

{_table(rows, keys, fmt)}
## Verdicts (computed from the table)

""" + "\n".join(f"- {v}" for v in verdicts(result)) + "\n\n## Figures\n\n" + "\n".join(
        f"![{m}]({m})" for m in made) + "\n"
    (out / "report.md").write_text(text)


if __name__ == "__main__":
    res_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent / "results"
    work = Path(sys.argv[2]) if len(sys.argv) > 2 else Path("/tmp/hlvm-fashion-mnist")
    write_report(json.loads((res_dir / "results.json").read_text()), work / "arrays", res_dir)
