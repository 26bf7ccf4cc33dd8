"""A user-written encoder for ``hlvm score``: 2x2 average pooling of the visible image.

Score it from this folder with

    hlvm score --encoder avgpool_encoder:make --out runs/score-avgpool          # the full suite v1
    hlvm score --encoder avgpool_encoder:make --out runs/score-avgpool --quick  # a smoke test, seconds

or from Python with ``hlvm.score(make(), quick=True)``. ``make`` returns the encoder: here a plain function of a
batch of visible images ``(B, C, H, W)`` (masked pixels zeroed, numpy float32) to codes ``(B, D)``; it could
also return a ``torch.nn.Module``, and a function or module that takes a second argument gets the mask
(``(H, W)`` bool, True = masked) as well.
"""

from __future__ import annotations

import numpy as np


def pool(images: np.ndarray) -> np.ndarray:
    """``(B, C, H, W) -> (B, C * H/2 * W/2)``: the mean of every 2x2 block of every channel."""
    b, c, h, w = images.shape
    return images.reshape(b, c, h // 2, 2, w // 2, 2).mean(axis=(3, 5)).reshape(b, -1)


def make():
    """The encoder ``hlvm score --encoder avgpool_encoder:make`` scores."""
    return pool


if __name__ == "__main__":
    import hlvm

    card = hlvm.score(make(), suite="v1", quick=True)
    for cell in card["cells"]:
        print(cell["mask_kind"], cell["mask_ratio"], cell["mask_unit"], "R^2(CA)", cell["r2_ca_noise"],
              "leak", cell["r2_private_visible_noise"], "->", cell["strongest_control"]["label"])
