"""A run folder, a cache entry or a benchmark file may come from someone else: a value of the wrong JSON
type, a cache entry with other keys, shapes or dtypes, or a benchmark without a name or with a zero time
is refused with an ``Error:`` line naming the file and the key (or recomputed with a warning naming the
file, for a cache entry), never a traceback.

The run folders are copies of one tiny real run whose database values are then replaced with sqlite3."""
from __future__ import annotations

import json
import re
import shutil
import sqlite3
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from gan_inversion_bench import GENERATORS
from gan_inversion_bench.cli import main
from gan_inversion_bench.harness import RunConfig, run
from gan_inversion_bench.methods import pmsfc as P

RUN = ["run", "-g", "pggan-tiny", "-m", "single-code", "--images", "generated", "--n", "1", "--iterations", "1",
       "--device", "cpu", "--no-latency", "--no-progress"]


def gib(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def assert_refused(result, *fragments: str) -> None:
    assert result.exit_code != 0, result.output
    assert "Error:" in result.output and "Traceback" not in result.output, result.output
    for f in fragments:
        assert f in result.output, f"{f!r} not in:\n{result.output}"


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("finished") / "r"
    run(RunConfig(generator="pggan-tiny", methods=["single-code"], images="generated", n_generated=1, budget=1,
                  device="cpu", latency=False), out, progress=False, echo=lambda s: None)
    return out


def crafted(finished: Path, tmp_path: Path, *statements: str) -> Path:
    """A copy of the finished run with ``statements`` run on its database."""
    out = tmp_path / "r"
    shutil.copytree(finished, out)
    with sqlite3.connect(out / "results.sqlite") as c:
        for s in statements:
            assert c.execute(s).rowcount == 1, s
    return out


def meta(key: str, value: str) -> str:
    return f"INSERT OR REPLACE INTO meta(key, value) VALUES ('{key}', '{value}')"


# ---- the tables, the report and compare ---------------------------------------------------------------
@pytest.mark.parametrize("command", ["table", "report"])
def test_tuned_on_that_is_no_object_is_refused(finished, tmp_path, command):
    r = crafted(finished, tmp_path, meta("tuned_on", "[1,2]"))
    assert_refused(gib(command, r), str(r / "results.sqlite"), "meta key 'tuned_on'", "expected a JSON object",
                   "found a JSON array")


def test_tuned_on_that_is_no_json_is_refused(finished, tmp_path):
    r = crafted(finished, tmp_path, meta("tuned_on", "{"))
    assert_refused(gib("table", r), str(r / "results.sqlite"), "meta key 'tuned_on'", "not JSON")


def test_tuned_on_as_written_still_gives_its_footer_line(finished, tmp_path):
    r = crafted(finished, tmp_path, meta("tuned_on", json.dumps({"single-code": ["generated/000"]})))
    result = gib("table", r)
    assert result.exit_code == 0, result.output
    assert "Not held out: single-code's tuned entry was tuned on 1 of these images (generated/000)." in result.output


@pytest.mark.parametrize(("column", "value", "found"), [
    ("generator", '"g"', "found a JSON string"),
    ("method_settings", "[1,2]", "found a JSON array"),
    ("metric_conventions", "[1]", "found a JSON array"),
    ("task", '{"name": "inpaint", "settings": [1]}', "key 'settings': expected a JSON object"),
    ("capacity", "5", "found an integer"),
    ("psnr", "abc", "expected a number, found a JSON string"),  # a REAL column keeps text that is no number
])
@pytest.mark.parametrize("command", ["table", "report", "compare"])
def test_a_result_column_of_the_wrong_json_type_is_refused(finished, tmp_path, command, column, value, found):
    r = crafted(finished, tmp_path, f"UPDATE results SET {column} = '{value}'")
    args = [command, r] + (["single-code", "other"] if command == "compare" else [])
    assert_refused(gib(*args), str(r / "results.sqlite"), f"column {column!r}", "generated/000", found)


def test_a_blob_where_a_number_goes_is_refused(finished, tmp_path):
    r = crafted(finished, tmp_path, "UPDATE results SET lpips = x'00ff'")
    assert_refused(gib("table", r), str(r / "results.sqlite"), "column 'lpips'", "generated/000",
                   "expected a number, found bytes")


def test_metric_conventions_that_are_no_text_are_refused(finished, tmp_path):
    r = crafted(finished, tmp_path, "UPDATE results SET metric_conventions = '{\"psnr\": [1]}'")
    assert_refused(gib("report", r), "column 'metric_conventions'", "key 'psnr': expected a JSON string")


# ---- resuming a run ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("value", "fragment"), [
    ("[1]", "meta key 'content': expected a JSON object, found a JSON array"),
    ('{"images": [1]}', "meta key 'content', key 'images': expected a JSON object"),
    ('{"weights_file": "w.pt"}', "meta key 'content', key 'weights_file': expected a JSON object"),
    ("{", "meta key 'content': not JSON"),
])
def test_resuming_with_stored_content_hashes_of_the_wrong_type_is_refused(finished, tmp_path, value, fragment):
    r = crafted(finished, tmp_path, f"UPDATE meta SET value = '{value}' WHERE key = 'content'")
    assert_refused(gib(*RUN, "--out", r), str(r / "results.sqlite"), fragment)


