"""The layers of BigGAN-deep (:mod:`.biggan`), in the HF pytorch-pretrained-BigGAN module layout.

Spectral-norm linear and conv layers that divide by σ computed from the checkpoint's stored
``weight_u`` / ``weight_v`` (never a power iteration), the batch norm with per-truncation
statistics (conditional or plain affine), the bottleneck residual ``GenBlock`` and the
``SelfAttn`` layer. Module and attribute names mirror the checkpoint keys, so that
``generator.layers.<i>.bn_0.scale.weight_orig`` etc. load strictly. The formulas are written out
in the docstring of :mod:`gan_inversion_bench.generators.biggan`, which builds the network from
these blocks and re-exports them.
"""
from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["sn_weight", "interpolated_stats", "SNLinear", "SNConv2d", "StatsBatchNorm", "GenBlock", "SelfAttn"]


# ---- functional pieces ---------------------------------------------------------------------------
def sn_weight(weight_orig: Tensor, u: Tensor, v: Tensor) -> Tensor:
    """``weight_orig / σ`` with ``σ = uᵀ (W_mat v)`` from the stored vectors (no power iteration)."""
    sigma = torch.dot(u, torch.mv(weight_orig.reshape(weight_orig.shape[0], -1), v))
    return weight_orig / sigma


def interpolated_stats(running: Tensor, truncation: float) -> Tensor:
    """The statistics row for ``truncation`` with the reference's reversed-weight interpolation."""
    n_stats = running.shape[0]
    coef, start = math.modf(truncation / (1.0 / (n_stats - 1)))
    i = int(start)
    if coef != 0.0:
        return running[i] * coef + running[i + 1] * (1 - coef)
    return running[i]


# ---- modules (names mirror the checkpoint keys) ---------------------------------------------------
class SNLinear(nn.Module):
    bias: Tensor | None
    weight_u: Tensor  # buffers
    weight_v: Tensor

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        if bias:
            self.bias = nn.Parameter(torch.zeros(out_features))
        else:
            self.register_parameter("bias", None)
        self.weight_orig = nn.Parameter(torch.zeros(out_features, in_features))
        self.register_buffer("weight_u", torch.zeros(out_features))
        self.register_buffer("weight_v", torch.zeros(in_features))

    def weight(self) -> Tensor:
        return sn_weight(self.weight_orig, self.weight_u, self.weight_v)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight(), self.bias)


class SNConv2d(nn.Module):
    bias: Tensor | None
    weight_u: Tensor  # buffers
    weight_v: Tensor

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, padding: int = 0, bias: bool = True):
        super().__init__()
        if bias:
            self.bias = nn.Parameter(torch.zeros(out_ch))
        else:
            self.register_parameter("bias", None)
        self.weight_orig = nn.Parameter(torch.zeros(out_ch, in_ch, kernel_size, kernel_size))
        self.register_buffer("weight_u", torch.zeros(out_ch))
        self.register_buffer("weight_v", torch.zeros(in_ch * kernel_size * kernel_size))
        self.padding = padding

    def weight(self) -> Tensor:
        return sn_weight(self.weight_orig, self.weight_u, self.weight_v)

    def forward(self, x: Tensor, out_channels: int | None = None) -> Tensor:
        w, b = self.weight(), self.bias
        if out_channels is not None:  # only the first output channels (same values, less work)
            w = w[:out_channels]
            b = b[:out_channels] if b is not None else None
        return F.conv2d(x, w, b, padding=self.padding)


