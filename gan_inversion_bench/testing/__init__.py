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

import copy
import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..generator import SplitGenerator
from ..method import InversionMethod, InversionResult
from ..registry import METHODS
from ..tasks import ActiveTask, Inpaint, activated
from .common import (
    BUDGET,
    DEVICE_ENV,
    _method_class,
    _raises,
    _state,
    _tiny_generator,
    generator_families,
    scratch_folder,
    suite_device,
    tiny_generator,
)
from .generators import (
    GENERATOR_CHECKS,
    check_attributes_and_output,
    check_determinism_and_batches,
    check_forward_mutates_nothing,
    check_generator,
    check_gradients,
    check_resolve_split,
    check_split_composition,
    check_tiny_is_reproducible,
)


def suite_method(method: str | type[InversionMethod], budget: int = BUDGET) -> InversionMethod:
    """The instance the suite checks: the ``"test"`` profile (else ``"quick"``) at ``budget``."""
    cls = _method_class(method)
    m = cls.from_profile("test" if "test" in cls.PROFILES else "quick")
    return m.with_budget(budget) if m.budget_setting is not None else m


@functools.cache
def _cache_dir() -> str:
    return scratch_folder("gib-conformance-")


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


def _invert_inside_a_task(case: MethodCase, method: InversionMethod) -> tuple[InversionResult, list[int], list[int]]:
    """``method`` on the case's targets with a centre hole: the result, the rows of each operator
    lookup (a ReconstructionLoss built on the observations) and of each application of D."""
    task, lookups, applied = Inpaint(), [], []
    active = ActiveTask(task, {})
    observations = []
    for i, target in enumerate(case.targets):
        params = task.params(target, i)
        observations.append(task.observe(target, params))
        active.add(observations[-1], params)
    find = active.operator

    def counted(targets: Tensor) -> Callable[[Tensor], Tensor]:
        lookups.append(targets.shape[0])
        degrade = find(targets)

        def apply(x: Tensor) -> Tensor:
            applied.append(x.shape[0])
            return degrade(x)
        return apply

    active.operator = counted  # type: ignore[method-assign]
    with activated(active):
        return method.invert(case.generator, torch.stack(observations), seeds=[1, 2]), lookups, applied


def check_task_operator_reaches_the_loss(case: MethodCase) -> None:
    """Inside a restoration task (a centre hole) a method tagged ``supports_tasks`` builds its
    ReconstructionLoss on the observations it was given and applies the task's operator D through
    it (in its reference execution too, if it has one); the result is finite."""
    if not case.method.get_tags().supports_tasks:
        return
    reference = case.method.reference_execution()
    for how, m in [("", case.method)] + ([(" (reference execution)", reference)] if reference else []):
        result, lookups, applied = _invert_inside_a_task(case, m)
        assert lookups, (f"{case.label}{how}: inside a task the method never built a ReconstructionLoss on its "
                         f"targets, so the task's degradation would not reach its loss; compare through "
                         f"gan_inversion_bench.losses.ReconstructionLoss, or tag supports_tasks=False")
        assert applied, (f"{case.label}{how}: inside a task the method built a ReconstructionLoss but never "
                         f"evaluated it, so its images were compared with the observations without D")
        assert torch.isfinite(result.reconstructions).all(), f"{case.label}{how}: non-finite reconstructions"


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
           "check_attributes_and_output", "check_bad_targets_refused", "check_batch_equals_alone", "check_contract",
           "check_determinism_and_batches", "check_forward_mutates_nothing", "check_generator", "check_gradients",
           "check_improves_in_domain", "check_method", "check_prepare_and_split", "check_resolve_split",
           "check_result_and_no_mutation", "check_seeds", "check_split_composition",
           "check_task_operator_reaches_the_loss", "check_tiny_is_reproducible", "generator_families", "method_case",
           "parametrize_with_checks", "scratch_folder", "suite_device", "suite_method", "tiny_generator",
           "unsupported_reason"]
