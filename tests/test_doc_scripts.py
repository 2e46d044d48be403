"""The scripts that write docs/results.md and the tables of docs/performance.md, on tiny budgets."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is created
    spec.loader.exec_module(module)
    return module


def test_claim_check_runs_resumes_and_keeps_the_verdict(tmp_path):
    cc = load("claim_check")
    args = ["--out", str(tmp_path / "cc"), "--write", str(tmp_path / "docs" / "results.md"), "--iterations", "1",
            "--ablation-iterations", "1", "--n-generated", "1", "--discovery-iterations", "2", "--n-values", "1",
            "--r-values", "2", "--k-values", "1", "--lr-values", "5", "--device", "cpu"]
    assert cc.main(args) == 0
    page = (tmp_path / "docs" / "results.md").read_text()
    for heading in ("## Main table: 1 iterations", "number of codes N", "number of subspaces R", "codes per subspace K",
                    "learning rate of the multi-code methods"):
        assert heading in page
    assert "| pmsfc − mganprior | generated |" in page and "(verdict to be written)" in page
    assert (tmp_path / "docs" / "img" / "claim_check.png").stat().st_size > 1000
    runs = json.loads((tmp_path / "cc" / "runs.json").read_text())
    assert set(runs) == {"main", "single-code-lr10", "mganprior-N1", "pmsfc-R2-K5", "pmsfc-R6-K1", "mganprior-lr5",
                         "pmsfc-lr5"}
    assert "| mganprior, lr 5 | generated |" in page
    # a hand-written verdict survives regeneration, and a second run resumes without recomputing
    page = page.replace("(verdict to be written)", "PmSFC wins nothing here.")
    (tmp_path / "docs" / "results.md").write_text(page)
    from gan_inversion_bench.tables import load_records

    before = load_records(tmp_path / "cc" / "main")[["method_key", "image_id", "created"]]
    assert cc.main(args) == 0
    again = (tmp_path / "docs" / "results.md").read_text()
    assert "PmSFC wins nothing here." in again and "(verdict to be written)" not in again
    after = load_records(tmp_path / "cc" / "main")[["method_key", "image_id", "created"]]
    assert len(after) == 3 * 9  # 3 methods × (1 generated + 8 photos), once each
    assert after.equals(before)  # resumed: nothing recomputed or rewritten


def test_perf_summary_picks_the_fastest_variant_per_method(tmp_path, capsys):
    ps = load("perf_summary")

    def row(method, variant, precision, s_img, tflops):
        return {"method": method, "variant": variant, "precision": precision, "batch": 2, "paper_iterations": 100,
                "s_per_image_at_paper_iterations": s_img, "s_per_iteration_per_image": s_img / 100,
                "achieved_tflops": tflops, "peak_fraction": None, "flops_per_iteration_per_image": 1e9,
                "warmup_s": 0.1}

    result = {"info": {}, "rows": [row("a", "reference", "fp32", 10.0, 0.1), row("a", "fp32", "fp32", 5.0, 0.2),
                                   row("a", "bf16", "bf16", 2.0, 0.4), row("b", "reference", "fp32", 30.0, 0.1),
                                   row("b", "fp32", "fp32", 3.0, 0.2)],
              "quality": [{"method": "a", "iterations": 50, "images": 4, "fp32": {"psnr_mean": 20.0},
                           "bf16": {"psnr_mean": 20.01, "psnr_diff_mean": 0.01, "psnr_diff_max_abs": 0.02}}]}
    path = tmp_path / "r.json"
    path.write_text(json.dumps(result))
    assert ps.main([str(path), "--peak-fp32", "0.4", "--peak-bf16", "0.8"]) == 0
    out = capsys.readouterr().out
    assert "| a | 100 | 10 | bf16 | 2 | 5.0× | 0.400 | 50 % | +0.010" in out
    assert "| b | 100 | 30 | fp32 | 3 | 10.0× | 0.200 | 50 % | 0 (fp32) |" in out
    assert "| b | fp32 | 2 | 30.0 | 3 | 10.00× |" in out  # b's speed-up is against b's reference, not a's


def test_perf_summary_takes_each_methods_own_quality_run(tmp_path, capsys):
    ps = load("perf_summary")
    rows = [{"method": m, "variant": v, "precision": v, "batch": 2, "paper_iterations": 100,
             "s_per_image_at_paper_iterations": t, "s_per_iteration_per_image": t / 100, "achieved_tflops": 0.1,
             "peak_fraction": None, "flops_per_iteration_per_image": 1e9, "warmup_s": 0.1}
            for m in ("a", "b") for v, t in (("reference", 10.0), ("bf16", 1.0))]
    quality = [{"method": m, "iterations": 50, "images": 4, "fp32": {"psnr_mean": 20.0},
                "bf16": {"psnr_mean": 20.0 + d, "psnr_diff_mean": d, "psnr_diff_max_abs": abs(d)}}
               for m, d in (("a", 0.01), ("b", -0.05))]
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"info": {}, "rows": rows, "quality": quality}))
    assert ps.main([str(path)]) == 0
    out = capsys.readouterr().out
    assert "| a | 100 | 10 | bf16 | 1 | 10.0× | 0.100 | – | +0.010" in out
    assert "| b | 100 | 10 | bf16 | 1 | 10.0× | 0.100 | – | -0.050" in out


@pytest.mark.parametrize("bad", [[], ["--peak-fp32", "x"]])
def test_perf_summary_refuses_bad_arguments(bad):
    with pytest.raises(SystemExit):
        load("perf_summary").main(bad)
