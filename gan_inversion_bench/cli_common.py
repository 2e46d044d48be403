"""What every ``gib`` command shares: friendly errors, ``KEY=VALUE`` options, building a generator."""
from __future__ import annotations

import functools
import json
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
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint=what)
        out[key.strip()] = parse_value(value.strip())
    return out


def slug(text: str) -> str:
    """A file-name-safe folder name."""
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", text).strip("_")[:60]


def build_generator(name: str, weights: str | None, gen_opt: tuple[str, ...], device: str) -> Any:
    """The registered generator ``name`` with ``--weights`` and ``--gen-opt`` options, on ``device``."""
    from .harness import resolve_device

    GENERATORS.get(name)
    options = parse_assignments(gen_opt, "--gen-opt")
    if weights:
        options["weights"] = str(Path(weights).expanduser().resolve())
    return GENERATORS.create(name, **options).to(resolve_device(device)).eval()
