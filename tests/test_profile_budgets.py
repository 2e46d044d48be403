"""Tuned profiles keyed by budget: a method may hold entries searched at several budgets, `gib tune`
replaces the one at its own budget and keeps the others, and a run uses the entry searched nearest
its own budget (in ratio; a tie goes to the smaller budget)."""
from __future__ import annotations

import json
import math

import pytest

from gan_inversion_bench.harness import RunConfig, build_method, run
from gan_inversion_bench.harness.config import searched_at
from gan_inversion_bench.profiles import (
    ProfileError,
    entries,
    entry_budget,
    method_entries,
    nearest,
    read_profile,
    tuned_entry,
    tuned_settings,
    write_entry,
)


def _entry(budget: int | None, lr: float) -> dict:
    entry = {"base_profile": "quick", "settings": {"optimizer": "adam", "lr": lr}}
    return entry if budget is None else {**entry, "tuning": {"budget": budget}}


@pytest.fixture
def profiles(tmp_path, monkeypatch):
    monkeypatch.setenv("GIB_PROFILES", str(tmp_path))
    return tmp_path / "pggan-tiny.json"


def _stored(path, method="single-code"):
    return read_profile(path)["methods"][method]


def test_tune_replaces_the_entry_at_its_budget_and_keeps_the_others(profiles):
    write_entry(profiles, "pggan-tiny", "single-code", _entry(2000, 0.04))
    write_entry(profiles, "pggan-tiny", "mganprior", _entry(100, 0.3))
    assert _stored(profiles)["settings"]["lr"] == 0.04 and "other_budgets" not in _stored(profiles)
    write_entry(profiles, "pggan-tiny", "single-code", _entry(100, 0.14))
    stored = _stored(profiles)  # the smallest budget's entry is the method's entry, the others are listed
    assert (entry_budget(stored), stored["settings"]["lr"]) == (100, 0.14)
    assert [(entry_budget(e), e["settings"]["lr"]) for e in stored["other_budgets"]] == [(2000, 0.04)]
    write_entry(profiles, "pggan-tiny", "single-code", _entry(2000, 0.05))
    write_entry(profiles, "pggan-tiny", "single-code", _entry(500, 0.07))
    found = method_entries("pggan-tiny", "single-code")
    assert [(entry_budget(e), e["settings"]["lr"]) for e in found] == [(100, 0.14), (500, 0.07), (2000, 0.05)]
    assert not any("other_budgets" in e for e in found) and not any("other_budgets" in e
                                                                    for e in _stored(profiles)["other_budgets"])
    assert _stored(profiles, "mganprior")["settings"]["lr"] == 0.3  # another method is untouched
    # an entry written by hand (no budget) stands alone, and a searched one then replaces it
    write_entry(profiles, "pggan-tiny", "single-code", _entry(None, 0.01))
    assert [e["settings"]["lr"] for e in method_entries("pggan-tiny", "single-code")] == [0.01]
    write_entry(profiles, "pggan-tiny", "single-code", _entry(100, 0.2))
    assert [e["settings"]["lr"] for e in method_entries("pggan-tiny", "single-code")] == [0.2]


@pytest.mark.parametrize(("budget", "chosen"), [
    (None, 100), (1, 100), (150, 100), (200, 100),  # 200 is as far from 100 as from 400 (×2): the smaller
    (201, 400), (890, 400), (900, 2000), (10**6, 2000)])
def test_a_run_uses_the_entry_searched_nearest_its_budget_in_ratio(budget, chosen):
    found = entries({**_entry(400, 0.1), "other_budgets": [_entry(2000, 0.04), _entry(100, 0.14)]})
    assert [entry_budget(e) for e in found] == [100, 400, 2000]
    assert entry_budget(nearest(found, budget)) == chosen
    if budget is not None:  # independently: the smallest |log ratio|, smaller budget first on a tie
        ratios = sorted((abs(math.log(budget / b)), b) for b in (100, 400, 2000))
        assert chosen == ratios[0][1]


def test_an_entry_without_a_budget_is_never_nearer_than_one_with(profiles):
    found = entries({**_entry(None, 0.9), "other_budgets": [_entry(2000, 0.04)]})
    assert entry_budget(found[-1]) is None and nearest(found, 2000)["settings"]["lr"] == 0.04
    assert nearest(found, 10)["settings"]["lr"] == 0.04


def test_build_method_takes_the_entry_for_the_run_budget(profiles):
    write_entry(profiles, "pggan-tiny", "single-code", _entry(100, 0.14))
    write_entry(profiles, "pggan-tiny", "single-code", _entry(2000, 0.04))
    cases = [({"budget": 2000}, 0.04, 2000), ({"budget": 150}, 0.14, 100),
             ({}, 0.14, 100),  # no --iterations: the quick profile's 100 iterations
             ({"overrides": {"single-code": {"iterations": 1500}}}, 0.04, 2000),
             ({"overrides": {"*": {"iterations": 1500}}}, 0.04, 2000)]
    for given, lr, at in cases:
        config = RunConfig(generator="pggan-tiny", methods=["single-code"], profile="tuned", **given)
        assert build_method("single-code", config).settings.lr == lr, given
        assert searched_at("single-code", config) == at, given
    assert tuned_settings("pggan-tiny", "single-code") == ("quick", {"optimizer": "adam", "lr": 0.14})
    quick = RunConfig(generator="pggan-tiny", methods=["single-code"], profile="quick", budget=2000)
    assert searched_at("single-code", quick) is None and build_method("single-code", quick).settings.lr != 0.04


