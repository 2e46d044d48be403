"""BigGAN-deep (the HuggingFace pytorch-pretrained-BigGAN checkpoint layout) as a :class:`SplitGenerator`.

Registry name ``biggan-deep``; factory :func:`biggan_deep`. Written from the architecture
description in ``/work/shared/reference/checkpoints/README.md`` and the manifests
``tests/data/checkpoints/biggan_deep_{128,256,512}.json``. The layers (spectral norm, batch norms,
GenBlock, SelfAttn) are in :mod:`.biggan_layers`; this module assembles them, splits them into
stages and loads checkpoints.

Checkpoint container
--------------------
``pytorch_model.bin`` is the state_dict of the whole model (``embeddings.*``, ``generator.*``),
next to ``config.json`` (on the HF S3 mirror the two are named ``biggan-deep-<res>-pytorch_model.bin``
and ``biggan-deep-<res>-config.json``; both naming schemes are found). The weights are read with
``torch.load(weights_only=True)`` (the legacy non-zip format also loads) and checked strictly
against the architecture the config describes. Without a config file the built-in configs for
128/256/512 are used (chosen by ``resolution`` or by the number of blocks in the file).

Numerics
--------
* Spectral norm (old hook layout): every such layer stores ``weight_orig`` with buffers
  ``weight_u`` and ``weight_v``; the weight used is ``weight_orig / σ`` with
  ``σ = uᵀ (W_mat v)`` from the stored vectors (``W_mat`` = ``weight_orig`` reshaped to
  ``[out, -1]``). No power iteration is ever run, in train or eval mode: this generator is never
  trained, and the released outputs were produced this way.
* Batch norms hold statistics for 51 truncation values 0, 0.02, …, 1 (``[51, C]``). For
  truncation t: ``coef, i = math.modf(t / (1/50))``; row i if ``coef == 0``, else
  ``running[i]·coef + running[i+1]·(1 − coef)`` (the reversed weighting of the reference code),
  then ``(x − mean) / √(var + eps)``, eps = ``config["eps"]`` (1e-4). Conditional ones multiply by
  ``1 + scale(cond)`` and add ``offset(cond)`` (bias-free spectral-norm linears); the final ``bn``
  has plain affine ``weight``/``bias``.
* ``cond = cat(z, embeddings(one_hot(class)))`` (256-d); ``gen_z(cond)`` is viewed as
  ``[B, 4, 4, 16·ch]`` (TF NHWC) and permuted to ``[B, 16·ch, 4, 4]``.
* GenBlock: bn_0 → ReLU → 1×1 conv_0 (to in/4) → bn_1 → ReLU → [nearest ×2] → 3×3 conv_1 →
  bn_2 → ReLU → 3×3 conv_2 → bn_3 → ReLU → 1×1 conv_3 (to out); skip: the first out channels of
  the input when the block halves the channels, [nearest ×2]; output = sum.
* SelfAttn (inserted before block ``attention_layer_position``): θ, φ (C/8), g (C/2) 1×1
  convs, 2×2 max-pooling of φ and g, softmax over the pooled positions, 1×1 o_conv,
  ``x + γ·attn``.
* Output: bn → ReLU → conv_to_rgb (3×3, ``channel_width`` = 128 outputs; only the first 3 are
  computed and kept) → tanh.

Latents, class and truncation
-----------------------------
Latents are z ``[B, z_dim]`` (128). ``class_index`` (0 … 999) and ``truncation`` (0 < t ≤ 1,
default 0.4) are generator attributes set by the constructor / factory. The prior
(:meth:`BigGANDeepGenerator.sample_latents`) is the truncated normal of the reference sampler:
N(0, 1) restricted to [−2, 2] (rejection-resampled, seeded), times ``truncation``.

Per-image classes
-----------------
``condition_dim`` is ``num_classes``. With conditions set
(:meth:`~gan_inversion_bench.generator.SplitGenerator.set_conditions`, ``[B, num_classes]``, one-hot
or soft), row ``r`` of a batch of ``R = B·N`` latents (image-major) uses the embedding
``embeddings.weight @ c[r // N]`` instead of the column of ``class_index``: the linear embedding of
the class vector, as the reference implementation embeds its ``class_vector`` input (a soft vector
gives the linear combination of the class embeddings; a one-hot one gives exactly the column).
The class reaches every later layer through ``context["cond"]``, so G2 needs nothing else. With
conditions unset the code path is the original one (``class_index`` for every image).

Split points and the intermediate
---------------------------------
Stages: ``gen_z``, ``layers.0`` … ``layers.{M-1}`` (GenBlocks and the SelfAttn, in the
checkpoint's ``generator.layers`` order), ``conv_to_rgb`` (bn → ReLU → conv → tanh, the image).
Every intermediate except the image is a :class:`~gan_inversion_bench.generator.SplitState`
whose ``context["cond"]`` ``[B, 2·z_dim]`` is the conditioning vector the later conditional
batch norms need (truncation is read from the generator). At split 0, ``features`` is also the
conditioning vector ``[B, 2·z_dim]`` (the input of ``gen_z``); afterwards it is the block output
``[B, C, r, r]``. Composition keeps the ``cond`` of the rows passed to ``with_features`` (the
first code of each image, for mGANprior).
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gan_inversion_bench.generator import SplitGenerator, SplitState
from gan_inversion_bench.weights import (
    CheckpointError,
    WeightsNotFound,
    check_state_dict,
    refuse_oversized_model,
    torch_load_safe,
)

# the layers; also importable from this module (the tests and the reset_parameters code use them)
from .biggan_layers import GenBlock, SelfAttn, SNConv2d, SNLinear, StatsBatchNorm, interpolated_stats, sn_weight

__all__ = ["BigGANDeepGenerator", "biggan_deep", "BIGGAN_DEEP_CONFIGS", "TINY_CONFIG", "sn_weight",
           "interpolated_stats", "truncated_normal", "LICENCE"]

LICENCE = ("Apache-2.0 (DeepMind's BigGAN-deep TF-Hub modules, as ported to PyTorch by HuggingFace's "
           "pytorch-pretrained-BigGAN, whose code is MIT)")

_COMMON = {"channel_width": 128, "class_embed_dim": 128, "eps": 1e-4, "n_stats": 51, "num_classes": 1000,
           "z_dim": 128, "attention_layer_position": 8}
_L128 = [[False, 16, 16], [True, 16, 16], [False, 16, 16], [True, 16, 8], [False, 8, 8], [True, 8, 4],
         [False, 4, 4], [True, 4, 2], [False, 2, 2], [True, 2, 1]]
_L256 = [[False, 16, 16], [True, 16, 16], [False, 16, 16], [True, 16, 8], [False, 8, 8], [True, 8, 8],
         [False, 8, 8], [True, 8, 4], [False, 4, 4], [True, 4, 2], [False, 2, 2], [True, 2, 1]]
_L512 = [*_L256[:9], [True, 4, 2], [False, 2, 2], [True, 2, 1], [False, 1, 1], [True, 1, 1]]
#: the released configurations (values of the HF config.json files)
BIGGAN_DEEP_CONFIGS: dict[int, dict[str, Any]] = {
    128: {**_COMMON, "layers": _L128, "output_dim": 128},
    256: {**_COMMON, "layers": _L256, "output_dim": 256},
    512: {**_COMMON, "layers": _L512, "output_dim": 512},
}
#: a 32×32 toy with the same structure (attention included) for tests
TINY_CONFIG: dict[str, Any] = {
    "channel_width": 4, "class_embed_dim": 16, "eps": 1e-4, "n_stats": 51, "num_classes": 10, "z_dim": 16,
    "attention_layer_position": 3, "output_dim": 32,
    "layers": [[False, 16, 16], [True, 16, 8], [True, 8, 4], [True, 4, 2], [False, 2, 1]],
}
_REQUIRED = ("channel_width", "eps", "n_stats", "num_classes", "z_dim", "attention_layer_position", "layers",
             "output_dim")


# ---- the prior -----------------------------------------------------------------------------------
def truncated_normal(shape: Sequence[int], generator: torch.Generator, bound: float = 2.0) -> Tensor:
    """N(0, 1) restricted to [-bound, bound], by redrawing the samples outside (deterministic given the generator)."""
    x = torch.randn(*shape, generator=generator)
    while True:
        bad = x.abs() > bound
        nbad = int(bad.sum())
        if nbad == 0:
            return x
        x[bad] = torch.randn(nbad, generator=generator)


# ---- the network ---------------------------------------------------------------------------------
class Synthesis(nn.Module):
    """The ``generator.*`` part: gen_z, layers, bn, conv_to_rgb."""

    def __init__(self, cfg: Mapping[str, Any]):
        super().__init__()
        ch = cfg["channel_width"]
        cond_dim = 2 * cfg["z_dim"]
        self.gen_z = SNLinear(cond_dim, 4 * 4 * 16 * ch)
        layers: list[nn.Module] = []
        for i, (up, cin, cout) in enumerate(cfg["layers"]):
            if i == cfg["attention_layer_position"]:
                layers.append(SelfAttn(ch * cin))
            layers.append(GenBlock(ch * cin, ch * cout, cond_dim, up=bool(up), n_stats=cfg["n_stats"],
                                   eps=cfg["eps"]))
        self.layers = nn.ModuleList(layers)
        self.bn = StatsBatchNorm(ch, None, cfg["n_stats"], cfg["eps"])
        self.conv_to_rgb = SNConv2d(ch, ch, 3, padding=1)
        self.channel_width = ch


#: bounds on a config's numbers, which set the size of the network built for it (the released configs:
#: channel_width 128, z_dim 128, 1000 classes, 51 statistics rows, 10 … 14 blocks up to 512²); n_stats ≥ 2, as
#: the truncation interpolation divides by n_stats - 1
_INT_BOUNDS = {"channel_width": (1, 1024), "n_stats": (2, 1024), "num_classes": (1, 100_000), "z_dim": (1, 4096),
               "attention_layer_position": (0, 64), "output_dim": (4, 4096)}
_MAX_BLOCKS = 64
_EXPECTED = ("a BigGAN-deep of at most 4 GiB, every weight in the file (the released ones: channel_width 128, "
             "10 … 14 blocks, 0.2 GiB)")


def _config_int(config: Mapping[str, Any], key: str, source: str) -> int:
    """``config[key]`` as an integer within its bounds (an integral float such as 1e2 counts)."""
    lo, hi = _INT_BOUNDS[key]
    value = config[key]
    if isinstance(value, float) and value.is_integer():  # inf and nan are not
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise CheckpointError(f"{source}: config key {key!r} must be an integer in {lo} … {hi}, got {value!r:.80}")
    return value


def _config_layers(layers: Any, source: str) -> list[list[Any]]:
    """The ``layers`` list as ``[upsample, in, out]`` blocks (bool, int, int), each multiplier in 1 … 16."""
    if not isinstance(layers, (list, tuple)) or not 1 <= len(layers) <= _MAX_BLOCKS:
        raise CheckpointError(f"{source}: config key 'layers' must be a list of 1 … {_MAX_BLOCKS} blocks "
                              f"[upsample, in, out], got {layers!r:.80}")
    for i, block in enumerate(layers):
        if not (isinstance(block, (list, tuple)) and len(block) == 3 and all(isinstance(x, int) for x in block)
                and 1 <= block[1] <= 16 and 1 <= block[2] <= 16):
            raise CheckpointError(f"{source}: config 'layers' block {i} is {block!r:.80}; expected [upsample "
                                  f"(true/false), in, out] with channel multipliers in and out in 1 … 16")
    return [[bool(up), int(cin), int(cout)] for up, cin, cout in layers]


def normalise_config(config: Mapping[str, Any], source: str = "config") -> dict[str, Any]:
    """Validate a BigGAN config dict (the HF config.json fields) and check it is buildable.

    Every number is bounded, and the size of the network is counted before it is built (on the meta
    device, which allocates nothing): a config.json sets that size, and ``channel_width`` 10**6 would
    ask for 32 GB.
    """
    missing = [k for k in _REQUIRED if k not in config]
    if missing:
        raise CheckpointError(f"{source}: BigGAN config lacks {', '.join(missing)}")
    cfg = dict(config)
    cfg["layers"] = _config_layers(cfg["layers"], source)
    for k in _INT_BOUNDS:
        cfg[k] = _config_int(cfg, k, source)
    eps = cfg["eps"]
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < 1:  # nan fails too
        raise CheckpointError(f"{source}: config key 'eps' must be a number in (0, 1), got {eps!r:.80}")
    cfg["eps"] = float(eps)
    layers = cfg["layers"]
    if layers[0][1] != 16:
        raise CheckpointError(f"{source}: the first block must take 16·channel_width channels (gen_z's output)")
    if layers[-1][2] != 1:
        raise CheckpointError(f"{source}: the last block must output channel_width channels")
    for i, (_, cin, cout) in enumerate(layers):
        if cin != cout and cout * 2 != cin:
            raise CheckpointError(f"{source}: block {i} goes {cin}→{cout}; blocks may only keep or halve channels")
        if i and layers[i - 1][2] != cin:
            raise CheckpointError(f"{source}: block {i} input {cin} does not match block {i - 1} output")
    res = 4 * 2 ** sum(1 for up, _, _ in layers if up)
    if res != cfg["output_dim"]:
        raise CheckpointError(f"{source}: output_dim {cfg['output_dim']} but the blocks upsample 4 → {res}")
    refuse_oversized_model(config_values(cfg), source=source, expected=_EXPECTED)
    return cfg


def config_values(cfg: Mapping[str, Any]) -> int:
    """Float values (parameters and buffers) of the generator a validated config describes, counted on
    the meta device: the network's own layout, without allocating it."""
    with torch.device("meta"):
        synthesis = Synthesis(cfg)
    return cfg["num_classes"] * cfg["z_dim"] + sum(v.numel() for v in synthesis.state_dict().values())


