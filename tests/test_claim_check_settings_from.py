"""claim_check.py --settings-from RECORDS: a rerun at the settings a check's records hold, whatever the profile
holds today; and the folders it refuses to take settings from."""
from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from bench_scripts import load

TINY = ["--iterations", "2", "--n-generated", "1", "--images", "generated", "--restarts", "1", "--device", "cpu"]
BOTH = "a/single-code,a/mganprior-N10"


def _profile(folder: Path, lr_factor: float) -> Path:
    """dcgan-digiface64's committed profile in ``folder``, every entry's learning rate times ``lr_factor``."""
    from gan_inversion_bench.profiles import PACKAGE_DIR

    data = json.loads((PACKAGE_DIR / "dcgan-digiface64.json").read_text())

    def scale(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("settings"), dict) and "lr" in node["settings"]:
                node["settings"]["lr"] *= lr_factor
            for v in node.values():
                scale(v)
        elif isinstance(node, list):
            for v in node:
                scale(v)

    scale(data)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dcgan-digiface64.json").write_text(json.dumps(data))
    return folder


def _settings(folder: Path) -> dict[str, Any]:
    with sqlite3.connect(folder / "results.sqlite") as conn:
        rows = {r[0] for r in conn.execute("SELECT method_settings FROM results")}
    assert len(rows) == 1
    return json.loads(rows.pop())


@pytest.fixture()
def recorded(tmp_path, monkeypatch) -> Path:
    """A tiny check of two configurations at the committed profile (GIB_PROFILES: it alone)."""
    monkeypatch.setenv("GIB_PROFILES", str(_profile(tmp_path / "profiles-then", 1.0)))
    out = tmp_path / "then"
    assert load("claim_check").main(["--out", str(out), *TINY, "--only", BOTH]) == 0
    return out


def test_a_rerun_pins_the_recorded_settings_when_the_profile_has_changed(tmp_path, monkeypatch, capsys, recorded):
    """After the profile's learning rates change, a plain rerun runs at the new ones and a rerun with
    --settings-from at the recorded ones (every key; the iterations are its own protocol's); its page says so
    and its Reproduce line carries the option."""
    cc = load("claim_check")
    monkeypatch.setenv("GIB_PROFILES", str(_profile(tmp_path / "profiles-now", 3.0)))
    plain, pinned, page = tmp_path / "plain", tmp_path / "pinned", tmp_path / "results.md"
    assert cc.main(["--out", str(plain), *TINY, "--only", BOTH]) == 0
    assert cc.main(["--out", str(pinned), *TINY, "--only", BOTH, "--settings-from", str(recorded),
                    "--write", str(page)]) == 0
    said = capsys.readouterr().out
    assert said.count("every setting of its entry overridden") == 2  # the pinned run's two, not the plain run's
    for name in ("single-code", "mganprior-N10"):
        then, now, again = (_settings(f / "a" / name) for f in (recorded, plain, pinned))
        assert again == then
        assert now["lr"] == pytest.approx(3 * then["lr"]) and {k: v for k, v in now.items() if k != "lr"} == {
            k: v for k, v in then.items() if k != "lr"}
    assert json.loads((pinned / "protocol.json").read_text())["settings_from"] == str(recorded)
    text = page.read_text().split("## Experiment b")[0]
    assert f"**Settings pinned.** `--settings-from {recorded}`: every configuration ran at the method settings" in text
    lr, n10 = _settings(recorded / "a" / "single-code")["lr"], _settings(recorded / "a" / "mganprior-N10")
    assert f"single-code: lr {lr:.3g}, optimizer " in text
    assert f"; mganprior: alpha_lr {n10['alpha_lr']:.3g}, " in text and f", lr {n10['lr']:.3g}, " in text
    reproduce = next(line for line in text.splitlines() if line.startswith("**Reproduce:**"))
    assert f"--settings-from {recorded} " in reproduce
    # the folder keeps its pin (like the rest of its protocol): a resume without the option recomputes nothing,
    # and one with other records is refused
    assert cc.main(["--out", str(pinned), *TINY, "--only", BOTH]) == 0
    assert _settings(pinned / "a" / "single-code") == _settings(recorded / "a" / "single-code")
    with pytest.raises(SystemExit, match="settings_from"):
        cc.main(["--out", str(pinned), *TINY, "--only", BOTH, "--settings-from", str(plain)])
    # and a folder that ran unpinned (its protocol.json from before the option, too) cannot be pinned afterwards
    stored = json.loads((plain / "protocol.json").read_text())
    (plain / "protocol.json").write_text(json.dumps({k: v for k, v in stored.items() if k != "settings_from"}))
    with pytest.raises(SystemExit, match=r"'settings_from': \('', "):
        cc.main(["--out", str(plain), *TINY, "--only", BOTH, "--settings-from", str(recorded)])


def _refusal(cc: Any, out: Path, records: Path, only: str) -> str:
    with pytest.raises(SystemExit) as e:
        cc.main(["--out", str(out), *TINY, "--only", only, "--settings-from", str(records)])
    assert not list(out.glob("a/*/results.sqlite"))  # refused before any configuration ran
    return str(e.value)


