"""gib tune --choose NAME=V1,V2: a method setting outside the search space (the learning-rate schedule)
drawn among given values, so that a search picks it per method and budget as it picks the rate. The
entry's settings hold the chosen value, its tuning record and command name the choices, a warm start
takes the value its entry ran at, and what cannot be chosen is refused before anything runs."""
from __future__ import annotations

import shlex

import pytest
import torch
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from gan_inversion_bench import METHODS
from gan_inversion_bench.cli import main
from gan_inversion_bench.cli_common import fix_argument, parse_choices
from gan_inversion_bench.metrics import psnr
from gan_inversion_bench.profiles import method_entries, read_profile
from gan_inversion_bench.tuning import TuneConfig, _start_record, held_method, start_params, tune, tuning_images

SCHEDULES = {"lr_schedule": ["constant", "cosine"]}
TC = TuneConfig(trials=6, budget=6, n_images=1, min_resource=2, pruning="none", startup_trials=6,
                fixed={"optimizer": "adam"}, choices=SCHEDULES)


@pytest.fixture(scope="module")
def chosen_entry(G):
    return tune(G, "single-code", TC)


def _value(G, settings: dict) -> float:
    """The tuning objective computed outside the search: the method at ``settings`` on the tuning image."""
    m = METHODS.get("single-code").from_profile("quick", **settings).with_budget(TC.budget)
    m.prepare(G, seed=0, cache_dir=None)
    targets, _ = tuning_images(G, TC, torch.device("cpu"))
    rec = m.invert(G, targets, seeds=[0]).reconstructions.float().clamp(-1, 1)
    return float(psnr(rec, targets).mean())


def test_the_search_draws_the_schedule_and_the_entry_holds_the_chosen_one(G, chosen_entry):
    trials = chosen_entry["trials"]
    assert all(t["params"]["lr_schedule"] in SCHEDULES["lr_schedule"] for t in trials)
    assert {t["params"]["lr_schedule"] for t in trials} == {"constant", "cosine"}  # 6 random draws: both
    best = next(t for t in trials if t["number"] == chosen_entry["tuning"]["best_trial"])
    assert chosen_entry["settings"]["lr_schedule"] == best["params"]["lr_schedule"]
    assert chosen_entry["tuning"]["choices"] == SCHEDULES
    # every trial's value is the method at its settings, schedule included; the other schedule gives another
    for t in trials[:2]:
        settings = {"optimizer": "adam", "lr": t["params"]["adam_lr"], "lr_schedule": t["params"]["lr_schedule"]}
        assert _value(G, settings) == pytest.approx(t["value"], abs=1e-5)
        other = "cosine" if settings["lr_schedule"] == "constant" else "constant"
        assert _value(G, {**settings, "lr_schedule": other}) != pytest.approx(t["value"], abs=1e-4)


def test_without_choices_the_record_is_as_before(G):
    free = tune(G, "single-code", TuneConfig(**{**TC.__dict__, "choices": {}, "trials": 2}))
    assert "choices" not in free["tuning"] and "lr_schedule" not in free["settings"]
    assert all(set(t["params"]) == {"optimizer", "adam_lr"} for t in free["trials"])


def test_an_entry_with_a_chosen_setting_is_a_warm_start(chosen_entry):
    method = METHODS.get("single-code")()
    best = next(t for t in chosen_entry["trials"] if t["number"] == chosen_entry["tuning"]["best_trial"])
    assert start_params(method, chosen_entry) == best["params"]
    assert _start_record(method, chosen_entry, TC)["params"] == best["params"]
    flipped = "cosine" if best["params"]["lr_schedule"] == "constant" else "constant"
    edited = {**chosen_entry, "settings": {**chosen_entry["settings"], "lr_schedule": flipped}}
    with pytest.raises(ValueError, match="edited by hand"):
        start_params(method, edited)


def test_a_warm_start_from_a_search_without_choices_takes_the_value_its_entry_ran_at():
    method = METHODS.get("single-code")()
    entry = method_entries("dcgan-digiface64", "single-code")[0]  # searched at 100 iterations, constant rate
    assert _start_record(method, entry, TC)["params"]["lr_schedule"] == "constant"
    # mGANprior's entry ran at the base profile's N = 30, which a search among N = 3 and 4 cannot start from
    mgp = METHODS.get("mganprior")()
    start = method_entries("dcgan-digiface64", "mganprior")[0]
    with pytest.raises(ValueError, match=r"ran at n_codes=30, which the search does not choose among \(\[3, 4\]\)"):
        _start_record(mgp, start, TuneConfig(choices={"n_codes": [3, 4]}))


