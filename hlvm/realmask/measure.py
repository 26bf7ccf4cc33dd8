"""What the study measures of an encoder: linear-probe top-1, effective rank, Figure-5 metrics, attention maps.

All on the evaluation view of the images (:func:`hlvm.data.eval_resize`),
computed in batches so that the 60,000 training images never sit in memory
as floats. The probe is :func:`hlvm.probe.fit_probe`'s L-BFGS (standardised
features, multinomial logistic regression with an L2 penalty), fitted on the
whole training split and scored on the whole test split.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from hlvm.data import TensorImages, eval_resize

POOLS = ("mean", "cls")


def eval_batches(data: TensorImages, img_size: int, crop_fraction: float, batch: int):
    """Yield ``(start, (B, C, S, S) normalised images)`` over ``data`` in order."""
    for i in range(0, len(data), batch):
        yield i, eval_resize(data.images[i : i + batch], img_size, crop_fraction=crop_fraction)


@torch.no_grad()
def features(
    model: nn.Module, data: TensorImages, img_size: int, crop_fraction: float, *, device: torch.device,
    batch: int = 256, on_batch: Callable[[int], None] | None = None,
) -> dict[str, np.ndarray]:
    """``{"mean": (N, D), "cls": (N, D)}`` float32: the frozen encoder with nothing masked, pooled two ways."""
    model.eval()
    out: dict[str, list[np.ndarray]] = {p: [] for p in POOLS}
    for _, x in eval_batches(data, img_size, crop_fraction, batch):
        tokens = model.forward_features(x.to(device)).float()  # (B, 1+L, D)
        out["cls"].append(tokens[:, 0].cpu().numpy())
        out["mean"].append(tokens[:, 1:].mean(1).cpu().numpy())
        if on_batch is not None:
            on_batch(len(x))
    return {p: np.concatenate(v) for p, v in out.items()}


def pixels(data: TensorImages, img_size: int, crop_fraction: float) -> np.ndarray:
    """``(N, C * S * S)`` float32: the normalised evaluation pixels, the raw-pixel control's features."""
    return np.concatenate([x.flatten(1).numpy() for _, x in eval_batches(data, img_size, crop_fraction, 5000)])


def probe_config(ev: dict[str, Any]) -> Any:
    """The study's probe (``eval.probe`` of the config): L-BFGS, seed 0, for every encoder and the pixels alike."""
    from hlvm.probe import ProbeConfig

    return ProbeConfig(method="lbfgs", l2=ev["probe"]["l2"], max_iter=ev["probe"]["max_iter"], seed=0)


def probe(f_train: np.ndarray, y_train: Any, f_test: np.ndarray, y_test: Any, pcfg: Any) -> dict[str, float]:
    """``{"top1", "train_top1"}`` (fractions) of the L-BFGS probe."""
    from hlvm.probe import fit_probe

    res = fit_probe(f_train, np.asarray(y_train), f_test, np.asarray(y_test), pcfg)
    return {"top1": float(res.top1), "train_top1": float(res.train_top1)}


def pixel_probe(train: TensorImages, test: TensorImages, ev: dict[str, Any], img_size: int) -> dict[str, float]:
    """The raw-pixel control: :func:`probe` on :func:`pixels` of both splits."""
    crop = ev["crop_fraction"]
    return probe(pixels(train, img_size, crop), train.labels, pixels(test, img_size, crop), test.labels, probe_config(ev))


def pca_probe(train: TensorImages, test: TensorImages, ev: dict[str, Any], img_size: int, k: int) -> dict[str, float]:
    """The PCA control: the top-``k`` principal components of the training split's pixels, then :func:`probe`.

    The components are fitted on the training images only (the eval view,
    :func:`pixels`), by :func:`hlvm.controls.pca_basis`, so the control is as
    wide as the encoder it stands beside and learned nothing but second moments.
    """
    from hlvm.controls import PixelMoments, pca_basis

    crop = ev["crop_fraction"]
    xtr, xte = pixels(train, img_size, crop), pixels(test, img_size, crop)
    c = train.images.shape[1]
    moments = PixelMoments.of(xtr.reshape(len(xtr), c, img_size, img_size))
    basis = pca_basis(moments.cov, k)  # (D, k) float64
    ftr = ((xtr - moments.mean) @ basis).astype(np.float32)
    fte = ((xte - moments.mean) @ basis).astype(np.float32)
    p = probe(ftr, train.labels, fte, test.labels, probe_config(ev))
    total = float(np.trace(moments.cov))
    kept = float(np.einsum("ij,ik,kj->", basis, moments.cov, basis))  # variance along the basis
    return {**p, "width": int(basis.shape[1]), "explained_variance": kept / total if total > 0 else math.nan}


