"""A tiny ImageFolder tree of real photos, shared by the real-image tests.

Sources, both installed offline: the 20 ImageNet validation JPEGs shipped in
the ``foolbox`` wheel (``pip install --no-deps foolbox``; found with
``importlib.util.find_spec`` so foolbox itself, and its jax/eagerpy imports,
are never loaded) and scikit-image's bundled photos.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

SKIMAGE_PHOTOS = ("astronaut.png", "coffee.png", "chelsea.png", "camera.png", "rocket.jpg", "hubble_deep_field.jpg")


def foolbox_data() -> Path:
    spec = importlib.util.find_spec("foolbox")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("foolbox wheel not installed (pip install --no-deps foolbox)")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def imagenet_jpegs() -> list[Path]:
    files = sorted(foolbox_data().glob("imagenet_*.jpg"))
    assert len(files) == 20, files
    return files


def skimage_photos() -> list[Path]:
    spec = importlib.util.find_spec("skimage")
    assert spec is not None and spec.submodule_search_locations
    root = Path(next(iter(spec.submodule_search_locations))) / "data"
    return [root / name for name in SKIMAGE_PHOTOS]


def build_tree(root: Path) -> Path:
    """``root/{even,odd,skimage}/...``: ImageNet JPEGs split by label parity, plus the skimage photos.

    The classes are arbitrary but fixed, enough for ImageFolder's labelling
    and for a probe's held-out split; 26 files in all.
    """
    for src in imagenet_jpegs():
        label = int(src.stem.split("_")[-1])
        dst = root / ("even" if label % 2 == 0 else "odd")
        dst.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dst / src.name)
    (root / "skimage").mkdir(parents=True, exist_ok=True)
    for src in skimage_photos():
        shutil.copy(src, root / "skimage" / src.name)
    return root
