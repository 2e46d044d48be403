"""Trustworthy run folders: a run folder from someone else is safe to open, and resume never mixes
different work (docs/reliability.md, "Run folders from someone else" and "Resume and content").

Each attack plants something in a copy of a finished run (a symbolic link, a crafted database row)
that points at a *victim* outside the folder; the victim must stay unchanged and unread: its bytes
and mtime are compared, and its access time is set to 1970 first, so that any read moves it (on a
relatime or strictatime file system; on noatime the check cannot tell). As a non-root user the
victim is also made unreadable (chmod 000); root ignores that, hence the access-time check.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from gan_inversion_bench import harness, tables
from gan_inversion_bench.cli import main
from gan_inversion_bench.generators.pggan import pggan_tiny
from gan_inversion_bench.harness import RunConfig, RunError, run
from gan_inversion_bench.methods import pmsfc as P
from gan_inversion_bench.methods import pmsfc_subspaces as S1
from gan_inversion_bench.registry import GENERATORS
from gan_inversion_bench.report import write_report
from gan_inversion_bench.safe_paths import UnsafePathError, torch_load_cached
from gan_inversion_bench.store import ResultStore, StoreError

ROOT = os.geteuid() == 0
SECRET = b"\x89PNG victim bytes outside the run folder"


def config(**kw) -> RunConfig:
    base = dict(generator="pggan-tiny", methods=["single-code"], images="generated", n_generated=2, budget=2,
                device="cpu", batch_size=2, latency=False)
    base.update(kw)
    return RunConfig(**base)


def quiet_run(cfg: RunConfig, out: Path, messages: list[str] | None = None) -> Path:
    return run(cfg, out, progress=False, echo=(messages.append if messages is not None else lambda s: None))


def gib(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def rows(run_dir: Path) -> list[dict]:
    with ResultStore(run_dir, create=False) as s:
        return s.results()


def sql(run_dir: Path, statement: str, *params) -> None:
    with sqlite3.connect(run_dir / "results.sqlite") as db:
        db.execute(statement, params)
    db.close()


class Victim:
    """A file outside the run folder: unchanged and unread when the test ends."""

    def __init__(self, path: Path, data: bytes = SECRET):
        path.write_bytes(data)
        os.utime(path, (0, path.stat().st_mtime))
        self.path, self.data, self.mtime = path, data, path.stat().st_mtime_ns
        if not ROOT:
            path.chmod(0)

    def assert_untouched(self) -> None:
        st = self.path.stat()
        assert st.st_mtime_ns == self.mtime, f"{self.path} was written"
        assert st.st_atime == 0, f"{self.path} was read"
        if not ROOT:
            self.path.chmod(0o644)
        assert self.path.read_bytes() == self.data


class VictimDir:
    """A folder outside the run folder (with a PNG and a ``*.tmp`` file): nothing added, removed or read."""

    def __init__(self, path: Path):
        path.mkdir()
        self.path = path
        self.files = [Victim(path / "keep.png"), Victim(path / "old.tmp", b"not a temporary file of ours")]

    def assert_untouched(self) -> None:
        assert sorted(p.name for p in self.path.iterdir()) == ["keep.png", "old.tmp"]
        for f in self.files:
            f.assert_untouched()


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    return quiet_run(config(), tmp_path_factory.mktemp("template") / "run")


@pytest.fixture
def run_dir(template, tmp_path) -> Path:
    shutil.copytree(template, tmp_path / "run", symlinks=True)
    return tmp_path / "run"


def key_of(run_dir: Path) -> str:
    return rows(run_dir)[0]["method_key"]


# ---- the lock file and the entries `gib run` writes ------------------------------------------------------
def test_symlinked_lock_file_is_refused(run_dir, tmp_path):
    victim = Victim(tmp_path / "victim.txt")
    (run_dir / ".lock").unlink(missing_ok=True)
    (run_dir / ".lock").symlink_to(victim.path)
    with pytest.raises(UnsafePathError, match=r"\.lock is a symlink to .*victim\.txt \(not followed\)"):
        quiet_run(config(), run_dir)
    with pytest.raises(UnsafePathError, match=r"\.lock: refused: \.lock is a symlink"), harness.run_lock(run_dir):
        pass
    victim.assert_untouched()


def test_hard_linked_lock_file_is_refused(run_dir, tmp_path):
    victim = Victim(tmp_path / "victim.txt")
    (run_dir / ".lock").unlink(missing_ok=True)
    os.link(victim.path, run_dir / ".lock")  # writing the holder's pid would truncate the victim
    with pytest.raises(UnsafePathError, match=r"\.lock: refused: a hard link \(2 names\)"), harness.run_lock(run_dir):
        pass
    victim.assert_untouched()


@pytest.mark.parametrize("entry", ["cache", "targets", "recon"])
def test_symlinked_folder_of_the_run_is_refused(run_dir, tmp_path, entry):
    victim = VictimDir(tmp_path / "victim")
    if (run_dir / entry).exists():
        shutil.rmtree(run_dir / entry)
    (run_dir / entry).symlink_to(victim.path, target_is_directory=True)
    with pytest.raises(UnsafePathError, match=rf"{entry} is a symlink to .*victim \(not followed\)"):
        quiet_run(config(), run_dir)
    victim.assert_untouched()


def test_symlinked_recon_key_folder_is_refused(run_dir, tmp_path):
    victim = VictimDir(tmp_path / "victim")
    key = key_of(run_dir)
    shutil.rmtree(run_dir / "recon" / key)
    (run_dir / "recon" / key).symlink_to(victim.path, target_is_directory=True)
    sql(run_dir, "DELETE FROM results")  # the images are inverted again and their PNGs written
    with pytest.raises(UnsafePathError, match=rf"recon/{key} is a symlink to .*victim \(not followed\)"):
        quiet_run(config(), run_dir)
    victim.assert_untouched()
    assert rows(run_dir) == []  # nothing stored without its PNG


def test_symlinked_reconstruction_png_is_refused(run_dir, tmp_path):
    victim = Victim(tmp_path / "victim.png")
    png = run_dir / "recon" / key_of(run_dir) / "generated" / "000.png"
    png.unlink()
    png.symlink_to(victim.path)
    sql(run_dir, "DELETE FROM results WHERE image_id = 'generated/000'")
    with pytest.raises(UnsafePathError, match=r"generated/000\.png is a symlink to .*victim\.png \(not followed\)"):
        quiet_run(config(), run_dir)
    victim.assert_untouched()


@pytest.mark.parametrize("name", ["generated/000.png", "generated_latents.pt"])
def test_symlinked_target_file_is_refused(run_dir, tmp_path, name):
    victim = Victim(tmp_path / "victim")
    (run_dir / "targets" / name).unlink()  # a missing target is written again: through the link?
    (run_dir / "targets" / name).symlink_to(victim.path)
    with pytest.raises(UnsafePathError, match=rf"targets/{name} is a symlink"):
        quiet_run(config(), run_dir)
    victim.assert_untouched()


def test_stale_temp_file_clean_up_never_deletes_through_a_link(run_dir, tmp_path):
    victim, victim_dir = Victim(tmp_path / "victim.png"), VictimDir(tmp_path / "victim")
    folder = run_dir / "recon" / key_of(run_dir) / "generated"
    (folder / ".000.png.12345.tmp").symlink_to(victim.path)  # a link named like our temporary files
    (folder / "linked").symlink_to(victim_dir.path, target_is_directory=True)  # with old.tmp inside
    (run_dir / "targets" / ".x.png.1.ab.tmp").write_bytes(b"left by a killed run")
    messages: list[str] = []
    quiet_run(config(), run_dir, messages)
    assert "removed 2 temporary file(s) left by an earlier run that was killed" in messages
    assert not os.path.lexists(folder / ".000.png.12345.tmp")  # the link itself is gone
    victim.assert_untouched()
    victim_dir.assert_untouched()  # the walk never entered the linked folder


def test_symlinked_results_database_is_refused_by_every_command(run_dir, tmp_path):
    victim = Victim(tmp_path / "victim.sqlite", (run_dir / "results.sqlite").read_bytes())
    (run_dir / "results.sqlite").unlink()
    (run_dir / "results.sqlite").symlink_to(victim.path)
    with pytest.raises(UnsafePathError, match=r"results\.sqlite is a symlink to .*victim\.sqlite \(not followed\)"):
        quiet_run(config(), run_dir)  # refused before the lock is taken
    with pytest.raises(StoreError, match=r"results\.sqlite: refused: a symlink to .*victim\.sqlite"):
        ResultStore(run_dir, create=False)
    for args in (["table", run_dir], ["report", run_dir], ["report", run_dir, "--out", tmp_path / "out"]):
        r = gib(*args)
        assert r.exit_code == 1 and "results.sqlite: refused: a symlink" in r.output, r.output
        assert "Traceback" not in r.output
    victim.assert_untouched()


def test_symlinked_sqlite_side_file_is_refused(run_dir, tmp_path):
    victim = Victim(tmp_path / "victim")
    (run_dir / "results.sqlite-wal").symlink_to(victim.path)  # SQLite would read, write and truncate it
    r = gib("table", run_dir)
    assert r.exit_code == 1 and "results.sqlite-wal: refused: a symlink" in r.output
    with pytest.raises(UnsafePathError, match=r"results\.sqlite-wal is a symlink"):
        quiet_run(config(), run_dir)
    victim.assert_untouched()
    (run_dir / "results.sqlite-wal").unlink()
    os.link(run_dir / "results.sqlite", tmp_path / "other-name.sqlite")  # writing would change the other file
    with pytest.raises(StoreError, match=r"results\.sqlite: refused: a hard link \(2 names\)"):
        quiet_run(config(), run_dir)


def test_symlinked_pmsfc_cache_file_is_not_read_nor_written_through(tmp_path):
    G = GENERATORS.create("pggan-tiny")
    fast = {"discovery_iterations": 3, "codes_per_subspace": 2, "iterations": 1}
    P.PmSFC(**fast).prepare(G, seed=0, cache_dir=tmp_path / "cache")
    entry = next((tmp_path / "cache").glob("pmsfc-S-*.pt"))
    victim = Victim(tmp_path / "victim.pt", entry.read_bytes())
    entry.unlink()
    entry.symlink_to(victim.path)
    with pytest.warns(UserWarning, match=r"ignoring unreadable cache file .*refused: a symlink"):
        assert torch_load_cached(entry) is None
    with pytest.warns(UserWarning, match="refused: a symlink"):  # recomputed, and cached anew
        again = P.PmSFC(**fast).prepare(G, seed=0, cache_dir=tmp_path / "cache")
    assert not again.from_cache_ and entry.is_file() and not entry.is_symlink()
    victim.assert_untouched()


@pytest.mark.parametrize("planted", ["subspaces.json", "loss_curves.csv", "S_by_cluster.png", "cache", "."])
def test_gib_discover_never_writes_through_a_planted_link(tmp_path, planted):
    """`gib discover --out RUN/discover` into a folder from someone else: a link planted at any of its
    files, at its cache folder or as the folder itself is refused by name; the victim outside stays
    untouched."""
    from gan_inversion_bench.methods.pmsfc_discover import discover

    out = tmp_path / "run" / "discover"
    out.parent.mkdir()
    if planted == ".":
        victim_dir = VictimDir(tmp_path / "elsewhere")
        out.symlink_to(victim_dir.path, target_is_directory=True)
    else:
        out.mkdir()
        if planted == "cache":
            victim_dir = VictimDir(tmp_path / "elsewhere")
            (out / "cache").symlink_to(victim_dir.path, target_is_directory=True)
        else:
            victim = Victim(tmp_path / "victim")
            (out / planted).symlink_to(victim.path)
    with pytest.raises(UnsafePathError, match="symlink"):
        discover(GENERATORS.create("pggan-tiny"), out_dir=out, discovery_iterations=2, n_subspaces=2, n_pairs=1)
    if planted in ("cache", "."):
        victim_dir.assert_untouched()
    else:
        victim.assert_untouched()
        assert (out / planted).is_symlink()


# ---- gib table and gib report ------------------------------------------------------------------------------
def test_symlinked_report_folder_is_never_deleted_through(run_dir, tmp_path):
    victim = VictimDir(tmp_path / "victim")
    (run_dir / "report").symlink_to(victim.path, target_is_directory=True)
    r = gib("report", run_dir)
    assert r.exit_code == 1 and "report: refused: a symlink" in r.output and "use --out DIR" in r.output
    r = gib("report", run_dir, "--out", victim.path)  # --out replaces only an earlier report
    assert r.exit_code == 1 and "holds something else than an earlier report" in r.output
    victim.assert_untouched()
    r = gib("report", run_dir, "--out", tmp_path / "elsewhere")
    assert r.exit_code == 0 and (tmp_path / "elsewhere" / "index.html").is_file()
    assert gib("report", run_dir, "--out", tmp_path / "elsewhere").exit_code == 0  # an earlier report: replaced


def test_symlinked_table_file_is_refused_and_the_table_still_printed(run_dir, tmp_path):
    victim = Victim(tmp_path / "victim.md")
    (run_dir / "table.md").unlink(missing_ok=True)
    (run_dir / "table.md").symlink_to(victim.path)
    r = gib("table", run_dir)
    assert r.exit_code == 0 and "PSNR (dB) ↑" in r.output
    assert "note: the table was printed only" in r.output and "table.md is a symlink" in r.output
    victim.assert_untouched()


def test_gib_run_stores_every_result_and_says_so_when_a_table_file_is_a_planted_link(run_dir, tmp_path):
    victim, before = Victim(tmp_path / "victim.csv"), {(r["method_key"], r["image_id"]) for r in rows(run_dir)}
    (run_dir / "table.csv").unlink(missing_ok=True)
    (run_dir / "table.csv").symlink_to(victim.path)
    r = gib("run", "-g", "pggan-tiny", "-m", "single-code", "--images", "generated", "--n", "2", "--iterations", "2",
            "--device", "cpu", "--batch-size", "2", "--no-latency", "--no-progress", "--out", run_dir)
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "PSNR (dB) ↑" in r.output, "the table is printed before the files are refused"
    assert f"every result is stored in {run_dir / 'results.sqlite'}" in r.output
    assert "table.csv is a symlink" in r.output and f"gib table {run_dir} --out DIR" in r.output
    after = [(r["method_key"], r["image_id"]) for r in rows(run_dir)]
    assert before <= set(after) and len(after) == len(set(after)) >= 2  # nothing lost, each result once
    victim.assert_untouched()


def test_a_planted_rollback_journal_is_named_and_a_resume_settles_it(run_dir):
    (run_dir / "results.sqlite-journal").write_bytes(b"not a journal of ours")
    r = gib("table", run_dir)
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "results.sqlite-journal is present: a rollback journal" in r.output, r.output
    assert "move it out of the folder" in r.output
    quiet_run(config(), run_dir)  # read-write: SQLite discards a journal without a valid header
    assert not (run_dir / "results.sqlite-journal").exists()
    assert gib("table", run_dir).exit_code == 0 and len(rows(run_dir)) == 2


def test_database_paths_pointing_outside_are_not_followed(run_dir, tmp_path):
    """Crafted rows: ``recon_path`` with ``..`` or absolute, and an image id with ``..`` (which names
    the target PNG ``targets/<id>.png``); the report lists them as not shown."""
    victim = Victim(tmp_path / "victim.png")
    sql(run_dir, "UPDATE results SET recon_path = ? WHERE image_id = 'generated/000'", "../../victim.png")
    sql(run_dir, "UPDATE results SET recon_path = ?, image_id = ? WHERE image_id = 'generated/001'",
        str(victim.path), "../../victim")
    page = write_report(run_dir).read_text(encoding="utf-8")
    assert "<code>../../victim.png</code>: the path contains &#39;..&#39;" in page
    assert f"<code>{victim.path}</code>: an absolute path" in page
    assert "<code>targets/../../victim.png</code>: the path contains &#39;..&#39;" in page
    copied = [p for p in (run_dir / "report").rglob("*") if p.is_file()]
    assert copied and all(p.read_bytes() != SECRET for p in copied)
    victim.assert_untouched()


def test_symlinked_pngs_are_not_copied_into_the_report(run_dir, tmp_path):
    victim = Victim(tmp_path / "victim.png")
    for png in (run_dir / "targets" / "generated" / "000.png",
                run_dir / "recon" / key_of(run_dir) / "generated" / "001.png"):
        png.unlink()
        png.symlink_to(victim.path)
    page = write_report(run_dir).read_text(encoding="utf-8")
    assert "<code>targets/generated/000.png</code>: targets/generated/000.png is a symlink" in page
    assert f"generated/001.png</code>: recon/{key_of(run_dir)}/generated/001.png is a symlink" in page
    assert all(p.read_bytes() != SECRET for p in (run_dir / "report").rglob("*") if p.is_file())
    victim.assert_untouched()


def _unshare_works() -> bool:
    if not ROOT or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs none /mnt"], capture_output=True, timeout=30)
    return probe.returncode == 0


CLI_SCRIPT = """
import json, sys
from click.testing import CliRunner
from gan_inversion_bench.cli import main
out = []
for r in (CliRunner().invoke(main, c) for c in json.loads(sys.argv[1])):
    escaped = r.exception is not None and not isinstance(r.exception, SystemExit)
    out.append((r.exit_code, r.output + (f"ESCAPED {r.exception!r}" if escaped else "")))
