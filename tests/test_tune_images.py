"""gib tune --tune-images: tuning on real targets (the bundled held-out photos, or a folder), disjoint by
content from the evaluation photos, with every tuning image named and hashed in the entry."""
from __future__ import annotations

import shlex
import shutil

import pytest
import torch
from click.testing import CliRunner

from gan_inversion_bench import METHODS
from gan_inversion_bench.cli import main
from gan_inversion_bench.harness.config import image_sha256
from gan_inversion_bench.imagesets import PHOTOS, TUNING_PHOTOS, _package_dir, load_image_set, photos
from gan_inversion_bench.metrics import psnr
from gan_inversion_bench.profiles import entries, read_profile
from gan_inversion_bench.tuning import TuneConfig, tune, tuning_images, tuning_set

TC = TuneConfig(trials=2, budget=4, n_images=2, min_resource=2, pruning="none", startup_trials=2,
                fixed={"optimizer": "adam"}, images="photos-tune")


def test_the_tuning_photos_are_real_readable_and_none_is_an_evaluation_photo(G):
    tuning = load_image_set("photos-tune", G)
    assert [it.id for it in tuning.items] == [f"photos-tune/{k}" for k in TUNING_PHOTOS]
    assert not set(TUNING_PHOTOS) & set(PHOTOS)
    assert {it.meta["source"] for it in tuning.items}.isdisjoint({it.meta["source"] for it in photos(G.resolution)})
    for it in tuning.items:
        assert it.image.shape == (3, G.resolution, G.resolution) and it.meta["licence"]
        assert float(it.image.amin()) >= -1 and float(it.image.amax()) <= 1 and float(it.image.std()) > 0.05
    evaluated = {image_sha256(it) for it in photos(G.resolution)}
    assert not {image_sha256(it) for it in tuning.items} & evaluated


@pytest.fixture(scope="module")
def photo_entry(G):
    return tune(G, "single-code", TC)


def test_a_search_on_photos_tunes_on_them_and_names_each_in_its_entry(G, photo_entry):
    t = photo_entry["tuning"]
    assert t["images"] == "photos-tune" and t["n_images"] == 2
    firsts = load_image_set("photos-tune", G).items[:2]
    assert t["tuning_image_sha256"] == {it.id: image_sha256(it) for it in firsts}
    assert all(it.id in t["tuning_images"] for it in firsts)
    # the objective is the mean PSNR on those photos, recomputed outside the search
    trial = photo_entry["trials"][0]
    m = METHODS.get("single-code").from_profile("quick", optimizer="adam", lr=trial["params"]["adam_lr"])
    m = m.with_budget(TC.budget)
    m.prepare(G, seed=0, cache_dir=None)
    targets = torch.stack([it.image for it in firsts])
    rec = m.invert(G, targets, seeds=[0, 1]).reconstructions.float().clamp(-1, 1)
    assert float(psnr(rec, targets).mean()) == pytest.approx(trial["value"], abs=1e-5)
    # and not the generated tuning faces' value
    generated, _ = tuning_images(G, TuneConfig(**{**TC.__dict__, "images": "generated"}), torch.device("cpu"))
    assert not torch.equal(generated, targets)


def test_a_generated_search_records_what_it_recorded_before(G):
    tc = TuneConfig(**{**TC.__dict__, "images": "generated"})
    assert "images" not in tc.record() and TC.record()["images"] == "photos-tune"
    entry = tune(G, "single-code", TuneConfig(**{**tc.__dict__, "trials": 1}))
    assert "images" not in entry["tuning"] and "tuning_image_sha256" not in entry["tuning"]
    assert entry["tuning"]["tuning_images"].startswith("generated, run seed 1")


@pytest.mark.parametrize("images", ["photos", "generated+photos", "faces", "", None])
def test_an_evaluation_set_or_an_unknown_one_is_refused_as_tuning_images(images):
    with pytest.raises(ValueError, match="images must be one of generated, photos-tune or folder:PATH"):
        TuneConfig(images=images)


def test_a_folder_holding_an_evaluation_photo_is_refused_by_content(G, tmp_path):
    module, rel, _ = PHOTOS["chelsea"]
    shutil.copyfile(_package_dir(module) / rel, tmp_path / "a_cat_renamed.png")
    module, rel, _ = TUNING_PHOTOS["camera"]
    shutil.copyfile(_package_dir(module) / rel, tmp_path / "b.png")
    tc = TuneConfig(**{**TC.__dict__, "images": f"folder:{tmp_path}"})
    with pytest.raises(ValueError, match=r"folder/a_cat_renamed.png is the evaluation photo photos/chelsea"):
        tuning_set(G, tc)
    (tmp_path / "a_cat_renamed.png").unlink()
    with pytest.raises(ValueError, match=r"1 readable image\(s\), fewer than the 2 asked for"):
        tuning_set(G, tc)
    assert [it.id for it in tuning_set(G, TuneConfig(**{**tc.__dict__, "n_images": 1}))] == ["folder/b.png"]


