"""gib tune --fix NAME=VALUE: a parameter of the method's search space held at one value (optuna's
PartialFixedSampler around TPE), so that every trial goes to the others; a name the space never draws,
a value outside its range and a warm start that contradicts it are refused before anything runs."""
from __future__ import annotations

import math
import shlex

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from gan_inversion_bench.cli import main
from gan_inversion_bench.cli_common import fix_argument, parse_assignments
from gan_inversion_bench.profiles import method_entries, read_profile
from gan_inversion_bench.registry import METHODS
from gan_inversion_bench.tuning import TuneConfig, _start_record, _study, check_fixed


def _search(fixed: dict, trials: int = 16) -> list:
    """single-code's space on a stand-in objective: SGD is poor, Adam is best at lr 0.18."""
    method = METHODS.get("single-code")()

    def objective(trial):
        s = method.tuning_space(trial)
        return -10.0 if s["optimizer"] == "sgd" else -math.log10(s["lr"] / 0.18) ** 2

    study = _study(TuneConfig(trials=trials, startup_trials=4, pruning="none", fixed=fixed), None)
    study.optimize(objective, n_trials=trials)
    return study.trials


def test_a_fixed_optimizer_holds_every_trial_and_the_search_refines_its_rate():
    free, held = _search({}), _search({"optimizer": "adam"})
    assert {t.params["optimizer"] for t in free} == {"sgd", "adam"}  # the free search spends trials on SGD
    assert all(t.params["optimizer"] == "adam" and "adam_lr" in t.params for t in held)
    assert max(t.value for t in held) > max(t.value for t in free)  # nearer lr 0.18 in as many trials
    assert [t.params for t in _search({"optimizer": "adam"})] == [t.params for t in held]  # seeded


@pytest.mark.parametrize("method, fixed", [
    ("single-code", {"optimizer": "adam"}),
    ("single-code", {"sgd_lr": 1.0}),          # drawn only where SGD is: a conditional parameter is the space's
    ("mganprior", {"divide_by_n": True, "adam_alpha_lr": 0.01}),
    ("pmsfc", {"weight_init": 0.25}),
])
def test_parameters_of_the_space_are_accepted(method, fixed):
    check_fixed(METHODS.get(method)(), fixed)


@pytest.mark.parametrize("method, fixed, message", [
    ("single-code", {"optimiser": "adam"}, r"'optimiser' is not a parameter its search space draws \(it draws adam_lr, "
                                           r"optimizer, sgd_lr\)"),
    ("single-code", {"optimizer": "rmsprop"}, r"optimizer='rmsprop' is not one of its choices \['sgd', 'adam'\]"),
    ("single-code", {"adam_lr": 2.0}, r"adam_lr=2.0 is outside its search range \[0.001, 0.5\]"),
    ("single-code", {"adam_lr": "fast"}, r"adam_lr='fast' is outside its search range"),
    ("pmsfc", {"weight_init": True}, r"weight_init=True is outside its search range \[0.1, 2\]"),
    ("mganprior", {"divide_by_n": 1}, r"divide_by_n=1 is not one of its choices \[True, False\]"),
    ("mganprior", {"weight_init": 0.25}, r"mganprior: fixed parameter 'weight_init' is not a parameter"),
])
def test_what_the_space_does_not_draw_is_refused(method, fixed, message):
    with pytest.raises(ValueError, match=message):
        check_fixed(METHODS.get(method)(), fixed)


def test_a_warm_start_that_contradicts_a_fixed_value_is_refused():
    method = METHODS.get("single-code")()
    entry = method_entries("dcgan-digiface64", "single-code")[0]  # searched at 100 iterations: Adam
    assert _start_record(method, entry, TuneConfig(fixed={"optimizer": "adam"}))["params"]["optimizer"] == "adam"
    with pytest.raises(ValueError, match=r"the warm start \(the entry searched at 100 iterations\) has "
                                         r"optimizer='adam', but the search holds optimizer at 'sgd'"):
        _start_record(method, entry, TuneConfig(fixed={"optimizer": "sgd"}))


