"""The ``SplitGenerator`` contract: a pretrained generator that can be cut in two.

Conventions (everywhere in the toolkit):

* latents are ``[B, latent_dim]`` float tensors, drawn from N(0, I) unless a generator says otherwise;
* images are RGB, NCHW, float, nominally in [-1, 1] (raw generator output is *not* clamped);
* a *split point* ``ℓ`` is the number of stages placed in G1; ``G1 = stages[:ℓ]`` and
  ``G2 = stages[ℓ:]``, so ``G2(G1(z, ℓ), ℓ) == G(z)`` for every ℓ in ``0 … len(stages)``.

A subclass provides ``latent_dim``, ``resolution``, :meth:`latent_to_input` and
:meth:`stages`; everything else (split-point listing with shapes from a dry forward pass,
G1, G2, sampling) is derived here. Generators whose intermediate is more than one tensor
(StyleGAN2 carries the skip image and the remaining styles) return a :class:`SplitState`
from their stages and override :meth:`features_of` / :meth:`with_features`.

Conditional generators (optional)
---------------------------------
A class-conditional generator (BigGAN-deep, the omniart eye DCGAN) is built for one default
class, which every image gets. It can also take **per-image class vectors**; unconditional
generators inherit no-op defaults and are unaffected:

* ``condition_dim``: the width of a class vector (0 = unconditional, the default);
* :meth:`SplitGenerator.set_conditions` ``(c)``: ``c`` is ``[B, condition_dim]``, one row per
  image, each row non-negative and summing to 1 (one-hot or soft); ``None`` restores the
  instance's default class. The vectors are validated, detached, stored as float32 on the
  generator's device (a non-persistent buffer: ``copy.deepcopy`` / :func:`frozen_copy` keep
  them, ``.to(device)`` moves them, ``state_dict`` never contains them) and are constants,
  not optimised;
* while set, every forward over ``R`` latent rows (``forward``, ``g1``; G2 reads the condition
  from the intermediate) gives row ``r`` the vector of image ``r // (R // B)``, i.e.
  ``c.repeat_interleave(R // B, 0)``: the toolkit's **image-major** row convention, where row
  ``b·N + n`` is code ``n`` of image ``b``. ``R`` not a multiple of ``B`` is a ``ValueError``;
* :attr:`SplitGenerator.conditions`: the current ``[B, condition_dim]`` vectors or ``None``;
  :meth:`SplitGenerator.default_condition`: the ``[condition_dim]`` one-hot of the default class;
* :meth:`SplitGenerator.sample_conditions` ``(n, seed)``: ``[n, condition_dim]`` one-hot classes
  drawn uniformly (seeded; one seed per row supported), ``None`` for unconditional generators;
* :func:`conditioned` ``(generator, c)``: a context manager that sets conditions and restores
  the previous ones; :func:`describe_condition`: a JSON-able record of one image's vector.

``describe()`` does not mention per-image conditions (they change per batch and are recorded per
image); a subclass reads them for ``R`` rows with :meth:`SplitGenerator.condition_rows` where it
builds its input, and falls back to its original code path when that returns ``None``, so the
output with conditions unset is bit-identical to an instance without this API.
"""
from __future__ import annotations

import contextlib
import copy
import functools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .precision import current_compile_mode
from .weights import state_dict_sha256


@dataclass(frozen=True)
class SplitPoint:
    """One place where a generator can be cut.

    ``index`` is the number of stages in G1 (the seeds' layer index ℓ for PGGAN), ``name``
    a stable human-readable label, ``shape`` the ``(C, H, W)`` of the feature tensor there.
    """

    index: int
    name: str
    shape: tuple[int, ...]
    description: str = ""


@dataclass
class SplitState:
    """A structured intermediate: the composable feature tensor plus what G2 also needs.

    ``context`` holds tensors with the batch as leading dimension (e.g. StyleGAN2's running
    RGB skip image and the remaining styles).
    """

    features: Tensor
    context: dict[str, Tensor] = field(default_factory=dict)


Intermediate = Any  # Tensor or SplitState

#: largest accepted deviation of a class vector's row sum from 1
CONDITION_SUM_TOLERANCE = 1e-4
_CONDITIONS = "_conditions"  # the name of the (non-persistent) buffer holding per-image conditions


