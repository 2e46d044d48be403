"""Precision settings, execution modes, throughput accounting and the store migration."""
from __future__ import annotations

import json
import sqlite3

import pytest
import torch

from gan_inversion_bench import GENERATORS, METHODS, harness, perf, precision, tables
from gan_inversion_bench.harness import RunConfig, batch_from_probe, run
from gan_inversion_bench.losses import ReconstructionLoss
from gan_inversion_bench.method import InversionResult
from gan_inversion_bench.method_tools import invert_each, optimise
from gan_inversion_bench.methods.single_code import SingleCode
from gan_inversion_bench.metrics import compute_metrics
from gan_inversion_bench.store import ADDED_COLUMNS, SCHEMA_VERSION, ResultStore, method_key


@pytest.fixture(scope="module")
def gen():
    return GENERATORS.create("pggan-tiny").eval()


@pytest.fixture(scope="module")
def targets(gen):
    with torch.no_grad():
        return gen(gen.sample_latents(2, seed=[11, 12])).clamp(-1, 1)


def quiet(**kw) -> dict:
    return dict(progress=False, echo=lambda s: None, **kw)


def config(**kw) -> RunConfig:
    base = dict(generator="pggan-tiny", methods=["single-code"], images="generated", n_generated=2,
                overrides={"*": {"iterations": 3}}, device="cpu", batch_size=2)
    base.update(kw)
    return RunConfig(**base)


def rows(run_dir):
    with ResultStore(run_dir, create=False) as s:
        return s.results()


# ---- the context manager ------------------------------------------------------------------------
def test_tf32_switches_are_set_inside_and_restored_after(monkeypatch):
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = False
    try:
        with precision.precision_context("fp32", "cpu"):
            assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
        assert torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
        with pytest.raises(RuntimeError, match="boom"), precision.precision_context("tf32", "cuda"):
            assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
            raise RuntimeError("boom")
        assert torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = True


def test_bf16_autocasts_convolutions_on_the_cpu_and_full_precision_turns_it_off():
    conv = torch.nn.Conv2d(3, 4, 3)
    x = torch.randn(1, 3, 8, 8)
    with precision.precision_context("bf16", "cpu"):
        assert conv(x).dtype == torch.bfloat16
        with precision.full_precision("cpu"):
            assert conv(x).dtype == torch.float32
    assert conv(x).dtype == torch.float32
    assert precision.effective_precision("tf32", "cpu") == "fp32"
    assert precision.effective_precision("bf16", "cpu") == "bf16"
    assert "slower" in precision.precision_note("bf16", "cpu")
    assert "no effect" in precision.precision_note("tf32", "cpu")
    assert precision.precision_note("fp32", "cpu") is None
    with pytest.raises(ValueError, match="precision must be one of"):
        precision.ExecutionOptions(precision="fp16")
    with pytest.raises(ValueError, match="compile must be one of"):
        precision.ExecutionOptions(compile="fast")


def test_loss_is_fp32_under_bf16_and_quality_is_close_to_fp32(gen, targets):
    method = SingleCode.from_profile("quick", iterations=3)
    ref = method.invert(gen, targets, seeds=[1, 2])
    with precision.execution_context(precision.ExecutionOptions(precision="bf16"), "cpu"):
        low = method.invert(gen, targets, seeds=[1, 2])
        loss = ReconstructionLoss(targets, perceptual_size=32)
        assert loss.reference.dtype == torch.bfloat16  # built under autocast ...
        with precision.full_precision("cpu"):
            loss = ReconstructionLoss(targets, perceptual_size=32)
        assert loss.reference.dtype == torch.float32  # ... which the methods avoid
    assert low.loss_history.dtype == torch.float32 and low.reconstructions.dtype == torch.float32
    p_ref = compute_metrics(ref.reconstructions.clamp(-1, 1), targets)["psnr"]
    p_low = compute_metrics(low.reconstructions.clamp(-1, 1), targets)["psnr"]
    assert (p_low - p_ref).abs().max() < 0.5, (p_ref, p_low)
    assert not torch.equal(ref.reconstructions, low.reconstructions)  # bf16 really ran