def test_the_run_says_which_entry_it_used_and_stores_its_settings(profiles, tmp_path):
    from gan_inversion_bench.store import ResultStore

    write_entry(profiles, "pggan-tiny", "single-code", _entry(2, 0.01))
    write_entry(profiles, "pggan-tiny", "single-code", _entry(50, 0.2))
    lines: list[str] = []
    out = run(RunConfig(generator="pggan-tiny", methods=["single-code"], profile="tuned", images="generated",
                        n_generated=1, budget=3, device="cpu", latency=False), tmp_path / "r", progress=False,
              echo=lines.append)
    assert any("tuned profile, searched at 2 iterations" in line for line in lines), lines
    with ResultStore(out, create=False) as s:
        assert s.results()[0]["method_settings"]["lr"] == 0.01


def test_a_malformed_budget_list_names_the_file_and_the_method(profiles):
    profiles.write_text(json.dumps({"format": 1, "generator": "pggan-tiny", "methods": {
        "single-code": {**_entry(100, 0.1), "other_budgets": {"2000": _entry(2000, 0.04)}}}}))
    with pytest.raises(ProfileError, match=r"pggan-tiny\.json: single-code: other_budgets must be a list"):
        tuned_settings("pggan-tiny", "single-code", 2000)
    with pytest.raises(ProfileError, match=r"pggan-tiny\.json: single-code: other_budgets must be a list"):
        write_entry(profiles, "pggan-tiny", "single-code", _entry(500, 0.1))  # nothing is overwritten
    assert "other_budgets" in _stored(profiles) and entry_budget(_stored(profiles)) == 100
    profiles.write_text(json.dumps({"format": 1, "generator": "pggan-tiny", "methods": {
        "single-code": {**_entry(100, 0.1), "other_budgets": [{"tuning": {"budget": 2000}}]}}}))
    with pytest.raises(ProfileError, match="searched at 2000 iterations has no settings"):
        tuned_entry("pggan-tiny", "single-code", 2000)
    assert tuned_entry("pggan-tiny", "single-code", 100)["settings"]["lr"] == 0.1


def test_gib_list_profiles_shows_every_budget_of_every_method(profiles, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from gan_inversion_bench.cli import main

    searched = {**_entry(2000, 0.0423), "tuning": {"budget": 2000, "best_value": 43.375, "n_images": 4,
                                                   "complete_trials": 8, "trials": 8}}
    write_entry(profiles, "pggan-tiny", "single-code", searched)
    write_entry(profiles, "pggan-tiny", "single-code", _entry(100, 0.14))
    write_entry(profiles, "pggan-tiny", "ilo", {"settings": {"radii": [0.81915, 2.0]}})
    r = CliRunner().invoke(main, ["list", "profiles", "-g", "pggan-tiny"])
    assert r.exit_code == 0, r.output
    assert r.output.splitlines()[1:] == [
        "  ilo at ? iterations: radii [0.819, 2]",
        "  single-code at 100 iterations: lr 0.14, optimizer adam",
        "  single-code at 2000 iterations: best 43.38 dB on 4 images, 8 of 8 trials to the budget (random draws: "
        "TPE never modelled): lr 0.0423, optimizer adam"]
    assert "pggan-tiny (" in r.output.splitlines()[0]
    r = CliRunner().invoke(main, ["list", "profiles"])
    assert r.exit_code == 0 and r.output.splitlines()[0].startswith("pggan-tiny (")  # every file in GIB_PROFILES
    r = CliRunner().invoke(main, ["list", "profiles", "-g", "pggan"])
    assert r.exit_code == 0 and "pggan: no tuned profile in" in r.output and "gib tune -g pggan" in r.output
    r = CliRunner().invoke(main, ["list", "profiles", "-g", "no-such-gan"])
    assert r.exit_code != 0 and "unknown generator 'no-such-gan'" in r.output
    monkeypatch.setenv("GIB_PROFILES", str(tmp_path / "empty"))
    assert "no tuned profiles in" in CliRunner().invoke(main, ["list", "profiles"]).output


def test_gib_tune_at_a_second_budget_keeps_the_first_and_says_so(profiles):
    from click.testing import CliRunner

    from gan_inversion_bench.cli import main

    def tune(budget: int):
        r = CliRunner().invoke(main, ["tune", "-g", "pggan-tiny", "-m", "single-code", "--trials", "2", "--budget",
                                      str(budget), "--images", "2", "--pruning", "none", "--device", "cpu"])
        assert r.exit_code == 0, r.output
        return r.output, method_entries("pggan-tiny", "single-code")

    out, found = tune(4)
    assert [entry_budget(e) for e in found] == [4] and "the profile holds entries" not in out
    out, found = tune(8)
    assert [entry_budget(e) for e in found] == [4, 8]
    assert "single-code: the profile holds entries searched at 4, 8 iterations" in out
    out, found = tune(4)  # the same budget again: replaced (not listed twice), the other kept
    assert [entry_budget(e) for e in found] == [4, 8]
    assert all(" --budget " + str(entry_budget(e)) + " " in e["provenance"]["command"] for e in found)
    assert tuned_entry("pggan-tiny", "single-code", 7) == found[1]
