"""Reconstruction metrics of Kong et al.'s Figure 5, feature effective rank, saved images and attention maps.

Metrics act on ``(N, C, H, W)`` images with values in ``[0, data_range]``
(default 1), per image:

- :func:`mse`, :func:`psnr` (``10 log10(data_range^2 / MSE)``): exact, the
  definitions of ``skimage.metrics``;
- :func:`ssim`: piq's Gaussian-window SSIM (11 x 11, sigma 1.5, K1 0.01, K2
  0.03, valid region) with ``downsample=False`` (piq's default shrinks images
  larger than 256 px before measuring, silently); equal to
  ``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False)``;
- :func:`fsim`: piq's FSIM (FSIMc on 3 channels). piq 0.8 has no
  ``downsample`` switch for FSIM and average-pools by
  ``round(min(H, W) / 256)``, which is 1 (no pooling) below 384 px; larger
  images raise :class:`ConfigError` rather than being measured at a hidden
  lower resolution (a newer piq with the switch gets ``downsample=False``).

:func:`reconstruct` runs a trained MAE on a batch under a seeded random mask
and returns the original, the masked input and the reconstruction (visible
patches from the original, masked ones predicted, as MAE's demo shows them).
A norm-pix model predicts each patch up to its own mean and variance; those
are taken from the original patch to draw it (MAE's visualisation does the
same), which flatters the metrics, so :func:`run_recon` records
``norm_pix_loss`` beside them, and ``mse_masked`` on masked pixels only.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hlvm.errors import ConfigError, DataError

__all__ = [
    "mse",
    "psnr",
    "ssim",
    "fsim",
    "effective_rank",
    "reconstruction_metrics",
    "Reconstruction",
    "reconstruct",
    "cls_attention",
    "ReconConfig",
    "run_recon",
]


def _pair(x: Any, y: Any, data_range: float) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.as_tensor(x, dtype=torch.float64)
    y = torch.as_tensor(y, dtype=torch.float64)
    if x.shape != y.shape or x.ndim != 4:
        raise DataError(f"metrics need two (N, C, H, W) images of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    lo = min(float(x.min()), float(y.min()))
    hi = max(float(x.max()), float(y.max()))
    if lo < -1e-9 or hi > data_range + 1e-9:
        raise DataError(f"image values must lie in [0, {data_range}], got [{lo:.4g}, {hi:.4g}]")
    return x, y


def mse(x: Any, y: Any, data_range: float = 1.0) -> torch.Tensor:
    """Mean squared error per image, ``(N,)``."""
    x, y = _pair(x, y, data_range)
    return ((x - y) ** 2).mean(dim=(1, 2, 3))


def psnr(x: Any, y: Any, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image, ``(N,)``; ``inf`` for identical images."""
    m = mse(x, y, data_range)
    return 10.0 * torch.log10(data_range**2 / m)


