"""Fashion-MNIST mask study: a small ViT MAE per mask ratio and per masking unit, then probe and reconstruction.

    python studies/fashion-mnist-mask/run.py [--config config.json] [--work /tmp/hlvm-fmnist] [--steps N]

1. Installs Debian's ``dataset-fashion-mnist`` with apt-get if its files are
   missing (``/usr/share/datasets/fashion-mnist/*-idx*-ubyte.gz``).
2. Writes a seeded, class-balanced subset as an ImageFolder
   (``WORK/data/{train,val}/<class>/<index>.png``; 28 x 28 grayscale).
3. Trains one MAE per grid point through ``hlvm.train.train`` with
   ``--data imagefolder:WORK/data/train`` (MAE's pretraining transforms at 32 px).
4. Evaluates each run on the held-out ``val`` images: linear-probe top-1
   (L-BFGS on frozen mean-pooled and cls features, train split -> val split),
   reconstruction metrics (MSE, PSNR, SSIM, FSIM) without masking (Kong et
   al.'s Figure 5 protocol) and under the run's own training mask, the
   features' effective rank, reconstructions and cls attention maps. A
   randomly initialised encoder and raw pixels are probed as baselines.
5. Writes ``results/results.json`` (one row per run, raw numbers),
   ``results/*.png`` and ``results/report.md`` beside this script.

Every random draw is seeded from the config; the resolved config, the git
commit and timings are written with the results.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot"]
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "val": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def ensure_dataset(source: Path, package: str) -> None:
    """apt-get install ``package`` if the idx files are not in ``source`` (needs root and a package mirror)."""
    if all((source / f).is_file() for pair in FILES.values() for f in pair):
        return
    print(f"{source} missing: installing Debian package {package}", flush=True)
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    subprocess.run([*sudo, "apt-get", "update"], check=True)
    subprocess.run([*sudo, "apt-get", "install", "-y", package], check=True)
    missing = [f for pair in FILES.values() for f in pair if not (source / f).is_file()]
    if missing:
        sys.exit(f"error: {package} installed but {source} lacks {missing[0]}")


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (MNIST format): big-endian magic, dims, then uint8 data."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def write_imagefolder(source: Path, out: Path, per_class: dict[str, int], seed: int) -> dict[str, int]:
    """A class-balanced subset per split as PNGs; returns the number of images per split."""
    from PIL import Image

    counts = {}
    done = out / ".complete.json"
    want = {"per_class": per_class, "seed": seed}
    if done.is_file() and json.loads(done.read_text()) == want:
        return {s: per_class[s] * len(CLASSES) for s in per_class}
    shutil.rmtree(out, ignore_errors=True)
    rng = np.random.default_rng(seed)
    for split, (img_file, lbl_file) in FILES.items():
        images, labels = read_idx(source / img_file), read_idx(source / lbl_file)
        n = 0
        for c, name in enumerate(CLASSES):
            idx = np.sort(rng.permutation(np.flatnonzero(labels == c))[: per_class[split]])
            folder = out / split / f"{c}-{name}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in idx:
                Image.fromarray(images[i], mode="L").save(folder / f"{i:05d}.png")
            n += len(idx)
        counts[split] = n
    done.write_text(json.dumps(want))
    return counts


def model_config(cfg: dict, unit: int):
    from hlvm.models import MAEConfig

    return MAEConfig(**cfg["model"], mask_unit=unit)


def grid(cfg: dict) -> list[tuple[str, float, int]]:
    g = cfg["grid"]
    points = [(r, g["mask_ratios_at_unit"]["unit"]) for r in g["mask_ratios_at_unit"]["ratios"]]
    points += [(g["mask_units_at_ratio"]["ratio"], u) for u in g["mask_units_at_ratio"]["units"]]
    seen, out = set(), []
    for r, u in points:
        if (r, u) not in seen:
            seen.add((r, u))
            out.append((f"r{r}-u{u}", r, u))
    return out


def load_tensors(ds) -> tuple:
    """Every image of an evaluation-transform dataset as one ``(N, C, H, W)`` tensor, and the labels."""
    import torch

    return torch.stack([ds[i][0] for i in range(len(ds))]), np.asarray(ds.targets)


def pooled_features(model, x, batch: int = 500) -> dict:
    """Mean-pooled and cls features of frozen ``forward_features`` (nothing masked), one pass: {pool: (N, D)}."""
    import torch

    out = {"mean": [], "cls": []}
    with torch.no_grad():
        for i in range(0, len(x), batch):
            tokens = model.forward_features(x[i : i + batch])  # (B, 1+L, D)
            out["cls"].append(tokens[:, 0].numpy())
            out["mean"].append(tokens[:, 1:].mean(1).numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


def probe_all(model, train, val, pcfg) -> dict:
    from hlvm.probe import fit_probe

    ftr, fva = pooled_features(model, train[0]), pooled_features(model, val[0])
    row = {}
    for pool in ("mean", "cls"):
        res = fit_probe(ftr[pool], train[1], fva[pool], val[1], pcfg)
        row[f"probe_top1_{pool}"], row[f"probe_train_top1_{pool}"] = res.top1, res.train_top1
    from hlvm.recon import effective_rank

    row["effective_rank"] = effective_rank(fva["mean"])
    row["feature_dim"] = int(fva["mean"].shape[1])
    return row


def evaluate(model, train, val, cfg: dict, ratio: float, out: Path, name: str) -> dict:
    """Probe accuracies, reconstruction metrics (no mask and training mask), effective rank, figures."""
    import torch

    from hlvm.probe import ProbeConfig
    from hlvm.recon import cls_attention, reconstruct, reconstruction_metrics

    ev = cfg["eval"]
    pcfg = ProbeConfig(method="lbfgs", l2=ev["probe"]["l2"], max_iter=ev["probe"]["max_iter"])
    row = probe_all(model, train, val, pcfg)
    n = min(ev["recon_images"], len(val[0]))
    # A fixed subset spread over the (class-sorted) validation images.
    x = val[0][np.linspace(0, len(val[0]) - 1, n).astype(int)]
    k = ev["n_figure_images"]
    for tag, r in (("nomask", 0.0), ("trainmask", ratio)):
        rec = reconstruct(model, x, r, torch.Generator().manual_seed(ev["recon_seed"]))
        for key, v in reconstruction_metrics(rec.reconstruction, rec.original).items():
            row[f"{tag}_{key}"] = float(v.mean())
        row[f"{tag}_mse_masked"] = float(rec.mse_masked.mean())
        np.save(out / f"{name}-{tag}.npy", np.stack([rec.original[:k, 0].numpy(), rec.masked[:k, 0].numpy(),
                                                     rec.reconstruction[:k, 0].numpy()]))
    np.save(out / f"{name}-attention.npy", cls_attention(model, x[:k]).mean(1).numpy())  # (k, h, w)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=HERE / "config.json")
    ap.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "hlvm-fashion-mnist")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--steps", type=int, default=None, help="override the config's training steps (smoke runs)")
    ap.add_argument("--only", default=None, help="comma-separated run names (e.g. r0.75-u4) to run")
    args = ap.parse_args()

    import torch

    from hlvm.data import eval_dataset
    from hlvm.io import provenance, write_json
    from hlvm.models import build_model
    from hlvm.train import TrainConfig, load_run, train

    cfg = json.loads(args.config.read_text())
    if args.steps is not None:
        cfg["train"]["steps"] = args.steps
    t0 = time.time()
    ds_cfg = cfg["dataset"]
    source = Path(ds_cfg["source"])
    ensure_dataset(source, ds_cfg["debian_package"])
    data = args.work / "data"
    counts = write_imagefolder(source, data, {"train": ds_cfg["n_train_per_class"], "val": ds_cfg["n_val_per_class"]},
                               ds_cfg["subset_seed"])
    print(f"image folder: {counts} images in {data} ({time.time() - t0:.0f} s)", flush=True)

    m = cfg["model"]
    train_ds = eval_dataset(data / "train", m["img_size"], m["in_chans"])
    val_ds = eval_dataset(data / "val", m["img_size"], m["in_chans"])
    args.out.mkdir(parents=True, exist_ok=True)
    arrays = args.work / "arrays"
    arrays.mkdir(parents=True, exist_ok=True)
    rows = []

    t = time.time()
    train_t, val_t = load_tensors(train_ds), load_tensors(val_ds)
    print(f"loaded {len(train_t[0])} + {len(val_t[0])} images ({time.time() - t:.0f} s)", flush=True)

    # Baselines: raw pixels (after the evaluation transform) and an untrained encoder.
    from hlvm.probe import ProbeConfig, fit_probe

    pcfg = ProbeConfig(method="lbfgs", l2=cfg["eval"]["probe"]["l2"], max_iter=cfg["eval"]["probe"]["max_iter"])
    baselines = {"raw_pixels_top1": fit_probe(train_t[0].flatten(1), train_t[1], val_t[0].flatten(1), val_t[1],
                                              pcfg).top1}
    torch.manual_seed(cfg["train"]["seed"])
    untrained = build_model(model_config(cfg, 4)).eval()
    for k, v in probe_all(untrained, train_t, val_t, pcfg).items():
        if k.startswith("probe_top1"):
            baselines[k.replace("probe_top1", "untrained_top1")] = v
    print(f"baselines: {baselines} ({time.time() - t:.0f} s)", flush=True)

    only = set(args.only.split(",")) if args.only else None
    for name, ratio, unit in grid(cfg):
        if only and name not in only:
            continue
        t = time.time()
        tc = TrainConfig(model=model_config(cfg, unit), data=f"imagefolder:{data / 'train'}", mask_ratio=ratio,
                         device="cpu", out=str(args.work / "runs" / name), ckpt_every=0, log_every=10,
                         **cfg["train"])
        run = train(tc, progress=False, overwrite=True)
        t_train = time.time() - t
        losses = [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]
        model, _ = load_run(run)
        row = {"run": name, "mask_ratio": ratio, "mask_unit": unit, "patch_size": m["patch_size"],
               "steps": cfg["train"]["steps"], "final_loss": float(np.mean(losses[-3:])), "train_seconds": t_train}
        row.update(evaluate(model, train_t, val_t, cfg, ratio, arrays, name))
        row["eval_seconds"] = time.time() - t - t_train
        rows.append(row)
        print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)

    result = {"config": cfg, "counts": counts, "baselines": baselines, "rows": rows,
              "total_seconds": time.time() - t0, "torch_threads": torch.get_num_threads(), "provenance": provenance()}
    write_json(args.out / "results.json", result)
    from report import write_report  # studies/fashion-mnist-mask/report.py

    write_report(result, arrays, args.out)
    print(f"done in {time.time() - t0:.0f} s; report: {args.out / 'report.md'}", flush=True)


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    main()
