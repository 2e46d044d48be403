"""A resume whose preparation ran again: continued where what it learned agrees, refused where not
(gan_inversion_bench.harness.resume)."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from gan_inversion_bench.harness import RunConfig, RunError, run
from gan_inversion_bench.harness.config import build_method
from gan_inversion_bench.harness.orchestrate import run_method_key
from gan_inversion_bench.harness.resume import continued_key
from gan_inversion_bench.methods.pmsfc import PmSFC
from gan_inversion_bench.precision import ExecutionOptions
from gan_inversion_bench.store import ResultStore


def config(**kw) -> RunConfig:
    base = dict(generator="pggan-tiny", methods=["pmsfc"], images="generated", n_generated=3, profile="test",
                overrides={"pmsfc": {"iterations": 2}}, device="cpu", batch_size=3, latency=False)
    base.update(kw)
    return RunConfig(**base)


def rows(run_dir):
    with ResultStore(run_dir, create=False) as s:
        return s.results()


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished PmSFC run on 3 images (discovery and all)."""
    out = run(config(), tmp_path_factory.mktemp("prepared") / "r", progress=False, echo=lambda s: None)
    return out, rows(out)


def _lose_one_image_and_the_cache(src, tmp_path):
    """A copy of the run folder as it arrives from elsewhere: no cache, and one image still to do."""
    out = tmp_path / "r"
    shutil.copytree(src, out, ignore=shutil.ignore_patterns("cache"))
    with ResultStore(out) as st:
        st.conn.execute("DELETE FROM results WHERE image_id = 'generated/002'")
    return out


def _prepared_as(monkeypatch, change):
    """The next preparation reports its state changed by ``change`` (another machine's discovery)."""
    original = PmSFC.prepared_state

    def changed(self):
        state = original(self)
        return change(dict(state)) if state else {}

    monkeypatch.setattr(PmSFC, "prepared_state", changed)


def test_the_stored_state_says_what_discovery_learned(finished):
    _, first = finished
    prepared = first[0]["prepared"]
    assert {"split", "affinity", "cluster_sizes", "masks_sha256", "final_losses"} <= set(prepared)
    assert set(PmSFC.PREPARED_IDENTITY) <= set(prepared)
    assert sum(prepared["cluster_sizes"]) == prepared["split"]["shape"][0]  # the masks partition the channels
    assert len({json.dumps(r["prepared"], sort_keys=True) for r in first}) == 1


def test_same_masks_other_loss_digits_continue_the_stored_rows(finished, tmp_path, monkeypatch):
    src, first = finished
    out = _lose_one_image_and_the_cache(src, tmp_path)

    def other_digits(state):
        return {**state, "final_losses": {k: v * (1 + 1e-7) for k, v in state["final_losses"].items()}}

    _prepared_as(monkeypatch, other_digits)
    said: list[str] = []
    run(config(), out, progress=False, echo=said.append)
    after = rows(out)
    assert len(after) == 3 and {r["method_key"] for r in after} == {first[0]["method_key"]}
    assert any("its preparation ran again; what it learned agrees with the 2 stored result(s)" in m
               and "final_losses differs" in m for m in said), said
    new = next(r for r in after if r["image_id"] == "generated/002")
    assert new["prepared"]["final_losses"] != first[0]["prepared"]["final_losses"]  # the row says how it ran


def test_other_masks_are_refused_and_nothing_is_written(finished, tmp_path, monkeypatch):
    src, _ = finished
    out = _lose_one_image_and_the_cache(src, tmp_path)
    _prepared_as(monkeypatch, lambda s: {**s, "masks_sha256": "0" * 20})
    with pytest.raises(RunError, match=r"pmsfc: the 2 stored result\(s\) of this configuration .*\(masks_sha256: "
                                       r"stored '[0-9a-f]{20}', now '0{20}'.*Restore the folder's cache/"):
        run(config(), out, progress=False, echo=lambda s: None)
    assert len(rows(out)) == 2


