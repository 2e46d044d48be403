"""Tuned profiles: per generator, the settings ``gib tune`` found for each method, with provenance.

A profile file is JSON, one per generator, versioned in the repository under
``gan_inversion_bench/profiles/<generator>.json`` (installed with the package)::

    {"format": 1, "generator": "dcgan-digiface64",
     "methods": {"mganprior": {"base_profile": "quick", "settings": {"optimizer": "adam", ...},
                               "tuning": {...budget, images, trials, seed, objective, best value...},
                               "provenance": {...date, code revision, device, versions, command...},
                               "trials": [...every trial: number, state, params, value...]}}}

``--profile tuned`` builds each method from its ``base_profile`` with ``settings`` on top;
``--profile paper`` stays the seeds' settings. ``GIB_PROFILES`` (a folder) overrides where the
files are looked up.

**Budgets.** The best settings depend on the budget they were searched at (PmSFC on
dcgan-digiface64: Adam lr 0.14 at 100 iterations, 0.017 at 2000; docs/results.md), so a method
may hold entries searched at several budgets: the one at the smallest budget is the method's entry
(what older readers see), the others are listed, by budget, under its ``other_budgets``. A run uses the
entry whose search budget is nearest its own in ratio (a tie goes to the smaller budget); ``gib tune``
replaces the entry at its own budget and keeps the others. An entry without a recorded budget
(written by hand) stands alone: writing one replaces every other.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

FORMAT = 1
PACKAGE_DIR = Path(__file__).resolve().parent / "profiles"
#: optuna TPE's random start-up trials (its default), which entries written before the setting use
STARTUP_TRIALS = 10


class ProfileError(ValueError):
    """A tuned profile is missing, unreadable or does not fit (the message says how to fix it)."""


def profile_dir() -> Path:
    return Path(os.environ["GIB_PROFILES"]).expanduser() if os.environ.get("GIB_PROFILES") else PACKAGE_DIR


def profile_path(generator: str, folder: Path | None = None) -> Path:
    return (folder or profile_dir()) / f"{generator}.json"


def read_profile(path: Path) -> dict[str, Any]:
    """A profile file, checked for its format; an empty profile when the file does not exist."""
    if not path.is_file():
        return {"format": FORMAT, "generator": path.stem, "methods": {}}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ProfileError(f"{path}: not a readable tuned profile ({e})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("methods"), dict):
        raise ProfileError(f"{path}: not a tuned profile of format {FORMAT} (expected keys format, generator, methods)")
    return data


def entries(entry: dict[str, Any]) -> list[dict[str, Any]]:
    """A method's entries: the one given and those at its ``other_budgets``, by budget (each without
    ``other_budgets``)."""
    others = entry.get("other_budgets") or []
    if not isinstance(others, list) or not all(isinstance(e, dict) for e in others):
        raise ProfileError(f"other_budgets must be a list of entries, got {type(others).__name__}")
    return sorted(({k: v for k, v in e.items() if k != "other_budgets"} for e in [entry, *others]),
                  key=lambda e: (entry_budget(e) is None, entry_budget(e) or 0))


def random_search(tuning: dict[str, Any]) -> bool:
    """Whether an entry's search (its ``tuning`` record) had no more trials than TPE's random start-up
    trials, so that TPE never modelled the results: a random search."""
    trials = tuning.get("trials")
    return isinstance(trials, int) and trials <= tuning.get("startup_trials", STARTUP_TRIALS)


def entry_budget(entry: dict[str, Any]) -> int | None:
    """The iterations an entry was searched at (``tuning.budget``), or None where it does not say."""
    tuning = entry.get("tuning")
    budget = tuning.get("budget") if isinstance(tuning, dict) else None
    return budget if isinstance(budget, int) and not isinstance(budget, bool) and budget > 0 else None


def nearest(found: list[dict[str, Any]], budget: int | None) -> dict[str, Any]:
    """The entry searched nearest ``budget`` in ratio (ties: the smaller budget); the first without one."""
    if budget is None or len(found) == 1 or budget < 1:
        return found[0]

    def distance(e: dict[str, Any]) -> tuple[float, int]:
        at = entry_budget(e)
        return (math.inf, 0) if at is None else (abs(math.log(budget / at)), at)

    return min(found, key=distance)


def tuned_entry(generator: str, method: str, budget: int | None = None) -> dict[str, Any]:
    """``method``'s entry tuned for ``generator``: the one searched nearest ``budget`` iterations (the
    smallest budget's when None)."""
    path = profile_path(generator)
    found = method_entries(generator, method)
    if not found or not isinstance(found[0].get("settings"), dict):
        raise ProfileError(f"no tuned profile of {method!r} for generator {generator!r} in {path}; run "
                           f"`gib tune -g {generator} -m {method}` or use --profile quick / paper")
    chosen = nearest(found, budget)
    if not isinstance(chosen.get("settings"), dict):
        raise ProfileError(f"{path}: {method}: the entry searched at {entry_budget(chosen)} iterations has no settings")
    return chosen


def method_entries(generator: str, method: str) -> list[dict[str, Any]]:
    """Every entry of ``method`` tuned for ``generator``, by budget (none when it has no entry)."""
    path = profile_path(generator)
    entry = read_profile(path)["methods"].get(method)
    try:
        return entries(entry) if isinstance(entry, dict) else []
    except ProfileError as e:
        raise ProfileError(f"{path}: {method}: {e}") from None


def tuned_settings(generator: str, method: str, budget: int | None = None) -> tuple[str, dict[str, Any]]:
    """(base profile, settings) of ``method`` tuned for ``generator``, from the entry searched nearest
    ``budget`` iterations (:func:`tuned_entry`)."""
    return entry_settings(tuned_entry(generator, method, budget))


def entry_settings(entry: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(base profile, settings) of a tuned ``entry``: the settings go on top of that profile."""
    return str(entry.get("base_profile", "quick")), dict(entry["settings"])


def value_text(v: Any) -> str:
    """A setting's value as the pages and listings show it: floats (also in lists) to 3 significant digits."""
    if isinstance(v, list):
        return "[" + ", ".join(map(value_text, v)) + "]"
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def settings_text(settings: dict[str, Any]) -> str:
    """``key value, …`` sorted by key (:func:`value_text`)."""
    return ", ".join(f"{k} {value_text(v)}" for k, v in sorted(settings.items()))


def has_tuned(generator: str, methods: list[str]) -> bool:
    """Whether every method in ``methods`` has a tuned profile for ``generator``."""
    try:
        found = read_profile(profile_path(generator))["methods"]
    except ProfileError:
        return False
    return all(m in found for m in methods)


def write_entry(path: Path, generator: str, method: str, entry: dict[str, Any]) -> None:
    """Add (or replace) one method's entry at its budget, keeping the other methods and the method's
    entries at other budgets; written atomically."""
    data = read_profile(path)
    if data.get("generator") not in (generator, path.stem):
        raise ProfileError(f"{path} is the profile of generator {data.get('generator')!r}, not {generator!r}")
    old = data["methods"].get(method)
    try:
        kept = [e for e in entries(old) if entry_budget(e) not in (None, entry_budget(entry))] \
            if isinstance(old, dict) and entry_budget(entry) is not None else []
    except ProfileError as e:
        raise ProfileError(f"{path}: {method}: {e}") from None
    first, *others = entries({**entry, "other_budgets": kept})
    data["generator"], data["methods"] = generator, {**data["methods"],
                                                     method: {**first, "other_budgets": others} if others else first}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, sort_keys=True, default=str)
        f.write("\n")
    os.replace(tmp, path)
