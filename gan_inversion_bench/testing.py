"""Conformance checks for inversion methods and generators, importable by plug-in packages.

In the spirit of scikit-learn's ``check_estimator`` / ``parametrize_with_checks``: a new method
or generator gets every check of the contract for free, and a package that registers its own
through the entry points runs the same checks in its own test suite::

    from gan_inversion_bench.testing import check_generator, check_method, parametrize_with_checks

    check_method(MyMethod)                    # every check, on every registered generator family
    check_generator("my-gan")                 # every generator check on GENERATORS.create("my-gan", tiny=True)

    @parametrize_with_checks(methods=["my-method"], generators=["pggan-tiny", "my-gan"])
    def test_conformance(check):              # one pytest item per (method, generator, check)
        check()

Methods are checked on the tiny configuration of every registered generator family
(``GENERATORS.create(name, tiny=True)``) with a short budget: the method's ``"test"`` profile
if it has one, else ``"quick"``, with the budget set to :data:`BUDGET` through ``with_budget``.
The checks respect the method's tags (:class:`~gan_inversion_bench.method.MethodTags`): a
``deterministic`` method must give the same result for different seeds (others: different
results); ``batch_independent`` and ``improves_in_domain`` are checked only when declared;
``needs_prepare`` must refuse ``invert`` before ``prepare``. A failed check raises
``AssertionError`` whose message names the method, the generator and the check.

The checks run on the CPU unless the environment variable ``GIB_TEST_DEVICE`` names another
device (``cuda``, ``cuda:1``, ``auto``; the values ``--device`` takes), so the same suite checks
the GPU code paths (for example that image i of a batch gets its result alone) on a GPU::

    GIB_TEST_DEVICE=cuda pytest tests/test_method_conformance.py
"""
from __future__ import annotations

import contextlib
import copy
import functools
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .devices import resolve_device
from .generator import SplitGenerator
from .method import InversionMethod, InversionResult
from .registry import GENERATORS, METHODS
from .tasks import ActiveTask, Inpaint, activated

#: budget (iterations) of every inversion in the method checks
BUDGET = 8
#: environment variable naming the device the checks run on (default: the CPU)
DEVICE_ENV = "GIB_TEST_DEVICE"


# ---- small helpers -------------------------------------------------------------------------------
@contextlib.contextmanager
def _raises(kinds: type[BaseException] | tuple[type[BaseException], ...], match: str, what: str) -> Iterator[None]:
    """Like ``pytest.raises`` (without pytest): the block must raise ``kinds`` with ``match`` in the message."""
    try:
        yield
    except kinds as e:
        if not re.search(match, str(e)):
            raise AssertionError(f"{what}: raised {type(e).__name__} but the message {str(e)!r} does not match "
                                 f"{match!r}") from e
        return
    raise AssertionError(f"{what}: expected {kinds} matching {match!r}, nothing was raised")


def _method_class(method: str | type[InversionMethod] | InversionMethod) -> type[InversionMethod]:
    if isinstance(method, str):
        cls: type[InversionMethod] = METHODS.get(method)
        return cls
    return method if isinstance(method, type) else type(method)


def suite_device() -> torch.device:
    """The device the checks run on: ``$GIB_TEST_DEVICE`` (cpu, cuda, cuda:N, auto), else the CPU.
    A device this machine does not have is refused with a message naming the variable."""
    name = os.environ.get(DEVICE_ENV, "").strip() or "cpu"
    try:
        return resolve_device(name)
    except ValueError as e:
        raise RuntimeError(f"{DEVICE_ENV}={name!r}: {e}; unset {DEVICE_ENV} to run the checks on the CPU") from None


def tiny_generator(name: str) -> SplitGenerator:
    """``GENERATORS.create(name, tiny=True)`` in eval mode on :func:`suite_device`, built once per
    process and device."""
    return _tiny_generator(name, str(suite_device()))


@functools.cache
def _tiny_generator(name: str, device: str) -> SplitGenerator:
    torch.manual_seed(0)
    generator: SplitGenerator = GENERATORS.create(name, tiny=True)
    return generator.to(device).eval()


def generator_families() -> list[str]:
    """Every registered generator name (built-in and entry points)."""
    return GENERATORS.names()


def suite_method(method: str | type[InversionMethod], budget: int = BUDGET) -> InversionMethod:
    """The instance the suite checks: the ``"test"`` profile (else ``"quick"``) at ``budget``."""
    cls = _method_class(method)
    m = cls.from_profile("test" if "test" in cls.PROFILES else "quick")
    return m.with_budget(budget) if m.budget_setting is not None else m