def ssim(x: Any, y: Any, data_range: float = 1.0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """SSIM per image, ``(N,)``: piq with ``downsample=False`` (module docstring).

    ``dtype``: piq's 11 x 11 convolutions are about ten times slower in
    float64 on CPU; float32 agrees with skimage's float64 value to ~1e-5.
    """
    import piq

    x, y = _pair(x, y, data_range)
    x, y = x.to(dtype), y.to(dtype)
    if min(x.shape[-2:]) < 11:
        raise ConfigError(f"SSIM's 11x11 window needs images of at least 11 px, got {tuple(x.shape[-2:])}")
    return piq.ssim(x, y, data_range=data_range, kernel_size=11, kernel_sigma=1.5, k1=0.01, k2=0.03,
                    reduction="none", downsample=False)


def fsim(x: Any, y: Any, data_range: float = 1.0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """FSIM per image, ``(N,)`` (FSIMc for 3 channels); piq, never downsampled (module docstring)."""
    import piq

    x, y = _pair(x, y, data_range)
    x, y = x.to(dtype), y.to(dtype)
    if x.shape[1] not in (1, 3):
        raise ConfigError(f"FSIM needs 1 or 3 channels, got {x.shape[1]}")
    kwargs: dict[str, Any] = {}
    if "downsample" in inspect.signature(piq.fsim).parameters:
        kwargs["downsample"] = False
    elif round(min(x.shape[-2:]) / 256) > 1:
        raise ConfigError(
            f"piq {piq.__version__} FSIM would average-pool {tuple(x.shape[-2:])} images before measuring; "
            "use images under 384 px or a piq with downsample=False"
        )
    return piq.fsim(x, y, data_range=data_range, chromatic=x.shape[1] == 3, reduction="none", **kwargs)


def effective_rank(features: Any) -> float:
    """Effective rank of ``(n_samples, n_features)`` features (U-MAE's collapse diagnostic).

    :func:`hlvm.metrics.effective_rank` (Roy & Vetterli: ``exp`` of the entropy
    of the normalised singular values of the centred features).
    """
    from hlvm.metrics import effective_rank as _er

    return _er(np.asarray(features, dtype=np.float64))


def reconstruction_metrics(x: Any, y: Any, data_range: float = 1.0) -> dict[str, torch.Tensor]:
    """``{"mse", "psnr", "ssim", "fsim"}``, each ``(N,)``."""
    return {
        "mse": mse(x, y, data_range),
        "psnr": psnr(x, y, data_range),
        "ssim": ssim(x, y, data_range),
        "fsim": fsim(x, y, data_range),
    }


# --- running a model -------------------------------------------------------------


@dataclass
class Reconstruction:
    """One batch, all ``(N, C, H, W)`` in [0, 1] pixel space; ``pixel_mask`` ``(N, 1, H, W)``, 1 = masked."""

    original: torch.Tensor
    masked: torch.Tensor
    reconstruction: torch.Tensor
    pixel_mask: torch.Tensor
    mse_masked: torch.Tensor  # (N,) MSE over masked pixels only
    features: torch.Tensor  # (N, F) the model's code of the masked image (MAEOutput.features)


@torch.no_grad()
def reconstruct(
    model: nn.Module, imgs: torch.Tensor, mask_ratio: float, generator: torch.Generator, *, normalized: bool = True
) -> Reconstruction:
    """Run ``model`` on ``imgs`` ``(N, C, H, W)`` under a random whole-unit mask drawn from ``generator``.

    ``mask_ratio=0`` reconstructs without masking (Kong et al.'s Figure 5:
    "using the validation set without masking"); ``mse_masked`` is then the
    whole-image MSE.

    ``normalized``: ``imgs`` carry :mod:`hlvm.data`'s normalisation (undone
    for the returned pixel images); otherwise they are already in [0, 1].
    """
    from hlvm.data import denormalize
    from hlvm.models.base import patchify, unpatchify

    cfg = model.cfg
    p, c = cfg.patch_size, cfg.in_chans
    if mask_ratio == 0:
        pred, token_mask, features = _reconstruct_unmasked(model, imgs)
    else:
        out = model(imgs, mask_ratio=mask_ratio, generator=generator)
        pred, token_mask, features = out.pred.float(), out.mask.float(), out.features.float()
    if cfg.norm_pix_loss:
        target = patchify(imgs.float(), p)  # (N, L, p*p*C)
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        pred = pred * (var + 1.0e-6) ** 0.5 + mean
    recon = unpatchify(pred, p, cfg.token_grid, c)  # (N, C, H, W)
    tok = token_mask.reshape(imgs.shape[0], *cfg.token_grid)  # (N, h, w)
    pix = tok.repeat_interleave(p, dim=1).repeat_interleave(p, dim=2)[:, None]  # (N, 1, H, W)
    to_pixels = (lambda t: denormalize(t, c)) if normalized else (lambda t: t)
    original = to_pixels(imgs.float()).clamp(0, 1)
    recon = to_pixels(recon).clamp(0, 1)
    if mask_ratio == 0:
        # Nothing masked: every pixel is predicted, and the "masked" pixels are all of them.
        pasted, masked = recon, original
        per_pixel = ((recon - original) ** 2).sum(dim=1, keepdim=True)  # (N, 1, H, W)
        mse_masked = per_pixel.mean(dim=(1, 2, 3)) / c
        return Reconstruction(original, masked, pasted, pix, mse_masked, features)
    pasted = original * (1 - pix) + recon * pix
    masked = original * (1 - pix)
    per_pixel = ((pasted - original) ** 2).sum(dim=1, keepdim=True)  # (N, 1, H, W)
    mse_masked = (per_pixel * pix).sum(dim=(1, 2, 3)) / (pix.sum(dim=(1, 2, 3)) * c)
    return Reconstruction(original, masked, pasted, pix, mse_masked, features)


def _reconstruct_unmasked(model: nn.Module, imgs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Kong et al.'s Figure 5 protocol: encode every token, decode every token, nothing masked.

    MAE's decoder appends one mask token per missing token; with none missing
    it decodes the full encoder output in place (``ids_restore`` the identity).
    A bottleneck decoder only predicts masked positions, so it has no
    unmasked reconstruction: :class:`ConfigError`.
    """
    if not hasattr(model, "forward_features") or getattr(model.cfg, "bottleneck", None) is not None:
        raise ConfigError("mask ratio 0 (no masking) needs a ViT MAE without a bottleneck; give a ratio in (0, 1)")
    latent = model.forward_features(imgs)  # (N, 1+L, D)
    n, length = imgs.shape[0], model.cfg.num_tokens
    ids_restore = torch.arange(length, device=imgs.device).expand(n, -1)  # (N, L) identity
    pred = model.forward_decoder(latent, ids_restore).float()  # (N, L, p*p*C)
    return pred, torch.zeros(n, length), latent[:, 1:].mean(1).float()


@torch.no_grad()
def cls_attention(model: nn.Module, imgs: torch.Tensor) -> torch.Tensor:
    """Last encoder block's attention from the cls token to every patch, ``(N, heads, h, w)``, nothing masked.

    The attention weights are recomputed from the last block's input (a hook
    on ``model.blocks[-1]``) with that block's own ``norm1`` and ``attn.qkv``,
    because the fused attention kernel never materialises them.
    """
    blocks = getattr(model, "blocks", None)
    if blocks is None or not hasattr(model, "forward_features"):
        raise DataError("attention maps need a ViT encoder (this model has no transformer blocks)")
    last = blocks[-1]
    seen: list[torch.Tensor] = []
    handle = last.register_forward_pre_hook(lambda mod, args: seen.append(args[0]))
    try:
        model.forward_features(imgs)
    finally:
        handle.remove()
    x = last.norm1(seen[-1])  # (N, 1+L, D)
    attn = last.attn
    n, t, d = x.shape
    heads = attn.num_heads
    qkv = attn.qkv(x).reshape(n, t, 3, heads, d // heads).permute(2, 0, 3, 1, 4)  # (3, N, heads, T, d_h)
    q, k = qkv[0], qkv[1]
    q, k = attn.q_norm(q), attn.k_norm(k)
    w = (q * attn.scale) @ k.transpose(-2, -1)  # (N, heads, T, T)
    w = w.softmax(dim=-1)
    gh, gw = model.cfg.token_grid
    return w[:, :, 0, 1:].reshape(n, heads, gh, gw)  # (N, heads, h, w), cls row over patches


# --- the command ------------------------------------------------------------------


@dataclass(frozen=True)
class ReconConfig:
    """``hlvm recon``: which run, which data, how many images, which masks."""

    run: str
    data: str
    out: str
    mask_ratio: float | None = None  # None: the run's training mask ratio; 0: no masking (Kong et al. Fig. 5)
    n_images: int = 64
    n_saved: int = 8
    batch_size: int = 32
    seed: int = 0
    pool: str = "mean"
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.mask_ratio is not None and not (
            isinstance(self.mask_ratio, int | float) and math.isfinite(self.mask_ratio) and 0 <= self.mask_ratio < 1
        ):
            raise ConfigError(f"mask ratio must be 0 (no masking) or in (0, 1), got {self.mask_ratio!r}")
        for name in ("n_images", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{name} must be a positive integer, got {v!r}")
        if isinstance(self.n_saved, bool) or not isinstance(self.n_saved, int) or self.n_saved < 0:
            raise ConfigError(f"n_saved must be an integer >= 0, got {self.n_saved!r}")
        if self.pool not in ("cls", "mean"):
            raise ConfigError(f"pool must be cls or mean, got {self.pool!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _save_grid(path: Path, rows: list[tuple[str, np.ndarray]], cmap: str | None = None) -> None:
    """One PNG: a row per named stack of ``(n, H, W[, C])`` images."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = rows[0][1].shape[0]
    fig, axes = plt.subplots(len(rows), n, figsize=(1.4 * n, 1.5 * len(rows)), squeeze=False)
    for r, (name, imgs) in enumerate(rows):
        for i in range(n):
            ax = axes[r][i]
            img = imgs[i]
            ax.imshow(img, cmap=cmap if img.ndim == 2 else None, vmin=0 if img.ndim == 3 else None,
                      vmax=1 if img.ndim == 3 else None)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_ylabel(name, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _hwc(x: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) in [0, 1] -> (N, H, W, 3) or (N, H, W) for plotting."""
    a = x.detach().cpu().numpy()
    return a[:, 0] if a.shape[1] == 1 else np.transpose(a[:, :3], (0, 2, 3, 1))


def run_recon(cfg: ReconConfig, progress: bool = True) -> dict[str, Any]:
    """Measure a run's reconstructions on the first ``n_images`` of an image folder (evaluation transforms).

    Writes into ``cfg.out`` (atomically): ``recon.json`` (mean and per-image
    metrics, effective rank, config, provenance), ``reconstructions.png``
    (original / masked / reconstruction rows) and ``attention.png`` (last-layer
    cls attention, head-averaged, ViT only). Returns the summary dict.
    """
    from torch.utils.data import DataLoader, Subset

    from hlvm.data import eval_dataset
    from hlvm.io import atomic_dir, provenance, write_json
    from hlvm.probe import _model_cfg, _pool, load_encoder, parse_imagefolder

    from hlvm.io import check_out_dir, check_writable

    check_out_dir(Path(cfg.out), cfg.overwrite)  # before minutes of work, not after
    check_writable(cfg.out)
    root = parse_imagefolder(cfg.data)
    model, tcfg = load_encoder(cfg.run)
    mcfg = _model_cfg(model, tcfg)
    ratio = cfg.mask_ratio if cfg.mask_ratio is not None else float(tcfg.mask_ratio)
    from hlvm.masks import num_masked

    if ratio != 0:
        num_masked(mcfg.num_units, ratio)  # MaskError now, not mid-run
    ds = eval_dataset(root, mcfg.img_hw[0], mcfg.in_chans)
    n = min(cfg.n_images, len(ds))
    loader = DataLoader(Subset(ds, list(range(n))), batch_size=cfg.batch_size, shuffle=False)
    gen = torch.Generator().manual_seed(cfg.seed)
    per_image: dict[str, list[float]] = {k: [] for k in ("mse", "psnr", "ssim", "fsim", "mse_masked")}
    feats: list[np.ndarray] = []
    first: Reconstruction | None = None
    attn: torch.Tensor | None = None
    is_vit = hasattr(model, "forward_features") and hasattr(model, "blocks")
    it: Any = loader
    if progress:
        from rich.progress import track

        it = track(loader, description="reconstructing", total=len(loader), transient=True)
    with torch.no_grad():
        for imgs, _ in it:
            rec = reconstruct(model, imgs, ratio, gen)
            for k, v in reconstruction_metrics(rec.reconstruction, rec.original).items():
                per_image[k] += v.tolist()
            per_image["mse_masked"] += rec.mse_masked.tolist()
            if is_vit:
                feats.append(_pool(model.forward_features(imgs), cfg.pool).numpy())  # (B, D), nothing masked
            else:
                feats.append(rec.features.numpy())  # (B, d): the MLP's code of the masked image
            if first is None:
                first = rec
                if is_vit:
                    attn = cls_attention(model, imgs[: cfg.n_saved])
    assert first is not None
    f = np.concatenate(feats)
    summary: dict[str, Any] = {
        "run": str(cfg.run),
        "data": cfg.data,
        "n_images": n,
        "mask_ratio": ratio,
        "mask_unit": mcfg.mask_unit,
        "patch_size": mcfg.patch_size,
        "norm_pix_loss": bool(mcfg.norm_pix_loss),
        **{k: float(np.mean(v)) for k, v in per_image.items()},
        "effective_rank": effective_rank(f) if len(f) > 1 else float("nan"),
        "feature_dim": int(f.shape[1]),
        "pool": cfg.pool,
        "per_image": per_image,
        "config": cfg.to_dict(),
        "provenance": provenance(),
    }
    with atomic_dir(cfg.out, overwrite=cfg.overwrite) as tmp:
        write_json(tmp / "recon.json", summary)
        k = min(cfg.n_saved, first.original.shape[0])
        if k:
            _save_grid(
                tmp / "reconstructions.png",
                [("original", _hwc(first.original[:k])), ("masked", _hwc(first.masked[:k])),
                 ("reconstruction", _hwc(first.reconstruction[:k]))],
                cmap="gray",
            )
            if attn is not None:
                maps = attn[:k].mean(1)  # (k, h, w), averaged over heads
                _save_grid(tmp / "attention.png", [("image", _hwc(first.original[:k])),
                                                   ("cls attention", maps.numpy())], cmap="inferno")
    return summary
