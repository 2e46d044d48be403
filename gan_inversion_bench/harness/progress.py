"""Progress that fits where it goes: a tqdm bar on a terminal, plain periodic lines otherwise
(CI logs, files, pipes), so a log holds a few readable lines instead of carriage-return noise."""
from __future__ import annotations

import contextlib
import sys
import time
from typing import IO, Protocol


class Progress(Protocol):
    def update(self, done: int, total: int) -> None: ...

    def close(self) -> None: ...


class _Bar:
    """tqdm on a terminal."""

    def __init__(self, desc: str, stream: IO[str]):
        from tqdm import tqdm

        self._bar = tqdm(total=None, desc=desc, unit="it", leave=False, file=stream, dynamic_ncols=True)
        self._n = 0

    def update(self, done: int, total: int) -> None:
        if self._bar.total != total:
            self._bar.total = total
        self._bar.update(done - self._n)
        self._n = done

    def close(self) -> None:
        self._bar.close()


class Lines:
    """A line at every 10 % (and at most one per ``min_interval`` seconds, except the last)."""

    def __init__(self, desc: str, stream: IO[str], min_interval: float = 5.0):
        self.desc, self.stream, self.min_interval = desc, stream, min_interval
        self._last_decile, self._last_time, self._start = -1, 0.0, time.monotonic()

    def update(self, done: int, total: int) -> None:
        decile = 10 * done // max(total, 1)
        now = time.monotonic()
        if decile > self._last_decile and (done == total or now - self._last_time >= self.min_interval):
            self._last_decile, self._last_time = decile, now
            with contextlib.suppress(OSError):  # a closed log (BrokenPipeError) must not stop the work
                print(f"{self.desc}: {done}/{total} ({now - self._start:.0f} s)", file=self.stream, flush=True)

    def close(self) -> None:
        pass


def progress_for(desc: str, enabled: bool, stream: IO[str] | None = None) -> Progress | None:
    """A progress reporter for ``desc``: a bar when ``stream`` (default stderr) is a terminal,
    periodic lines otherwise; None when disabled."""
    if not enabled:
        return None
    stream = stream or sys.stderr
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    if tty:
        try:
            return _Bar(desc, stream)
        except ImportError:
            pass
    return Lines(desc, stream)
