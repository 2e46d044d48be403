"""The ``InversionMethod`` contract: what a method declares and what the harness may rely on.

A method is a class with

* ``name`` and ``version`` (stored with every result);
* ``Settings``: a dataclass of keyword-only hyper-parameters with documented defaults (the
  paper's), validated in ``__post_init__``; ``PROFILES`` maps profile names to overrides;
* ``budget_setting``: the name of its compute-budget setting (or None), changed only through
  :meth:`InversionMethod.with_budget`;
* ``tags`` (:class:`MethodTags`): deterministic, uses a split, trains the generator, needs
  ``prepare``, runs one image at a time, ...: read by the harness and the conformance suite;
* an optional ``prepare(generator, ...)`` stage whose learned state ends in ``_``;
* ``invert(generator, targets, *, seeds, progress) -> InversionResult``;
* optional extras: ``report_artifacts`` (files for the HTML report) and ``commands`` (``gib``
  sub-commands), so the core never imports a method.

``invert`` inverts a batch of targets jointly but independently (unless the method's tags say
otherwise): every image has its own parameters and the loss is the *sum* of per-image losses,
so each image follows the trajectory it would follow alone (``seeds[i]`` alone decides image
i's initialisation). ``invert`` never mutates the caller's generator or targets. Precision,
compilation and FLOP counting are applied by the harness around ``invert``
(:mod:`gan_inversion_bench.precision`, :mod:`gan_inversion_bench.harness.timing`), whatever loop
the method runs. The building blocks the built-in methods share (the optimisation loop, seeded
initialisation, the seeds' per-image execution pattern) are in
:mod:`gan_inversion_bench.method_tools`; ``gan_inversion_bench.testing`` checks the contract.
"""
from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor

from .generator import SplitGenerator

if TYPE_CHECKING:
    from typing_extensions import Self

ProgressFn = Callable[[int, int], None]  # (iteration done, total)

#: the largest magnitude the computation's dtype holds (float32; bf16 has the same range): a larger
#: setting overflows as soon as it meets a tensor (``value cannot be converted to type float``)
FLOAT32_MAX = float(torch.finfo(torch.float32).max)
#: the range of a 64-bit integer (seeds, counts and indices end up in int64 tensors and SQLite)
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def check_setting_ranges(owner: str, settings: dict[str, Any]) -> None:
    """Refuse a setting no computation can hold: a float beyond the float32 range (the
    computation's dtype) or an integer beyond 64 bits, also inside tuples, lists and dicts (NaN
    and inf are left to the method's own checks, which say what the setting must be)."""
    for key, value in settings.items():
        for where, v in _numbers(key, value):
            if isinstance(v, float) and math.isfinite(v) and abs(v) > FLOAT32_MAX:
                raise ValueError(f"{owner}: setting {where} = {v!r} is beyond the float32 range the computation "
                                 f"runs in; expected a magnitude of at most {FLOAT32_MAX:.8g}")
            if isinstance(v, int) and not INT64_MIN <= v <= INT64_MAX:
                raise ValueError(f"{owner}: setting {where} = {v} is beyond the 64-bit integer range; expected "
                                 f"an integer from {INT64_MIN} to {INT64_MAX}")


def _numbers(where: str, value: Any) -> Iterator[tuple[str, int | float]]:
    if isinstance(value, bool):
        return
    if isinstance(value, (int, float)):
        yield where, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _numbers(f"{where}.{k}", v)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _numbers(f"{where}[{i}]", v)


class InversionFailed(RuntimeError):
    """Raised when every image of a batch failed (non-finite loss)."""


