"""In-domain GAN inversion (Zhu, Shen, Zhao & Zhou, ECCV 2020): a domain-guided encoder, alone
(``encoder``) and as the start and the regulariser of an optimisation (``idinvert``).

**Stage 1, the domain-guided encoder** (:meth:`IDEncoder.prepare`, shared by both methods; paper
Sec. 3.1). The paper trains E on real images x with the generator G fixed and in the loop (eq. 2)::

    min_E  ‖x − G(E(x))‖² + λ_vgg ‖F(x) − F(G(E(x)))‖² − λ_adv E_x[D(G(E(x)))]           (2)

and a discriminator D alongside it (eq. 3: the adversarial loss with an R1 penalty of weight γ on
real images). Kept here: the two reconstruction terms of eq. 2, through the toolkit's
:class:`~gan_inversion_bench.losses.ReconstructionLoss` (pixel MSE, weight 1, plus
``encoder_perceptual_weight`` · its VGG16-relu3_3 L1 term; the paper's F is VGG16 conv4_3 with a
squared distance, so the same λ weighs a different quantity). Dropped: the adversarial term and
eq. 3 entirely, because no discriminator weights exist for these generators and training one from
scratch alongside a tiny encoder on CPU is out of scale. Changed: the training images are
generator samples G(z) (seeded; ``prepare`` receives a generator, not a data set), not real photos.
Because z is then known, the latent regression of eq. 1 (the conventional encoder the paper argues
against) can be added as an option: ``encoder_latent_weight`` · mean (E(G(z)) − z)² (0 in the paper
profile). Conditional generators (BigGAN-deep, omniart eyes) draw a class per training image
(uniformly, seeded); E predicts the latent only, and G keeps each image's class at inversion.

**Stage 2** (paper Sec. 3.2, eq. 4). ``encoder``: one forward pass, z = E(x), x̂ = G(z). ``idinvert``
starts from z = E(x) and minimises with Adam, per image::

    ‖x − G(z)‖² + λ_vgg ‖F(x) − F(G(z))‖² + λ_dom ‖z − E(G(z))‖²                              (4)

the first two terms through ReconstructionLoss, the domain regulariser by :func:`domain_regulariser`
(mean over the latent's entries, like the pixel term's mean over pixels; the paper writes norms,
its released code takes means). E stays fixed; gradients flow through G and E into z.

**Defaults** (``paper`` profile). Eq. 4: λ_vgg = 5e-5 and λ_dom = 2 (Sec. 4, implementation
details; the released inversion code's defaults agree), Adam with lr 0.01 for 100 iterations (the
released code's defaults; its README: "100 iterations are good enough"). Eq. 2: λ_vgg = 5e-5
(Sec. 4). The paper gives no optimiser or schedule for the encoder; from its released training
script: Adam, lr 1e-4, β = (0.9, 0.99), batch 128, 14 000 kimg at 256² (``encoder_steps``
109 375); its learning-rate decay is not reproduced (constant lr). All of these
were set for StyleGAN at 256² inverted into its per-layer W+ space (the paper's latent); here the
latent is whatever the generator's ``latent_dim`` is (z for DCGAN/PGGAN/BigGAN, W+ for our
StyleGAN2). Where the paper is silent: the encoder architecture (the paper's is a deep network for
StyleGAN's 14 × 512 codes) is a small CNN sized to the generator (:class:`ConvEncoder`), the output
bias starts at the mean of prior latents, and the perceptual term runs at the generator's
resolution (``perceptual_size=None``: the paper feeds its 256² images to VGG at their own size).
``docs/methods.md`` gives the measurements behind the ``quick`` profile.

**Cache.** The trained encoder is stored in ``cache_dir`` (default ``$GIB_CACHE``) as
``idinvert-encoder-<key>.pt``, keyed by the generator's weights (:meth:`SplitGenerator.content_hash`)
and the other fields of its ``describe()`` (latent space, truncation, ...), the training settings,
the seed and :data:`TRAINING_VERSION`; both methods share it. It is read with
``torch.load(weights_only=True)``; a file that is unreadable, a link, or that was trained for other
content (its stored key differs) is refused with a warning and the encoder is retrained.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from gan_inversion_bench.generator import SplitGenerator, conditioned, frozen_copy
from gan_inversion_bench.losses import ReconstructionLoss
from gan_inversion_bench.method import InversionMethod, InversionResult, MethodTags, ProgressFn
from gan_inversion_bench.method_tools import as_seed_list, check_targets, optimise, positive_float, positive_int
from gan_inversion_bench.precision import full_precision
from gan_inversion_bench.safe_paths import torch_load_cached, torch_save_atomic
from gan_inversion_bench.tasks import activated

#: the version of the encoder and its training; part of every cache key
TRAINING_VERSION = "1"
ADAM_BETAS = (0.9, 0.99)  # the released encoder training script's Adam
TRAINING_FIELDS = ("encoder_steps", "encoder_batch", "encoder_lr", "encoder_width", "encoder_max_width",
                   "encoder_perceptual_weight", "encoder_latent_weight")


@dataclass
class EncoderSettings:
    """Stage 1 (the encoder's training) and the reconstruction loss; defaults are the paper's."""

    encoder_steps: int = 109_375           # 14 000 kimg / batch 128 (released script)
    encoder_batch: int = 128
    encoder_lr: float = 1e-4
    encoder_width: int = 32                # channels of the first conv (doubled per level; not the paper's net)
    encoder_max_width: int = 256
    encoder_perceptual_weight: float = 5e-5  # λ_vgg of eq. 2
    encoder_latent_weight: float = 0.0     # eq. 1's latent regression, added to eq. 2 (not in the paper)
    perceptual_weight: float = 5e-5        # λ_vgg of eq. 4 (and the encoder's reported loss)
    perceptual_size: int | None = None     # VGG input size; None: the generator's resolution

    def __post_init__(self) -> None:
        for name in ("encoder_steps", "encoder_batch", "encoder_width", "encoder_max_width"):
            positive_int(getattr(self, name), name)
        positive_float(self.encoder_lr, "encoder_lr")
        if self.encoder_max_width < self.encoder_width:
            raise ValueError(f"encoder_max_width ({self.encoder_max_width}) must be >= encoder_width "
                             f"({self.encoder_width})")
        for name in ("encoder_perceptual_weight", "encoder_latent_weight", "perceptual_weight"):
            non_negative(getattr(self, name), name)
        if self.perceptual_size is not None:
            positive_int(self.perceptual_size, "perceptual_size")


@dataclass
class IDInvertSettings(EncoderSettings):
    """Stage 1 plus the domain-regularised optimisation of eq. 4."""

    iterations: int = 100
    lr: float = 0.01
    domain_weight: float = 2.0             # λ_dom

    def __post_init__(self) -> None:
        super().__post_init__()
        positive_int(self.iterations, "iterations")
        positive_float(self.lr, "lr")
        non_negative(self.domain_weight, "domain_weight")


def non_negative(value: Any, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 or value == float("inf"):
        raise ValueError(f"{what} must be a finite number >= 0, got {value!r}")


# ---- the encoder -------------------------------------------------------------------------------------
class ConvEncoder(nn.Sequential):
    """Image ``[B, 3, R, R]`` in [-1, 1] → latent ``[B, latent_dim]``.

    Stride-2 4×4 convolutions with LeakyReLU(0.2) halve the resolution down to 4×4 (or an odd size),
    channels ``width``, 2·width, … capped at ``max_width``; then one linear layer. No normalisation
    layers, so image i of a batch is encoded exactly as alone.
    """

    def __init__(self, resolution: int, latent_dim: int, width: int, max_width: int):
        layers: list[nn.Module] = []
        channels, size, out = 3, resolution, width
        while size > 4 and size % 2 == 0:
            layers += [nn.Conv2d(channels, out, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
            channels, size, out = out, size // 2, min(2 * out, max_width)
        super().__init__(*layers, nn.Flatten(), nn.Linear(channels * size * size, latent_dim))

    @property
    def head(self) -> nn.Linear:
        """The final linear layer (features → latent)."""
        layer = self[-1]
        assert isinstance(layer, nn.Linear)
        return layer


def build_encoder(arch: dict[str, int], weights: Tensor | None = None, seed: int = 0) -> ConvEncoder:
    """The encoder of ``arch`` (resolution, latent_dim, width, max_width): seeded initial weights
    (the global RNG is left untouched), or ``weights`` (the flat parameter vector)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        E = ConvEncoder(arch["resolution"], arch["latent_dim"], arch["width"], arch["max_width"])
    if weights is not None:
        n = sum(p.numel() for p in E.parameters())
        if weights.numel() != n:
            raise ValueError(f"encoder weights have {weights.numel()} values, the architecture {arch} needs {n}")
        nn.utils.vector_to_parameters(weights.detach().float().cpu(), E.parameters())
    return E


def domain_regulariser(E: nn.Module, z: Tensor, images: Tensor) -> Tensor:
    """Eq. 4's ``‖z − E(G(z))‖²`` per image, as a mean over the latent's entries: ``[B]``.
    ``images`` = G(z) ``[B, 3, R, R]``; gradients reach z directly and through ``images``."""
    return (z - E(images).float()).pow(2).mean(1)


# ---- stage 1: training and the cache ----------------------------------------------------------------
def _training_images(G: SplitGenerator, batch: int, step_seed: int) -> tuple[Tensor, Tensor | None, Tensor]:
    """Seeded prior latents ``[batch, latent]``, their classes (conditional generators) and images."""
    z = G.sample_latents(batch, seed=step_seed)
    classes = G.sample_conditions(batch, seed=step_seed + 1) if G.condition_dim > 0 else None
    with torch.no_grad(), conditioned(G, classes):
        x = G(z).float().clamp(-1, 1)  # what a target looks like
    return z, classes, x


def train_encoder(G: SplitGenerator, s: EncoderSettings, arch: dict[str, int], *, seed: int,
                  progress: ProgressFn | None = None) -> tuple[Tensor, list[float]]:
    """Eq. 2 without its adversarial term (+ the optional latent regression) on generator samples.

    Returns the flat parameter vector (CPU) and the per-step training loss."""
    E = build_encoder(arch, seed=seed).to(G.device)
    with torch.no_grad():  # start at the centre of the prior
        E.head.bias.copy_(G.sample_latents(256, seed=seed + 17).mean(0))
    opt = torch.optim.Adam(E.parameters(), lr=s.encoder_lr, betas=ADAM_BETAS)
    size = s.perceptual_size or G.resolution
    curve: list[float] = []
    for step in range(s.encoder_steps):
        z, classes, x = _training_images(G, s.encoder_batch, (seed * 1_000_003 + 2 * step) % 2**62)
        w = E(x)
        with activated(None), conditioned(G, classes):  # compares with the sample itself, never a task's target
            loss = ReconstructionLoss(x, perceptual_weight=s.encoder_perceptual_weight,
                                      perceptual_size=size)(G(w).float()).mean()
        if s.encoder_latent_weight:
            loss = loss + s.encoder_latent_weight * (w - z).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        curve.append(loss.item())
        if progress is not None:
            progress(step + 1, s.encoder_steps)
    return nn.utils.parameters_to_vector(E.parameters()).detach().cpu(), curve


def digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:20]