print(json.dumps(out))
"""


def read_only_commands(run_dir: Path, commands: list[list[str]]) -> list[tuple[int, str]]:
    """(exit code, output) of ``gib`` commands run in a child process while ``run_dir`` is read-only:
    as a non-root user, after ``chmod -R a-w`` (permission denied); as root, whom chmod does not
    stop, in the child's own mount namespace where ``run_dir`` is a read-only bind mount (read-only
    file system). An exception that escaped a command is appended to its output."""
    python = [sys.executable, "-c", CLI_SCRIPT, json.dumps(commands)]
    if not ROOT:
        subprocess.run(["chmod", "-R", "a-w", str(run_dir)], check=True)
        try:
            out = subprocess.run(python, capture_output=True, text=True, timeout=300)
        finally:
            subprocess.run(["chmod", "-R", "u+w", str(run_dir)], check=True)
    elif _unshare_works():
        d = shlex.quote(str(run_dir))
        shell = (f"mount --bind {d} {d} && mount -o remount,bind,ro {d} && touch {d}/probe 2>/dev/null; "
                 f"exec {' '.join(shlex.quote(a) for a in python)}")
        out = subprocess.run(["unshare", "-m", "sh", "-c", shell], capture_output=True, text=True, timeout=300)
    else:
        pytest.skip("running as root without mount namespaces: no way to make a folder read-only here")
    assert out.returncode == 0, out.stderr[-3000:]
    assert not (run_dir / "probe").exists()  # it really was read-only
    return [(code, text) for code, text in json.loads(out.stdout.strip().splitlines()[-1])]


def test_table_and_report_on_a_read_only_run_folder(run_dir, tmp_path):
    """``gib table`` prints and says it could not write its files; ``gib report`` says to use --out,
    which works. Made read-only for real: ``chmod -R a-w`` as a non-root user; as root (these tests
    usually run as root, and chmod does not stop root) a read-only bind mount in a private mount
    namespace (``unshare -m``); skipped as root where mount namespaces are not allowed."""
    before = sorted(p.name for p in run_dir.iterdir())
    rd = str(run_dir)
    commands = [["table", rd], ["report", rd], ["report", rd, "--out", str(tmp_path / "r")]]
    table, report, report_out = read_only_commands(run_dir, commands)
    assert table[0] == 0 and "PSNR (dB) ↑" in table[1] and "single-code" in table[1], table[1]
    assert "note: the table was printed only; table.md/.csv/.tex could not be written into" in table[1]
    assert "use --out DIR to write them elsewhere" in table[1]
    assert report[0] == 1 and f"cannot write the report into {run_dir / 'report'}" in report[1], report[1]
    assert "use --out DIR to write it elsewhere" in report[1]
    assert report_out[0] == 0 and f"report: {tmp_path / 'r' / 'index.html'}" in report_out[1], report_out[1]
    assert "reconstruction of generated/000" in (tmp_path / "r" / "index.html").read_text(encoding="utf-8")
    for _, output in (table, report, report_out):
        assert "Traceback" not in output and "ESCAPED" not in output
    assert sorted(p.name for p in run_dir.iterdir()) == before


# ---- resume never mixes different work ----------------------------------------------------------------------
def write_pngs(folder: Path, names: list[str], seed: int) -> None:
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    for name in names:
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / name)


def test_replaced_target_image_is_refused_and_timings_are_not_mixed(tmp_path):
    """A folder image set: two more images resumed with another batch size are accepted, but their
    times are reported apart; a replaced image file is refused, naming it."""
    images, out = tmp_path / "images", tmp_path / "run"
    write_pngs(images, ["a.png", "b.png"], seed=0)
    cfg = config(images=f"folder:{images}")
    quiet_run(cfg, out)
    write_pngs(images, ["c.png", "d.png"], seed=1)  # new images, inverted one at a time
    messages: list[str] = []
    quiet_run(config(images=f"folder:{images}", batch_size=1), out, messages)
    assert any("2 done, 2 to invert" in m for m in messages)
    md = tables.to_markdown(tables.load_records(out))
    assert "not averaged" in md and "timed under 2 conditions (device, batch size)" in md
    assert "batch size 2: " in md and "batch size 1: " in md
    write_pngs(images, ["b.png"], seed=2)  # same name, other pixels
    with pytest.raises(RunError, match=r"different inputs than this run's: target image\(s\) folder/b\.png \("
                                       r"their content differs.*use another --out folder"):
        quiet_run(cfg, out)
    assert len(rows(out)) == 4


def test_rows_timed_on_another_device_are_not_averaged(run_dir):
    # as if generated/001 had been inverted when the run was resumed on a GPU
    sql(run_dir, "UPDATE results SET device = 'NVIDIA H200', session = 9, time_s = time_s / 50 "
                 "WHERE image_id = 'generated/001'")
    df = tables.load_records(run_dir)
    s = tables.summary(df)
    assert s["timing_conditions"].iloc[0] == 2 and np.isnan(s["time_s_mean"].iloc[0])
    md = tables.to_markdown(df)
    assert "not averaged" in md
    assert "NVIDIA H200, batch size 2: " in md and "timed under 2 conditions" in md
    sql(run_dir, "UPDATE results SET device = 'NVIDIA H200'")  # every result from the GPU, resumed on the CPU
    messages: list[str] = []
    quiet_run(config(), run_dir, messages)
    assert "note: this run folder holds results timed on NVIDIA H200; times on CPU" in " ".join(messages)


def tiny_from_file(*, weights, **_):
    g = pggan_tiny(resolution=16)
    g.load_state_dict(torch.load(weights, weights_only=True))
    g.weights_source = str(weights)
    return g


def test_changed_weights_file_is_refused(tmp_path, monkeypatch):
    monkeypatch.setitem(GENERATORS._targets, "tiny-from-file", tiny_from_file)
    path = tmp_path / "g.pt"
    torch.save(pggan_tiny(resolution=16).state_dict(), path)
    cfg = config(generator="tiny-from-file", generator_options={"weights": str(path)})
    quiet_run(cfg, tmp_path / "run")
    state = torch.load(path, weights_only=True)
    name = next(k for k, v in state.items() if v.is_floating_point() and v.numel() > 1)
    state[name].add_(0.01)  # the same file name, other weights
    torch.save(state, path)
    with pytest.raises(RunError) as e:
        quiet_run(cfg, tmp_path / "run")
    assert "the generator's weights (sha256 of its state_dict" in str(e.value)
    assert f"the weights file {path} (sha256" in str(e.value) and "use another --out folder" in str(e.value)


def test_changed_weights_without_a_file_are_refused(tmp_path, monkeypatch):
    """Whatever the source (a package, a zoo checkpoint), the state_dict hash catches a change."""
    seed = {"value": 0}
    monkeypatch.setitem(GENERATORS._targets, "tiny-mutable", lambda **_: pggan_tiny(seed=seed["value"]))
    quiet_run(config(generator="tiny-mutable"), tmp_path / "run")
    seed["value"] = 1
    with pytest.raises(RunError, match=r"the generator's weights \(sha256 of its state_dict [0-9a-f]{12}…, now"):
        quiet_run(config(generator="tiny-mutable"), tmp_path / "run")
    sql(tmp_path / "run", "DELETE FROM results")  # without results the folder starts again with the new inputs
    messages: list[str] = []
    quiet_run(config(generator="tiny-mutable"), tmp_path / "run", messages)
    assert "holds no results yet; starting it with the new inputs" in " ".join(messages)
    assert len(rows(tmp_path / "run")) == 2


def test_old_run_folder_without_hashes_resumes_and_stores_them(run_dir):
    sql(run_dir, "DELETE FROM meta WHERE key = 'content'")
    messages: list[str] = []
    quiet_run(config(), run_dir, messages)
    assert any("2 done, 0 to invert" in m for m in messages)
    with ResultStore(run_dir, create=False) as s:
        content = s.get_meta("content")
    assert set(content["images"]) == {"generated/000", "generated/001"} and len(content["generator_state"]) == 64


def test_pmsfc_cache_is_keyed_by_weights_content_and_code_version(tmp_path, monkeypatch):
    G = GENERATORS.create("pggan-tiny")
    fast = {"discovery_iterations": 3, "codes_per_subspace": 2, "iterations": 1}
    assert not P.PmSFC(**fast).prepare(G, seed=0, cache_dir=tmp_path).from_cache_

    def no_training(*a, **k):
        raise AssertionError("retrained")

    monkeypatch.setattr(S1, "train_self_expressive", no_training)
    G.weights_source = "/another/path/of/the/same/weights.pt"  # describe() changes, the content does not
    assert P.PmSFC(**fast).prepare(G, seed=0, cache_dir=tmp_path).from_cache_
    changed = GENERATORS.create("pggan-tiny")
    with torch.no_grad():
        next(changed.parameters()).add_(1e-3)  # describe() is the same, the weights are not
    with pytest.raises(AssertionError, match="retrained"):
        P.PmSFC(**fast).prepare(changed, seed=0, cache_dir=tmp_path)
    monkeypatch.setattr(S1, "STAGE1_VERSION", "next")
    with pytest.raises(AssertionError, match="retrained"):
        P.PmSFC(**fast).prepare(G, seed=0, cache_dir=tmp_path)
