"""What defines a run, and how a method is built for it.

:class:`RunConfig` holds every option of ``gib run``; the fields in ``RunConfig.IDENTITY`` must
match when a run folder is resumed, and so must what they stand for (:func:`content_identity`:
sha256 of the generator's weights, of a weights file and of every target).
:func:`build_method` turns a method name into a configured instance using only the method's
declared contract (its settings' names, ``with_budget``): the harness assumes no setting name of
its own.
"""
from __future__ import annotations

import difflib
import hashlib
import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..generator import SplitGenerator
from ..imagesets import SEED_LIMIT, ImageItem, ImageSet
from ..method import INT64_MAX, INT64_MIN, InversionMethod
from ..precision import ExecutionOptions, effective_precision
from ..profiles import entry_budget, entry_settings, tuned_entry, tuned_settings
from ..registry import METHODS
from ..tasks import Task, TaskError, make_task
from ..weights import file_sha256


class RunError(RuntimeError):
    """A run cannot start or continue; the message says why and what to do."""


@dataclass
class RunConfig:
    """Everything that defines a run. Fields in ``IDENTITY`` must match when resuming."""

    generator: str = "dcgan-digiface64"
    generator_options: dict[str, Any] = field(default_factory=dict)
    methods: list[str] | None = None           # None: the default methods (default_methods)
    profile: str = "quick"                      # "quick" (short budget), "tuned" (gib tune's profile of the
                                                # generator) or "paper" (the seeds' defaults)
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # method (or "*") → settings
    images: str = "generated+photos"
    n_generated: int = 8
    seed: int = 0
    batch_size: int | None = None               # None: automatic
    device: str = "auto"
    precision: str = "fp32"                     # "fp32", "tf32" (CUDA) or "bf16" (autocast)
    compile: str = "off"                        # torch.compile mode: off, default, reduce-overhead, max-autotune
    channels_last: bool = False                 # generator weights in channels-last memory format
    budget: int | None = None                   # every method's compute budget (``--iterations``), via with_budget
    restarts: int = 1                           # initialisations per image; the best (lowest final loss) is scored
    budget_seconds: float | None = None         # compute budget per image inversion in seconds (harness.costs)
    budget_flops: float | None = None           # compute budget per image inversion in FLOPs (harness.costs)
    latency: bool = True                        # also time the first image inverted alone (harness.costs)
    task: str = "reconstruct"                   # restoration task (tasks.TASKS): reconstruct, inpaint, ...
    task_settings: dict[str, Any] = field(default_factory=dict)  # its settings (``--set task.KEY=VALUE``)

    IDENTITY = ("generator", "generator_options", "images", "n_generated", "seed")

    def identity(self) -> dict[str, Any]:
        """The names that must match on resume; :func:`content_identity` adds what they stand for."""
        return {k: getattr(self, k) for k in self.IDENTITY}

    def make_task(self) -> Task:
        """The restoration task (a RunError names a wrong task or setting)."""
        try:
            return make_task(self.task, self.task_settings)
        except (TaskError, TypeError) as e:
            raise RunError(str(e)) from None

    def method_names(self) -> list[str]:
        return list(self.methods) if self.methods else default_methods()


def default_methods() -> list[str]:
    """The methods of a run that names none: every registered method with ``in_default_run``."""
    return [n for n in METHODS.names() if METHODS.get(n).in_default_run]


def content_identity(config: RunConfig, generator: SplitGenerator, images: ImageSet) -> dict[str, Any]:
    """What the run's names stand for, by content (stored in the run's meta data as ``content``):

    * ``generator_state``: sha256 of the generator's state_dict (any change of a weight, whatever
      its source: ``--weights`` file, packaged weights, a zoo checkpoint);
    * ``weights_file``: path and sha256 of ``generator_options["weights"]`` when it is a file;
    * ``images``: per image id, sha256 of the target: for an image read from a file (photos,
      ``folder:``) its preprocessed ``[3, R, R]`` float32 pixels; for a generated image its latent
      (and class), since its pixels are G(latent), fixed by ``generator_state``, and differ in the
      last bits between devices.
    """
    weights = config.generator_options.get("weights")
    path = Path(str(weights)).expanduser() if weights else None
    return {"generator_state": generator.content_hash(),
            "weights_file": ({"path": str(path), "sha256": file_sha256(path)} if path is not None and path.is_file()
                             else None),
            "images": {it.id: image_sha256(it) for it in images.items}}


