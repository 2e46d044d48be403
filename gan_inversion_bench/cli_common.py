"""What every ``gib`` command shares: friendly errors, ``KEY=VALUE`` options, building a generator."""
from __future__ import annotations

import difflib
import functools
import inspect
import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from .registry import GENERATORS, UnknownNameError


def _known_errors() -> tuple[type[BaseException], ...]:
    from .harness import RunError
    from .imagesets import ImageSetError
    from .method import InversionFailed
    from .store import StoreError
    from .weights import CheckpointError, WeightsNotFound

    return (RunError, ImageSetError, StoreError, CheckpointError, WeightsNotFound, UnknownNameError,
            InversionFailed, ValueError, TypeError)


def friendly_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the toolkit's own errors into one clear line instead of a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except click.ClickException:
            raise
        except _known_errors() as e:
            raise click.ClickException(str(e)) from None

    return wrapper


def parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_assignments(items: tuple[str, ...], what: str) -> dict[str, Any]:
    """``KEY=VALUE`` items, values read as JSON where they parse (else strings)."""
    return {key: parse_value(value) for key, value in pairs(items, what)}


_TRUE, _FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}


def coerce(text: str, default: Any, what: str) -> Any:
    """``text`` parsed by the type of ``default`` (a parameter's default value): booleans accept
    true/false/yes/no/on/off/1/0 in any case (so ``tiny=False`` is False, never the truthy string
    "False"), numbers must parse and be finite, a string setting stays the string given (``-1`` or
    ``true`` included), anything else is read as JSON where it parses and as a string otherwise.
    ``what`` names the option in the error."""
    if isinstance(default, bool):
        low = text.strip().lower()
        if low in _TRUE | _FALSE:
            return low in _TRUE
        raise click.BadParameter(f"{what}: expected true or false, got {text!r}")
    if isinstance(default, (int, float)):
        try:
            value: float = int(text) if isinstance(default, int) and text.strip().lstrip("+-").isdigit() \
                else float(text)
        except ValueError:
            raise click.BadParameter(f"{what}: expected a number, got {text!r}") from None
        if not math.isfinite(value):
            raise click.BadParameter(f"{what}: expected a finite number, got {text!r}")
        return value
    if isinstance(default, str):
        return text
    return parse_value(text)


def generator_options(name: str, items: tuple[str, ...]) -> dict[str, Any]:
    """``--gen-opt KEY=VALUE`` for generator ``name``, each value parsed by the type of the factory
    parameter's default; a key the factory does not take is refused with the valid ones."""
    factory = GENERATORS.get(name)
    try:
        params = {k: p for k, p in inspect.signature(factory).parameters.items()
                  if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
    except (TypeError, ValueError):  # no signature to read (a C callable): values as JSON
        return parse_assignments(items, "--gen-opt")
    out = {}
    for key, text in pairs(items, "--gen-opt"):
        if key not in params:
            close = difflib.get_close_matches(key, list(params), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise click.BadParameter(f"generator {name!r} takes no option {key!r}.{hint} Valid: "
                                     f"{', '.join(sorted(params))}", param_hint="--gen-opt")
        default = params[key].default
        out[key] = coerce(text, None if default is inspect.Parameter.empty else default, f"--gen-opt {key}")
    return out


def pairs(items: tuple[str, ...], what: str) -> list[tuple[str, str]]:
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint=what)
        out.append((key.strip(), value.strip()))
    return out


def slug(text: str) -> str:
    """A file-name-safe folder name."""
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", text).strip("_")[:60]


def build_generator(name: str, weights: str | None, gen_opt: tuple[str, ...], device: str) -> Any:
    """The registered generator ``name`` with ``--weights`` and ``--gen-opt`` options, on ``device``."""
    from .harness import resolve_device

    options = generator_options(name, gen_opt)
    if weights:
        options["weights"] = str(Path(weights).expanduser().resolve())
    return GENERATORS.create(name, **options).to(resolve_device(device)).eval()
