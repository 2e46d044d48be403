"""What every ``gib`` command shares: friendly errors, ``KEY=VALUE`` options, building a generator."""
from __future__ import annotations

import difflib
import functools
import inspect
import json
import math
import re
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from .method import FLOAT32_MAX, INT64_MAX, INT64_MIN
from .registry import GENERATORS, UnknownNameError


def _known_errors() -> tuple[type[BaseException], ...]:
    from .download import DownloadError
    from .harness import RunError
    from .imagesets import ImageSetError
    from .method import InversionFailed
    from .store import StoreError
    from .tune_journal import JournalMismatch
    from .weights import CheckpointError, WeightsNotFound

    return (RunError, ImageSetError, StoreError, CheckpointError, WeightsNotFound, UnknownNameError,
            InversionFailed, JournalMismatch, DownloadError, ValueError, TypeError)


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


def fix_argument(key: str, value: Any) -> str:
    """``KEY=VALUE`` as one shell word that :func:`parse_assignments` reads back as ``value``: a string
    stays bare unless it would read back as something else (JSON such as ``"1"`` or ``"true"``, or edge
    whitespace, which :func:`pairs` strips), then it is written as a JSON string."""
    bare = isinstance(value, str) and value == value.strip() and parse_value(value) == value
    text = value if bare else json.dumps(value)
    return shlex.quote(f"{key}={text}")


def parse_assignments(items: tuple[str, ...], what: str) -> dict[str, Any]:
    """``KEY=VALUE`` items, values read as JSON where they parse (else strings)."""
    return {key: parse_value(value) for key, value in pairs(items, what)}


def parse_choices(items: tuple[str, ...]) -> dict[str, list[Any]]:
    """``NAME=V1,V2,...`` items (``--choose``): the values split at commas and each read as JSON where it
    parses, or a whole JSON list (which :func:`fix_argument` writes, so a recorded command reads back)."""
    out = {}
    for key, text in pairs(items, "--choose"):
        whole = parse_value(text)
        values = whole if isinstance(whole, list) else [parse_value(v.strip()) for v in text.split(",")]
        if len(values) < 2 or any(values.count(v) > 1 for v in values):
            raise click.BadParameter(f"{key}: expected at least two distinct values, got {text!r}",
                                     param_hint="--choose")
        out[key] = values
    return out


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
        return in_range(value, what)
    if isinstance(default, str):
        return text
    return in_range(parse_value(text), what)


def in_range(value: Any, what: str) -> Any:
    """``value`` unchanged when it is no number or one the computation can hold: an integer within
    64 bits, a float within the float32 range (the computation's dtype); else a ``BadParameter``
    naming ``what`` and the allowed range."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    if isinstance(value, int) and not INT64_MIN <= value <= INT64_MAX:
        raise click.BadParameter(f"{what}: expected an integer from {INT64_MIN} to {INT64_MAX} (64 bits), "
                                 f"got {value}")
    if isinstance(value, float) and math.isfinite(value) and abs(value) > FLOAT32_MAX:
        raise click.BadParameter(f"{what}: {value!r} is beyond the float32 range the computation runs in; "
                                 f"expected a magnitude of at most {FLOAT32_MAX:.8g}")
    return value


class BoundedInt(click.ParamType):  # type: ignore[type-arg]  # generic only since click 8.2 (>= 8.0 supported)
    """An integer option within ``[low, high]`` (default: 64 bits), so that a value too large for
    the tensors, generators and database it reaches is refused naming the option and the range
    (instead of ``Overflow when unpacking long long`` later); ``why`` says where the range comes from."""

    name = "integer"

    def __init__(self, low: int = INT64_MIN, high: int = INT64_MAX, why: str = "64 bits"):
        self.low, self.high, self.why = low, high, why

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        number: int = click.INT.convert(value, param, ctx)
        if not self.low <= number <= self.high:
            # a count (--n, --iterations) is refused here only above 64 bits; its ">= 1" is checked apart
            bounds = f"of at most {self.high}" if self.low == INT64_MIN and number > self.high \
                else f"from {self.low} to {self.high}"
            self.fail(f"expected an integer {bounds} ({self.why}), got {number}", param, ctx)
        return number


#: a 64-bit integer option
INT64 = BoundedInt()


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
        value = coerce(text, None if default is inspect.Parameter.empty else default, f"--gen-opt {key}")
        if params[key].annotation in (int, "int") and isinstance(value, float):  # e.g. seed=1e3
            if not value.is_integer():
                raise click.BadParameter(f"--gen-opt {key}: expected an integer, got {text!r}")
            value = in_range(int(value), f"--gen-opt {key}")
        out[key] = value
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