def encoder_row(model: nn.Module, train: TensorImages, test: TensorImages, ev: dict[str, Any], img_size: int, *,
                device: torch.device, on_batch: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Probe top-1 per pool (and its training accuracy) and the effective rank of the test features, per pool."""
    from hlvm.recon import effective_rank

    crop = ev["crop_fraction"]
    pcfg = probe_config(ev)
    ftr = features(model, train, img_size, crop, device=device, on_batch=on_batch)
    fte = features(model, test, img_size, crop, device=device, on_batch=on_batch)
    row: dict[str, Any] = {"feature_dim": int(fte["mean"].shape[1])}
    for pool in POOLS:
        p = probe(ftr[pool], train.labels, fte[pool], test.labels, pcfg)
        row[f"probe_top1_{pool}"], row[f"probe_train_top1_{pool}"] = p["top1"], p["train_top1"]
        row[f"effective_rank_{pool}"] = float(effective_rank(fte[pool].astype(np.float64)))
    return row


def recon_subset(test: TensorImages, n: int) -> torch.Tensor:
    """The indices of the ``n`` test images the reconstruction metrics use: evenly spread, fixed."""
    return torch.as_tensor(np.linspace(0, len(test) - 1, min(n, len(test))).astype(np.int64))


def _u8(x: torch.Tensor) -> list:
    """[0, 1] images -> nested lists of uint8 (for results.json: the figures need no other file)."""
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).tolist()


@torch.no_grad()
def recon_row(model: nn.Module, test: TensorImages, ev: dict[str, Any], img_size: int, mask_ratio: float | None,
              *, n_examples: int) -> tuple[dict[str, float], dict[str, Any]]:
    """Figure 5's metrics (MSE, PSNR, SSIM, FSIM) without masking and, if ``mask_ratio``, under the training mask.

    On the CPU (a few hundred 32 px images). Returns the metrics (means over
    images, plus ``mse_masked``) and the figure's examples: the first
    ``n_examples`` images as uint8 lists, original / masked input /
    reconstruction per protocol, and the head-averaged cls attention maps.
    """
    from hlvm.recon import cls_attention, reconstruct, reconstruction_metrics

    model = model.cpu().eval()
    idx = recon_subset(test, ev["recon_images"])
    x = torch.cat([b for _, b in eval_batches(test.subset(idx), img_size, ev["crop_fraction"], 500)])
    row: dict[str, float] = {}
    examples: dict[str, Any] = {}
    protocols = [("nomask", 0.0)] + ([("trainmask", mask_ratio)] if mask_ratio else [])
    for tag, ratio in protocols:
        # The same seeded masks for every run of a unit grid: differences between runs are the models'.
        rec = reconstruct(model, x, ratio, torch.Generator().manual_seed(ev["recon_seed"]))
        for key, v in reconstruction_metrics(rec.reconstruction, rec.original).items():
            row[f"{tag}_{key}"] = float(v.mean())
        row[f"{tag}_mse_masked"] = float(rec.mse_masked.mean())
        k = n_examples
        examples[tag] = {"masked": _u8(rec.masked[:k, 0]), "reconstruction": _u8(rec.reconstruction[:k, 0])}
        examples["original"] = _u8(rec.original[:k, 0])
    att = cls_attention(model, x[:n_examples]).mean(1)  # (k, h, w) head mean
    examples["attention"] = np.round(att.numpy(), 4).tolist()
    return row, examples
