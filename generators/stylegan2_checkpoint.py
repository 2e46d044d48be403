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

from gan_inversion_bench.weights import CheckpointError, torch_load_safe

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


def infer_architecture(sd: Mapping[str, Any]) -> dict[str, Any]:
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
