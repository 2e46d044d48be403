"""The paired check of a search's choice (gan_inversion_bench.tune_choice): each completed trial records
its per-image PSNR, and the best trial is compared image by image with the warm start or the runner-up,
so a choice that one tuning image made is named as such."""
from __future__ import annotations

import math

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from gan_inversion_bench.cli import main
from gan_inversion_bench.tune_choice import choice_check, choice_lines
from gan_inversion_bench.tuning import TuneConfig, held_method, settings_of, tune

IDS = ["photos-tune/grace_hopper", "photos-tune/retina", "photos-tune/camera", "photos-tune/coins"]
#: PmSFC's photo search at 2000 iterations, per tuning photo (docs/results.md): its choice − the warm start
PMSFC = [0.004, 11.85, 0.35, -1.00]  # grace_hopper: printed +0.00, ahead


def _trial(number: int, per_image: list[float] | None, state: str = "COMPLETE", **extra) -> dict:
    record = {"number": number, "state": state, "params": {"lr": 0.01 * (number + 1)}, "last_step": 8,
              "value": None if per_image is None else float(np.mean(per_image)), **extra}
    if per_image is not None:
        record["per_image_psnr"] = per_image
    return record


def _entry(trials: list[dict], warm: bool) -> dict:
    best = max((t for t in trials if t["state"] == "COMPLETE"), key=lambda t: t["value"])
    tuning = {"best_trial": best["number"], "best_value": best["value"], **({"warm_start": {}} if warm else {})}
    return {"tuning": tuning, "trials": trials}


def test_a_choice_one_image_made_is_named_against_the_warm_start():
    start = [20.0, 30.0, 25.0, 28.0]
    best = [s + d for s, d in zip(start, PMSFC, strict=True)]
    check = choice_check(_entry([_trial(0, start), _trial(1, best), _trial(2, [10.0] * 4)], warm=True), IDS)
    assert check["against"] == "warm start" and (check["best_trial"], check["against_trial"]) == (1, 0)
    assert check["differences"] == pytest.approx(PMSFC, abs=1e-12)
    assert check["mean"] == pytest.approx(2.801) and (check["ahead"], check["n"]) == (3, 4)
    assert check["largest_image"] == "photos-tune/retina"
    assert check["mean_without_largest"] == pytest.approx((0.004 + 0.35 - 1.00) / 3)
    assert check["rests_on_one_image"] is True
    # the interval, computed independently with scipy.stats.bootstrap as stats.bootstrap_ci states it
    ref = stats.bootstrap((np.array(check["differences"]),), np.mean, n_resamples=9999, method="BCa",
                          rng=np.random.default_rng(0))
    assert (check["low"], check["high"]) == pytest.approx((ref.confidence_interval.low, ref.confidence_interval.high))
    lines = choice_lines("pmsfc", check)
    assert [warning for _, warning in lines] == [False, True]
    assert "photos-tune/retina +11.85" in lines[0][0]
    assert "ahead on 3 of 4; without its most favourable image (photos-tune/retina) -0.22" in lines[0][0]
    assert "without photos-tune/retina (+11.85 dB) trial 1 leads the warm start by -0.22 dB" in lines[1][0]
    # the sign-flip test, by hand: of the 16 sign patterns, 5 give a mean at least the observed one (+11.85 with
    # -1.00 flipped to +1.00: 4 patterns; and the observed one), and 5 their mirror images: p = 10/16
    assert check["p"] == pytest.approx(10 / 16)
    assert "sign-flip p 0.625 (the least 4 images can give: 0.125)" in lines[0][0]


def test_without_a_warm_start_the_best_meets_the_runner_up_with_other_settings():
    best = [30.0, 31.0, 32.0, 33.0]
    trials = [_trial(0, [29.0, 30.5, 31.0, 32.0]), _trial(1, best), _trial(2, None, state="PRUNED"),
              _trial(3, best, repeat_of=1), _trial(4, [29.5, 30.0, 31.5, 32.5])]
    trials[3]["params"] = trials[1]["params"]  # a seeded draw that repeated the best's settings
    check = choice_check(_entry(trials, warm=False), IDS)
    assert check["against"] == "runner-up" and check["against_trial"] == 4  # 30.875 dB beats trial 0's 30.625
    assert check["differences"] == pytest.approx([0.5, 1.0, 0.5, 0.5])
    assert check["ahead"] == 4 and check["rests_on_one_image"] is False
    assert [warning for _, warning in choice_lines("m", check)] == [False]


