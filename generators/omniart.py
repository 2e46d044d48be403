"""The omniart conditional DCGAN of painted eyes (PyPI ``omniart-eye-generator==0.1``), 128×128.

The generator is the DCGAN of :mod:`gan_inversion_bench.generators.dcgan` at resolution 128 with
``ngf = 64``, conditioned on an eye colour: its input is ``cat(z [B,100], one_hot [B,8])`` viewed
as ``[B, 108, 1, 1]``, and a Dropout follows the first ReLU (``main.3``), which shifts the later
module indices by one relative to the plain DCGAN::

    main.0  ConvTranspose2d(108, 1024, 4, 1, 0)   main.1 BN   main.2 ReLU   main.3 Dropout   # 4×4
    main.4  ConvTranspose2d(1024, 512, 4, 2, 1)   main.5 BN   main.6 ReLU                    # 8×8
    main.7  → 256 @ 16     main.10 → 128 @ 32     main.13 → 64 @ 64
    main.16 ConvTranspose2d(64, 3, 4, 2, 1)       main.17 Tanh                               # 128×128

**The colour is a setting, not part of the latent.** An instance is built for one colour class
(constructor / factory argument ``colour``, recorded by :meth:`OmniartEyeDCGAN.describe`); its
latent is z ``[B, 100]`` alone and :meth:`OmniartEyeDCGAN.latent_to_input` appends the fixed
one-hot code, so inversion methods optimise z only. The 8 classes, in the one-hot order of the
training labels (checkpoint manifest ``config.classes``)::

    0 amber   1 blue   2 brown   3 gray   4 grayscale   5 green   6 hazel   7 red

In a run configuration the colour is a generator option (``--gen-opt colour=6`` or
``colour=hazel``); a colour outside 0 … 7 (or an unknown name) is a ``ValueError``.

**Per-image colours.** ``condition_dim`` is 8. With per-image conditions set
(:meth:`~gan_inversion_bench.generator.SplitGenerator.set_conditions`, ``[B, 8]``, one-hot or
soft), the one-hot block of the input of row ``r`` of a batch of ``R = B·N`` latents
(image-major) is image ``r // N``'s vector instead of ``one_hot(colour)``; the colour is part of
the split-0 feature, so G2 needs nothing else. With conditions unset the input is unchanged.

**Split points** are those of :class:`DCGAN`: split ``i`` is the output of ``main.<i-1>``; split 0
("input") is the ``[108, 1, 1]`` input including the one-hot code. The stage outputs of the
README's layer notes are splits 4 ``4x4.dropout`` (1024, 4, 4), 7 ``8x8.relu`` (512, 8, 8),
10 ``16x16.relu`` (256, 16, 16), 13 ``32x32.relu`` (128, 32, 32), 16 ``64x64.relu`` (64, 64, 64)
and 18 ``128x128.tanh`` (3, 128, 128), the image.

**Eval mode always**, as every :class:`DCGAN`: the BatchNorms use their stored running
statistics and the Dropout is inactive, whatever ``.train()`` asks for. The dropout probability
is not stored in the checkpoint and has no effect in eval mode; 0.5 is used.

**Weights.** ``omniart_eye_generator/generator_model_state.pth`` is a bare state_dict (keys
``main.<i>.*``, 31 entries, 12,917,632 parameters) in the legacy (pre-1.6, non-zip) torch
serialization; it loads with ``weights_only=True``. The package's own ``__init__`` loads the
file with ``torch.load`` at import time and fails on CPU-only machines, so it is never
imported: the file is located through the distribution's metadata. Licence: MIT.
"""
from __future__ import annotations

import operator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gan_inversion_bench.weights import WEIGHT_PACKAGES, CheckpointError, package_file, torch_load_safe

from .dcgan import DCGAN, _check_kwargs, init_random

OMNIART_DIST = "omniart-eye-generator"
OMNIART_FILE = "omniart_eye_generator/generator_model_state.pth"
OMNIART_LICENCE = "MIT (omniart-eye-generator 0.1)"
#: the colour classes in one-hot order (index → name)
EYE_COLOURS = ("amber", "blue", "brown", "gray", "grayscale", "green", "hazel", "red")
DROPOUT_P = 0.5  # not stored in the checkpoint; inactive (eval mode always)


def check_colour(colour: Any) -> int:
    """The class index of ``colour``: an int in 0 … 7 or a colour name (case-insensitive).

    Raises ``ValueError`` naming the valid range and the classes for anything else.
    """
    valid = f"an int in 0 … {len(EYE_COLOURS) - 1} ({', '.join(f'{i} {c}' for i, c in enumerate(EYE_COLOURS))})"
    if isinstance(colour, str):
        name = colour.strip().lower()
        if name in EYE_COLOURS:
            return EYE_COLOURS.index(name)
        if name.isdigit():
            colour = int(name)
        else:
            raise ValueError(f"unknown eye colour {colour!r}: expected {valid} or one of those names")
    if isinstance(colour, bool):
        raise ValueError(f"eye colour must be {valid}, got {colour!r}")
    try:
        index = operator.index(colour)
    except TypeError:
        raise ValueError(f"eye colour must be {valid}, got {colour!r} ({type(colour).__name__})") from None
    if not 0 <= index < len(EYE_COLOURS):
        raise ValueError(f"eye colour {index} is out of range: expected {valid}")
    return index


