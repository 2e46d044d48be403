"""``gib tune``: search each method's open settings per generator, so that methods are compared
at their best rather than at one untuned default.

Protocol (:class:`TuneConfig`):

* **what is searched** is declared by the method (:meth:`InversionMethod.tuning_space`): the
  optimiser, its learning rate(s) (a separate one for mixing weights where a method has them) and
  initialisation choices the paper leaves open (mGANprior's /N, PmSFC's w0). Budget and capacity
  are not searched;
* **tuning images** (``images``) are by default generated faces from a latent seed range disjoint
  from the evaluation set's (evaluation: ``generated`` with run seed 0, latent seeds 0 … n−1; tuning:
  run seed ``image_seed`` = 1, latent seeds 1000 …), so no evaluated image is seen while tuning.
  Generated targets reward whatever finds the generating code: at 2000 iterations single-code's
  search on them chose a decayed rate that reached 93 dB there and gained nothing on real photos
  (docs/results.md). ``images="photos-tune"`` (4 bundled real photos that no evaluation set holds) or
  ``"folder:PATH"`` tunes on real targets instead: the first ``n_images`` of the set, refused where
  the set has fewer or where one of them is, by content, one of the evaluation ``photos``; the entry
  records each tuning image's id and sha256 (that of the run records' ``content``);
* **objective**: mean PSNR over the tuning images after ``budget`` iterations (the budget the
  profile is for);
* **search**: optuna's TPE sampler (seeded) with asynchronous successive halving (``SuccessiveHalvingPruner``) on
  the mean PSNR reported at the trace points (log-spaced iterations), so poor settings stop early. The first rung
  (``min_resource``) defaults to ``max(8, budget // reduction_factor³)``, so a long budget has about four rungs up
  to it and no setting is judged at a tiny fraction of it (at budget 1000 mGANprior's and PmSFC's best settings were
  the same with a first rung of 8 as with the scaled 64: luck, not a guarantee). Pruning on the PSNR along the way
  favours settings that rise fast early: at budget 1000 it stopped single-code's Adam learning rates 0.15 and 0.19
  at iteration 128 (0.4–0.6 dB behind lr 0.44 there) and chose lr 0.40, which on 16 evaluation faces ends 6.8 dB
  below lr 0.17 (docs/results.md). ``pruning="none"`` runs every trial to the full budget (slower; nothing is judged
  early). TPE models the results only after ``startup_trials`` trials (optuna's default, 10); until then it draws
  independently at random, so a search of 10 trials or fewer is a random search (the 8-trial searches at 2000
  iterations were). A smaller ``startup_trials`` makes TPE model sooner, which is no promise of a better result:
  with 4, PmSFC's 5 modelled trials at 2000 iterations (30.1 to 37.7 dB) all stayed below the warm start's 41.09
  (docs/results.md). The inversion itself is deterministic, so the same seed reproduces the same study and the same
  best settings;
* **result**: an entry of the generator's profile file (:mod:`gan_inversion_bench.profiles`)
  with the settings, the protocol, every trial and the provenance;
* **journal** (optional): every finished trial in SQLite, so an interrupted or stopped (``gib stop``: between
  trials) search resumes to the very study an uninterrupted one gives (:mod:`gan_inversion_bench.tune_journal`);
* **warm start** (optional, ``start``): an entry the profile already holds (a run at this budget would use it) is
  enqueued as trial 0, so the search's choice is never worse on its own objective than the settings it would
  replace. Without it, a thin search can miss them: 8 random draws for single-code at 2000 iterations chose lr 0.399
  (34.77 dB on the tuning faces) where the entry searched at 100, lr 0.183, gives 38.92 dB on the same faces at 2000
  (docs/results.md). Seeded draws can repeat a finished trial's parameters (warm-started with the seed that found
  the entry, the search draws the entry again); such a trial takes that trial's value (``repeat_of`` in its record)
  instead of running the same deterministic inversion again;
* **fixed parameters** (optional, ``fixed``): named parameters of the method's space held at one value (optuna's
  ``PartialFixedSampler`` around TPE), so that the search spends its trials on the rest. At 2000 iterations every
  search chose Adam and its SGD trials gave 18.6 to 35.5 dB against Adam's best of 38.9 to 45.9 (docs/results.md),
  so ``optimizer="adam"`` there lets TPE model Adam's learning rates from every trial instead of from the two thirds
  that drew Adam. A name the method's space never draws, a value outside its range and a warm start that contradicts
  a fixed value are refused;
* **held settings** (optional, ``held``): method settings outside the search space, set for every
  trial, for a search per configuration. Capacity is not searched, so a search runs at the base
  profile's (mGANprior N = 30); ``held={"n_codes": 10}`` searches the learning rates for N = 10. The
  entry's settings include them (a run of that entry uses them unless it overrides them) and its
  ``tuning`` record names them. A name that is not a setting of the method, a setting the space
  searches (hold it with ``fixed``) and the budget setting (``budget``) are refused;
* **chosen settings** (optional, ``choices``): method settings outside the search space that the search
  draws among given values, as a categorical parameter of the setting's own name. The learning-rate
  schedule is one: on generated faces single-code at its tuned constant rate ended 52 dB below the same
  rate decayed, and mGANprior 2.3 dB above it (docs/results.md), so which schedule a method needs is a
  question for its search, as its rate is. ``choices={"lr_schedule": ["constant", "cosine"]}`` searches
  both. The names are checked as held ones are, every value must be one the method accepts, a name may
  not be both held and chosen, and a warm start takes the value its entry ran at (refused where that is
  not among the choices). Without choices the search draws exactly what it drew before they existed;
* **the choice checked** per tuning image against the warm start or the runner-up (:mod:`.tune_choice`).
"""
from __future__ import annotations

