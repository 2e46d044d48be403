"""gib tune: the search is reproducible from its seed, uses held-out images and the method's declared
space, its result is a versioned profile that ``--profile tuned`` applies."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from gan_inversion_bench import GENERATORS, METHODS
from gan_inversion_bench.cli import main
from gan_inversion_bench.harness import RunConfig, build_method, run
from gan_inversion_bench.imagesets import load_image_set
from gan_inversion_bench.profiles import ProfileError, read_profile, tuned_settings, write_entry
from gan_inversion_bench.store import ResultStore
from gan_inversion_bench.tuning import TuneConfig, tune, tuning_images

TC = TuneConfig(trials=5, budget=8, n_images=2, min_resource=2)


@pytest.fixture(scope="module")
def G():
    return GENERATORS.create("pggan-tiny")


def test_same_seed_same_study_and_profile(G):
    a, b = tune(G, "mganprior", TC), tune(G, "mganprior", TC)
    assert a["settings"] == b["settings"]
    assert [(t["params"], t["value"], t["state"]) for t in a["trials"]] == \
        [(t["params"], t["value"], t["state"]) for t in b["trials"]]
    c = tune(G, "mganprior", TuneConfig(**{**TC.__dict__, "seed": 1}))
    assert [t["params"] for t in c["trials"]] != [t["params"] for t in a["trials"]]


def test_search_uses_the_declared_space_and_records_the_protocol(G):
    entry = tune(G, "pmsfc", TuneConfig(**{**TC.__dict__, "trials": 3}))
    names = set(METHODS.get("pmsfc").setting_names())
    assert set(entry["settings"]) <= names and set(entry["settings"]) == {"optimizer", "lr", "weight_lr", "weight_init"}
    assert 0.1 <= entry["settings"]["weight_init"] <= 2.0
    t = entry["tuning"]
    assert t["budget"] == 8 and t["n_images"] == 2 and t["image_seed"] == 1 and len(entry["trials"]) == 3
    assert max(tr["value"] for tr in entry["trials"] if tr["state"] == "COMPLETE") == t["best_value"]
    assert entry["provenance"]["generator"]["name"] == "pggan-tiny" and "optuna" in entry["provenance"]["versions"]


def test_the_returned_entry_is_the_one_the_profile_file_reads_back(G, tmp_path):
    """ILO's space gives its radii as a tuple; the entry holds them as the JSON file will (a list)."""
    entry = tune(G, "ilo", TuneConfig(**{**TC.__dict__, "trials": 2}))
    assert isinstance(entry["settings"]["radii"], list) and len(entry["settings"]["radii"]) == 1
    write_entry(tmp_path / "pggan-tiny.json", "pggan-tiny", "ilo", entry)
    assert read_profile(tmp_path / "pggan-tiny.json")["methods"]["ilo"]["settings"] == entry["settings"]


def test_the_code_revision_is_the_one_the_process_started_with(G, monkeypatch):
    """A search takes hours and the checkout may move on meanwhile: every entry of a process states
    the revision its first search ran, not the one at the time the entry was written."""
    from gan_inversion_bench import tuning
    from gan_inversion_bench.harness import provenance

    revisions = iter(["rev-at-start", "rev-later", "rev-even-later"])
    monkeypatch.setattr(provenance, "code_revision", lambda: next(revisions))
    tuning.process_revision.cache_clear()
    try:
        first = tune(G, "single-code", TuneConfig(**{**TC.__dict__, "trials": 2}))
        second = tune(G, "single-code", TuneConfig(**{**TC.__dict__, "trials": 2}))
    finally:
        tuning.process_revision.cache_clear()
    assert first["provenance"]["code_revision"] == second["provenance"]["code_revision"] == "rev-at-start"


def test_tuning_images_are_disjoint_from_the_evaluation_images(G):
    tuning, _ = tuning_images(G, TuneConfig(n_images=8), G.device)
    evaluation = load_image_set("generated", G, n=8, seed=0)
    for it in evaluation.items:
        assert not any(bool((it.image.to(tuning.device) - t).abs().max() < 1e-6) for t in tuning)