@dataclass
class InversionResult:
    """What ``invert`` returns for a batch of ``B`` targets.

    ``reconstructions``: ``[B, 3, H, W]`` raw generator output (unclamped, nominally [-1, 1]).
    ``latents``: the optimised parameters, each with the batch as leading dimension.
    ``loss_history``: ``[T, B]`` per-image loss at every iteration (before the step).
    ``failures``: image index → reason (e.g. a non-finite loss at iteration t); those images'
    reconstructions are from their last finite iterate.
    """

    reconstructions: Tensor
    latents: dict[str, Tensor]
    loss_history: Tensor
    iterations: int
    failures: dict[int, str] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Artifact:
    """A file a method contributes to the HTML report (a figure, a table).

    ``path`` is relative to the run folder (the report refuses anything that resolves outside
    it); ``caption`` is one sentence saying what the file shows.
    """

    path: Path
    caption: str


@dataclass(frozen=True)
class MethodTags:
    """What a method is, declared by the method and read by the harness and the conformance suite
    (in the spirit of scikit-learn's estimator tags), so that neither has to guess.

    ``deterministic``
        The result does not depend on ``seeds`` (zero initialisation, an encoder). The suite then
        checks that different seeds give the *same* result instead of different ones.
    ``uses_split``
        The method composes at an intermediate split point; :meth:`InversionMethod.resolved_split`
        returns it and every record stores it.
    ``trains_generator``
        ``invert`` fine-tunes a private copy of the generator's weights (never the caller's; the
        suite's no-mutation check holds it to that).
    ``needs_prepare``
        :meth:`InversionMethod.prepare` must run (once per generator) before ``invert``.
    ``per_image_execution``
        This instance inverts one image at a time, in fp32 and uncompiled (the seeds' own
        pattern, for speed comparisons): the harness then uses batches of one and ignores
        ``--precision``/``--compile``.
    ``batch_independent``
        Image i of a batch gets the result it gets alone (to float tolerance). The suite checks it.
    ``improves_in_domain``
        A short budget lowers the loss on a target the generator can produce. The suite checks it.
    ``supports_tasks``
        The method compares its images with the targets through
        :class:`~gan_inversion_bench.losses.ReconstructionLoss`, so a restoration task
        (:mod:`gan_inversion_bench.tasks`) can put its degradation operator there. False for a
        method that maps the observation directly (an encoder used alone): the harness then runs
        it only on ``reconstruct``. The suite checks that a method tagged True builds that loss.
    """

    deterministic: bool = False
    uses_split: bool = False
    trains_generator: bool = False
    needs_prepare: bool = False
    per_image_execution: bool = False
    batch_independent: bool = True
    improves_in_domain: bool = True
    supports_tasks: bool = True


