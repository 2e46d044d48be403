"""The resumable downloader and the checkpoint zoo, against a local HTTP server on 127.0.0.1 only."""
from __future__ import annotations

import hashlib
import re
import socket
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from gan_inversion_bench import zoo
from gan_inversion_bench.download import ChecksumError, DownloadError, OfflineError, fetch
from gan_inversion_bench.registry import GENERATORS
from gan_inversion_bench.weights import WeightsNotFound

PAYLOAD = bytes(range(256)) * 4096 + b"tail"  # 1 MiB + 4 bytes
SHA = hashlib.sha256(PAYLOAD).hexdigest()


class Handler(BaseHTTPRequestHandler):
    """Serves PAYLOAD at any path, honouring ``Range: bytes=N-`` unless told otherwise.

    Server attributes: ``truncate_next`` (the next full response stops after that many bytes and
    closes the connection), ``ignore_range``, ``content_type``, ``requests`` (a log).
    """

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        srv = self.server
        rng = self.headers.get("Range")
        srv.requests.append(rng)
        start = 0
        if rng and not srv.ignore_range:
            m = re.fullmatch(r"bytes=(\d+)-", rng)
            start = int(m.group(1))
            if start >= len(PAYLOAD):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(PAYLOAD)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
        else:
            self.send_response(200)
        body = PAYLOAD[start:]
        self.send_header("Content-Type", srv.content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if srv.truncate_next is not None and start == 0:
            cut, srv.truncate_next = srv.truncate_next, None
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body)


class QuietServer(ThreadingHTTPServer):
    """Does not print the tracebacks of clients that hang up mid-response (e.g. on an HTML page)."""

    def handle_error(self, request, client_address) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    srv = QuietServer(("127.0.0.1", 0), Handler)
    srv.truncate_next = None
    srv.ignore_range = False
    srv.content_type = "application/octet-stream"
    srv.requests = []
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()


def url_of(srv: ThreadingHTTPServer, name: str = "model.bin") -> str:
    host, port = srv.server_address[:2]
    assert host == "127.0.0.1"
    return f"http://{host}:{port}/{name}"


def test_full_download_verified(server, tmp_path: Path) -> None:
    dest = tmp_path / "sub" / "model.bin"
    out = fetch(url_of(server), dest, sha256=SHA, size=len(PAYLOAD), progress=False)
    assert out == dest and dest.read_bytes() == PAYLOAD
    assert not (tmp_path / "sub" / "model.bin.part").exists()
    # already there and valid: no new request
    n = len(server.requests)
    fetch(url_of(server), dest, sha256=SHA, progress=False)
    assert len(server.requests) == n


def test_truncated_transfer_then_resume(server, tmp_path: Path) -> None:
    dest = tmp_path / "model.bin"
    part = tmp_path / "model.bin.part"
    server.truncate_next = 300_000
    with pytest.raises(DownloadError, match="resume") as e:
        fetch(url_of(server), dest, sha256=SHA, progress=False)
    assert not isinstance(e.value, ChecksumError)
    assert not dest.exists() and part.stat().st_size == 300_000
    fetch(url_of(server), dest, sha256=SHA, size=len(PAYLOAD), progress=False)
    assert server.requests[-1] == "bytes=300000-"
    assert dest.read_bytes() == PAYLOAD and not part.exists()


def test_server_ignoring_range_restarts(server, tmp_path: Path) -> None:
    dest = tmp_path / "model.bin"
    (tmp_path / "model.bin.part").write_bytes(b"garbage that is not the start of the file")
    server.ignore_range = True
    fetch(url_of(server), dest, sha256=SHA, progress=False)
    assert server.requests[-1] is not None  # we asked for a range; the 200 answer restarted the file
    assert dest.read_bytes() == PAYLOAD


def test_complete_part_file_is_verified_not_refetched(server, tmp_path: Path) -> None:
    dest = tmp_path / "model.bin"
    (tmp_path / "model.bin.part").write_bytes(PAYLOAD)
    fetch(url_of(server), dest, sha256=SHA, size=len(PAYLOAD), progress=False)
    assert server.requests == [] and dest.read_bytes() == PAYLOAD
    (tmp_path / "x.part").write_bytes(PAYLOAD)  # size unknown: the server answers 416, then we verify
    fetch(url_of(server), tmp_path / "x", sha256=SHA, progress=False)
    assert server.requests == [f"bytes={len(PAYLOAD)}-"] and (tmp_path / "x").read_bytes() == PAYLOAD


