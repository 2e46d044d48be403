"""Per-image class conditions of the class-conditional generators (BigGAN-deep, omniart eye DCGAN).

References are independent instances built for one class (``class_index`` / ``colour``) with the
same weights; every check uses the tiny configurations.
"""
from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator

import pytest
import torch
import torch.nn.functional as F

from gan_inversion_bench.generator import (
    SplitGenerator,
    conditioned,
    describe_condition,
    frozen_copy,
    validate_conditions,
)
from gan_inversion_bench.generators.biggan import BigGANDeepGenerator
from gan_inversion_bench.generators.omniart import OmniartEyeDCGAN
from gan_inversion_bench.imagesets import (
    CLASS_SEED_OFFSET,
    PHOTOS,
    ImageItem,
    ImageSetError,
    load_image_set,
    stack_conditions,
)
from gan_inversion_bench.registry import GENERATORS

CONDITIONAL = ["biggan-deep", "dcgan-omniart-eyes128"]
UNCONDITIONAL = ["dcgan-digiface64", "pggan-tiny"]
_CACHE: dict[str, SplitGenerator] = {}


def tiny(name: str) -> SplitGenerator:
    if name not in _CACHE:
        _CACHE[name] = GENERATORS.create(name, tiny=True)
    g = _CACHE[name]
    g.set_conditions(None)  # every test starts from the default class
    return g


def with_class(g: SplitGenerator, k: int) -> SplitGenerator:
    """An independent instance of ``g``'s architecture built for class ``k``, with ``g``'s weights."""
    if isinstance(g, BigGANDeepGenerator):
        ref: SplitGenerator = BigGANDeepGenerator(g.config, class_index=k, truncation=g.truncation)
    elif isinstance(g, OmniartEyeDCGAN):
        ref = OmniartEyeDCGAN(colour=k, ngf=g.ngf)
    else:
        raise AssertionError(type(g))
    ref.load_state_dict(g.state_dict())
    return ref.eval()