def test_the_cli_refuses_bad_tuning_images_before_any_search_and_writes_the_option_in_the_command(tmp_path,
                                                                                                monkeypatch):
    out = tmp_path / "p.json"
    base = ["tune", "-g", "pggan-tiny", "-m", "single-code", "--trials", "1", "--budget", "2", "--out", str(out)]
    r = CliRunner().invoke(main, [*base, "--tune-images", "photos"])
    assert r.exit_code != 0 and "images must be one of" in r.output and not out.exists()
    r = CliRunner().invoke(main, [*base, "--tune-images", f"folder:{tmp_path / 'none'}"])
    assert r.exit_code != 0 and "does not exist" in r.output and "trials at" not in r.output
    r = CliRunner().invoke(main, [*base, "--images", "5", "--tune-images", "photos-tune"])
    assert r.exit_code != 0 and "fewer than the 5 asked for" in r.output
    r = CliRunner().invoke(main, [*base, "--images", "1", "--tune-images", "photos-tune"])
    assert r.exit_code == 0, r.output
    entry = next(e for e in entries(read_profile(out)["methods"]["single-code"]) if e["tuning"]["budget"] == 2)
    assert "--tune-images photos-tune" in entry["provenance"]["command"]
    assert list(entry["tuning"]["tuning_image_sha256"]) == ["photos-tune/grace_hopper"]
    monkeypatch.setenv("GIB_PROFILES", str(tmp_path))
    out.rename(tmp_path / "pggan-tiny.json")
    listed = CliRunner().invoke(main, ["list", "profiles", "-g", "pggan-tiny"]).output
    assert "single-code at 2 iterations: best" in listed and "on 1 photos-tune images" in listed
    # the recorded command searches the same photos again, to the same trials
    again = tmp_path / "again.json"
    rerun = CliRunner().invoke(main, ["tune", *shlex.split(entry["provenance"]["command"])[2:], "--out", str(again)])
    assert rerun.exit_code == 0, rerun.output
    other = next(e for e in entries(read_profile(again)["methods"]["single-code"]) if e["tuning"]["budget"] == 2)
    assert other["trials"] == entry["trials"] and other["tuning"]["images"] == "photos-tune"


# ---- a run under a tuned entry says where it evaluates its own tuning images -----------------------
@pytest.fixture(scope="module")
def G64():
    from gan_inversion_bench import GENERATORS

    return GENERATORS.create("dcgan-digiface64")


def test_a_run_names_the_generated_faces_its_entry_was_tuned_on(G64):
    from gan_inversion_bench.harness.config import RunConfig, tuned_on

    config = RunConfig(methods=["single-code"], profile="tuned", budget=2000, images="generated")
    tuning_faces = load_image_set("generated", G64, n=6, seed=1)  # the committed entries' tuning seed
    assert tuned_on("single-code", config, tuning_faces) == [f"generated/{i:03d}" for i in range(4)]  # 4 faces
    at_100 = RunConfig(**{**config.__dict__, "budget": 100})  # that entry was searched on 16 faces
    assert tuned_on("single-code", at_100, tuning_faces) == [f"generated/{i:03d}" for i in range(6)]
    assert tuned_on("single-code", config, load_image_set("generated+photos", G64, n=6, seed=0)) == []
    quick = RunConfig(methods=["single-code"], profile="quick", budget=100, images="generated")
    assert tuned_on("single-code", quick, tuning_faces) == []


def test_a_run_on_a_real_tuning_photo_warns_and_records_it(G64, tmp_path, monkeypatch):
    import json

    from gan_inversion_bench.harness import RunConfig, run
    from gan_inversion_bench.profiles import profile_path
    from gan_inversion_bench.store import ResultStore

    hopper = load_image_set("photos-tune", G64).items[0]
    profile = read_profile(profile_path("dcgan-digiface64"))
    for entry in entries(profile["methods"]["single-code"]):  # as a search with --tune-images photos-tune records it
        entry["tuning"].update(images="photos-tune", tuning_image_sha256={hopper.id: image_sha256(hopper)})
    profile["methods"]["single-code"] = entries(profile["methods"]["single-code"])[-1]
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "dcgan-digiface64.json").write_text(json.dumps(profile))
    monkeypatch.setenv("GIB_PROFILES", str(tmp_path / "profiles"))
    folder = tmp_path / "images"
    folder.mkdir()
    module, rel, _ = TUNING_PHOTOS["grace_hopper"]
    shutil.copyfile(_package_dir(module) / rel, folder / "hopper.jpg")
    module, rel, _ = PHOTOS["coffee"]
    shutil.copyfile(_package_dir(module) / rel, folder / "coffee.png")
    lines: list[str] = []
    config = RunConfig(methods=["single-code"], profile="tuned", budget=2, images=f"folder:{folder}", latency=False)
    out = run(config, tmp_path / "run", echo=lines.append, progress=False)
    assert any("single-code: warning: its tuned entry was tuned on 1 of the images this run evaluates "
               "(folder/hopper.jpg)" in line for line in lines), lines
    with ResultStore(out, create=False) as store:
        assert store.get_meta("tuned_on") == {"single-code": ["folder/hopper.jpg"]}
    from gan_inversion_bench.tables import load_records, to_markdown

    footer = "Not held out: single-code's tuned entry was tuned on 1 of these images (folder/hopper.jpg)."
    assert footer in to_markdown(load_records(out))
    clean = run(RunConfig(**{**config.__dict__, "images": f"folder:{folder}", "profile": "quick"}), tmp_path / "q",
                echo=lines.append, progress=False)
    with ResultStore(clean, create=False) as store:
        assert store.get_meta("tuned_on") is None
    assert "Not held out" not in to_markdown(load_records(clean))
