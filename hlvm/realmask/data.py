"""The study's images, held in memory as uint8 tensors: Fashion-MNIST's idx files, or any image folder.

Fashion-MNIST (Xiao et al. 2017): 60,000 training and 10,000 test images,
28 x 28 grayscale, 10 classes, as Debian's ``dataset-fashion-mnist`` ships
them (``/usr/share/datasets/fashion-mnist/*-idx*-ubyte.gz``). The files are
read once (0.2 s); MAE's augmentations then run batched in torch
(:func:`hlvm.data.mae_augment`), never through PIL.

An image folder (``imagefolder:PATH``) is the other source: ``PATH/train``
and ``PATH/val`` when both exist, else one folder split per class with
:func:`hlvm.probe.stratified_split`; every file is decoded once
(:meth:`hlvm.data.TensorImages.from_folder`), and an unreadable one is a
one-line :class:`hlvm.errors.DataError` naming it.
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hlvm.data import TensorImages
from hlvm.errors import DataError

CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot")
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
FASHION_MNIST = "fashion-mnist"


@dataclass(frozen=True)
class Splits:
    """The study's data: ``train`` for pretraining and the probe's fit, ``test`` for every measurement."""

    train: TensorImages
    test: TensorImages
    source: str


def missing_files(source: Path) -> list[str]:
    return [f for pair in FILES.values() for f in pair if not (source / f).is_file()]


def ensure_fashion_mnist(source: Path, package: str, *, install: bool = True) -> None:
    """Install Debian's ``package`` with apt-get when ``source`` lacks the idx files; DataError if that cannot be done.

    ``install=False`` only checks. apt-get's own output goes to the terminal;
    its failure (no root and no sudo, no mirror) is one line.
    """
    if not missing_files(source):
        return
    if not install:
        raise DataError(f"Fashion-MNIST not found: {source} lacks {missing_files(source)[0]} (apt-get install {package})")
    apt = shutil.which("apt-get")
    if apt is None:
        raise DataError(f"Fashion-MNIST not found in {source} and apt-get is not available to install {package}")
    sudo: list[str] = []
    if os.geteuid() != 0:
        if shutil.which("sudo") is None:
            raise DataError(f"Fashion-MNIST not found in {source}; installing {package} needs root (no sudo here)")
        sudo = ["sudo", "-n"]
    print(f"{source} lacks Fashion-MNIST: apt-get install {package}", flush=True)
    for cmd in ([*sudo, apt, "update"], [*sudo, apt, "install", "-y", package]):
        done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no message"])[-1]
            raise DataError(f"Fashion-MNIST not found in {source} and '{' '.join(cmd[-3:])}' failed: {last}")
    if missing_files(source):
        raise DataError(f"{package} installed but {source} lacks {missing_files(source)[0]}")


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (MNIST's format, gzipped): magic ``0 0 8 ndim``, big-endian dims, then uint8 data."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read {path}: {e}") from None
    if len(raw) < 4 or raw[:3] != b"\x00\x00\x08":
        raise DataError(f"{path} is not a uint8 IDX file")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    need = 4 + 4 * ndim + int(np.prod(dims))
    if len(raw) != need:
        raise DataError(f"{path} holds {len(raw)} bytes, its header says {need}")
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_fashion_mnist(source: Path) -> Splits:
    """Both splits as :class:`TensorImages`: images ``(N, 1, 28, 28)`` uint8, labels ``(N,)``."""
    out = {}
    for split, (img_file, lbl_file) in FILES.items():
        images, labels = read_idx(source / img_file), read_idx(source / lbl_file)
        if images.ndim != 3 or labels.shape != (images.shape[0],):
            raise DataError(f"{source / img_file}: images {images.shape} and labels {labels.shape} do not pair")
        x = torch.from_numpy(images.copy()).unsqueeze(1)  # (N, 1, 28, 28)
        out[split] = TensorImages(x, torch.from_numpy(labels.astype(np.int64)), CLASSES)
    return Splits(out["train"], out["test"], f"fashion-mnist:{source}")


def load_imagefolder(root: Path, in_chans: int, size: int, test_fraction: float, seed: int) -> Splits:
    """An image folder as :class:`Splits` (module docstring); each image decoded once at ``size`` px."""
    from hlvm.probe import stratified_split

    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist")
    if (root / "train").is_dir() and (root / "val").is_dir():
        train = TensorImages.from_folder(root / "train", in_chans, size)
        test = TensorImages.from_folder(root / "val", in_chans, size)
    else:
        whole = TensorImages.from_folder(root, in_chans, size)
        tr, te = stratified_split(whole.labels.numpy(), test_fraction, seed)
        if len(te) == 0:
            raise DataError(f"image folder {root} is too small for a held-out split (one image per class)")
        train, test = whole.subset(tr), whole.subset(te)
    return Splits(train, test, f"imagefolder:{root}")


def load(spec: str, *, source: Path, package: str, in_chans: int, size: int, test_fraction: float, seed: int,
         install: bool = True) -> Splits:
    """The data a ``--data`` spec names: ``fashion-mnist`` (installing it if need be) or ``imagefolder:PATH``."""
    if spec == FASHION_MNIST:
        ensure_fashion_mnist(source, package, install=install)
        return load_fashion_mnist(source)
    if spec.startswith("imagefolder:"):
        return load_imagefolder(Path(spec.removeprefix("imagefolder:")), in_chans, size, test_fraction, seed)
    raise DataError(f"--data must be '{FASHION_MNIST}' or 'imagefolder:PATH', got {spec!r}")
