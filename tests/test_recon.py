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
    """A 96x128 crop of the astronaut and the same crop with seeded Gaussian noise, clipped to [0, 1]."""
    a = skimage.data.astronaut()[100:196, 150:278].astype(np.float64) / 255.0  # (H, W, 3)
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
    assert ssim(_t(a), _t(b)).item() == pytest.approx(ref, abs=1e-6)
    # Grayscale too (one channel).
    g, h = a.mean(2), b.mean(2)
    ref_g = structural_similarity(g, h, data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    assert ssim(torch.from_numpy(g)[None, None], torch.from_numpy(h)[None, None]).item() == pytest.approx(ref_g, abs=1e-6)
    assert ssim(_t(a), _t(a)).item() == pytest.approx(1.0, abs=1e-9)


def test_ssim_is_not_silently_downsampled_on_large_images():
    # piq's default downsample=True pools a 512-px image by 2 first, changing the value; ours matches skimage at full size.
    import piq

    a = skimage.data.astronaut().astype(np.float64) / 255.0  # 512 x 512
    b = np.clip(a + 0.06 * np.random.default_rng(1).standard_normal(a.shape), 0, 1)
    ref = structural_similarity(a, b, channel_axis=2, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                use_sample_covariance=False)
    ours = ssim(_t(a), _t(b)).item()
    default = piq.ssim(_t(a), _t(b), data_range=1.0).item()
    assert ours == pytest.approx(ref, abs=1e-6)
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
