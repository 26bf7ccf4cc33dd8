"""Real images: ImageFolder datasets with MAE's transforms, and corrupt-file reporting.

Two pipelines, as in facebookresearch/mae:

- :func:`pretrain_dataset`: ``RandomResizedCrop(img_size, scale=(0.2, 1.0),
  bicubic)``, ``RandomHorizontalFlip``, ``ToTensor``, ImageNet normalisation
  (``main_pretrain.py``);
- :func:`eval_dataset`: ``Resize(256 / 224 * img_size, bicubic)``,
  ``CenterCrop(img_size)``, ``ToTensor``, the same normalisation
  (``main_linprobe.py``'s validation transform, scaled to any image size).

Channel counts: 3 reads images as RGB with ImageNet's mean/std; 1 reads them as
PIL ``"L"`` (luma) with one mean/std, the luma weights applied to ImageNet's
per-channel statistics; 4 reads RGBA, alpha normalised by 0.5/0.5. Other
counts have no natural PIL mode and raise :class:`ConfigError`.

Bad files are never skipped: the loader raises :class:`DataError` naming the
file, and :func:`check_images` lists every unreadable file in one pass, so a
long run can be checked before it starts rather than dying hours in.

Random transforms draw from torch's global generator (torchvision's choice);
``torch.manual_seed(s)`` before indexing, or a seeded ``DataLoader``, makes
the crops reproducible.

Small images held in memory (:class:`TensorImages`, e.g. Fashion-MNIST's
70,000 28 x 28 images, 55 MB as uint8) take the same two pipelines batched in
torch (:func:`mae_augment`, :func:`eval_resize`): one ``grid_sample`` call per
batch instead of a PIL decode, crop and resize per image. The crop boxes
follow torchvision's ``RandomResizedCrop.get_params`` exactly (ten tries of an
area and a log-uniform aspect ratio, integer boxes, the same centre-crop
fallback) but draw from an explicit ``torch.Generator``. Where the result
differs from torchvision's per-image transform on PIL images:

- resampling is torch's bicubic (``a = -0.75``, as ``F.interpolate``) on
  float pixels, where PIL's is ``a = -0.5`` on uint8 with rounding; taps that
  fall outside the crop read the image's own pixels beside it (clamped only at
  the image's border) where PIL clamps to the crop's edge; no antialiasing,
  which PIL applies only when shrinking (a crop of a 28 px image resized to
  32 px is always enlarged);
- the flip mirrors the sampling grid, the same image as flipping after the
  resize;
- values are clamped to [0, 1] before normalising, as ``ToTensor`` of a uint8
  image is.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hlvm.errors import ConfigError, DataError

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "channel_stats",
    "pretrain_transform",
    "eval_transform",
    "pretrain_dataset",
    "eval_dataset",
    "check_images",
    "BadImage",
    "load_image",
    "denormalize",
    "crop_boxes",
    "resized_crop",
    "mae_augment",
    "eval_resize",
    "TensorImages",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# ITU-R 601 luma weights: what PIL's convert("L") applies to R, G, B.
_LUMA = (0.299, 0.587, 0.114)
_MODES = {1: "L", 3: "RGB", 4: "RGBA"}


def channel_stats(in_chans: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Normalisation mean and std for ``in_chans`` channels (see the module docstring).

    >>> channel_stats(3)[0]
    (0.485, 0.456, 0.406)
    >>> [round(v, 4) for v in channel_stats(1)[0]]
    [0.459]
    """
    if in_chans == 3:
        return IMAGENET_MEAN, IMAGENET_STD
    if in_chans == 1:
        mean = sum(w * m for w, m in zip(_LUMA, IMAGENET_MEAN, strict=True))
        std = sum(w * s for w, s in zip(_LUMA, IMAGENET_STD, strict=True))
        return (mean,), (std,)
    if in_chans == 4:
        return IMAGENET_MEAN + (0.5,), IMAGENET_STD + (0.5,)
    raise ConfigError(f"in_chans must be 1, 3 or 4 for image folders, got {in_chans!r}")


def _check_size(img_size: int) -> None:
    if isinstance(img_size, bool) or not isinstance(img_size, int) or img_size < 1:
        raise ConfigError(f"img_size must be a positive integer, got {img_size!r}")


