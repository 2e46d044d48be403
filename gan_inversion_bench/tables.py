"""Comparison tables rendered from the stored records (never computed from live objects).

``summary(records)`` groups per method (and method settings) and image subset and gives
mean ± std of every metric and of the time per image; renderers write Markdown (terminal),
CSV (numbers only, one column per statistic) and LaTeX (booktabs). Every rendering carries a
footer with the metric conventions and the timer, taken from the records themselves.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from .store import ResultStore

#: (column, label, higher is better, format)
COLUMNS = [
    ("psnr", "PSNR (dB)", True, "{:.2f}"),
    ("ssim", "SSIM", True, "{:.4f}"),
    ("lpips", "LPIPS", False, "{:.4f}"),
    ("time_s", "time/img (s)", False, "{:.3g}"),
]
#: the optional throughput column, shown when any record has it (records since schema version 2)
THROUGHPUT = ("tflops", "TFLOP/s", True, "{:.3g}")


def load_records(run_dir: str | Path) -> pd.DataFrame:
    with ResultStore(run_dir, create=False) as store:
        rows = store.results()
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    df["subset"] = df["image_id"].str.split("/").str[0]
    return df


def _label(df: pd.DataFrame) -> pd.Series:
    """Method label; a method run with several settings gets its settings hash appended."""
    keys_per_method = df.groupby("method")["method_key"].nunique()
    return df.apply(lambda r: r["method"] if keys_per_method[r["method"]] == 1 else r["method_key"], axis=1)


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (method, subset): counts and mean/std of each metric (numbers, not strings)."""
    if df.empty:
        return pd.DataFrame()
    df = df.assign(label=_label(df))
    out = []
    for (label, subset), g in df.groupby(["label", "subset"], sort=False):
        ok = g[g["status"] == "ok"]
        row: dict[str, Any] = {"method": label, "images": subset, "n": len(ok), "failed": int((g["status"] != "ok").sum()),
                               "iterations": int(g["iterations"].dropna().iloc[0]) if g["iterations"].notna().any() else None,
                               "device": g["device"].iloc[0]}
        for col in [c[0] for c in COLUMNS] + ["tflops", "peak_fraction"]:
            vals = pd.to_numeric(ok[col], errors="coerce").dropna() if col in ok else pd.Series([], dtype=float)
            row[f"{col}_mean"] = float(vals.mean()) if len(vals) else math.nan
            row[f"{col}_std"] = float(vals.std(ddof=0)) if len(vals) else math.nan
        out.append(row)
    return pd.DataFrame(out)


def _cell(mean: float, std: float, fmt: str, pm: str) -> str:
    if math.isnan(mean):
        return "–"
    return f"{fmt.format(mean)}{pm}{fmt.format(std)}"


def _throughput_cell(r: pd.Series, fmt: str) -> str:
    """Mean achieved TFLOP/s, with the fraction of the device's peak when it is known."""
    if math.isnan(r["tflops_mean"]):
        return "–"
    peak = r.get("peak_fraction_mean", math.nan)
    return fmt.format(r["tflops_mean"]) + ("" if math.isnan(peak) else f" ({peak * 100:.1f} % of peak)")


def _display(s: pd.DataFrame, pm: str, arrows: tuple[str, str]) -> tuple[list[str], list[list[str]]]:
    throughput = "tflops_mean" in s and s["tflops_mean"].notna().any()
    columns = COLUMNS + ([THROUGHPUT] if throughput else [])
    header = ["method", "images", "n"] + [f"{label} {arrows[0] if hib else arrows[1]}" for _, label, hib, _ in columns] \
        + ["failed", "iters"]
    rows = []
    for _, r in s.iterrows():
        rows.append([str(r["method"]), str(r["images"]), str(r["n"])]
                    + [_cell(r[f"{c}_mean"], r[f"{c}_std"], fmt, pm) for c, _, _, fmt in COLUMNS]
                    + ([_throughput_cell(r, THROUGHPUT[3])] if throughput else [])
                    + [str(r["failed"]), "" if r["iterations"] is None else str(r["iterations"])])
    return header, rows


def footer(df: pd.DataFrame) -> list[str]:
    """Conventions and provenance lines, from the records."""
    if df.empty:
        return []
    first = df.iloc[0]
    conv = first["metric_conventions"] or {}
    lines = ["Values are mean ± std over images (per-image metrics, then averaged). ↑ higher is better, ↓ lower is better."]
    for name in ("psnr", "ssim", "lpips"):
        if name in conv:
            lines.append(conv[name])
    timers = sorted(set(df["timer"].dropna().str.split(",").str[0]))
    lines.append(f"Time per image: inversion of a batch divided by its size; timer: {', '.join(timers)}. "
                 f"Device: {'; '.join(sorted(set(df['device'].dropna())))}.")
    if "tflops" in df and pd.to_numeric(df["tflops"], errors="coerce").notna().any():
        precisions = ", ".join(sorted(set(df["precision"].dropna()))) or "fp32"
        lines.append("TFLOP/s: FLOPs of one iteration (counted with torch's formulas) × iterations × images / batch "
                     f"time; % of peak against the device's dense datasheet peak at the precision used "
                     f"({precisions}).")
    gen = first["generator"] or {}
    lines.append(f"Generator: {gen.get('name')} ({gen.get('resolution')}², weights: {gen.get('weights')}). "
                 f"Image set: {first['image_set']}.")
    failed = int((df["status"] != "ok").sum())
    if failed:
        lines.append(f"{failed} (method, image) results failed and are excluded from the means; see the database.")
    return lines


def to_markdown(df: pd.DataFrame) -> str:
    s = summary(df)
    if s.empty:
        return "(no results yet)"
    header, rows = _display(s, " ± ", ("↑", "↓"))
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    fmt = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"
    lines = [fmt(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [fmt(r) for r in rows]
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {x}" for x in footer(df))


def to_csv(df: pd.DataFrame) -> str:
    return summary(df).to_csv(index=False)


def _tex(s: str) -> str:
    for a, b in [("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                 ("±", r"$\pm$"), ("↑", r"$\uparrow$"), ("↓", r"$\downarrow$"), ("²", r"$^2$"), ("–", "--")]:
        s = s.replace(a, b)
    return s


def to_latex(df: pd.DataFrame) -> str:
    s = summary(df)
    if s.empty:
        return "% no results yet\n"
    header, rows = _display(s, " ± ", ("↑", "↓"))
    lines = [r"\begin{table}[t]", r"\centering", r"\begin{tabular}{" + "l" * 2 + "r" * (len(header) - 2) + "}",
             r"\toprule", " & ".join(_tex(h) for h in header) + r" \\", r"\midrule"]
    lines += [" & ".join(_tex(c) for c in r) + r" \\" for r in rows]
    lines += [r"\bottomrule", r"\end{tabular}",
              r"\caption{" + _tex(" ".join(footer(df))) + "}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def write_tables(run_dir: str | Path) -> dict[str, Path]:
    """Write ``table.md``, ``table.csv`` and ``table.tex`` into the run folder."""
    run_dir = Path(run_dir)
    df = load_records(run_dir)
    out = {}
    for ext, render in (("md", to_markdown), ("csv", to_csv), ("tex", to_latex)):
        path = run_dir / f"table.{ext}"
        tmp = path.with_suffix(f".{ext}.tmp")
        tmp.write_text(render(df), encoding="utf-8")
        tmp.replace(path)
        out[ext] = path
    return out
