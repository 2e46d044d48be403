"""Metrics follow the published conventions: PSNR/SSIM equal scikit-image's, MS-SSIM an independent numpy
implementation of Wang et al.'s formula, LPIPS is the official one."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from skimage import data as skdata
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from gan_inversion_bench.metrics import (
    CONVENTIONS,
    DEFAULT_METRICS,
    METRICS,
    MS_SSIM_BETAS,
    Metric,
    compute_metrics,
    ms_ssim,
    ms_ssim_betas,
    mse,
    psnr,
    ssim,
)


def _sk(rec: torch.Tensor, tgt: torch.Tensor):
    """scikit-image's per-image PSNR and SSIM on the clamped [0,1] images."""
    out_psnr, out_ssim = [], []
    for r, t in zip(rec, tgt, strict=True):
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
    assert list(got) == list(DEFAULT_METRICS) == ["psnr", "ssim", "lpips", "mse"]  # the database's columns
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

    with pytest.raises(RuntimeError), torch.no_grad():  # what AlexNet does with 16x16 inputs on its own
        get_lpips("cpu")(rec.float().clamp(-1, 1), tgt.float())
    got = compute_metrics(rec.float(), tgt.float(), names="lpips")["lpips"]
    up = [torch.nn.functional.interpolate(t.float().clamp(-1, 1), size=(32, 32), mode="bilinear", align_corners=False)
          for t in (rec, tgt)]
    with torch.no_grad():
        torch.testing.assert_close(got, get_lpips("cpu")(*up).double(), rtol=0, atol=1e-7)
    assert (got > 0).all() and "upsampled bilinearly to 32x32" in CONVENTIONS["lpips"]


def test_metric_table_and_directions():
    assert set(METRICS) == {"psnr", "ssim", "lpips", "mse", "ms_ssim"}
    assert set(DEFAULT_METRICS) < set(METRICS)
    assert METRICS["ms_ssim"].higher_is_better is True
    assert METRICS["psnr"].higher_is_better is True
    assert METRICS["ssim"].higher_is_better is True
    assert METRICS["lpips"].higher_is_better is False
    assert METRICS["mse"].higher_is_better is False
    for name, m in METRICS.items():
        assert isinstance(m, Metric) and m.name == name and m.description and callable(m.fn)
        assert name in CONVENTIONS
    with pytest.raises(dataclasses.FrozenInstanceError):
        METRICS["psnr"].name = "x"  # frozen
    assert "clamp" in CONVENTIONS["clamping"] and "[-1,1]" in CONVENTIONS["inputs"]
    assert "11x11" in CONVENTIONS["ssim"] and "1.5" in CONVENTIONS["ssim"]
    assert "inf" in CONVENTIONS["psnr"]


def test_metrics_move_in_the_right_direction():
    rec_small, tgt = _astronaut_pairs(n=2, noise=0.03)
    rec_large, _ = _astronaut_pairs(n=2, noise=0.3)
    small = compute_metrics(rec_small.float(), tgt.float(), names=METRICS)
    large = compute_metrics(rec_large.float(), tgt.float(), names=METRICS)
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
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        compute_metrics(np.zeros((1, 3, 32, 32)), x)
    with pytest.raises(ValueError, match=r"unknown metric.*psnr"):
        compute_metrics(x, x, names=["psnrr"])
    for name in ("ssim", "ms_ssim"):
        with pytest.raises(ValueError, match=f"{name}: images must be at least 11x11.*found 8x32"):
            compute_metrics(torch.zeros(1, 3, 8, 32), torch.zeros(1, 3, 8, 32), names=[name])


# ---- MS-SSIM against an independent numpy implementation ---------------------------------------------------
def _np_gaussian() -> np.ndarray:
    x = np.arange(-5, 6, dtype=np.float64)
    g = np.exp(-x ** 2 / (2 * 1.5 ** 2))
    return g / g.sum()


