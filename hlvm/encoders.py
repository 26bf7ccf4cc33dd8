"""The encoders a code is evaluated with: the trained model's, and the controls', each an :data:`EncodeFn`.

An encoder maps held-out images and a mask to a code of the visible part
only: ``encode_fn(images (N, C, H, W), mask) -> c_hat (N, d)``.
:func:`model_encoder` is a model's ``encode``, in batches (the trained
model, or the ``untrained`` control); :func:`control_encoder` builds any
control by name.

Controls (:data:`CONTROLS`), encoders that learned nothing, to judge every
trained result against (docs/theory.md: any injective code of ``x_mc`` holds all of
``CA`` and all of ``s_mc``, so a wide code passing "CA high, s_m low" shows
nothing about training):

- ``pixels`` (:func:`pixels_encoder`): the visible pixels themselves,
  flattened; no parameters;
- ``untrained`` (:func:`model_encoder` of :func:`hlvm.train.init_model`): the
  run's own architecture at the seeded initialisation its training started
  from;
- ``oracle`` (:func:`oracle_encoder`): the true values of ``c``'s nodes for
  the mask, Theorem 2's ideal code (``dim_c`` wide); it reads the latents, not
  the images;
- ``pca``, ``random_projection``, ``linear_mae`` (:mod:`hlvm.controls`): the
  cheapest competitors of a trained code *of the same width*: the visible
  pixels' top principal components, a seeded Gaussian projection, and the
  optimal linear MAE for the mask (reduced-rank regression of the masked on
  the visible pixels), the first and last fitted on training images only.

:data:`WIDTH_CONTROLS` are made at a code width (the trained code's):
``untrained`` and the three linear controls.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import networkx as nx
import numpy as np

from hlvm.controls import LINEAR_CONTROLS, PixelMoments, linear_control_encoder
from hlvm.errors import ConfigError, DataError
from hlvm.locate import locate
from hlvm.masks import Mask
from hlvm.rules import SAME_WIDTH

__all__ = [
    "EncodeFn",
    "CONTROLS",
    "WIDTH_CONTROLS",
    "ENCODERS",
    "pixels_encoder",
    "oracle_encoder",
    "model_encoder",
    "control_encoder",
]

#: ``encode_fn(images (N, C, H, W), mask) -> c_hat (N, d)``: the encoder sees the visible part only.
EncodeFn = Callable[[np.ndarray, Mask], np.ndarray]

#: Encoders that learned nothing, evaluated beside every trained one (module docstring).
CONTROLS = ("pixels", "untrained", "oracle", *LINEAR_CONTROLS)
#: Controls made at a code width, the trained code's: the competitors "of the same width".
WIDTH_CONTROLS = SAME_WIDTH
#: The ``encoder`` column of a results row.
ENCODERS = ("trained", *CONTROLS)


def pixels_encoder() -> EncodeFn:
    """The ``pixels`` control: the visible pixels themselves, ``(N, C * n_visible)``; no parameters."""

    def encode(images: np.ndarray, mask: Mask) -> np.ndarray:
        x = np.asarray(images)
        return x[:, :, mask.visible].reshape(len(x), -1)  # (N, C * n_visible), pixels row-major

    return encode


def oracle_encoder(dataset: Any, graph: nx.DiGraph) -> EncodeFn:
    """The ``oracle`` control: the true values of Algorithm 1's ``c`` for the mask, ``(N, dim_c)``.

    It reads ``dataset``'s latents (the images it is handed must be that
    dataset's); an empty ``c`` (nothing shared) gives one constant column.
    """

    def encode(images: np.ndarray, mask: Mask) -> np.ndarray:
        n = len(images)
        if n != len(dataset.images):
            raise DataError(f"the oracle reads the latents of its dataset ({len(dataset.images)} samples), got {n} images")
        c = locate(graph, mask).c
        if not c:
            return np.zeros((n, 1))
        return np.concatenate([np.asarray(dataset.latent(v), dtype=np.float64).reshape(n, -1) for v in c], axis=1)

    return encode


def model_encoder(model: Any, *, batch_size: int = 1024, device: str = "cpu", representation: str = "code") -> EncodeFn:
    """``model.encode`` of the visible part, in batches, as an :data:`EncodeFn`.

    ``representation="plain"`` takes instead the input of the projection to a
    bottleneck code (a ViT's ``bottleneck_proj``, an MLP encoder's last
    layer): what the encoder holds before it is squeezed to ``d`` dims.
    """
    import torch

    if representation not in ("code", "plain"):
        raise ConfigError(f"representation must be 'code' or 'plain', got {representation!r}")
    layer = None
    if representation == "plain":
        layer = getattr(model, "bottleneck_proj", None)
        if layer is None and isinstance(getattr(model, "encoder", None), torch.nn.Sequential):
            layer = model.encoder[-1]
        if layer is None:
            raise ConfigError("this model has no projection to a bottleneck code: no 'plain' representation")

    @torch.no_grad()
    def encode(images: np.ndarray, mask: Mask) -> np.ndarray:
        got: list[torch.Tensor] = []
        hook = layer.register_forward_pre_hook(lambda m, a: got.append(a[0])) if layer is not None else None
        try:
            out = []
            for s in range(0, len(images), batch_size):
                batch = torch.as_tensor(np.asarray(images[s : s + batch_size]), dtype=torch.float32, device=device)
                code = model.encode(batch, mask)  # (B, d)
                out.append((got.pop() if layer is not None else code).float().cpu())
        finally:
            if hook is not None:
                hook.remove()
        return torch.cat(out).double().numpy()

    return encode


def control_encoder(
    name: str,
    *,
    dataset: Any,
    graph: nx.DiGraph,
    model_config: Any = None,
    seed: int = 0,
    width: int | None = None,
    moments: PixelMoments | None = None,
) -> EncodeFn:
    """The encoder of control ``name`` (:data:`CONTROLS`) for held-out ``dataset``.

    ``untrained`` needs the architecture (``model_config``, an ``MAEConfig``)
    and the seed whose initialisation it is (:func:`hlvm.train.init_model`).
    The linear controls (:mod:`hlvm.controls`) are ``width`` wide (default:
    ``model_config``'s code width); ``pca`` and ``linear_mae`` are fitted on
    ``moments`` of training images (:func:`hlvm.evaluate.training_moments`),
    never on ``dataset``; ``random_projection`` is drawn from ``seed``.
    """
    if name == "pixels":
        return pixels_encoder()
    if name == "oracle":
        return oracle_encoder(dataset, graph)
    if name == "untrained":
        if model_config is None:
            raise ConfigError("the untrained control needs the model's architecture")
        from hlvm.train import init_model

        model = init_model(model_config, seed)
        model.eval()
        return model_encoder(model)
    if name in LINEAR_CONTROLS:
        if width is None:
            if model_config is None:
                raise ConfigError(f"the {name} control needs a width (or the model whose code width it takes)")
            width = int(model_config.code_dim)
        return linear_control_encoder(name, width, moments=moments, seed=seed)
    raise ConfigError(f"unknown control {name!r}; choose from {', '.join(CONTROLS)}")