def test_resuming_with_a_stored_generator_hash_that_is_no_text_counts_as_changed_weights(finished, tmp_path):
    r = crafted(finished, tmp_path, "UPDATE meta SET value = json_set(value, '$.generator_state', 5) "
                                    "WHERE key = 'content'")
    assert_refused(gib(*RUN, "--out", r), "made from different inputs", "the generator's weights (sha256 of its "
                   "state_dict 5…")


def test_resuming_with_an_identity_that_is_no_json_is_refused(finished, tmp_path):
    r = crafted(finished, tmp_path, "UPDATE meta SET value = '{' WHERE key = 'identity'")
    assert_refused(gib(*RUN, "--out", r), str(r / "results.sqlite"), "meta key 'identity': not JSON")


# ---- PmSFC's cache entries ------------------------------------------------------------------------------
FAST = {"discovery_iterations": 3, "codes_per_subspace": 2, "iterations": 1}


@pytest.fixture(scope="module")
def pmsfc_cache(tmp_path_factory):
    """A cache folder holding PmSFC's S and clustering entries, and the method prepared from scratch."""
    G = GENERATORS.create("pggan-tiny")
    cache = tmp_path_factory.mktemp("pmsfc") / "cache"
    return G, cache, P.PmSFC(**FAST).prepare(G, seed=0, cache_dir=cache)


def planted(pmsfc_cache, tmp_path, kind: str, entry, why: str = "") -> tuple[P.PmSFC, Path]:
    """Replace the ``kind`` entry (S or masks) of a copy of the cache with ``entry``, then prepare again: a
    warning names the file and ``why`` it was not used."""
    G, cache, _ = pmsfc_cache
    shutil.copytree(cache, tmp_path / "cache")
    path = next((tmp_path / "cache").glob(f"pmsfc-{kind}-*.pt"))
    torch.save(entry, path)
    with pytest.warns(UserWarning, match=rf"ignoring PmSFC cache file .*{path.name}: .*{re.escape(why)}.*; recomput"):
        return P.PmSFC(**FAST).prepare(G, seed=0, cache_dir=tmp_path / "cache"), path


def real_entry(pmsfc_cache, kind: str) -> dict:
    return torch.load(next(pmsfc_cache[1].glob(f"pmsfc-{kind}-*.pt")), weights_only=True)


@pytest.mark.parametrize("entry", [
    {"nolabels": 1},
    "labels",
    {"labels": torch.zeros(32, dtype=torch.long), "warnings": []},  # no spec: not computed for these settings
], ids=["other-keys", "no-dict", "no-spec"])
def test_a_clustering_entry_that_is_not_what_stage_1_writes_is_recomputed(pmsfc_cache, tmp_path, entry):
    m, path = planted(pmsfc_cache, tmp_path, "masks", entry)
    assert torch.equal(m.masks_, pmsfc_cache[2].masks_)
    assert torch.equal(torch.load(path, weights_only=True)["labels"], real_entry(pmsfc_cache, "masks")["labels"])


@pytest.mark.parametrize(("change", "why"), [
    ({"labels": torch.zeros(5, dtype=torch.long)}, "'labels' is a torch.int64 tensor of shape (5,)"),
    ({"labels": torch.zeros(32)}, "'labels' is a torch.float32 tensor"),
    ({"labels": torch.full((32,), 6)}, "'labels' are not all subspace numbers from 0 to 5"),
    ({"warnings": [1]}, "'warnings' is not a list of strings"),
])
def test_a_clustering_entry_of_other_shapes_or_dtypes_is_recomputed_naming_why(pmsfc_cache, tmp_path, change, why):
    m, _ = planted(pmsfc_cache, tmp_path, "masks", {**real_entry(pmsfc_cache, "masks"), **change}, why)
    assert torch.equal(m.masks_, pmsfc_cache[2].masks_)