def validate_conditions(c: Any, condition_dim: int, owner: str = "generator") -> Tensor:
    """``c`` checked as per-image class vectors ``[B, condition_dim]``; returned float32 and detached.

    Every row must be finite, non-negative and sum to 1 (± :data:`CONDITION_SUM_TOLERANCE`): a
    one-hot or soft class vector. Raises ``TypeError`` / ``ValueError`` saying what was expected
    and what was found.
    """
    expected = f"per-image class vectors of shape [B, {condition_dim}] (B >= 1)"
    if not isinstance(c, Tensor):
        raise TypeError(f"{owner}: conditions must be a torch.Tensor of {expected} or None, got {type(c).__name__}")
    if c.is_complex() or c.dtype == torch.bool:
        raise TypeError(f"{owner}: conditions must be real numbers ({expected}), got dtype {c.dtype}")
    if c.dim() != 2 or c.shape[0] < 1 or c.shape[1] != condition_dim:
        raise ValueError(f"{owner}: expected {expected}, got shape {list(c.shape)}")
    v = c.detach().to(torch.float64)
    if not bool(torch.isfinite(v).all()):
        raise ValueError(f"{owner}: conditions must be finite, found NaN or inf in rows "
                         f"{_bad_rows(~torch.isfinite(v).all(dim=1))}")
    if bool((v < 0).any()):
        raise ValueError(f"{owner}: class vectors must be non-negative (one-hot or soft), found negative entries "
                         f"in rows {_bad_rows((v < 0).any(dim=1))} (minimum {v.min().item():.4g})")
    sums = v.sum(dim=1)
    off = (sums - 1).abs() > CONDITION_SUM_TOLERANCE
    if bool(off.any()):
        first = int(off.nonzero()[0, 0])
        raise ValueError(f"{owner}: every class vector must sum to 1 (one-hot or soft), found rows "
                         f"{_bad_rows(off)} off (row {first} sums to {sums[first].item():.6g})")
    return c.detach().to(torch.float32).clone()


def _bad_rows(mask: Tensor, limit: int = 8) -> str:
    rows = [int(i) for i in mask.nonzero().flatten()]
    return ", ".join(map(str, rows[:limit])) + (f", … ({len(rows)} in all)" if len(rows) > limit else "")


def describe_condition(c: Tensor) -> dict[str, Any]:
    """A JSON-able record of one image's class vector ``[condition_dim]``.

    ``{"class": k}`` for a one-hot vector; ``{"class": argmax, "weights": {"k": w, …}}`` (the
    non-zero entries) for a soft one.
    """
    if c.dim() != 1:
        raise ValueError(f"describe_condition expects one class vector [condition_dim], got shape {list(c.shape)}")
    v = c.detach().to(torch.float64).cpu()
    k = int(v.argmax())
    if bool((v == 0).sum() == v.numel() - 1) and float(v[k]) == 1.0:
        return {"class": k}
    return {"class": k, "weights": {str(int(i)): float(v[i]) for i in v.nonzero().flatten()}}