def test_wrong_checksum_leaves_nothing(server, tmp_path: Path) -> None:
    dest = tmp_path / "model.bin"
    wrong = "0" * 64
    with pytest.raises(ChecksumError) as e:
        fetch(url_of(server), dest, sha256=wrong, progress=False)
    msg = str(e.value)
    assert f"expected {wrong}" in msg and f"found {SHA}" in msg
    assert not dest.exists() and not (tmp_path / "model.bin.part").exists()
    with pytest.raises(ChecksumError, match="more than the expected 10"):
        fetch(url_of(server), dest, size=10, progress=False)
    assert not dest.exists() and not (tmp_path / "model.bin.part").exists()


def test_html_page_is_rejected(server, tmp_path: Path) -> None:
    server.content_type = "text/html; charset=utf-8"
    with pytest.raises(DownloadError, match="HTML page"):
        fetch(url_of(server), tmp_path / "model.bin", progress=False)
    assert not (tmp_path / "model.bin").exists()


def test_connection_refused_gives_offline_instructions(tmp_path: Path) -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    url = f"http://127.0.0.1:{port}/model.bin"
    dest = tmp_path / "model.bin"
    with pytest.raises(OfflineError) as e:
        fetch(url, dest, progress=False, timeout=5)
    assert isinstance(e.value, WeightsNotFound)
    msg = str(e.value)
    assert url in msg and str(dest) in msg and "--weights PATH" in msg
    assert not dest.exists()


def test_stalled_server_times_out(tmp_path: Path) -> None:
    with socket.socket() as s:  # accepts connections (backlog) but never answers
        s.bind(("127.0.0.1", 0))
        s.listen()
        url = f"http://127.0.0.1:{s.getsockname()[1]}/model.bin"
        with pytest.raises(OfflineError, match="timed out"):
            fetch(url, tmp_path / "model.bin", progress=False, timeout=0.3)
    assert not (tmp_path / "model.bin").exists()


def test_progress_bar_on_stderr_only_when_asked(server, tmp_path: Path, capsys) -> None:
    fetch(url_of(server), tmp_path / "model.bin", sha256=SHA, progress=True)
    err = capsys.readouterr().err
    assert "model.bin" in err and "100%" in err and "1.00M/1.00M" in err  # tqdm's bar, binary units
    fetch(url_of(server), tmp_path / "again.bin", sha256=SHA, progress=False)
    assert capsys.readouterr().err == ""


def test_resumed_progress_bar_starts_at_the_part_file(server, tmp_path: Path, capsys) -> None:
    (tmp_path / "model.bin.part").write_bytes(PAYLOAD[:700_000])
    fetch(url_of(server), tmp_path / "model.bin", sha256=SHA, progress=True)
    assert server.requests == ["bytes=700000-"] and "100%" in capsys.readouterr().err


def test_torch_hub_lacks_resume_and_truncation_checks(server, tmp_path: Path) -> None:
    """The evidence for keeping :func:`fetch` (see download.py's docstring): torch.hub's downloader,
    the candidate among the declared dependencies, against what fetch does on the same server."""
    from torch.hub import download_url_to_file

    hub, ours = tmp_path / "hub", tmp_path / "ours"
    hub.mkdir()
    server.truncate_next = 300_000  # the connection drops after 300 000 of 1 048 580 bytes
    with pytest.raises(RuntimeError, match="invalid hash"):
        download_url_to_file(url_of(server), str(hub / "model.bin"), hash_prefix=SHA, progress=False)
    assert list(hub.iterdir()) == []  # the 300 000 bytes are thrown away ...
    download_url_to_file(url_of(server), str(hub / "model.bin"), hash_prefix=SHA, progress=False)
    assert server.requests == [None, None]  # ... and the retry starts again from byte 0 (no Range)
    server.truncate_next = 300_000  # without a hash, a transfer cut short is put in place as the file
    download_url_to_file(url_of(server), str(hub / "short.bin"), progress=False)
    assert (hub / "short.bin").stat().st_size == 300_000
    server.content_type = "text/html"  # and an HTML page (a share page) is accepted as the file
    download_url_to_file(url_of(server), str(hub / "page.bin"), progress=False)
    assert (hub / "page.bin").is_file()

    server.content_type, server.truncate_next = "application/octet-stream", 300_000
    with pytest.raises(DownloadError, match="kept, call fetch again to resume"):  # noticed without size/sha256
        fetch(url_of(server), ours / "model.bin", progress=False)
    assert not (ours / "model.bin").exists() and (ours / "model.bin.part").stat().st_size == 300_000
    fetch(url_of(server), ours / "model.bin", sha256=SHA, progress=False)
    assert server.requests[-1] == "bytes=300000-" and (ours / "model.bin").read_bytes() == PAYLOAD