def load_image(path: str | os.PathLike[str], mode: str = "RGB") -> Any:
    """Open, fully decode and convert one image; raise :class:`DataError` naming the file if that fails.

    ``Image.open`` is lazy, so the pixels are decoded here (``convert``
    forces it): a truncated JPEG fails now, with its path, not later inside a
    transform with none.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with open(path, "rb") as f, Image.open(f) as img:
            return img.convert(mode)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
        reason = " ".join(str(e).split()) or type(e).__name__
        raise DataError(f"unreadable image {os.fspath(path)}: {reason}") from None


def _loader(mode: str) -> Callable[[str], Any]:
    # A named function object (not a lambda) so that DataLoader workers can pickle it.
    return _ModeLoader(mode)


@dataclass(frozen=True)
class _ModeLoader:
    mode: str

    def __call__(self, path: str) -> Any:
        return load_image(path, self.mode)


def pretrain_transform(img_size: int = 224, in_chans: int = 3) -> Any:
    """MAE's pretraining transform: random resized crop (scale 0.2-1, bicubic), flip, normalise."""
    from torchvision import transforms as T

    _check_size(img_size)
    mean, std = channel_stats(in_chans)
    return T.Compose(
        [
            T.RandomResizedCrop(img_size, scale=(0.2, 1.0), interpolation=T.InterpolationMode.BICUBIC),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(mean, std),
        ]
    )


