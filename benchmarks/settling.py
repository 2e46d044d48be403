"""Has a run settled? Its final loss against the lowest loss along its own history, per image.

    python benchmarks/settling.py RUN [RUN ...] [--above 1.1]

A run scored at its last iterate (the harness's convention, the papers' too) is scored at its floor
only if the loss has stopped moving. A constant learning rate tuned at a short budget can leave a
long run oscillating about its floor instead, so that the score is a random point of that
oscillation; a decaying rate (``lr_schedule=cosine``, docs/methods.md) lets it settle. For every
configuration (method key) of every run folder given, over its images: the median and largest
ratio final loss / lowest loss of the stored history, how many images end more than ``--above``
times above their lowest, and the median position of the lowest loss (a fraction of the iterations).

The stored history is the loss at 200 evenly spaced iterations (``harness.records.history_summary``;
of the best start where there were several), so the lowest loss is the lowest of those points and
the ratio a lower bound; the last point is the loss before the last step. Failed images are left out.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gan_inversion_bench import tables
from gan_inversion_bench.store import StoreError


def image_settling(history: Any) -> tuple[float, float] | None:
    """``(final / lowest, position of the lowest as a fraction of the last stored iteration)`` of one
    stored history ``{"iteration": [...], "loss": [...]}``; None without two finite positive losses."""
    if not isinstance(history, dict) or "loss" not in history or "iteration" not in history:
        return None
    loss = np.array([np.nan if v is None else v for v in history["loss"]], dtype=float)
    its = np.asarray(history["iteration"], dtype=float)
    if len(loss) < 2 or len(its) != len(loss) or not np.isfinite(loss[-1]) or not np.all(loss[np.isfinite(loss)] > 0):
        return None
    low = int(np.nanargmin(loss))
    return float(loss[-1] / loss[low]), float(its[low] / its[-1]) if its[-1] > 0 else 1.0


def settling(run: Path, above: float = 1.1) -> pd.DataFrame:
    """One row per configuration of run folder ``run`` (columns in the module docstring)."""
    try:
        df = tables.load_records(run)
    except StoreError as e:
        raise SystemExit(f"{run}: not a run folder ({e})") from None
    if df.empty or not (df["status"] == "ok").any():
        raise SystemExit(f"{run}: no finished records to read a loss history from")
    rows = []
    for key, group in df[df["status"] == "ok"].groupby("method_key", sort=True):
        found = [s for s in map(image_settling, group["loss_history"]) if s is not None]
        if not found:
            continue
        ratio, where = np.array([f[0] for f in found]), np.array([f[1] for f in found])
        rows.append({"run": str(run), "method": group["method"].iloc[0], "method_key": key,
                     "iterations": int(group["iterations"].max()), "images": len(found),
                     "median": float(np.median(ratio)), "max": float(ratio.max()),
                     "above": int((ratio > above).sum()), "lowest_at": float(np.median(where))})
    return pd.DataFrame(rows)


def markdown(df: pd.DataFrame, above: float) -> str:
    head = ["run", "method", "iterations", "images", "final / lowest loss: median", "largest",
            f"images above {above:g}×", "lowest loss at (median, fraction of the run)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in df.itertuples():
        lines.append(f"| {r.run} | {r.method} | {r.iterations} | {r.images} | {r.median:.3f} | {r.max:.2f} | "
                     f"{r.above} of {r.images} | {r.lowest_at:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="run folders (each holding results.sqlite)")
    ap.add_argument("--above", type=float, default=1.1, help="count images whose final loss is above this many times "
                                                                 "their lowest (default: %(default)s)")
    args = ap.parse_args(argv)
    if not args.above >= 1:
        raise SystemExit(f"--above must be at least 1 (a ratio final / lowest), got {args.above}")
    frames = [settling(Path(r), args.above) for r in args.runs]
    print(markdown(pd.concat(frames, ignore_index=True), args.above))
    return 0


if __name__ == "__main__":
    sys.exit(main())
