"""gib tune --set NAME=VALUE: a method setting outside the search space (capacity) set for every trial, so
that a configuration the base profile does not have (mGANprior N = 10) gets its own search. The entry's
settings include it, its tuning record and command name it; names the search cannot hold are refused
before anything runs."""
from __future__ import annotations

import pytest
import torch

from gan_inversion_bench import METHODS
from gan_inversion_bench.metrics import psnr
from gan_inversion_bench.tuning import TuneConfig, held_method, start_params, tune, tuning_images

TC = TuneConfig(trials=3, budget=4, n_images=1, min_resource=2, pruning="none", fixed={"optimizer": "adam"})


@pytest.fixture(scope="module")
def held_entry(G):
    return tune(G, "mganprior", TuneConfig(**{**TC.__dict__, "held": {"n_codes": 3}}))


def test_every_trial_ran_at_the_held_setting(G, held_entry):
    # the entry's best value is what the method at N = 3 with the entry's settings gives on the tuning
    # image, computed here outside the search; at the base profile's N = 30 it is another value
    assert held_entry["settings"]["n_codes"] == 3 and held_entry["tuning"]["held"] == {"n_codes": 3}
    targets, _ = tuning_images(G, TC, torch.device("cpu"))

    def value(**overrides):
        m = METHODS.get("mganprior").from_profile("quick", **{**held_entry["settings"], **overrides})
        m = m.with_budget(TC.budget)
        m.prepare(G, seed=0, cache_dir=None)
        rec = m.invert(G, targets, seeds=[0]).reconstructions.float().clamp(-1, 1)
        return float(psnr(rec, targets).mean())

    assert value() == pytest.approx(held_entry["tuning"]["best_value"], abs=1e-5)
    assert value(n_codes=30) != pytest.approx(held_entry["tuning"]["best_value"], abs=1e-3)


def test_the_held_setting_changes_the_values_not_the_draws(G, held_entry):
    free = tune(G, "mganprior", TC)
    assert "held" not in free["tuning"] and "n_codes" not in free["settings"]  # records as before --set existed
    assert [t["params"] for t in free["trials"]] == [t["params"] for t in held_entry["trials"]]  # random startup
    assert [t["value"] for t in free["trials"]] != [t["value"] for t in held_entry["trials"]]


def test_an_entry_with_a_held_setting_is_a_warm_start(held_entry):
    method = METHODS.get("mganprior")()
    best = next(t for t in held_entry["trials"] if t["number"] == held_entry["tuning"]["best_trial"])
    assert start_params(method, held_entry) == best["params"]
    edited = {**held_entry, "settings": {**held_entry["settings"], "n_codes": 5}}
    with pytest.raises(ValueError, match="edited by hand"):
        start_params(method, edited)


@pytest.mark.parametrize("method, held, message", [
    ("mganprior", {"codes": 10}, r"mganprior: held setting\(s\) \['codes'\] are not settings of the method "
                                 r"\(its settings: n_codes, "),
    ("mganprior", {"lr": 0.1}, r"mganprior: lr is searched; hold a parameter of the search space at one value "
                               r"with --fix instead"),
    ("pmsfc", {"weight_init": 0.25}, r"pmsfc: weight_init is searched"),
    ("mganprior", {"iterations": 50}, r"mganprior: iterations is the budget"),
    ("mganprior", {"n_codes": 0}, r"mganprior: held settings \{'n_codes': 0\}: n_codes must be a positive integer"),
    ("mganprior", {"n_codes": "ten"}, r"n_codes must be a positive integer, got 'ten'"),
])
def test_what_cannot_be_held_is_refused(method, held, message):
    with pytest.raises(ValueError, match=message):
        held_method(method, TuneConfig(held=held))


def test_held_must_be_a_mapping_of_names():
    for bad in (["n_codes"], {1: 10}):
        with pytest.raises(ValueError, match="held must map setting names to values"):
            TuneConfig(held=bad)


# recorded, listed, reproduced from its command and refused before a search: tests/test_tune_fixed.py (with --fix)