def image_sha256(item: ImageItem) -> str:
    """sha256 of one target's content (see :func:`content_identity`)."""
    h = hashlib.sha256()
    parts = [("latent", item.latent), ("condition", item.condition)] if item.latent is not None else [
        ("pixels", item.image if item.clean is None else item.clean)]
    for name, t in parts:
        if t is not None:
            h.update(f"{name}:{list(t.shape)}\0".encode())
            h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


def build_method(name: str, config: RunConfig) -> InversionMethod:
    """The method ``name`` at the run's profile with its overrides and budget.

    Overrides under ``"*"`` apply to every method that has a setting of that name; overrides
    under the method's own name always apply (an unknown one is refused by the method). The tuned
    profile's entry is the one searched nearest the run's budget (:func:`tuned_budget`).
    """
    cls = METHODS.get(name)
    given, profile = _given(name, config), config.profile
    tuned: dict[str, Any] = {}
    if profile == "tuned":  # the tuned settings on top of the base profile they were tuned from
        entry = _tuned_entry(name, config, given)
        profile, tuned = ("quick", {}) if entry is None else entry_settings(entry)
    method: InversionMethod = cls.from_profile(profile, **{**tuned, **given})
    if config.budget is not None and method.budget_setting is not None:
        method = method.with_budget(config.budget)
    return method


def _given(name: str, config: RunConfig) -> dict[str, Any]:
    """The run's overrides of one method: those under ``"*"`` it has a setting of, then its own."""
    fields = set(METHODS.get(name).setting_names())
    general = {k: v for k, v in config.overrides.get("*", {}).items() if k in fields}
    return {**general, **config.overrides.get(name, {})}


def _tuned_entry(name: str, config: RunConfig, given: dict[str, Any]) -> dict[str, Any] | None:
    """The tuned entry ``name`` runs with under the tuned profile (None: nothing to tune, it runs at quick)."""
    if not METHODS.get(name).tunable():
        return None
    return tuned_entry(config.generator, name, tuned_budget(name, config, given))


def _running_entry(name: str, config: RunConfig, given: dict[str, Any]) -> dict[str, Any] | None:
    """The tuned entry ``name`` runs with (None: not under the tuned profile, or nothing to tune)."""
    return _tuned_entry(name, config, given) if config.profile == "tuned" else None


def searched_at(name: str, config: RunConfig) -> int | None:
    """The budget at which the tuned entry that ``name`` runs with was searched (None: not tuned)."""
    entry = _running_entry(name, config, _given(name, config))
    return None if entry is None else entry_budget(entry)


def tuned_on(name: str, config: RunConfig, images: ImageSet) -> list[str]:
    """The ids of the run's images that the tuned entry ``name`` runs with was tuned on, so that its
    numbers there are not held-out ones: a real tuning image by its recorded sha256
    (:func:`image_sha256`), a generated tuning face by its latent seed (the entry's run seed × 1000 + i)."""
    entry = _running_entry(name, config, _given(name, config))
    tuning = (entry or {}).get("tuning") or {}
    hashes = set((tuning.get("tuning_image_sha256") or {}).values())
    seeds: set[int] = set()
    if tuning and tuning.get("images", "generated") == "generated":
        seed, n = tuning.get("image_seed", 1), tuning.get("n_images", 0)
        seeds = {seed * 1000 + i for i in range(n)} if isinstance(seed, int) and isinstance(n, int) else set()
    return [it.id for it in images.items
            if (it.latent is not None and it.meta.get("latent_seed") in seeds)
            or (it.latent is None and hashes and image_sha256(it) in hashes)]