def _require_state(x: Any, g: SplitGenerator) -> None:
    if not isinstance(x, SplitState):
        raise TypeError(
            f"G2 of {g.name or type(g).__name__} takes the SplitState that G1 returns (the feature map plus the "
            f"context later layers need), got {type(x).__name__}; to change the features use "
            f"g.with_features(g.g1(z, split), features)")


class BigGANDeepGenerator(SplitGenerator):
    """Class-conditional BigGAN-deep with the HF module layout. See the module docstring."""

    def __init__(self, config: Mapping[str, Any], *, class_index: int = 0, truncation: float = 0.4):
        super().__init__()
        cfg = normalise_config(config)
        self.config = cfg
        self.embeddings = nn.Linear(cfg["num_classes"], cfg["z_dim"], bias=False)
        with torch.no_grad():
            self.embeddings.weight.zero_()
        self.generator = Synthesis(cfg)
        self.resolution = cfg["output_dim"]
        self.latent_dim = cfg["z_dim"]
        self.condition_dim = cfg["num_classes"]
        self.class_index = class_index
        self.truncation = truncation

    # validated attributes
    @property
    def class_index(self) -> int:
        return self._class_index

    @class_index.setter
    def class_index(self, value: int) -> None:
        n = self.config["num_classes"]
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < n:
            raise ValueError(f"class_index must be an int in 0 … {n - 1}, got {value!r}")
        self._class_index = value

    @property
    def truncation(self) -> float:
        return self._truncation

    @truncation.setter
    def truncation(self, value: float) -> None:
        value = float(value)
        if not 0.0 < value <= 1.0:
            raise ValueError(f"BigGAN truncation must be in (0, 1], got {value}")
        self._truncation = value

    def sample_latents(self, n: int, seed: int | Sequence[int] = 0, device: Any = None) -> Tensor:
        """Truncated-normal z (|z| ≤ 2 before scaling) times ``truncation``; per-row seeds supported."""
        if isinstance(seed, int):
            z = truncated_normal((n, self.latent_dim), torch.Generator().manual_seed(seed))
        else:
            seeds = list(seed)
            if len(seeds) != n:
                raise ValueError(f"got {len(seeds)} seeds for {n} latents")
            z = torch.stack([truncated_normal((self.latent_dim,), torch.Generator().manual_seed(s)) for s in seeds])
        return (z * self.truncation).to(device if device is not None else self.device)

    def default_condition(self) -> Tensor:
        """The one-hot ``[num_classes]`` vector of ``class_index``."""
        return F.one_hot(torch.tensor(self.class_index), self.condition_dim).to(torch.float32)

    def class_embedding(self, batch: int) -> Tensor:
        """The class embedding of each of ``batch`` latent rows: ``[batch, z_dim]``.

        ``embeddings(one_hot(class_index))`` for every row, or with per-image conditions set,
        ``embeddings.weight @ c`` with row ``r`` taking image ``r // (batch // B)``'s vector.
        """
        c = self.condition_rows(batch)
        if c is None:
            return self.embeddings.weight[:, self.class_index].unsqueeze(0).expand(batch, -1)
        w = self.embeddings.weight
        return F.linear(c.to(device=w.device, dtype=w.dtype), w)

    def latent_to_input(self, z: Tensor) -> SplitState:
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"expected latents of shape [B, {self.latent_dim}], got {tuple(z.shape)}")
        cond = torch.cat([z, self.class_embedding(z.shape[0]).to(z.dtype)], dim=1)
        return SplitState(cond, {"cond": cond})

    def _stage_gen_z(self, x: SplitState) -> SplitState:
        _require_state(x, self)
        h = self.generator.gen_z(x.features)
        ch16 = 16 * self.generator.channel_width
        h = h.reshape(-1, 4, 4, ch16).permute(0, 3, 1, 2).contiguous()
        return SplitState(h, dict(x.context))

    def _stage_layer(self, i: int, x: SplitState) -> SplitState:
        _require_state(x, self)
        layer = self.generator.layers[i]
        if isinstance(layer, GenBlock):
            f = layer(x.features, x.context["cond"], self.truncation)
        else:
            f = layer(x.features)
        return SplitState(f, dict(x.context))

    def _stage_output(self, x: SplitState) -> Tensor:
        _require_state(x, self)
        g = self.generator
        h = F.relu(g.bn(x.features, self.truncation))
        return torch.tanh(g.conv_to_rgb(h, out_channels=3))

    def stages(self):
        out: list = [("gen_z", self._stage_gen_z)]
        out += [(f"layers.{i}", partial(self._stage_layer, i)) for i in range(len(self.generator.layers))]
        out.append(("conv_to_rgb", self._stage_output))
        return out

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update({"class_index": self.class_index, "truncation": self.truncation,
                  "config": {k: self.config[k] for k in sorted(self.config)}})
        return d

    @torch.no_grad()
    def reset_parameters(self, seed: int = 0, power_iterations: int = 20) -> None:
        """Seeded random weights: N(0,1) weights with u, v set by power iteration (so σ ≈ the top
        singular value), small random biases and statistics, γ = 0.5 so attention carries signal."""
        gen = torch.Generator().manual_seed(seed)

        def rnd(t: Tensor, scale: float = 1.0, shift: float = 0.0) -> None:
            t.copy_(torch.randn(t.shape, generator=gen) * scale + shift)

        rnd(self.embeddings.weight, 0.5)
        for m in self.modules():
            if isinstance(m, (SNLinear, SNConv2d)):
                rnd(m.weight_orig)
                if m.bias is not None:
                    rnd(m.bias, 0.05)
                w = m.weight_orig.reshape(m.weight_orig.shape[0], -1)
                u = F.normalize(torch.randn(w.shape[0], generator=gen), dim=0)
                v = F.normalize(w.t() @ u, dim=0)
                for _ in range(power_iterations):
                    u = F.normalize(w @ v, dim=0)
                    v = F.normalize(w.t() @ u, dim=0)
                m.weight_u.copy_(u)
                m.weight_v.copy_(v)
            elif isinstance(m, StatsBatchNorm):
                rnd(m.running_means, 0.1)
                m.running_vars.copy_(0.5 + torch.rand(m.running_vars.shape, generator=gen))
                if not m.conditional:
                    rnd(m.weight, 0.1, 1.0)
                    rnd(m.bias, 0.1)
            elif isinstance(m, SelfAttn):
                m.gamma.fill_(0.5)