def test_rows_from_before_the_masks_digest_are_compared_on_what_they_record(finished, tmp_path, monkeypatch):
    """Rows stored before ``masks_sha256`` existed (a key without it) continue where split, affinity and
    cluster sizes agree, and the note says what could not be compared."""
    src, first = finished
    out = _lose_one_image_and_the_cache(src, tmp_path)
    method = build_method("pmsfc", config())
    legacy = {k: v for k, v in first[0]["prepared"].items() if k != "masks_sha256"}
    old_key = run_method_key(method, config(), ExecutionOptions(), legacy)
    with ResultStore(out) as st:
        st.conn.execute("UPDATE results SET method_key = ?, prepared = ?",
                        (old_key, json.dumps(legacy, sort_keys=True)))
    said: list[str] = []
    run(config(), out, progress=False, echo=said.append)
    assert {r["method_key"] for r in rows(out)} == {old_key} and len(rows(out)) == 3
    assert any("(split, affinity, cluster_sizes)" in m and "do not record masks_sha256 (not compared)" in m
               for m in said), said
    other = {**legacy, "cluster_sizes": [*legacy["cluster_sizes"][::-1], 0]}  # older rows of other masks
    out = _lose_one_image_and_the_cache(src, tmp_path / "other")
    with ResultStore(out) as st:
        st.conn.execute("UPDATE results SET method_key = ?, prepared = ?",
                        (run_method_key(method, config(), ExecutionOptions(), other), json.dumps(other)))
    with pytest.raises(RunError, match=r"cluster_sizes: stored \["):
        run(config(), out, progress=False, echo=lambda s: None)


def test_another_configuration_is_not_continued(finished, tmp_path):
    """Rows of other settings are another configuration: the run starts its own rows beside them."""
    src, first = finished
    out = _lose_one_image_and_the_cache(src, tmp_path)
    other = config(overrides={"pmsfc": {"iterations": 2, "lr": 0.5}})
    run(other, out, progress=False, echo=lambda s: None)
    keys = {r["method_key"] for r in rows(out)}
    assert len(keys) == 2 and first[0]["method_key"] in keys
    assert len([r for r in rows(out) if r["method_key"] != first[0]["method_key"]]) == 3


class _Learned:
    """A stand-in for a prepared method: ``PREPARED_IDENTITY`` None compares every key."""

    name, PREPARED_IDENTITY = "fake", None

    def __init__(self, state):
        self.state = state

    def prepared_state(self):
        return self.state


def _store_with(folder, key, prepared):
    folder.mkdir(parents=True)
    st = ResultStore(folder)
    st.add_results([{"method_key": key, "image_id": "img", "method": "fake", "method_version": "1",
                     "image_set": "x", "status": "ok", "created": "now", "prepared": prepared}])
    return st


def test_without_a_declared_identity_every_key_is_compared(tmp_path):
    def key_for(p):
        return "fake@" + json.dumps(p, sort_keys=True)

    stored = {"weights": "abc", "loss": 0.5}
    with _store_with(tmp_path / "same", key_for(stored), stored) as st:
        assert continued_key(st, _Learned(stored), key_for, "R") == (key_for(stored), "")  # a plain resume
        with pytest.raises(RunError, match=r"loss: stored 0\.5, now 0\.6"):
            continued_key(st, _Learned({"weights": "abc", "loss": 0.6}), key_for, "R")
        assert continued_key(st, _Learned({}), key_for, "R") == (key_for({}), "")  # nothing prepared
    with _store_with(tmp_path / "other", "fake@not-this-configuration", stored) as st:
        new = {"weights": "xyz", "loss": 0.5}
        assert continued_key(st, _Learned(new), key_for, "R") == (key_for(new), "")


def test_pmsfc_identity_is_the_masks_content():
    """Two mask sets of the same sizes have different digests; the digest does not depend on the device."""
    method = build_method("pmsfc", config())
    method.masks_ = torch.zeros(2, 4, dtype=torch.bool)
    method.masks_[0, :2] = method.masks_[1, 2:] = True
    method.split_, method.loss_curves_, method.cache_key_, method.masks_key_ = {}, {}, "c", "m"
    method.s_source_, method.clustering_notes_ = "trained", []
    a = method.prepared_state()["masks_sha256"]
    method.masks_ = method.masks_.float()
    assert method.prepared_state()["masks_sha256"] == a  # bool or float masks: the same content
    method.masks_ = method.masks_.flip(1)
    assert method.prepared_state()["masks_sha256"] != a and method.prepared_state()["cluster_sizes"] == [2, 2]
