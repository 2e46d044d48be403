"""Quality along the way (traces) and restarts, checked against independent computations:
the PSNR recorded at iteration t equals that of a separate inversion stopped at t, and the best
of K restarts is the restart with the lowest final loss, restart 0 being the run without restarts."""
from __future__ import annotations

import pytest
import torch

from gan_inversion_bench import GENERATORS, compare_runs, tables
from gan_inversion_bench.harness import RunConfig, run
from gan_inversion_bench.harness.invert import restart_seed
from gan_inversion_bench.harness.provenance import image_seed
from gan_inversion_bench.harness.trace import trace_points
from gan_inversion_bench.methods.single_code import SingleCode
from gan_inversion_bench.metrics import compute_metrics
from gan_inversion_bench.store import ResultStore


def config(**kw) -> RunConfig:
    base = dict(generator="pggan-tiny", methods=["single-code"], images="generated", n_generated=2, budget=8,
                device="cpu", batch_size=2)
    base.update(kw)
    return RunConfig(**base)


def rows(out):
    with ResultStore(out, create=False) as s:
        return {r["image_id"]: r for r in s.results()}


def test_trace_points_are_log_spaced():
    assert trace_points(100) == [0, 1, 2, 4, 8, 16, 32, 64, 100]
    assert trace_points(1) == [0, 1] and trace_points(2) == [0, 1, 2] and trace_points(8) == [0, 1, 2, 4, 8]


def test_trace_matches_separate_inversions_stopped_early(tmp_path):
    out = run(config(), tmp_path / "r", progress=False, echo=lambda s: None)
    recs = rows(out)
    G = GENERATORS.create("pggan-tiny")
    for image_id, r in recs.items():
        tr = r["trace"]
        assert tr["iteration"] == [0, 1, 2, 4, 8]
        assert tr["psnr"][-1] == pytest.approx(r["psnr"], abs=1e-9) and tr["mse"][-1] == pytest.approx(r["mse"])
        assert set(tr["lpips"]) == {"2", "4", "8"} and tr["lpips"]["8"] == pytest.approx(r["lpips"], abs=1e-6)
        assert tr["seconds"] == sorted(tr["seconds"]) and tr["seconds"][0] >= 0
        assert tr["flops"] == pytest.approx([r["flops_fixed"] + t * r["flops_per_iteration"] for t in tr["iteration"]])
        # independent: the same image and seed inverted with a budget of t gives the PSNR traced at t
        target = torch.stack([G(G.sample_latents(1, seed=[int(image_id[-3:])]))[0].clamp(-1, 1)])
        for t in (1, 4):
            alone = SingleCode.from_profile("quick", iterations=t).invert(G, target, seeds=[r["seed"]])
            want = compute_metrics(alone.reconstructions.clamp(-1, 1), target, names=["psnr"])["psnr"].item()
            assert tr["psnr"][tr["iteration"].index(t)] == pytest.approx(want, abs=1e-4)


