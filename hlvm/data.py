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
"""

from __future__ import annotations

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