def test_fixed_must_be_a_mapping_of_names():
    for bad in (["optimizer"], {1: "adam"}):
        with pytest.raises(ValueError, match="fixed must map parameter names to values"):
            TuneConfig(fixed=bad)


def _tune(args: list[str]):
    return CliRunner().invoke(main, ["tune", *args])


@pytest.mark.parametrize("extra, record, values, shown", [
    (["--fix", "optimizer=adam", "--fix", "divide_by_n=false"], "fixed", {"optimizer": "adam", "divide_by_n": False},
     ("(held fixed: divide_by_n False, optimizer adam)", "--fix optimizer=adam --fix divide_by_n=false")),
    # --set (tests/test_tune_held.py): a setting outside the space, in the entry's settings
    (["--set", "n_codes=4", "--fix", "divide_by_n=false"], "held", {"n_codes": 4},
     ("(set for every trial: n_codes 4)", "--fix divide_by_n=false --set n_codes=4")),
])
def test_gib_tune_fix_and_set_are_recorded_listed_and_the_command_reproduces_the_entry(
        tmp_path, monkeypatch, extra, record, values, shown):
    listed, tail = shown
    monkeypatch.setenv("GIB_PROFILES", str(tmp_path / "profiles"))
    out = tmp_path / "profiles" / "pggan-tiny.json"
    result = _tune(["-g", "pggan-tiny", "-m", "mganprior", "--trials", "3", "--budget", "3", "--images", "1",
                    "--device", "cpu", "--out", str(out), *extra])
    assert result.exit_code == 0, result.output
    entry = read_profile(out)["methods"]["mganprior"]
    assert entry["tuning"][record] == values
    assert all(entry["settings"][k] == v for k, v in values.items())
    if record == "fixed":
        assert all(t["params"][k] == v for t in entry["trials"] for k, v in values.items())
    command = entry["provenance"]["command"]
    assert command.endswith(tail)
    assert listed in CliRunner().invoke(main, ["list", "profiles", "-g", "pggan-tiny"]).output

    again = tmp_path / "again.json"
    rerun = _tune([*shlex.split(command)[2:], "--device", "cpu", "--out", str(again)])
    assert rerun.exit_code == 0, rerun.output
    other = read_profile(again)["methods"]["mganprior"]
    assert other["trials"] == entry["trials"] and other["settings"] == entry["settings"]


_VALUES = st.one_of(st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
                    st.text(), st.sampled_from(["1", "true", "null", "0.5", '"adam"', "[1]", "adam sgd", "a'b"]))


@given(_VALUES)
def test_a_recorded_fix_reads_back_as_the_same_value_and_type(value):
    # the provenance command is run again through a shell: every value must come back as it was,
    # a string that reads as JSON ("1", "true") included
    (word,) = shlex.split(fix_argument("name", value))
    back = parse_assignments((word,), "--fix")["name"]
    assert back == value and type(back) is type(value)


@pytest.mark.parametrize("option, message", [
    # single-code's space has no divide_by_n: refused before mganprior's search, named first, runs
    ("--fix", "single-code: fixed parameter 'divide_by_n' is not a parameter its search space draws"),
    # single-code has no n_codes (--set, tests/test_tune_held.py)
    ("--set", "single-code: held setting(s) ['n_codes'] are not settings of the method"),
])
def test_gib_tune_refuses_a_bad_fix_or_set_before_any_search_runs(tmp_path, option, message):
    out = tmp_path / "p.json"
    value = "divide_by_n=true" if option == "--fix" else "n_codes=4"
    result = _tune(["-g", "pggan-tiny", "-m", "mganprior", "-m", "single-code", "--trials", "2", "--budget", "2",
                    "--images", "1", "--device", "cpu", "--out", str(out), option, value])
    assert result.exit_code != 0
    assert message in result.output
    assert "trials at" not in result.output and not out.exists()
    result = _tune(["-g", "pggan-tiny", "-m", "single-code", "--out", str(out), option, "optimizer"])
    assert result.exit_code != 0 and option in result.output and not out.exists()