class StatsBatchNorm(nn.Module):
    """Batch norm with per-truncation statistics; conditional (gain ``1 + scale(cond)``, shift
    ``offset(cond)``) when ``cond_dim`` is given, else plain affine."""

    running_means: Tensor  # buffers
    running_vars: Tensor

    def __init__(self, num_features: int, cond_dim: int | None = None, n_stats: int = 51, eps: float = 1e-4):
        super().__init__()
        self.conditional = cond_dim is not None
        if not self.conditional:
            self.weight = nn.Parameter(torch.ones(num_features))
            self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_means", torch.zeros(n_stats, num_features))
        self.register_buffer("running_vars", torch.ones(n_stats, num_features))
        if cond_dim is not None:  # self.conditional
            self.scale = SNLinear(cond_dim, num_features, bias=False)
            self.offset = SNLinear(cond_dim, num_features, bias=False)
        self.eps = eps

    def forward(self, x: Tensor, truncation: float, cond: Tensor | None = None) -> Tensor:
        mean = interpolated_stats(self.running_means, truncation).reshape(1, -1, 1, 1)
        var = interpolated_stats(self.running_vars, truncation).reshape(1, -1, 1, 1)
        xn = (x - mean) / torch.sqrt(var + self.eps)
        if self.conditional:
            if cond is None:
                raise ValueError("a conditional batch norm needs the conditioning vector")
            gain = 1 + self.scale(cond).reshape(cond.shape[0], -1, 1, 1)
            shift = self.offset(cond).reshape(cond.shape[0], -1, 1, 1)
            return xn * gain + shift
        return xn * self.weight.reshape(1, -1, 1, 1) + self.bias.reshape(1, -1, 1, 1)


class GenBlock(nn.Module):
    """The bottleneck residual block: four conditional batch norms, 1×1 → 3×3 → 3×3 → 1×1 convs."""

    #: the bottleneck width is ``in_ch // REDUCTION``; the HF GenBlock's ``reduction_factor``, which
    #: is 4 in every released BigGAN-deep (its Generator never passes another value)
    REDUCTION: ClassVar[int] = 4

    def __init__(self, in_ch: int, out_ch: int, cond_dim: int, *, up: bool, n_stats: int, eps: float):
        super().__init__()
        mid = in_ch // self.REDUCTION
        self.bn_0 = StatsBatchNorm(in_ch, cond_dim, n_stats, eps)
        self.conv_0 = SNConv2d(in_ch, mid, 1)
        self.bn_1 = StatsBatchNorm(mid, cond_dim, n_stats, eps)
        self.conv_1 = SNConv2d(mid, mid, 3, padding=1)
        self.bn_2 = StatsBatchNorm(mid, cond_dim, n_stats, eps)
        self.conv_2 = SNConv2d(mid, mid, 3, padding=1)
        self.bn_3 = StatsBatchNorm(mid, cond_dim, n_stats, eps)
        self.conv_3 = SNConv2d(mid, out_ch, 1)
        self.up = up
        self.in_ch, self.out_ch = in_ch, out_ch

    def forward(self, x: Tensor, cond: Tensor, truncation: float) -> Tensor:
        h = self.conv_0(F.relu(self.bn_0(x, truncation, cond)))
        h = F.relu(self.bn_1(h, truncation, cond))
        if self.up:
            h = F.interpolate(h, scale_factor=2, mode="nearest")
        h = self.conv_1(h)
        h = self.conv_2(F.relu(self.bn_2(h, truncation, cond)))
        h = self.conv_3(F.relu(self.bn_3(h, truncation, cond)))
        skip = x
        if self.in_ch != self.out_ch:
            skip = skip[:, : self.in_ch // 2]
        if self.up:
            skip = F.interpolate(skip, scale_factor=2, mode="nearest")
        return h + skip


class SelfAttn(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.snconv1x1_theta = SNConv2d(channels, channels // 8, 1, bias=False)
        self.snconv1x1_phi = SNConv2d(channels, channels // 8, 1, bias=False)
        self.snconv1x1_g = SNConv2d(channels, channels // 2, 1, bias=False)
        self.snconv1x1_o_conv = SNConv2d(channels // 2, channels, 1, bias=False)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        theta = self.snconv1x1_theta(x).reshape(b, c // 8, h * w)
        phi = F.max_pool2d(self.snconv1x1_phi(x), 2).reshape(b, c // 8, h * w // 4)
        attn = torch.softmax(theta.transpose(1, 2) @ phi, dim=-1)  # [b, hw, hw/4]
        g = F.max_pool2d(self.snconv1x1_g(x), 2).reshape(b, c // 2, h * w // 4)
        o = (g @ attn.transpose(1, 2)).reshape(b, c // 2, h, w)
        return x + self.gamma * self.snconv1x1_o_conv(o)
