"""Reconstruction metrics (PSNR, SSIM, LPIPS, MSE) with the toolkit's published conventions.

Every metric takes a batch of reconstructions and a batch of targets, ``[B,3,H,W]`` tensors in
[-1,1], and returns one value per image (``Tensor[B]``); callers average across images.

* The reconstruction is clamped to [-1,1] first: that clamped image is what gets saved as PNG
  and shown, so it is what is scored. Targets must already lie in [-1,1].
* PSNR, SSIM and MSE are computed in float64 on images mapped to [0,1] (``x*0.5+0.5``), data
  range 1.
* PSNR of two identical images is ``+inf`` (MSE 0). It is returned as ``inf``; callers that
  average must handle it (e.g. report it separately or cap it).
* SSIM equals ``skimage.metrics.structural_similarity(a, b, channel_axis=-1, data_range=1,
  gaussian_weights=True, sigma=1.5, use_sample_covariance=False)``.
* LPIPS is the official AlexNet v0.1 metric (:class:`gan_inversion_bench.perceptual.LPIPSAlex`)
  on the [-1,1] images at their native resolution.

:data:`CONVENTIONS` states all of this in words for table footers.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["Metric", "METRICS", "CONVENTIONS", "compute_metrics", "prepare", "psnr", "ssim", "mse", "lpips",
           "SSIM_WINDOW", "SSIM_SIGMA", "SSIM_K1", "SSIM_K2"]

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03

#: The toolkit's metric conventions, one sentence each (used by table footers).
CONVENTIONS: dict[str, str] = {
    "inputs": "Reconstructions and targets are [B,3,H,W] RGB tensors in [-1,1]; metrics are computed per "
              "image and averaged across images.",
    "clamping": "The reconstruction is clamped to [-1,1] before scoring (the clamped image is what is saved "
                "as PNG); targets must already lie in [-1,1].",
    "range": "PSNR, SSIM and MSE use images mapped to [0,1] (x*0.5+0.5) with data range 1, in float64.",
    "psnr": "PSNR (dB) per image: 10*log10(1/MSE_i), MSE over C,H,W, data range 1; identical images "
            "give +inf.",
    "ssim": "SSIM: Gaussian window 11x11, sigma=1.5, K1=0.01, K2=0.03, data range 1, population covariance, "
            "per channel on the valid region (no padding), averaged over channels and positions (equals "
            "skimage structural_similarity with gaussian_weights=True, sigma=1.5, "
            "use_sample_covariance=False, data_range=1).",
    "lpips": "LPIPS: official v0.1 linear heads on AlexNet (ImageNet weights), inputs in [-1,1] at native "
             "resolution (images smaller than 32x32, too small for AlexNet, are first upsampled bilinearly to "
             "32x32), spatially averaged; lower is better.",
    "mse": "MSE per image on [0,1] images, averaged over C,H,W.",
}

# Reconstructions far outside [-1,1] are almost certainly in the wrong range (e.g. [0,255]);
# clamping them would silently hide the bug.
_RECONSTRUCTION_ABS_LIMIT = 8.0
_TARGET_TOLERANCE = 1e-4


@dataclass(frozen=True)
class Metric:
    """One entry of the metric table. ``fn(reconstructions, targets) -> Tensor[B]``."""

    name: str
    higher_is_better: bool
    description: str
    fn: Callable[[Tensor, Tensor], Tensor]


# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------

def _check_batch(x: Any, what: str) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{what}: expected a torch.Tensor of shape [B,3,H,W] in [-1,1], found {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(f"{what}: expected a 4-d tensor [B,3,H,W], found shape {list(x.shape)} ({x.ndim}-d)")
    if x.shape[1] != 3:
        raise ValueError(f"{what}: expected 3 (RGB) channels in dim 1 of [B,3,H,W], found {x.shape[1]} "
                         f"(shape {list(x.shape)})")
    if x.shape[0] == 0 or x.shape[2] == 0 or x.shape[3] == 0:
        raise ValueError(f"{what}: expected a non-empty [B,3,H,W] batch, found shape {list(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{what}: expected a floating-point tensor in [-1,1], found dtype {x.dtype}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{what}: expected finite values in [-1,1], found NaN or inf")


def prepare(reconstructions: Tensor, targets: Tensor, device: Any = None) -> tuple[Tensor, Tensor]:
    """Validate a (reconstructions, targets) pair and apply the conventions.

    Returns both on ``device`` (default: the reconstructions' device), the reconstruction
    clamped to [-1,1]. Raises ``ValueError``/``TypeError`` with the expected and found shapes.
    """
    _check_batch(reconstructions, "reconstructions")
    _check_batch(targets, "targets")
    if reconstructions.shape != targets.shape:
        raise ValueError(f"reconstructions and targets must have the same shape [B,3,H,W]; found "
                         f"{list(reconstructions.shape)} and {list(targets.shape)}")
    lo, hi = float(targets.min()), float(targets.max())
    if lo < -1 - _TARGET_TOLERANCE or hi > 1 + _TARGET_TOLERANCE:
        raise ValueError(f"targets: expected values in [-1,1], found [{lo:.4g}, {hi:.4g}]")
    peak = float(reconstructions.abs().max())
    if peak > _RECONSTRUCTION_ABS_LIMIT:
        raise ValueError(f"reconstructions: expected values in [-1,1] (slightly outside is clamped), found "
                         f"|x| up to {peak:.4g}; are they in [0,255] or unnormalised?")
    device = reconstructions.device if device is None else torch.device(device)
    rec = reconstructions.to(device).clamp(-1.0, 1.0)
    tgt = targets.to(device).clamp(-1.0, 1.0)
    return rec, tgt


def _to_unit(x: Tensor) -> Tensor:
    return x.to(torch.float64) * 0.5 + 0.5


# --------------------------------------------------------------------------------------------
# metrics (each: raw [-1,1] batches in, Tensor[B] out, on the inputs' device)
# --------------------------------------------------------------------------------------------

def mse(reconstructions: Tensor, targets: Tensor) -> Tensor:
    """Per-image mean squared error on [0,1] images (float64)."""
    rec, tgt = prepare(reconstructions, targets)
    return (_to_unit(rec) - _to_unit(tgt)).pow(2).flatten(1).mean(dim=1)


def psnr(reconstructions: Tensor, targets: Tensor) -> Tensor:
    """Per-image PSNR in dB with data range 1: ``10*log10(1/MSE_i)``; ``inf`` for identical images."""
    err = mse(reconstructions, targets)
    return 10.0 * torch.log10(1.0 / err)  # 1/0 = inf → inf


def _gaussian_window(device: torch.device) -> Tensor:
    radius = SSIM_WINDOW // 2
    x = torch.arange(-radius, radius + 1, dtype=torch.float64, device=device)
    g = torch.exp(-0.5 * (x / SSIM_SIGMA) ** 2)
    return g / g.sum()


def _filter_valid(x: Tensor, g: Tensor) -> Tensor:
    """Separable Gaussian filter over H and W of a [N,1,H,W] tensor, valid region only."""
    x = F.conv2d(x, g.view(1, 1, -1, 1))
    return F.conv2d(x, g.view(1, 1, 1, -1))


def ssim(reconstructions: Tensor, targets: Tensor) -> Tensor:
    """Per-image SSIM (see :data:`CONVENTIONS`), float64.

    Images must be at least 11×11 (the Gaussian window; the valid region must be non-empty).
    """
    rec, tgt = prepare(reconstructions, targets)
    b, c, h, w = rec.shape
    if h < SSIM_WINDOW or w < SSIM_WINDOW:
        raise ValueError(f"ssim: images must be at least {SSIM_WINDOW}x{SSIM_WINDOW} (the Gaussian window), "
                         f"found {h}x{w}")
    x = _to_unit(rec).reshape(b * c, 1, h, w)
    y = _to_unit(tgt).reshape(b * c, 1, h, w)
    g = _gaussian_window(x.device)
    # one filtering pass over the five maps: x, y, x², y², xy
    maps = _filter_valid(torch.cat([x, y, x * x, y * y, x * y], dim=0), g)
    mu_x, mu_y, m_xx, m_yy, m_xy = maps.split(b * c, dim=0)
    var_x = m_xx - mu_x * mu_x  # population covariance (no n/(n-1) correction)
    var_y = m_yy - mu_y * mu_y
    cov = m_xy - mu_x * mu_y
    c1 = (SSIM_K1 * 1.0) ** 2
    c2 = (SSIM_K2 * 1.0) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))
    return s.reshape(b, -1).mean(dim=1)


#: AlexNet's smallest input: below it a pooling layer has no output
LPIPS_MIN_SIZE = 32


def lpips(reconstructions: Tensor, targets: Tensor) -> Tensor:
    """Per-image LPIPS (AlexNet, v0.1) on the [-1,1] images at native resolution; images smaller
    than :data:`LPIPS_MIN_SIZE` on a side are upsampled bilinearly to that size first."""
    from .perceptual import get_lpips

    rec, tgt = prepare(reconstructions, targets)
    h, w = rec.shape[-2:]
    if h < LPIPS_MIN_SIZE or w < LPIPS_MIN_SIZE:
        size = (max(h, LPIPS_MIN_SIZE), max(w, LPIPS_MIN_SIZE))
        rec, tgt = (torch.nn.functional.interpolate(t, size=size, mode="bilinear", align_corners=False)
                    for t in (rec, tgt))
    with torch.no_grad():
        return get_lpips(rec.device)(rec, tgt)


METRICS: dict[str, Metric] = {
    "psnr": Metric("psnr", True, CONVENTIONS["psnr"], psnr),
    "ssim": Metric("ssim", True, CONVENTIONS["ssim"], ssim),
    "lpips": Metric("lpips", False, CONVENTIONS["lpips"], lpips),
    "mse": Metric("mse", False, CONVENTIONS["mse"], mse),
}


def compute_metrics(reconstructions: Tensor, targets: Tensor, names: Iterable[str] | None = None,
                    device: Any = None) -> dict[str, Tensor]:
    """Per-image metrics: ``{name: float64 CPU Tensor[B]}`` in the order of ``names``.

    ``names`` defaults to all of :data:`METRICS`. ``device`` is where the work runs (default: the
    reconstructions' device). Runs under ``torch.no_grad()``.
    """
    if isinstance(names, str):
        names = [names]
    names = list(METRICS) if names is None else list(names)
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; expected names from {sorted(METRICS)}")
    if not names:
        raise ValueError(f"no metrics requested; expected names from {sorted(METRICS)}")
    with torch.no_grad():
        rec, tgt = prepare(reconstructions, targets, device)
        out: dict[str, Tensor] = {}
        for name in dict.fromkeys(names):
            value = METRICS[name].fn(rec, tgt)
            out[name] = value.detach().to("cpu", torch.float64).reshape(rec.shape[0])
    return out