@pytest.mark.parametrize("case", ["no per-image values", "the warm start is the best", "one complete trial",
                                  "an exact reconstruction"])
def test_no_check_where_there_is_nothing_to_pair(case):
    if case == "no per-image values":  # an entry written before trials recorded them
        trials = [_trial(0, [1.0] * 4), _trial(1, [2.0] * 4)]
        for t in trials:
            del t["per_image_psnr"]
        entry = _entry(trials, warm=True)
    elif case == "the warm start is the best":
        entry = _entry([_trial(0, [3.0] * 4), _trial(1, [2.0] * 4)], warm=True)
    elif case == "one complete trial":
        entry = _entry([_trial(0, [3.0] * 4), _trial(1, None, state="PRUNED")], warm=False)
    else:  # psnr() gives inf for identical images; inf − x has no interval, and the search must still finish
        entry = _entry([_trial(0, [3.0] * 4), _trial(1, [math.inf, 4.0, 4.0, 4.0])], warm=True)
    assert choice_check(entry, IDS) is None and choice_lines("m", None) == []


def test_a_search_of_one_tuning_image_rests_on_it():
    check = choice_check(_entry([_trial(0, [20.0]), _trial(1, [21.5])], warm=True), IDS[:1])
    assert check["rests_on_one_image"] is True and math.isnan(check["mean_without_largest"])
    assert math.isnan(check["low"]) and check["mean"] == pytest.approx(1.5)
    text, warning = choice_lines("m", check)[1]
    assert warning and "the choice rests on one tuning image: the search had only that one" in text
    assert "nan" not in choice_lines("m", check)[0][0]


def test_a_trial_that_records_another_number_of_images_is_refused():
    entry = _entry([_trial(0, [1.0, 2.0, 3.0]), _trial(1, [2.0, 3.0, 4.0])], warm=True)
    with pytest.raises(ValueError, match=r"trial 1 records 3 per-image PSNR values, but the search names 4"):
        choice_check(entry, IDS)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-20, 20, allow_nan=False), min_size=2, max_size=8), st.randoms(use_true_random=False))
def test_the_check_does_not_depend_on_the_order_of_the_images(diffs, rnd):
    start = [25.0 + i for i in range(len(diffs))]
    ids = [f"img/{i}" for i in range(len(diffs))]

    def check(order):
        best = [start[i] + diffs[i] for i in order]
        trials = [_trial(0, [start[i] for i in order]), _trial(1, best)]
        trials[1]["value"] = math.inf  # the best by construction, whatever the differences
        return choice_check(_entry(trials, warm=True), [ids[i] for i in order])

    order = list(range(len(diffs)))
    rnd.shuffle(order)
    a, b = check(range(len(diffs))), check(order)
    for key in ("mean", "mean_without_largest"):
        assert a[key] == pytest.approx(b[key], abs=1e-9)
    assert (a["ahead"], a["rests_on_one_image"]) == (b["ahead"], b["rests_on_one_image"])
    assert a["mean_without_largest"] * (len(diffs) - 1) == pytest.approx(
        sum(a["differences"]) - max(a["differences"]), abs=1e-9)