def cache_material(G: SplitGenerator, s: EncoderSettings, seed: int) -> dict[str, Any]:
    """What the trained encoder depends on: the generator's content (never its name or path), the
    training settings, the seed and the code version."""
    described = {k: v for k, v in G.describe().items() if k not in ("name", "weights", "licence")}
    training: dict[str, Any] = {k: getattr(s, k) for k in TRAINING_FIELDS}
    if s.encoder_perceptual_weight:
        training["perceptual_size"] = s.perceptual_size
    return {"weights_sha256": G.content_hash(), "generator": described, "training": training, "seed": seed,
            "code": TRAINING_VERSION}


def _load(path: Path, material: dict[str, Any], n_params: int) -> dict[str, Any] | None:
    """The cache entry at ``path`` if it holds an encoder trained for exactly ``material``, else None
    (a warning says why a file that exists was refused)."""
    entry = torch_load_cached(path, "encoder cache file", "retraining the idinvert encoder")
    if entry is None:
        return None
    expected = json.dumps(material, sort_keys=True, default=str)
    stored = entry.get("key") if isinstance(entry, dict) else None
    weights = entry.get("weights") if isinstance(entry, dict) else None
    if stored != expected or not isinstance(weights, Tensor) or weights.numel() != n_params:
        try:
            theirs = json.loads(stored) if isinstance(stored, str) else {}
        except ValueError:
            theirs = {}
        differ = sorted(k for k in material if json.dumps(theirs.get(k), sort_keys=True, default=str)
                        != json.dumps(material[k], sort_keys=True, default=str)) or ["weights"]
        warnings.warn(f"idinvert: refusing encoder cache file {path}: it was not trained for this generator and "
                      f"these settings (differs in: {', '.join(differ)}); retraining", stacklevel=3)
        return None
    return entry