class SplitGenerator(nn.Module):
    """Base class of every generator in the registry. See the module docstring."""

    #: registry name, set by the factory that builds the generator
    name: str = ""
    latent_dim: int
    resolution: int
    #: free-text licence of the weights this instance carries (stored with results)
    weights_licence: str = "unknown"
    #: where the weights came from (path, package, or "random:<seed>")
    weights_source: str = "random"

    # ---- to implement -------------------------------------------------------------------
    def latent_to_input(self, z: Tensor) -> Intermediate:
        """Map latents ``[B, latent_dim]`` to the input of the first stage."""
        return z

    def stages(self) -> Sequence[tuple[str, Callable[[Intermediate], Intermediate]]]:
        """The ordered ``(name, callable)`` stages; the last one outputs the image."""
        raise NotImplementedError

    def features_of(self, x: Intermediate) -> Tensor:
        """The composable feature tensor ``[B, C, H, W]`` of an intermediate."""
        return x.features if isinstance(x, SplitState) else x

    def with_features(self, x: Intermediate, features: Tensor, rows: Tensor | None = None) -> Intermediate:
        """``x`` with its feature tensor replaced; ``rows`` selects the batch rows of the context."""
        if isinstance(x, SplitState):
            ctx = x.context if rows is None else {k: v[rows] for k, v in x.context.items()}
            return replace(x, features=features, context=ctx)
        return features

    # ---- optional conditioning (see "Conditional generators" in the module docstring) -------
    #: width of a per-image class vector; 0 = unconditional
    condition_dim: int = 0

    def default_condition(self) -> Tensor | None:
        """The ``[condition_dim]`` class vector of the instance's own class (``None``: unconditional)."""
        return None

    @property
    def conditions(self) -> Tensor | None:
        """The per-image class vectors ``[B, condition_dim]`` currently set, or ``None``."""
        return self._buffers.get(_CONDITIONS)

    def set_conditions(self, c: Tensor | None) -> None:
        """Set per-image class vectors ``[B, condition_dim]`` (validated), or ``None`` for the default class."""
        if c is None:
            if _CONDITIONS in self._buffers:
                self._buffers[_CONDITIONS] = None
            return
        if self.condition_dim <= 0:
            shape = list(c.shape) if isinstance(c, Tensor) else type(c).__name__
            raise ValueError(f"{self._label()} is unconditional (condition_dim = 0): expected conditions=None, "
                             f"got {shape}; only class-conditional generators take per-image classes")
        checked = validate_conditions(c, self.condition_dim, self._label()).to(self.device)
        if _CONDITIONS in self._buffers:
            self._buffers[_CONDITIONS] = checked
        else:
            self.register_buffer(_CONDITIONS, checked, persistent=False)

    def condition_rows(self, rows: int) -> Tensor | None:
        """The class vector of each of ``rows`` latent rows (image-major), or ``None`` when unset.

        With ``B`` conditions set, ``rows`` must be ``B·N``; row ``b·N + n`` gets image ``b``'s vector.
        """
        c = self.conditions
        if c is None:
            return None
        b = c.shape[0]
        if rows % b:
            raise ValueError(
                f"{self._label()} has class conditions for {b} images, but the batch has {rows} latent rows, which "
                f"is not a multiple of {b}: expected B·N rows in image-major order (row b·N + n is code n of "
                f"image b, N codes per image); set conditions for the images of this batch (or None)")
        return c.repeat_interleave(rows // b, dim=0)

    def sample_conditions(self, n: int, seed: int | Sequence[int] = 0, device: Any = None) -> Tensor | None:
        """``[n, condition_dim]`` one-hot classes drawn uniformly, reproducibly; ``None`` if unconditional.

        ``seed`` is one seed for the whole draw or one seed per row (row ``i`` then depends only
        on ``seed[i]``).
        """
        if self.condition_dim <= 0:
            return None
        if isinstance(seed, int):
            if n < 0:
                raise ValueError(f"sample_conditions: expected n >= 0, got {n}")
            idx = torch.randint(self.condition_dim, (n,), generator=torch.Generator().manual_seed(seed))
        else:
            seeds = list(seed)
            if len(seeds) != n:
                raise ValueError(f"got {len(seeds)} seeds for {n} class vectors")
            idx = torch.tensor([int(torch.randint(self.condition_dim, (1,),
                                                  generator=torch.Generator().manual_seed(s))) for s in seeds],
                               dtype=torch.long)
        c = F.one_hot(idx, self.condition_dim).to(torch.float32)
        return c.to(device if device is not None else self.device)

    def _label(self) -> str:
        return f"generator {self.name or type(self).__name__}"

    # ---- derived ------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        for b in self.buffers():
            return b.device
        return torch.device("cpu")

    def sample_latents(self, n: int, seed: int | Sequence[int] = 0, device: Any = None) -> Tensor:
        """``n`` latents from the prior, reproducible across devices.

        ``seed`` is one seed for the whole draw or one seed per latent (row ``i`` then depends
        only on ``seed[i]``).
        """
        if isinstance(seed, int):
            g = torch.Generator().manual_seed(seed)
            z = torch.randn(n, self.latent_dim, generator=g)
        else:
            seeds = list(seed)
            if len(seeds) != n:
                raise ValueError(f"got {len(seeds)} seeds for {n} latents")
            z = torch.stack([torch.randn(self.latent_dim, generator=torch.Generator().manual_seed(s)) for s in seeds])
        return z.to(device if device is not None else self.device)

    def _stage_list(self) -> list[tuple[str, Callable[[Intermediate], Intermediate]]]:
        return list(self.stages())

    @property
    def split_points(self) -> list[SplitPoint]:
        """All split points 0 … len(stages), with feature shapes from a dry forward pass."""
        cached = self.__dict__.get("_split_points_cache")
        if cached is None:
            cached = self._dry_run()
            self.__dict__["_split_points_cache"] = cached
        return cached

    @torch.no_grad()
    def _dry_run(self) -> list[SplitPoint]:
        with conditioned(self, None):  # one latent row, whatever per-image conditions are set
            return self._dry_run_unconditioned()

    def _dry_run_unconditioned(self) -> list[SplitPoint]:
        stages = self._stage_list()
        z = self.sample_latents(1, seed=0)
        x = self.latent_to_input(z)
        points = [SplitPoint(0, "input", tuple(self.features_of(x).shape[1:]), "latent as the first stage sees it")]
        for i, (name, stage) in enumerate(stages, start=1):
            x = stage(x)
            points.append(SplitPoint(i, name, tuple(self.features_of(x).shape[1:]), f"after stage {name}"))
        return points

    def resolve_split(self, split: int | str) -> int:
        """The index of a split point given by index, by name, or by a digit string."""
        points = self.split_points
        if isinstance(split, str) and split.lstrip("-").isdigit():
            split = int(split)
        if isinstance(split, int) and not isinstance(split, bool):
            if 0 <= split < len(points):
                return split
            raise ValueError(
                f"split point {split} is out of range for generator {self.name or type(self).__name__}: "
                f"expected 0 … {len(points) - 1}")
        for p in points:
            if p.name == split:
                return p.index
        names = ", ".join(p.name for p in points)
        raise ValueError(f"unknown split point {split!r} for generator {self.name or type(self).__name__}; "
                         f"valid names: {names} (or an index 0 … {len(points) - 1})")

    def g1(self, z: Tensor, split: int | str) -> Intermediate:
        """G1: latents ``[B, latent_dim]`` → intermediate at ``split``."""
        return self._run(z, 0, self.resolve_split(split), True)

    def g2(self, x: Intermediate, split: int | str) -> Tensor:
        """G2: intermediate at ``split`` → images ``[B, 3, H, W]`` (raw, nominally [-1, 1])."""
        out: Tensor = self._run(x, self.resolve_split(split), None, False)
        return out

    def forward(self, z: Tensor) -> Tensor:
        """Full synthesis G(z): ``[B, latent_dim]`` → ``[B, 3, resolution, resolution]``."""
        out: Tensor = self._run(z, 0, None, True)
        return out

    def _run(self, x: Any, start: int, end: int | None, from_latent: bool) -> Any:
        """Stages ``start:end`` (after ``latent_to_input`` if ``from_latent``). Inside a compile
        mode (:func:`gan_inversion_bench.precision.compile_mode`, set by the harness around
        ``invert``) they run compiled, so a method with its own loop is compiled too; inside an
        already compiled step (``optimise``) they are traced into it instead."""
        mode = current_compile_mode()
        if mode == "off" or torch.compiler.is_compiling():
            return _synthesise(self, x, start, end, from_latent)
        return _compiled_synthesise(mode)(self, x, start, end, from_latent)

    def content_hash(self) -> str:
        """sha256 of the weights' content (:func:`~gan_inversion_bench.weights.state_dict_sha256`):
        the same for the same weights from any source or device; any changed weight changes it."""
        return state_dict_sha256(self)

    def describe(self) -> dict[str, Any]:
        """A JSON-able description stored with every result."""
        return {"name": self.name, "class": type(self).__name__, "latent_dim": self.latent_dim,
                "resolution": self.resolution, "weights": self.weights_source, "licence": self.weights_licence}


def _synthesise(generator: SplitGenerator, x: Any, start: int, end: int | None, from_latent: bool) -> Any:
    if from_latent:
        x = generator.latent_to_input(x)
    for _, stage in generator._stage_list()[start:end]:
        x = stage(x)
    return x


@functools.cache
def _compiled_synthesise(mode: str) -> Callable[..., Any]:
    """:func:`_synthesise` compiled once per compile mode (one graph per generator class and split)."""
    return torch.compile(_synthesise, mode=None if mode == "default" else mode)


def frozen_copy(generator: SplitGenerator) -> SplitGenerator:
    """A deep copy in eval mode with gradients off: methods never touch the caller's generator.

    The split points (a dry forward pass, cached on the generator: a property of its architecture)
    are computed on the caller's generator first, so the copies share them; otherwise every copy ran
    its own dry pass, inside each inversion, and an inversion's FLOP count depended on whether
    anything had asked the caller's generator for its split points before."""
    generator.split_points  # noqa: B018 (fills the cache that the copy inherits)
    g = copy.deepcopy(generator).eval().requires_grad_(False)
    return g


@contextlib.contextmanager
def conditioned(generator: SplitGenerator, c: Tensor | None) -> Iterator[SplitGenerator]:
    """Set per-image conditions ``c`` (or ``None``) for the block, then restore the previous ones.

    >>> with conditioned(G, classes):   # classes: [B, condition_dim]
    ...     images = G(z)               # z: [B·N, latent_dim], image-major
    """
    previous = generator.conditions
    generator.set_conditions(c)
    try:
        yield generator
    finally:
        generator.set_conditions(previous)