def test_restarts_score_the_lowest_final_loss_and_restart_0_is_the_plain_run(tmp_path):
    plain = rows(run(config(), tmp_path / "one", progress=False, echo=lambda s: None))
    three = rows(run(config(restarts=3), tmp_path / "three", progress=False, echo=lambda s: None))
    for image_id, r in three.items():
        info = r["restarts"]
        assert info["k"] == 3 and len(info["psnr"]) == len(info["final_loss"]) == 3 and info["failed"] == []
        best = min(range(3), key=lambda j: info["final_loss"][j])
        assert info["best"] == best
        assert r["psnr"] == info["psnr"][best] and r["final_loss"] == info["final_loss"][best]
        assert info["seeds"] == [restart_seed(image_seed(0, image_id), j) for j in range(3)]
        assert info["seeds"][0] == plain[image_id]["seed"]
        assert info["psnr"][0] == pytest.approx(plain[image_id]["psnr"], abs=1e-6)  # restart 0 = no restarts
        assert len(set(info["psnr"])) == 3  # the restarts really start elsewhere
        assert r["method_key"] != plain[image_id]["method_key"] and "3 restarts per image" in r["timer"]
    assert plain[image_id]["restarts"] is None
    # the table: PSNR of the best start, and beside it the mean over each image's starts
    s = tables.summary(tables.load_records(tmp_path / "three")).iloc[0]
    assert s["psnr_mean"] == pytest.approx(sum(r["psnr"] for r in three.values()) / len(three))
    per_image = [sum(r["restarts"]["psnr"]) / 3 for r in three.values()]
    assert s["psnr_starts_mean"] == pytest.approx(sum(per_image) / len(per_image))
    assert s["psnr_starts_ci_low"] <= s["psnr_starts_mean"] <= s["psnr_starts_ci_high"]
    md = tables.to_markdown(tables.load_records(tmp_path / "three"))
    assert "PSNR mean of starts (dB) ↑" in md and "Restarts (3 starts per image)" in md
    md_plain = tables.to_markdown(tables.load_records(tmp_path / "one"))
    assert "mean of starts" not in md_plain and "Restarts (" not in md_plain
    assert "psnr_starts_mean" not in tables.to_csv(tables.load_records(tmp_path / "one"))
    # gib compare of the restarts run against the plain one: the mean of starts pairs no image, so under
    # "all" it is left out; asked for by name it is still answered, with no image paired
    both, a, b, _ = compare_runs.cross_run_records(tmp_path / "three", "single-code", tmp_path / "one", "single-code")
    assert {d.metric for d in compare_runs.comparison(both, a, b)} == {"psnr", "ssim", "lpips", "ms_ssim"}
    assert all(d.differences.empty for d in compare_runs.comparison(both, a, b, metric="psnr_starts"))


def test_capacity_is_recorded(tmp_path):
    out = run(config(methods=["mganprior"], overrides={"mganprior": {"n_codes": 4}}), tmp_path / "m",
              progress=False, echo=lambda s: None)
    assert all(r["capacity"] == {"codes": 4} for r in rows(out).values())


def test_a_failed_start_is_left_out_of_the_mean_of_starts():
    """A start whose loss became non-finite keeps the metrics of its last finite iterate; like a failed image of a
    run of one start, it is left out of the mean (it counted, so one diverged start pulled the mean down)."""
    from gan_inversion_bench.harness.records import BatchOutcome, _restart_summary, best_restart
    from gan_inversion_bench.method import InversionResult
    from gan_inversion_bench.stats import _mean_of_starts

    history = torch.tensor([[5.0, 5.0, 5.0], [1.0, 2.0, float("nan")], [0.5, 1.5, float("nan")]])
    result = InversionResult(reconstructions=torch.zeros(3, 3, 4, 4), latents={}, loss_history=history, iterations=3,
                             failures={2: "non-finite loss (nan) at iteration 1"})
    outcome = BatchOutcome(items=[object()], seeds=[1, 2, 3], result=result, failure=None, timer=None, restarts=3,
                           metrics={"psnr": torch.tensor([30.0, 28.0, 8.0])})
    best, reason = best_restart(outcome, 0)
    info = _restart_summary(outcome, 0, best)
    assert (best, reason, info["failed"], info["psnr"]) == (0, None, [2], [30.0, 28.0, 8.0])
    assert _mean_of_starts(info) == 29.0
    assert _mean_of_starts({k: v for k, v in info.items() if k != "failed"}) == pytest.approx(22.0)  # older records


def test_bad_restarts_are_refused(tmp_path):
    from gan_inversion_bench.harness import RunError

    for bad in (0, -1, 2.5, True):
        with pytest.raises(RunError, match="restarts"):
            run(config(restarts=bad), tmp_path / "bad", progress=False, echo=lambda s: None)
    assert not (tmp_path / "bad").exists()  # refused before anything is created


# ---- compute budgets, latency, preparation ------------------------------------------------------------
def timings(out):
    with ResultStore(out, create=False) as s:
        return s.timings()