@pytest.mark.parametrize("method, choices, held, message", [
    ("single-code", {"schedule": ["constant", "cosine"]}, {}, r"single-code: chosen setting\(s\) \['schedule'\] "
                                                              r"are not settings of the method"),
    ("single-code", {"lr": [0.1, 0.2]}, {}, r"single-code: lr is searched"),
    ("mganprior", {"iterations": [100, 200]}, {}, r"mganprior: iterations is the budget"),
    ("mganprior", {"n_codes": [3, 4]}, {"n_codes": 3}, r"mganprior: n_codes is both held \(--set\) and chosen"),
    ("single-code", {"lr_schedule": ["constant", "linear"]}, {}, r"single-code: chosen value lr_schedule='linear': "),
    ("mganprior", {"n_codes": [3, 0]}, {}, r"mganprior: chosen value n_codes=0: n_codes must be a positive integer"),
])
def test_what_cannot_be_chosen_is_refused(method, choices, held, message):
    with pytest.raises(ValueError, match=message):
        held_method(method, TuneConfig(choices=choices, held=held))


@pytest.mark.parametrize("bad", [{"lr_schedule": ["cosine"]}, {"lr_schedule": ["cosine", "cosine"]},
                                 {"lr_schedule": "cosine"}, {1: ["a", "b"]}, {"x": [[1], [2]]}])
def test_choices_must_be_lists_of_distinct_values(bad):
    with pytest.raises(ValueError, match="choices must map setting names to lists of at least two distinct"):
        TuneConfig(choices=bad)


@given(st.lists(st.one_of(st.booleans(), st.integers(), st.text(min_size=1),
                          st.floats(allow_nan=False, allow_infinity=False)), min_size=2, max_size=4, unique=True)
       .filter(lambda v: all(v.count(x) == 1 for x in v)))
def test_a_recorded_choice_reads_back_as_the_same_values(values):
    # the provenance command is run again through a shell: the JSON list comes back as it was
    (word,) = shlex.split(fix_argument("name", values))
    back = parse_choices((word,))["name"]
    assert back == values and [type(b) for b in back] == [type(v) for v in values]


@pytest.mark.parametrize("text, expected", [("constant,cosine", ["constant", "cosine"]), ("3, 4", [3, 4]),
                                            ('["a,b", "c"]', ["a,b", "c"])])
def test_choose_splits_at_commas_or_reads_a_json_list(text, expected):
    assert parse_choices((f"name={text}",)) == {"name": expected}


def test_gib_tune_choose_is_recorded_listed_and_the_command_reproduces_the_entry(tmp_path, monkeypatch):
    monkeypatch.setenv("GIB_PROFILES", str(tmp_path / "profiles"))
    out = tmp_path / "profiles" / "pggan-tiny.json"
    args = ["-g", "pggan-tiny", "-m", "single-code", "--trials", "3", "--budget", "3", "--images", "1",
            "--device", "cpu", "--choose", "lr_schedule=constant,cosine"]
    result = CliRunner().invoke(main, ["tune", *args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    entry = read_profile(out)["methods"]["single-code"]
    assert entry["tuning"]["choices"] == SCHEDULES and entry["settings"]["lr_schedule"] in SCHEDULES["lr_schedule"]
    command = entry["provenance"]["command"]
    assert command.endswith("""--choose 'lr_schedule=["constant", "cosine"]'""")
    listed = CliRunner().invoke(main, ["list", "profiles", "-g", "pggan-tiny"]).output
    assert "(chosen among: lr_schedule constant, cosine)" in listed
    again = tmp_path / "again.json"
    rerun = CliRunner().invoke(main, ["tune", *shlex.split(command)[2:], "--device", "cpu", "--out", str(again)])
    assert rerun.exit_code == 0, rerun.output
    other = read_profile(again)["methods"]["single-code"]
    assert other["trials"] == entry["trials"] and other["settings"] == entry["settings"]


def test_gib_tune_refuses_a_bad_choice_before_any_search_runs(tmp_path):
    result = CliRunner().invoke(main, ["tune", "-g", "pggan-tiny", "-m", "mganprior", "-m", "ilo", "--trials", "2",
                                       "--budget", "2", "--images", "1", "--device", "cpu", "--out",
                                       str(tmp_path / "p.json"), "--choose", "lr_schedule=constant,cosine"])
    assert result.exit_code != 0 and "ilo: chosen setting(s) ['lr_schedule'] are not settings" in result.output
    assert "trials at 2 iterations" not in result.output  # mganprior's search never started
    one = CliRunner().invoke(main, ["tune", "-g", "pggan-tiny", "--choose", "lr_schedule=cosine"])
    assert one.exit_code != 0 and "expected at least two distinct values" in one.output
