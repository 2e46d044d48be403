"""gib tune --startup-trials: TPE draws at random until it has that many results, so a search of no more
trials than that is a random search, which gib tune and gib list profiles say; fewer start-up trials let
a short search (8 trials at 2000 iterations) refine around its best."""
from __future__ import annotations

import math

import pytest
from click.testing import CliRunner

from gan_inversion_bench.cli import main
from gan_inversion_bench.profiles import read_profile
from gan_inversion_bench.tuning import TuneConfig, _study


def _search(startup: int, trials: int = 24) -> list[float]:
    """The learning rates a study of ``startup`` start-up trials proposes for a loss whose best lr is 0.18."""
    study = _study(TuneConfig(trials=trials, startup_trials=startup, pruning="none"), None)
    study.optimize(lambda t: -(math.log10(t.suggest_float("lr", 1e-3, 10.0, log=True)) - math.log10(0.18)) ** 2,
                   n_trials=trials)
    return [t.params["lr"] for t in study.trials]


def test_the_start_up_trials_are_the_random_draws_and_tpe_models_after_them():
    random, early = _search(startup=24), _search(startup=4)
    assert early[:4] == random[:4]  # the same seeded draws until TPE starts
    assert early[4:] != random[4:]
    # after its start-up TPE proposes near the best: closer, in decades of lr, than the random draws
    distance = lambda lrs: sum(abs(math.log10(x / 0.18)) for x in lrs) / len(lrs)  # noqa: E731
    assert distance(early[8:]) < 0.75 * distance(random[8:])


def test_start_up_trials_must_be_a_positive_integer():
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="startup_trials must be a positive integer"):
            TuneConfig(startup_trials=bad)


def _tune(tmp_path, *extra: str):
    out = tmp_path / "profiles" / "pggan-tiny.json"
    result = CliRunner().invoke(main, ["tune", "-g", "pggan-tiny", "-m", "single-code", "--trials", "3", "--budget",
                                       "3", "--images", "1", "--device", "cpu", "--out", str(out), *extra])
    assert result.exit_code == 0, result.output
    return result, read_profile(out)["methods"]["single-code"]


def test_gib_tune_says_when_the_search_was_random_and_records_the_start_up(tmp_path, monkeypatch):
    monkeypatch.setenv("GIB_PROFILES", str(tmp_path / "profiles"))
    result, entry = _tune(tmp_path)
    assert "this was a random search of 3 trials" in result.stderr
    assert entry["tuning"]["startup_trials"] == 10 and "--startup-trials" not in entry["provenance"]["command"]
    listed = CliRunner().invoke(main, ["list", "profiles", "-g", "pggan-tiny"]).output
    assert "single-code at 3 iterations: best" in listed and "(random draws: TPE never modelled)" in listed

    result, entry = _tune(tmp_path, "--startup-trials", "2")
    assert "random search" not in result.stderr
    assert entry["tuning"]["startup_trials"] == 2
    assert entry["provenance"]["command"].endswith("--startup-trials 2")


def test_list_profiles_flags_random_searches_only():
    """An entry is flagged when its search had no more trials than its start-up trials (entries written
    before the setting existed used optuna's default of 10): on digiface, pivotal-tuning's 10 trials were
    random, PmSFC's warm-started 9 at 2000 iterations with 4 start-up trials were not."""
    from gan_inversion_bench.profiles import entry_budget, method_entries

    listed = CliRunner().invoke(main, ["list", "profiles", "-g", "dcgan-digiface64"]).output.splitlines()
    flagged = {line.split(":")[0].strip() for line in listed if "(random draws" in line}
    assert "pivotal-tuning at 50 iterations" in flagged and "pmsfc at 2000 iterations" not in flagged
    for method in ("single-code", "mganprior", "pmsfc", "ilo", "pivotal-tuning", "cma-es", "idinvert"):
        for entry in method_entries("dcgan-digiface64", method):
            t, name = entry["tuning"], f"{method} at {entry_budget(entry)} iterations"
            assert (name in flagged) == (t["trials"] <= t.get("startup_trials", 10)), name