# ---- zoo ------------------------------------------------------------------------------------------
def test_zoo_table_is_consistent() -> None:
    names = set(zoo.CHECKPOINTS)
    assert {"pggan_celebahq1024", "pggan_bedroom256", "pggan_churchoutdoor256", "pggan_tower256", "pggan_cat256",
            "stylegan2_ffhq1024", "stylegan2_church256", "stylegan2_cat256", "stylegan2_horse256",
            "biggan_deep_128", "biggan_deep_256", "biggan_deep_512"} <= names
    registered = set(GENERATORS.names())
    for c in zoo.CHECKPOINTS.values():
        assert c.family in registered or c.family == "pggan", c
        assert c.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", c.sha256)
        assert c.size is None or c.size > 0
        assert c.licence and c.filename
        assert c.url is None or c.url.startswith("https://")
    assert zoo.CHECKPOINTS["pggan_celebahq1024"].licence.startswith("CC BY-NC 4.0")
    assert "Nvidia Source Code License-NC" in zoo.CHECKPOINTS["stylegan2_ffhq1024"].licence
    b = zoo.CHECKPOINTS["biggan_deep_256"]
    assert b.url == "https://s3.amazonaws.com/models.huggingface.co/biggan/biggan-deep-256-pytorch_model.bin"
    assert b.extra[0].url == "https://s3.amazonaws.com/models.huggingface.co/biggan/biggan-deep-256-config.json"
    assert b.licence.startswith("Apache-2.0")


