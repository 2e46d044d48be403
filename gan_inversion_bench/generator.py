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
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn


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

    # ---- derived ------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        for t in self.parameters():
            return t.device
        for t in self.buffers():
            return t.device
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
        end = self.resolve_split(split)
        x = self.latent_to_input(z)
        for _, stage in self._stage_list()[:end]:
            x = stage(x)
        return x

    def g2(self, x: Intermediate, split: int | str) -> Tensor:
        """G2: intermediate at ``split`` → images ``[B, 3, H, W]`` (raw, nominally [-1, 1])."""
        start = self.resolve_split(split)
        for _, stage in self._stage_list()[start:]:
            x = stage(x)
        return x

    def forward(self, z: Tensor) -> Tensor:
        """Full synthesis G(z): ``[B, latent_dim]`` → ``[B, 3, resolution, resolution]``."""
        x = self.latent_to_input(z)
        for _, stage in self._stage_list():
            x = stage(x)
        return x

    def describe(self) -> dict[str, Any]:
        """A JSON-able description stored with every result."""
        return {"name": self.name, "class": type(self).__name__, "latent_dim": self.latent_dim,
                "resolution": self.resolution, "weights": self.weights_source, "licence": self.weights_licence}


def frozen_copy(generator: SplitGenerator) -> SplitGenerator:
    """A deep copy in eval mode with gradients off: methods never touch the caller's generator."""
    g = copy.deepcopy(generator).eval().requires_grad_(False)
    return g
