"""The layers of StyleGAN2 (rosinality/stylegan2-pytorch layout) that :mod:`.stylegan2` assembles.

Functional blocks (``fir_kernel``, ``upfirdn2d``, ``fused_leaky_relu``, ``modulated_conv2d``) and the
modules built on them, whose attribute names mirror the checkpoint keys (``conv.weight``,
``conv.modulation.bias``, ``conv.blur.kernel``, ``noise.weight``, ``activate.bias``, ...), so that
a rosinality state_dict loads into the generator unchanged. Plain PyTorch only.

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
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SQRT2 = math.sqrt(2.0)
BLUR_TAPS = (1, 3, 3, 1)


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


def _upsample_blur_pad(kernel_size: int, n_taps: int) -> tuple[int, int]:
    """Padding (before, after) of the ``n_taps``-tap blur that follows a stride-2 transposed conv with
    a ``kernel_size`` kernel, so that the output is exactly twice the input (the reference's formula;
    (1, 1) for StyleGAN2's 3×3 convs and 4-tap blur)."""
    p = (n_taps - 2) - (kernel_size - 1)
    return (p + 1) // 2 + 1, p // 2 + 1


def modulated_conv2d(x: Tensor, weight: Tensor, styles: Tensor, *, demodulate: bool = True,
                     upsample: bool = False, blur: Tensor | None = None) -> Tensor:
    """StyleGAN2's modulated convolution.

    ``x`` ``[B, in, H, W]``; ``weight`` ``[out, in, k, k]`` (already multiplied by the
    equalized-lr scale); ``styles`` ``[B, in]``. Equivalent to convolving sample b with
    ``W_b = weight · styles[b]`` (per input channel), demodulated per output channel by
    ``rsqrt(Σ W_b² + 1e-8)``; with ``upsample`` a stride-2 transposed conv followed by the blur
    ``blur`` (``[4, 4]``), padded so that the output is exactly ``[2H, 2W]`` ((1, 1) for k = 3).
    """
    b, cin = x.shape[:2]
    cout, _, kh, _ = weight.shape
    xs = x * styles.reshape(b, cin, 1, 1)
    if upsample:
        if blur is None:
            raise ValueError("an upsampling modulated conv needs its blur kernel")
        y = F.conv_transpose2d(xs, weight.transpose(0, 1), stride=2, padding=0)
        y = upfirdn2d(y, blur, pad=_upsample_blur_pad(kh, blur.shape[0]))
    else:
        y = F.conv2d(xs, weight, padding=kh // 2)
    if demodulate:
        # Σ_{i,kh,kw} (W[o,i]·s_i)² = Σ_i s_i² · Σ_{kh,kw} W[o,i]²
        d = torch.rsqrt(styles.pow(2) @ weight.pow(2).sum(dim=(2, 3)).t() + 1e-8)
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
    """rosinality's ModulatedConv2d; when upsampling, its blur is StyleGAN2's [1, 3, 3, 1] FIR kernel."""

    blur: Blur  # set when upsampling

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, style_dim: int, *, demodulate: bool = True,
                 upsample: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1, out_ch, in_ch, kernel_size, kernel_size))
        self.upsample = upsample
        if upsample:  # the kernel × 4 (= factor²) keeps the mean of the zero-inserted ×2 signal
            self.blur = Blur(_upsample_blur_pad(kernel_size, len(BLUR_TAPS)), gain=4)
        self.modulation = EqualLinear(style_dim, in_ch, bias_init=1.0)
        self.scale = 1.0 / math.sqrt(in_ch * kernel_size ** 2)
        self.demodulate = demodulate

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        styles = self.modulation(w)
        return modulated_conv2d(x, self.weight[0] * self.scale, styles, demodulate=self.demodulate,
                                upsample=self.upsample, blur=self.blur.kernel if self.upsample else None)


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