@functools.cache
def _cache_dir() -> str:
    return tempfile.mkdtemp(prefix="gib-conformance-")


@dataclass
class MethodCase:
    """A method prepared on a tiny generator, with two in-domain targets."""

    method: InversionMethod
    generator: SplitGenerator
    targets: Tensor

    @property
    def label(self) -> str:
        return f"{self.method.name} on {self.generator.name}"


def method_case(method: str | type[InversionMethod], generator: str, budget: int = BUDGET) -> MethodCase:
    """The prepared method and targets of one (method, generator) pair on :func:`suite_device`,
    built once per process and device."""
    # mypy takes a class for unhashable (it checks the unbound instance __hash__): a false positive
    return _method_case(method, generator, budget, str(suite_device()))  # type: ignore[arg-type]


@functools.cache
def _method_case(method: str | type[InversionMethod], generator: str, budget: int, device: str) -> MethodCase:
    G = _tiny_generator(generator, device)
    m = suite_method(method, budget)
    m.prepare(G, seed=0, cache_dir=_cache_dir())
    with torch.no_grad():
        targets = G(G.sample_latents(2, seed=[101, 202])).clamp(-1, 1)
    return MethodCase(m, G, targets)


def _state(module: torch.nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


# ---- method checks on a generator ---------------------------------------------------------------------
def check_result_and_no_mutation(case: MethodCase) -> None:
    """Shapes, finite values, the declared budget; the caller's generator and targets untouched."""
    G, targets, m = case.generator, case.targets, case.method
    before, before_targets = _state(G), targets.clone()
    flags, training = [p.requires_grad for p in G.parameters()], G.training
    result = m.invert(G, targets, seeds=[1, 2])
    assert isinstance(result, InversionResult), f"{case.label}: invert returned {type(result).__name__}"
    b, r = targets.shape[0], G.resolution
    assert tuple(result.reconstructions.shape) == (b, 3, r, r), \
        f"{case.label}: reconstructions {list(result.reconstructions.shape)}, expected {[b, 3, r, r]}"
    assert torch.isfinite(result.reconstructions).all(), f"{case.label}: non-finite reconstructions"
    assert result.loss_history.ndim == 2 and result.loss_history.shape[1] == b, \
        f"{case.label}: loss_history must be [T, B], got {list(result.loss_history.shape)}"
    if m.budget is not None:
        assert result.iterations == m.budget, f"{case.label}: ran {result.iterations}, budget {m.budget}"
    for name, t in result.latents.items():
        assert t.shape[0] == b, f"{case.label}: latent {name!r} must have the batch as leading dimension"
    assert torch.equal(targets, before_targets), f"{case.label}: invert modified the targets"
    after = _state(G)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert after.keys() == before.keys() and not changed, f"{case.label}: invert mutated the generator: {changed}"
    assert [p.requires_grad for p in G.parameters()] == flags and G.training == training, \
        f"{case.label}: invert changed the generator's requires_grad flags or train/eval mode"


def check_seeds(case: MethodCase) -> None:
    """Same seeds, same result; other seeds: the same result if the method is tagged
    ``deterministic``, else a different one."""
    m, G, t = case.method, case.generator, case.targets
    a, b = m.invert(G, t, seeds=[5, 6]), m.invert(G, t, seeds=[5, 6])
    assert torch.equal(a.reconstructions, b.reconstructions) and torch.equal(a.loss_history, b.loss_history), \
        f"{case.label}: the same seeds gave different results"
    c = m.invert(G, t, seeds=[7, 8])
    same = torch.equal(a.reconstructions, c.reconstructions)
    if m.get_tags().deterministic:
        assert same, f"{case.label}: tagged deterministic, but other seeds gave another result"
    else:
        assert not same, (f"{case.label}: other seeds gave the same result; if the method does not depend on the "
                          f"seed, tag it deterministic (MethodTags(deterministic=True))")


def check_batch_equals_alone(case: MethodCase) -> None:
    """Image i of a batch gets the result it gets alone (if tagged ``batch_independent``)."""
    m, G, t = case.method, case.generator, case.targets
    if not m.get_tags().batch_independent:
        return
    joint = m.invert(G, t, seeds=[3, 4])
    for i, s in enumerate([3, 4]):
        alone = m.invert(G, t[i:i + 1], seeds=[s])
        try:
            torch.testing.assert_close(joint.loss_history[:, i], alone.loss_history[:, 0], rtol=1e-3, atol=1e-5)
            torch.testing.assert_close(joint.reconstructions[i], alone.reconstructions[0], rtol=1e-3, atol=2e-3)
        except AssertionError as e:
            raise AssertionError(f"{case.label}: image {i} of a batch differs from the image alone "
                                 f"(tag batch_independent=False if that is by design): {e}") from None


def check_improves_in_domain(case: MethodCase) -> None:
    """The loss falls on targets the generator produced (if tagged ``improves_in_domain``)."""
    m = case.method
    if not m.get_tags().improves_in_domain:
        return
    history = m.invert(case.generator, case.targets, seeds=[9, 10]).loss_history
    assert history.shape[0] >= 2, f"{case.label}: tagged improves_in_domain but recorded {history.shape[0]} losses"
    first, last = history[0], history[-1]
    assert (last < first).all(), f"{case.label}: the loss did not improve: {first.tolist()} -> {last.tolist()}"


def check_bad_targets_refused(case: MethodCase) -> None:
    """Targets of the wrong shape or outside [-1, 1] get a ValueError that says what was expected."""
    m, G, r = case.method, case.generator, case.generator.resolution
    with _raises(ValueError, r"\[B, 3, ", f"{case.label}: targets of the wrong size"):
        m.invert(G, torch.zeros(1, 3, r + 1, r, device=G.device), seeds=0)
    with _raises(ValueError, r"\[-1, 1\]", f"{case.label}: targets outside [-1, 1]"):
        m.invert(G, torch.full((1, 3, r, r), 3.0, device=G.device), seeds=0)


def check_prepare_and_split(case: MethodCase) -> None:
    """``needs_prepare``: an unprepared copy refuses ``invert`` and names ``prepare``; ``uses_split``:
    ``resolved_split`` is a split point of the generator (else None)."""
    m, G = case.method, case.generator
    tags = m.get_tags()
    split = m.resolved_split(G)
    if tags.uses_split:
        assert isinstance(split, int) and 0 <= split < len(G.split_points), \
            f"{case.label}: tagged uses_split but resolved_split gave {split!r}"
    else:
        assert split is None, f"{case.label}: resolved_split gave {split!r}; tag the method uses_split"
    if tags.needs_prepare:
        with _raises((ValueError, RuntimeError), "prepare", f"{case.label}: invert before prepare"):
            m.clone().invert(G, case.targets, seeds=0)


def check_task_operator_reaches_the_loss(case: MethodCase) -> None:
    """Inside a restoration task (a centre hole) a method tagged ``supports_tasks`` builds its
    ReconstructionLoss on the observations it was given, so the task's operator reaches its loss;
    the result is finite and of the targets' shape."""
    m = case.method
    if not m.get_tags().supports_tasks:
        return
    task, lookups = Inpaint(), []
    active = ActiveTask(task, {})
    observations = []
    for i, target in enumerate(case.targets):
        params = task.params(target, i)
        observations.append(task.observe(target, params))
        active.add(observations[-1], params)
    find = active.operator

    def counted(targets: Tensor) -> Callable[[Tensor], Tensor]:
        lookups.append(targets.shape[0])
        return find(targets)

    active.operator = counted  # type: ignore[method-assign]
    with activated(active):
        result = m.invert(case.generator, torch.stack(observations), seeds=[1, 2])
    assert lookups, (f"{case.label}: inside a task the method never built a ReconstructionLoss on its targets, so the "
                     f"task's degradation would not reach its loss; compare through "
                     f"gan_inversion_bench.losses.ReconstructionLoss, or tag supports_tasks=False")
    assert torch.isfinite(result.reconstructions).all(), f"{case.label}: non-finite reconstructions under a task"


METHOD_CHECKS: dict[str, Callable[[MethodCase], None]] = {
    "result_and_no_mutation": check_result_and_no_mutation,
    "seeds": check_seeds,
    "batch_equals_alone": check_batch_equals_alone,
    "improves_in_domain": check_improves_in_domain,
    "bad_targets_refused": check_bad_targets_refused,
    "prepare_and_split": check_prepare_and_split,
    "task_operator": check_task_operator_reaches_the_loss,
}


# ---- method checks without a generator -----------------------------------------------------------
def check_contract(method: str | type[InversionMethod]) -> None:
    """The class-level contract: name, profiles, settings round trip, budget, clone, refusals."""
    cls = _method_class(method)
    label = cls.__name__
    assert cls.name and isinstance(cls.version, str), f"{label}: set name and version"
    assert {"paper", "quick"} <= set(cls.PROFILES), f"{label}: PROFILES needs 'paper' and 'quick'"
    m = suite_method(cls)
    assert type(m)(**copy.deepcopy(m.get_settings())).get_settings() == m.get_settings(), \
        f"{label}: rebuilding from get_settings() changed the settings"
    with _raises(TypeError, "unknown setting", f"{label}: an unknown setting"):
        cls(no_such_setting=1)
    with _raises(ValueError, "profile", f"{label}: an unknown profile"):
        cls.from_profile("no-such-profile")
    clone = m.clone()
    assert clone.get_settings() == m.get_settings() and clone is not m, f"{label}: clone() must copy the settings"
    if cls.budget_setting is not None:
        assert m.with_budget(3).budget == 3 and m.budget == BUDGET, f"{label}: with_budget must return a copy"
        for bad in (0, -3):
            with _raises(ValueError, cls.budget_setting, f"{label}: budget {bad}"):
                m.with_budget(bad)
    else:
        with _raises(ValueError, "no compute budget", f"{label}: with_budget without a budget setting"):
            m.with_budget(3)


def check_method(method: str | type[InversionMethod], generators: Iterable[str] | None = None,
                 budget: int = BUDGET) -> None:
    """Run every method check on every generator in ``generators`` (default: every registered one),
    except those the method declares it cannot run on (:meth:`InversionMethod.unsupported`)."""
    check_contract(method)
    for g in (generator_families() if generators is None else generators):
        if unsupported_reason(method, g) is not None:
            continue
        case = method_case(method, g, budget)
        for fn in METHOD_CHECKS.values():
            fn(case)


# ---- generator checks ----------------------------------------------------------------------------------
def _z(g: SplitGenerator, n: int, seed: int = 0) -> Tensor:
    return g.sample_latents(n, seed=seed)


def check_attributes_and_output(g: SplitGenerator) -> None:
    """A SplitGenerator in eval mode with int sizes, a registry name, JSON-able describe(); float32
    images ``[B, 3, R, R]``."""
    import json

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


# ---- pytest parametrisation ----------------------------------------------------------------------------
@dataclass(frozen=True)
class CheckCall:
    """One check bound to its subject, built lazily when called (collection stays cheap)."""

    id: str
    run: Callable[[], None]

    def __call__(self) -> None:
        self.run()


def all_checks(methods: Iterable[str] | None = None, generators: Iterable[str] | None = None, *,
               generator_checks: bool = True) -> list[CheckCall]:
    """Every check as a :class:`CheckCall`: generator checks per generator (unless
    ``generator_checks`` is False), the contract per method, and every method check per
    (method, generator)."""
    gens = list(generator_families() if generators is None else generators)
    names = list(METHODS.names() if methods is None else methods)
    calls = []
    if generator_checks:
        calls += [CheckCall(f"{g}-reproducible", functools.partial(check_tiny_is_reproducible, g)) for g in gens]
        calls += [CheckCall(f"{g}-{c}", _bind_generator(fn, g)) for g in gens for c, fn in GENERATOR_CHECKS.items()]
    calls += [CheckCall(f"{m}-contract", functools.partial(check_contract, m)) for m in names]
    calls += [CheckCall(f"{m}-{g}-{c}", _bind_method(fn, m, g)) for m in names for g in gens
              for c, fn in METHOD_CHECKS.items()]
    return calls


def _bind_generator(fn: Callable[[SplitGenerator], None], name: str) -> Callable[[], None]:
    return lambda: fn(tiny_generator(name))


def unsupported_reason(method: str | type[InversionMethod], generator: str) -> str | None:
    """Why ``method`` (its suite instance) cannot run on the tiny ``generator``, or None."""
    return suite_method(method).unsupported(tiny_generator(generator))


def _bind_method(fn: Callable[[MethodCase], None], method: str, generator: str) -> Callable[[], None]:
    def run() -> None:
        reason = unsupported_reason(method, generator)
        if reason is not None:
            import pytest

            pytest.skip(f"{method} declares it cannot run on {generator}: {reason}")
        fn(method_case(method, generator))

    return run


def parametrize_with_checks(methods: Iterable[str] | None = None, generators: Iterable[str] | None = None, *,
                            generator_checks: bool = True) -> Any:
    """A ``pytest.mark.parametrize("check", ...)`` over :func:`all_checks`, one item per check::

        @parametrize_with_checks(methods=["my-method"])
        def test_conformance(check):
            check()
    """
    import pytest

    calls = all_checks(methods, generators, generator_checks=generator_checks)
    return pytest.mark.parametrize("check", [pytest.param(c, id=c.id) for c in calls])


__all__ = ["BUDGET", "DEVICE_ENV", "GENERATOR_CHECKS", "METHOD_CHECKS", "CheckCall", "MethodCase", "all_checks",
           "check_contract", "check_generator", "check_method", "check_tiny_is_reproducible", "generator_families",
           "method_case", "parametrize_with_checks", "suite_device", "suite_method", "tiny_generator",
           "unsupported_reason"]
