"""Which stored rows a method's results continue when its preparation ran again.

A method that learns something in ``prepare`` (PmSFC's subspaces, an encoder) stores what it
learned with every row (``prepared``), and that state is part of the result key. A resume prepares
again: from the run folder's cache, or, where the cache is gone or the folder came from another
machine, by running the preparation anew. What it learns anew may differ from what the stored
rows used, or only its loss values may differ in their last digits.

:func:`continued_key` decides. Where the stored rows of the same configuration (same method,
version, settings, profile and execution, by their key) hold a preparation whose identity
(:attr:`~gan_inversion_bench.method.InversionMethod.PREPARED_IDENTITY`: the masks, the weights)
agrees with the new one, the run continues them under their key and says what differed. Where it
disagrees, the run is refused: continuing would put results of two preparations under one
configuration, and starting over beside them would leave one method twice in the folder's tables.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..method import InversionMethod
from ..store import ResultStore
from .config import RunError


def continued_key(store: ResultStore, method: InversionMethod, key_for: Callable[[dict[str, Any]], str],
                  run_dir: Any) -> tuple[str, str]:
    """The key to store ``method``'s results under and a note for the user ('' when nothing to say).

    ``key_for(prepared)`` is the run's key for the method with that prepared state."""
    state = method.prepared_state()
    key = key_for(state)
    if not state or store.done_images(key):
        return key, ""
    for stored_key, stored, rows in store.prepared_states(method.name):
        if not isinstance(stored, dict) or not stored or key_for(stored) != stored_key:
            continue  # another configuration (settings, profile, ...) or no preparation
        compared = _identity(method, stored, state)
        differ = [k for k in compared if stored[k] != state[k]]
        if differ:
            raise RunError(_refusal(method.name, run_dir, rows, stored, state, differ))
        return stored_key, _note(method.name, rows, stored, state, compared)
    return key, ""


def _identity(method: InversionMethod, stored: dict[str, Any], state: dict[str, Any]) -> list[str]:
    """The identity keys both states hold (older rows may lack a key added since)."""
    keys = method.PREPARED_IDENTITY if method.PREPARED_IDENTITY is not None else tuple(state)
    return [k for k in keys if k in stored and k in state]


def _refusal(name: str, run_dir: Any, rows: int, stored: dict[str, Any], state: dict[str, Any],
             differ: list[str]) -> str:
    shown = "; ".join(f"{k}: stored {_short(stored[k])}, now {_short(state[k])}" for k in differ)
    return (f"{name}: the {rows} stored result(s) of this configuration in {run_dir} were run after another "
            f"preparation than the one just made ({shown}). The preparation ran again (its cache in the run folder "
            f"is gone, or the folder was made on another machine) and learned something else; continuing would "
            f"mix two preparations in one configuration. Restore the folder's cache/, or run into a new folder")


def _note(name: str, rows: int, stored: dict[str, Any], state: dict[str, Any], compared: list[str]) -> str:
    unchecked = sorted(k for k in state if k not in stored)
    other = sorted(k for k in set(stored) | set(state)
                   if k not in compared and k not in unchecked and stored.get(k) != state.get(k))
    text = (f"{name}: its preparation ran again; what it learned agrees with the {rows} stored result(s) "
            f"({', '.join(compared) or 'nothing comparable'}), so the run continues them")
    if other:
        text += f"; {', '.join(other)} differ{'s' if len(other) == 1 else ''} (how the preparation ran)"
    if unchecked:
        text += f"; the stored rows do not record {', '.join(unchecked)} (not compared)"
    return text


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "…"
