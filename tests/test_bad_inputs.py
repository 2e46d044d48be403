"""Bad input: every case fails (or is skipped) with a message naming the input and what was expected,
and never changes an existing run folder.

Each test works next to a copy of a finished run (``existing``); its rows are compared before and
after. Commands whose input is part of the run's identity (generator, weights, image set) are run
into a fresh folder, because an existing run with another identity refuses them before reading the
input (``test_identity_changing_bad_input_is_refused_by_an_existing_run`` shows that).
"""
from __future__ import annotations

import errno
import io
import os
import pickle
import shutil
import sqlite3
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from gan_inversion_bench import harness
from gan_inversion_bench.cli import main
from gan_inversion_bench.generators.pggan import PGGAN, pggan
from gan_inversion_bench.harness import RunConfig, RunError, run
from gan_inversion_bench.registry import GENERATORS, METHODS, UnknownNameError
from gan_inversion_bench.store import ResultStore
from gan_inversion_bench.weights import CheckpointError, WeightsNotFound

BASE = ["run", "-g", "pggan-tiny", "-m", "single-code", "--images", "generated", "--n", "2", "--iterations", "2",
        "--device", "cpu", "--no-progress"]


def gib(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def assert_refused(result, *fragments: str) -> None:
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    for f in fragments:
        assert f in result.output, f"{f!r} not in:\n{result.output}"


def rows(run_dir: Path) -> list[dict]:
    with ResultStore(run_dir, create=False) as s:
        return s.results()


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("template") / "run"
    r = gib(*BASE, "--out", str(out))
    assert r.exit_code == 0, r.output
    return out


class Existing:
    """A copy of a finished run; by default its rows must be unchanged when the test ends."""

    def __init__(self, template: Path, path: Path):
        shutil.copytree(template, path)
        self.path, self.before, self.may_change = path, rows(path), False

    def assert_unchanged(self) -> None:
        assert rows(self.path) == self.before
        with sqlite3.connect(self.path / "results.sqlite") as c:
            assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        for r in self.before:
            assert (self.path / r["recon_path"]).is_file()


@pytest.fixture
def existing(template, tmp_path):
    e = Existing(template, tmp_path / "existing")
    yield e
    if not e.may_change:
        e.assert_unchanged()


def existing_args(existing: Existing, *extra: str) -> list[str]:
    return [*BASE, *extra, "--out", str(existing.path)]


# ---- image files --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    """A run over an image folder holding one good image; tests add a file and run the same command again."""
    root = tmp_path_factory.mktemp("folder")
    images = root / "images"
    images.mkdir()
    Image.fromarray((np.random.default_rng(0).random((40, 40, 3)) * 255).astype(np.uint8)).save(images / "good.png")
    args = ["run", "-g", "pggan-tiny", "-m", "single-code", "--images", f"folder:{images}", "--iterations", "1",
            "--device", "cpu", "--no-progress", "--out", str(root / "run")]
    assert gib(*args).exit_code == 0
    return images, root / "run", args


def rerun_with(folder_run, name: str, write):
    """Add one file to the image folder, run again; returns (CLI result, rows before, rows after)."""
    images, out, args = folder_run
    path = images / name
    before = rows(out)
    write(path)
    try:
        result = gib(*args)
    finally:
        if path.is_symlink() or path.exists():
            path.unlink()
    assert result.exit_code == 0, result.output
    after = rows(out)
    assert [r for r in after if r["image_id"] in {b["image_id"] for b in before}] == before
    return result, before, after


def assert_skipped(folder_run, name: str, write, *fragments: str) -> None:
    result, before, after = rerun_with(folder_run, name, write)
    path = folder_run[0] / name
    assert f"skipped {path}: " in result.output, result.output
    for f in fragments:
        assert f in result.output, result.output
    assert after == before and "0 to invert" in result.output


def assert_accepted(folder_run, name: str, write) -> dict:
    result, _before, after = rerun_with(folder_run, name, write)
    new = {r["image_id"]: r for r in after}[f"folder/{name}"]
    assert new["status"] == "ok" and "skipped" not in result.output
    with Image.open(folder_run[1] / "targets" / "folder" / f"{name}.png") as im:
        assert im.size == (32, 32) and im.mode == "RGB"
    return new


def png_bytes(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", **kw)
    return buf.getvalue()


def noise(h: int, w: int) -> Image.Image:
    return Image.fromarray((np.random.default_rng(1).random((h, w, 3)) * 255).astype(np.uint8))


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def test_corrupt_png_is_skipped(folder_run):
    assert_skipped(folder_run, "corrupt.png", lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20),
                   "corrupt or truncated image", "expected a complete, valid image file")


def test_truncated_png_is_skipped(folder_run):
    data = png_bytes(noise(40, 40))
    assert_skipped(folder_run, "truncated.png", lambda p: p.write_bytes(data[: len(data) // 2]),
                   "corrupt or truncated image", "expected a complete")


def test_truncated_jpeg_is_skipped(folder_run):
    buf = io.BytesIO()
    noise(64, 64).save(buf, format="JPEG")
    assert_skipped(folder_run, "truncated.jpg", lambda p: p.write_bytes(buf.getvalue()[:300]),
                   "corrupt or truncated image")


def test_text_file_with_an_image_suffix_is_skipped(folder_run):
    assert_skipped(folder_run, "notes.png", lambda p: p.write_text("not an image"),
                   "not a readable image", "expected an image file that Pillow can decode")


def test_empty_file_is_skipped(folder_run):
    assert_skipped(folder_run, "empty.png", lambda p: p.write_bytes(b""), "not a readable image")


def test_non_image_suffix_is_skipped(folder_run):
    assert_skipped(folder_run, "readme.txt", lambda p: p.write_text("hello"), "suffix '.txt' is not an image suffix")


def test_decompression_bomb_header_is_skipped(folder_run):
    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)  # claims 10^10 RGB pixels; 60 bytes on disk
    bomb = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(b"")) \
        + png_chunk(b"IEND", b"")
    assert_skipped(folder_run, "bomb.png", lambda p: p.write_bytes(bomb),
                   "decompression bomb", "expected at most 100,000,000 pixels")


def test_image_over_the_toolkit_pixel_limit_is_skipped(folder_run, monkeypatch):
    monkeypatch.setattr("gan_inversion_bench.imagesets.MAX_PIXELS", 2000)  # good.png has 1600
    assert_skipped(folder_run, "big.png", lambda p: noise(50, 50).save(p),
                   "50x50 pixels is larger than the limit of 2,000 pixels", "expected a smaller image")


def test_symlink_loop_in_the_folder_is_skipped(folder_run):
    def loop(p: Path) -> None:
        os.symlink(p.with_name("loop2.png"), p)
        os.symlink(p, p.with_name("loop2.png"))

    try:
        assert_skipped(folder_run, "loop1.png", loop, "symbolic link loop", "expected an image file")
    finally:
        (folder_run[0] / "loop2.png").unlink(missing_ok=True)


def test_grayscale_is_converted(folder_run):
    assert_accepted(folder_run, "gray.png", lambda p: noise(40, 40).convert("L").save(p))


def test_rgba_is_composited_on_white(folder_run):
    def write(p: Path) -> None:
        a = np.zeros((40, 40, 4), np.uint8)  # fully transparent black
        Image.fromarray(a, "RGBA").save(p)

    assert_accepted(folder_run, "rgba.png", write)
    with Image.open(folder_run[1] / "targets" / "folder" / "rgba.png.png") as im:
        assert np.asarray(im).min() == 255  # white, not black


def test_palette_with_transparency_is_converted(folder_run):
    assert_accepted(folder_run, "palette.gif", lambda p: noise(40, 40).convert("P").save(p, transparency=0))


def test_16_bit_is_scaled_to_8_bit(folder_run):
    def write(p: Path) -> None:
        Image.fromarray(np.full((40, 40), 65535, np.uint16)).save(p)

    assert_accepted(folder_run, "deep.png", write)
    with Image.open(folder_run[1] / "targets" / "folder" / "deep.png.png") as im:
        assert np.asarray(im).min() == 255


def test_cmyk_jpeg_is_converted(folder_run):
    assert_accepted(folder_run, "cmyk.jpg", lambda p: noise(40, 40).convert("CMYK").save(p, format="JPEG"))


def test_one_pixel_image_is_upsampled(folder_run):
    assert_accepted(folder_run, "one.png", lambda p: Image.new("RGB", (1, 1), (255, 0, 0)).save(p))


def test_non_square_images_are_centre_cropped(folder_run):
    assert_accepted(folder_run, "wide.png", lambda p: noise(20, 90).save(p))
    assert_accepted(folder_run, "tall.png", lambda p: noise(90, 20).save(p))


def test_empty_image_folder(tmp_path, existing):
    (tmp_path / "empty").mkdir()
    r = gib(*BASE[:6], f"folder:{tmp_path / 'empty'}", "--out", str(tmp_path / "o"))
    assert_refused(r, f"image folder {tmp_path / 'empty'} holds no readable images (it is empty)")


def test_folder_without_any_readable_image(tmp_path, existing):
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.png").write_text("x")
    (tmp_path / "junk" / "b.md").write_text("x")
    r = gib(*BASE[:6], f"folder:{tmp_path / 'junk'}", "--out", str(tmp_path / "o"))
    assert_refused(r, "holds no readable images (skipped: a.png: ", "b.md: suffix '.md'")


def test_image_folder_that_is_a_symlink_loop(tmp_path, existing):
    os.symlink(tmp_path / "loop", tmp_path / "loop")
    r = gib(*BASE[:6], f"folder:{tmp_path / 'loop'}", "--out", str(tmp_path / "o"))
    assert_refused(r, f"image folder {tmp_path / 'loop'} does not exist or is not a directory")


# ---- checkpoints (PGGAN loader, through --weights and through the API) ------------------------------
def pggan4_state() -> dict[str, torch.Tensor]:
    """A complete 4×4 PGGAN state_dict whose tensors are stride-0 views (a few KB on disk)."""
    return {k: torch.zeros(()).expand(v.shape) for k, v in PGGAN(resolution=4).state_dict().items()}


def check_checkpoint(tmp_path: Path, path: Path, *fragments: str, error=CheckpointError) -> None:
    r = gib("run", "-g", "pggan", "--weights", str(path), "-m", "single-code", "--images", "generated", "--n", "1",
            "--device", "cpu", "--no-progress", "--out", str(tmp_path / "o"))
    assert_refused(r, str(path), *fragments)
    with pytest.raises(error) as e:
        pggan(weights=path)
    assert str(path) in str(e.value) and all(f in str(e.value) for f in fragments)


def test_checkpoint_with_missing_keys(tmp_path, existing):
    state = pggan4_state()
    del state["layer1.conv.weight"]
    torch.save(state, tmp_path / "g.pth")
    check_checkpoint(tmp_path, tmp_path / "g.pth", "does not match the expected architecture",
                     "missing keys (1)", "layer1.conv.weight")


def test_checkpoint_with_wrong_shapes(tmp_path, existing):
    state = pggan4_state()
    state["layer1.conv.weight"] = torch.zeros(()).expand(256, 512, 3, 3)
    torch.save(state, tmp_path / "g.pth")
    check_checkpoint(tmp_path, tmp_path / "g.pth", "wrong shapes (key: expected vs found)",
                     "layer1.conv.weight: (512, 512, 3, 3) vs (256, 512, 3, 3)")


def test_checkpoint_in_a_wrong_container(tmp_path, existing):
    torch.save([torch.zeros(3)], tmp_path / "g.pth")
    check_checkpoint(tmp_path, tmp_path / "g.pth", "expected a PGGAN state_dict (a dict of tensors), found list")


def test_checkpoint_wrapped_in_a_training_dict(tmp_path, existing):
    torch.save({"generator": pggan4_state(), "epoch": 3}, tmp_path / "g.pth")
    check_checkpoint(tmp_path, tmp_path / "g.pth", "no PGGAN keys", "expected the bare state_dict",
                     "found keys ['generator', 'epoch']")


def test_truncated_checkpoint(tmp_path, existing):
    torch.save(pggan4_state(), tmp_path / "full.pth")
    data = (tmp_path / "full.pth").read_bytes()
    (tmp_path / "g.pth").write_bytes(data[: len(data) // 2])
    check_checkpoint(tmp_path, tmp_path / "g.pth", "not a readable torch checkpoint (truncated or corrupt?)")


def test_checkpoint_that_is_an_image(tmp_path, existing):
    noise(8, 8).save(tmp_path / "g.png")
    check_checkpoint(tmp_path, tmp_path / "g.png", "not a readable torch checkpoint",
                     "expected a file written by torch.save")
    with pytest.raises(CheckpointError) as info:
        pggan(weights=tmp_path / "g.png")
    assert "weights_only` set to `False`" not in str(info.value)


def test_checkpoint_that_would_unpack_beyond_the_available_memory(tmp_path, existing, monkeypatch):
    """A zip whose member declares 64 MiB (deflated zeros: 64 KB on disk) against 32 MiB available:
    refused from the zip directory, before torch.load reads a byte of it."""
    import zipfile

    from gan_inversion_bench import weights

    with zipfile.ZipFile(tmp_path / "g.pth", "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/data/0", bytes(64 << 20))
    assert (tmp_path / "g.pth").stat().st_size < 1 << 20
    assert weights.unpacked_size(tmp_path / "g.pth") == 64 << 20
    assert 64 << 20 < weights.available_memory() < 1 << 50  # this machine's, in bytes
    monkeypatch.setattr(weights, "available_memory", lambda: 32 << 20)
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load was reached"))
    check_checkpoint(tmp_path, tmp_path / "g.pth", "would unpack to 0.06 GiB, more than the 0.03 GiB of memory "
                     "available")
    (tmp_path / "legacy.pth").write_bytes(b"x" * 1000)  # not a zip: its file size counts
    assert weights.unpacked_size(tmp_path / "legacy.pth") == 1000


def test_checkpoint_that_is_a_text_file(tmp_path, existing):
    (tmp_path / "g.pth").write_text("hello world")  # torch.load raises KeyError on it
    check_checkpoint(tmp_path, tmp_path / "g.pth", "not a readable torch checkpoint")


def test_checkpoint_from_progressive_growing_snapshot(tmp_path, existing):
    state = pggan4_state()
    state["lod"] = torch.tensor(1.0)
    torch.save(state, tmp_path / "g.pth")
    check_checkpoint(tmp_path, tmp_path / "g.pth", "lod = 1", "only final models (lod 0) are supported")


class _RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("container", ["torch-zip", "raw-pickle"])
def test_checkpoint_pickle_that_tries_to_execute_code(tmp_path, existing, container):
    marker = tmp_path / "code-was-executed"
    payload = {"layer0.conv.weight": torch.zeros(1), "x": _RunsCode(marker)}
    if container == "torch-zip":
        torch.save(payload, tmp_path / "g.pth")
    else:
        (tmp_path / "g.pth").write_bytes(pickle.dumps(payload, protocol=2))
    check_checkpoint(tmp_path, tmp_path / "g.pth", "refused by the safe loader (weights_only=True)")
    assert not marker.exists(), "the pickle's code ran"


def test_checkpoint_that_does_not_exist(tmp_path, existing):
    check_checkpoint(tmp_path, tmp_path / "nope.pth", "does not exist", error=WeightsNotFound)


def test_checkpoint_that_is_a_directory(tmp_path, existing):
    (tmp_path / "g.pth").mkdir()
    check_checkpoint(tmp_path, tmp_path / "g.pth", "is not a file")


def test_identity_changing_bad_input_is_refused_by_an_existing_run(tmp_path, existing):
    (tmp_path / "g.pth").write_bytes(b"junk")
    r = gib(*existing_args(existing, "-g", "pggan", "--weights", str(tmp_path / "g.pth")))
    assert_refused(r, f"run folder {existing.path} was made with a different configuration",
                   "use another --out folder")


def test_a_folder_whose_run_failed_before_any_result_accepts_the_corrected_command(tmp_path, existing):
    (tmp_path / "typo.pth").write_bytes(b"junk")
    out = str(tmp_path / "o")
    assert_refused(gib("run", "-g", "pggan", "--weights", str(tmp_path / "typo.pth"), *BASE[3:], "--out", out),
                   "not a readable torch checkpoint")
    assert not (tmp_path / "o").exists()  # the failed command removed the folder it had created
    r = gib(*BASE, "--out", out)  # another generator: accepted, nothing of the failed command is left
    assert r.exit_code == 0, r.output
    assert len(rows(tmp_path / "o")) == 2


def test_a_folder_that_holds_no_result_accepts_another_configuration(tmp_path, existing):
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("a user's file")  # the folder existed before: it is not removed
    (tmp_path / "typo.pth").write_bytes(b"junk")
    assert_refused(gib("run", "-g", "pggan", "--weights", str(tmp_path / "typo.pth"), *BASE[3:], "--out", str(out)),
                   "not a readable torch checkpoint")
    assert (out / "keep.txt").read_text() == "a user's file"
    r = gib(*BASE, "--out", str(out))
    assert r.exit_code == 0, r.output
    assert len(rows(out)) == 2


# ---- names and numbers ----------------------------------------------------------------------------
def test_unknown_generator(existing):
    assert_refused(gib(*existing_args(existing, "-g", "pgan-tiny")), "unknown generator 'pgan-tiny'",
                   "Did you mean 'pggan-tiny'", "Valid generators:")
    with pytest.raises(UnknownNameError, match="Valid generators"):
        GENERATORS.create("pgan-tiny")


def test_unknown_method(existing):
    assert_refused(gib(*existing_args(existing, "-m", "single-cod")), "unknown method 'single-cod'",
                   "Did you mean 'single-code'")
    with pytest.raises(UnknownNameError, match="Did you mean 'single-code'"):
        run(RunConfig(generator="pggan-tiny", methods=["single-cod"], images="generated", n_generated=2,
                      device="cpu"), existing.path, progress=False, echo=lambda s: None)


def test_split_point_out_of_range(existing):
    try:
        METHODS.get("mganprior")
        has_mganprior = True
    except Exception:  # noqa: BLE001 - not written yet
        has_mganprior = False
    if has_mganprior:
        r = gib(*existing_args(existing, "-m", "mganprior", "--set", "mganprior.split=99"))
        assert_refused(r, "split point 99 is out of range for generator pggan-tiny: expected 0 … 9")
    G = GENERATORS.create("pggan-tiny")
    with pytest.raises(ValueError, match=r"split point 99 is out of range for generator pggan-tiny: expected 0 … 9"):
        G.resolve_split(99)
    with pytest.raises(ValueError, match=r"unknown split point 'conv99'.*valid names: input, 4x4.dense"):
        G.resolve_split("conv99")


@pytest.mark.parametrize("value", ["0", "-3"])
def test_zero_or_negative_iterations_option(existing, value):
    assert_refused(gib(*existing_args(existing, "--iterations", value)), "Invalid value for --iterations",
                   f"must be >= 1, got {value}")


def test_negative_iterations_setting(existing):
    assert_refused(gib(*existing_args(existing, "--set", "single-code.iterations=-1")),
                   "iterations must be a positive integer, got -1")


def test_batch_size_zero(existing):
    assert_refused(gib(*existing_args(existing, "--batch-size", "0")), "Invalid value for --batch-size",
                   "must be >= 1, got 0")
    with pytest.raises(RunError, match="batch size must be >= 1, got 0"):
        run(RunConfig(generator="pggan-tiny", methods=["single-code"], images="generated", n_generated=2,
                      device="cpu", batch_size=0), existing.path, progress=False, echo=lambda s: None)


def test_invalid_set_values(existing):
    assert_refused(gib(*existing_args(existing, "--set", "single-code.lr=-1")),
                   "lr must be a positive finite number, got -1")
    assert_refused(gib(*existing_args(existing, "--set", "single-code.learning_rate=0.1")),
                   "unknown setting(s) ['learning_rate']", "valid settings:")
    assert_refused(gib(*existing_args(existing, "--set", "noequals")), "expected KEY=VALUE, got 'noequals'")


def test_an_invalid_setting_of_one_method_fails_before_any_method_runs(existing):
    args = [a for a in existing_args(existing, "--set", "single-code.lr=-1") if a not in ("-m", "single-code")]
    assert_refused(gib(*args), "lr must be a positive finite number, got -1")
    with sqlite3.connect(existing.path / "results.sqlite") as c:
        assert c.execute("SELECT COUNT(*) FROM sessions").fetchone()[0] == 1  # no new session: nothing started


# ---- the output folder ------------------------------------------------------------------------------
def test_output_folder_under_a_regular_file(tmp_path, existing):
    (tmp_path / "file").write_text("x")
    assert_refused(gib(*BASE, "--out", str(tmp_path / "file" / "run")),
                   f"output folder {tmp_path / 'file' / 'run'} is not writable")


def test_unwritable_output_folder(existing, monkeypatch):
    real = Path.write_bytes

    def denied(self, data):
        if self.name.startswith(".write-test"):
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", denied)  # tests run as root, so chmod would not stop them
    assert_refused(gib(*existing_args(existing)), f"output folder {existing.path} is not writable",
                   "Permission denied")


def test_existing_file_that_is_not_a_results_database(tmp_path, existing):
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "results.sqlite").write_bytes(b"not sqlite " * 200)
    assert_refused(gib(*BASE, "--out", str(tmp_path / "o")), "results.sqlite: not a usable results database")
    assert (tmp_path / "o" / "results.sqlite").read_bytes() == b"not sqlite " * 200


def _page_header_size(data: bytes, offset: int) -> int:
    """A b-tree page's header: 8 bytes on a leaf page (types 10, 13), 12 on an interior one (2, 5)."""
    return 8 if data[offset] in (10, 13) else 12


@pytest.mark.parametrize("page", ["results", "schema"])
def test_a_damaged_database_page_is_refused_on_open(existing, page):
    """The cell pointers of the results table's root page (found by quick_check on open, or by the
    first statement that reads it, depending on the page's layout) or of the schema page (met by the
    very first statement) overwritten: neither a resume nor a table counts any of the rows as done."""
    db = existing.path / "results.sqlite"
    with sqlite3.connect(db) as c:
        page_size = c.execute("PRAGMA page_size").fetchone()[0]
        root = c.execute("SELECT rootpage FROM sqlite_master WHERE name = 'results'").fetchone()[0]
    c.close()
    assert not (existing.path / "results.sqlite-wal").exists() or \
        (existing.path / "results.sqlite-wal").stat().st_size == 0  # every page is in the main file
    data = bytearray(db.read_bytes())
    header = (root - 1) * page_size if page == "results" else 100  # page 1 starts after the file header
    start = header + _page_header_size(data, header)
    data[start:start + 8] = b"\xff" * 8
    db.write_bytes(bytes(data))
    existing.may_change = True
    for args in (existing_args(existing), ["table", str(existing.path)]):
        assert_refused(gib(*args), "results.sqlite: the results database is damaged (SQLite",
                       "none of its rows can be trusted")
    assert db.read_bytes() == bytes(data)  # nothing was written into it


def test_full_disk_while_writing_a_png(existing, monkeypatch):
    def full(image, path):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(harness.invert, "save_png", full)  # where the harness writes reconstructions
    args = existing_args(existing, "--iterations", "3")  # a new setting: new work for the existing run
    assert_refused(gib(*args), f"cannot write into the run folder {existing.path}", "No space left on device",
                   "free some disk space", "run the same command again to resume")
    existing.assert_unchanged()
    monkeypatch.undo()
    existing.may_change = True
    assert "0 done, 2 to invert" in gib(*args).output
    assert len(rows(existing.path)) == 4


def test_full_disk_in_the_database(existing, monkeypatch):
    real_init = ResultStore.__init__

    def full_database(self, *a, **kw):  # SQLite itself reports SQLITE_FULL once the file would grow
        real_init(self, *a, **kw)
        pages = self.conn.execute("PRAGMA page_count").fetchone()[0]
        self.conn.execute(f"PRAGMA max_page_count = {pages}")

    monkeypatch.setattr(ResultStore, "__init__", full_database)
    args = existing_args(existing, "--iterations", "3")
    assert_refused(gib(*args), f"cannot write into the run folder {existing.path}", "database or disk is full",
                   "run the same command again to resume")
    existing.assert_unchanged()
    assert not list(existing.path.glob("**/*.tmp"))
    monkeypatch.undo()
    existing.may_change = True
    assert gib(*args).exit_code == 0 and len(rows(existing.path)) == 4


# ---- the config file ------------------------------------------------------------------------------
def test_config_file_is_applied_and_the_command_line_wins(tmp_path, existing):
    (tmp_path / "c.toml").write_text('generator = "pggan-tiny"\nmethod = ["single-code"]\nimages = "generated"\n'
                                     'n = 5\niterations = 2\ndevice = "cpu"\nno-progress = true\n')
    r = gib("run", "--config", str(tmp_path / "c.toml"), "--n", "2", "--out", str(existing.path))
    assert r.exit_code == 0 and "2 done, 0 to invert" in r.output


@pytest.mark.parametrize("name, text, message", [
    ("bad.toml", 'n = [4\n', "invalid TOML"),
    ("bad.json", '{"n": 4,}', "invalid JSON"),
    ("list.json", '[1, 2]', "expected a table of `gib run` options"),
    ("unknown.toml", 'n = 2\nlearning_rate = 0.1\n', "unknown option 'learning_rate'; valid: batch-size"),
    ("type.toml", 'n = "two"\n', "'two' is not a valid integer"),
    ("many.json", '{"seed": [1, 2]}', "'seed' takes one value, found [1, 2]"),
])
def test_invalid_config_file(tmp_path, existing, name, text, message):
    (tmp_path / name).write_text(text)
    r = gib("run", "--config", str(tmp_path / name), "--out", str(existing.path))
    assert_refused(r, "Invalid value for --config", str(tmp_path / name), message)


def test_config_file_that_does_not_exist(tmp_path, existing):
    assert_refused(gib("run", "--config", str(tmp_path / "nope.toml"), "--out", str(existing.path)),
                   "nope.toml' does not exist")