def test_optimise_compiles_the_step_only_inside_a_compile_mode(monkeypatch):
    calls = []

    def fake_compile(fn, mode=None):
        calls.append(mode)
        return fn

    monkeypatch.setattr(torch, "compile", fake_compile)
    z = torch.zeros(2, 3, requires_grad=True)
    optimise([z], lambda: (z - 1).pow(2).sum(1), optimizer="sgd", lr=0.1, iterations=2)
    assert calls == []
    with precision.compile_mode("reduce-overhead"):
        optimise([z], lambda: (z - 1).pow(2).sum(1), optimizer="sgd", lr=0.1, iterations=2)
    with precision.compile_mode("default"):
        optimise([z], lambda: (z - 1).pow(2).sum(1), optimizer="sgd", lr=0.1, iterations=2)
    assert calls == ["reduce-overhead", None]


def test_a_method_with_its_own_loop_gets_its_generator_compiled(monkeypatch):
    """Compilation is applied around whatever invert does: the generator's stages run compiled
    inside a compile mode (once per mode), and inside an already compiled step they are not
    compiled a second time."""
    from gan_inversion_bench import generator as generator_module

    calls = []

    def fake_compile(fn, mode=None):
        calls.append((fn.__name__, mode))
        return fn

    monkeypatch.setattr(torch, "compile", fake_compile)
    generator_module._compiled_synthesise.cache_clear()
    try:
        G = GENERATORS.create("pggan-tiny")
        z = G.sample_latents(2, seed=0)
        G(z)
        assert calls == []
        with precision.compile_mode("default"):
            G(z)
            G.g2(G.g1(z, 3), 3)
        assert calls == [("_synthesise", None)]  # compiled once, reused by G, G1 and G2
        monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
        with precision.compile_mode("max-autotune"):
            G(z)  # inside a compiled step: traced into it, not compiled again
        assert calls == [("_synthesise", None)]
    finally:
        generator_module._compiled_synthesise.cache_clear()


# ---- execution modes ----------------------------------------------------------------------------
def test_reference_mode_solves_the_same_problem_at_a_higher_cost(gen, targets):
    batched = SingleCode.from_profile("quick", iterations=2)
    reference = SingleCode.from_profile("quick", iterations=2, execution="reference")
    flags = [p.requires_grad for p in gen.parameters()]
    gen.requires_grad_(False)
    a = batched.invert(gen, targets, seeds=[1, 2])
    b = reference.invert(gen, targets, seeds=[1, 2])
    assert torch.allclose(a.reconstructions, b.reconstructions, atol=1e-4)
    assert torch.allclose(a.loss_history, b.loss_history, rtol=1e-4, atol=1e-6)
    assert b.latents["z"].shape == a.latents["z"].shape and b.loss_history.shape == (2, 2)
    assert all(not p.requires_grad and p.grad is None for p in gen.parameters()), "the caller's generator was touched"
    for p, flag in zip(gen.parameters(), flags, strict=True):
        p.requires_grad_(flag)
    one = targets[:1]

    def once(m):
        return m.with_budget(1).invert(gen, one, seeds=[1])

    f_batched, f_reference = perf.count_flops(lambda: once(batched)), perf.count_flops(lambda: once(reference))
    assert f_reference > 1.3 * f_batched  # parameter gradients and target features every iteration
    with pytest.raises(ValueError, match="execution must be one of"):
        SingleCode(execution="fast")