def test_local_path_and_cache_dir(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("GIB_CACHE", str(tmp_path / "env"))
    assert zoo.resolve_cache_dir() == tmp_path / "env"
    monkeypatch.delenv("GIB_CACHE")
    assert zoo.resolve_cache_dir() == Path.home() / ".cache" / "gan_inversion_bench" / "checkpoints"
    assert zoo.local_path("pggan_bedroom256", tmp_path) is None
    (tmp_path / "pggan_bedroom256_generator.pth").write_bytes(b"x")
    assert zoo.local_path("pggan_bedroom256", cache_dir=tmp_path) == tmp_path / "pggan_bedroom256_generator.pth"
    # BigGAN needs its config next to the weights
    (tmp_path / "biggan-deep-128-pytorch_model.bin").write_bytes(b"x")
    assert zoo.local_path("biggan_deep_128", tmp_path) is None
    (tmp_path / "biggan-deep-128-config.json").write_text("{}")
    assert zoo.local_path("biggan_deep_128", tmp_path) == tmp_path / "biggan-deep-128-pytorch_model.bin"
    with pytest.raises(WeightsNotFound) as e:
        zoo.require("stylegan2_cat256", tmp_path)
    assert "convert_weight.py" in str(e.value) and str(tmp_path / "stylegan2-cat-config-f.pt") in str(e.value)
    with pytest.raises(KeyError, match="Did you mean 'pggan_bedroom256'"):
        zoo.local_path("pggan_bedroom", tmp_path)


def test_fetch_checkpoint_into_cache(server, tmp_path: Path, monkeypatch) -> None:
    entry = zoo.Checkpoint(name="local_test", family="biggan-deep", resolution=128, filename="w.bin",
                           url=url_of(server, "w.bin"), direct=True, size=len(PAYLOAD), sha256=SHA,
                           licence="test", licence_certain=True,
                           extra=(zoo.ExtraFile("w-config.json", url_of(server, "c.json")),))
    monkeypatch.setitem(zoo.CHECKPOINTS, "local_test", entry)
    path = zoo.fetch_checkpoint("local_test", tmp_path, progress=False)
    assert path == tmp_path / "w.bin" and path.read_bytes() == PAYLOAD
    assert (tmp_path / "w-config.json").is_file()
    assert zoo.local_path("local_test", tmp_path) == path
    with pytest.raises(WeightsNotFound, match="browser"):
        zoo.fetch_checkpoint("pggan_tower256", tmp_path)  # a share page: no automatic download


# ---- download on first use (opt-in) ---------------------------------------------------------------
def _closed_port_url() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    return f"http://127.0.0.1:{port}/w.bin"


def test_require_downloads_on_first_use_only_when_asked(server, tmp_path: Path, monkeypatch) -> None:
    entry = zoo.Checkpoint(name="local_test", family="biggan-deep", resolution=128, filename="w.bin",
                           url=url_of(server, "w.bin"), direct=True, size=len(PAYLOAD), sha256=SHA,
                           licence="test", licence_certain=True)
    monkeypatch.setitem(zoo.CHECKPOINTS, "local_test", entry)
    monkeypatch.delenv("GIB_DOWNLOAD", raising=False)
    assert not zoo.download_on_first_use()
    with pytest.raises(WeightsNotFound, match="is not in the cache"):
        zoo.require("local_test", tmp_path)  # the default: never download
    assert server.requests == [] and not (tmp_path / "w.bin").exists()
    monkeypatch.setenv("GIB_DOWNLOAD", "1")
    assert zoo.download_on_first_use()
    path = zoo.require("local_test", tmp_path)
    assert path == tmp_path / "w.bin" and path.read_bytes() == PAYLOAD and len(server.requests) == 1
    assert zoo.require("local_test", tmp_path, download=True) == path and len(server.requests) == 1  # cached
    with pytest.raises(WeightsNotFound, match="browser"):  # a share page is never fetched automatically
        zoo.require("pggan_tower256", tmp_path, download=True)


def test_first_use_download_failure_says_why_and_how(tmp_path: Path, monkeypatch) -> None:
    entry = zoo.Checkpoint(name="local_test", family="biggan-deep", resolution=128, filename="w.bin",
                           url=_closed_port_url(), direct=True, size=None, sha256=None, licence="test",
                           licence_certain=True)
    monkeypatch.setitem(zoo.CHECKPOINTS, "local_test", entry)
    with pytest.raises(WeightsNotFound) as e:
        zoo.require("local_test", tmp_path, download=True)
    msg = str(e.value)
    assert "downloading 'local_test' failed" in msg and "is not in the cache" in msg and "--weights PATH" in msg
    assert not (tmp_path / "w.bin").exists()


def test_gib_run_download_flag_reaches_the_zoo(tmp_path: Path, monkeypatch) -> None:
    from click.testing import CliRunner

    from gan_inversion_bench.cli import main

    real = zoo.CHECKPOINTS["biggan_deep_128"]
    monkeypatch.setitem(zoo.CHECKPOINTS, "biggan_deep_128",
                        zoo.Checkpoint(**{**real.__dict__, "url": _closed_port_url(),
                                          "extra": tuple(zoo.ExtraFile(e.filename, _closed_port_url())
                                                         for e in real.extra)}))
    monkeypatch.setenv("GIB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("GIB_DOWNLOAD", raising=False)  # restored (removed) after the test
    args = ["run", "-g", "biggan-deep", "--n", "1", "--images", "generated", "--out", str(tmp_path / "r")]
    plain = CliRunner().invoke(main, args)
    assert plain.exit_code != 0 and "is not in the cache" in plain.output and "downloading" not in plain.output
    asked = CliRunner().invoke(main, [*args, "--download"])
    assert asked.exit_code != 0 and "downloading 'biggan_deep_128' failed" in asked.output