def test_a_search_records_each_trials_per_image_psnr_and_checks_its_choice(G):
    tc = TuneConfig(trials=4, budget=8, n_images=3, pruning="none")
    entry = tune(G, "mganprior", tc)
    complete = [t for t in entry["trials"] if t["state"] == "COMPLETE"]
    assert len(complete) == 4
    for t in complete:  # the objective is the mean of the recorded per-image values
        assert len(t["per_image_psnr"]) == 3 and np.mean(t["per_image_psnr"]) == pytest.approx(t["value"], abs=1e-5)
    check = entry["tuning"]["choice"]
    assert check["against"] == "runner-up" and check["best_trial"] == entry["tuning"]["best_trial"]
    by_number = {t["number"]: t for t in complete}
    assert check["differences"] == pytest.approx(np.subtract(by_number[check["best_trial"]]["per_image_psnr"],
                                                             by_number[check["against_trial"]]["per_image_psnr"]))
    runner_up = max((t for t in complete if t["number"] != check["best_trial"]), key=lambda t: t["value"])
    assert check["against_trial"] == runner_up["number"]
    worst = min(complete, key=lambda t: t["value"])  # a warm start the search beats
    start = {"settings": settings_of(held_method("mganprior", tc), worst["params"], {}),
             "tuning": {"budget": 8, "best_trial": 0}, "trials": [{**worst, "number": 0}], "provenance": {}}
    warm = tune(G, "mganprior", tc, start=start)
    check, trials = warm["tuning"]["choice"], {t["number"]: t for t in warm["trials"]}
    assert check["against"] == "warm start" and check["against_trial"] == 0 and check["best_trial"] != 0
    assert trials[0]["per_image_psnr"] == pytest.approx(worst["per_image_psnr"])  # the same deterministic inversion
    assert check["differences"] == pytest.approx(np.subtract(trials[check["best_trial"]]["per_image_psnr"],
                                                             worst["per_image_psnr"]))


def test_gib_tune_warns_when_its_choice_rests_on_one_image(tmp_path, monkeypatch):
    from gan_inversion_bench import tuning

    real = tuning.tune

    def one_image(*a, **kw):
        entry = real(*a, **kw)
        best, other = entry["tuning"]["best_trial"], entry["tuning"]["choice"]["against_trial"]
        trials = {t["number"]: t for t in entry["trials"]}
        trials[best]["per_image_psnr"] = [v + d for v, d in zip(trials[other]["per_image_psnr"], [9.0, -1.0],
                                                                 strict=True)]
        entry["tuning"]["choice"] = tuning.choice_check(entry, entry["tuning"]["choice"]["images"])
        return entry

    monkeypatch.setenv("GIB_PROFILES", str(tmp_path / "profiles"))
    args = ["tune", "-g", "pggan-tiny", "-m", "mganprior", "--trials", "3", "--budget", "4", "--images", "2",
            "--device", "cpu", "--pruning", "none"]
    plain = CliRunner().invoke(main, args)
    assert plain.exit_code == 0, plain.output
    assert "per tuning image: generated/seed1000 " in plain.output and "(95 % bootstrap over 2 images)" in plain.output
    monkeypatch.setattr(tuning, "tune", one_image)
    flagged = CliRunner().invoke(main, args)
    assert flagged.exit_code == 0, flagged.output
    assert ("mganprior: warning: the choice rests on one tuning image: without generated/seed1000 (+9.00 dB)"
            in flagged.output)
    assert "leads the runner-up by -1.00 dB on average" in flagged.output
    listed = CliRunner().invoke(main, ["list", "profiles", "-g", "pggan-tiny"])  # the entry keeps the check
    assert "(its lead over the runner-up rests on one tuning image, generated/seed1000)" in listed.output, listed.output


def test_tuning_images_are_named_so_that_no_evaluation_image_shares_the_name(G):
    from gan_inversion_bench.imagesets import load_image_set
    from gan_inversion_bench.tune_choice import image_labels
    from gan_inversion_bench.tuning import tuning_set

    faces = tuning_set(G, TuneConfig(n_images=2))
    assert image_labels(faces) == ["generated/seed1000", "generated/seed1001"]
    evaluated = {it.id for it in load_image_set("generated", G, n=4).items}  # latent seeds 0 … 3
    assert "generated/000" in evaluated and not evaluated & set(image_labels(faces))
    assert [it.meta["latent_seed"] for it in faces] == [1000, 1001]
    real = tuning_set(G, TuneConfig(n_images=2, images="photos-tune"))
    assert image_labels(real) == [it.id for it in real] == IDS[:2]
