"""The ViT masked autoencoder (He et al. 2022) on timm's ``Block`` and ``PatchEmbed``.

Follows ``models_mae.py`` of facebookresearch/mae: patch embedding plus fixed
2-D sin-cos positions, the encoder on the visible tokens only (with a class
token), a narrower decoder that puts mask tokens back in place, and a loss on
the masked tokens only. Differences, all opt-in or invisible with MAE's own
settings:

- masking is ours (:mod:`hlvm.models.masking`): whole ``u x u`` units with
  ``u`` a multiple of the token patch ``p``, exactly ``num_masked`` of them,
  or any mask the caller passes; visible tokens keep row-major order;
- any image size and channel count;
- ``bottleneck=d``: the encoder's visible tokens are mean-pooled and
  projected to ``c_hat`` (B, d), and the decoder sees only ``c_hat`` (one
  token) plus one mask token per position to fill, so nothing about the
  visible side reaches the decoder except through d numbers: the encoder of
  docs/theory.md's Assumption 2;
- ``posterior="gaussian"``: a Gaussian ``q(z | x_visible)`` whose mean is
  the encoder's output (each visible token, class token included, or the
  bottleneck code) and whose log-variance is a linear head on it; the decoder
  decodes a sample in training (MIM's probabilistic code, for ``cmim``);
- ``MAEOutput.cls`` is the class token through the final norm a second time,
  the feature U-MAE's and M-MAE's official code regularise;
- :meth:`ViTMAE.decoder_features`: the decoder's hidden states, mean-pooled
  over positions (Livne's informative embeddings).

Attention is timm's, which uses fused ``scaled_dot_product_attention``.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from timm.layers import PatchEmbed
from timm.models.vision_transformer import Block
from torch import nn

from .base import MAE, MAEOutput
from .configs import MAEConfig
from .masking import shuffle_indices
from .pos_embed import sincos_2d

__all__ = ["ViTMAE"]

_norm = partial(nn.LayerNorm, eps=1e-6)


class ViTMAE(MAE):
    """ViT MAE; see the module docstring. Build with :func:`hlvm.models.build_model`."""

    def __init__(self, cfg: MAEConfig) -> None:
        super().__init__(cfg)
        p, c, d = cfg.patch_size, cfg.in_chans, cfg.embed_dim
        dd = cfg.decoder_embed_dim
        # -- encoder
        self.patch_embed = PatchEmbed(cfg.img_hw, p, c, d)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        # Fixed, not learned (MAE); a buffer so that it follows .to(device) and sits in state dicts
        # under the official key name.
        self.register_buffer("pos_embed", sincos_2d(d, cfg.token_grid, cls_token=True).unsqueeze(0))  # (1, 1+L, D)
        self.blocks = nn.ModuleList(
            Block(d, cfg.num_heads, cfg.mlp_ratio, qkv_bias=True, norm_layer=_norm) for _ in range(cfg.depth)
        )
        self.norm = _norm(d)
        # -- bottleneck: pooled visible tokens -> c_hat (B, d_c) -> one decoder token
        if cfg.bottleneck is not None:
            self.bottleneck_proj = nn.Linear(d, cfg.bottleneck)
            self.decoder_embed = nn.Linear(cfg.bottleneck, dd)
        else:
            self.decoder_embed = nn.Linear(d, dd)
        # -- decoder
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dd))
        self.register_buffer("decoder_pos_embed", sincos_2d(dd, cfg.token_grid, cls_token=True).unsqueeze(0))
        self.decoder_blocks = nn.ModuleList(
            Block(dd, cfg.decoder_num_heads, cfg.mlp_ratio, qkv_bias=True, norm_layer=_norm)
            for _ in range(cfg.decoder_depth)
        )
        self.decoder_norm = _norm(dd)
        self.decoder_pred = nn.Linear(dd, p * p * c)
        self._init_weights()
        self._add_posterior_head(cfg.bottleneck if cfg.bottleneck is not None else d)

    def _init_weights(self) -> None:
        # MAE's initialisation: patch projection as a linear layer, tokens N(0, 0.02), xavier Linear.
        w = self.patch_embed.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.LayerNorm):
                nn.init.constant_(m.weight, 1.0)
                nn.init.constant_(m.bias, 0)

    # -- encoder
    def forward_encoder(
        self, imgs: torch.Tensor, tokens: torch.Tensor, len_keep: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encode the visible tokens of ``imgs`` under the ``(B, L)`` bool token mask.

        Returns ``(latent (B, 1+L_vis, D), ids_shuffle (B, L), ids_restore (B, L))``.
        """
        x = self.patch_embed(imgs)  # (B, L, D)
        x = x + self.pos_embed[:, 1:, :]
        ids_shuffle, ids_restore, len_keep = shuffle_indices(tokens, len_keep)
        ids_keep = ids_shuffle[:, :len_keep]  # (B, L_vis)
        x = torch.gather(x, 1, ids_keep.unsqueeze(-1).expand(-1, -1, x.shape[-1]))  # (B, L_vis, D)
        cls = (self.cls_token + self.pos_embed[:, :1, :]).expand(x.shape[0], -1, -1)  # (B, 1, D)
        x = torch.cat([cls, x], dim=1)  # (B, 1+L_vis, D)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x), ids_shuffle, ids_restore

    def _code(self, latent: torch.Tensor) -> torch.Tensor:
        """``c_hat``: mean of the visible tokens (class token excluded), projected when there is a bottleneck."""
        pooled = latent[:, 1:, :].mean(dim=1)  # (B, D)
        return self.bottleneck_proj(pooled) if self.cfg.bottleneck is not None else pooled

    # -- decoder
    def _decode_tokens(self, x: torch.Tensor, hidden: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Decoder blocks, norm and prediction; ``hidden`` collects each block's ``(B, 1+N, Dd)`` output."""
        for blk in self.decoder_blocks:
            x = blk(x)
            if hidden is not None:
                hidden.append(x)
        return self.decoder_pred(self.decoder_norm(x))

    def forward_decoder(
        self, latent: torch.Tensor, ids_restore: torch.Tensor, hidden: list[torch.Tensor] | None = None
    ) -> torch.Tensor:
        """MAE's decoder: visible latents plus mask tokens, unshuffled -> ``(B, L, p*p*C)``."""
        x = self.decoder_embed(latent)  # (B, 1+L_vis, Dd)
        b, n_vis = x.shape[0], x.shape[1] - 1
        mask_tokens = self.mask_token.expand(b, ids_restore.shape[1] - n_vis, -1)  # (B, L_mask, Dd)
        x_ = torch.cat([x[:, 1:, :], mask_tokens], dim=1)  # (B, L, Dd) in shuffled order
        x_ = torch.gather(x_, 1, ids_restore.unsqueeze(-1).expand(-1, -1, x.shape[-1]))  # (B, L, Dd) unshuffled
        x = torch.cat([x[:, :1, :], x_], dim=1) + self.decoder_pos_embed  # (B, 1+L, Dd)
        return self._decode_tokens(x, hidden)[:, 1:, :]  # (B, L, p*p*C)

    def forward_bottleneck_decoder(
        self, code: torch.Tensor, ids_shuffle: torch.Tensor, len_keep: int, hidden: list[torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Decoder that sees only ``code`` (B, d) and the masked positions -> ``(B, L, p*p*C)``.

        The sequence is one code token (at the class-token position) and one
        mask token plus position embedding per masked token; predictions are
        scattered back into place, visible positions stay zero.
        """
        b, n = ids_shuffle.shape
        ids_mask = ids_shuffle[:, len_keep:]  # (B, L_mask)
        dd = self.mask_token.shape[-1]
        pos = self.decoder_pos_embed[:, 1:, :].expand(b, -1, -1)  # (B, L, Dd)
        pos = torch.gather(pos, 1, ids_mask.unsqueeze(-1).expand(-1, -1, dd))  # (B, L_mask, Dd)
        code_tok = self.decoder_embed(code).unsqueeze(1) + self.decoder_pos_embed[:, :1, :]  # (B, 1, Dd)
        x = torch.cat([code_tok, self.mask_token + pos], dim=1)  # (B, 1+L_mask, Dd)
        pred_mask = self._decode_tokens(x, hidden)[:, 1:, :]  # (B, L_mask, p*p*C)
        pred = pred_mask.new_zeros(b, n, pred_mask.shape[-1])  # (B, L, p*p*C)
        return pred.scatter(1, ids_mask.unsqueeze(-1).expand(-1, -1, pred.shape[-1]), pred_mask)

    # -- public API
    def forward(
        self,
        imgs: torch.Tensor,
        mask_ratio: float = 0.75,
        mask: Any = None,
        generator: torch.Generator | None = None,
    ) -> MAEOutput:
        """Mask, encode the visible tokens, decode, and score the masked tokens.

        ``imgs`` is ``(B, C, H, W)``. ``mask`` (a :class:`hlvm.masks.Mask`, a
        ``(B, H/u, W/u)`` unit mask or a ``(B, L)`` token mask, 1 = masked) is
        used as given; without it a random mask of exactly
        ``num_masked(units, mask_ratio)`` whole units per sample is drawn from
        ``generator``, which also draws a Gaussian posterior's noise.
        """
        imgs = self._check_imgs(imgs)
        tokens, len_keep = self._mask_and_keep(imgs, mask_ratio, mask, generator)  # (B, L) bool
        enc, ids_shuffle, ids_restore = self.forward_encoder(imgs, tokens, len_keep)  # (B, 1+L_vis, D)
        code = self._code(enc)  # (B, d) or (B, D)
        if self.cfg.bottleneck is not None:
            mean = code  # (B, d)
            z, logvar, sample = self._posterior(mean, generator)
            pred = self.forward_bottleneck_decoder(z, ids_shuffle, len_keep)
            latent = code
        else:
            mean = enc  # (B, 1+L_vis, D): every visible token is its own Gaussian
            z, logvar, sample = self._posterior(mean, generator)
            pred = self.forward_decoder(z, ids_restore)
            latent = enc
        mask_f = tokens.to(pred.dtype)
        loss = self.masked_loss(imgs, pred, mask_f)
        cls = self.norm(enc[:, 0, :])  # (B, D) the official U-/M-MAE feature: norm applied a second time
        return MAEOutput(
            loss=loss, pred=pred, mask=mask_f, ids_restore=ids_restore, latent=latent, features=code, inputs=imgs,
            cls=cls, posterior_mean=mean if logvar is not None else None, posterior_logvar=logvar,
            posterior_sample=sample,
        )

    def encode(self, imgs: torch.Tensor, mask: Any) -> torch.Tensor:
        """``c_hat`` (B, d) of the visible part of ``imgs`` under ``mask``.

        With a bottleneck: the code the decoder sees. Without: the mean of the
        encoder's visible output tokens (class token excluded), (B, D).
        ``mask`` takes the forms :meth:`forward` accepts.
        """
        imgs = self._check_imgs(imgs)
        tokens, len_keep = self._encode_mask(imgs, mask)
        latent, _, _ = self.forward_encoder(imgs, tokens, len_keep)
        return self._code(latent)

    def decoder_features(self, imgs: torch.Tensor, mask: Any) -> torch.Tensor:
        """The decoder's hidden states when it decodes the visible part of ``imgs`` under ``mask``.

        ``(B, decoder_depth * decoder_embed_dim)``: each decoder block's output
        tokens averaged over the positions it fills (all ``L`` positions, or
        the masked ones with a bottleneck; the class / code slot left out),
        blocks side by side. A posterior's mean is decoded, never a sample.
        Livne's *informative embeddings* (cMIM, arXiv 2509.21511) take
        features from decoder hidden states; the pooling and the choice of
        every block are ours (the public abstract does not pin them down).
        """
        imgs = self._check_imgs(imgs)
        tokens, len_keep = self._encode_mask(imgs, mask)
        enc, ids_shuffle, ids_restore = self.forward_encoder(imgs, tokens, len_keep)
        hidden: list[torch.Tensor] = []
        if self.cfg.bottleneck is not None:
            self.forward_bottleneck_decoder(self._code(enc), ids_shuffle, len_keep, hidden)
        else:
            self.forward_decoder(enc, ids_restore, hidden)
        if not hidden:
            raise self._no_hidden("decoder features")
        return torch.cat([h[:, 1:, :].mean(dim=1) for h in hidden], dim=1)  # (B, depth * Dd)

    def forward_features(self, imgs: torch.Tensor) -> torch.Tensor:
        """Encoder output with nothing masked, ``(B, 1+L, D)``, class token first (for probing)."""
        imgs = self._check_imgs(imgs)
        tokens = torch.zeros(imgs.shape[0], self.cfg.num_tokens, dtype=torch.bool, device=imgs.device)
        latent, _, _ = self.forward_encoder(imgs, tokens, self.cfg.num_tokens)
        return latent