import datetime as _dt
import functools
import json
import platform
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from .generator import SplitGenerator, conditioned
from .harness.config import image_sha256
from .harness.stop import StopRequested, is_request, journal_place
from .imagesets import ImageItem, load_image_set, photos, stack_conditions
from .method import InversionFailed, InversionMethod
from .method_tools import tracing
from .metrics import psnr
from .profiles import STARTUP_TRIALS
from .registry import METHODS
from .tune_choice import PER_IMAGE, choice_check, image_labels
from .tune_journal import trial_text

if TYPE_CHECKING:
    from .tune_journal import TuneJournal

#: the named tuning image sets (``TuneConfig.images``; ``folder:PATH`` besides)
TUNING_SETS = ("generated", "photos-tune")
#: ``TuneConfig.pruning`` → how the profile describes it
PRUNING = {"halving": "optuna SuccessiveHalvingPruner on the mean PSNR at log-spaced iterations",
           "none": "none: every trial ran to the full budget"}


@dataclass(frozen=True)
class TuneConfig:
    """The tuning protocol (module docstring). ``held`` and ``choices`` are recorded only where a search
    set them, so the records of searches without them are those written before they existed."""

    trials: int = 24
    budget: int = 100
    n_images: int = 4
    image_seed: int = 1
    seed: int = 0
    base_profile: str = "quick"
    reduction_factor: int = 3
    min_resource: int | None = None  # None: max(8, budget // reduction_factor³) (module docstring)
    pruning: str = "halving"          # "halving" (successive halving) or "none" (every trial to the budget)
    startup_trials: int = STARTUP_TRIALS  # TPE's independent random draws before it models the results
    fixed: dict[str, Any] = field(default_factory=dict)  # search parameters held at one value (module docstring)
    held: dict[str, Any] = field(default_factory=dict)  # method settings outside the space (module docstring)
    choices: dict[str, list[Any]] = field(default_factory=dict)  # settings outside the space, drawn among values
    images: str = "generated"  # the tuning image set: generated (seed image_seed), photos-tune or folder:PATH

    def __post_init__(self) -> None:
        if self.min_resource is None and isinstance(self.budget, int) and isinstance(self.reduction_factor, int):
            object.__setattr__(self, "min_resource", max(8, self.budget // max(self.reduction_factor, 1) ** 3))
        for name in ("trials", "budget", "n_images", "image_seed", "reduction_factor", "min_resource",
                     "startup_trials"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if self.pruning not in PRUNING:
            raise ValueError(f"pruning must be one of {', '.join(PRUNING)}, got {self.pruning!r}")
        for name, what in (("fixed", "parameter"), ("held", "setting")):
            if not isinstance(v := getattr(self, name), dict) or not all(isinstance(k, str) for k in v):
                raise ValueError(f"{name} must map {what} names to values, got {v!r}")
        if not isinstance(self.images, str) or not (self.images in TUNING_SETS or self.images.startswith("folder:")):
            raise ValueError(f"images must be one of {', '.join(TUNING_SETS)} or folder:PATH (tuning images that no "
                             f"evaluation set holds), got {self.images!r}")
        if not isinstance(self.choices, dict) or not all(
                isinstance(k, str) and isinstance(v, list) and len(v) >= 2 and all(
                    isinstance(x, (str, int, float, bool)) and v.count(x) == 1 for x in v)
                for k, v in self.choices.items()):
            raise ValueError("choices must map setting names to lists of at least two distinct values (strings, "
                             f"numbers or booleans), got {self.choices!r}")

    def record(self) -> dict[str, Any]:
        """The protocol as entries and journals record it."""
        out = asdict(self)
        for name in ("held", "choices"):
            if not out[name]:
                del out[name]
        if self.images == "generated":
            del out["images"]
        return out


class _PruningSink:
    """Reports the mean PSNR at each trace point to the trial and stops a trial the pruner rejects."""

    def __init__(self, trial: Any, targets: Tensor, points: set[int]):
        self.trial, self.targets, self.points = trial, targets, points

    def __call__(self, iteration: int, snapshot: Callable[[], Tensor]) -> None:
        import optuna

        if iteration not in self.points or iteration == 0:
            return
        with torch.no_grad():
            value = float(psnr(snapshot().float().clamp(-1, 1), self.targets).mean())
        self.trial.report(value, iteration)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"mean PSNR {value:.2f} dB at iteration {iteration}")


def tuning_set(generator: SplitGenerator, tc: TuneConfig) -> list[ImageItem]:
    """The tuning images of ``tc`` (module docstring). Raises ValueError where a real set has fewer than
    ``n_images`` images or one of them is an evaluation photo."""
    if tc.images == "generated":
        return load_image_set("generated", generator, n=tc.n_images, seed=tc.image_seed).items
    found = load_image_set(tc.images, generator).items
    if len(found) < tc.n_images:
        raise ValueError(f"tuning images {tc.images!r}: {len(found)} readable image(s), fewer than the "
                         f"{tc.n_images} asked for (--images)")
    items = found[:tc.n_images]
    evaluated = {image_sha256(it): it.id for it in photos(generator.resolution)}
    for it in items:
        same = evaluated.get(image_sha256(it))
        if same is not None:
            raise ValueError(f"tuning images {tc.images!r}: {it.id} is the evaluation photo {same} (same pixels "
                             f"at {generator.resolution}²); tuning images must be disjoint from the evaluation images")
    return items


def tuning_images(generator: SplitGenerator, tc: TuneConfig, device: torch.device,
                  items: list[ImageItem] | None = None) -> tuple[Tensor, Tensor | None]:
    """The tuning targets ``[n, 3, R, R]`` (and their classes for a conditional generator), from ``items``
    where the caller has already loaded :func:`tuning_set`."""
    items = tuning_set(generator, tc) if items is None else items
    targets = torch.stack([it.image for it in items]).to(device)
    classes = stack_conditions(generator, items)
    return targets, None if classes is None else classes.to(device)


def tuning_record(tc: TuneConfig, items: list[ImageItem]) -> dict[str, Any]:
    """How the entry names its tuning images ``items``: the generated seeds, or a real set's ids and sha256."""
    if tc.images == "generated":
        return {"tuning_images": f"generated, run seed {tc.image_seed} (latent seeds {tc.image_seed * 1000} …)"}
    return {"tuning_images": f"{tc.images}: the first {len(items)} ({', '.join(it.id for it in items)})",
            "tuning_image_sha256": {it.id: image_sha256(it) for it in items}}


def _objective(method: InversionMethod, generator: SplitGenerator, targets: Tensor, tc: TuneConfig,
               journal: TuneJournal | None = None) -> Any:
    from .harness.trace import trace_points

    points = set(trace_points(tc.budget))

    def objective(trial: Any) -> float:
        settings = draw(method, trial, tc.choices)  # drawn for a replayed trial too: it advances the sampler
        if journal is not None and trial.number in journal.trials:
            return journal.replay(trial)
        same = _same_complete_trial(trial)
        if same is not None:  # the inversion is deterministic: these settings give that trial's value again
            trial.set_user_attr("repeat_of", same.number)
            if PER_IMAGE in same.user_attrs:
                trial.set_user_attr(PER_IMAGE, same.user_attrs[PER_IMAGE])
            return float(same.value)
        m = method.with_settings(**settings)
        try:
            with tracing(_PruningSink(trial, targets, points)):
                result = m.invert(generator, targets, seeds=list(range(targets.shape[0])))
        except InversionFailed as e:
            trial.set_user_attr("failed", str(e)[:300])
            return 0.0
        per_image = psnr(torch.nan_to_num(result.reconstructions.float(), nan=0.0).clamp(-1, 1), targets)
        trial.set_user_attr(PER_IMAGE, [float(v) for v in per_image])  # for the paired check (tune_choice)
        return float(per_image.mean())

    return objective


def _same_complete_trial(trial: Any) -> Any:
    """The first finished trial of the study with ``trial``'s very parameters, or None. Seeded draws can
    repeat: a search warm-started from an entry that the same seed found draws that entry again."""
    import optuna

    for done in trial.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        if done.number != trial.number and done.params == trial.params:
            return done
    return None


@functools.cache
def process_revision() -> str:
    """The code revision when this process first tuned: a search takes hours, and the checkout may
    move on meanwhile while the process keeps running the code it imported."""
    from .harness.provenance import code_revision

    return code_revision()


def draw(method: InversionMethod, trial: Any, choices: dict[str, list[Any]]) -> dict[str, Any]:
    """A trial's settings: ``method``'s search space, then each chosen setting (module docstring) drawn
    among its values."""
    settings = method.tuning_space(trial)
    for name, values in choices.items():
        settings[name] = trial.suggest_categorical(name, values)
    return settings


def settings_of(method: InversionMethod, params: dict[str, Any],
                choices: dict[str, list[Any]] | None = None) -> dict[str, Any]:
    """The settings a trial's ``params`` stand for under ``method``'s search space (and ``choices``), as
    the profile file holds them (JSON: a tuple such as ILO's radii becomes a list), so that an entry built
    here equals the one read back. Raises ValueError where ``params`` lack one the space asks for."""
    import optuna

    return dict(json.loads(json.dumps(draw(method, optuna.trial.FixedTrial(params), choices or {}))))


def start_params(method: InversionMethod, entry: dict[str, Any]) -> dict[str, Any]:
    """The search parameters of a profile ``entry``'s settings: those of its best trial, checked to give
    its settings again under ``method``'s search space now. Raises ValueError where they do not (the
    settings were edited by hand, or the space changed since)."""
    best, trials = (entry.get("tuning") or {}).get("best_trial"), entry.get("trials") or []
    found = [t for t in trials if isinstance(t, dict) and t.get("number") == best]
    if not found or not isinstance(found[0].get("params"), dict):
        raise ValueError(f"{method.name}: the entry searched at {(entry.get('tuning') or {}).get('budget')} "
                         "iterations records no best trial's parameters to start from")
    params = found[0]["params"]
    try:
        again = settings_of(method, params, (entry.get("tuning") or {}).get("choices") or {})
    except ValueError as e:
        raise ValueError(f"{method.name}: the entry's best trial {params} does not fit the search space "
                         f"now ({e})") from None
    held = (entry.get("tuning") or {}).get("held") or {}
    if {**held, **again} != entry.get("settings"):
        raise ValueError(f"{method.name}: the entry's settings {entry.get('settings')} are not those of its best "
                         f"trial {params} under the search space now ({again}); edited by hand?")
    return dict(params)


def _space(method: InversionMethod, draws: int = 64) -> tuple[dict[str, Any], set[str]]:
    """The parameters ``method``'s search space draws (name → optuna distribution) and the settings it
    sets. The space can be conditional (SGD's and Adam's rates are separate parameters), so it is
    drawn ``draws`` times at random (seeded) and a name is the space's where any draw asks for it."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "new study created" line for a check
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    space: dict[str, Any] = {}
    settings: set[str] = set()
    for _ in range(draws):
        trial = study.ask()
        settings.update(method.tuning_space(trial))
        space.update(trial.distributions)
    return space, settings


def check_fixed(method: InversionMethod, fixed: dict[str, Any], draws: int = 64) -> None:
    """Refuse ``fixed`` parameters that ``method``'s search space never draws (:func:`_space`), or values
    outside the range it draws them from."""
    import optuna

    if not fixed:
        return
    space = _space(method, draws)[0]
    for name, value in fixed.items():
        if name not in space:
            raise ValueError(f"{method.name}: fixed parameter {name!r} is not a parameter its search space draws "
                             f"(it draws {', '.join(sorted(space)) or 'nothing'})")
        d = space[name]
        if isinstance(d, optuna.distributions.CategoricalDistribution):
            if not any(type(c) is type(value) and c == value for c in d.choices):
                raise ValueError(f"{method.name}: fixed parameter {name}={value!r} is not one of its choices "
                                 f"{list(d.choices)}")
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or not d.low <= value <= d.high:
            raise ValueError(f"{method.name}: fixed parameter {name}={value!r} is outside its search range "
                             f"[{d.low:g}, {d.high:g}]")


def held_method(method_name: str, tc: TuneConfig) -> InversionMethod:
    """``method_name`` from ``tc``'s base profile with its ``held`` settings (module docstring), at the
    search's budget. Raises ValueError for a held or chosen name that is not a setting of the method, one
    the search space sets and the budget setting, and for a value the method refuses."""
    cls = METHODS.get(method_name)
    _refuse_names(method_name, cls, tc.held, "held")
    _refuse_names(method_name, cls, tc.choices, "chosen")
    if cls.budget_setting is None:
        raise ValueError(f"{method_name} has no compute budget, so there is nothing to tune at a budget")
    try:
        method: InversionMethod = cls.from_profile(tc.base_profile, **tc.held)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{method_name}: held settings {tc.held}: {e}") from None
    searched = sorted((set(tc.held) | set(tc.choices)) & _space(method)[1])
    if searched:
        raise ValueError(f"{method_name}: {', '.join(searched)} is searched; hold a parameter of the search space "
                         "at one value with --fix instead")
    _check_choices(method, tc)
    return method.with_budget(tc.budget)


def _refuse_names(method_name: str, cls: type[InversionMethod], names: dict[str, Any], kind: str) -> None:
    """Held or chosen settings (module docstring) must be settings of the method and not its budget."""
    unknown = sorted(set(names) - set(cls.setting_names()))
    if unknown:
        raise ValueError(f"{method_name}: {kind} setting(s) {unknown} are not settings of the method (its settings: "
                         f"{', '.join(cls.setting_names())})")
    if cls.budget_setting in names:
        raise ValueError(f"{method_name}: {cls.budget_setting} is the budget; the search's budget sets it, not a "
                         f"{kind} setting")


def _check_choices(method: InversionMethod, tc: TuneConfig) -> None:
    """Refuse chosen settings (module docstring) that are held too, or a value the method refuses (names
    and the budget: :func:`_refuse_names`)."""
    cls, name = type(method), method.name
    both = sorted(set(tc.choices) & set(tc.held))
    if both:
        raise ValueError(f"{name}: {', '.join(both)} is both held (--set) and chosen (--choose)")
    for setting, values in tc.choices.items():
        for value in values:
            try:
                cls.from_profile(tc.base_profile, **tc.held, **{setting: value})
            except (TypeError, ValueError) as e:
                raise ValueError(f"{name}: chosen value {setting}={value!r}: {e}") from None


def tune(generator: SplitGenerator, method_name: str, tc: TuneConfig,
         on_trial: Callable[[str], None] | None = None, journal: str | Path | None = None,
         start: dict[str, Any] | None = None) -> dict[str, Any]:
    """Tune ``method_name`` on ``generator``; returns its profile entry (module docstring).

    ``on_trial`` receives one line per finished trial (its number, state, value, settings and the search's elapsed
    time), for a search that runs for hours. ``journal``: an SQLite file that keeps every finished trial, so that the
    same search interrupted and started again resumes exactly (:mod:`gan_inversion_bench.tune_journal`); with one,
    a request file beside it (``gib stop``) raises :class:`StopRequested` after the trial in flight. ``start``: a
    profile entry of this method whose settings become trial 0 (warm start, module docstring)."""
    revision = process_revision()
    method = held_method(method_name, tc)
    check_fixed(method, tc.fixed)
    warm = None if start is None else _start_record(method, start, tc)  # refused before a long prepare
    with tempfile.TemporaryDirectory(prefix="gib-tune-") as cache:
        method.prepare(generator, seed=0, cache_dir=cache)
    items = tuning_set(generator, tc)
    targets, classes = tuning_images(generator, tc, generator.device, items)
    study = _study(tc, warm)
    started = time.perf_counter()
    log = None if journal is None else _journal(journal, generator, method, tc, revision, warm)
    replayed = set(log.trials) if log is not None else set()
    if log is not None and replayed and on_trial is not None:
        on_trial(f"{method_name}: resuming, {len(replayed)} of {tc.trials} trials replayed from {log.path}")

    def report(study: Any, trial: Any) -> None:
        if log is not None and trial.number not in replayed and trial.state.name in ("COMPLETE", "PRUNED"):
            log.record(trial)
            if is_request(journal_place(log.path).request):
                study.stop()  # after this trial: the journal has it
        if on_trial is not None:
            on_trial(f"{method_name}: {trial_text(trial, tc.trials)} ({time.perf_counter() - started:.0f} s"
                     f"{', from the journal' if trial.number in replayed else ''})")

    with conditioned(generator, classes):
        study.optimize(_objective(method, generator, targets, tc, log), n_trials=tc.trials, callbacks=[report])
    if log is not None and (n := len(study.trials)) < tc.trials:
        raise StopRequested(f"{method_name}: stopped on request after trial {n - 1} ({n} of {tc.trials}); its "
                            f"finished trials are in the journal {log.path}")
    entry = _entry(method, study, tc, generator, revision, tuning_record(tc, items))
    if warm is not None:
        entry["tuning"]["warm_start"] = {**warm, "trial": 0}
    entry["tuning"]["choice"] = choice_check(entry, image_labels(items))
    if log is not None:
        entry["tuning"]["resumed_trials"] = len(replayed)
        log.finish()
    return entry


def _journal(path: str | Path, generator: SplitGenerator, method: InversionMethod, tc: TuneConfig, revision: str,
             warm: dict[str, Any] | None) -> TuneJournal:
    """The journal of this search in ``path``, keyed by everything that determines the search."""
    from .tune_journal import TuneJournal

    return TuneJournal(path, {"generator": generator.name, "weights": generator.content_hash(), "method": method.name,
                              "version": method.version, "settings": method.get_settings(), "protocol": tc.record(),
                              "revision": revision, **({"start": warm["params"]} if warm else {})})


def _study(tc: TuneConfig, warm: dict[str, Any] | None) -> Any:
    """The optuna study of ``tc`` (seeded TPE; successive halving or no pruning), with the warm start
    enqueued as trial 0."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # on_trial reports each trial instead
    pruner = optuna.pruners.NopPruner() if tc.pruning == "none" else optuna.pruners.SuccessiveHalvingPruner(
        min_resource=int(tc.min_resource or 8), reduction_factor=tc.reduction_factor)
    sampler: optuna.samplers.BaseSampler = optuna.samplers.TPESampler(seed=tc.seed, n_startup_trials=tc.startup_trials)
    if tc.fixed:
        with warnings.catch_warnings():  # optuna calls it experimental (since 2.4); its behaviour is tested here
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sampler = optuna.samplers.PartialFixedSampler(tc.fixed, sampler)
    study = optuna.create_study(direction="maximize", pruner=pruner, sampler=sampler)
    if warm is not None:
        study.enqueue_trial(warm["params"])
    return study


def _start_record(method: InversionMethod, start: dict[str, Any], tc: TuneConfig) -> dict[str, Any]:
    """What a warm start enqueues (``params``: with each chosen setting at the value its entry ran at) and
    the entry records of the entry it started from. Raises ValueError where the start contradicts a
    ``fixed`` parameter or ran at a value the ``choices`` do not offer."""
    budget, params = (start.get("tuning") or {}).get("budget"), start_params(method, start)
    for name, values in tc.choices.items():
        value = params.get(name, (start.get("settings") or {}).get(name, method.get_settings()[name]))
        if value not in values:
            raise ValueError(f"{method.name}: the warm start (the entry searched at {budget} iterations) ran at "
                             f"{name}={value!r}, which the search does not choose among ({values}); drop the warm "
                             "start or add its value")
        params[name] = value
    for name, value in tc.fixed.items():
        if name in params and params[name] != value:
            raise ValueError(f"{method.name}: the warm start (the entry searched at {budget} iterations) has "
                             f"{name}={params[name]!r}, but the search holds {name} at {value!r}; drop the warm "
                             "start or that fixed parameter")
    return {"budget": budget, "params": params,
            "settings": start["settings"], "code_revision": (start.get("provenance") or {}).get("code_revision")}


def _entry(method: InversionMethod, study: Any, tc: TuneConfig, generator: SplitGenerator,
           revision: str, images: dict[str, Any]) -> dict[str, Any]:
    """The profile entry of a finished search; ``images``: how it names its tuning images (:func:`tuning_record`)."""
    import optuna

    from .harness.provenance import device_name, library_versions

    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise RuntimeError(f"{method.name}: no tuning trial completed")
    best = study.best_trial
    settings = {**tc.held, **settings_of(method, best.params, tc.choices)}
    kept = ("failed", "repeat_of", PER_IMAGE)  # the user attributes a trial's record keeps
    trials = [{"number": t.number, "state": t.state.name, "params": t.params, "value": t.value,
               "last_step": t.last_step, **{k: t.user_attrs[k] for k in kept if k in t.user_attrs}}
              for t in study.trials]
    return {"base_profile": tc.base_profile, "settings": settings,
            "tuning": {**tc.record(), "objective": f"mean PSNR (dB, [0, 1] range) of {tc.n_images} tuning images "
                                                  f"after {tc.budget} iterations",
                       "best_value": best.value, "best_trial": best.number, "sampler": "optuna TPESampler",
                       "pruner": PRUNING[tc.pruning],
                       "complete_trials": len(complete), "pruned_trials": sum(t["state"] == "PRUNED" for t in trials),
                       **images},
            "provenance": {"date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                           "code_revision": revision, "device": device_name(generator.device),
                           "generator": generator.describe(), "method_version": method.version,
                           "versions": {**library_versions(), "optuna": optuna.__version__},
                           "python": platform.python_version()},
            "trials": trials}