# ---- the two methods ----------------------------------------------------------------------------------
class IDEncoder(InversionMethod):
    """The domain-guided encoder alone: x̂ = G(E(x)), one forward pass.

    It maps the observed image directly, so it cannot take a restoration task's degradation
    operator (tagged ``supports_tasks=False``); ``idinvert`` can. ``loss_history`` is one row, the
    reconstruction loss (pixel MSE + ``perceptual_weight`` · VGG term) of the result.
    """

    name = "encoder"
    version = "1"
    Settings = EncoderSettings
    PROFILES: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": {},
        # about a minute on 2 idle CPU cores for dcgan-digiface64 (docs/methods.md)
        "quick": {"encoder_steps": 400, "encoder_batch": 16, "encoder_lr": 1e-3, "encoder_perceptual_weight": 0.0,
                  "encoder_latent_weight": 1.0},
        # Tiny, for the conformance suite. lr 1e-2: after 12 steps at 1e-3 the codes E(x) stay near 0, where
        # PGGAN's PixelNorm makes Adam's steps chaotic (a batch then differs from its images alone) and
        # on the flat random DCGANs E(x) is already a minimum of eq. 4 (docs/methods.md).
        "test": {"encoder_steps": 12, "encoder_batch": 4, "encoder_lr": 1e-2, "encoder_width": 8,
                 "encoder_max_width": 32, "encoder_perceptual_weight": 0.0, "encoder_latent_weight": 1.0,
                 "perceptual_weight": 0.0},
    }
    budget_setting: ClassVar[str | None] = None
    tags = MethodTags(deterministic=True, needs_prepare=True, improves_in_domain=False, supports_tasks=False)
    PREPARED_IDENTITY = ("encoder", "weights_sha256")  # the rest: how its training ran
    in_default_run = False  # tuned for dcgan-digiface64, but it would lengthen the default run (README)

    def prepare(self, generator: SplitGenerator, *, seed: int = 0, cache_dir: Any = None,
                progress: ProgressFn | None = None) -> IDEncoder:
        """Train the encoder for ``generator`` (or load it from the cache). Sets ``weights_`` (flat
        parameters, CPU), ``arch_``, ``curve_`` (training loss per step), ``cache_key_``,
        ``from_cache_`` and ``prepared_for_``. Never modifies ``generator``."""
        s = self.settings
        G = frozen_copy(generator)
        G.set_conditions(None)
        arch = {"resolution": G.resolution, "latent_dim": G.latent_dim, "width": s.encoder_width,
                "max_width": s.encoder_max_width}
        n_params = sum(p.numel() for p in build_encoder(arch).parameters())
        material = cache_material(G, s, seed)
        key = digest(material)
        if cache_dir is None and os.environ.get("GIB_CACHE"):
            cache_dir = os.environ["GIB_CACHE"]
        folder = Path(cache_dir).expanduser() if cache_dir is not None else None
        if folder is not None and folder.exists() and not folder.is_dir():
            raise ValueError(f"{self.name}: the cache folder {folder} (cache_dir or $GIB_CACHE) is a file; expected a "
                             f"folder (or a path that does not exist yet)")
        path = folder / f"idinvert-encoder-{key}.pt" if folder is not None else None
        entry = _load(path, material, n_params) if path is not None else None
        if entry is not None:
            weights, curve = entry["weights"].float(), entry["curve"].tolist()
        else:
            weights, curve = train_encoder(G, s, arch, seed=seed, progress=progress)
            if path is not None:
                torch_save_atomic({"weights": weights, "curve": torch.tensor(curve),
                       "key": json.dumps(material, sort_keys=True, default=str)}, path)
        self.weights_, self.curve_, self.arch_ = weights, curve, arch
        self.cache_key_, self.from_cache_ = key, entry is not None
        self.prepared_for_ = digest(generator.describe())
        return self

    def prepared_state(self) -> dict[str, Any]:
        """JSON-able summary stored with every result (the same whether trained or loaded)."""
        if not hasattr(self, "weights_"):
            return {}
        return {"encoder": {"architecture": "ConvEncoder", **self.arch_, "parameters": int(self.weights_.numel())},
                "training_steps": len(self.curve_), "final_training_loss": self.curve_[-1] if self.curve_ else None,
                "cache_key": self.cache_key_,
                "weights_sha256": hashlib.sha256(self.weights_.cpu().numpy().tobytes()).hexdigest()[:20]}

    def networks(self, generator: SplitGenerator) -> tuple[SplitGenerator, nn.Module]:
        """A frozen copy of ``generator`` and the frozen encoder on its device (after :meth:`prepare`)."""
        if getattr(self, "prepared_for_", None) != digest(generator.describe()):
            raise ValueError(f"{self.name}: call prepare(generator) with this generator before invert (the encoder "
                             f"is trained for one generator in stage 1)")
        G = frozen_copy(generator)
        E = build_encoder(self.arch_, self.weights_).to(G.device).eval().requires_grad_(False)
        return G, E

    def reconstruction_loss(self, targets: Tensor, G: SplitGenerator) -> ReconstructionLoss:
        with full_precision(targets.device):  # cached target features in fp32
            return ReconstructionLoss(targets, perceptual_weight=self.settings.perceptual_weight,
                                      perceptual_size=self.settings.perceptual_size or G.resolution)

    def invert(self, generator: SplitGenerator, targets: Tensor, *, seeds: int | Sequence[int] = 0,
               progress: ProgressFn | None = None) -> InversionResult:
        """z = E(x), x̂ = G(z); ``latents["z"]`` ``[B, latent]``. The seeds are not used."""
        check_targets(targets, generator)
        as_seed_list(seeds, targets.shape[0])
        G, E = self.networks(generator)
        targets = targets.detach().to(G.device)
        with torch.no_grad():
            z = E(targets).float()
            images = G(z).float()
            final = self.reconstruction_loss(targets, G)(images).float()  # [B]
        if progress is not None:
            progress(1, 1)
        return InversionResult(images, {"z": z}, final[None].cpu(), 0)


