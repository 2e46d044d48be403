"""StyleGAN2 (the checkpoint layout of rosinality/stylegan2-pytorch) as a :class:`SplitGenerator`.

Registry name ``stylegan2``; factory :func:`stylegan2`. Plain PyTorch only (no custom CUDA
extensions), written from the architecture description in
``/work/shared/reference/checkpoints/README.md`` and the key/shape manifests
``tests/data/checkpoints/stylegan2_rosinality_{256,1024}.json``.

Checkpoint container
--------------------
A torch file holding a dict ``{"g_ema": state_dict, "latent_avg": Tensor[style_dim]}``, sometimes
also ``"g"`` and ``"d"`` (ignored), as written by rosinality's ``convert_weight.py``. It is read
with ``torch.load(weights_only=True)``. A bare state_dict, a dict without ``"g_ema"``, or a
``train.py`` checkpoint (which pickles an ``argparse.Namespace`` that the safe loader refuses) is
rejected with a message saying how to convert it. Keys and shapes are checked strictly; the
architecture (resolution, style size, mapping depth, channel widths) is read off the checkpoint,
so config-f at 256 and 1024 and other channel multipliers load. All *buffers* are optional:

* ``*.kernel`` (blur / upsampling FIR kernels) are deterministic and always rebuilt:
  ``outer([1,3,3,1], [1,3,3,1]) / 64``, times 4 (= factor²) where they follow an upsampling;
* ``noises.noise_i`` (the fixed noise maps) are rebuilt as N(0, 1) maps from a seeded generator
  (``noise_seed``, default 0; drawn in order ``noise_0, noise_1, …``) when the file lacks them.
  Such a generator does not reproduce the original noise, only the same distribution.

``weights_source`` names the file and lists what was rebuilt or estimated.

Numerics (as in the reference implementation)
---------------------------------------------
* mapping ``style``: PixelNorm (eps 1e-8) then ``n_mlp`` equalized-lr linear layers with lr
  multiplier 0.01 (weight·lr_mul/√in, bias·lr_mul), each followed by the fused leaky ReLU;
* fused leaky ReLU = ``leaky_relu(x + bias, 0.2) * √2``;
* modulated convolution: style ``s = A(w)`` (equalized linear, bias initialised to 1), weight
  ``W·s/√(in·k²)``, demodulated by ``1/√(Σ_{in,k,k} (W·s/√(in·k²))² + 1e-8)``; implemented as
  input modulation + one shared convolution + output demodulation (mathematically identical to
  the per-sample grouped convolution);
* upsampling convolutions: transposed 3×3 conv with stride 2, then the ×4 blur with padding
  (1, 1) (``upfirdn2d`` written with zero insertion, ``F.pad`` and a depthwise ``F.conv2d``);
* noise: ``x + strength_i · noise_i`` with the stored fixed maps (no random noise, ever);
* ToRGB: modulated 1×1 conv without demodulation + bias, plus the FIR-upsampled previous skip
  image (zero insertion ×2, pad (2, 1), kernel ×4). The image is the final skip; no tanh.

Latent spaces (constructor / factory argument ``latent_space``)
----------------------------------------------------------------
* ``"z"``: latents ``[B, style_dim]`` ~ N(0, I); G1 maps them through ``style`` and applies the
  truncation ``w ← w̄ + ψ (w − w̄)`` (all layers) before synthesis.
* ``"w"``: latents ``[B, style_dim]`` are w codes, broadcast to every layer.
* ``"w+"``: latents ``[B, n_latent * style_dim]``: the ``[B, n_latent, style_dim]`` layer codes
  flattened layer-major (row ``b`` = ``w_0 ‖ w_1 ‖ … ‖ w_{n_latent-1}``); ``n_latent`` is 18 at
  1024 and 14 at 256.

For ``"w"`` and ``"w+"`` the latent *is* the (already truncated) code, so the generator applies
no truncation itself; :meth:`StyleGAN2Generator.sample_latents` draws the prior of that space
(z ~ N(0, I) mapped through ``style`` and truncated with ψ; for w+ the same code on every layer).
Every space therefore samples the same image distribution. ``w̄`` is ``latent_avg`` from the file
or, if absent, the mean of ``style(z)`` over 10 000 seeded z samples (see ``weights_source``).

Split points and the intermediate
---------------------------------
Stages: ``conv1`` (4×4), ``convs.0`` … ``convs.{2L-1}`` (one per synthesis conv; even ones
upsample), then ``to_rgbs.{L-1}`` (the last ToRGB, which outputs the image). Split point ℓ is
after ℓ stages: 0 is the constant input, 1 is after ``conv1``, ``1 + j + 1`` after ``convs.j``,
and the last is the image. Every intermediate (except the image) is a
:class:`~gan_inversion_bench.generator.SplitState`:

* ``features``: the synthesis feature map ``[B, C, r, r]`` (after noise and the fused leaky ReLU
  of that conv; the constant input ``[B, C4, 4, 4]`` at split 0);
* ``context["styles"]``: all layer codes ``[B, n_latent, style_dim]`` (already truncated); G2
  reads only the codes of the layers it still has to run (conv k uses code k, as in the
  reference: conv1 → 0, to_rgb1 → 1, convs.j → j+1, to_rgbs.k → 2k+3);
* ``context["skip"]``: the running RGB skip image ``[B, 3, r', r']`` *not yet including* the
  ToRGB of the current resolution. The ToRGB of a resolution is applied lazily, at the start of
  the next upsampling conv (or in the final stage), from the features held in the state, so
  replacing ``features`` at any split point changes every later RGB contribution too. Before
  ``to_rgb1`` has run (splits 0 and 1), ``skip`` is a zero 4×4 placeholder that is not used.

The noise maps are generator buffers (shared by all samples), so they are not in the context,
unless per-image maps were given to :meth:`StyleGAN2Generator.synthesise_wplus`: then
``context["noise_i"]`` ``[B, 1, r, r]`` replaces buffer ``noise_i`` in every later stage.

Style space (W+ synthesis with explicit noise)
----------------------------------------------
Methods that optimise per-layer codes and noise maps (Image2StyleGAN) use, whatever the
``latent_space``: ``n_latent`` and ``style_dim`` (the shape of W+), ``latent_avg`` (w̄),
:meth:`StyleGAN2Generator.noise_maps` (copies of the fixed maps) and
:meth:`StyleGAN2Generator.synthesise_wplus` ``(ws, noise=None)``. With ``ws`` the layer codes
of ``z`` and ``noise`` None (or the generator's own maps) it is the same image as ``forward(z)``.

Composition (mGANprior and the like): ``with_features(state, composed, rows)`` keeps the context
of the selected rows. A method composing the features of N codes per image passes ``rows`` =
the first code of each image, so the styles and the skip image of **the first code of each image**
are used for G2, while the composed feature map replaces only ``features``.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gan_inversion_bench.generator import SplitGenerator, SplitState
from gan_inversion_bench.weights import CheckpointError, WeightsNotFound, check_state_dict, torch_load_safe

__all__ = [
    "StyleGAN2Generator", "stylegan2", "load_rosinality_checkpoint", "upfirdn2d", "fir_kernel",
    "fused_leaky_relu", "modulated_conv2d", "config_f_channels", "LICENCE",
]

SQRT2 = math.sqrt(2.0)
BLUR_TAPS = (1, 3, 3, 1)
LICENCE = ("Nvidia Source Code License-NC (StyleGAN2 networks as released by NVIDIA, converted with "
           "rosinality/stylegan2-pytorch, whose code is MIT); non-commercial use only")


# ---- functional building blocks ---------------------------------------------------------------
def fir_kernel(taps: Sequence[float] = BLUR_TAPS, gain: float = 1.0) -> Tensor:
    """The separable FIR kernel ``outer(taps, taps) / sum · gain`` as a float32 ``[k, k]`` tensor."""
    t = torch.tensor([float(x) for x in taps], dtype=torch.float32)
    k = torch.outer(t, t)
    return k / k.sum() * gain


def upfirdn2d(x: Tensor, kernel: Tensor, up: int = 1, down: int = 1, pad: tuple[int, int] = (0, 0)) -> Tensor:
    """Upsample by zero insertion, pad, convolve each channel with ``kernel`` (a true convolution,
    i.e. the kernel flipped), downsample by striding. ``pad`` = (before, after) on both axes."""
    b, c, h, w = x.shape
    if up > 1:
        x = x.reshape(b, c, h, 1, w, 1)
        x = F.pad(x, (0, up - 1, 0, 0, 0, up - 1))  # a zero after every sample, on both axes
        x = x.reshape(b, c, h * up, w * up)
    p0, p1 = pad
    if p0 or p1:
        x = F.pad(x, (p0, p1, p0, p1))
    kh, kw = kernel.shape
    weight = torch.flip(kernel, (0, 1)).to(device=x.device, dtype=x.dtype).reshape(1, 1, kh, kw)
    x = F.conv2d(x, weight.repeat(c, 1, 1, 1), groups=c)
    if down > 1:
        x = x[:, :, ::down, ::down]
    return x


def fused_leaky_relu(x: Tensor, bias: Tensor, negative_slope: float = 0.2, gain: float = SQRT2) -> Tensor:
    """``leaky_relu(x + bias, 0.2) · √2`` with ``bias`` broadcast over dimension 1."""
    shape = (1, -1) + (1,) * (x.dim() - 2)
    return F.leaky_relu(x + bias.reshape(shape), negative_slope) * gain


# PLR0913: a public function whose keywords mirror the reference implementation's options
def modulated_conv2d(x: Tensor, weight: Tensor, styles: Tensor, *, demodulate: bool = True,  # noqa: PLR0913
                     upsample: bool = False, blur: Tensor | None = None, blur_pad: tuple[int, int] = (1, 1),
                     eps: float = 1e-8) -> Tensor:
    """StyleGAN2's modulated convolution.

    ``x`` ``[B, in, H, W]``; ``weight`` ``[out, in, k, k]`` (already multiplied by the
    equalized-lr scale); ``styles`` ``[B, in]``. Equivalent to convolving sample b with
    ``W_b = weight · styles[b]`` (per input channel), demodulated per output channel by
    ``rsqrt(Σ W_b² + eps)``; with ``upsample`` a stride-2 transposed conv followed by the blur
    ``blur`` (``[4, 4]``, padding ``blur_pad``).
    """
    b, cin = x.shape[:2]
    cout, _, kh, _ = weight.shape
    xs = x * styles.reshape(b, cin, 1, 1)
    if upsample:
        if blur is None:
            raise ValueError("an upsampling modulated conv needs its blur kernel")
        y = F.conv_transpose2d(xs, weight.transpose(0, 1), stride=2, padding=0)
        y = upfirdn2d(y, blur, pad=blur_pad)
    else:
        y = F.conv2d(xs, weight, padding=kh // 2)
    if demodulate:
        # Σ_{i,kh,kw} (W[o,i]·s_i)² = Σ_i s_i² · Σ_{kh,kw} W[o,i]²
        d = torch.rsqrt(styles.pow(2) @ weight.pow(2).sum(dim=(2, 3)).t() + eps)
        y = y * d.reshape(b, cout, 1, 1)
    return y


# ---- modules (names mirror the checkpoint keys) ------------------------------------------------
class PixelNorm(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-8)


class EqualLinear(nn.Module):
    """Equalized-learning-rate linear layer: ``weight · lr_mul/√in``, ``bias · lr_mul``."""

    def __init__(self, in_dim: int, out_dim: int, *, bias_init: float = 0.0, lr_mul: float = 1.0,
                 activation: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(out_dim, in_dim))
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.bias_init = float(bias_init)
        self.activation = activation

    def reset(self, gen: torch.Generator) -> None:
        with torch.no_grad():
            self.weight.copy_(torch.randn(self.weight.shape, generator=gen) / self.lr_mul)
            self.bias.fill_(self.bias_init)

    def forward(self, x: Tensor) -> Tensor:
        if self.activation:
            return fused_leaky_relu(F.linear(x, self.weight * self.scale), self.bias * self.lr_mul)
        return F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)


class Blur(nn.Module):
    kernel: Tensor  # a buffer

    def __init__(self, pad: tuple[int, int], gain: float = 1.0, taps: Sequence[float] = BLUR_TAPS):
        super().__init__()
        self.register_buffer("kernel", fir_kernel(taps, gain))
        self.pad = pad

    def forward(self, x: Tensor) -> Tensor:
        return upfirdn2d(x, self.kernel, pad=self.pad)


class Upsample(nn.Module):
    """FIR upsampling ×2 of the skip image (zero insertion, kernel × 4, pad (2, 1))."""

    kernel: Tensor  # a buffer

    def __init__(self, factor: int = 2, taps: Sequence[float] = BLUR_TAPS):
        super().__init__()
        self.register_buffer("kernel", fir_kernel(taps, factor ** 2))
        p = len(taps) - factor
        self.factor = factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)

    def forward(self, x: Tensor) -> Tensor:
        return upfirdn2d(x, self.kernel, up=self.factor, pad=self.pad)


class ModulatedConv2d(nn.Module):
    blur: Blur  # set when upsampling

    # PLR0913: the arguments of rosinality's ModulatedConv2d, which this layer reproduces
    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, style_dim: int, *, demodulate: bool = True,  # noqa: PLR0913
                 upsample: bool = False, taps: Sequence[float] = BLUR_TAPS):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1, out_ch, in_ch, kernel_size, kernel_size))
        self.upsample = upsample
        if upsample:
            factor = 2
            p = (len(taps) - factor) - (kernel_size - 1)
            self.blur = Blur(((p + 1) // 2 + factor - 1, p // 2 + 1), gain=factor ** 2, taps=taps)
        self.modulation = EqualLinear(style_dim, in_ch, bias_init=1.0)
        self.scale = 1.0 / math.sqrt(in_ch * kernel_size ** 2)
        self.demodulate = demodulate

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        styles = self.modulation(w)
        return modulated_conv2d(x, self.weight[0] * self.scale, styles, demodulate=self.demodulate,
                                upsample=self.upsample, blur=self.blur.kernel if self.upsample else None,
                                blur_pad=self.blur.pad if self.upsample else (1, 1))


class NoiseInjection(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor, noise: Tensor) -> Tensor:
        return x + self.weight * noise


class FusedLeakyReLU(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        return fused_leaky_relu(x, self.bias)


class StyledConv(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, style_dim: int, *, upsample: bool = False):
        super().__init__()
        self.conv = ModulatedConv2d(in_ch, out_ch, 3, style_dim, upsample=upsample)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_ch)

    def forward(self, x: Tensor, w: Tensor, noise: Tensor) -> Tensor:
        return self.activate(self.noise(self.conv(x, w), noise))


class ToRGB(nn.Module):
    def __init__(self, in_ch: int, style_dim: int, *, upsample: bool = True):
        super().__init__()
        if upsample:
            self.upsample = Upsample()
        self.conv = ModulatedConv2d(in_ch, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: Tensor, w: Tensor, skip: Tensor | None = None) -> Tensor:
        out = self.conv(x, w) + self.bias
        if skip is not None:
            out = out + self.upsample(skip)
        return out


class ConstantInput(nn.Module):
    def __init__(self, channels: int, size: int = 4):
        super().__init__()
        self.input = nn.Parameter(torch.zeros(1, channels, size, size))


def config_f_channels(channel_multiplier: int = 2) -> dict[int, int]:
    """Channels per resolution of the reference config (512 up to 64², then halving)."""
    m = channel_multiplier
    return {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * m, 128: 128 * m, 256: 64 * m, 512: 32 * m, 1024: 16 * m}


def tiny_channels() -> dict[int, int]:
    return {4: 32, 8: 32, 16: 16, 32: 16, 64: 8, 128: 8, 256: 8, 512: 8, 1024: 8}


LATENT_SPACES = ("z", "w", "w+")


# ---- the generator ---------------------------------------------------------------------------------

def _require_state(x: Any, g: SplitGenerator) -> None:
    if not isinstance(x, SplitState):
        raise TypeError(
            f"G2 of {g.name or type(g).__name__} takes the SplitState that G1 returns (the feature map plus the "
            f"context later layers need), got {type(x).__name__}; to change the features use "
            f"g.with_features(g.g1(z, split), features)")


class StyleGAN2Generator(SplitGenerator):
    """StyleGAN2 synthesis + mapping with the rosinality module layout. See the module docstring."""

    latent_avg: Tensor  # a buffer

    # PLR0913: a public constructor; its keywords are the generator's documented options
    def __init__(self, resolution: int = 1024, *, style_dim: int = 512, n_mlp: int = 8, channel_multiplier: int = 2,  # noqa: PLR0913
                 channels: Mapping[int, int] | None = None, lr_mlp: float = 0.01, latent_space: str = "w+",
                 truncation: float = 1.0, latent_avg: Tensor | None = None, noise_seed: int = 0):
        super().__init__()
        log_size = round(math.log2(resolution)) if resolution > 0 else 0
        if resolution < 8 or 2 ** log_size != resolution:
            raise ValueError(f"StyleGAN2 resolution must be a power of two >= 8, got {resolution}")
        if latent_space not in LATENT_SPACES:
            raise ValueError(f"latent_space must be one of {', '.join(LATENT_SPACES)}; got {latent_space!r}")
        chans = dict(channels) if channels is not None else config_f_channels(channel_multiplier)
        chans = {int(k): int(v) for k, v in chans.items()}
        missing = [2 ** i for i in range(2, log_size + 1) if 2 ** i not in chans]
        if missing:
            raise ValueError(f"channels has no entry for resolutions {missing}")
        self.resolution = resolution
        self.style_dim = style_dim
        self.n_mlp = n_mlp
        self.channels = {r: chans[r] for r in (2 ** i for i in range(2, log_size + 1))}
        self.latent_space = latent_space
        self.truncation = float(truncation)
        self.noise_seed = noise_seed

        # registration order reproduces the reference state_dict order
        self.style = nn.Sequential(PixelNorm(), *[EqualLinear(style_dim, style_dim, lr_mul=lr_mlp, activation=True)
                                                  for _ in range(n_mlp)])
        self.input = ConstantInput(chans[4])
        self.conv1 = StyledConv(chans[4], chans[4], style_dim)
        self.to_rgb1 = ToRGB(chans[4], style_dim, upsample=False)
        self.convs = nn.ModuleList()
        self.upsamples = nn.ModuleList()  # empty in the reference too; kept for layout parity
        self.to_rgbs = nn.ModuleList()
        self.noises = nn.Module()
        self.num_layers = (log_size - 2) * 2 + 1
        gen = torch.Generator().manual_seed(noise_seed)
        for i in range(self.num_layers):
            r = 2 ** ((i + 5) // 2)
            self.noises.register_buffer(f"noise_{i}", torch.randn(1, 1, r, r, generator=gen))
        in_ch = chans[4]
        for i in range(3, log_size + 1):
            out_ch = chans[2 ** i]
            self.convs.append(StyledConv(in_ch, out_ch, style_dim, upsample=True))
            self.convs.append(StyledConv(out_ch, out_ch, style_dim))
            self.to_rgbs.append(ToRGB(out_ch, style_dim))
            in_ch = out_ch
        self.n_latent = log_size * 2 - 2
        avg = torch.zeros(style_dim) if latent_avg is None else latent_avg.detach().reshape(style_dim).float()
        self.register_buffer("latent_avg", avg.clone(), persistent=False)
        self.latent_avg_source = "zeros (not set)" if latent_avg is None else "given"

    # ---- latent spaces ----
    @property
    def latent_dim(self) -> int:  # type: ignore[override]
        return self.n_latent * self.style_dim if self.latent_space == "w+" else self.style_dim

    def mapping(self, z: Tensor) -> Tensor:
        """z ``[B, style_dim]`` → w ``[B, style_dim]`` (no truncation)."""
        return self.style(z)

    def truncate(self, w: Tensor) -> Tensor:
        if self.truncation == 1.0:
            return w
        avg = self.latent_avg.to(w.dtype)
        return avg + self.truncation * (w - avg)

    @torch.no_grad()
    def estimate_latent_avg(self, n: int = 10_000, seed: int = 0, chunk: int = 2_000) -> Tensor:
        """Set ``latent_avg`` to the mean of ``style(z)`` over ``n`` seeded z samples; returns it."""
        gen = torch.Generator().manual_seed(seed)
        total = torch.zeros(self.style_dim, dtype=torch.float64, device=self.latent_avg.device)
        done = 0
        while done < n:
            m = min(chunk, n - done)
            z = torch.randn(m, self.style_dim, generator=gen).to(self.latent_avg.device)
            total += self.style(z).double().sum(dim=0)
            done += m
        self.latent_avg.copy_((total / n).float())
        self.latent_avg_source = f"estimated: mean of style(z) over {n} z samples (seed {seed})"
        return self.latent_avg

    def _normal_rows(self, n: int, dim: int, seed: int | Sequence[int]) -> Tensor:
        if isinstance(seed, int):
            return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))
        seeds = list(seed)
        if len(seeds) != n:
            raise ValueError(f"got {len(seeds)} seeds for {n} latents")
        return torch.stack([torch.randn(dim, generator=torch.Generator().manual_seed(s)) for s in seeds])

    def sample_latents(self, n: int, seed: int | Sequence[int] = 0, device: Any = None) -> Tensor:
        """``n`` latents from the prior of ``latent_space`` (see the module docstring).

        z: N(0, I). w: ``truncate(style(z))``. w+: that code repeated on every layer, flattened.
        Row ``i`` depends only on ``seed[i]`` when a list of seeds is given.
        """
        z = self._normal_rows(n, self.style_dim, seed)
        out_device = device if device is not None else self.device
        if self.latent_space == "z":
            return z.to(out_device)
        with torch.no_grad():
            zd = z.to(self.device)
            if isinstance(seed, int):
                w = self.truncate(self.mapping(zd))
            else:  # one row at a time, so that row i is bit-identical whatever the batch around it
                w = torch.cat([self.truncate(self.mapping(zd[i:i + 1])) for i in range(n)]) if n else zd
        if self.latent_space == "w+":
            w = w.unsqueeze(1).repeat(1, self.n_latent, 1).reshape(n, self.n_latent * self.style_dim)
        return w.to(out_device)

    def mean_latent(self) -> Tensor:
        """The latent ``[1, latent_dim]`` of the mean code: zeros in z, ``latent_avg`` in w / w+."""
        if self.latent_space == "z":
            return torch.zeros(1, self.style_dim, device=self.latent_avg.device)
        if self.latent_space == "w":
            return self.latent_avg.reshape(1, -1).clone()
        return self.latent_avg.reshape(1, 1, -1).repeat(1, self.n_latent, 1).reshape(1, -1)

    def layer_codes(self, latents: Tensor) -> Tensor:
        """Latents ``[B, latent_dim]`` → per-layer codes ``[B, n_latent, style_dim]`` (truncated in z)."""
        if latents.dim() != 2 or latents.shape[1] != self.latent_dim:
            raise ValueError(f"expected latents of shape [B, {self.latent_dim}] for latent space "
                             f"{self.latent_space!r}, got {tuple(latents.shape)}")
        b = latents.shape[0]
        if self.latent_space == "z":
            w = self.truncate(self.mapping(latents))
            return w.unsqueeze(1).expand(b, self.n_latent, self.style_dim)
        if self.latent_space == "w":
            return latents.unsqueeze(1).expand(b, self.n_latent, self.style_dim)
        return latents.reshape(b, self.n_latent, self.style_dim)

    # ---- SplitGenerator contract ----
    def latent_to_input(self, z: Tensor) -> SplitState:
        ws = self.layer_codes(z)
        b = ws.shape[0]
        const = self.input.input.repeat(b, 1, 1, 1)
        skip = torch.zeros(b, 3, 4, 4, device=const.device, dtype=const.dtype)
        return SplitState(const, {"styles": ws, "skip": skip})

    def _noise(self, i: int, context: Mapping[str, Tensor] | None = None) -> Tensor:
        """Noise map ``i``: per-image maps from the context (:meth:`synthesise_wplus`), else the buffer."""
        if context is not None and f"noise_{i}" in context:
            return context[f"noise_{i}"]
        return getattr(self.noises, f"noise_{i}")

    # ---- style space (see "Style space" in the module docstring) ----
    def noise_maps(self) -> list[Tensor]:
        """Copies of the fixed noise maps, ``num_layers`` tensors ``[1, 1, r, r]`` (4, 8, 8, 16, 16, …)."""
        return [self._noise(i).detach().clone() for i in range(self.num_layers)]

    def synthesise_wplus(self, ws: Tensor, noise: Sequence[Tensor] | None = None) -> Tensor:
        """Images ``[B, 3, R, R]`` from per-layer codes ``ws`` ``[B, n_latent, style_dim]`` (used as
        given: no mapping, no truncation) and, optionally, ``num_layers`` noise maps, each
        ``[B, 1, r, r]`` (one per image) or ``[1, 1, r, r]`` (shared) with the shapes of
        :meth:`noise_maps`; None uses the generator's fixed maps.

        >>> ws = G.layer_codes(z)                    # [B, n_latent, style_dim]: the image of forward(z)
        >>> G.synthesise_wplus(ws, G.noise_maps())   # the same image
        """
        if ws.dim() != 3 or tuple(ws.shape[1:]) != (self.n_latent, self.style_dim):
            raise ValueError(f"ws must have shape [B, {self.n_latent}, {self.style_dim}] (one code per layer), "
                             f"got {list(ws.shape)}")
        b = ws.shape[0]
        context = {"styles": ws, "skip": torch.zeros(b, 3, 4, 4, device=ws.device, dtype=ws.dtype)}
        if noise is not None:
            shapes = [tuple(self._noise(i).shape[2:]) for i in range(self.num_layers)]
            found = [tuple(n.shape) for n in noise]
            if len(found) != len(shapes) or any(len(f) != 4 or f[0] not in (1, b) or f[1] != 1 or f[2:] != s
                                                for f, s in zip(found, shapes, strict=False)):
                raise ValueError(f"noise must be {len(shapes)} maps [B or 1, 1, r, r] with r×r = {shapes}, "
                                 f"got {found}")
            context.update({f"noise_{i}": n.expand(b, 1, *n.shape[2:]) for i, n in enumerate(noise)})
        state = SplitState(self.input.input.repeat(b, 1, 1, 1), context)
        out: Tensor = self._run(state, 0, None, False)
        return out

    def _stage_conv1(self, x: SplitState) -> SplitState:
        _require_state(x, self)
        ws = x.context["styles"]
        f = self.conv1(x.features, ws[:, 0], self._noise(0, x.context))
        return SplitState(f, dict(x.context))

    def _stage_conv(self, j: int, x: SplitState) -> SplitState:
        _require_state(x, self)
        ws, skip, f = x.context["styles"], x.context["skip"], x.features
        if j % 2 == 0:  # entering a new resolution: first the pending ToRGB of the previous one
            k = j // 2
            skip = self.to_rgb1(f, ws[:, 1]) if k == 0 else self.to_rgbs[k - 1](f, ws[:, 2 * k + 1], skip)
        f = self.convs[j](f, ws[:, j + 1], self._noise(j + 1, x.context))
        return SplitState(f, {**x.context, "skip": skip})

    def _stage_output(self, x: SplitState) -> Tensor:
        _require_state(x, self)
        last = len(self.to_rgbs) - 1
        return self.to_rgbs[last](x.features, x.context["styles"][:, 2 * last + 3], x.context["skip"])

    def stages(self):
        out: list = [("conv1", self._stage_conv1)]
        out += [(f"convs.{j}", partial(self._stage_conv, j)) for j in range(len(self.convs))]
        out.append((f"to_rgbs.{len(self.to_rgbs) - 1}", self._stage_output))
        return out

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update({"latent_space": self.latent_space, "truncation": self.truncation, "n_latent": self.n_latent,
                  "style_dim": self.style_dim, "latent_avg": self.latent_avg_source})
        return d

    # ---- weights ----
    def buffer_names(self) -> set[str]:
        return {k for k, _ in self.named_buffers() if k != "latent_avg"}

    @torch.no_grad()
    def reset_parameters(self, seed: int = 0, *, exercise: bool = False) -> None:
        """Seeded random weights with the reference initialisation (N(0,1) weights under the
        equalized-lr scales, modulation biases 1, other biases and noise strengths 0). With
        ``exercise`` the noise strengths and biases are small random values instead, so that every
        path of a test network carries signal."""
        gen = torch.Generator().manual_seed(seed)
        for m in self.modules():
            if isinstance(m, EqualLinear):
                m.reset(gen)
            elif isinstance(m, ModulatedConv2d):
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen))
            elif isinstance(m, ConstantInput):
                m.input.copy_(torch.randn(m.input.shape, generator=gen))
            elif isinstance(m, (NoiseInjection, FusedLeakyReLU, ToRGB)):
                p = m.weight if isinstance(m, NoiseInjection) else m.bias
                p.copy_(0.1 * torch.randn(p.shape, generator=gen) if exercise else torch.zeros_like(p))


# ---- checkpoint loading --------------------------------------------------------------------------
_TRAIN_HINT = ("If this is a train.py training checkpoint (it pickles an argparse.Namespace under 'args'), "
               "extract the EMA generator once, on a machine where you trust the file: "
               "ckpt = torch.load(path, weights_only=False); "
               "torch.save({'g_ema': ckpt['g_ema'], 'latent_avg': ckpt.get('latent_avg')}, 'g_ema.pt')")


def load_rosinality_checkpoint(path: str | Path) -> tuple[dict[str, Tensor], Tensor | None]:
    """Read ``{"g_ema": state_dict, "latent_avg": Tensor}`` safely; returns (state_dict, latent_avg or None)."""
    path = Path(path)
    try:
        obj = torch_load_safe(path)
    except CheckpointError as e:
        raise CheckpointError(f"{e}\n{_TRAIN_HINT}") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected the rosinality container, a dict {{'g_ema': state_dict, "
                              f"'latent_avg': Tensor[512]}}; found {type(obj).__name__}")
    if "g_ema" not in obj:
        keys = [str(k) for k in obj]
        if any(k.startswith(("style.", "conv1.", "convs.", "to_rgb")) for k in keys):
            raise CheckpointError(
                f"{path}: this is a bare generator state_dict, not the rosinality container "
                f"{{'g_ema': state_dict, 'latent_avg': Tensor[512]}} written by convert_weight.py. If it is an EMA "
                f"generator, wrap it: torch.save({{'g_ema': sd, 'latent_avg': avg}}, 'out.pt') (latent_avg may be "
                f"left out; it is then estimated from 10 000 samples)")
        raise CheckpointError(f"{path}: no 'g_ema' entry; top-level keys: {', '.join(keys[:12]) or '(none)'}"
                              f"{' …' if len(keys) > 12 else ''}. Expected {{'g_ema': state_dict, 'latent_avg': ...}}")
    sd = obj["g_ema"]
    if not isinstance(sd, dict):
        raise CheckpointError(f"{path}: 'g_ema' should be a state_dict (a dict of tensors), found {type(sd).__name__}")
    avg = obj.get("latent_avg")
    if avg is not None and not isinstance(avg, Tensor):
        raise CheckpointError(f"{path}: 'latent_avg' should be a tensor, found {type(avg).__name__}")
    return sd, avg


def _infer_architecture(sd: Mapping[str, Any]) -> dict[str, Any]:
    """Resolution, style size, mapping depth and channels read off a g_ema state_dict (best effort)."""
    def shape(k: str) -> tuple[int, ...] | None:
        v = sd.get(k)
        return tuple(v.shape) if isinstance(v, Tensor) else None

    def first(cands: list[tuple[str, int, int]]) -> int | None:
        """The first available ``shape(key)[dim]`` among (key, ndim, dim) candidates."""
        for key, ndim, dim in cands:
            s = shape(key)
            if s is not None and len(s) == ndim:
                return s[dim]
        return None

    def indices(pattern: str) -> set[int]:
        return {int(m.group(1)) for k in sd if (m := re.fullmatch(pattern, str(k)))}

    arch: dict[str, Any] = {}
    # any of several independent key families gives the number of resolutions
    n_rgb = indices(r"to_rgbs\.(\d+)\..*")
    n_conv = indices(r"convs\.(\d+)\..*")
    n_noise = indices(r"noises\.noise_(\d+)")
    if n_rgb:
        arch["resolution"] = 2 ** (max(n_rgb) + 3)
    elif n_conv:
        arch["resolution"] = 2 ** (max(n_conv) // 2 + 3)
    elif n_noise:
        arch["resolution"] = 2 ** ((max(n_noise) + 1) // 2 + 2)
    mlp = indices(r"style\.(\d+)\.(?:weight|bias)")
    if mlp:
        arch["n_mlp"] = max(mlp)
    sdim = first([(f"style.{i}.weight", 2, 1) for i in sorted(mlp)] + [("conv1.conv.modulation.weight", 2, 1),
                                                                        ("to_rgb1.conv.modulation.weight", 2, 1)])
    if sdim is not None:
        arch["style_dim"] = sdim
    if "resolution" in arch:
        chans: dict[int, int] = {}
        c4 = first([("input.input", 4, 1), ("conv1.conv.weight", 5, 1), ("conv1.activate.bias", 1, 0),
                    ("to_rgb1.conv.weight", 5, 2)])
        if c4 is not None:
            chans[4] = c4
        for k in range(int(math.log2(arch["resolution"])) - 2):
            c = first([(f"convs.{2 * k}.conv.weight", 5, 1), (f"convs.{2 * k}.activate.bias", 1, 0),
                       (f"convs.{2 * k + 1}.conv.weight", 5, 2), (f"convs.{2 * k + 1}.activate.bias", 1, 0),
                       (f"to_rgbs.{k}.conv.weight", 5, 2)])
            if c is not None:
                chans[2 ** (k + 3)] = c
        if len(chans) == int(math.log2(arch["resolution"])) - 1:
            arch["channels"] = chans
    return arch


def _summarise_missing(names: list[str], noise_seed: int) -> str:
    noises = sorted((n for n in names if n.startswith("noises.")), key=lambda n: int(n.rsplit("_", 1)[1]))
    kernels = [n for n in names if n.endswith(".kernel")]
    parts = []
    if noises:
        rng = noises[0] if len(noises) == 1 else f"{noises[0]}…{noises[-1].rsplit('.', 1)[1]}"
        parts.append(f"{len(noises)} noise maps ({rng}) rebuilt as seeded N(0,1) (noise_seed {noise_seed})")
    if kernels:
        parts.append(f"{len(kernels)} FIR kernels rebuilt (outer([1,3,3,1])/64, x4 after upsampling)")
    return "; ".join(parts)


def _build_from_checkpoint(path: Path, common: dict[str, Any], *, resolution: int | None, n_avg: int,
                           avg_seed: int) -> StyleGAN2Generator:
    """``common``: the generator's ``latent_space``, ``truncation`` and ``noise_seed``."""
    sd, avg = load_rosinality_checkpoint(path)
    arch = _infer_architecture(sd)
    if resolution is not None and "resolution" in arch and arch["resolution"] != resolution:
        raise CheckpointError(f"{path}: the checkpoint is a {arch['resolution']}x{arch['resolution']} generator, "
                              f"but resolution={resolution} was requested")
    res = resolution or arch.pop("resolution", 1024)
    arch.pop("resolution", None)
    if "channels" not in arch:
        arch["channels"] = config_f_channels(arch.pop("channel_multiplier", 2))
    arch.pop("channel_multiplier", None)
    try:
        g = StyleGAN2Generator(res, **common, **arch)
    except ValueError as e:
        if "latent_space" in str(e):
            raise
        raise CheckpointError(f"{path}: cannot build a StyleGAN2 generator for this checkpoint: {e}") from None
    expected = {k: tuple(v.shape) for k, v in g.state_dict().items()}
    optional = g.buffer_names()
    check_state_dict(sd, expected, source=f"{path} ['g_ema']", optional=optional)
    missing = [k for k in expected if k not in sd]
    g.load_state_dict({k: v.float() for k, v in sd.items()}, strict=False)
    notes = [f"{path} (g_ema)"]
    if missing:
        notes.append(_summarise_missing(missing, common["noise_seed"]))
    if avg is not None:
        if avg.numel() != g.style_dim:
            raise CheckpointError(f"{path}: 'latent_avg' has shape {tuple(avg.shape)}, expected [{g.style_dim}]")
        g.latent_avg.copy_(avg.detach().reshape(-1).float())
        g.latent_avg_source = f"latent_avg from {path.name}"
    else:
        g.estimate_latent_avg(n_avg, seed=avg_seed)
        notes.append(f"latent_avg absent, {g.latent_avg_source}")
    g.weights_source = "; ".join(notes)
    g.weights_licence = LICENCE
    return g


