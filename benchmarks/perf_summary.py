"""Summary tables of ``benchmarks/speed_check.py`` results for docs/performance.md.

    python benchmarks/perf_summary.py benchmarks/results/cpu-x86_64-2c-{single-code,mganprior,pmsfc}.json \
        [--peak-fp32 0.166 --peak-bf16 0.332]

Prints (1) one row per method: seconds per image at the paper's iteration count in the seeds'
pattern (``reference``) and in the toolkit's fastest variant, the speed-up, the achieved TFLOP/s
and the fraction of peak, and the PSNR difference of that variant against fp32 after the quality
run; (2) every measured variant. ``--peak-*`` supply a peak (TFLOP/s) where the device has no
datasheet entry in ``perf.PEAK_TFLOPS`` (CPUs); the page says how it was estimated.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def _fmt_s(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def load(paths: list[str]) -> list[dict[str, Any]]:
    return [json.loads(Path(p).read_text()) for p in paths]


def _peak(row: dict[str, Any], peaks: dict[str, float]) -> float | None:
    if row.get("peak_fraction") is not None:
        return row["achieved_tflops"] / row["peak_fraction"]
    return peaks.get("bf16" if row["precision"] == "bf16" else "fp32")


def _per_method(results: list[dict[str, Any]]) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """(result file, its measured rows of one method), for every method of every file."""
    out = []
    for res in results:
        rows = [r for r in res["rows"] if "s_per_image_at_paper_iterations" in r]
        for method in dict.fromkeys(r["method"] for r in rows):
            out.append((res, [r for r in rows if r["method"] == method]))
    return out


def _percent(achieved: float, peak: float | None) -> str:
    return f"{100 * achieved / peak:.0f} %" if peak else "–"


def _quality_delta(result: dict[str, Any], method: str, variant: str) -> str:
    """PSNR of the variant's precision minus fp32 after the method's longer quality run (same images, seeds)."""
    precision = variant.split("+")[0]
    if precision == "fp32":
        return "0 (fp32)"
    for q in result.get("quality", []):
        if q.get("method") != method:
            continue
        d = q.get(precision, {})
        if "psnr_diff_mean" in d:
            return (f"{d['psnr_diff_mean']:+.3f} (max \\|Δ\\| {d['psnr_diff_max_abs']:.3f}; {q['images']} images, "
                    f"{q['iterations']} it.)")
    return "–"


def summary(results: list[dict[str, Any]], peaks: dict[str, float]) -> list[str]:
    lines = ["| method | iterations | reference s/img | fastest variant | its s/img | speed-up | "
             "TFLOP/s | % of peak | ΔPSNR vs fp32 (dB) |", "|---|---:|---:|---|---:|---:|---:|---:|---|"]
    for res, rows in _per_method(results):
        ref = next((r for r in rows if r["variant"] == "reference"), None)
        best = min((r for r in rows if r["variant"] != "reference"),
                   key=lambda r: r["s_per_image_at_paper_iterations"])
        peak = _peak(best, peaks)
        t_ref = ref["s_per_image_at_paper_iterations"] if ref else None
        t_best = best["s_per_image_at_paper_iterations"]
        lines.append(
            f"| {best['method']} | {best['paper_iterations']:,} | {_fmt_s(t_ref) if t_ref else '–'} | "
            f"{best['variant']} | {_fmt_s(t_best)} | {f'{t_ref / t_best:.1f}×' if t_ref else '–'} | "
            f"{best['achieved_tflops']:.3f} | {_percent(best['achieved_tflops'], peak)} | "
            f"{_quality_delta(res, best['method'], best['variant'])} |")
    return lines


def detail(results: list[dict[str, Any]], peaks: dict[str, float]) -> list[str]:
    lines = ["| method | variant | batch | ms/iter/img | s/img at the profile's iterations | speed-up vs reference | "
             "GFLOP/iter/img | TFLOP/s | % of peak | warm-up (s) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for _res, rows in _per_method(results):
        ref = next((r for r in rows if r["variant"] == "reference"), None)
        for r in rows:
            peak = _peak(r, peaks)
            speed = ref["s_per_image_at_paper_iterations"] / r["s_per_image_at_paper_iterations"] if ref else None
            lines.append(
                f"| {r['method']} | {r['variant']} | {r['batch']} | {1e3 * r['s_per_iteration_per_image']:.1f} | "
                f"{_fmt_s(r['s_per_image_at_paper_iterations'])} | {f'{speed:.2f}×' if speed else '–'} | "
                f"{r['flops_per_iteration_per_image'] / 1e9:.1f} | {r['achieved_tflops']:.3f} | "
                f"{_percent(r['achieved_tflops'], peak)} | "
                f"{r.get('warmup_s', float('nan')):.1f} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", nargs="+")
    ap.add_argument("--peak-fp32", type=float, default=None, help="TFLOP/s, where no datasheet entry exists")
    ap.add_argument("--peak-bf16", type=float, default=None)
    args = ap.parse_args(argv)
    peaks = {k: v for k, v in (("fp32", args.peak_fp32), ("bf16", args.peak_bf16)) if v}
    results = load(args.results)
    print("\n".join(summary(results, peaks)))
    print()
    print("\n".join(detail(results, peaks)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