class IDInvert(IDEncoder):
    """In-domain inversion (eq. 4): Adam on z from z = E(x), with the encoder as regulariser."""

    name = "idinvert"
    version = "1"
    Settings = IDInvertSettings
    PROFILES: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": {},
        "quick": IDEncoder.PROFILES["quick"],  # the paper's 100 iterations; the encoder as for `encoder`
        # Adam at 3e-3, not the paper's 1e-2: on the tiny PGGAN (codes near 0, PixelNorm's 1/|z|) a
        # batch and its images alone parted by 0.016 after 8 steps at 1e-2 on an AMD EPYC CPU (5e-6 at 3e-3).
        "test": {**IDEncoder.PROFILES["test"], "lr": 3e-3},
    }
    budget_setting: ClassVar[str | None] = "iterations"
    tags = MethodTags(deterministic=True, needs_prepare=True)

    def tuning_space(self, trial: Any) -> dict[str, Any]:
        """Adam's learning rate: the paper's 0.01 was set for StyleGAN's W+ codes, other latents differ."""
        return {"lr": trial.suggest_float("adam_lr", 1e-3, 0.3, log=True)}

    def invert(self, generator: SplitGenerator, targets: Tensor, *, seeds: int | Sequence[int] = 0,
               progress: ProgressFn | None = None) -> InversionResult:
        """Latents: ``z`` ``[B, latent]`` (optimised); ``info["encoder_z"]``: the start E(x).
        ``loss_history``: the whole objective of eq. 4 per image. The seeds are not used."""
        check_targets(targets, generator)
        as_seed_list(seeds, targets.shape[0])
        s = self.settings
        G, E = self.networks(generator)
        targets = targets.detach().to(G.device)
        with torch.no_grad():
            start = E(targets).float()  # [B, latent]
        z = start.clone().requires_grad_(True)
        loss = self.reconstruction_loss(targets, G)

        def per_image_loss() -> Tensor:
            images = G(z).float()
            return loss(images) + s.domain_weight * domain_regulariser(E, z, images)

        history, failures = optimise([z], per_image_loss, optimizer="adam", lr=s.lr, iterations=s.iterations,
                                     progress=progress, snapshot=lambda: G(z).float())
        with torch.no_grad():
            images = G(z).float()
        return InversionResult(images, {"z": z.detach()}, history, s.iterations, failures,
                               info={"encoder_z": start})


__all__ = ["ConvEncoder", "EncoderSettings", "IDEncoder", "IDInvert", "IDInvertSettings", "build_encoder",
           "cache_material", "domain_regulariser", "train_encoder"]