# ---- loading -----------------------------------------------------------------------------------------
def _find_files(weights: str | Path) -> tuple[Path, Path | None]:
    p = Path(weights).expanduser()
    if p.is_dir():
        binf = p / "pytorch_model.bin"
        if not binf.is_file():
            cands = sorted(p.glob("*pytorch_model.bin"))
            if len(cands) != 1:
                raise WeightsNotFound(f"{p}: no pytorch_model.bin (or a single *-pytorch_model.bin) in this directory")
            binf = cands[0]
    else:
        binf = p
        if not binf.exists():
            raise WeightsNotFound(f"BigGAN-deep weights {binf} do not exist; see gan_inversion_bench.zoo "
                                  f"(biggan_deep_128/256/512) for where to get them")
    cands = [binf.parent / "config.json"]
    if binf.name.endswith("pytorch_model.bin"):
        cands.insert(0, binf.parent / (binf.name[: -len("pytorch_model.bin")] + "config.json"))
    cfg = next((c for c in cands if c.is_file()), None)
    return binf, cfg


def _read_config(config: str | Path | Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    if isinstance(config, Mapping):
        return normalise_config(config, "config"), "given config"
    path = Path(config).expanduser()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise WeightsNotFound(f"cannot read BigGAN config {path}: {e}") from None
    except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError, an int of 5000 digits
        raise CheckpointError(f"{path}: not valid JSON: {e}; expected the config.json of a BigGAN-deep") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return normalise_config(data, str(path)), str(path)


def _infer_resolution(sd: Mapping[str, Any]) -> int | None:
    pattern = r"generator\.layers\.(\d+)\.conv_0\.weight_orig"
    blocks = {int(m.group(1)) for k in sd if (m := re.fullmatch(pattern, str(k)))}
    return {10: 128, 12: 256, 14: 512}.get(len(blocks))


def _load(weights: str | Path, config: Any, resolution: int | None, class_index: int,
          truncation: float) -> BigGANDeepGenerator:
    binf, cfg_file = _find_files(weights)
    cfg: dict[str, Any] | None = None
    if config is not None:
        cfg, cfg_note = _read_config(config)
    elif cfg_file is not None:
        cfg, cfg_note = _read_config(cfg_file)
    if cfg is not None and resolution is not None and cfg["output_dim"] != resolution:
        raise CheckpointError(f"{binf}: the config describes a {cfg['output_dim']}px generator, "
                              f"but resolution={resolution} was requested")
    sd = torch_load_safe(binf)
    if not isinstance(sd, dict):
        raise CheckpointError(f"{binf}: expected the state_dict of the whole BigGAN (a dict of tensors with "
                              f"'embeddings.*' and 'generator.*' keys), found {type(sd).__name__}")
    if cfg is None:
        res = resolution or _infer_resolution(sd)
        if res not in BIGGAN_DEEP_CONFIGS:
            raise CheckpointError(f"{binf}: no config.json next to the weights and the resolution cannot be "
                                  f"inferred; pass config=PATH or resolution=128/256/512")
        cfg, cfg_note = dict(BIGGAN_DEEP_CONFIGS[res]), f"built-in BigGAN-deep-{res} config (no config.json found)"
    refuse_oversized_model(config_values(cfg), source=str(binf), expected=_EXPECTED, state=sd)
    g = BigGANDeepGenerator(cfg, class_index=class_index, truncation=truncation)
    expected = {k: tuple(v.shape) for k, v in g.state_dict().items()}
    check_state_dict(sd, expected, source=str(binf), dtypes={k: v.dtype for k, v in g.state_dict().items()})
    g.load_state_dict({k: v.float() for k, v in sd.items()})
    g.weights_source = f"{binf}; config: {cfg_note}"
    g.weights_licence = LICENCE
    return g


_DEFAULT_ZOO = {128: "biggan_deep_128", 256: "biggan_deep_256", 512: "biggan_deep_512"}


def _random_config(config: Any, resolution: int | None, tiny: bool) -> dict[str, Any]:
    """The config of random weights: ``config`` if given, else the tiny toy's or the released one of
    ``resolution`` (default 128); a ``resolution`` the config does not have is refused."""
    if config is not None:
        cfg, source = _read_config(config)
    elif tiny:
        cfg, source = dict(TINY_CONFIG), "tiny=True (the 32×32 toy)"
    else:
        res = resolution or 128
        if res not in BIGGAN_DEEP_CONFIGS:
            raise ValueError(f"BigGAN-deep resolution must be 128, 256 or 512, got {res}")
        return dict(BIGGAN_DEEP_CONFIGS[res])
    if resolution is not None and cfg["output_dim"] != resolution:
        raise ValueError(f"resolution={resolution} contradicts {source}, which builds a {cfg['output_dim']}px "
                         f"generator; drop one of them")
    return cfg


# PLR0913: a public factory; its keywords are the generator's documented options
def biggan_deep(*, weights: str | Path | None = None, config: Any = None, resolution: int | None = None,  # noqa: PLR0913
                class_index: int = 0, truncation: float = 0.4, tiny: bool = False, device: Any = "cpu", seed: int = 0,
                **kw: Any) -> BigGANDeepGenerator:
    """Build the ``biggan-deep`` generator.

    ``weights``: the directory holding ``pytorch_model.bin`` + ``config.json``, or the ``.bin``
    path (config next to it, as ``config.json`` or ``<prefix>config.json``); a zoo name
    (``biggan_deep_128`` …) from the checkpoint cache; ``"random"`` for seeded random weights
    of the released architecture at ``resolution`` (default 128); or ``None`` for the zoo
    checkpoint of ``resolution`` (default 128) in the cache. ``config``: a dict or a JSON path
    overriding the config file. ``tiny=True``: a 32×32 toy with seeded random weights. ``seed``:
    the random weights' seed. A ``resolution`` other than the config's is refused (the tiny toy's
    is 32).
    """
    kw = {k: v for k, v in kw.items() if v is not None}  # None means "not given"
    if kw:
        raise TypeError(f"biggan_deep() got unexpected keyword arguments: {', '.join(sorted(kw))}")
    if tiny or (isinstance(weights, str) and weights == "random"):
        if tiny and weights not in (None, "random"):
            raise ValueError("tiny=True builds random weights; do not pass weights")
        cfg = _random_config(config, resolution, tiny)
        g = BigGANDeepGenerator(cfg, class_index=class_index, truncation=truncation)
        g.reset_parameters(int(seed))
        g.weights_source = f"random:{seed}" + (" (tiny)" if tiny else "")
        g.weights_licence = "n/a (random weights)"
    else:
        from gan_inversion_bench import zoo

        if weights is None:
            res = resolution or 128
            if res not in _DEFAULT_ZOO:
                raise WeightsNotFound(f"no BigGAN-deep checkpoint for resolution {res}; use 128, 256 or 512")
            weights = zoo.require(_DEFAULT_ZOO[res])
        elif isinstance(weights, str) and weights in zoo.CHECKPOINTS:
            weights = zoo.require(weights)
        g = _load(weights, config, resolution, class_index, truncation)
    g.name = "biggan-deep"
    return g.to(device).eval()
