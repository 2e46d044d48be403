"""gib tune --out NEW_FILE: a new profile file starts as a copy of the profile runs use now, so that a
search written beside the committed profile is a whole profile (GIB_PROFILES=its folder runs every
method, the searched one at its new entry), and the profile it was copied from is left as it was."""
from __future__ import annotations

import json

from click.testing import CliRunner

from gan_inversion_bench.cli import main
from gan_inversion_bench.profiles import read_profile


def _tune(method: str, out):
    return CliRunner().invoke(main, ["tune", "-g", "pggan-tiny", "-m", method, "--trials", "2", "--budget", "2",
                                     "--images", "1", "--device", "cpu", "--out", str(out)])


def test_a_new_out_file_starts_as_a_copy_of_the_profile_runs_use(tmp_path, monkeypatch):
    current, new = tmp_path / "current" / "pggan-tiny.json", tmp_path / "new" / "pggan-tiny.json"
    monkeypatch.setenv("GIB_PROFILES", str(current.parent))
    first = _tune("single-code", current)
    assert first.exit_code == 0, first.output
    assert "starts as a copy" not in first.output  # --out is the profile runs use: nothing to copy
    before = current.read_text()

    second = _tune("mganprior", new)
    assert second.exit_code == 0, second.output
    assert f"{new}: new, so it starts as a copy of {current}" in second.output
    assert "(the profile runs use now: single-code)" in second.output
    written = read_profile(new)["methods"]
    assert sorted(written) == ["mganprior", "single-code"]
    assert written["single-code"] == json.loads(before)["methods"]["single-code"]
    assert current.read_text() == before  # the source is never written

    third = _tune("single-code", new)  # an existing --out is updated, never copied over again
    assert third.exit_code == 0, third.output
    assert "starts as a copy" not in third.output
    assert sorted(read_profile(new)["methods"]) == ["mganprior", "single-code"]


def test_a_corrupt_current_profile_is_named_and_no_new_file_is_written(tmp_path, monkeypatch):
    current, new = tmp_path / "current" / "pggan-tiny.json", tmp_path / "new" / "pggan-tiny.json"
    current.parent.mkdir()
    current.write_text('{"format": 1, "methods": ')
    monkeypatch.setenv("GIB_PROFILES", str(current.parent))
    result = _tune("single-code", new)
    assert result.exit_code != 0
    assert str(current) in result.output and "not a readable tuned profile" in result.output
    assert not new.exists()
