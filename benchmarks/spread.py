"""Run-to-run spread of the pytest-benchmark suite, to choose ``gib bench-compare`` thresholds.

    python benchmarks/spread.py run1.json run2.json run3.json

For every benchmark: the minimum time of each run, the largest ratio between two runs' minima,
and the baseline spread that ``perf.compare`` uses (max of IQR and standard deviation). Then,
for the first run taken as the baseline, the smallest ``--time-rel`` that none of the other runs
would exceed, and the PSNR/LPIPS differences between runs (they must be ~0 on one machine).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def main(paths: list[str]) -> int:
    runs = [json.loads(Path(p).read_text()) for p in paths]
    names = sorted({b["fullname"].split("::")[-1] for r in runs for b in r["benchmarks"]})
    worst, rows = 1.0, []
    for name in names:
        found = [next((b for b in r["benchmarks"] if b["fullname"].endswith("::" + name)), None) for r in runs]
        found = [b for b in found if b is not None]
        mins = [b["stats"]["min"] for b in found]
        spreads = [max(b["stats"].get("iqr") or 0.0, b["stats"].get("stddev") or 0.0) for b in found]
        ratio = max(mins) / min(mins)
        worst = max(worst, ratio)
        psnr = [b.get("extra_info", {}).get("psnr") for b in found]
        psnr = [p for p in psnr if p is not None]
        rows.append((name, mins, ratio, max(spreads) / min(mins), (max(psnr) - min(psnr)) if psnr else None))
    print(f"{'benchmark':<48} {'minima (s)':<28} {'max/min':>8} {'spread/min':>10} {'PSNR range':>10}")
    for name, mins, ratio, spread, dpsnr in rows:
        print(f"{name:<48} {', '.join(f'{m:.3f}' for m in mins):<28} {ratio:>8.3f} {spread:>10.3f} "
              f"{'' if dpsnr is None else f'{dpsnr:.4f}':>10}")
    print(f"\nlargest ratio of two runs' minima: {worst:.3f} (a time_rel below {worst - 1:.2f} would have flagged "
          f"one of these identical runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
