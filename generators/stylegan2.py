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

Numerics and code layout
------------------------
The numerics are the reference implementation's; :mod:`.stylegan2_layers` lists them next to the
layers that implement them (mapping, fused leaky ReLU, modulated convolution, upsampling, noise,
ToRGB). :mod:`.stylegan2_checkpoint` reads the checkpoint file. This module assembles the generator
and re-exports the public functional blocks (``upfirdn2d``, ``fir_kernel``, ...; see ``__all__``).

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
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from gan_inversion_bench.generator import SplitGenerator, SplitState
from gan_inversion_bench.weights import CheckpointError, WeightsNotFound, check_state_dict

from .stylegan2_checkpoint import infer_architecture, load_rosinality_checkpoint, summarise_missing
from .stylegan2_layers import (
    ConstantInput,
    EqualLinear,
    FusedLeakyReLU,
    ModulatedConv2d,
    NoiseInjection,
    PixelNorm,
    StyledConv,
    ToRGB,
    fir_kernel,
    fused_leaky_relu,
    modulated_conv2d,
    upfirdn2d,
)

__all__ = [
    "StyleGAN2Generator", "stylegan2", "load_rosinality_checkpoint", "upfirdn2d", "fir_kernel",
    "fused_leaky_relu", "modulated_conv2d", "config_f_channels", "LICENCE",
]

LICENCE = ("Nvidia Source Code License-NC (StyleGAN2 networks as released by NVIDIA, converted with "
           "rosinality/stylegan2-pytorch, whose code is MIT); non-commercial use only")


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


# ---- checkpoint loading (reading the file: stylegan2_checkpoint) ---------------------------------
def _build_from_checkpoint(path: Path, common: dict[str, Any], *, resolution: int | None, n_avg: int,
                           avg_seed: int) -> StyleGAN2Generator:
    """``common``: the generator's ``latent_space``, ``truncation`` and ``noise_seed``."""
    sd, avg = load_rosinality_checkpoint(path)
    arch = infer_architecture(sd)
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
        notes.append(summarise_missing(missing, common["noise_seed"]))
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


# PLR0913: a public factory; its keywords are the generator's documented options (``--gen-opt`` reads them)
def stylegan2(*, weights: str | Path | None = None, resolution: int | None = None, latent_space: str = "w+",  # noqa: PLR0913
              truncation: float = 1.0, tiny: bool = False, device: Any = "cpu", seed: int = 0, noise_seed: int = 0,
              latent_avg_samples: int = 10_000, latent_avg_seed: int = 0, **kw: Any) -> StyleGAN2Generator:
    """Build the ``stylegan2`` generator.

    ``weights``: a rosinality ``.pt`` path; a zoo name (``gan_inversion_bench.zoo``, looked up in
    the checkpoint cache); ``"random"`` for seeded random config-f weights; or ``None`` for the
    zoo's default checkpoint of ``resolution`` (1024 → FFHQ, 256 → LSUN church) from the cache,
    failing with download instructions if it is not there. ``tiny=True`` builds a small seeded
    random network (16×16, channels ≤ 32, style size 32, 2 mapping layers) for tests.

    ``seed``: the random weights' seed; ``noise_seed``: the rebuilt noise maps'; ``latent_avg_samples``
    and ``latent_avg_seed``: the draws that estimate ``latent_avg`` (the truncation centre) when
    the file has none. Python-only keyword arguments, for random weights only: ``style_dim``,
    ``n_mlp``, ``channel_multiplier``, ``channels``.
    """
    kw = {k: v for k, v in kw.items() if v is not None}  # None means "not given"
    n_avg, avg_seed = int(latent_avg_samples), int(latent_avg_seed)
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