_DEFAULT_ZOO = {1024: "stylegan2_ffhq1024", 256: "stylegan2_church256"}
#: the architecture keywords of stylegan2() (random weights only)
_ARCH_KEYS = ("style_dim", "n_mlp", "channel_multiplier", "channels")


def stylegan2(*, weights: str | Path | None = None, resolution: int | None = None, latent_space: str = "w+",
              truncation: float = 1.0, tiny: bool = False, device: Any = "cpu", **kw: Any) -> StyleGAN2Generator:
    """Build the ``stylegan2`` generator.

    ``weights``: a rosinality ``.pt`` path; a zoo name (``gan_inversion_bench.zoo``, looked up in
    the checkpoint cache); ``"random"`` for seeded random config-f weights; or ``None`` for the
    zoo's default checkpoint of ``resolution`` (1024 → FFHQ, 256 → LSUN church) from the cache,
    failing with download instructions if it is not there. ``tiny=True`` builds a small seeded
    random network (16×16, channels ≤ 32, style size 32, 2 mapping layers) for tests.

    Extra keyword arguments: ``seed`` (random weights, default 0), ``noise_seed`` (rebuilt noise
    maps, default 0), ``latent_avg_samples`` (default 10 000) and ``latent_avg_seed`` (default 0)
    for estimating ``latent_avg`` when the file has none, and, for random weights only,
    ``style_dim``, ``n_mlp``, ``channel_multiplier``, ``channels``.
    """
    kw = {k: v for k, v in kw.items() if v is not None}  # None means "not given"
    seed = int(kw.pop("seed", 0))
    noise_seed = int(kw.pop("noise_seed", 0))
    n_avg = int(kw.pop("latent_avg_samples", 10_000))
    avg_seed = int(kw.pop("latent_avg_seed", 0))
    arch_kw: dict[str, Any] = {k: kw.pop(k) for k in _ARCH_KEYS if k in kw}
    if kw:
        raise TypeError(f"stylegan2() got unexpected keyword arguments: {', '.join(sorted(kw))}")
    if latent_space not in LATENT_SPACES:
        raise ValueError(f"latent_space must be one of {', '.join(LATENT_SPACES)}; got {latent_space!r}")
    common: dict[str, Any] = dict(latent_space=latent_space, truncation=truncation, noise_seed=noise_seed)

    if tiny or (isinstance(weights, str) and weights == "random"):
        if tiny and weights not in (None, "random"):
            raise ValueError("tiny=True builds random weights; do not pass weights")
        if tiny:
            arch: dict[str, Any] = {"style_dim": 32, "n_mlp": 2, "channels": tiny_channels()}
            arch.update(arch_kw)
            res = resolution or 16
        else:
            arch = dict(arch_kw)
            res = resolution or 1024
        g = StyleGAN2Generator(res, **arch, **common)
        g.reset_parameters(seed, exercise=tiny)
        g.estimate_latent_avg(n_avg, seed=avg_seed)
        g.weights_source = f"random:{seed}" + (" (tiny)" if tiny else "")
        g.weights_licence = "n/a (random weights)"
    else:
        if arch_kw:
            raise TypeError(f"{', '.join(sorted(arch_kw))} only apply to random weights; "
                            "a checkpoint's architecture is read from the file")
        path = _resolve_weights(weights, resolution)
        g = _build_from_checkpoint(path, common, resolution=resolution, n_avg=n_avg, avg_seed=avg_seed)
    g.name = "stylegan2"
    return g.to(device).eval()


def _resolve_weights(weights: str | Path | None, resolution: int | None) -> Path:
    from gan_inversion_bench import zoo

    if weights is None:
        name = _DEFAULT_ZOO.get(resolution or 1024)
        if name is None:
            raise WeightsNotFound(f"no default StyleGAN2 checkpoint for resolution {resolution}; pass weights=PATH "
                                  f"(known defaults: {', '.join(f'{r}: {n}' for r, n in _DEFAULT_ZOO.items())})")
        return zoo.require(name)
    if isinstance(weights, str) and weights in zoo.CHECKPOINTS:
        return zoo.require(weights)
    path = Path(weights).expanduser()
    if not path.exists():
        raise WeightsNotFound(f"StyleGAN2 checkpoint {path} does not exist. Known checkpoints: "
                              f"{', '.join(n for n, c in zoo.CHECKPOINTS.items() if c.family == 'stylegan2')} "
                              f"(see gan_inversion_bench.zoo for where to get them)")
    return path