def test_flop_budget_gives_the_iterations_the_flop_count_allows(tmp_path):
    probe = rows(run(config(budget=2), tmp_path / "probe", progress=False, echo=lambda s: None))
    r0 = next(iter(probe.values()))
    per, fixed = r0["flops_per_iteration"], r0["flops_fixed"]
    budget = fixed + 5.5 * per  # room for 5 iterations, not 6
    out = run(config(budget=None, budget_flops=budget), tmp_path / "f", progress=False, echo=lambda s: None)
    for r in rows(out).values():
        assert r["iterations"] == 5 and r["method_settings"]["iterations"] == 5
        assert r["budget"]["binding"] == "flops" and r["budget"]["limits"] == {"flops": 5}
    both = rows(run(config(budget=3, budget_flops=budget), tmp_path / "b", progress=False, echo=lambda s: None))
    assert {r["iterations"] for r in both.values()} == {3}
    assert next(iter(both.values()))["budget"]["binding"] == "iterations"


def test_seconds_budget_is_calibrated_recorded_and_reused_on_resume(tmp_path):
    # 0.3 s per image: at least one tiny iteration even on a loaded runner (0.05 s gave none there)
    out = run(config(budget=None, budget_seconds=0.3, n_generated=3), tmp_path / "s", progress=False,
              echo=lambda s: None)
    recs = rows(out)
    info = next(iter(recs.values()))["budget"]
    assert info["binding"] == "seconds" and info["iterations"] == info["limits"]["seconds"] >= 1
    assert info["iterations"] == int(0.3 // info["seconds_per_iteration"])
    cal = [t for t in timings(out) if t["kind"] == "calibration"]
    assert len(cal) == 1 and cal[0]["seconds"] == pytest.approx(info["seconds_per_iteration"])
    with ResultStore(out) as s:  # one image more on resume: the same iteration count, no new calibration
        s.conn.execute("DELETE FROM results WHERE image_id = 'generated/002'")
    run(config(budget=None, budget_seconds=0.3, n_generated=3), out, progress=False, echo=lambda s: None)
    again = rows(out)
    assert {r["iterations"] for r in again.values()} == {info["iterations"]}
    assert len([t for t in timings(out) if t["kind"] == "calibration"]) == 1


def test_a_seconds_calibration_lost_in_timing_noise_gives_fewer_iterations_not_billions(tmp_path, monkeypatch):
    """t(7) came out below t(2) once on a loaded runner (tiny iterations): the per-iteration time was
    then clamped to 1e-9 s and the run set off on billions of iterations. Now the longer call's whole
    time counts as iterations, and the calibration note says so; a clear difference is used as before."""
    from gan_inversion_bench.harness import costs

    def fake(times):  # the calibration's three calls, then any other timing (the latency) at 0.1 s
        calls = iter([*times, *[0.1] * 10])
        monkeypatch.setattr(costs, "_time_invert", lambda *a, **k: next(calls))

    fake([9.0, 0.50, 0.49])  # warm-up (untimed), t(2), t(7)
    out = run(config(budget=None, budget_seconds=0.3, n_generated=3), tmp_path / "noise", progress=False,
              echo=lambda s: None)
    info = next(iter(rows(out).values()))["budget"]
    cal = next(t for t in timings(out) if t["kind"] == "calibration")
    n = cal["images"]  # the calibration batch
    assert info["seconds_per_iteration"] == pytest.approx(0.49 / 7 / n) == cal["seconds"]
    assert info["iterations"] == int(0.3 // (0.49 / 7 / n)) < 100
    assert f"t(7) / 7 / {n}" in cal["note"] and "within timing noise" in cal["note"]
    fake([9.0, 0.20, 0.45])
    out = run(config(budget=None, budget_seconds=0.3, n_generated=3), tmp_path / "clear", progress=False,
              echo=lambda s: None)
    info = next(iter(rows(out).values()))["budget"]
    cal = next(t for t in timings(out) if t["kind"] == "calibration")
    assert info["seconds_per_iteration"] == pytest.approx(0.25 / 5 / cal["images"])
    assert f"(t(7) - t(2)) / 5 / {cal['images']}" in cal["note"]


def test_latency_and_preparation_are_timed_once(tmp_path):
    out = run(config(methods=["single-code", "pmsfc"], overrides={"pmsfc": {"discovery_iterations": 3}}),
              tmp_path / "l", progress=False, echo=lambda s: None)
    t = timings(out)
    keys = {r["method"]: r["method_key"] for r in rows_all(out)}
    latency = {x["method_key"]: x for x in t if x["kind"] == "latency"}
    assert set(latency) == set(keys.values()) and all(x["images"] == 1 and x["seconds"] > 0 for x in latency.values())
    prepare = [x for x in t if x["kind"] == "prepare" and x["method_key"] == keys["pmsfc"]]
    assert len(prepare) == 1 and prepare[0]["note"] == "computed" and prepare[0]["seconds"] > 0
    run(config(methods=["single-code", "pmsfc"], overrides={"pmsfc": {"discovery_iterations": 3}}), out,
        progress=False, echo=lambda s: None)  # resume: nothing to invert, latency not measured again
    t2 = timings(out)
    assert len([x for x in t2 if x["kind"] == "latency"]) == len(latency)
    assert [x["note"] for x in t2 if x["kind"] == "prepare" and x["method_key"] == keys["pmsfc"]][-1] == \
        "loaded from the cache"
    # the table still reports what the discovery cost, not the later cache load
    df = tables.load_records(out)
    pmsfc = df[df["method"] == "pmsfc"].iloc[0]
    assert pmsfc["prepare_s"] == prepare[0]["seconds"]
    assert pmsfc["prepare_note"] == "computed; later sessions loaded it from the cache"


def rows_all(out):
    with ResultStore(out, create=False) as s:
        return s.results()


def test_bad_compute_budgets_are_refused(tmp_path):
    from gan_inversion_bench.harness import RunError

    for kw in ({"budget_seconds": 0}, {"budget_flops": -1.0}, {"budget_seconds": float("nan")}):
        with pytest.raises(RunError, match="budget"):
            run(config(**kw), tmp_path / "bad", progress=False, echo=lambda s: None)
    with pytest.raises(RunError, match="less than one iteration"):
        run(config(budget=None, budget_flops=1.0), tmp_path / "tiny", progress=False, echo=lambda s: None)


def test_a_budget_too_small_for_one_method_still_runs_the_others_then_fails_naming_it(tmp_path):
    from gan_inversion_bench.harness import RunError

    # pivotal tuning's pivot (20 single-code iterations) costs more than the whole budget; single-code
    # gets a few iterations of it
    cfg = config(methods=["pivotal-tuning", "single-code"], budget=None, budget_flops=5e9,
                 overrides={"pivotal-tuning": {"pivot_budget": 20, "steps": 2}})
    lines: list[str] = []
    with pytest.raises(RunError, match=r"too small for pivotal-tuning: .*fixed cost per image") as e:
        run(cfg, tmp_path / "r", progress=False, echo=lines.append)
    assert "other methods' results are stored" in str(e.value)
    assert any(s.startswith("pivotal-tuning: not run:") for s in lines), lines
    done = rows(tmp_path / "r")
    assert set(done) == {"generated/000", "generated/001"}
    assert {r["method"] for r in done.values()} == {"single-code"}
    assert all(r["status"] == "ok" and 1 <= r["iterations"] < 20 for r in done.values())


def test_optimise_in_phases_counts_on_and_refuses_an_impossible_count():
    """A method run as several optimise calls (Image2StyleGAN's sequential noise) gives one trace and one
    progress count: point 0 once, then start + 1 … start + iterations, over ``total``."""
    from gan_inversion_bench.method_tools import optimise, tracing

    a = torch.zeros(2, 3, requires_grad=True)
    points, reports = [], []
    with tracing(lambda it, snapshot: points.append(it)):
        for start in (0, 3):
            optimise([a], lambda: (a - 1).pow(2).sum(1), optimizer="sgd", lr=0.1, iterations=3, start=start, total=6,
                     snapshot=lambda: a, progress=lambda done, total: reports.append((done, total)))
    assert points == list(range(7)) and reports == [(i, 6) for i in range(1, 7)]
    for bad in ({"start": -1}, {"start": 4, "total": 6}):
        with pytest.raises(ValueError, match="start must be"):
            optimise([a], lambda: a.sum(1), optimizer="sgd", lr=0.1, iterations=3, **bad)
