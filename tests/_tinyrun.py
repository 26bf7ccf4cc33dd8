"""A few training steps of a tiny ViT MAE on the real-photo tree: a run folder for probe/recon tests."""

from __future__ import annotations

from pathlib import Path


def tiny_config(**overrides):
    from hlvm.models import get_config

    kw = dict(img_size=32, in_chans=3, patch_size=4, mask_unit=8, embed_dim=32, depth=2, num_heads=2,
              decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2)
    kw.update(overrides)
    return get_config("vit_small_synth", **kw)


def tiny_run(tree: Path, out: Path, steps: int = 3, **overrides) -> Path:
    from hlvm.train import TrainConfig, train

    cfg = TrainConfig(model=tiny_config(**overrides), data=f"imagefolder:{tree}", steps=steps, batch_size=4,
                      warmup=1, device="cpu", out=str(out), ckpt_every=0)
    return train(cfg, progress=False)