class InversionMethod:
    """Base class of every inversion method. Subclasses set the class attributes below and
    implement :meth:`invert`; everything the harness needs beyond that is declared, not guessed.

    Class attributes:

    * ``name``, ``version``: stored with every result.
    * ``Settings``: a dataclass of keyword-only hyper-parameters whose defaults are the paper's,
      validated in ``__post_init__``; ``PROFILES`` maps profile names to overrides (``"paper"``
      reproduces the paper, ``"quick"`` is a short untuned budget, an optional ``"test"`` is what
      the conformance suite runs; ``--profile tuned`` puts ``gib tune``'s settings on ``"quick"``).
    * ``budget_setting``: the name of the setting that sets the compute budget (``"iterations"``,
      ``"steps"``, ...), or ``None`` for a method without one (an encoder's single forward pass).
      The harness changes the budget only through :meth:`with_budget` and reads it through
      :attr:`budget`; no other code assumes any setting name.
    * ``tags``: a :class:`MethodTags` (override :meth:`get_tags` when tags depend on settings).
    * ``commands``: extra ``gib`` sub-commands the method contributes, name → ``"module:attr"`` of
      a click command (e.g. PmSFC's ``gib discover``), loaded only when that command is used.

    Learned state (from :meth:`prepare`) lives in attributes whose names end in ``_``.
    """

    name: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    Settings: ClassVar[type]
    #: profile name → settings overrides; "paper" must reproduce the seeds' defaults
    PROFILES: ClassVar[dict[str, dict[str, Any]]] = {"paper": {}}
    budget_setting: ClassVar[str | None] = "iterations"
    tags: ClassVar[MethodTags] = MethodTags()
    #: part of the default run (``gib run`` without ``-m``): only where its quick budget fits the
    #: default run's few minutes on a CPU; every method still runs when named
    in_default_run: ClassVar[bool] = True
    #: settings added after results were first stored, with their defaults: left out of result
    #: keys while at these values, so older run folders resume without recomputation
    KEY_OMITS_DEFAULTS: ClassVar[dict[str, Any]] = {}
    #: the keys of :meth:`prepared_state` that say what ``prepare`` learned (masks, weights), as
    #: opposed to how its run went (losses, paths); ``None``: every key. A resume whose preparation
    #: ran again (its cache gone, another machine) continues the stored rows where these agree and
    #: is refused where they differ (:mod:`gan_inversion_bench.harness.resume`)
    PREPARED_IDENTITY: ClassVar[tuple[str, ...] | None] = None
    commands: ClassVar[dict[str, str]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        settings: type | None = cls.__dict__.get("Settings") or getattr(cls, "Settings", None)
        if settings is None or not dataclasses.is_dataclass(settings):
            return  # an abstract intermediate class; instantiation fails with a clear message
        fields = {f.name for f in dataclasses.fields(settings)}
        if cls.budget_setting is not None and cls.budget_setting not in fields:
            raise TypeError(f"{cls.__name__}: budget_setting {cls.budget_setting!r} is not a field of "
                            f"{settings.__name__} (fields: {sorted(fields)}); set budget_setting = None for a "
                            f"method without a compute budget")
        if not isinstance(cls.tags, MethodTags):
            raise TypeError(f"{cls.__name__}: tags must be a MethodTags, got {type(cls.tags).__name__}")

    def __init__(self, **settings: Any):
        if not dataclasses.is_dataclass(getattr(self, "Settings", None)):
            raise TypeError(f"{type(self).__name__} must define Settings as a dataclass of its hyper-parameters")
        fields = {f.name for f in dataclasses.fields(self.Settings)}
        unknown = sorted(set(settings) - fields)
        if unknown:
            raise TypeError(f"{self.name}: unknown setting(s) {unknown}; valid settings: {sorted(fields)}")
        check_setting_ranges(self.name, settings)
        self.settings = self.Settings(**settings)

    @classmethod
    def from_profile(cls, profile: str = "paper", **overrides: Any) -> Self:
        if profile not in cls.PROFILES:
            raise ValueError(f"{cls.name}: unknown profile {profile!r}; valid: {sorted(cls.PROFILES)}")
        return cls(**{**cls.PROFILES[profile], **overrides})

    @classmethod
    def setting_names(cls) -> list[str]:
        """The names of the method's settings (the fields of ``Settings``)."""
        return [f.name for f in dataclasses.fields(cls.Settings)]

    def get_settings(self) -> dict[str, Any]:
        return dataclasses.asdict(self.settings)

    def unused_settings(self) -> set[str]:
        """Settings that have no effect under the others (e.g. a noise schedule without noise): left out
        of result keys, so runs that compute the same thing share results (default: none)."""
        return set()

    def get_tags(self) -> MethodTags:
        """This instance's tags (default: the class's ``tags``)."""
        return self.tags

    # ---- copies ------------------------------------------------------------------------------
    def clone(self, **overrides: Any) -> Self:
        """A new, unprepared instance with the same settings except ``overrides`` (validated)."""
        return type(self)(**{**self.get_settings(), **overrides})

    def with_settings(self, **overrides: Any) -> Self:
        """A copy with settings replaced (validated) that keeps what :meth:`prepare` learned. Only
        for settings that do not change what ``prepare`` learns: the budget, the execution mode,
        what :meth:`tuning_space` returns."""
        out = copy.copy(self)
        check_setting_ranges(self.name, overrides)
        out.settings = type(self).Settings(**{**self.get_settings(), **overrides})
        return out

    @property
    def budget(self) -> int | None:
        """The compute budget (the value of ``budget_setting``), or None for a method without one."""
        return None if self.budget_setting is None else getattr(self.settings, self.budget_setting)

    def with_budget(self, n: int) -> Self:
        """A copy with the budget set to ``n`` that keeps the prepared state (the harness's warm-up,
        FLOP count and ``--iterations``)."""
        if self.budget_setting is None:
            raise ValueError(f"{self.name} has no compute budget (budget_setting is None); it cannot run "
                             f"with {n} iterations")
        return self.with_settings(**{self.budget_setting: n})

    def reference_execution(self) -> Self | None:
        """A copy that runs the original code's per-image pattern (for speed comparisons), or None
        if the method has no such mode. Built-in methods switch their ``execution`` setting."""
        return None

    # ---- stages --------------------------------------------------------------------------------
    def unsupported(self, generator: SplitGenerator) -> str | None:
        """Why this method cannot run on ``generator`` (e.g. "needs a style space"), or None when it
        can (the default). The harness skips the method on such a generator with this reason (and
        refuses it when the user named it), and the conformance suite skips it with the reason."""
        return None

    def resolved_split(self, generator: SplitGenerator) -> int | None:
        """The split index this method uses on ``generator`` (None for a method without a split)."""
        return None

    def prepare(self, generator: SplitGenerator, *, seed: int = 0, cache_dir: Any = None,
                progress: ProgressFn | None = None) -> Self:
        """Optional stage run once per generator before ``invert`` (default: nothing)."""
        return self

    def prepared_state(self) -> dict[str, Any]:
        """JSON-able description of what ``prepare`` learned (stored with results)."""
        return {}

    def invert(self, generator: SplitGenerator, targets: Tensor, *, seeds: int | Sequence[int] = 0,
               progress: ProgressFn | None = None) -> InversionResult:
        """Invert ``targets`` ``[B, 3, R, R]`` in [-1, 1]; ``seeds[i]`` alone sets image i's start."""
        raise NotImplementedError

    # ---- comparisons ---------------------------------------------------------------------------
    def capacity(self) -> dict[str, int]:
        """How many latent codes (and how they are organised) one image gets: the capacity that a
        fair comparison of multi-code methods states and matches (default: one code)."""
        return {"codes": 1}

    def tuning_space(self, trial: Any) -> dict[str, Any]:
        """The settings ``gib tune`` searches, drawn from ``trial`` (an ``optuna.Trial``: call
        ``trial.suggest_categorical(name, choices)`` / ``trial.suggest_float(name, low, high,
        log=True)``); returns settings overrides. Only what the paper leaves open or what depends
        on the generator belongs here (optimiser, learning rates, initialisations); the budget and
        the capacity do not. Default: nothing to tune."""
        return {}

    @classmethod
    def tunable(cls) -> bool:
        """Whether ``gib tune`` has anything to search: a compute budget and a :meth:`tuning_space`
        of its own. ``--profile tuned`` runs a method that is not tunable (an encoder's single
        forward pass) at its ``quick`` profile."""
        return cls.budget_setting is not None and cls.tuning_space is not InversionMethod.tuning_space

    # ---- extras ----------------------------------------------------------------------------------
    @classmethod
    def report_artifacts(cls, run_dir: Path) -> list[Artifact]:
        """Files under ``run_dir`` this method wrote and wants in the report (default: none).

        Called by ``gib report`` for every method that has results in the run folder.
        """
        return []

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.settings})"


__all__ = ["FLOAT32_MAX", "INT64_MAX", "INT64_MIN", "Artifact", "InversionFailed", "InversionMethod",
           "InversionResult", "MethodTags", "ProgressFn", "check_setting_ranges"]
