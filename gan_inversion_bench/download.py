"""Resumable, verified downloads (standard library ``urllib``, progress bars from tqdm).

:func:`fetch` writes into ``dest + ".part"``, resumes an interrupted transfer with an HTTP
``Range`` request (restarting from zero when the server ignores it), checks the size and the
sha256, and only then moves the file into place with ``os.replace``, so ``dest`` either does not
exist or is complete and verified. Without network it fails with :class:`OfflineError`, whose
message says where to get the file, where to put it, and that ``--weights PATH`` works offline.

Why not ``torch.hub.download_url_to_file`` (the well-kept candidate among the declared
dependencies)? It was tried against the loopback server of ``tests/test_download.py``
(``test_torch_hub_lacks_resume_and_truncation_checks`` keeps the evidence):

* it cannot resume: it writes to a randomly named temporary file that it deletes on any error,
  and never sends ``Range``; a transfer of a checkpoint of several hundred MB cut at 90 % starts
  again from byte 0;
* without ``hash_prefix`` a connection closed early goes unnoticed (``http.client`` returns a
  short body without error): a 300 000-byte head of a 1 MiB file is moved into place as the file;
* it has no timeout (a stalled server blocks forever), accepts an HTML page served instead of the
  file (share and confirmation pages), checks no size, and raises a bare ``URLError`` offline.

So the transfer stays here; what a library does well is delegated: the progress bar is tqdm's
(a declared dependency, which replaced a hand-written fallback bar).
"""
from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tqdm import tqdm

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


def sha256_of(path: str | os.PathLike[str], chunk: int = CHUNK) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                return h.hexdigest()
            h.update(b)


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


def _finish(part: Path, dest: Path, url: str, sha256: str | None, size: int | None) -> Path:
    """Verify the part file and move it into place atomically."""
    _verify(part, url, sha256, size)
    os.replace(part, dest)
    return dest


def fetch(url: str, dest: str | os.PathLike[str], *, sha256: str | None = None, size: int | None = None,
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
    if dest.is_file() and (size is None or dest.stat().st_size == size) \
            and (sha256 is None or sha256_of(dest) == sha256.lower()):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    offset = part.stat().st_size if part.is_file() else 0
    if size is not None and offset > size:
        part.unlink()
        offset = 0
    if size is not None and offset == size:  # a complete part file from an earlier run: just verify
        return _finish(part, dest, url, sha256, size)
    resp = _open(url, dest, offset, timeout)
    if resp is None:  # HTTP 416: our part file is already the whole thing (or bogus)
        if size is None and sha256 is None:
            part.unlink()
            raise DownloadError(f"{url}: the server refused to resume at byte {offset} (HTTP 416) and the "
                                f"partial file cannot be verified; it was deleted, call fetch again")
        return _finish(part, dest, url, sha256, size)
    with resp:
        _receive(resp, url, dest, part, offset, progress)
    return _finish(part, dest, url, sha256, size)


def _open(url: str, dest: Path, offset: int, timeout: float) -> http.client.HTTPResponse | None:
    """The server's response, asking for the bytes from ``offset`` on; None for HTTP 416 to a
    resume request. Raises :class:`OfflineError` or :class:`DownloadError`."""
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        resp: http.client.HTTPResponse = urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                                                timeout=timeout)
        return resp
    except urllib.error.HTTPError as e:
        e.close()
        if e.code == 416 and offset:
            return None
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as e:
        raise OfflineError(_offline_message(url, dest, getattr(e, "reason", e))) from None
    except ValueError as e:  # malformed URL
        raise DownloadError(f"cannot download {url!r}: {e}") from None


def _start(resp: http.client.HTTPResponse, url: str, dest: Path, part: Path, offset: int) -> int:
    """Where the body starts in the file: ``offset`` if the server resumed (206), 0 if it sends
    everything (200). Raises :class:`DownloadError` for an HTML page or a wrong ``Content-Range``."""
    ctype = resp.headers.get("Content-Type", "") or ""
    if ctype.startswith("text/html") and not dest.name.endswith((".html", ".htm")):
        raise DownloadError(f"{url} returned an HTML page instead of the file (a share page or a confirmation "
                            f"page?). Download it in a browser and put it at {dest}, or pass --weights PATH.")
    if not offset or resp.status != 206:
        return 0  # a fresh download, or the server ignored Range and sends everything: start over
    crange = resp.headers.get("Content-Range", "") or ""
    try:
        start = int(crange.split()[1].split("-")[0])
    except (IndexError, ValueError):
        start = -1
    if start != offset:
        raise DownloadError(f"{url}: asked to resume at byte {offset}, the server answered {crange!r}; "
                            f"delete {part} to start over")
    return offset


def _receive(resp: http.client.HTTPResponse, url: str, dest: Path, part: Path, offset: int, progress: bool) -> None:
    """Write the body into ``part`` (appending when the server resumed at ``offset``); the part
    file is kept when the transfer is cut short (:class:`DownloadError`)."""
    offset = _start(resp, url, dest, part, offset)
    length = resp.headers.get("Content-Length")
    expected = int(length) if length and length.isdigit() else None
    total = None if expected is None else offset + expected
    received = 0
    with open(part, "ab" if offset else "wb") as f, tqdm(total=total, initial=offset, unit="B", unit_scale=True,
                                                          unit_divisor=1024, desc=dest.name,
                                                          disable=not progress) as bar:
        while True:
            try:
                chunk = resp.read(CHUNK)
            except (http.client.IncompleteRead, OSError) as e:  # OSError: reset, timeout, ...
                raise DownloadError(f"{url}: transfer interrupted after {offset + received} bytes "
                                    f"({type(e).__name__}); the partial file {part} was kept, call fetch again "
                                    f"to resume") from None
            if not chunk:
                break
            f.write(chunk)
            received += len(chunk)
            bar.update(len(chunk))
    if expected is not None and received < expected:
        raise DownloadError(f"{url}: the connection closed after {offset + received} of {offset + expected} "
                            f"bytes; the partial file {part} was kept, call fetch again to resume")
