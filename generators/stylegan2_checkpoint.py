"""Reading rosinality StyleGAN2 checkpoints for :mod:`.stylegan2`: the safe loader of the container and
what can be read off a ``g_ema`` state_dict before any generator exists.

The container and what happens to absent buffers are described under "Checkpoint container" in
:mod:`.stylegan2`, which builds the generator from what this module returns
(``_build_from_checkpoint`` there: architecture, strict key/shape check, ``latent_avg``).
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from gan_inversion_bench.weights import CheckpointError, key_index, refuse_oversized_model, torch_load_safe

_TRAIN_HINT = ("If this is a train.py training checkpoint (it pickles an argparse.Namespace under 'args'), "
               "extract the EMA generator once, on a machine where you trust the file: "
               "ckpt = torch.load(path, weights_only=False); "
               "torch.save({'g_ema': ckpt['g_ema'], 'latent_avg': ckpt.get('latent_avg')}, 'g_ema.pt')")


def load_rosinality_checkpoint(path: str | Path) -> tuple[dict[str, Tensor], Tensor | None]:
    """Read ``{"g_ema": state_dict, "latent_avg": Tensor}`` safely; returns (state_dict, latent_avg or None).

    A g_ema whose keys and shapes ask for a generator out of bounds (:func:`infer_architecture`) or
    too large to build is refused here, before any generator exists.
    """
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
    # the generator built for the file takes its size from these keys and shapes: refuse, before it is built,
    # one out of bounds or too large to fit (a few stride-0 tensors declare any size in a file of a few bytes)
    source = f"{path} ['g_ema']"
    refuse_oversized_model(estimated_values(infer_architecture(sd, source=source)), source=source,
                           expected=_EXPECTED, state=sd)
    return sd, avg


#: bounds on the generator a g_ema's keys and shapes may ask for; the released networks are 256² and 1024² with
#: style size 512, 8 mapping layers and at most 512 channels
MAX_LOG_RESOLUTION = 12  # 4096²
MAX_MLP = 64
MAX_WIDTH = 4096  # style size and channels
_EXPECTED = ("a rosinality g_ema of resolution 8 … 4096 (to_rgbs.0 … to_rgbs.9), 1 … 64 mapping layers, "
             "style size and channels 1 … 4096 (the released networks: 256² or 1024², style size 512, "
             "8 mapping layers, at most 512 channels)")


def _log_resolution(sd: Mapping[str, Any], source: str) -> int | None:
    """log2 of the resolution that the first key family present implies (to_rgbs, then convs, then noises),
    bounded before any power of two is taken: ``noises.noise_`` followed by 25 nines would otherwise ask
    for 2**(5·10**24) pixels."""
    families = [(r"to_rgbs\.(\d+)\..*", lambda i: i + 3), (r"convs\.(\d+)\..*", lambda i: i // 2 + 3),
                (r"noises\.noise_(\d+)", lambda i: (i + 1) // 2 + 2)]
    for pattern, log_size in families:
        found = {key_index(m.group(1)): str(k) for k in sd if (m := re.fullmatch(pattern, str(k)))}
        if found:
            top = max(found)
            if log_size(top) > MAX_LOG_RESOLUTION:
                raise CheckpointError(f"{source}: the key {found[top][:80]!r} asks for a generator larger than "
                                      f"{2 ** MAX_LOG_RESOLUTION}x{2 ** MAX_LOG_RESOLUTION}; expected {_EXPECTED}")
            return log_size(top)
    return None


def _bounded(found: tuple[int, str] | None, what: str, top: int, source: str) -> int | None:
    """The size ``found`` = (value, key it was read from), refused unless it is in 1 … ``top``: a zero
    size divides by zero in the equalized-lr scales, a huge one allocates before the key check."""
    if found is not None and not 1 <= found[0] <= top:
        raise CheckpointError(f"{source}: {what} read from {found[1][:80]!r} is {found[0]}; expected {_EXPECTED}")
    return None if found is None else found[0]


def infer_architecture(sd: Mapping[str, Any], *, source: str = "g_ema state_dict") -> dict[str, Any]:
    """Resolution, style size, mapping depth and channels read off a g_ema state_dict (best effort).

    Every size is bounded (:data:`MAX_LOG_RESOLUTION`, :data:`MAX_MLP`, :data:`MAX_WIDTH`), as the
    network built for the file takes them: one out of bounds is a :class:`CheckpointError` naming
    ``source`` and the key it came from.
    """
    def first(cands: list[tuple[str, int, int]]) -> tuple[int, str] | None:
        """The first available ``(shape(key)[dim], key)`` among (key, ndim, dim) candidates."""
        for key, ndim, dim in cands:
            v = sd.get(key)
            if isinstance(v, Tensor) and v.dim() == ndim:
                return int(v.shape[dim]), key
        return None

    arch: dict[str, Any] = {}
    log_size = _log_resolution(sd, source)
    if log_size is not None:
        arch["resolution"] = 2 ** log_size
    mlp = {key_index(m.group(1)): str(k) for k in sd if (m := re.fullmatch(r"style\.(\d+)\.(?:weight|bias)", str(k)))}
    if mlp:
        arch["n_mlp"] = _bounded((max(mlp), mlp[max(mlp)]), "the number of mapping layers", MAX_MLP, source)
    sdim = first([(f"style.{i}.weight", 2, 1) for i in sorted(mlp)] + [("conv1.conv.modulation.weight", 2, 1),
                                                                        ("to_rgb1.conv.modulation.weight", 2, 1)])
    if sdim is not None:
        arch["style_dim"] = _bounded(sdim, "the style size", MAX_WIDTH, source)
    if log_size is not None:
        chans: dict[int, int | None] = {4: _bounded(first([
            ("input.input", 4, 1), ("conv1.conv.weight", 5, 1), ("conv1.activate.bias", 1, 0),
            ("to_rgb1.conv.weight", 5, 2)]), "the 4x4 channels", MAX_WIDTH, source)}
        for k in range(log_size - 2):
            chans[2 ** (k + 3)] = _bounded(first([
                (f"convs.{2 * k}.conv.weight", 5, 1), (f"convs.{2 * k}.activate.bias", 1, 0),
                (f"convs.{2 * k + 1}.conv.weight", 5, 2), (f"convs.{2 * k + 1}.activate.bias", 1, 0),
                (f"to_rgbs.{k}.conv.weight", 5, 2)]), f"the {2 ** (k + 3)}x{2 ** (k + 3)} channels", MAX_WIDTH, source)
        if None not in chans.values():
            arch["channels"] = chans
    return arch


def estimated_values(arch: Mapping[str, Any]) -> int:
    """Float values (parameters and buffers) of the generator built for ``arch``, counted from rosinality's
    layout without building it (biases and noise strengths left out: within a few per cent). What ``arch``
    lacks takes the build's defaults: 1024², style size 512, 8 mapping layers, at most 512 channels."""
    style, log_size = arch.get("style_dim", 512), round(math.log2(arch.get("resolution", 1024)))
    c = [arch.get("channels", {}).get(2 ** i, 512) for i in range(2, log_size + 1)]
    total = arch.get("n_mlp", 8) * style * style + 16 * c[0] + 9 * c[0] ** 2 + 2 * style * c[0] + 3 * c[0] + 16
    for i in range(1, len(c)):  # per resolution: upsampling and plain StyledConv, ToRGB, two noise maps
        cin, cout, r = c[i - 1], c[i], 2 ** (i + 2)
        total += 9 * cout * (cin + cout) + style * (cin + 2 * cout) + 3 * cout + 2 * r * r
    return total


def summarise_missing(names: list[str], noise_seed: int) -> str:
    """The ``weights_source`` note on the buffers ``names`` that the file lacks and the generator rebuilt."""
    noises = sorted((n for n in names if n.startswith("noises.")), key=lambda n: int(n.rsplit("_", 1)[1]))
    kernels = [n for n in names if n.endswith(".kernel")]
    parts = []
    if noises:
        rng = noises[0] if len(noises) == 1 else f"{noises[0]}…{noises[-1].rsplit('.', 1)[1]}"
        parts.append(f"{len(noises)} noise maps ({rng}) rebuilt as seeded N(0,1) (noise_seed {noise_seed})")
    if kernels:
        parts.append(f"{len(kernels)} FIR kernels rebuilt (outer([1,3,3,1])/64, x4 after upsampling)")
    return "; ".join(parts)