def _np_ssim_and_cs(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Mean SSIM and mean contrast-structure over channels and the valid region of [C,H,W] images in [0,1]."""
    g = _np_gaussian()

    def blur(a: np.ndarray) -> np.ndarray:  # valid-region separable 11-tap Gaussian over H then W, per channel
        a = np.lib.stride_tricks.sliding_window_view(a, 11, axis=1) @ g
        return np.lib.stride_tricks.sliding_window_view(a, 11, axis=2) @ g

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx ** 2, blur(y * y) - my ** 2, blur(x * y) - mx * my
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    cs = (2 * cxy + c2) / (vx + vy + c2)
    lum = (2 * mx * my + c1) / (mx ** 2 + my ** 2 + c1)
    return float((lum * cs).mean()), float(cs.mean())


def _np_pool(a: np.ndarray) -> np.ndarray:
    c, h, w = a.shape
    return a[:, :h // 2 * 2, :w // 2 * 2].reshape(c, h // 2, 2, w // 2, 2).mean(axis=(2, 4))


def _np_ms_ssim(x: np.ndarray, y: np.ndarray, betas: tuple[float, ...]) -> float:
    value = 1.0
    for j, beta in enumerate(betas):
        if j:
            x, y = _np_pool(x), _np_pool(y)
        s, cs = _np_ssim_and_cs(x, y)
        if j == len(betas) - 1:  # the numpy SSIM is itself checked against scikit-image
            want = structural_similarity(x.transpose(1, 2, 0), y.transpose(1, 2, 0), channel_axis=-1, data_range=1,
                                         gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
            assert abs(s - want) < 1e-10
        value *= max(s if j == len(betas) - 1 else cs, 0.0) ** beta
    return value


def _first(n: int) -> tuple[float, ...]:
    head = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)[:n]
    return tuple(b / sum(head) for b in head)


@pytest.mark.parametrize("side, scales", [(11, 1), (21, 1), (22, 2), (32, 2), (43, 2), (44, 3), (64, 3), (87, 3),
                                          (88, 4), (128, 4), (175, 4)])
def test_ms_ssim_weights_for_small_images(side, scales):
    got = ms_ssim_betas(side, side + 100)  # the short side decides
    assert len(got) == scales and got == pytest.approx(_first(scales), abs=1e-15) and sum(got) == pytest.approx(1.0)
    assert ms_ssim_betas(side + 3, side) == got


def test_ms_ssim_weights_for_large_images_are_the_standard_ones():
    assert MS_SSIM_BETAS == (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
    assert ms_ssim_betas(176, 176) == ms_ssim_betas(1024, 512) == MS_SSIM_BETAS
    with pytest.raises(ValueError, match="at least 11x11"):
        ms_ssim_betas(10, 64)
    text = CONVENTIONS["ms_ssim"]
    assert "176" in text and "renormalised" in text and "0.0448" in text and "valid region" in text


def _structured(h: int, w: int, seed: int) -> torch.Tensor:
    """A photo crop with a checkerboard and a gradient pasted in, [1,3,h,w] in [-1,1]."""
    img = torch.from_numpy(skdata.astronaut()).permute(2, 0, 1).double() / 127.5 - 1
    out = img[:, 60 + seed:60 + seed + h, 90:90 + w].clone()
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    out[0, : h // 3] = ((yy[: h // 3] // 4 + xx[: h // 3] // 4) % 2).double() * 2 - 1
    out[2, :, : w // 4] = xx[:, : w // 4].double() / w * 2 - 1
    return out[None]


@pytest.mark.parametrize("h, w", [(16, 16), (32, 32), (45, 67), (100, 90), (180, 176)])
def test_ms_ssim_matches_numpy_reference(h, w):
    gen = torch.Generator().manual_seed(h * w)
    noise = torch.randn(1, 3, h, w, generator=gen, dtype=torch.float64)
    random_tgt = torch.rand(1, 3, h, w, generator=gen, dtype=torch.float64) * 2 - 1
    tgt = torch.cat([_structured(h, w, 0), _structured(h, w, 5), random_tgt])
    rec = tgt + torch.cat([0.05 * noise, 0.3 * noise, 0.1 * noise]) + 0.1  # clamped where it leaves [-1,1]
    got = compute_metrics(rec, tgt, names=["ms_ssim"])["ms_ssim"]
    if min(h, w) >= 176:  # the standard five scales: only the coarsest one's border differs from torchmetrics' own
        from torchmetrics.functional.image import multiscale_structural_similarity_index_measure as tm_ms_ssim

        theirs = tm_ms_ssim(rec.clamp(-1, 1) * 0.5 + 0.5, tgt * 0.5 + 0.5, sigma=1.5, kernel_size=11, reduction="none",
                            data_range=1.0, betas=MS_SSIM_BETAS, normalize="relu")
        torch.testing.assert_close(got, theirs, rtol=0, atol=5e-3)
    betas = _first({16: 1, 32: 2, 45: 3, 90: 4}[min(h, w)]) if min(h, w) < 176 else MS_SSIM_BETAS
    want = [_np_ms_ssim((t.numpy() + 1) / 2, (r.clamp(-1, 1).numpy() + 1) / 2, betas)
            for r, t in zip(rec, tgt, strict=True)]
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64), rtol=0, atol=1e-10)
    assert (got > 0).all() and (got < 1).all()
    if min(h, w) < 22:  # one scale: MS-SSIM is SSIM
        torch.testing.assert_close(got, ssim(rec, tgt), rtol=0, atol=1e-12)


@pytest.mark.parametrize("size", [11, 32, 90])
def test_ms_ssim_of_identical_images_is_one(size):
    tgt = torch.cat([_structured(size, size, 0), torch.rand(1, 3, size, size, dtype=torch.float64) * 2 - 1])
    torch.testing.assert_close(ms_ssim(tgt, tgt.clone()), torch.ones(2, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(ms_ssim(tgt.float(), tgt.float()), torch.ones(2, dtype=torch.float64),
                               rtol=0, atol=1e-12)


def test_ms_ssim_of_anticorrelated_images_is_zero_not_nan():
    tgt = _structured(64, 64, 0)
    got = ms_ssim(-tgt, tgt)  # negative contrast-structure terms are clamped at 0
    assert torch.isfinite(got).all() and (got == 0).all()


def test_ms_ssim_on_request_only():
    rec, tgt = _astronaut_pairs(n=2, size=32, noise=0.1)
    default = compute_metrics(rec, tgt, names=["psnr", "ssim", "mse"])
    got = compute_metrics(rec, tgt, names=["psnr", "ssim", "mse", "ms_ssim"])
    assert list(got) == ["psnr", "ssim", "mse", "ms_ssim"]
    for k in default:
        assert torch.equal(got[k], default[k])
    assert got["ms_ssim"].dtype == torch.float64 and got["ms_ssim"].shape == (2,)
    torch.testing.assert_close(got["ms_ssim"], ms_ssim(rec, tgt), rtol=0, atol=0)
