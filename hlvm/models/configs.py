"""Model configs: one frozen, self-validating dataclass and the named presets.

A config says everything needed to rebuild a model: the architecture (``"vit"``
or ``"mlp"``), the image (size, channels), the token patch ``patch_size`` (p)
and the masking unit ``mask_unit`` (u, a multiple of p: whole units are
masked, as long-sequence MAE does), the widths, and the optional
``bottleneck`` (the width d of the pooled, projected code ``c_hat`` that the
decoder alone sees: docs/theory.md's Assumption 2 encoder).

>>> cfg = get_config("vit_small_synth", patch_size=1, mask_unit=4)
>>> cfg.token_grid, cfg.unit_grid
((16, 16), (4, 4))
>>> MAEConfig.from_dict(cfg.to_dict()) == cfg
True
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from hlvm.errors import ConfigError, check_keys

__all__ = ["MAEConfig", "MODEL_CONFIGS", "get_config"]

Arch = Literal["vit", "mlp"]
ARCHS = ("vit", "mlp")
#: Kinds of code: MAE's deterministic one (None) or a Gaussian posterior q(z | x_visible).
POSTERIORS = (None, "gaussian")


def _is_int(x: Any) -> bool:
    return isinstance(x, int | np.integer) and not isinstance(x, bool)


@dataclass(frozen=True)
class MAEConfig:
    """Everything that defines an MAE; validates itself on construction.

    Parameters
    ----------
    arch : ``"vit"`` (timm blocks, encoder on visible tokens) or ``"mlp"`` (the
        theory's encoder and decoder taken literally).
    img_size : image side, or ``(height, width)``.
    in_chans : channels per pixel.
    patch_size : token patch p: the ViT's token side; the MLP's loss is
        reported per p x p token as well.
    mask_unit : masking unit u: a multiple of p dividing the image; random
        masks mask whole u x u units.
    embed_dim, depth, num_heads : ViT encoder width, blocks, heads. For the
        MLP, ``embed_dim`` is the code width when ``bottleneck`` is None.
    decoder_embed_dim, decoder_depth, decoder_num_heads : ViT decoder.
    mlp_ratio : hidden width of the transformer MLPs over their input width.
    norm_pix_loss : regress per-token normalised pixels (MAE's option); needs
        more than one value per token (p*p*C > 1).
    bottleneck : width d of ``c_hat``; the decoder then sees only ``c_hat``
        and the positions to fill. None: MAE's usual wide latent.
    mlp_hidden, mlp_decoder_hidden : hidden widths of the MLP encoder and
        decoder (``arch="mlp"`` only).
    posterior : ``None`` (MAE's deterministic code) or ``"gaussian"``: a
        Gaussian ``q(z | x_visible)`` whose mean is the code (the ViT's
        visible tokens without a bottleneck, each token its own Gaussian) and
        whose log-variance comes from a linear head on it; in training the
        decoder decodes a sample ``z = mean + sigma * eps``, in eval mode the
        mean. MIM's probabilistic code (Livne et al. 2019), which the
        ``cmim`` objective needs (:mod:`hlvm.objectives`).
    mask_count : how random masks count their units (:data:`hlvm.masks.COUNT_RULES`):
        hlvm's ``"nearest"`` or MAE's ``"mae"``, which the official
        ``mae_vit_*`` configs use so that their masks are MAE's own.
    """

    arch: Arch = "vit"
    img_size: int | tuple[int, int] = 224
    in_chans: int = 3
    patch_size: int = 16
    mask_unit: int = 16
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    decoder_embed_dim: int = 512
    decoder_depth: int = 8
    decoder_num_heads: int = 16
    mlp_ratio: float = 4.0
    norm_pix_loss: bool = False
    bottleneck: int | None = None
    mlp_hidden: tuple[int, ...] = (512, 512)
    mlp_decoder_hidden: tuple[int, ...] = (512, 512)
    posterior: str | None = None
    mask_count: str = "nearest"

    def __post_init__(self) -> None:
        # JSON gives lists; keep tuples so that configs hash and compare.
        if isinstance(self.img_size, list):
            object.__setattr__(self, "img_size", tuple(self.img_size))
        for name in ("mlp_hidden", "mlp_decoder_hidden"):
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))
        self._validate()

    def _validate(self) -> None:
        if self.arch not in ARCHS:
            raise ConfigError(f"arch must be one of {', '.join(ARCHS)}, got {self.arch!r}")
        size = self.img_size
        if isinstance(size, tuple):
            if len(size) != 2 or not all(_is_int(s) and s >= 1 for s in size):
                raise ConfigError(f"img_size must be a positive integer or (height, width), got {size!r}")
        elif not (_is_int(size) and size >= 1):
            raise ConfigError(f"img_size must be a positive integer or (height, width), got {size!r}")
        positive = ["in_chans", "patch_size", "mask_unit", "embed_dim"]
        if self.arch == "vit":
            positive += ["depth", "num_heads", "decoder_embed_dim", "decoder_depth", "decoder_num_heads"]
        for name in positive:
            v = getattr(self, name)
            if not (_is_int(v) and v >= 1):
                raise ConfigError(f"{name} must be a positive integer, got {v!r}")
        h, w = self.img_hw
        p, u = self.patch_size, self.mask_unit
        if h % p or w % p:
            raise ConfigError(f"patch_size {p} does not divide the {h}x{w} image")
        if u % p:
            raise ConfigError(f"mask_unit {u} is not a multiple of patch_size {p}")
        if h % u or w % u:
            raise ConfigError(f"mask_unit {u} does not divide the {h}x{w} image")
        if self.bottleneck is not None and not (_is_int(self.bottleneck) and self.bottleneck >= 1):
            raise ConfigError(f"bottleneck must be a positive integer or None, got {self.bottleneck!r}")
        from hlvm.masks import COUNT_RULES

        if self.mask_count not in COUNT_RULES:
            raise ConfigError(f"mask_count must be one of {', '.join(COUNT_RULES)}, got {self.mask_count!r}")
        if self.posterior not in POSTERIORS:
            raise ConfigError(f"posterior must be null or 'gaussian', got {self.posterior!r}")
        if not isinstance(self.norm_pix_loss, bool):
            raise ConfigError(f"norm_pix_loss must be true or false, got {self.norm_pix_loss!r}")
        if self.norm_pix_loss and p * p * self.in_chans == 1:
            raise ConfigError("norm_pix_loss needs more than one value per token (patch_size 1 with 1 channel has one)")
        if isinstance(self.mlp_ratio, bool) or not isinstance(self.mlp_ratio, int | float) or not self.mlp_ratio > 0:
            raise ConfigError(f"mlp_ratio must be a positive number, got {self.mlp_ratio!r}")
        if self.arch == "vit":
            for dim, heads, which in (
                (self.embed_dim, self.num_heads, ""),
                (self.decoder_embed_dim, self.decoder_num_heads, "decoder_"),
            ):
                if dim % heads:
                    raise ConfigError(f"{which}embed_dim {dim} is not divisible by {which}num_heads {heads}")
                # 2-D sin-cos position embeddings give a quarter of the width to each of sin/cos x row/col.
                if dim % 4:
                    raise ConfigError(f"{which}embed_dim must be a multiple of 4 for 2-D sin-cos positions, got {dim}")
        else:
            for name in ("mlp_hidden", "mlp_decoder_hidden"):
                widths = getattr(self, name)
                if not isinstance(widths, tuple) or not all(_is_int(v) and v >= 1 for v in widths):
                    raise ConfigError(f"{name} must be a list of positive integers, got {widths!r}")

    # -- derived sizes
    @property
    def img_hw(self) -> tuple[int, int]:
        """``(height, width)`` in pixels."""
        s = self.img_size
        return (int(s[0]), int(s[1])) if isinstance(s, tuple) else (int(s), int(s))

    @property
    def token_grid(self) -> tuple[int, int]:
        """``(H/p, W/p)``: the token grid."""
        h, w = self.img_hw
        return h // self.patch_size, w // self.patch_size

    @property
    def unit_grid(self) -> tuple[int, int]:
        """``(H/u, W/u)``: the masking-unit grid."""
        h, w = self.img_hw
        return h // self.mask_unit, w // self.mask_unit

    @property
    def num_tokens(self) -> int:
        """L, the number of tokens (patches) per image."""
        gh, gw = self.token_grid
        return gh * gw

    @property
    def num_units(self) -> int:
        gh, gw = self.unit_grid
        return gh * gw

    @property
    def code_dim(self) -> int:
        """Width of ``encode``'s output: the bottleneck d, else the encoder width."""
        return self.bottleneck if self.bottleneck is not None else self.embed_dim

    # -- JSON
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MAEConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`ConfigError`."""
        if not isinstance(d, dict):
            raise ConfigError(f"a model config must be a JSON object, got {type(d).__name__}")
        check_keys(d, {f.name for f in dataclasses.fields(cls)}, "model config")
        return cls(**d)


_SYNTH = dict(img_size=16, in_chans=6)  # the image of the default GridSpec(): depth 4, 16x16, 6 channels

MODEL_CONFIGS: dict[str, MAEConfig] = {
    # The theory's encoder and decoder as plain MLPs: trains in seconds on CPU.
    "mlp": MAEConfig(arch="mlp", patch_size=1, mask_unit=1, embed_dim=64, **_SYNTH),
    # A small ViT for synthetic images; patch_size=1 gives pixel-level masks.
    "vit_small_synth": MAEConfig(
        patch_size=2,
        mask_unit=2,
        embed_dim=128,
        depth=4,
        num_heads=4,
        decoder_embed_dim=64,
        decoder_depth=2,
        decoder_num_heads=4,
        **_SYNTH,
    ),
    # The ViT that studies on the synthetic grid can afford (bench/train.py; README, "Throughput"):
    # pixel tokens, so that every masking unit (and a one-pixel hole) is expressible. On 8x8 images a
    # step is small matmuls and per-op overhead, so it is cut where the time goes: transformer MLPs 2x
    # wide, not 4x (the largest matmuls); heads 32 wide (CPU flash attention costs 1.5-3x more per FLOP
    # at head widths 8-16). The second narrow decoder block is kept although it costs up to half a step
    # more (wide code at ratio 0.75, where the decoder holds most tokens): it is what lets a dim_c code
    # learn c. At equal steps and lr (1600 x 64, lr 1e-3, seed 0) R^2 of c's own noise is 0.87 with it,
    # 0.24 with one block (bench/identifiability.py, the one-pixel hole).
    "vit_tiny_synth": MAEConfig(
        patch_size=1,
        mask_unit=1,
        embed_dim=64,
        depth=2,
        num_heads=2,
        decoder_embed_dim=32,
        decoder_depth=2,
        decoder_num_heads=1,
        mlp_ratio=2.0,
        **_SYNTH,
    ),
    # He et al. (2022), models_mae.py; pretraining there uses norm_pix_loss, and random_masking's count.
    "mae_vit_base_patch16": MAEConfig(norm_pix_loss=True, mask_count="mae"),
    "mae_vit_large_patch16": MAEConfig(embed_dim=1024, depth=24, num_heads=16, norm_pix_loss=True, mask_count="mae"),
    "mae_vit_huge_patch14": MAEConfig(
        patch_size=14, mask_unit=14, embed_dim=1280, depth=32, num_heads=16, norm_pix_loss=True, mask_count="mae"
    ),
}


def get_config(name: str, **overrides: Any) -> MAEConfig:
    """The named config with ``overrides`` applied (e.g. ``img_size=32, bottleneck=8``).

    Raises :class:`ConfigError` for an unknown name, an unknown field, or
    values the config rejects.
    """
    if name not in MODEL_CONFIGS:
        raise ConfigError(f"unknown model config {name!r}; known: {', '.join(MODEL_CONFIGS)}")
    names = {f.name for f in dataclasses.fields(MAEConfig)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ConfigError(f"unknown model config field {unknown[0]!r}")
    return dataclasses.replace(MODEL_CONFIGS[name], **overrides)