class OmniartEyeDCGAN(DCGAN):
    """The conditional eye DCGAN for one fixed colour: z ``[B, 100]`` → image ``[B, 3, 128, 128]``.

    >>> g = OmniartEyeDCGAN(colour=6, ngf=4)
    >>> g.latent_to_input(torch.zeros(2, 100)).shape
    torch.Size([2, 108, 1, 1])
    >>> g(torch.zeros(2, 100)).shape
    torch.Size([2, 3, 128, 128])
    >>> g.describe()["colour_name"]
    'hazel'
    """

    n_classes = len(EYE_COLOURS)
    condition_dim = len(EYE_COLOURS)

    def __init__(self, *, colour: Any = 0, latent_dim: int = 100, resolution: int = 128, ngf: int = 64):
        index = check_colour(colour)  # before building anything
        super().__init__(latent_dim=latent_dim, resolution=resolution, ngf=ngf, nc=3,
                         input_channels=latent_dim + self.n_classes, dropout_after_first=DROPOUT_P)
        self._colour = index

    @property
    def colour(self) -> int:
        """The colour class index (0 … 7) this instance generates; fixed at construction."""
        return self._colour

    @property
    def colour_name(self) -> str:
        return EYE_COLOURS[self._colour]

    def default_condition(self) -> Tensor:
        """The one-hot ``[8]`` vector of ``colour``."""
        code = torch.zeros(self.n_classes)
        code[self._colour] = 1
        return code

    def latent_to_input(self, z: Tensor) -> Tensor:
        """``[B, 100]`` (or ``[B, 100, 1, 1]``) → ``cat(z, one_hot(colour))`` as ``[B, 108, 1, 1]``.

        With per-image conditions set, the last 8 channels of row ``r`` are its image's vector.
        """
        x = super().latent_to_input(z)  # validates the shape; [B, nz, 1, 1]
        rows = self.condition_rows(x.shape[0])
        if rows is None:
            code = torch.zeros(x.shape[0], self.n_classes, 1, 1, dtype=x.dtype, device=x.device)
            code[:, self._colour] = 1
        else:
            code = rows.to(dtype=x.dtype, device=x.device)[:, :, None, None]
        return torch.cat([x, code], dim=1)

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(colour=self._colour, colour_name=self.colour_name, colours=list(EYE_COLOURS))
        return d

    def extra_repr(self) -> str:
        return f"colour={self._colour} ({self.colour_name})"


def omniart_eyes128(*, weights: str | Path | None = None, colour: Any = 0, tiny: bool = False, device: Any = "cpu",
                    seed: int = 0, **kw: Any) -> OmniartEyeDCGAN:
    """The omniart conditional eye DCGAN (PyPI ``omniart-eye-generator==0.1``), z ∈ R^100, 128×128.

    ``colour``: the eye-colour class, 0 … 7 = amber, blue, brown, gray, grayscale, green,
    hazel, red (or one of those names); a ``ValueError`` names the valid range otherwise.

    ``weights``: a checkpoint path (a bare state_dict as the package ships it); default:
    ``omniart_eye_generator/generator_model_state.pth`` of the installed package, located
    through its metadata (the package's code is never imported). The file is loaded with
    ``weights_only=True`` and checked strictly (keys and shapes) before loading.

    ``tiny=True``: same code with ``ngf=4`` (channels 64→32→16→8→4→3) and seeded random weights
    (``seed``), no file needed; for fast tests. Keyword arguments whose value is None are
    ignored; any other unknown one is a ``TypeError``.

    Raises :class:`~gan_inversion_bench.weights.WeightsNotFound` (with the pip command) when the
    package is missing, :class:`~gan_inversion_bench.weights.CheckpointError` when the file is
    not the expected checkpoint.
    """
    _check_kwargs("omniart_eyes128", kw)
    index = check_colour(colour)
    if tiny:
        g = init_random(OmniartEyeDCGAN(colour=index, ngf=4), seed)
    else:
        if weights is None:
            path = package_file(OMNIART_DIST, OMNIART_FILE)
            source = f"{OMNIART_DIST}=={WEIGHT_PACKAGES[OMNIART_DIST][0]}:{OMNIART_FILE} ({path})"
        else:
            path = Path(weights)
            source = str(path)
        g = OmniartEyeDCGAN(colour=index, ngf=64)
        g.load_checked(_bare_state_dict(torch_load_safe(path, map_location="cpu"), path), source=str(path))
        g.weights_source = source
        g.weights_licence = OMNIART_LICENCE
    g.name = "dcgan-omniart-eyes128"
    return g.to(device).eval()


def _bare_state_dict(ck: Any, path: Path) -> Any:
    """``ck`` itself when it is a dict; a readable error for other containers.

    Keys and shapes are checked afterwards by ``check_state_dict``; this only adds a hint when
    the state_dict is wrapped in another dict (e.g. ``{"netG_state_dict": sd}``).
    """
    if not isinstance(ck, dict):
        raise CheckpointError(f"{path}: expected a bare state_dict (a dict with keys 'main.<i>.*', as "
                              f"{OMNIART_DIST} ships it), found {type(ck).__name__}")
    if ck and not any(str(k).startswith("main.") for k in ck):
        wrapped = [k for k, v in ck.items() if isinstance(v, dict) and any(str(x).startswith("main.") for x in v)]
        keys = ", ".join(map(repr, list(ck)[:8])) + (", …" if len(ck) > 8 else "")
        hint = (f" (the state_dict seems to be wrapped under the key {wrapped[0]!r}: save the bare state_dict)"
                if wrapped else "")
        raise CheckpointError(f"{path}: expected a bare state_dict with keys 'main.<i>.*', found keys [{keys}]{hint}")
    return ck
