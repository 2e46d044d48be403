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
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

FORMAT = 1
PACKAGE_DIR = Path(__file__).resolve().parent / "profiles"


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


def tuned_settings(generator: str, method: str) -> tuple[str, dict[str, Any]]:
    """(base profile, settings) of ``method`` tuned for ``generator``."""
    path = profile_path(generator)
    entry = read_profile(path)["methods"].get(method)
    if not isinstance(entry, dict) or not isinstance(entry.get("settings"), dict):
        raise ProfileError(f"no tuned profile of {method!r} for generator {generator!r} in {path}; run "
                           f"`gib tune -g {generator} -m {method}` or use --profile quick / paper")
    return str(entry.get("base_profile", "quick")), dict(entry["settings"])


def has_tuned(generator: str, methods: list[str]) -> bool:
    """Whether every method in ``methods`` has a tuned profile for ``generator``."""
    try:
        found = read_profile(profile_path(generator))["methods"]
    except ProfileError:
        return False
    return all(m in found for m in methods)


def write_entry(path: Path, generator: str, method: str, entry: dict[str, Any]) -> None:
    """Add (or replace) one method's entry, keeping the others; written atomically."""
    data = read_profile(path)
    if data.get("generator") not in (generator, path.stem):
        raise ProfileError(f"{path} is the profile of generator {data.get('generator')!r}, not {generator!r}")
    data["generator"], data["methods"] = generator, {**data["methods"], method: entry}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, sort_keys=True, default=str)
        f.write("\n")
    os.replace(tmp, path)