def eval_transform(img_size: int = 224, in_chans: int = 3) -> Any:
    """MAE's evaluation transform: resize to ``256/224 * img_size`` (bicubic), centre crop, normalise."""
    from torchvision import transforms as T

    _check_size(img_size)
    mean, std = channel_stats(in_chans)
    # 256 for 224 as in MAE; int() as its main_finetune.py does for other sizes.
    resize = int(img_size * 256 / 224)
    return T.Compose(
        [
            T.Resize(resize, interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop(img_size),
            T.ToTensor(),
            T.Normalize(mean, std),
        ]
    )


def denormalize(x: Any, in_chans: int) -> Any:
    """Undo the normalisation of a ``(..., C, H, W)`` tensor, back to [0, 1] pixel values (unclamped)."""
    import torch

    mean, std = channel_stats(in_chans)
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    return x * s + m


def _image_folder(root: str | os.PathLike[str], transform: Any, in_chans: int, check: bool) -> Any:
    from torchvision.datasets import ImageFolder

    mode = _MODES.get(in_chans)
    if mode is None:
        channel_stats(in_chans)  # raises the one-line ConfigError
    path = Path(root)
    if not path.exists():
        raise DataError(f"image folder {path} does not exist")
    if not path.is_dir():
        raise DataError(f"image folder {path} is not a folder")
    if check:
        bad = check_images(path)
        if bad:
            listed = "; ".join(f"{b.path}: {b.reason}" for b in bad[:3])
            more = f" (and {len(bad) - 3} more; run check_images for all)" if len(bad) > 3 else ""
            raise DataError(f"{len(bad)} unreadable image(s) in {path}: {listed}{more}")
    try:
        ds = ImageFolder(os.fspath(path), transform=transform, loader=_loader(mode))
    except FileNotFoundError as e:
        # torchvision: "Couldn't find any class folder" / "Found no valid file for the classes ...".
        raise DataError(f"empty image folder {path}: {' '.join(str(e).split())}") from None
    return ds


def pretrain_dataset(
    root: str | os.PathLike[str], img_size: int = 224, in_chans: int = 3, *, check: bool = False
) -> Any:
    """An ImageFolder of ``(tensor (C, H, W), label)`` with MAE's pretraining transforms.

    ``root`` holds one sub-folder per class (ImageNet's ``train/`` layout).
    ``check=True`` pre-scans every file (:func:`check_images`) and raises
    :class:`DataError` listing the unreadable ones before anything trains.
    """
    return _image_folder(root, pretrain_transform(img_size, in_chans), in_chans, check)


def eval_dataset(
    root: str | os.PathLike[str], img_size: int = 224, in_chans: int = 3, *, check: bool = False
) -> Any:
    """An ImageFolder with MAE's deterministic evaluation transforms (resize, centre crop)."""
    return _image_folder(root, eval_transform(img_size, in_chans), in_chans, check)


@dataclass(frozen=True)
class BadImage:
    """One file :func:`check_images` could not decode, and why."""

    path: str
    reason: str


def check_images(root: str | os.PathLike[str], progress: bool = False) -> list[BadImage]:
    """Decode every image file ImageFolder would load under ``root``; return the ones that fail.

    Files are those with an extension torchvision's ImageFolder accepts, in
    class sub-folders, sorted; nothing is dropped from or added to the
    dataset, this only reports. Raises :class:`DataError` if ``root`` is
    missing.
    """
    from torchvision.datasets.folder import IMG_EXTENSIONS

    path = Path(root)
    if not path.is_dir():
        raise DataError(f"image folder {path} does not exist")
    files = sorted(
        p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMG_EXTENSIONS and p.parent != path
    )
    bad: list[BadImage] = []
    it: Any = files
    if progress:
        from rich.progress import track

        it = track(files, description="checking images", transient=True)
    for p in it:
        try:
            load_image(p, "RGB")
        except DataError as e:
            bad.append(BadImage(os.fspath(p), str(e).split(": ", 1)[-1]))
    return bad


# --- small images in memory, transformed in batches ---------------------------------


def crop_boxes(
    n: int,
    height: int,
    width: int,
    *,
    scale: tuple[float, float] = (0.2, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    generator: Any = None,
    attempts: int = 10,
) -> Any:
    """``(n, 4)`` int64 boxes ``(top, left, h, w)``: torchvision's ``RandomResizedCrop.get_params``, batched.

    Each image gets ``attempts`` candidates (area ``U(scale) * H * W``, aspect
    ratio log-uniform over ``ratio``, sides rounded); the first that fits is
    placed uniformly at random, and an image with none falls back to the
    central crop of the largest box within ``ratio``, as torchvision does.
    All draws come from ``generator`` (a seeded ``torch.Generator``).

    >>> import torch
    >>> b = crop_boxes(4, 28, 28, generator=torch.Generator().manual_seed(0))
    >>> tuple(b.shape), bool(((b[:, 0] + b[:, 2]) <= 28).all())
    ((4, 4), True)
    """
    import torch

    for name, (lo, hi) in (("scale", scale), ("ratio", ratio)):
        if not (0 < lo <= hi):
            raise ConfigError(f"crop {name} must be an increasing pair of positive numbers, got {(lo, hi)!r}")
    area = height * width
    u_area = torch.rand(n, attempts, generator=generator, dtype=torch.float64)  # (n, attempts)
    u_ratio = torch.rand(n, attempts, generator=generator, dtype=torch.float64)
    u_top = torch.rand(n, generator=generator, dtype=torch.float64)  # (n,)
    u_left = torch.rand(n, generator=generator, dtype=torch.float64)
    target = area * (scale[0] + (scale[1] - scale[0]) * u_area)
    log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u_ratio
    aspect = torch.exp(log_r)
    w = torch.round(torch.sqrt(target * aspect)).long()  # (n, attempts); round half to even, as Python's round
    h = torch.round(torch.sqrt(target / aspect)).long()
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = torch.where(ok.any(1), ok.float().argmax(1), torch.full((n,), -1))  # (n,) the first fitting try
    # torchvision's fallback: the centre crop of the whole image, narrowed to the ratio range.
    in_ratio = width / height
    if in_ratio < min(ratio):
        fw, fh = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        fw, fh = int(round(height * max(ratio))), height
    else:
        fw, fh = width, height
    rows = torch.arange(n)
    pick = first.clamp(min=0)
    bw = torch.where(first >= 0, w[rows, pick], torch.full((n,), fw))
    bh = torch.where(first >= 0, h[rows, pick], torch.full((n,), fh))
    # randint(0, H - h + 1) from a uniform: floor(u * (H - h + 1)), never H - h + 1 since u < 1.
    top = torch.where(first >= 0, (u_top * (height - bh + 1)).floor().long(), torch.full((n,), (height - fh) // 2))
    left = torch.where(first >= 0, (u_left * (width - bw + 1)).floor().long(), torch.full((n,), (width - fw) // 2))
    return torch.stack([top, left, bh, bw], dim=1)  # (n, 4)


def resized_crop(images: Any, boxes: Any, size: int, *, flip: Any = None, mode: str = "bicubic") -> Any:
    """Crop ``boxes`` ``(N, 4)`` (top, left, h, w) out of ``images`` ``(N, C, H, W)`` and resize each to ``size``.

    uint8 images are read as ``x / 255``; the result is float32 ``(N, C,
    size, size)`` clamped to [0, 1]. ``flip`` ``(N,)`` bool mirrors the chosen
    images left-right. One ``grid_sample`` for the batch: output pixel ``u``
    samples the crop at ``left + (u + 1/2) w / size - 1/2``, the pixel-centre
    convention of ``F.interpolate(align_corners=False)``, so the whole-image
    box gives exactly ``F.interpolate(images, size, mode=mode)`` (tested);
    taps outside the crop read the image beside it, clamped at its border.
    """
    import torch
    import torch.nn.functional as F

    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    n, c, height, width = x.shape
    b = boxes.to(torch.float32)
    top, left, bh, bw = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    sx = bw / width
    if flip is not None:
        sx = torch.where(flip.bool(), -sx, sx)  # mirror the grid inside the crop
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = sx
    theta[:, 0, 2] = (2 * left + bw) / width - 1
    theta[:, 1, 1] = bh / height
    theta[:, 1, 2] = (2 * top + bh) / height - 1
    grid = F.affine_grid(theta.to(x.device), [n, c, size, size], align_corners=False)  # (N, S, S, 2)
    out = F.grid_sample(x, grid, mode=mode, padding_mode="border", align_corners=False)  # (N, C, S, S)
    return out.clamp_(0.0, 1.0)


def _normalize(x: Any, in_chans: int) -> Any:
    import torch

    mean, std = channel_stats(in_chans)
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s


def mae_augment(images: Any, img_size: int, generator: Any, *, scale: tuple[float, float] = (0.2, 1.0)) -> Any:
    """MAE's pretraining transform on a batch: ``(N, C, H, W)`` uint8 -> ``(N, C, img_size, img_size)`` normalised.

    Random resized crop (:func:`crop_boxes`, scale 0.2-1, aspect 3/4-4/3),
    bicubic resize, a horizontal flip with probability 1/2, and
    :func:`channel_stats` normalisation; every draw from ``generator``. The
    differences from torchvision's per-image transform are listed in the
    module docstring.
    """
    import torch

    _check_size(img_size)
    n, c, h, w = images.shape
    boxes = crop_boxes(n, h, w, scale=scale, generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5  # (N,)
    return _normalize(resized_crop(images, boxes.to(images.device), img_size, flip=flip.to(images.device)), c)


def eval_resize(images: Any, img_size: int, *, crop_fraction: float = 224 / 256) -> Any:
    """MAE's evaluation transform on a batch: the central square of side ``crop_fraction * min(H, W)``
    resized to ``img_size`` (bicubic), normalised; ``(N, C, H, W)`` uint8 -> ``(N, C, img_size, img_size)``.

    ``crop_fraction = 224/256`` is MAE's resize-then-centre-crop (up to the
    rounding of the crop's side); 1 resizes the whole image.
    """
    import torch

    _check_size(img_size)
    if not 0 < crop_fraction <= 1:
        raise ConfigError(f"crop_fraction must be in (0, 1], got {crop_fraction!r}")
    n, c, h, w = images.shape
    side = max(1, int(round(crop_fraction * min(h, w))))
    box = torch.tensor([(h - side) // 2, (w - side) // 2, side, side]).expand(n, 4)
    return _normalize(resized_crop(images, box.to(images.device), img_size), c)


@dataclass(frozen=True)
class TensorImages:
    """A labelled image set held in memory: ``images`` ``(N, C, H, W)`` uint8, ``labels`` ``(N,)`` int64.

    For data small enough to keep whole (Fashion-MNIST, CIFAR): decoded once,
    then transformed in batches by :func:`mae_augment` and :func:`eval_resize`.
    """

    images: Any
    labels: Any
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        import torch

        if not (isinstance(self.images, torch.Tensor) and self.images.dtype == torch.uint8 and self.images.ndim == 4):
            raise DataError("TensorImages needs images as a (N, C, H, W) uint8 tensor")
        if not (isinstance(self.labels, torch.Tensor) and self.labels.shape == (self.images.shape[0],)):
            raise DataError(f"TensorImages needs one label per image, got {tuple(self.labels.shape)} for {self.images.shape[0]}")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, idx: Any) -> TensorImages:
        """The images at ``idx`` (a sequence or tensor of indices), in that order."""
        import torch

        idx = torch.as_tensor(idx, dtype=torch.long)
        return TensorImages(self.images[idx], self.labels[idx], self.classes)

    @classmethod
    def from_folder(cls, root: str | os.PathLike[str], in_chans: int, size: int) -> TensorImages:
        """Decode every image of an ImageFolder once: shorter side resized to ``size`` (bicubic), centre-cropped square.

        Classes and order are ImageFolder's. An unreadable file raises
        :class:`DataError` naming it (:func:`load_image`); nothing is skipped.
        """
        import numpy as np
        import torch
        from PIL import Image
        from torchvision.datasets import ImageFolder

        _check_size(size)
        mode = _MODES.get(in_chans)
        if mode is None:
            channel_stats(in_chans)  # the one-line ConfigError
        path = Path(root)
        if not path.is_dir():
            raise DataError(f"image folder {path} does not exist")
        try:
            # The loader only lists files here; each is decoded below, once.
            folder = ImageFolder(os.fspath(path), loader=lambda p: p)
        except FileNotFoundError as e:
            raise DataError(f"empty image folder {path}: {' '.join(str(e).split())}") from None
        out = np.empty((len(folder.samples), size, size, in_chans), dtype=np.uint8)
        for i, (file, _) in enumerate(folder.samples):
            img = load_image(file, mode)
            w, h = img.size
            s = size / min(w, h)
            img = img.resize((max(size, round(w * s)), max(size, round(h * s))), Image.BICUBIC)
            w, h = img.size
            left, top = (w - size) // 2, (h - size) // 2
            out[i] = np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.uint8).reshape(size, size, in_chans)
        images = torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()  # (N, C, size, size)
        return cls(images, torch.as_tensor(folder.targets, dtype=torch.long), tuple(folder.classes))
