"""Conformance suite that every registered generator must pass, generated from the registry.

Contract for a generator factory registered in ``GENERATORS`` (built-in or via the entry-point
group ``gan_inversion_bench.generators``):

* ``GENERATORS.create(name, tiny=True)`` must work with **no weight file and no extra
  package**: a small configuration of the *same code* with seeded random weights, fast on CPU.
  Factories ignore keyword arguments whose value is None and reject other unknown ones.
* the result is a :class:`SplitGenerator` in eval mode, with ``latent_dim`` and ``resolution``
  as plain ints; ``G(z)`` maps float32 ``[B, latent_dim]`` to float32 ``[B, 3, R, R]``;
* ``G2(G1(z, ℓ), ℓ) == G(z)`` at every split point, and each split point's ``shape`` is the
  shape of the feature that G1 really returns there;
* same z → same image; ``sample_latents(n, seed)`` is reproducible; image i of a batch equals
  the image of z[i] alone (no batch statistics); a forward pass changes no parameter or buffer,
  even after ``.train()``;
* gradients flow from the image to z and to the split feature;
* ``resolve_split`` rejects out-of-range indices and unknown names, listing the valid ones.

Each check is parametrised by registry name, so a new generator gets all of them for free.
"""
from __future__ import annotations

import json

import pytest
import torch

from gan_inversion_bench.generator import SplitGenerator
from gan_inversion_bench.registry import GENERATORS

NAMES = GENERATORS.names()
_CACHE: dict[str, SplitGenerator] = {}


@pytest.fixture(params=NAMES)
def gen(request: pytest.FixtureRequest) -> SplitGenerator:
    name = request.param
    if name not in _CACHE:
        _CACHE[name] = GENERATORS.create(name, tiny=True)
    return _CACHE[name]


def _z(g: SplitGenerator, n: int, seed: int = 0) -> torch.Tensor:
    return g.sample_latents(n, seed=seed)


def test_registry_is_not_empty() -> None:
    assert {"dcgan-digiface64", "pggan", "pggan-tiny"} <= set(NAMES)


def test_type_and_attributes(gen: SplitGenerator) -> None:
    assert isinstance(gen, SplitGenerator)
    assert not gen.training
    assert isinstance(gen.latent_dim, int) and gen.latent_dim > 0
    assert isinstance(gen.resolution, int) and gen.resolution >= 4
    assert gen.name in NAMES
    json.dumps(gen.describe())  # JSON-able


def test_output_shape_and_dtype(gen: SplitGenerator) -> None:
    with torch.no_grad():
        x = gen(_z(gen, 2))
    assert x.shape == (2, 3, gen.resolution, gen.resolution)
    assert x.dtype == torch.float32
    assert torch.isfinite(x).all()


def test_split_composition_at_every_point(gen: SplitGenerator) -> None:
    z = _z(gen, 2, seed=1)
    points = gen.split_points
    assert [p.index for p in points] == list(range(len(points)))
    assert len({p.name for p in points}) == len(points), "split point names must be unique"
    with torch.no_grad():
        image = gen(z)
        for p in points:
            inter = gen.g1(z, p.index)
            features = gen.features_of(inter)
            assert tuple(features.shape) == (2, *p.shape), p
            torch.testing.assert_close(gen.g2(inter, p.index), image, rtol=0, atol=1e-5, msg=f"split {p}")
            assert gen.resolve_split(p.name) == p.index == gen.resolve_split(str(p.index))
    assert tuple(points[-1].shape) == (3, gen.resolution, gen.resolution)


def test_determinism(gen: SplitGenerator) -> None:
    assert torch.equal(gen.sample_latents(3, seed=7), gen.sample_latents(3, seed=7))
    assert not torch.equal(gen.sample_latents(3, seed=7), gen.sample_latents(3, seed=8))
    per_row = gen.sample_latents(2, seed=[5, 6])
    assert torch.equal(per_row[1], gen.sample_latents(1, seed=[6])[0])
    z = _z(gen, 2)
    with torch.no_grad():
        assert torch.equal(gen(z), gen(z.clone()))


def test_forward_mutates_nothing(gen: SplitGenerator) -> None:
    before = {k: v.detach().clone() for k, v in gen.state_dict().items()}
    z = _z(gen, 2, seed=3)
    z_copy = z.clone()
    with torch.no_grad():
        ref = gen(z)
        mid = len(gen.split_points) // 2
        f = gen.g1(z, mid)
        f_copy = gen.features_of(f).clone()
        gen.g2(f, mid)
        assert torch.equal(gen.features_of(f), f_copy), "G2 modified its input feature in place"
        gen.train()
        try:
            assert torch.equal(gen(z), ref), "train mode must not change the output (no batch statistics)"
        finally:
            gen.eval()
    assert torch.equal(z, z_copy)
    after = gen.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(before[k], after[k]) for k in before), \
        [k for k in before if not torch.equal(before[k], after[k])]


def test_batch_independence(gen: SplitGenerator) -> None:
    z = _z(gen, 3, seed=4)
    with torch.no_grad():
        batch = gen(z)
        for i in range(3):
            torch.testing.assert_close(batch[i:i + 1], gen(z[i:i + 1]), rtol=0, atol=1e-5)


def test_gradients_reach_latents_and_features(gen: SplitGenerator) -> None:
    z = _z(gen, 1, seed=5).requires_grad_(True)
    gen(z).square().mean().backward()
    assert z.grad is not None and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    mid = len(gen.split_points) // 2
    with torch.no_grad():
        inter = gen.g1(_z(gen, 1, seed=5), mid)
    f = gen.features_of(inter).detach().requires_grad_(True)
    gen.g2(gen.with_features(inter, f), mid).square().mean().backward()
    assert f.grad is not None and torch.isfinite(f.grad).all() and f.grad.abs().sum() > 0
    gen.zero_grad(set_to_none=True)


def test_resolve_split_rejects_bad_input(gen: SplitGenerator) -> None:
    n = len(gen.split_points)
    for bad in (-1, n, n + 5, str(n)):
        with pytest.raises(ValueError, match=rf"0 … {n - 1}"):
            gen.resolve_split(bad)
    with pytest.raises(ValueError) as e:
        gen.resolve_split("no-such-layer")
    msg = str(e.value)
    assert "no-such-layer" in msg and all(p.name in msg for p in gen.split_points)
    with pytest.raises(ValueError):
        gen.g1(_z(gen, 1), n)
