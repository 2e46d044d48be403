"""Metrics follow the published conventions: PSNR/SSIM equal scikit-image's, LPIPS is the official one."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage import data as skdata
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from gan_inversion_bench.metrics import CONVENTIONS, METRICS, Metric, compute_metrics, mse, psnr, ssim


def _sk(rec: torch.Tensor, tgt: torch.Tensor):
    """scikit-image's per-image PSNR and SSIM on the clamped [0,1] images."""
    out_psnr, out_ssim = [], []
    for r, t in zip(rec, tgt):
        a = (t.double().clamp(-1, 1).permute(1, 2, 0).numpy() + 1) / 2
        b = (r.double().clamp(-1, 1).permute(1, 2, 0).numpy() + 1) / 2
        out_psnr.append(peak_signal_noise_ratio(a, b, data_range=1))
        out_ssim.append(structural_similarity(a, b, channel_axis=-1, data_range=1, gaussian_weights=True,
                                              sigma=1.5, use_sample_covariance=False))
    return torch.tensor(out_psnr, dtype=torch.float64), torch.tensor(out_ssim, dtype=torch.float64)


def _astronaut_pairs(n: int = 3, size: int = 64, noise: float = 0.1, seed: int = 0):
    img = torch.from_numpy(skdata.astronaut()).permute(2, 0, 1).double() / 127.5 - 1  # [3,512,512]
    gen = torch.Generator().manual_seed(seed)
    corners = [(40, 180), (200, 220), (300, 60), (100, 400)][:n]
    tgt = torch.stack([img[:, y:y + size, x:x + size + 8] for y, x in corners])
    rec = tgt + noise * torch.randn(tgt.shape, generator=gen, dtype=torch.float64)  # exceeds [-1,1]: clamped
    return rec, tgt


