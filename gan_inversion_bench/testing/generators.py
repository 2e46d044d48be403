"""The generator conformance checks: a SplitGenerator's attributes, split composition, determinism,
purity, gradients and split resolution, on the tiny configuration of a registered name."""
from __future__ import annotations

import json
from collections.abc import Callable

import torch
from torch import Tensor

from ..generator import SplitGenerator
from ..registry import GENERATORS
from .common import _raises, _state, tiny_generator


# ---- generator checks ----------------------------------------------------------------------------------
def _z(g: SplitGenerator, n: int, seed: int = 0) -> Tensor:
    return g.sample_latents(n, seed=seed)


def check_attributes_and_output(g: SplitGenerator) -> None:
    """A SplitGenerator in eval mode with int sizes, a registry name, JSON-able describe(); float32
    images ``[B, 3, R, R]``."""
    assert isinstance(g, SplitGenerator) and not g.training, f"{g!r}: must be a SplitGenerator in eval mode"
    assert isinstance(g.latent_dim, int) and g.latent_dim > 0 and isinstance(g.resolution, int) and g.resolution >= 4
    assert g.name, f"{type(g).__name__}: .name is empty (GENERATORS.create sets it to the registry name)"
    json.dumps(g.describe())
    with torch.no_grad():
        x = g(_z(g, 2))
    assert tuple(x.shape) == (2, 3, g.resolution, g.resolution) and x.dtype == torch.float32, \
        f"{g.name}: output {list(x.shape)} {x.dtype}"
    assert torch.isfinite(x).all(), f"{g.name}: non-finite output"


def check_split_composition(g: SplitGenerator) -> None:
    """``G2(G1(z, ℓ), ℓ) == G(z)`` at every split point; each shape is what G1 returns there."""
    z, points = _z(g, 2, seed=1), g.split_points
    assert [p.index for p in points] == list(range(len(points))), f"{g.name}: split indices must be 0 … n"
    assert len({p.name for p in points}) == len(points), f"{g.name}: split point names must be unique"
    with torch.no_grad():
        image = g(z)
        for p in points:
            inter = g.g1(z, p.index)
            assert tuple(g.features_of(inter).shape) == (2, *p.shape), f"{g.name}: split {p}: wrong shape"
            torch.testing.assert_close(g.g2(inter, p.index), image, rtol=0, atol=1e-5, msg=f"{g.name}: split {p}")
            assert g.resolve_split(p.name) == p.index == g.resolve_split(str(p.index))
    assert tuple(points[-1].shape) == (3, g.resolution, g.resolution)


def check_determinism_and_batches(g: SplitGenerator) -> None:
    """Seeded sampling (also per row), same z → same image, image i of a batch = z[i] alone."""
    assert torch.equal(g.sample_latents(3, seed=7), g.sample_latents(3, seed=7))
    assert not torch.equal(g.sample_latents(3, seed=7), g.sample_latents(3, seed=8))
    assert torch.equal(g.sample_latents(2, seed=[5, 6])[1], g.sample_latents(1, seed=[6])[0])
    z = _z(g, 3, seed=4)
    with torch.no_grad():
        batch = g(z)
        assert torch.equal(batch, g(z.clone())), f"{g.name}: the same z gave another image"
        for i in range(3):
            torch.testing.assert_close(batch[i:i + 1], g(z[i:i + 1]), rtol=0, atol=1e-5,
                                       msg=f"{g.name}: image {i} of a batch differs from it alone")


def check_forward_mutates_nothing(g: SplitGenerator) -> None:
    """A forward pass changes no parameter, buffer or input, also in train mode (no batch statistics)."""
    before, z = _state(g), _z(g, 2, seed=3)
    z_copy = z.clone()
    with torch.no_grad():
        ref = g(z)
        mid = len(g.split_points) // 2
        f = g.g1(z, mid)
        f_copy = g.features_of(f).clone()
        g.g2(f, mid)
        assert torch.equal(g.features_of(f), f_copy), f"{g.name}: G2 modified its input feature in place"
        g.train()
        try:
            assert torch.equal(g(z), ref), f"{g.name}: train mode changed the output (batch statistics?)"
        finally:
            g.eval()
    after = _state(g)
    assert torch.equal(z, z_copy) and list(after) == list(before)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert not changed, f"{g.name}: a forward pass changed {changed}"


def check_gradients(g: SplitGenerator) -> None:
    """Gradients reach the latents and the split features."""
    z = _z(g, 1, seed=5).requires_grad_(True)
    g(z).square().mean().backward()
    assert z.grad is not None and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0, f"{g.name}: no grad to z"
    mid = len(g.split_points) // 2
    with torch.no_grad():
        inter = g.g1(_z(g, 1, seed=5), mid)
    f = g.features_of(inter).detach().requires_grad_(True)
    g.g2(g.with_features(inter, f), mid).square().mean().backward()
    assert f.grad is not None and torch.isfinite(f.grad).all() and f.grad.abs().sum() > 0, \
        f"{g.name}: no gradient reaches the split features"
    g.zero_grad(set_to_none=True)


def check_resolve_split(g: SplitGenerator) -> None:
    """Out-of-range indices and unknown names are refused, listing the valid ones."""
    n = len(g.split_points)
    for bad in (-1, n, n + 5, str(n)):
        with _raises(ValueError, rf"0 … {n - 1}", f"{g.name}: split {bad!r}"):
            g.resolve_split(bad)
    with _raises(ValueError, "no-such-layer", f"{g.name}: an unknown split name"):
        g.resolve_split("no-such-layer")
    with _raises(ValueError, "", f"{g.name}: G1 at split {n}"):
        g.g1(_z(g, 1), n)


GENERATOR_CHECKS: dict[str, Callable[[SplitGenerator], None]] = {
    "attributes_and_output": check_attributes_and_output,
    "split_composition": check_split_composition,
    "determinism_and_batches": check_determinism_and_batches,
    "forward_mutates_nothing": check_forward_mutates_nothing,
    "gradients": check_gradients,
    "resolve_split": check_resolve_split,
}


def check_tiny_is_reproducible(name: str) -> None:
    """Two ``GENERATORS.create(name, tiny=True)`` calls build identical weights, named ``name``."""
    a, b = GENERATORS.create(name, tiny=True), GENERATORS.create(name, tiny=True)
    assert a.name == name, f"GENERATORS.create({name!r}) gave a generator named {a.name!r}"
    sa, sb = a.state_dict(), b.state_dict()
    differ = [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert sa.keys() == sb.keys() and not differ, f"{name}: tiny=True builds differ between calls: {differ[:5]}"


def check_generator(generator: str | SplitGenerator) -> None:
    """Every generator check on ``generator`` (a registry name: its tiny configuration)."""
    if isinstance(generator, str):
        check_tiny_is_reproducible(generator)
        generator = tiny_generator(generator)
    for fn in GENERATOR_CHECKS.values():
        fn(generator)