def profile_text(name: str, config: RunConfig) -> str:
    """How ``name``'s settings were chosen, for the progress line: the profile, the budget its tuned entry
    was searched at, and whether the run's overrides set every setting of that entry (e.g. settings pinned
    to a record's), so that the entry decides nothing. The entry is resolved once."""
    given = _given(name, config)
    entry = _running_entry(name, config, given)
    at = None if entry is None else entry_budget(entry)
    overridden = entry is not None and set(entry.get("settings") or {}) <= set(given)
    return f"{config.profile} profile" + (f", searched at {at} iterations" if at else "") + (
        ", every setting of its entry overridden" if overridden else "")


def tuned_budget(name: str, config: RunConfig, given: dict[str, Any]) -> int | None:
    """The iterations a tuned entry is chosen for: the run's budget (``--iterations``), else the one
    the method's settings give (the smallest-budget entry's, with the run's overrides on top)."""
    cls = METHODS.get(name)
    if config.budget is not None or cls.budget_setting is None:
        return config.budget
    profile, tuned = tuned_settings(config.generator, name)
    method: InversionMethod = cls.from_profile(profile, **{**tuned, **given})
    return method.budget


def validate(config: RunConfig) -> list[str]:
    """The method names; unknown names, settings no method accepts and invalid settings of any
    method fail before any work (and before the run folder is created)."""
    names = config.method_names()
    config.make_task()
    for name in names:
        build_method(name, config)  # an invalid setting raises the method's own ValueError/TypeError
    _check_general_overrides(config, names)
    if config.batch_size is not None and config.batch_size < 1:
        raise RunError(f"batch size must be >= 1, got {config.batch_size}")
    if isinstance(config.restarts, bool) or not isinstance(config.restarts, int) or config.restarts < 1:
        raise RunError(f"restarts must be an integer >= 1, got {config.restarts!r}")
    for name in ("budget_seconds", "budget_flops"):
        value = getattr(config, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not math.isfinite(value) or value <= 0):
            raise RunError(f"{name.replace('_', '-')} must be a positive finite number, got {value!r}")
    if config.budget is not None and config.budget < 1:
        raise RunError(f"the budget (--iterations) must be >= 1, got {config.budget}")
    if "device" in config.generator_options:  # the harness builds the generator, then moves it to the run's device
        raise RunError(f"generator option device ({config.generator_options['device']!r}): the run's device is set "
                       f"with --device (the generator is moved there); drop --gen-opt device")
    _check_integer_ranges(config)
    execution_options(config, torch.device("cpu"))
    return names


def _check_integer_ranges(config: RunConfig) -> None:
    """The run seed within ±SEED_LIMIT (the generated set's seeds ``seed * 1000 + i`` must fit the
    64 bits of torch's random generators) and integer generator options within 64 bits."""
    seed = config.seed
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or abs(seed) > SEED_LIMIT:
        raise RunError(f"the seed (--seed) must be an integer from {-SEED_LIMIT} to {SEED_LIMIT} (image i of the "
                       f"generated set is drawn with seed × 1000 + i, which must fit 64 bits), got {seed!r}")
    for key, value in config.generator_options.items():
        if isinstance(value, int) and not isinstance(value, bool) and not INT64_MIN <= value <= INT64_MAX:
            raise RunError(f"generator option {key} (--gen-opt {key}) must be an integer from {INT64_MIN} to "
                           f"{INT64_MAX} (64 bits), got {value}")


def _check_general_overrides(config: RunConfig, names: list[str]) -> None:
    """A setting given without a method prefix that none of the run's methods has is a typo."""
    known = {f for name in names for f in METHODS.get(name).setting_names()}
    for key in config.overrides.get("*", {}):
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise RunError(f"setting {key!r} is not a setting of any method in this run ({', '.join(names)}).{hint} "
                           f"Valid settings: {', '.join(sorted(known))}")


def execution_options(config: RunConfig, device: torch.device) -> ExecutionOptions:
    """The run's precision/compile/memory-format settings as they take effect on ``device``."""
    try:
        return ExecutionOptions(precision=effective_precision(config.precision, device), compile=config.compile,
                                channels_last=config.channels_last)
    except ValueError as e:
        raise RunError(str(e)) from None
