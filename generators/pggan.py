"""Progressive GAN (Karras et al. 2018) in the layout of the genforce / mGANprior / PmSFC checkpoints.

The converted checkpoints ``pggan_<dataset><res>_generator.pth`` are bare state_dicts with the
keys ``lod``, ``layer{i}.conv.weight``, ``layer{i}.wscale.bias`` and ``output{k}.conv.weight``,
``output{k}.wscale.bias`` (registration order ``layer0, layer1, output0, layer2, …``); this module
builds exactly those modules so such a file loads strictly.

**Blocks.** For the ``B`` resolution blocks ``k = 0 … B-1`` (res = 4·2^k, B = 7 at 256, 9 at 1024)::

    layer{2k}   = PixelNorm → [nearest ×2 upsample if k > 0] → conv → ·scale + bias → LeakyReLU(0.2)
    layer{2k+1} = PixelNorm → 3×3 conv → ·scale + bias → LeakyReLU(0.2)
    output{k}   = PixelNorm → 1×1 conv to RGB → ·scale + bias                     (linear)

``layer0`` is the "dense" layer: a 4×4 conv with padding 3 on the ``[B, 512, 1, 1]`` latent.
PixelNorm is ``x · rsqrt(mean_c(x²) + 1e-8)`` and opens every block, so z itself is normalised
inside ``layer0``, a feature taken at a split point is the raw LeakyReLU output, and G2 always
starts with PixelNorm (G2 is invariant to any positive per-pixel rescaling of its input).
Channels: ``min(fmaps_base // res, fmaps_max)`` (16384 and 512: 512 up to 32², then 256@64,
128@128, 64@256, 32@512, 16@1024).

**Equalized learning rate.** Weights are stored unscaled (N(0, 1) at init) and multiplied at
run time by ``gain / sqrt(fan_in)`` with ``fan_in = in_channels · kernel²``: gain √2 for the conv
layers, 1 for toRGB. For ``layer0`` this is √2 / sqrt(512·16) = (√2/4) / sqrt(512), which is
exactly the official TF graph's ``4x4/Dense`` layer (fan-in 512, gain overridden to √2/4 "to
match the original Theano implementation"): the manifest's ``pth_to_tf_var_mapping`` maps
``layer0.conv.weight`` to ``4x4/Dense/weight``, reshaped to (512, 512, 4, 4) by the converter,
so one formula covers both views and ``layer0`` needs no special case.

**Stages and split points.** Stages are ``layer0 … layer{2B-1}`` then the final toRGB
``output{B-1}``; the intermediate toRGB layers exist only so the checkpoint loads, and are
unused (``lod`` = 0: only final models are supported). Split index ℓ is the number of conv
blocks in G1, **equal to the seeds' layer index** (mGANprior ``composing_layer``, PmSFC
``layer``): ℓ=3 → (512, 8, 8), ℓ=6 → (512, 16, 16), ℓ=8 → (512, 32, 32). Names::

    0 input (z as [512,1,1]), 1 4x4.dense, 2 4x4.conv, 3 8x8.conv0, 4 8x8.conv1, …,
    2B-1 <R>x<R>.conv0, 2B <R>x<R>.conv1, 2B+1 torgb (the image)
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gan_inversion_bench.generator import SplitGenerator
from gan_inversion_bench.weights import (
    CheckpointError,
    WeightsNotFound,
    check_state_dict,
    key_index,
    torch_load_safe,
)

PGGAN_LICENCE = ("CC BY-NC 4.0 (NVIDIA progressive_growing_of_gans release; PyTorch conversion by "
                 "genforce/mganprior)")
_LAYER_KEY = re.compile(r"^(layer|output)(\d+)\.")


class PixelNorm(nn.Module):
    """``x · rsqrt(mean over channels of x² + eps)``."""

    def __init__(self, eps: float = 1e-8):
        super().__init__()
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + self.eps)


class WScale(nn.Module):
    """Run-time equalized-lr scale (a float, not state) and the block's bias (``wscale.bias``)."""

    def __init__(self, channels: int, scale: float):
        super().__init__()
        self.scale = scale
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale + self.bias.view(1, -1, 1, 1)