def test_psnr_ssim_match_skimage_random():
    gen = torch.Generator().manual_seed(1)
    tgt = torch.rand(4, 3, 23, 31, generator=gen, dtype=torch.float64) * 2 - 1
    rec = (tgt + 0.3 * torch.randn(tgt.shape, generator=gen, dtype=torch.float64)).clamp(-1.2, 1.2)
    want_psnr, want_ssim = _sk(rec, tgt)
    got = compute_metrics(rec, tgt, names=["psnr", "ssim", "mse"])
    torch.testing.assert_close(got["psnr"], want_psnr, rtol=0, atol=1e-6)
    torch.testing.assert_close(got["ssim"], want_ssim, rtol=0, atol=1e-6)
    want_mse = ((rec.clamp(-1, 1) - tgt) / 2).pow(2).flatten(1).mean(1)
    torch.testing.assert_close(got["mse"], want_mse, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("noise", [0.02, 0.1, 0.4])
def test_psnr_ssim_match_skimage_real_photo(noise):
    rec, tgt = _astronaut_pairs(noise=noise)
    want_psnr, want_ssim = _sk(rec, tgt)
    got = compute_metrics(rec.float(), tgt.float(), names=["ssim", "psnr"])
    assert list(got) == ["ssim", "psnr"]
    # float32 inputs: scores computed in float64 from the float32 values
    want_psnr32, want_ssim32 = _sk(rec.float(), tgt.float())
    torch.testing.assert_close(got["psnr"], want_psnr32, rtol=0, atol=1e-6)
    torch.testing.assert_close(got["ssim"], want_ssim32, rtol=0, atol=1e-6)
    # and the float64 path directly
    torch.testing.assert_close(psnr(rec, tgt), want_psnr, rtol=0, atol=1e-6)
    torch.testing.assert_close(ssim(rec, tgt), want_ssim, rtol=0, atol=1e-6)
    assert (want_ssim < 1).all() and (want_ssim > 0).all()


def test_identical_images():
    _, tgt = _astronaut_pairs(n=2, size=32)
    got = compute_metrics(tgt, tgt.clone(), names=["psnr", "ssim", "mse", "lpips"])
    assert torch.isinf(got["psnr"]).all() and (got["psnr"] > 0).all()
    with np.errstate(divide="ignore"):
        assert math.isinf(peak_signal_noise_ratio(tgt[0].numpy(), tgt[0].numpy(), data_range=2))
    torch.testing.assert_close(got["ssim"], torch.ones(2, dtype=torch.float64))
    assert (got["mse"] == 0).all()
    assert (got["lpips"].abs() < 1e-6).all()


def test_reconstruction_is_clamped():
    _, tgt = _astronaut_pairs(n=2, size=32)
    rec = tgt.clone()
    rec[:, :, :4] = 1.7  # out of range: scored as if saved to PNG, i.e. clamped to 1
    got = compute_metrics(rec, tgt, names=["psnr", "ssim", "mse"])
    want = compute_metrics(rec.clamp(-1, 1), tgt, names=["psnr", "ssim", "mse"])
    for k in got:
        assert torch.equal(got[k], want[k])


def test_compute_metrics_output_format_and_lpips():
    rec, tgt = _astronaut_pairs(n=2, size=64, noise=0.2)
    got = compute_metrics(rec.float(), tgt.float())
    assert list(got) == list(METRICS)
    for v in got.values():
        assert v.dtype == torch.float64 and v.device.type == "cpu" and v.shape == (2,)
    from gan_inversion_bench.perceptual import get_lpips

    with torch.no_grad():
        direct = get_lpips("cpu")(rec.float().clamp(-1, 1), tgt.float()).double()
    torch.testing.assert_close(got["lpips"], direct, rtol=0, atol=1e-7)
    assert (got["lpips"] > 0.01).all()
    # runs without building a graph even for inputs that require grad
    r = rec.float().requires_grad_(True)
    out = compute_metrics(r, tgt.float(), names="psnr")
    assert not out["psnr"].requires_grad
    assert torch.equal(mse(rec, tgt), compute_metrics(rec, tgt, names=["mse"])["mse"])


def test_lpips_on_images_too_small_for_alexnet_upsamples_to_32():
    rec, tgt = _astronaut_pairs(n=2, size=16, noise=0.2)
    from gan_inversion_bench.perceptual import get_lpips

    with pytest.raises(RuntimeError):  # what AlexNet does with 16x16 inputs on its own
        with torch.no_grad():
            get_lpips("cpu")(rec.float().clamp(-1, 1), tgt.float())
    got = compute_metrics(rec.float(), tgt.float(), names="lpips")["lpips"]
    up = [torch.nn.functional.interpolate(t.float().clamp(-1, 1), size=(32, 32), mode="bilinear", align_corners=False)
          for t in (rec, tgt)]
    with torch.no_grad():
        torch.testing.assert_close(got, get_lpips("cpu")(*up).double(), rtol=0, atol=1e-7)
    assert (got > 0).all() and "upsampled bilinearly to 32x32" in CONVENTIONS["lpips"]


def test_metric_table_and_directions():
    assert set(METRICS) == {"psnr", "ssim", "lpips", "mse"}
    assert METRICS["psnr"].higher_is_better is True
    assert METRICS["ssim"].higher_is_better is True
    assert METRICS["lpips"].higher_is_better is False
    assert METRICS["mse"].higher_is_better is False
    for name, m in METRICS.items():
        assert isinstance(m, Metric) and m.name == name and m.description and callable(m.fn)
        assert name in CONVENTIONS
    with pytest.raises(Exception):
        METRICS["psnr"].name = "x"  # frozen
    assert "clamp" in CONVENTIONS["clamping"] and "[-1,1]" in CONVENTIONS["inputs"]
    assert "11x11" in CONVENTIONS["ssim"] and "1.5" in CONVENTIONS["ssim"]
    assert "inf" in CONVENTIONS["psnr"]


def test_metrics_move_in_the_right_direction():
    rec_small, tgt = _astronaut_pairs(n=2, noise=0.03)
    rec_large, _ = _astronaut_pairs(n=2, noise=0.3)
    small = compute_metrics(rec_small.float(), tgt.float())
    large = compute_metrics(rec_large.float(), tgt.float())
    for name, m in METRICS.items():
        better = small[name] > large[name] if m.higher_is_better else small[name] < large[name]
        assert better.all(), name


@pytest.mark.parametrize("rec, tgt, match", [
    (torch.zeros(3, 32, 32), torch.zeros(3, 32, 32), r"expected a 4-d tensor \[B,3,H,W\], found shape \[3, 32, 32\]"),
    (torch.zeros(1, 3, 32, 32), torch.zeros(1, 3, 32, 16), r"same shape.*\[1, 3, 32, 32\] and \[1, 3, 32, 16\]"),
    (torch.zeros(2, 3, 32, 32), torch.zeros(1, 3, 32, 32), r"same shape.*\[2, 3, 32, 32\] and \[1, 3, 32, 32\]"),
    (torch.zeros(1, 1, 32, 32), torch.zeros(1, 1, 32, 32), r"expected 3 \(RGB\) channels.*found 1"),
    (torch.zeros(1, 4, 32, 32), torch.zeros(1, 4, 32, 32), r"expected 3 \(RGB\) channels.*found 4"),
    (torch.zeros(1, 32, 32, 3), torch.zeros(1, 32, 32, 3), r"expected 3 \(RGB\) channels.*found 32"),
    (torch.zeros(1, 3, 32, 32, dtype=torch.uint8), torch.zeros(1, 3, 32, 32), r"floating-point.*uint8"),
    (torch.full((1, 3, 32, 32), float("nan")), torch.zeros(1, 3, 32, 32), r"finite"),
    (torch.zeros(1, 3, 32, 32), torch.full((1, 3, 32, 32), 255.0), r"targets: expected values in \[-1,1\]"),
    (torch.full((1, 3, 32, 32), 255.0), torch.zeros(1, 3, 32, 32), r"reconstructions: expected values in \[-1,1\]"),
    (torch.zeros(0, 3, 32, 32), torch.zeros(0, 3, 32, 32), r"non-empty"),
])
def test_bad_inputs_raise_value_error(rec, tgt, match):
    with pytest.raises(ValueError, match=match):
        compute_metrics(rec, tgt, names=["psnr", "ssim", "mse"])


def test_bad_arguments():
    x = torch.zeros(1, 3, 32, 32)
    with pytest.raises(TypeError, match="torch.Tensor"):
        compute_metrics(np.zeros((1, 3, 32, 32)), x)
    with pytest.raises(ValueError, match="unknown metric.*psnr"):
        compute_metrics(x, x, names=["psnrr"])
    with pytest.raises(ValueError, match="at least 11x11"):
        compute_metrics(torch.zeros(1, 3, 8, 32), torch.zeros(1, 3, 8, 32), names=["ssim"])