@pytest.mark.parametrize(("change", "why"), [
    ({"S": torch.zeros(3), "curves": {}}, "'curves' is not a dict of the terms"),
    ({"S": torch.zeros(3)}, "'S' is a torch.float32 tensor of shape (3,)"),
    ({"S": torch.zeros(32, 32, dtype=torch.long)}, "'S' is a torch.int64 tensor"),
    ({"S": torch.full((32, 32), float("nan"))}, "'S' holds non-finite values"),
    ({"curves": {"total": [1.0], "feature": [], "data": [], "sparse": []}}, "is list, not a tensor"),
    ({"key": "{}"}, "it was not computed for this generator"),
])
def test_an_s_entry_of_other_keys_shapes_or_dtypes_is_recomputed_naming_why(pmsfc_cache, tmp_path, change, why):
    m, _ = planted(pmsfc_cache, tmp_path, "S", {**real_entry(pmsfc_cache, "S"), **change}, why)
    assert not m.from_cache_ and torch.equal(m.S_, pmsfc_cache[2].S_)
    assert torch.equal(m.masks_, pmsfc_cache[2].masks_)


def test_the_entries_stage_1_writes_are_used(pmsfc_cache, tmp_path):
    G, cache, first = pmsfc_cache
    shutil.copytree(cache, tmp_path / "cache")
    again = P.PmSFC(**FAST).prepare(G, seed=0, cache_dir=tmp_path / "cache")
    assert again.from_cache_ and torch.equal(again.S_, first.S_) and torch.equal(again.masks_, first.masks_)
    assert again.loss_curves_ == first.loss_curves_


def test_gib_run_recomputes_a_planted_clustering_entry_in_the_run_folder(tmp_path):
    args = ["run", "-g", "pggan-tiny", "-m", "pmsfc", "--images", "generated", "--n", "1", "--iterations", "1",
            "--set", "pmsfc.discovery_iterations=2", "--set", "pmsfc.codes_per_subspace=1", "--device", "cpu",
            "--no-latency", "--no-progress", "--out", tmp_path / "r"]
    assert gib(*args).exit_code == 0
    path = next((tmp_path / "r" / "cache").glob("pmsfc-masks-*.pt"))
    torch.save({"nolabels": 1}, path)
    with pytest.warns(UserWarning, match=rf"ignoring PmSFC cache file .*{path.name}: it was not computed"):
        result = gib(*args)
    assert result.exit_code == 0, result.output
    assert "labels" in torch.load(path, weights_only=True)


# ---- gib bench-compare ----------------------------------------------------------------------------------
def bench(name: str = "benchmarks/x.py::test_a", mn: object = 1.0, **extra) -> dict:
    return {"fullname": name, "stats": {"min": mn, "iqr": 0.0, "stddev": 0.0}, "extra_info": {}, **extra}


@pytest.mark.parametrize(("benchmarks", "fragments"), [
    ([{"name": "test_x"}], ["benchmark 0", "no 'fullname'"]),
    ([bench(mn=0.0)], ["benchmark 0 (benchmarks/x.py::test_a)", "'stats.min' must be a positive", "found 0.0"]),
    ([bench(), bench("benchmarks/x.py::test_b", mn="1")], ["benchmark 1 (benchmarks/x.py::test_b)", "'stats.min'"]),
    ([bench(stats=[1])], ["'stats.min' must be a positive finite number", "found [1]"]),
    ([bench(stats={"min": 1.0, "iqr": -1.0})], ["'stats.iqr' must be a finite number >= 0"]),
    ([bench(extra_info={"psnr": "high"})], ["'extra_info.psnr' must be a finite number", 'found "high"']),
    ([bench(extra_info=[1])], ["'extra_info' must be a JSON object"]),
    ([5], ["benchmark 0: expected a JSON object, found 5"]),
    (5, ["no 'benchmarks' list"]),
])
def test_bench_compare_refuses_a_malformed_benchmark_naming_the_file_and_entry(tmp_path, benchmarks, fragments):
    bad, good = tmp_path / "bad.json", tmp_path / "good.json"
    bad.write_text(json.dumps({"benchmarks": benchmarks}))
    good.write_text(json.dumps({"benchmarks": [bench()]}))
    for args in ((bad, bad), (good, bad), (bad, good)):
        assert_refused(gib("bench-compare", *args), str(bad), *fragments)


def test_bench_compare_still_compares_well_formed_files(tmp_path):
    base, new = tmp_path / "base.json", tmp_path / "new.json"
    base.write_text(json.dumps({"benchmarks": [bench(extra_info={"psnr": 30.0})]}))
    new.write_text(json.dumps({"benchmarks": [bench(mn=1.01, extra_info={"psnr": 30.0})]}))
    result = gib("bench-compare", new, base)
    assert result.exit_code == 0 and "0 regression(s)" in result.output, result.output
