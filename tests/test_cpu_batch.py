"""The automatic CPU batch: at most about ``CPU_BATCH_SECONDS`` of work per batch, so an interrupted
long CPU run loses at most one batch; ``--batch-size`` overrides it, and the rows it writes hold the
same numbers as one batch of everything."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gan_inversion_bench.harness import RunConfig, batch_within, costs, run
from gan_inversion_bench.store import ResultStore


def config(**kw) -> RunConfig:
    base = dict(generator="pggan-tiny", methods=["single-code"], images="generated", n_generated=5,
                overrides={"*": {"iterations": 4}}, device="cpu", batch_size=None, latency=False)
    base.update(kw)
    return RunConfig(**base)


def rows(run_dir):
    with ResultStore(run_dir, create=False) as s:
        return sorted(s.results(), key=lambda r: r["image_id"])


def quiet_run(cfg, out):
    messages: list[str] = []
    run(cfg, out, progress=False, echo=messages.append)
    return rows(out), messages


@given(st.floats(0.01, 1e4), st.integers(1, 64), st.floats(0.0, 1e5))
def test_batch_within_is_the_largest_batch_that_fits(per_image, n, seconds):
    b = batch_within(per_image, n, seconds)
    assert 1 <= b <= n
    assert b == 1 or b * per_image <= seconds  # it fits (one image always runs, however long)
    assert b == n or (b + 1) * per_image > seconds  # and one more would not


def test_batch_within_without_an_estimate_keeps_every_image():
    assert batch_within(0.0, 16, 600.0) == 16
    assert batch_within(float("nan"), 16, 600.0) == 16


def test_a_fixed_time_per_iteration_sets_the_batch(tmp_path, monkeypatch):
    # 0.5 s per iteration and image × 4 iterations = 2 s per image: 5 s of work per batch holds 2 images
    monkeypatch.setattr(costs, "_calibrate", lambda *a: (0.5, "fixed"))
    monkeypatch.setattr(costs, "CPU_BATCH_SECONDS", 5.0)
    got, messages = quiet_run(config(), tmp_path / "r")
    assert [r["batch_size"] for r in got] == [2, 2, 2, 2, 1]
    said = [m for m in messages if "automatic CPU batch" in m]
    assert len(said) == 1 and "of 2 image(s), not 5" in said[0] and "0.5 s per iteration × 4" in said[0]

    # with 2 restarts each image is twice the work: one image per batch
    got, messages = quiet_run(config(restarts=2), tmp_path / "k")
    assert {r["batch_size"] for r in got} == {1}  # images per batch (each with its 2 restarts)
    assert any("× 2 restarts" in m and "of 1 image(s), not 2" in m for m in messages)  # auto: 5 // 2


def test_the_seconds_budget_is_the_estimate(tmp_path, monkeypatch):
    # --budget-seconds 0.2 is the work per image: 0.7 s per batch holds 3 images, and nothing but the
    # budget's own calibration is timed
    monkeypatch.setattr(costs, "CPU_BATCH_SECONDS", 0.7)
    original, calls = costs._calibrate, []

    def counted(*a):
        calls.append(a)
        return original(*a)

    monkeypatch.setattr(costs, "_calibrate", counted)
    got, messages = quiet_run(config(budget_seconds=0.2, overrides={}), tmp_path / "r")
    assert len(calls) == 1
    assert [r["batch_size"] for r in got] == [3, 3, 3, 2, 2]
    assert any("--budget-seconds 0.2" in m and "of 3 image(s), not 5" in m for m in messages)


def test_batch_size_given_is_kept_and_results_do_not_depend_on_the_cap(tmp_path, monkeypatch):
    whole, _ = quiet_run(config(), tmp_path / "whole")  # a few ms of work: every image in one batch
    assert {r["batch_size"] for r in whole} == {5}
    monkeypatch.setattr(costs, "CPU_BATCH_SECONDS", 0.0)
    capped, messages = quiet_run(config(), tmp_path / "capped")
    assert {r["batch_size"] for r in capped} == {1}
    assert any("automatic CPU batch of 1 image(s), not 5" in m for m in messages)
    for a, b in zip(whole, capped, strict=True):
        assert a["image_id"] == b["image_id"]
        assert a["psnr"] == pytest.approx(b["psnr"], abs=1e-4) and a["final_loss"] == pytest.approx(b["final_loss"])
    given_bs, messages = quiet_run(config(batch_size=4), tmp_path / "given")
    assert [r["batch_size"] for r in given_bs] == [4, 4, 4, 4, 1]
    assert not any("automatic CPU batch" in m for m in messages)
