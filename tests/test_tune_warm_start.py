"""gib tune --warm-start: the entry a run would use now is the search's trial 0, so the new entry never
ends below it on the search's own objective; an entry that cannot be replayed is refused."""
from __future__ import annotations

import copy

import pytest
from click.testing import CliRunner

from gan_inversion_bench.cli import main
from gan_inversion_bench.profiles import method_entries, read_profile
from gan_inversion_bench.tuning import TuneConfig, tune

TC = TuneConfig(trials=2, budget=4, n_images=2, pruning="none")


@pytest.fixture(scope="module")
def first(G):
    return tune(G, "single-code", TC)


def _best_params(entry):
    return next(t["params"] for t in entry["trials"] if t["number"] == entry["tuning"]["best_trial"])


def test_trial_0_replays_the_entry_and_the_search_never_ends_below_it(G, first):
    warm = tune(G, "single-code", TuneConfig(trials=2, budget=4, n_images=2, pruning="none", seed=1), start=first)
    assert warm["trials"][0]["params"] == _best_params(first)
    # the same settings on the same tuning images at the same budget: the entry's own best value again
    assert warm["trials"][0]["value"] == pytest.approx(first["tuning"]["best_value"], abs=1e-9)
    assert warm["tuning"]["best_value"] >= first["tuning"]["best_value"]
    assert warm["tuning"]["warm_start"] == {"budget": 4, "params": _best_params(first), "settings": first["settings"],
                                            "code_revision": first["provenance"]["code_revision"], "trial": 0}
    # without the start, the same seed draws something else first
    cold = tune(G, "single-code", TuneConfig(trials=1, budget=4, n_images=2, pruning="none", seed=1))
    assert cold["trials"][0]["params"] != _best_params(first)
    assert "warm_start" not in cold["tuning"]


def test_an_entry_that_cannot_be_replayed_is_refused(G, first):
    edited = copy.deepcopy(first)
    edited["settings"]["lr"] = edited["settings"]["lr"] * 2
    with pytest.raises(ValueError, match=r"not those of its best trial .* edited by hand"):
        tune(G, "single-code", TC, start=edited)
    no_trials = {k: v for k, v in first.items() if k != "trials"}
    with pytest.raises(ValueError, match="records no best trial's parameters"):
        tune(G, "single-code", TC, start=no_trials)
    foreign = copy.deepcopy(first)  # another method's parameters: single-code's space asks for its optimizer
    for t in foreign["trials"]:
        t["params"] = {"weight_init": 0.5, "adam_weight_lr": 0.01}
    with pytest.raises(ValueError, match="does not fit the search space now"):
        tune(G, "single-code", TC, start=foreign)


def test_cli_warm_start_names_its_entry_records_the_flag_and_keeps_the_other_budget(tmp_path, monkeypatch):
    monkeypatch.setenv("GIB_PROFILES", str(tmp_path / "profiles"))
    base = ["tune", "-g", "pggan-tiny", "-m", "single-code", "--trials", "2", "--images", "2", "--device", "cpu",
            "--pruning", "none"]
    nothing = CliRunner().invoke(main, [*base, "--budget", "2", "--warm-start"])
    assert nothing.exit_code == 2 and "--warm-start: nothing to start from" in nothing.output
    assert "gib tune -g pggan-tiny -m single-code" in nothing.output  # how to get an entry
    assert CliRunner().invoke(main, [*base, "--budget", "2"]).exit_code == 0
    warm = CliRunner().invoke(main, [*base, "--budget", "4", "--warm-start"])
    assert warm.exit_code == 0, warm.output
    assert "single-code: warm start: trial 0 is the entry searched at 2 iterations (lr " in warm.output
    at2, at4 = method_entries("pggan-tiny", "single-code")
    assert at4["provenance"]["command"].endswith(" --pruning none --warm-start")
    assert at4["trials"][0]["params"] == _best_params(at2) and at4["tuning"]["warm_start"]["budget"] == 2
    assert "warm_start" not in at2["tuning"]
    assert read_profile(tmp_path / "profiles" / "pggan-tiny.json")["methods"]["single-code"]["tuning"]["budget"] == 2


def test_a_draw_that_repeats_a_finished_trial_is_not_run_again(G, first, monkeypatch):
    """Warm-started with the seed that found the entry, the search draws the entry's parameters again
    (trial n + 1 repeats the first search's trial n: the enqueued trial takes no draw). The inversion is
    deterministic, so the repeat takes the finished trial's value and says so instead of running."""
    from gan_inversion_bench import METHODS

    method = METHODS.get("single-code")
    real, calls = method.invert, []

    def counted(self, *a, **kw):
        calls.append(1)
        return real(self, *a, **kw)

    monkeypatch.setattr(method, "invert", counted)
    best = first["tuning"]["best_trial"]
    warm = tune(G, "single-code", TuneConfig(trials=best + 2, budget=4, n_images=2, pruning="none"), start=first)
    repeat = warm["trials"][best + 1]
    assert repeat["params"] == warm["trials"][0]["params"] == _best_params(first)
    assert repeat["repeat_of"] == 0 and repeat["value"] == warm["trials"][0]["value"] and repeat["state"] == "COMPLETE"
    assert len(calls) == best + 1 and not any("repeat_of" in t for t in warm["trials"][:best + 1])