@pytest.mark.parametrize("name,settings", [
    ("mganprior", {}),
    ("pmsfc", {"discovery_iterations": 5}),
    ("pmsfc", {"discovery_iterations": 5, "variant": "released", "init": "normal", "lr": 0.01}),
], ids=["mganprior", "pmsfc-paper", "pmsfc-released"])
def test_reference_mode_of_the_multi_code_methods(gen, targets, name, settings):
    """The seeds' loop over codes (one G1 call each), per image, with trainable parameters: the
    same optimisation as the batched single G1 call, at a higher cost."""
    cls = METHODS.get(name)
    batched = cls.from_profile("quick", iterations=3, **settings).prepare(gen, seed=0)
    reference = cls.from_profile("quick", iterations=3, execution="reference", **settings).prepare(gen, seed=0)
    a = batched.invert(gen, targets, seeds=[1, 2])
    b = reference.invert(gen, targets, seeds=[1, 2])
    assert torch.allclose(a.reconstructions, b.reconstructions, atol=1e-4)
    assert torch.allclose(a.loss_history, b.loss_history, rtol=1e-4, atol=1e-6)
    assert a.loss_history[-1].sub(a.loss_history[0]).abs().max() > 1e-4  # it did optimise
    assert {k: v.shape for k, v in a.latents.items()} == {k: v.shape for k, v in b.latents.items()}
    assert a.info.keys() == b.info.keys()
    once = lambda m: m.with_budget(1).invert(gen, targets[:1], seeds=[1])  # noqa: E731
    assert perf.count_flops(lambda: once(reference)) > 1.3 * perf.count_flops(lambda: once(batched))
    with pytest.raises(ValueError, match="execution must be one of"):
        cls(execution="seeds", **settings)


def test_invert_each_joins_results_and_reports_a_failed_image():
    def invert_one(t, seeds, progress=None):
        if seeds[0] == 7:
            from gan_inversion_bench.method import InversionFailed

            raise InversionFailed("non-finite loss (nan) at iteration 0")
        return InversionResult(reconstructions=t + seeds[0], latents={"z": torch.full((1, 2), float(seeds[0]))},
                               loss_history=torch.ones(3, 1) * seeds[0], iterations=3,
                               info={"extra": t[:, :1] * 0, "name": "x"})

    t = torch.zeros(3, 3, 2, 2)
    r = invert_each(invert_one, t, [1, 7, 2])
    assert r.reconstructions.shape == (3, 3, 2, 2) and r.latents["z"][:, 0].tolist()[0::2] == [1.0, 2.0]
    assert r.loss_history.shape == (3, 3) and r.failures == {1: "non-finite loss (nan) at iteration 0"}
    assert torch.isnan(r.reconstructions[1]).all() and r.info["extra"].shape[0] == 3 and r.info["name"] == "x"


# ---- the harness --------------------------------------------------------------------------------
def test_run_records_precision_throughput_and_keeps_default_keys(tmp_path):
    out = run(config(), tmp_path / "a", **quiet())
    recs = rows(out)
    r = recs[0]
    assert r["precision"] == "fp32" and r["flops_per_iteration"] > 0 and r["tflops"] > 0
    assert r["peak_fraction"] is None  # no datasheet peak for a CPU
    # the recorded FLOPs are exactly one more iteration's worth: count(2 iterations) - count(1)
    G = GENERATORS.create("pggan-tiny").eval()
    G.split_points  # noqa: B018 (its dry pass, cached, would otherwise fall into the first count only)
    t = torch.stack([G(G.sample_latents(1, seed=0))[0].clamp(-1, 1)])

    def m(n):
        return SingleCode.from_profile("quick", iterations=n)

    diff = perf.count_flops(lambda: m(2).invert(G, t)) - perf.count_flops(lambda: m(1).invert(G, t))
    assert r["flops_per_iteration"] == pytest.approx(diff)
    # keys made before the execution and lr_schedule settings existed stay valid (old folders resume)
    settings = {k: v for k, v in r["method_settings"].items() if k not in ("execution", "lr_schedule")}
    assert r["method_key"] == method_key("single-code", "1", settings, {"prepared": {}, "profile": "quick"})
    assert "TFLOP/s" in tables.to_markdown(tables.load_records(out))

    out_bf16 = run(config(precision="bf16"), tmp_path / "b", **quiet())
    out_tf32 = run(config(precision="tf32"), tmp_path / "c", **quiet())
    b, c = rows(out_bf16)[0], rows(out_tf32)[0]
    assert b["precision"] == "bf16" and "bf16" in b["timer"] and b["method_key"] != r["method_key"]
    assert c["precision"] == "fp32" and c["method_key"] == r["method_key"]  # tf32 does nothing on a CPU


