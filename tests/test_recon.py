"""hlvm.recon: each reconstruction metric against scikit-image on a real pair of images."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data
import torch
from skimage.metrics import mean_squared_error, peak_signal_noise_ratio, structural_similarity

from hlvm.errors import ConfigError, DataError
from hlvm.recon import effective_rank, fsim, mse, psnr, reconstruction_metrics, ssim


@pytest.fixture(scope="module")
def pair():
    """A 64x96 crop of the astronaut and the same crop with seeded Gaussian noise, clipped to [0, 1]."""
    a = skimage.data.astronaut()[100:164, 150:246].astype(np.float64) / 255.0  # (H, W, 3)
    rng = np.random.default_rng(0)
    b = np.clip(a + 0.06 * rng.standard_normal(a.shape), 0.0, 1.0)
    return a, b


def _t(img):
    return torch.from_numpy(np.ascontiguousarray(np.transpose(img, (2, 0, 1))))[None]  # (1, C, H, W)


def test_mse_and_psnr_equal_skimage_exactly(pair):
    a, b = pair
    assert mse(_t(a), _t(b)).item() == pytest.approx(mean_squared_error(a, b), rel=1e-12)
    assert psnr(_t(a), _t(b)).item() == pytest.approx(peak_signal_noise_ratio(a, b, data_range=1.0), rel=1e-12)
    assert psnr(_t(a), _t(a)).item() == float("inf")


def test_ssim_equals_skimage_gaussian_variant(pair):
    a, b = pair
    ref = structural_similarity(a, b, channel_axis=2, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                use_sample_covariance=False)
    assert ssim(_t(a), _t(b), dtype=torch.float64).item() == pytest.approx(ref, abs=1e-9)
    assert ssim(_t(a), _t(b)).item() == pytest.approx(ref, abs=1e-4)  # float32, the fast default
    # Grayscale too (one channel).
    g, h = a.mean(2), b.mean(2)
    ref_g = structural_similarity(g, h, data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    g_t, h_t = torch.from_numpy(g)[None, None], torch.from_numpy(h)[None, None]
    assert ssim(g_t, h_t, dtype=torch.float64).item() == pytest.approx(ref_g, abs=1e-9)
    assert ssim(_t(a), _t(a)).item() == pytest.approx(1.0, abs=1e-9)


def test_ssim_is_not_silently_downsampled_on_large_images():
    # piq's default downsample=True pools a 384-px image by round(384 / 256) = 2 first, changing the value;
    # ours matches skimage at full size.
    import piq

    a = skimage.data.astronaut()[:384, 64:448].astype(np.float64) / 255.0  # 384 x 384
    b = np.clip(a + 0.06 * np.random.default_rng(1).standard_normal(a.shape), 0, 1)
    ref = structural_similarity(a, b, channel_axis=2, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                use_sample_covariance=False)
    ours = ssim(_t(a), _t(b)).item()
    default = piq.ssim(_t(a).float(), _t(b).float(), data_range=1.0).item()
    assert ours == pytest.approx(ref, abs=1e-4)
    assert abs(default - ref) > 0.05


def test_fsim_identity_symmetry_and_monotone_in_noise(pair):
    # scikit-image has no FSIM, so this checks what FSIM guarantees: 1 on identical images, symmetric,
    # lower as noise grows; and that it is computed at full resolution below 384 px (no pooling in piq).
    a, _ = pair
    x = _t(a)
    assert fsim(x, x).item() == pytest.approx(1.0, abs=1e-6)
    rng = np.random.default_rng(2)
    values = []
    for s in (0.02, 0.08, 0.2):
        y = _t(np.clip(a + s * rng.standard_normal(a.shape), 0, 1))
        values.append(fsim(x, y).item())
        assert fsim(y, x).item() == pytest.approx(values[-1], abs=1e-6)
    assert values[0] > values[1] > values[2]
    gray = x.mean(1, keepdim=True)
    assert fsim(gray, gray).item() == pytest.approx(1.0, abs=1e-6)


def test_fsim_refuses_images_piq_would_pool():
    big = torch.rand(1, 3, 400, 400, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ConfigError, match="average-pool"):
        fsim(big, big)


def test_metrics_are_per_image_and_validate_input(pair):
    a, b = pair
    x = torch.cat([_t(a), _t(b)])
    y = torch.cat([_t(b), _t(b)])
    m = reconstruction_metrics(x, y)
    assert set(m) == {"mse", "psnr", "ssim", "fsim"} and all(v.shape == (2,) for v in m.values())
    assert m["mse"][1].item() == 0.0 and m["ssim"][1].item() == pytest.approx(1.0)
    with pytest.raises(DataError, match="values must lie"):
        mse(x * 2, y)
    with pytest.raises(DataError, match="one shape"):
        mse(x, y[:, :1])


def test_effective_rank_counts_equal_directions():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((200, 200)))
    # Four orthogonal directions of equal energy in 16 dims, centred: effective rank exactly 4.
    basis = np.linalg.qr(rng.standard_normal((16, 4)))[0]  # (16, 4)
    z = q[:, :4] * 10.0  # (200, 4), orthogonal columns of equal norm
    z = z - z.mean(0)
    z = np.linalg.qr(z)[0]  # re-orthonormalise after centring
    f = z @ basis.T  # (200, 16)
    assert effective_rank(f) == pytest.approx(4.0, rel=1e-6)


# --- on a model ---------------------------------------------------------------------


def _small_vit(norm_pix=False):
    from hlvm.models import build_model, get_config

    torch.manual_seed(0)
    cfg = get_config("vit_small_synth", img_size=32, in_chans=3, patch_size=4, mask_unit=8, embed_dim=32, depth=2,
                     num_heads=2, decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2, norm_pix_loss=norm_pix)
    return build_model(cfg).eval()


def test_cls_attention_equals_timm_unfused_attention_weights():
    from hlvm.recon import cls_attention

    model = _small_vit()
    imgs = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    ours = cls_attention(model, imgs)
    assert ours.shape == (3, 2, 8, 8)
    # Oracle: timm's own non-fused path materialises the softmax, which passes through attn_drop.
    attn = model.blocks[-1].attn
    seen = []
    h = attn.attn_drop.register_forward_hook(lambda m, a, out: seen.append(out))
    old = attn.fused_attn
    attn.fused_attn = False
    try:
        with torch.no_grad():
            model.forward_features(imgs)
    finally:
        attn.fused_attn = old
        h.remove()
    ref = seen[-1][:, :, 0, 1:].reshape(3, 2, 8, 8)
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("norm_pix", [False, True])
def test_reconstruct_keeps_visible_pixels_and_masks_whole_units(norm_pix):
    from hlvm.data import denormalize
    from hlvm.masks import num_masked
    from hlvm.recon import reconstruct

    model = _small_vit(norm_pix)
    imgs = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1)).clamp(-2, 2)
    rec = reconstruct(model, imgs, 0.5, torch.Generator().manual_seed(0))
    vis = 1 - rec.pixel_mask
    original = denormalize(imgs, 3).clamp(0, 1)
    torch.testing.assert_close(rec.original, original)
    torch.testing.assert_close(rec.reconstruction * vis, original * vis)
    assert torch.all(rec.masked * rec.pixel_mask == 0)
    # Whole 8x8 units: 16 units, num_masked(16, 0.5) = 8 of them per image.
    units = rec.pixel_mask[:, 0, ::8, ::8]  # (N, 4, 4)
    assert torch.all(units.sum((1, 2)) == num_masked(16, 0.5))
    torch.testing.assert_close(rec.pixel_mask[:, 0], units.repeat_interleave(8, 1).repeat_interleave(8, 2))
    # Whole-image MSE = masked-pixel MSE x masked share (visible pixels are exact).
    torch.testing.assert_close(mse(rec.reconstruction, rec.original).float(), rec.mse_masked * 0.5)
    # Same generator seed, same masks.
    again = reconstruct(model, imgs, 0.5, torch.Generator().manual_seed(0))
    assert torch.equal(again.pixel_mask, rec.pixel_mask)


def test_unmasked_reconstruction_predicts_every_pixel():
    from hlvm.models import build_model
    from hlvm.recon import reconstruct

    model = _small_vit()
    imgs = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3)).clamp(-2, 2)
    rec = reconstruct(model, imgs, 0, torch.Generator().manual_seed(0))
    assert torch.all(rec.pixel_mask == 0) and torch.equal(rec.masked, rec.original)
    torch.testing.assert_close(mse(rec.reconstruction, rec.original).float(), rec.mse_masked)
    assert not torch.allclose(rec.reconstruction, rec.original)  # an untrained decoder: a real prediction, not a copy
    # Per image: image 0 alone gives the same reconstruction as inside the batch.
    alone = reconstruct(model, imgs[:1], 0, torch.Generator().manual_seed(0))
    torch.testing.assert_close(alone.reconstruction, rec.reconstruction[:1], atol=1e-5, rtol=0)
    with pytest.raises(ConfigError, match="no masking"):
        reconstruct(build_model(model.cfg.__class__(**{**model.cfg.to_dict(), "bottleneck": 4})), imgs, 0,
                    torch.Generator())