class PGGANBlock(nn.Module):
    """PixelNorm → [nearest ×2] → conv (no bias) → WScale → LeakyReLU(0.2) or linear.

    The equalized-lr gain follows from the activation, as in the official release: √2 before the
    LeakyReLU (the conv layers, ``layer0`` included), 1 for a ``linear`` block (toRGB).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int, *,
                 upsample: bool = False, linear: bool = False):
        super().__init__()
        self.norm = PixelNorm()
        self.upsample = upsample
        self.linear = linear
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, bias=False)
        gain = 1.0 if linear else math.sqrt(2.0)
        self.wscale = WScale(out_channels, gain / math.sqrt(in_channels * kernel_size * kernel_size))

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm(x)
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="nearest")  # [B, C, 2H, 2W]
        x = self.wscale(self.conv(x))
        return x if self.linear else F.leaky_relu(x, 0.2)


def num_blocks(resolution: int) -> int:
    """B with resolution == 4·2^(B-1); ValueError otherwise."""
    q = resolution // 4
    if resolution < 4 or resolution % 4 or q & (q - 1):
        raise ValueError(f"PGGAN resolution must be 4·2^k (4, 8, …, 256, …, 1024), got {resolution}")
    return q.bit_length()


class PGGAN(SplitGenerator):
    """PGGAN generator ``z [B, latent_dim] ~ N(0, I) → image [B, 3, R, R]`` (linear output, ≈[-1, 1]).

    >>> g = PGGAN(resolution=16, fmaps_base=256, fmaps_max=16, latent_dim=32)
    >>> g(torch.randn(2, 32)).shape
    torch.Size([2, 3, 16, 16])
    >>> [p.name for p in g.split_points]
    ['input', '4x4.dense', '4x4.conv', '8x8.conv0', '8x8.conv1', '16x16.conv0', '16x16.conv1', 'torgb']
    """

    def __init__(self, *, resolution: int = 256, latent_dim: int = 512, fmaps_base: int = 16384,
                 fmaps_max: int = 512, image_channels: int = 3):
        super().__init__()
        self.resolution, self.latent_dim = resolution, latent_dim
        self.fmaps_base, self.fmaps_max, self.image_channels = fmaps_base, fmaps_max, image_channels
        self.num_blocks = num_blocks(resolution)
        # registration order = checkpoint key order: lod, layer0, layer1, output0, layer2, …
        self.lod = nn.Parameter(torch.zeros(()), requires_grad=False)
        in_ch = latent_dim
        for k in range(self.num_blocks):
            nf = self.channels(4 * 2 ** k)
            if k == 0:
                first = PGGANBlock(in_ch, nf, 4, 3)  # "dense": 1×1 → 4×4
            else:
                first = PGGANBlock(in_ch, nf, 3, 1, upsample=True)
            self.add_module(f"layer{2 * k}", first)
            self.add_module(f"layer{2 * k + 1}", PGGANBlock(nf, nf, 3, 1))
            self.add_module(f"output{k}", PGGANBlock(nf, image_channels, 1, 0, linear=True))
            in_ch = nf

    def channels(self, res: int) -> int:
        return min(self.fmaps_base // res, self.fmaps_max)

    def latent_to_input(self, z: Tensor) -> Tensor:
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"{self.name or type(self).__name__}: expected latents of shape "
                             f"[B, {self.latent_dim}], got {list(z.shape)}")
        return z[:, :, None, None]  # [B, 512, 1, 1]; PixelNorm happens inside layer0

    def stages(self) -> Sequence[tuple[str, Callable[[Tensor], Tensor]]]:
        out: list[tuple[str, Callable[[Tensor], Tensor]]] = []
        for k in range(self.num_blocks):
            res = 4 * 2 ** k
            names = ("dense", "conv") if k == 0 else ("conv0", "conv1")
            out.append((f"{res}x{res}.{names[0]}", getattr(self, f"layer{2 * k}")))
            out.append((f"{res}x{res}.{names[1]}", getattr(self, f"layer{2 * k + 1}")))
        out.append(("torgb", getattr(self, f"output{self.num_blocks - 1}")))
        return out

    def expected_state_shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: tuple(v.shape) for k, v in self.state_dict().items()}

    def load_checked(self, state: Any, *, source: str) -> None:
        """Strict key/shape check (readable report), ``lod == 0`` check, then ``load_state_dict``."""
        dtypes = {k: v.dtype for k, v in self.state_dict().items()}
        check_state_dict(state, self.expected_state_shapes(), source=source, dtypes=dtypes)
        lod = float(state["lod"])
        if lod != 0.0:
            raise CheckpointError(f"{source}: lod = {lod:g}, but only final models (lod 0) are supported; this "
                                  f"checkpoint is a snapshot taken during progressive growing")
        self.load_state_dict(state, strict=True)

    def init_random(self, seed: int = 0) -> PGGAN:
        """Seeded PGGAN initialisation: weights N(0, 1) (equalized lr), biases 0, lod 0."""
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.endswith("conv.weight"):
                    p.copy_(torch.randn(p.shape, generator=gen))
                else:
                    p.zero_()
        self.weights_source = f"random:{seed}"
        self.weights_licence = "none (random weights)"
        return self


#: the largest PGGAN read from a checkpoint: 4096² (11 blocks, 4 channels at the top with fmaps_base 16384;
#: the released networks are 256² and 1024²). It bounds the network a file's layer indices can ask for.
MAX_RESOLUTION = 4096
_MAX_BLOCKS = num_blocks(MAX_RESOLUTION)


def infer_resolution(state: Any, *, source: str) -> int:
    """Resolution of a PGGAN state_dict from its layer keys (``layer0 … layer{2B-1}``).

    The highest index sets the size of the network built for the file, so it is bounded before any
    power of two is taken: ``layer`` followed by thirty nines would otherwise ask for 2**(10**29) pixels,
    and ``output20`` alone for a 4M² network with zero channels.
    """
    if not isinstance(state, dict):
        raise CheckpointError(f"{source}: expected a PGGAN state_dict (a dict of tensors), "
                              f"found {type(state).__name__}")
    blocks, widest = 0, ""
    for key in state:
        m = _LAYER_KEY.match(str(key))
        if m:
            i = key_index(m.group(2))
            b = i // 2 + 1 if m.group(1) == "layer" else i + 1
            if b > blocks:
                blocks, widest = b, str(key)
    if blocks == 0:
        keys = ", ".join(map(repr, list(state)[:8])) + (", …" if len(state) > 8 else "")
        raise CheckpointError(f"{source}: no PGGAN keys ('layer<i>.conv.weight', 'output<k>.wscale.bias', …) "
                              f"found; expected the bare state_dict that genforce's convert_tf_weights saves, "
                              f"found keys [{keys}]")
    if blocks > _MAX_BLOCKS:
        raise CheckpointError(f"{source}: the key {widest[:80]!r} asks for a PGGAN of more than {_MAX_BLOCKS} "
                              f"resolution blocks; expected layer0 … layer{2 * _MAX_BLOCKS - 1} and output0 … "
                              f"output{_MAX_BLOCKS - 1} at most (4×4 … {MAX_RESOLUTION}×{MAX_RESOLUTION}; "
                              f"the released networks: layer13 / output6 at 256², layer17 / output8 at 1024²)")
    return 4 * 2 ** (blocks - 1)


def _missing_weights_message(resolution: int | None) -> str:
    res = resolution or 256
    example = "pggan_celebahq1024_generator.pth" if res == 1024 else f"pggan_bedroom{res}_generator.pth"
    return (f"PGGAN needs pretrained weights: a file pggan_<dataset><res>_generator.pth (e.g. {example}), the "
            "PyTorch state_dict that the mGANprior / PmSFC release code (genforce/mganprior "
            "models/pggan_generator.py, convert_tf_weights) writes into models/pretrain/pytorch/ from the "
            "official TensorFlow pickle karras2018iclr-<dataset>-<res>x<res>.pkl of "
            "tkarras/progressive_growing_of_gans. "
            "Download links for both are in genforce/mganprior models/README.md. Pass the file with "
            "--weights PATH (or pggan(weights=PATH)); for tests without weights use pggan-tiny or tiny=True.")


def pggan(*, weights: str | Path | None = None, resolution: int | None = None, tiny: bool = False,
          device: Any = "cpu", seed: int = 0, **kw: Any) -> PGGAN:
    """A PGGAN generator from a converted genforce checkpoint (or a tiny random one).

    ``weights``: path of ``pggan_<dataset><res>_generator.pth`` (a bare state_dict, loaded with
    ``weights_only=True`` and checked strictly; ``lod`` must be 0). ``resolution``: inferred from
    the file's layers; if given too it must agree. ``tiny=True``: :func:`pggan_tiny` (``seed``,
    ``resolution`` default 32), no file needed. Without ``weights`` and not tiny:
    :class:`~gan_inversion_bench.weights.WeightsNotFound` saying which file is needed and where to
    get it. Keyword arguments whose value is None are ignored; others are a ``TypeError``.
    """
    _check_kwargs("pggan", kw)
    if tiny:
        g = pggan_tiny(seed=seed, resolution=resolution or 32, device=device)
        g.name = "pggan"
        return g
    if weights is None:
        raise WeightsNotFound(_missing_weights_message(resolution))
    path = Path(weights)
    state = torch_load_safe(path, map_location="cpu")
    found = infer_resolution(state, source=str(path))
    if resolution is not None and resolution != found:
        raise CheckpointError(f"{path}: the checkpoint is a {found}×{found} PGGAN ({2 * num_blocks(found)} conv "
                              f"layers), but resolution={resolution} was requested")
    try:
        g = PGGAN(resolution=found)
    except (ValueError, ZeroDivisionError, RuntimeError) as e:  # not reached for resolutions that pass the bound
        raise CheckpointError(f"{path}: cannot build a {found}×{found} PGGAN for this checkpoint "
                              f"({type(e).__name__}: {e}); expected a genforce PGGAN state_dict") from None
    g.load_checked(state, source=str(path))
    g.name = "pggan"
    g.weights_source = str(path)
    g.weights_licence = PGGAN_LICENCE
    return g.to(device).eval()


def pggan_tiny(*, seed: int = 0, resolution: int = 32, device: Any = "cpu", tiny: bool = True,
               **kw: Any) -> PGGAN:
    """The same network with 32 channels everywhere (z still 512-d) and seeded random weights.

    For fast tests: 32×32 by default (split points 0 … 9). ``tiny=True`` is accepted so that every
    registry entry takes it; ``tiny=False`` (the real network) is refused: that is ``pggan`` with weights.
    """
    if tiny is not True:
        raise ValueError(f"pggan-tiny is the tiny test network with random weights; tiny={tiny!r} asks for the "
                         "real one: use the generator pggan with --weights PATH")
    _check_kwargs("pggan_tiny", kw)
    g = PGGAN(resolution=resolution, latent_dim=512, fmaps_base=32 * resolution, fmaps_max=32).init_random(seed)
    g.name = "pggan-tiny"
    return g.to(device).eval()


def _check_kwargs(factory: str, kw: dict[str, Any]) -> None:
    bad = {k: v for k, v in kw.items() if v is not None}
    if bad:
        raise TypeError(f"{factory}() got unexpected keyword arguments {sorted(bad)}")