def test_reference_execution_runs_one_image_per_batch_in_fp32(tmp_path):
    messages = []
    out = run(config(n_generated=3, batch_size=3, precision="bf16",
                     overrides={"*": {"iterations": 2, "execution": "reference"}}), tmp_path / "r",
              progress=False, echo=messages.append)
    recs = rows(out)
    assert [r["batch_size"] for r in recs] == [1, 1, 1] and {r["precision"] for r in recs} == {"fp32"}
    assert all(r["method_settings"]["execution"] == "reference" for r in recs)
    assert any("reference execution runs in fp32" in m for m in messages)
    assert any("one image at a time" in m for m in messages)


def test_batch_from_probe():
    mib = 2**20
    # 100 MiB at 1 image, 400 MiB at 4 → 100 MiB per image, nothing fixed; 80 % of 10 GiB → 81 images
    assert batch_from_probe(100 * mib, 400 * mib, 4, 10 * 1024 * mib, 1000) == 81
    assert batch_from_probe(100 * mib, 400 * mib, 4, 10 * 1024 * mib, 16) == 16  # never more than pending
    assert batch_from_probe(300 * mib, 600 * mib, 4, 10 * 1024 * mib, 1000) == 79  # 200 MiB fixed + 100/image
    assert batch_from_probe(100 * mib, 400 * mib, 4, 50 * mib, 1000) == 1  # at least one image
    assert harness.auto_batch_size(40, torch.device("cpu")) == 16


# ---- the store --------------------------------------------------------------------------------
def test_old_databases_are_readable_and_migrated_on_write(tmp_path):
    out = run(config(), tmp_path / "r", **quiet())
    db = out / "results.sqlite"
    with sqlite3.connect(db) as c:  # turn it into a schema-1 database
        for col in ADDED_COLUMNS:
            c.execute(f"ALTER TABLE results DROP COLUMN {col}")
        c.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    old = rows(out)  # reading does not migrate
    assert len(old) == 2 and all(r["tflops"] is None for r in old)
    assert "TFLOP/s" not in tables.to_markdown(tables.load_records(out))
    with sqlite3.connect(db) as c:
        assert "tflops" not in {r[1] for r in c.execute("PRAGMA table_info(results)")}
    with ResultStore(out) as s:  # opening for writing adds the columns
        version = s.conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]
        assert json.loads(version) == SCHEMA_VERSION
    with sqlite3.connect(db) as c:
        assert set(ADDED_COLUMNS) <= {r[1] for r in c.execute("PRAGMA table_info(results)")}
    assert rows(out) == old


# ---- the speed-check script behind docs/performance.md and benchmarks/gpu_check.sh -------------------
def test_speed_check_script_measures_reference_and_batched(tmp_path):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "speed_check.py"
    spec = importlib.util.spec_from_file_location("speed_check", path)
    speed_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(speed_check)
    out = tmp_path / "s.json"
    assert speed_check.main(["--generator", "pggan-tiny", "--device", "cpu", "--methods", "single-code",
                             "--variants", "fp32,reference", "--n-images", "2", "--reference-images", "1",
                             "--n1", "1", "--n2", "2", "--max-wait", "0", "--retries", "0",
                             "--set", "single-code.perceptual_size=32", "--out", str(out),
                             "--markdown", str(tmp_path / "s.md")]) == 0
    data = json.loads(out.read_text())
    rows = {r["variant"]: r for r in data["rows"]}
    assert rows["fp32"]["batch"] == 2 and rows["reference"]["batch"] == 1
    for r in rows.values():
        assert r["s_per_iteration_per_image"] > 0 and r["flops_per_iteration_per_image"] > 0
        assert r["s_per_image_at_paper_iterations"] > r["s_per_iteration_per_image"] * 2999
    assert rows["reference"]["flops_per_iteration_per_image"] > rows["fp32"]["flops_per_iteration_per_image"]
    assert "| single-code | reference | 1 |" in (tmp_path / "s.md").read_text()