def test_profile_tuned_applies_the_profile_and_a_missing_one_says_what_to_do(G, tmp_path, monkeypatch):
    monkeypatch.setenv("GIB_PROFILES", str(tmp_path / "profiles"))
    with pytest.raises(ProfileError, match="gib tune -g pggan-tiny -m single-code"):
        tuned_settings("pggan-tiny", "single-code")
    result = CliRunner().invoke(main, ["tune", "-g", "pggan-tiny", "-m", "single-code", "--trials", "3", "--budget",
                                       "4", "--images", "2", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    profile = read_profile(tmp_path / "profiles" / "pggan-tiny.json")
    entry = profile["methods"]["single-code"]
    assert entry["provenance"]["command"].startswith("gib tune -g pggan-tiny -m single-code --trials 3 --budget 4")
    # one progress line per finished trial, on stderr, agreeing with the trials the entry records
    lines = [line for line in result.stderr.splitlines() if line.startswith("single-code: trial ")]
    assert [line.split(",")[0] for line in lines] == [
        f"single-code: trial {t['number'] + 1}/3 {t['state'].lower()}" for t in entry["trials"]]
    assert all(f"{t['value']:.2f} dB" in line for t, line in zip(entry["trials"], lines, strict=True))
    out = run(RunConfig(generator="pggan-tiny", methods=["single-code"], profile="tuned", images="generated",
                        n_generated=2, budget=3, device="cpu", latency=False), tmp_path / "r", progress=False,
              echo=lambda s: None)
    with ResultStore(out, create=False) as s:
        settings = s.results()[0]["method_settings"]
    assert settings["optimizer"] == entry["settings"]["optimizer"] and settings["lr"] == entry["settings"]["lr"]
    json.dumps(profile)


def test_a_method_with_nothing_to_tune_runs_at_quick_under_the_tuned_profile(tmp_path, monkeypatch):
    """The encoder (one forward pass, no budget) has no tuned entry and needs none; `auto` still picks
    the tuned profile when every tunable method has one; a tunable method without one is refused."""
    from gan_inversion_bench.cli_run import _profile

    assert not METHODS.get("encoder").tunable() and METHODS.get("idinvert").tunable()
    assert METHODS.get("single-code").tunable() and METHODS.get("cma-es").tunable()
    monkeypatch.setenv("GIB_PROFILES", str(tmp_path / "profiles"))
    write_entry(tmp_path / "profiles" / "pggan-tiny.json", "pggan-tiny", "single-code",
                {"base_profile": "quick", "settings": {"optimizer": "adam", "lr": 0.05}})
    config = RunConfig(generator="pggan-tiny", methods=["encoder", "single-code"], profile="tuned")
    assert build_method("encoder", config).get_settings() == METHODS.get("encoder").from_profile("quick").get_settings()
    assert build_method("single-code", config).settings.lr == 0.05
    assert _profile("auto", "pggan-tiny", ["encoder", "single-code"]) == "tuned"
    assert _profile("auto", "pggan-tiny", ["encoder", "single-code", "ilo"]) == "quick"
    with pytest.raises(ProfileError, match="gib tune -g pggan-tiny -m ilo"):
        build_method("ilo", RunConfig(generator="pggan-tiny", methods=["ilo"], profile="tuned"))


def test_the_first_rung_scales_with_the_budget(G):
    """A long budget is not judged at 8 iterations: the first rung is budget // 27 from budget 216 on
    (the committed profiles, at budgets of 100 or less, keep 8); a given value wins."""
    assert [TuneConfig(budget=b).min_resource for b in (32, 100, 216, 1000, 2000)] == [8, 8, 8, 37, 74]
    assert TuneConfig(budget=1000, min_resource=5).min_resource == 5
    assert TuneConfig(budget=1000, reduction_factor=2).min_resource == 125
    entry = tune(G, "single-code", TuneConfig(trials=8, budget=16, n_images=2, min_resource=4))
    assert entry["tuning"]["min_resource"] == 4
    pruned = [t for t in entry["trials"] if t["state"] == "PRUNED"]
    assert pruned and min(t["last_step"] for t in pruned) >= 4  # nothing is judged before the first rung


def test_without_pruning_every_trial_runs_to_the_budget(G):
    halved = tune(G, "single-code", TuneConfig(trials=8, budget=16, n_images=2, min_resource=2))
    full = tune(G, "single-code", TuneConfig(trials=8, budget=16, n_images=2, min_resource=2, pruning="none"))
    assert any(t["state"] == "PRUNED" for t in halved["trials"])
    assert [(t["state"], t["last_step"]) for t in full["trials"]] == [("COMPLETE", 16)] * 8
    assert full["tuning"]["pruning"] == "none" and full["tuning"]["pruner"].startswith("none")
    # the same sampler seed proposes the same first settings; unpruned, the best is the best of all 8
    assert [t["params"] for t in full["trials"]][:3] == [t["params"] for t in halved["trials"]][:3]
    assert full["tuning"]["best_value"] == max(t["value"] for t in full["trials"])


def test_bad_tuning_settings_are_refused():
    for bad in ({"trials": 0}, {"budget": -1}, {"n_images": 1.5}, {"min_resource": 0}, {"pruning": "median"}):
        with pytest.raises(ValueError):
            TuneConfig(**bad)


@pytest.mark.slow
@pytest.mark.parametrize("generator", ["dcgan-digiface64", "dcgan-omniart-eyes128"])
@pytest.mark.parametrize("method", ["single-code", "mganprior", "pmsfc", "ilo", "idinvert", "pivotal-tuning", "cma-es"])
def test_the_committed_profile_is_reproduced_from_its_seed(generator, method):
    """`gib tune` with the committed profile's protocol gives the committed settings (minutes each: -m slow).

    The best value repeats to 1e-6 on the CPU kernels the entry was tuned with; on others the float
    rounding differs (the 4-eye omniart single-code entry, tuned with AVX-512 kernels, gave the same
    settings and 25.2794 instead of 25.2875 dB with AVX2 ones, 2026-12-02), so there only the
    search's outcome (the settings, to 1e-12) must repeat and the value within 0.05 dB. A halving
    search on other kernels may not even do that: a trial's last-bit difference can flip a pruning
    decision, after which TPE proposes other settings (digiface single-code, halving with AVX2
    kernels: Adam lr 0.183; with AVX-512 ones: SGD lr 22.0, 2026-12-02; digiface ILO's halving
    entry gave its settings again). That case is an expected failure, reported with what came out."""
    from gan_inversion_bench.devices import cpu_capability
    from gan_inversion_bench.profiles import PACKAGE_DIR

    entry = read_profile(PACKAGE_DIR / f"{generator}.json")["methods"][method]
    t = entry["tuning"]
    tc = TuneConfig(trials=t["trials"], budget=t["budget"], n_images=t["n_images"], image_seed=t["image_seed"],
                    seed=t["seed"], base_profile=t["base_profile"], reduction_factor=t["reduction_factor"],
                    min_resource=t["min_resource"], pruning=t["pruning"])
    assert (" --pruning none" in entry["provenance"]["command"]) == (tc.pruning == "none")
    again = tune(GENERATORS.create(generator), method, tc)
    kernels = cpu_capability()
    same_kernels = bool(kernels) and f", {kernels}," in entry["provenance"]["device"]
    if same_kernels:
        assert again["settings"] == entry["settings"]
    else:  # the same draws, up to the last bit (omniart PmSFC's w0: 0.26599071066206037 vs …603)
        expected = {k: pytest.approx(v, rel=1e-12) if isinstance(v, float) else v for k, v in entry["settings"].items()}
        if tc.pruning == "halving" and again["settings"] != expected:
            pytest.xfail(f"halving search on {kernels or 'unknown'} kernels, entry tuned on "
                         f"{entry['provenance']['device']}: got {again['settings']}, entry {entry['settings']}")
        assert again["settings"] == expected
    assert again["tuning"]["best_value"] == pytest.approx(t["best_value"], abs=1e-6 if same_kernels else 0.05)


def test_every_committed_profile_entry_is_a_real_search_whose_best_trial_it_holds():
    """The committed profiles hold what they claim: each entry of each generator's file was searched
    (more than one trial ran to the budget; two entries once held TPE's first draw alone), and its
    recorded best is the best completed trial, found by the command it records."""
    from gan_inversion_bench.profiles import PACKAGE_DIR

    files = sorted(PACKAGE_DIR.glob("*.json"))
    assert {f.stem for f in files} >= {"dcgan-digiface64", "dcgan-omniart-eyes128"}
    for path in files:
        data = read_profile(path)
        assert data["generator"] == path.stem and data["methods"], path
        for method, entry in data["methods"].items():
            where, t = f"{path.name}: {method}", entry["tuning"]
            complete = [x for x in entry["trials"] if x["state"] == "COMPLETE"]
            assert t["complete_trials"] == len(complete) >= 2, f"{where}: {len(complete)} trial(s) reached the budget"
            best = max(complete, key=lambda x: x["value"])
            assert t["best_trial"] == best["number"] and t["best_value"] == best["value"], where
            assert entry["settings"] and method in METHODS.names(), where
            command = entry["provenance"]["command"]
            assert f"-g {path.stem} " in command and f"-m {method} " in command, f"{where}: {command}"


def test_a_search_where_one_trial_alone_completed_is_flagged(G, tmp_path, monkeypatch):
    """Successive halving can stop every trial but the first at the first rung (it happened to idinvert and
    CMA-ES on both real DCGANs): the profile is then one random draw, and gib tune says so."""
    from gan_inversion_bench import tuning

    real = tuning.tune
    entries = []

    def one_complete(*a, **kw):
        entry = real(*a, **kw)
        entry["tuning"].update(complete_trials=1, best_trial=0, pruned_trials=entry["tuning"]["trials"] - 1)
        entries.append(entry)
        return entry

    monkeypatch.setenv("GIB_PROFILES", str(tmp_path / "profiles"))
    args = ["tune", "-g", "pggan-tiny", "-m", "single-code", "--trials", "3", "--budget", "4", "--images", "2",
            "--device", "cpu"]
    quiet = CliRunner().invoke(main, args)
    assert quiet.exit_code == 0 and "warning" not in quiet.output  # trials that completed: no warning
    monkeypatch.setattr(tuning, "tune", one_complete)
    flagged = CliRunner().invoke(main, args)
    assert flagged.exit_code == 0 and entries, flagged.output
    assert ("single-code: warning: only trial 0 ran to the budget; every other trial was stopped at the first rung "
            "(8 iterations)") in flagged.output and "--pruning none" in flagged.output
