"""Resumable, verified downloads with the standard library only.

:func:`fetch` writes into ``dest + ".part"``, resumes an interrupted transfer with an HTTP
``Range`` request (restarting from zero when the server ignores it), checks the size and the
sha256, and only then moves the file into place with ``os.replace``, so ``dest`` either does not
exist or is complete and verified. Without network it fails with :class:`OfflineError`, whose
message says where to get the file, where to put it, and that ``--weights PATH`` works offline.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import socket
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from .weights import WeightsNotFound

__all__ = ["fetch", "DownloadError", "ChecksumError", "OfflineError", "sha256_of"]

CHUNK = 1 << 20
USER_AGENT = "gan-inversion-bench-downloader/1 (+urllib)"


class DownloadError(OSError):
    """A download failed; the message says whether a partial file was kept for resuming."""


class ChecksumError(DownloadError):
    """The downloaded bytes do not have the expected size or sha256 (the partial file is deleted)."""


class OfflineError(DownloadError, WeightsNotFound):
    """The server could not be reached (no network, refused, DNS failure, timeout)."""


def sha256_of(path: str | os.PathLike, chunk: int = CHUNK) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                return h.hexdigest()
            h.update(b)


def _fmt(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GiB"


class _TextBar:
    """A minimal progress printer for when tqdm is not installed."""

    def __init__(self, total: int | None, initial: int, desc: str):
        self.total, self.n, self.desc = total, initial, desc
        self.last = 0.0
        self.stream = sys.stderr

    def update(self, k: int) -> None:
        self.n += k
        now = time.monotonic()
        if now - self.last >= 0.5:
            self.last = now
            self._draw()

    def _draw(self) -> None:
        if self.total:
            frac = min(self.n / self.total, 1.0)
            bar = "#" * int(30 * frac)
            self.stream.write(f"\r{self.desc}: [{bar:<30}] {frac:6.1%} {_fmt(self.n)}/{_fmt(self.total)}")
        else:
            self.stream.write(f"\r{self.desc}: {_fmt(self.n)}")
        self.stream.flush()

    def close(self) -> None:
        self._draw()
        self.stream.write("\n")
        self.stream.flush()


class _NoBar:
    def update(self, k: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(enabled: bool, total: int | None, initial: int, desc: str) -> Any:
    if not enabled:
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:
        return _TextBar(total, initial, desc)
    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024, desc=desc)


def _offline_message(url: str, dest: Path, reason: Any) -> str:
    return (f"could not download {url}: {reason}.\n"
            f"  No network? Get the file on a machine that has access: {url}\n"
            f"  and put it at {dest}\n"
            f"  (or anywhere, and pass --weights PATH / weights=PATH: a local file works offline).")


def _verify(part: Path, url: str, sha256: str | None, size: int | None) -> None:
    found = part.stat().st_size
    if size is not None and found != size:
        if found > size:
            part.unlink(missing_ok=True)
            raise ChecksumError(f"{url}: downloaded {found} bytes, more than the expected {size}; "
                                f"the partial file was deleted")
        raise DownloadError(f"{url}: only {found} of {size} bytes arrived; the partial file {part} was kept, "
                            f"call fetch again to resume")
    if sha256 is not None:
        digest = sha256_of(part)
        if digest.lower() != sha256.lower():
            part.unlink(missing_ok=True)
            raise ChecksumError(f"sha256 mismatch for {url}: expected {sha256.lower()}, found {digest}; "
                                f"the downloaded file was deleted (nothing was written to the destination)")


def fetch(url: str, dest: str | os.PathLike, *, sha256: str | None = None, size: int | None = None,
          progress: bool = True, timeout: float = 30) -> Path:
    """Download ``url`` to ``dest`` (resumable, verified, atomic). Returns ``dest`` as a Path.

    If ``dest`` already exists and matches ``size``/``sha256`` (when given), nothing is
    downloaded. Raises :class:`OfflineError` when the server cannot be reached,
    :class:`ChecksumError` on a size or sha256 mismatch (the part file is deleted), and
    :class:`DownloadError` for HTTP errors and interrupted transfers (the part file is kept and the
    next call resumes it).
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    if dest.is_file():
        ok = (size is None or dest.stat().st_size == size) and (sha256 is None or sha256_of(dest) == sha256.lower())
        if ok:
            return dest
    dest.parent.mkdir(parents=True, exist_ok=True)

    offset = part.stat().st_size if part.is_file() else 0
    if size is not None and offset > size:
        part.unlink()
        offset = 0
    if size is not None and offset == size:  # a complete part file from an earlier run: just verify
        _verify(part, url, sha256, size)
        os.replace(part, dest)
        return dest

    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:  # our part file is already the whole thing (or bogus)
            e.close()
            if size is None and sha256 is None:
                part.unlink()
                raise DownloadError(f"{url}: the server refused to resume at byte {offset} (HTTP 416) and the "
                                    f"partial file cannot be verified; it was deleted, call fetch again") from None
            _verify(part, url, sha256, size)
            os.replace(part, dest)
            return dest
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError, http.client.HTTPException) as e:
        reason = getattr(e, "reason", e)
        raise OfflineError(_offline_message(url, dest, reason)) from None
    except ValueError as e:  # malformed URL
        raise DownloadError(f"cannot download {url!r}: {e}") from None

    with resp:
        status = getattr(resp, "status", 200)
        ctype = resp.headers.get("Content-Type", "") or ""
        if ctype.startswith("text/html") and not dest.name.endswith((".html", ".htm")):
            raise DownloadError(
                f"{url} returned an HTML page instead of the file (a share page or a confirmation page?). "
                f"Download it in a browser and put it at {dest}, or pass --weights PATH.")
        mode = "wb"
        if offset and status == 206:
            crange = resp.headers.get("Content-Range", "")
            try:
                start = int(crange.split()[1].split("-")[0])
            except (IndexError, ValueError):
                start = -1
            if start != offset:
                raise DownloadError(f"{url}: asked to resume at byte {offset}, the server answered {crange!r}; "
                                    f"delete {part} to start over")
            mode = "ab"
        elif offset:  # 200: the server ignored Range and sends everything: start over
            offset = 0
        length = resp.headers.get("Content-Length")
        expected_body = int(length) if length and length.isdigit() else None
        total = offset + expected_body if expected_body is not None else size
        bar = _progress_bar(progress, total, offset, dest.name)
        received = 0
        try:
            with open(part, mode) as f:
                while True:
                    try:
                        chunk = resp.read(CHUNK)
                    except (http.client.IncompleteRead, ConnectionError, socket.timeout, TimeoutError, OSError) as e:
                        raise DownloadError(
                            f"{url}: transfer interrupted after {offset + received} bytes ({type(e).__name__}); "
                            f"the partial file {part} was kept, call fetch again to resume") from None
                    if not chunk:
                        break
                    f.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        finally:
            bar.close()
        if expected_body is not None and received < expected_body:
            raise DownloadError(f"{url}: the connection closed after {offset + received} of {offset + expected_body} "
                                f"bytes; the partial file {part} was kept, call fetch again to resume")
    _verify(part, url, sha256, size)
    os.replace(part, dest)
    return dest