def one_hot(classes: list[int], dim: int) -> torch.Tensor:
    return F.one_hot(torch.tensor(classes), dim).float()


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """The tiny networks are fastest single-threaded (intra-op threads cost more than they save)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(params=CONDITIONAL)
def gen(request: pytest.FixtureRequest) -> SplitGenerator:
    return tiny(request.param)


def close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


# ---- semantics ---------------------------------------------------------------------------------------
def test_condition_dim_and_default(gen: SplitGenerator) -> None:
    expected = 10 if isinstance(gen, BigGANDeepGenerator) else 8  # tiny BigGAN: 10 classes
    assert gen.condition_dim == expected
    default = gen.default_condition()
    assert default is not None and default.shape == (expected,) and default.sum() == 1
    assert gen.conditions is None
    for name in UNCONDITIONAL:
        g = tiny(name)
        assert g.condition_dim == 0 and g.default_condition() is None and g.conditions is None
        assert g.sample_conditions(3, seed=0) is None


@torch.no_grad()
def test_one_hot_rows_match_an_instance_built_for_that_class(gen: SplitGenerator) -> None:
    classes = [1, 5, 1, 0]
    z = gen.sample_latents(4, seed=11)
    with conditioned(gen, one_hot(classes, gen.condition_dim)):
        mixed = gen(z)
    for i, k in enumerate(classes):
        close(mixed[i:i + 1], with_class(gen, k)(z[i:i + 1]))
    assert not torch.allclose(mixed[0], with_class(gen, 5)(z[:1])[0], atol=1e-3)  # the class matters


@torch.no_grad()
def test_mixed_batch_equals_each_image_alone(gen: SplitGenerator) -> None:
    c = gen.sample_conditions(3, seed=2)
    assert c is not None
    z = gen.sample_latents(3, seed=4)
    with conditioned(gen, c):
        batch = gen(z)
    for i in range(3):
        with conditioned(gen, c[i:i + 1]):
            close(batch[i:i + 1], gen(z[i:i + 1]))


@torch.no_grad()
def test_default_class_as_conditions_is_bit_identical(gen: SplitGenerator) -> None:
    z = gen.sample_latents(3, seed=5)
    ref = gen(z)
    default = gen.default_condition()
    assert default is not None
    with conditioned(gen, default.expand(3, -1)):
        assert torch.equal(gen(z), ref)


@torch.no_grad()
def test_image_major_repetition(gen: SplitGenerator) -> None:
    b, n = 2, 3
    c = one_hot([3, 6], gen.condition_dim)
    z = gen.sample_latents(b * n, seed=8)  # row b·N + n is code n of image b
    with conditioned(gen, c):
        shared = gen(z)
        inter = gen.g1(z, 1)
    with conditioned(gen, c.repeat_interleave(n, dim=0)):  # one condition per row, explicitly
        explicit = gen(z)
    assert torch.equal(shared, explicit)
    for row in range(b * n):
        close(shared[row:row + 1], with_class(gen, [3, 6][row // n])(z[row:row + 1]))
    if isinstance(gen, BigGANDeepGenerator):  # the class travels to G2 in the context
        emb = inter.context["cond"][:, gen.latent_dim:]
        close(emb, gen.embeddings.weight.t()[[3, 3, 3, 6, 6, 6]])


@torch.no_grad()
def test_split_composition_with_conditions(gen: SplitGenerator) -> None:
    c = gen.sample_conditions(2, seed=9)
    z = gen.sample_latents(4, seed=10)  # 2 images × 2 codes
    with conditioned(gen, c):
        image = gen(z)
        for p in gen.split_points:
            close(gen.g2(gen.g1(z, p.index), p.index), image)


def test_split_points_ignore_conditions(gen: SplitGenerator) -> None:
    fresh = copy.deepcopy(gen)
    fresh.__dict__.pop("_split_points_cache", None)
    fresh.set_conditions(one_hot([0, 1, 2], gen.condition_dim))  # 3 images; the dry run uses 1 row
    assert [p.shape for p in fresh.split_points] == [p.shape for p in gen.split_points]
    assert fresh.conditions is not None and fresh.conditions.shape[0] == 3


# ---- soft vectors --------------------------------------------------------------------------------------
@torch.no_grad()
def test_biggan_embedding_is_linear_in_the_class_vector() -> None:
    g = tiny("biggan-deep")
    assert isinstance(g, BigGANDeepGenerator)
    w = g.embeddings.weight  # [z_dim, num_classes]
    gen = torch.Generator().manual_seed(0)
    c1 = torch.softmax(torch.randn(2, 10, generator=gen), dim=1)
    c2 = one_hot([4, 7], 10)
    lam = 0.3
    embs = []
    for c in (c1, c2, lam * c1 + (1 - lam) * c2):
        with conditioned(g, c):
            embs.append(g.class_embedding(2))
            close(g.g1(g.sample_latents(2), 0).features[:, g.latent_dim:], embs[-1])  # what the network gets
    close(embs[0], c1 @ w.t())
    assert torch.equal(embs[1], w.t()[[4, 7]])  # one-hot: exactly the class column
    close(embs[2], lam * embs[0] + (1 - lam) * embs[1])
    half = torch.zeros(1, 10)
    half[0, [2, 5]] = 0.5
    with conditioned(g, half):
        close(g.class_embedding(1)[0], (w[:, 2] + w[:, 5]) / 2)


@torch.no_grad()
def test_omniart_soft_vector_is_the_input_block() -> None:
    g = tiny("dcgan-omniart-eyes128")
    c = torch.tensor([[0.25, 0, 0, 0.75, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 1, 0]])
    z = g.sample_latents(2, seed=1)
    with conditioned(g, c):
        x = g.latent_to_input(z)
    assert torch.equal(x[:, g.latent_dim:, 0, 0], c)
    assert torch.equal(x[:, :g.latent_dim, 0, 0], z)


# ---- copies, reset, devices -----------------------------------------------------------------------------
@torch.no_grad()
def test_deepcopy_keeps_conditions_and_none_restores_default(gen: SplitGenerator) -> None:
    z = gen.sample_latents(2, seed=3)
    before = gen(z)
    described = json.dumps(gen.describe(), sort_keys=True)
    c = one_hot([2, 4], gen.condition_dim)
    gen.set_conditions(c)
    try:
        assert json.dumps(gen.describe(), sort_keys=True) == described  # per-batch state is not described
        conditioned_image = gen(z)
        for copied in (copy.deepcopy(gen), frozen_copy(gen)):
            assert copied.conditions is not None and torch.equal(copied.conditions, c)
            assert torch.equal(copied(z), conditioned_image)
        assert "_conditions" in dict(gen.named_buffers())  # moved by .to(device)
        assert not any("condition" in k for k in gen.state_dict())  # never saved
        as_double = copy.deepcopy(gen).double()
        assert as_double.conditions is not None and as_double.conditions.dtype == torch.float64
        close(as_double(z.double()).float(), conditioned_image)
    finally:
        gen.set_conditions(None)
    assert gen.conditions is None
    assert torch.equal(gen(z), before)


def test_conditioned_restores_previous(gen: SplitGenerator) -> None:
    outer = one_hot([1], gen.condition_dim)
    with conditioned(gen, outer):
        with conditioned(gen, one_hot([2, 3], gen.condition_dim)):
            assert gen.conditions is not None and gen.conditions.shape[0] == 2
        assert gen.conditions is not None and torch.equal(gen.conditions, outer)
        with pytest.raises(RuntimeError), conditioned(gen, None):
            assert gen.conditions is None
            raise RuntimeError("boom")
        assert gen.conditions is not None and torch.equal(gen.conditions, outer)
    assert gen.conditions is None


def test_conditions_are_stored_as_float32_copies(gen: SplitGenerator) -> None:
    c = F.one_hot(torch.tensor([1, 0]), gen.condition_dim)  # int64 one-hot is accepted
    with conditioned(gen, c):
        stored = gen.conditions
        assert stored is not None and stored.dtype == torch.float32 and torch.equal(stored, c.float())
    soft = torch.full((1, gen.condition_dim), 1 / gen.condition_dim, requires_grad=True)
    with conditioned(gen, soft):
        stored = gen.conditions
        assert stored is not None and not stored.requires_grad
        copy.deepcopy(gen)  # a detached buffer deep-copies


# ---- bad inputs ------------------------------------------------------------------------------------------
BAD: list[tuple[Callable[[int], object], type[Exception], str]] = [
    (lambda d: torch.ones(2, d + 1) / (d + 1), ValueError, r"shape \[B, \d+\].*got shape \[2, \d+\]"),
    (lambda d: torch.ones(d) / d, ValueError, r"got shape \[\d+\]"),
    (lambda d: torch.zeros(0, d), ValueError, r"B >= 1"),
    (lambda d: torch.stack([torch.eye(d)[0], 1.5 * torch.eye(d)[0] - 0.5 * torch.eye(d)[1]]), ValueError,
     r"non-negative.*found negative entries in rows 1 \(minimum -0\.5\)"),
    (lambda d: torch.eye(d)[:3] * 0.5, ValueError, r"sum to 1.*rows 0, 1, 2.*sums to 0\.5"),
    (lambda d: torch.full((1, d), float("nan")), ValueError, r"finite"),
    (lambda d: [[1.0] + [0.0] * (d - 1)], TypeError, r"torch\.Tensor.*list"),
    (lambda d: torch.eye(d, dtype=torch.bool)[:1], TypeError, r"dtype torch\.bool"),
]


@pytest.mark.parametrize("bad,exc,match", BAD)
def test_bad_conditions_are_rejected(gen: SplitGenerator, bad: Callable[[int], object], exc: type[Exception],
                                     match: str) -> None:
    with pytest.raises(exc, match=match):
        gen.set_conditions(bad(gen.condition_dim))  # type: ignore[arg-type]
    assert gen.conditions is None  # nothing half-set


def test_rows_not_a_multiple_of_the_images(gen: SplitGenerator) -> None:
    with conditioned(gen, one_hot([0, 1], gen.condition_dim)):
        for split in (0, 2):
            with pytest.raises(ValueError, match=r"2 images.*3 latent rows.*image-major.*b·N \+ n"):
                gen.g1(gen.sample_latents(3), split)
        with pytest.raises(ValueError, match="not a multiple of 2"):
            gen(gen.sample_latents(1))


@pytest.mark.parametrize("name", UNCONDITIONAL)
def test_unconditional_generators_refuse_conditions(name: str) -> None:
    g = tiny(name)
    described = g.describe()
    with pytest.raises(ValueError, match=r"unconditional \(condition_dim = 0\): expected conditions=None"):
        g.set_conditions(torch.ones(1, 1))
    g.set_conditions(None)  # always fine
    assert g.conditions is None and g.describe() == described
    assert set(described) == {"name", "class", "latent_dim", "resolution", "weights", "licence"}


def test_validate_and_describe_condition() -> None:
    soft = torch.tensor([[0.2, 0.8, 0.0]])
    assert torch.equal(validate_conditions(soft, 3), soft)
    assert describe_condition(torch.tensor([0.0, 1.0, 0.0])) == {"class": 1}
    assert describe_condition(soft[0]) == {"class": 1, "weights": {"0": pytest.approx(0.2), "1": pytest.approx(0.8)}}
    json.dumps(describe_condition(soft[0]))
    with pytest.raises(ValueError, match="one class vector"):
        describe_condition(soft)


# ---- sampling and the generated-mixed image set ------------------------------------------------------
def sampled(g: SplitGenerator, n: int, seed: int | list[int]) -> torch.Tensor:
    c = g.sample_conditions(n, seed=seed)
    assert c is not None
    return c


def test_sample_conditions(gen: SplitGenerator) -> None:
    c = sampled(gen, 400, 1)
    assert c.shape == (400, gen.condition_dim) and c.dtype == torch.float32
    assert torch.equal(c.sum(dim=1), torch.ones(400)) and set(c.flatten().tolist()) == {0.0, 1.0}
    assert torch.equal(c, sampled(gen, 400, 1))
    assert not torch.equal(c, sampled(gen, 400, 2))
    assert (c.sum(dim=0) > 0).all()  # every class drawn (uniform)
    assert torch.equal(sampled(gen, 3, [7, 8, 9])[2], sampled(gen, 1, [9])[0])
    with pytest.raises(ValueError, match="2 seeds for 3"):
        gen.sample_conditions(3, seed=[1, 2])


@torch.no_grad()
def test_generated_mixed_image_set(gen: SplitGenerator) -> None:
    a = load_image_set("generated-mixed", gen, n=6, seed=3)
    b = load_image_set("generated-mixed", gen, n=6, seed=3)
    assert a.spec == "generated-mixed(n=6,seed=3)"
    classes = [it.meta["class"] for it in a.items]
    assert classes == [it.meta["class"] for it in b.items] and len(set(classes)) > 1
    assert gen.conditions is None  # the set leaves the generator as it found it
    for x, y in zip(a.items, b.items, strict=True):
        assert x.condition is not None and y.condition is not None
        assert torch.equal(x.image, y.image) and torch.equal(x.condition, y.condition)
        assert x.condition.shape == (gen.condition_dim,) and int(x.condition.argmax()) == x.meta["class"]
        assert x.meta["class_seed"] == CLASS_SEED_OFFSET + x.meta["latent_seed"]
        assert x.latent is not None
        with conditioned(gen, x.condition[None]):
            close(gen(x.latent[None]).clamp(-1, 1)[0], x.image)
        close(with_class(gen, x.meta["class"])(x.latent[None]).clamp(-1, 1)[0], x.image)
    first = load_image_set("generated-mixed", gen, n=2, seed=3)  # image i depends on its own seeds only
    assert [it.meta["class"] for it in first.items] == classes[:2]
    other = load_image_set("generated-mixed", gen, n=6, seed=4)
    assert [it.meta["class"] for it in other.items] != classes
    plain = load_image_set("generated", gen, n=2, seed=3)
    assert all(it.condition is None and "class" not in it.meta for it in plain.items)
    assert plain.items[0].latent is not None and a.items[0].latent is not None
    assert torch.equal(plain.items[0].latent, a.items[0].latent)


def test_generated_mixed_with_photos_and_stacking(gen: SplitGenerator) -> None:
    s = load_image_set("generated-mixed+photos", gen, n=2, seed=0)
    assert s.spec == "generated-mixed(n=2,seed=0)+photos" and len(s.items) == 2 + len(PHOTOS)
    assert all(it.condition is None for it in s.items[2:])
    batch = [s.items[0], s.items[2], s.items[1]]
    stacked = stack_conditions(gen, batch)
    default, first, second = gen.default_condition(), s.items[0].condition, s.items[1].condition
    assert stacked is not None and default is not None and first is not None and second is not None
    assert torch.equal(stacked, torch.stack([first, default, second]))
    assert stack_conditions(gen, s.items[2:]) is None  # photos only: leave the default path


def test_generated_mixed_needs_a_conditional_generator() -> None:
    g = tiny("pggan-tiny")
    with pytest.raises(ImageSetError, match="generated-mixed needs a class-conditional generator"):
        load_image_set("generated-mixed", g, n=2)
    with pytest.raises(ImageSetError, match="generated-mixed"):
        load_image_set("generated-mixed+", g, n=2)
    with pytest.raises(ImageSetError, match="unconditional"):
        stack_conditions(g, [ImageItem("x", torch.zeros(3, 4, 4), condition=torch.ones(1))])
    assert stack_conditions(g, [ImageItem("x", torch.zeros(3, 4, 4))]) is None