def test_settings_from_refuses_folders_that_do_not_hold_the_configuration(tmp_path, recorded):
    cc = load("claim_check")
    # no records of the configuration: named, and nothing of the others runs either
    why = _refusal(cc, tmp_path / "o1", recorded, "a/single-code,a/mganprior-N30")
    assert "a/mganprior-N30: no records to take its settings from" in why and "not a run folder" in why
    # records of another configuration under its name: N = 10's records as N = 30's
    fake = tmp_path / "fake"
    shutil.copytree(recorded / "a" / "mganprior-N10", fake / "a" / "mganprior-N30")
    why = _refusal(cc, tmp_path / "o2", fake, "a/mganprior-N30")
    assert "differ from what this configuration puts on top" in why and "'n_codes': (10, 30)" in why
    # a configuration folder that is a link out of RECORDS is not followed
    linked = tmp_path / "linked"
    (linked / "a").mkdir(parents=True)
    (linked / "a" / "single-code").symlink_to(recorded / "a" / "single-code")
    why = _refusal(cc, tmp_path / "o3", linked, "a/single-code")
    assert "is a symlink" in why and "not followed" in why
    # records written by another version of the method
    old = tmp_path / "old"
    shutil.copytree(recorded / "a" / "single-code", old / "a" / "single-code")
    with sqlite3.connect(old / "a" / "single-code" / "results.sqlite") as conn:
        conn.execute("UPDATE results SET method_version = '0'")
    why = _refusal(cc, tmp_path / "o4", old, "a/single-code")
    assert "written by single-code version 0" in why and "version 1" in why
    # two settings in one configuration's records
    mixed = tmp_path / "mixed"
    shutil.copytree(recorded / "a" / "single-code", mixed / "a" / "single-code")
    with sqlite3.connect(mixed / "a" / "single-code" / "results.sqlite") as conn:
        row = conn.execute("SELECT * FROM results").fetchone()
        cols = [c[1] for c in conn.execute("PRAGMA table_info(results)")]
        changed = dict(zip(cols, row, strict=True))
        settings = {**json.loads(changed["method_settings"]), "lr": 1.0}
        changed.update(method_settings=json.dumps(settings), method_key="other", image_id="generated/other")
        conn.execute(f"INSERT INTO results ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                     [changed[c] for c in cols])
    why = _refusal(cc, tmp_path / "o5", mixed, "a/single-code")
    assert "hold 2 different method settings; expected one" in why


def test_a_learning_rate_schedule_goes_on_top_of_the_pinned_settings(tmp_path, recorded):
    """--lr-schedule cosine: every configuration runs at the records' settings with the schedule added; the
    folder keeps it as part of its protocol, and the page's protocol and Reproduce lines say so. --batch-size
    (to match the batches of the records a run is paired with) reaches the records."""
    cc = load("claim_check")
    out, page = tmp_path / "cosine", tmp_path / "results.md"
    assert cc.main(["--out", str(out), *TINY, "--only", BOTH, "--settings-from", str(recorded),
                    "--lr-schedule", "cosine", "--n-generated", "2", "--batch-size", "1", "--write", str(page)]) == 0
    with sqlite3.connect(out / "a" / "single-code" / "results.sqlite") as conn:
        assert conn.execute("SELECT batch_size, COUNT(*) FROM results GROUP BY batch_size").fetchall() == [(1, 2)]
    for name in ("single-code", "mganprior-N10"):
        then, now = _settings(recorded / "a" / name), _settings(out / "a" / name)
        assert now == {**then, "lr_schedule": "cosine"} and then["lr_schedule"] == "constant"
    assert json.loads((out / "protocol.json").read_text())["lr_schedule"] == "cosine"
    text = page.read_text().split("## Experiment b")[0]
    assert "1 restart per image with a cosine learning-rate schedule (every rate of the settings decays" in text
    reproduce = next(line for line in text.splitlines() if line.startswith("**Reproduce:**"))
    assert "--lr-schedule cosine " in reproduce
    with pytest.raises(SystemExit, match=r"'lr_schedule': \('cosine', 'constant'\)"):
        cc.main(["--out", str(out), *TINY, "--n-generated", "2", "--only", BOTH, "--lr-schedule", "constant"])


def test_the_schedule_is_the_protocols_not_the_pinned_records(tmp_path, recorded):
    """Records that ran with the decay, pinned by a folder without --lr-schedule, run at the constant rate that
    this folder's protocol (and its page) states; the other settings stay pinned."""
    cc = load("claim_check")
    decayed, again = tmp_path / "decayed", tmp_path / "again"
    assert cc.main(["--out", str(decayed), *TINY, "--only", BOTH, "--settings-from", str(recorded),
                    "--lr-schedule", "cosine"]) == 0
    assert cc.main(["--out", str(again), *TINY, "--only", BOTH, "--settings-from", str(decayed)]) == 0
    for name in ("single-code", "mganprior-N10"):
        assert _settings(again / "a" / name) == _settings(recorded / "a" / name)
        assert _settings(decayed / "a" / name)["lr_schedule"] == "cosine"
