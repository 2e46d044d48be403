"""Reconstruction metrics (PSNR, SSIM, LPIPS, MSE; MS-SSIM on request) with the toolkit's conventions.

Every metric takes a batch of reconstructions and a batch of targets, ``[B,3,H,W]`` tensors in
[-1,1], and returns one value per image (``Tensor[B]``); callers average across images.

* The reconstruction is clamped to [-1,1] first: that clamped image is what gets saved as PNG
  and shown, so it is what is scored. Targets must already lie in [-1,1].
* PSNR, SSIM, MS-SSIM and MSE are computed in float64 on images mapped to [0,1] (``x*0.5+0.5``),
  data range 1.
* PSNR of two identical images is ``+inf`` (MSE 0). It is returned as ``inf``; callers that
  average must handle it (e.g. report it separately or cap it).
* SSIM equals ``skimage.metrics.structural_similarity(a, b, channel_axis=-1, data_range=1,
  gaussian_weights=True, sigma=1.5, use_sample_covariance=False)``. It is computed with
  torchmetrics' ``structural_similarity_index_measure``, whose full SSIM map is cropped to the
  valid region: torchmetrics' own per-image mean includes its reflect-padded border and differs
  from scikit-image by up to 0.063 on 11-128 px random images, the cropped mean by at most
  3e-15 (float64; also within 3e-15 of the hand-written separable filter this module used before,
  so no 4-decimal value changes). In float64 on a CPU it is about 5x slower than that filter was
  (a full 11x11 kernel on a padded image instead of two 11-tap passes).
* MS-SSIM (``"ms_ssim"``, not in the default set :data:`DEFAULT_METRICS`) is composed here from
  torchmetrics' per-scale SSIM and contrast-structure terms rather than taken from its
  ``multiscale_structural_similarity_index_measure``: that one also computes the coarsest scale's
  SSIM over the reflect-padded border, not the valid region the standard (Wang et al. 2003) and
  this toolkit's SSIM use; measured on photo crops, it differs from the valid-region MS-SSIM by up
  to 0.2 at 32 px, 0.04 at 64 px, 0.02 at 128 px and 2e-3 at 256 px. It also refuses some sizes
  (88-98 px with 4 scales). Small images get fewer scales: see ``CONVENTIONS["ms_ssim"]``.
* LPIPS is the official AlexNet v0.1 metric (:class:`gan_inversion_bench.perceptual.LPIPSAlex`)
  on the [-1,1] images at their native resolution.

:func:`compute_metrics` returns a plain ``{name: Tensor[B]}``: torchmetrics' ``MetricCollection``
accumulates state over ``update`` calls and reduces over a whole data set, while the harness
needs the per-image values of each batch (and LPIPS is the toolkit's own official network), so
the functional API is used directly.

:data:`CONVENTIONS` states all of this in words for table footers.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.functional.image import structural_similarity_index_measure as _tm_ssim

__all__ = ["Metric", "METRICS", "DEFAULT_METRICS", "CONVENTIONS", "compute_metrics", "prepare", "psnr", "ssim",
           "ms_ssim", "ms_ssim_betas", "mse", "lpips", "SSIM_WINDOW", "SSIM_SIGMA", "SSIM_K1", "SSIM_K2",
           "MS_SSIM_BETAS"]

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
#: Wang, Simoncelli & Bovik (2003), finest scale first (they sum to 1.0001, as published)
MS_SSIM_BETAS: tuple[float, ...] = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)

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
    "ms_ssim": "MS-SSIM (Wang et al. 2003; not in the default metric set): scales made by 2x2 average pooling "
               "(an odd last row or column is dropped); at each scale the SSIM settings above (Gaussian 11x11, "
               "sigma=1.5, K1=0.01, K2=0.03, data range 1, valid region, averaged over channels and positions); "
               "the contrast-structure term at every scale but the coarsest and the full SSIM at the coarsest, "
               "each clamped at 0 and raised to its weight, multiplied. A short side of at least 176 px uses the "
               "standard 5 scales and weights (0.0448, 0.2856, 0.3001, 0.2363, 0.1333); smaller images use as many "
               "scales M as keep the coarsest at least 11 px (short side 88-175 px: 4, 44-87: 3, 22-43: 2, "
               "11-21: 1, i.e. SSIM) with the first M weights renormalised to sum 1. Identical images give 1.",
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


def region_metrics(reconstructions: Tensor, targets: Tensor, region: Tensor) -> dict[str, Tensor]:
    """MSE and PSNR inside a region only (the inpainting hole): ``region`` ``[B, 1, H, W]`` bool;
    the mean over the region's pixels and the 3 channels, on [0, 1] images (float64 CPU ``[B]``,
    NaN where a region is empty). The conventions of :func:`mse` and :func:`psnr` otherwise."""
    rec, tgt = prepare(reconstructions, targets)
    if region.shape != (rec.shape[0], 1, *rec.shape[-2:]):
        raise ValueError(f"region must be [B, 1, H, W] = {[rec.shape[0], 1, *rec.shape[-2:]]}, "
                         f"got {list(region.shape)}")
    w = region.to(device=rec.device, dtype=torch.float64)
    sq = (_to_unit(rec) - _to_unit(tgt)).pow(2) * w
    err = sq.flatten(1).sum(1) / (3 * w.flatten(1).sum(1))
    return {"mse_hole": err.cpu(), "psnr_hole": (10.0 * torch.log10(1.0 / err)).cpu()}


def _check_ssim_size(x: Tensor, what: str) -> None:
    h, w = x.shape[-2:]
    if h < SSIM_WINDOW or w < SSIM_WINDOW:
        raise ValueError(f"{what}: images must be at least {SSIM_WINDOW}x{SSIM_WINDOW} (the Gaussian window), "
                         f"found {h}x{w}")


def _ssim_mean(x: Tensor, y: Tensor, part: Literal["ssim", "cs"] = "ssim") -> Tensor:
    """Per-image mean over channels and the valid region of the SSIM map (``part="ssim"``) or of
    the contrast-structure map (``part="cs"``) of two [0,1] batches ``[B,C,H,W]``, via torchmetrics.

    torchmetrics reflect-pads by the window radius and filters; its full SSIM map has the input's
    size, and only the centre (the valid region) is free of padding, so it is cropped here. Its
    contrast-structure mean is already taken over that centre. torchmetrics derives the Gaussian
    window from sigma (``2*int(3.5*sigma+0.5)+1`` = 11 for sigma 1.5) and clamps negative variances
    (float64 rounding only) at 0.
    """
    kwargs: dict[str, Any] = {"gaussian_kernel": True, "sigma": SSIM_SIGMA, "kernel_size": SSIM_WINDOW,
                              "reduction": "none", "data_range": 1.0, "k1": SSIM_K1, "k2": SSIM_K2}
    packed = _tm_ssim(x, y, return_contrast_sensitivity=part == "cs", return_full_image=part == "ssim", **kwargs)
    if not isinstance(packed, tuple) or (part == "ssim" and packed[1].shape != x.shape):
        raise RuntimeError("torchmetrics' structural_similarity_index_measure did not return the expected "
                           f"{'full SSIM map' if part == 'ssim' else 'contrast term'}; this torchmetrics version "
                           "is not supported")
    if part == "cs":
        return packed[1]
    r = SSIM_WINDOW // 2
    return packed[1][..., r:-r, r:-r].reshape(x.shape[0], -1).mean(dim=1)


def ssim(reconstructions: Tensor, targets: Tensor) -> Tensor:
    """Per-image SSIM (see :data:`CONVENTIONS`), float64, computed with torchmetrics.

    Images must be at least 11×11 (the Gaussian window; the valid region must be non-empty).
    """
    rec, tgt = prepare(reconstructions, targets)
    _check_ssim_size(rec, "ssim")
    return _ssim_mean(_to_unit(rec), _to_unit(tgt))


def ms_ssim_betas(height: int, width: int) -> tuple[float, ...]:
    """The MS-SSIM weights, finest scale first, for images of this size (one per scale).

    The standard five (:data:`MS_SSIM_BETAS`) when the short side is at least 176 px; otherwise
    the first ``M`` of them renormalised to sum 1, ``M`` the most scales that keep the coarsest one
    at least :data:`SSIM_WINDOW` px (``side >> (M-1) >= 11``). See ``CONVENTIONS["ms_ssim"]``.
    """
    side = min(height, width)
    if side < SSIM_WINDOW:
        raise ValueError(f"ms_ssim: images must be at least {SSIM_WINDOW}x{SSIM_WINDOW} (the Gaussian window), "
                         f"found {height}x{width}")
    scales = 1
    while scales < len(MS_SSIM_BETAS) and side >> scales >= SSIM_WINDOW:
        scales += 1
    if scales == len(MS_SSIM_BETAS):
        return MS_SSIM_BETAS
    head = MS_SSIM_BETAS[:scales]
    return tuple(b / sum(head) for b in head)


def ms_ssim(reconstructions: Tensor, targets: Tensor) -> Tensor:
    """Per-image multi-scale SSIM (see ``CONVENTIONS["ms_ssim"]``), float64, in [0,1].

    The contrast-structure term at every scale but the coarsest and the SSIM at the coarsest, all
    on the valid region, from torchmetrics' SSIM; the scales are 2x2 average poolings.
    """
    rec, tgt = prepare(reconstructions, targets)
    _check_ssim_size(rec, "ms_ssim")
    x, y = _to_unit(rec), _to_unit(tgt)
    betas = ms_ssim_betas(*x.shape[-2:])
    out = torch.ones(x.shape[0], dtype=torch.float64, device=x.device)
    for j, beta in enumerate(betas):
        if j:
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
        term = _ssim_mean(x, y, "ssim" if j == len(betas) - 1 else "cs")
        out = out * term.clamp(min=0.0) ** beta
    return out


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
        value: Tensor = get_lpips(rec.device)(rec, tgt)
    return value


METRICS: dict[str, Metric] = {
    "psnr": Metric("psnr", True, CONVENTIONS["psnr"], psnr),
    "ssim": Metric("ssim", True, CONVENTIONS["ssim"], ssim),
    "lpips": Metric("lpips", False, CONVENTIONS["lpips"], lpips),
    "mse": Metric("mse", False, CONVENTIONS["mse"], mse),
    "ms_ssim": Metric("ms_ssim", True, CONVENTIONS["ms_ssim"], ms_ssim),
}
#: what :func:`compute_metrics` computes when no names are given (the result database's columns)
DEFAULT_METRICS: tuple[str, ...] = ("psnr", "ssim", "lpips", "mse")


def compute_metrics(reconstructions: Tensor, targets: Tensor, names: Iterable[str] | None = None,
                    device: Any = None) -> dict[str, Tensor]:
    """Per-image metrics: ``{name: float64 CPU Tensor[B]}`` in the order of ``names``.

    ``names`` defaults to :data:`DEFAULT_METRICS` (psnr, ssim, lpips, mse); any name of
    :data:`METRICS` can be asked for, e.g. ``names=[*DEFAULT_METRICS, "ms_ssim"]``. ``device`` is
    where the work runs (default: the reconstructions' device). Runs under ``torch.no_grad()``.
    """
    if isinstance(names, str):
        names = [names]
    names = list(DEFAULT_METRICS) if names is None else list(names)
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
