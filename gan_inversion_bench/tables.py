"""Comparison tables rendered from the stored records (never computed from live objects).

``summary(records)`` groups per configuration and image subset. A quality cell is the mean
over images with, in brackets, the 95 % bootstrap confidence interval of that mean
(:mod:`gan_inversion_bench.stats`: BCa, seeded, so the tables are reproducible), e.g.
``27.41 [26.12, 28.55]``; n (images) has its own column, and a row of one image shows the
value alone: a quantity measured once gets no interval. Time per image is the batch time
divided by the batch size, so the images of a batch share one measurement: the time cell is
the mean over timed batches, with an interval over batches only when there are at least 2
(the footer gives the number of batches of every row). Times measured on different devices or
at different batch sizes (a resume on another machine, another ``--batch-size``) are never
averaged together: such a cell says ``not averaged`` and the footer gives each condition's time
(:func:`timing_conditions`). Renderers write Markdown (terminal), CSV (numbers only: ``psnr_mean,
psnr_ci_low, psnr_ci_high, psnr_std, …``) and LaTeX (booktabs, special characters escaped). Every
rendering carries a footer with the metric conventions, how the intervals were computed and the
timer, taken from the records themselves. ``gib compare`` (paired per-image differences) is in
:mod:`.compare_runs`.
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from . import stats
from .safe_paths import inside, write_atomic
from .store import ResultStore, json_value, meta_value

#: (column, label, higher is better, format)
COLUMNS = [("psnr", "PSNR (dB)", True, "{:.2f}"), ("ssim", "SSIM", True, "{:.4f}"), ("lpips", "LPIPS", False, "{:.4f}"),
           ("time_s", "batched s/img", False, "{:.3g}"), ("latency_s", "alone s/img", False, "{:.3g}")]
#: the quality columns: a mean and an interval over images
QUALITY = ("psnr", "ssim", "lpips")
#: the inpainting column, shown when any record has it
HOLE = ("psnr_hole", "PSNR hole (dB)", True, "{:.2f}")
#: the mean PSNR over an image's K starts, shown when a record has K > 1 (PSNR: the best start)
STARTS = ("psnr_starts", "PSNR mean of starts (dB)", True, "{:.2f}")
#: the optional throughput column, shown when any record has it (records since schema version 2)
THROUGHPUT = ("tflops", "TFLOP/s", True, "{:.3g}")
NAN = math.nan


#: the columns of a result that the tables and the report read, and their shapes (:func:`~.store.json_value`)
RECORD_SHAPES: dict[str, Any] = {"generator": dict, "method_settings": dict, "capacity": dict, "restarts": {"k": int},
                                 "metric_conventions": dict.fromkeys(QUALITY, str), "task": {"settings": dict},
                                 # REAL columns: SQLite keeps text that is no number as text ('abc' where a PSNR goes)
                                 **dict.fromkeys(("psnr", "ssim", "lpips", "mse", "ms_ssim", "psnr_hole", "mse_hole",
                                                  "final_loss", "time_s", "tflops"), float)}


def load_records(run_dir: str | Path) -> pd.DataFrame:
    """Every result row, with ``subset`` (the image set part of the id) and, per configuration, the
    one-off costs from the ``timings`` table: ``latency_s`` (one image alone) and ``prepare_s``
    (with ``prepare_note``); ``psnr_starts``: per image, the mean PSNR over its restarts (NaN for one start).
    ``attrs["tuned_on"]``: the meta data's method → images its tuned entry was tuned on (harness.config.tuned_on).
    A value of :data:`RECORD_SHAPES` or ``tuned_on`` of another JSON type is refused, naming it
    (:func:`~.store.json_value`)."""
    with ResultStore(run_dir, create=False) as store:
        rows, times, tuned_on = store.results(), store.timings(), meta_value(store, "tuned_on", {...: list}) or {}
        for row in rows:  # a crafted value is refused here, named, rather than failing in a renderer
            for col, shape in RECORD_SHAPES.items():
                json_value(row[col], shape, f"{store.path}: column {col!r} of the result {row['method_key']!r}, "
                                            f"image {row['image_id']!r}")
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    df["subset"] = df["image_id"].str.split("/").str[0]
    df = with_task_label(df)
    latest = {(t["method_key"], t["kind"]): t for t in times}  # the last measurement of each kind
    # a preparation's cost is what computing it took (its last computation), not a later cache load
    computed = {t["method_key"]: t for t in times if t["kind"] == "prepare" and t.get("note") == "computed"}
    for key, t in computed.items():
        if latest[(key, "prepare")] is not t:
            latest[(key, "prepare")] = {**t, "note": "computed; later sessions loaded it from the cache"}
    for kind in ("latency", "prepare"):
        df[f"{kind}_s"] = [latest[(k, kind)]["seconds"] if (k, kind) in latest else NAN for k in df["method_key"]]
    df["prepare_note"] = [latest[(k, "prepare")]["note"] if (k, "prepare") in latest else None
                          for k in df["method_key"]]
    df = stats.with_start_means(df)
    df.attrs["tuned_on"] = tuned_on
    return df


def task_label(task: Any) -> str:
    """``reconstruct`` for a record without a task (every record before tasks existed), else the
    task's name and settings, e.g. ``inpaint (mask=centre, ratio=0.25)``."""
    if not isinstance(task, dict):
        return "reconstruct"
    settings = task.get("settings") or {}
    inner = ", ".join(f"{k}={v}" for k, v in settings.items())
    return f"{task.get('name')} ({inner})" if inner else str(task.get("name"))


def with_task_label(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with its ``task_label`` column (records built without :func:`load_records` lack it)."""
    if "task_label" in df:
        return df
    return df.assign(task_label=[task_label(t) for t in df.get("task", pd.Series([None] * len(df), index=df.index))])


def _tasks(df: pd.DataFrame) -> bool:
    """Whether the task column is shown: a task other than plain reconstruction, or several tasks."""
    labels = set(df.get("task_label", pd.Series(["reconstruct"])))
    return labels != {"reconstruct"}


_label = stats.config_labels  # the method's name, with what tells its configurations apart where it ran several


def _labelled(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with the keys of the table's rows, ``task_label`` and ``label`` (computed where absent: :func:`footer`
    computes them once for all its lines)."""
    df = with_task_label(df)
    return df if "label" in df else df.assign(label=_label(df))


def _finite(frame: pd.DataFrame, col: str) -> npt.NDArray[np.float64]:
    """The finite values of a column (a metric the store kept empty, i.e. missing, is left out)."""
    if col not in frame:
        return np.empty(0)
    values: npt.NDArray[np.float64] = np.asarray(pd.to_numeric(frame[col], errors="coerce"), dtype=np.float64)
    return values[np.isfinite(values)]


def _ci(values: npt.NDArray[np.float64], settings: stats.BootstrapSettings) -> tuple[float, float, float]:
    if not len(values):
        return NAN, NAN, NAN
    return stats.bootstrap_ci(values, confidence=settings.confidence, n_resamples=settings.n_resamples,
                              seed=settings.seed, method=settings.method)


def _image_stats(ok: pd.DataFrame, col: str, settings: stats.BootstrapSettings) -> dict[str, float]:
    values = _finite(ok, col)
    mean, low, high = _ci(values, settings)
    return {f"{col}_mean": mean, f"{col}_ci_low": low, f"{col}_ci_high": high,
            f"{col}_std": float(values.std(ddof=1)) if len(values) > 1 else NAN}  # spread over images


def batches(ok: pd.DataFrame) -> pd.DataFrame:
    """One record per timed batch: the images of a batch share its time per image (the batch time
    divided by its size), its session, device and size, which identify it (two batches of one
    session timed to the same bit would count once)."""
    timed = ok.assign(time_s=pd.to_numeric(ok["time_s"], errors="coerce")).dropna(subset=["time_s"])
    key = [c for c in ("method_key", "session", "device", "batch_size", "time_s") if c in timed]
    return timed.drop_duplicates(subset=key)


def timing_conditions(df: pd.DataFrame) -> pd.Series:
    """What each record's time was measured under: ``"DEVICE, batch size N"``. N is the largest batch
    of the record's session for its configuration (the last batch of a session may be smaller, and
    so may batches after running out of memory); a session that timed a single smaller batch (the
    rest of an interrupted run) counts with the largest batch size on the same device. Times taken
    under different conditions are not averaged (a resume on another device or with another
    ``--batch-size`` keeps its quality rows, but its times are reported apart)."""
    if df.empty:
        return pd.Series(dtype=object, index=df.index)

    def column(name: str, default: Any) -> pd.Series:
        return df[name] if name in df else pd.Series(default, index=df.index)

    sizes = pd.to_numeric(column("batch_size", None), errors="coerce").fillna(0).astype(int)
    frame = pd.DataFrame({"key": column("method_key", "").astype(str),
                          "device": column("device", None).fillna("unknown device").astype(str),
                          "session": column("session", None).fillna(-1).astype(str), "size": sizes,
                          "batch": sizes.astype(str) + "/" + column("time_s", None).astype(str)}, index=df.index)
    per_session = frame.groupby(["key", "device", "session"])
    nominal = per_session["size"].transform("max")
    largest = nominal.groupby([frame["key"], frame["device"]]).transform("max")
    nominal = nominal.where(~((per_session["batch"].transform("nunique") == 1) & (nominal < largest)), largest)
    return frame["device"] + ", batch size " + nominal.astype(str)


def _batch_stats(ok: pd.DataFrame, settings: stats.BootstrapSettings) -> dict[str, Any]:
    timed = batches(ok)
    times = _finite(timed, "time_s")
    conditions = int(timed["timing"].nunique()) if "timing" in timed else 1
    if conditions > 1:  # different devices or batch sizes: no mean (the footer gives each one's)
        mean, low, high = NAN, NAN, NAN
    elif len(times) >= 2:
        mean, low, high = _ci(times, settings)
    else:  # measured once (or never): the value alone
        mean, low, high = (float(times[0]) if len(times) else NAN), NAN, NAN
    tflops, peak = _finite(timed, "tflops"), _finite(timed, "peak_fraction")
    if conditions > 1:
        tflops, peak = np.empty(0), np.empty(0)
    latency = np.unique(_finite(ok, "latency_s"))
    return {"time_s_mean": mean, "time_s_ci_low": low, "time_s_ci_high": high, "time_s_batches": len(times),
            "timing_conditions": conditions,
            "latency_s_mean": float(latency.mean()) if len(latency) else NAN,
            "tflops_mean": float(tflops.mean()) if len(tflops) else NAN,
            "peak_fraction_mean": float(peak.mean()) if len(peak) else NAN}


def summary(df: pd.DataFrame, settings: stats.BootstrapSettings = stats.DEFAULT) -> pd.DataFrame:
    """One row per (task, configuration, subset), numbers only: counts; per quality metric the mean over images,
    its bootstrap interval (``_ci_low``, ``_ci_high``; NaN for one image) and the spread over images (``_std``:
    sample standard deviation, NaN for one image); time per image as the mean over batches (``time_s_batches``),
    with an interval from 2 batches on; achieved TFLOP/s and fraction of peak as means over batches. Times
    taken under several conditions (``timing_conditions`` > 1: devices, batch sizes; see
    :func:`timing_conditions`) are not averaged: their cells are NaN and the footer lists them."""
    if df.empty:
        return pd.DataFrame()
    df = stats.with_start_means(with_task_label(df))
    df = df.assign(label=_label(df), timing=timing_conditions(df))
    extra = (("psnr_hole",) if _has(df, "psnr_hole") else ()) + (("psnr_starts",) if _has(df, "psnr_starts") else ())
    out = []
    for (task, label, subset), g in df.groupby(["task_label", "label", "subset"], sort=False):
        ok = g[g["status"] == "ok"]
        row: dict[str, Any] = {"task": task, "method": label, "images": subset, "n": len(ok), "codes": _codes(g),
                               "failed": int((g["status"] != "ok").sum()),
                               "iterations": (int(g["iterations"].dropna().iloc[0]) if g["iterations"].notna().any()
                                              else None),
                               "device": g["device"].iloc[0]}
        for col in QUALITY + extra:
            row.update(_image_stats(ok, col, settings))
        row.update(_batch_stats(ok, settings))
        out.append(row)
    return pd.DataFrame(out)


def _has(df: pd.DataFrame, col: str) -> bool:
    return col in df and bool(pd.to_numeric(df[col], errors="coerce").notna().any())


def _mixed_timing_lines(df: pd.DataFrame) -> list[str]:
    """For each row timed under several conditions: each condition's mean time per image."""
    df = _labelled(df).assign(timing=timing_conditions(df))
    lines = []
    for key, g in df.groupby(["task_label", "label", "subset"], sort=False):
        timed = batches(g[g["status"] == "ok"])
        if timed["timing"].nunique() < 2:
            continue
        parts = [f"{condition}: {grp['time_s'].mean():.3g} s/img over {len(grp)} batch{'' if len(grp) == 1 else 'es'}"
                 for condition, grp in timed.groupby("timing", sort=False)]
        lines.append(f"{_row_name(df, key)}: timed under {len(parts)} conditions (device, batch size), so its batched "
                     f"s/img and TFLOP/s are not averaged: {'; '.join(parts)}. Time each condition in its own "
                     "--out folder to compare them.")
    return lines


def _codes(g: pd.DataFrame) -> str:
    """The capacity of a configuration: its codes per image (and how they are organised)."""
    caps = [c for c in g.get("capacity", pd.Series(dtype=object)).dropna() if isinstance(c, dict)]
    if not caps:
        return ""
    c = caps[0]
    if "subspaces" in c:
        return f"{c.get('codes')} (R={c['subspaces']}×K={c.get('codes_per_subspace')})"
    return str(c.get("codes", ""))


def _cell(r: pd.Series, col: str, fmt: str) -> str:
    """``mean [low, high]``; the mean alone when there is no interval (one image, one batch)."""
    mean, low, high = (float(r.get(f"{col}_{k}", NAN)) for k in ("mean", "ci_low", "ci_high"))
    if math.isnan(mean):
        return "–"
    if math.isnan(low) or math.isnan(high):
        return fmt.format(mean)
    return f"{fmt.format(mean)} [{fmt.format(low)}, {fmt.format(high)}]"


def _time_cell(r: pd.Series, col: str, fmt: str) -> str:
    """:func:`_cell`, except for times taken under several conditions (see the footer)."""
    if col == "time_s" and r.get("timing_conditions", 1) > 1:
        return "not averaged"
    return _cell(r, col, fmt)


def _throughput_cell(r: pd.Series, fmt: str) -> str:
    """Mean achieved TFLOP/s, with the fraction of the device's peak when it is known."""
    if math.isnan(r["tflops_mean"]):
        return "–"
    peak = r.get("peak_fraction_mean", NAN)
    return fmt.format(r["tflops_mean"]) + ("" if math.isnan(peak) else f" ({peak * 100:.1f} % of peak)")


def _display(s: pd.DataFrame, arrows: tuple[str, str] = ("↑", "↓")) -> tuple[list[str], list[list[str]]]:
    throughput = "tflops_mean" in s and s["tflops_mean"].notna().any()
    def shown(column: tuple[str, str, bool, str]) -> list[tuple[str, str, bool, str]]:
        return [column] if f"{column[0]}_mean" in s and s[f"{column[0]}_mean"].notna().any() else []

    quality = COLUMNS[:1] + shown(STARTS) + COLUMNS[1:3] + shown(HOLE) + COLUMNS[3:]
    columns = quality + ([THROUGHPUT] if throughput else [])
    task = "task" in s and set(s["task"]) != {"reconstruct"}
    header = (["task"] * task + ["method", "images", "n", "codes"]
              + [f"{label} {arrows[0] if hib else arrows[1]}" for _, label, hib, _ in columns]
              + ["failed", "iters"])
    rows = []
    for _, r in s.iterrows():
        rows.append([str(r["task"])] * task + [str(r["method"]), str(r["images"]), str(r["n"]), str(r.get("codes", ""))]
                    + [_time_cell(r, c, fmt) for c, _, _, fmt in quality]
                    + ([_throughput_cell(r, THROUGHPUT[3])] if throughput else [])
                    + [str(r["failed"]), "" if r["iterations"] is None else str(r["iterations"])])
    return header, rows


def _row_name(df: pd.DataFrame, key: tuple[Any, ...]) -> str:  # a row in footer text: label/subset (task)
    return "/".join(map(str, key[1:])) + (f" ({key[0]})" if _tasks(df) else "")


def _batch_counts(df: pd.DataFrame) -> str:
    df = _labelled(df)
    parts = []
    for key, g in df.groupby(["task_label", "label", "subset"], sort=False):  # the table's rows
        k = len(batches(g[g["status"] == "ok"]))
        parts.append(f"{_row_name(df, key)} ({k} batch{'' if k == 1 else 'es'})")
    return ", ".join(parts)


def _missing_values(df: pd.DataFrame) -> list[str]:
    """What the quality columns leave out: exact reconstructions (PSNR +inf, which the store keeps empty beside
    MSE 0), named by row, and other non-finite values."""
    ok = _labelled(df).query("status == 'ok'")
    lines = []
    for col, label, _, _ in COLUMNS[:len(QUALITY)]:
        empty = ok[pd.to_numeric(ok[col], errors="coerce").isna()] if col in ok else ok.iloc[:0]
        exact = empty[stats.exact_psnr(empty)] if col == "psnr" else empty[:0]
        if len(exact):
            rows = sorted({_row_name(df, tuple(r)) for r in exact[["task_label", "label", "subset"]].itertuples(False)})
            lines.append(f"{len(exact)} ok result(s) reconstruct their target exactly (MSE 0, PSNR +inf) and are left "
                         f"out of their row's PSNR mean and interval, whose mean would be +inf: {', '.join(rows)}.")
        if len(empty) > len(exact):
            lines.append(f"{len(empty) - len(exact)} ok result(s) have no {label} value (non-finite, stored empty) "
                         "and are left out of that column's mean and interval.")
    return lines


def footer(df: pd.DataFrame, settings: stats.BootstrapSettings = stats.DEFAULT) -> list[str]:
    """Conventions and provenance lines, from the records."""
    if df.empty:
        return []
    first = df.iloc[0]
    conv = first["metric_conventions"] or {}
    rows = with_task_label(df).assign(label=_label(df))  # the keys of the table's rows, once for every line below
    lines = [f"Quality cells: mean over images, then in brackets the {settings.describe('images')}; n: images "
             "per row (a value without an interval comes from one image). ↑ higher is better, ↓ lower is better."]
    for name in ("psnr", "ssim", "lpips"):
        if name in conv:
            lines.append(conv[name])
    lines += _missing_values(rows) + _task_lines(df) + _start_lines(df)
    lines += [f"Not held out: {m}'s tuned entry was tuned on {len(ids)} of these images ({', '.join(map(str, ids))})."
              for m, ids in sorted((df.attrs.get("tuned_on") or {}).items())]
    timers = sorted(set(df["timer"].dropna().str.split(",").str[0]))
    lines.append("Time per image: inversion of a batch divided by its size, so the images of a batch share one "
                 "measurement: mean over timed batches, with the bootstrap interval over batches (as above) only "
                 f"from 2 batches on; timed batches: {_batch_counts(rows)}. Timer: {', '.join(timers)}. "
                 f"Device: {'; '.join(sorted(set(df['device'].dropna())))}.")
    lines += _mixed_timing_lines(rows)
    lines += _cost_lines(rows)
    if "tflops" in df and pd.to_numeric(df["tflops"], errors="coerce").notna().any():
        precisions = ", ".join(sorted(set(df["precision"].dropna()))) or "fp32"
        lines.append("TFLOP/s: FLOPs of one iteration (counted with torch's formulas) × iterations × images / batch "
                     f"time, averaged over batches; % of peak against the device's dense datasheet peak at the "
                     f"precision used ({precisions}).")
    gen = first["generator"] or {}
    lines.append(f"Generator: {gen.get('name')} ({gen.get('resolution')}², weights: {gen.get('weights')}). "
                 f"Image set: {first['image_set']}.")
    failed = int((df["status"] != "ok").sum())
    if failed:
        lines.append(f"{failed} (method, image) results failed and are excluded from the means; see the database.")
    return lines


def _start_lines(df: pd.DataFrame) -> list[str]:
    """How a row of several starts per image was scored (nothing when every row has one start)."""
    df = stats.with_start_means(df)
    if not _has(df, "psnr_starts"):
        return []
    ks = sorted({int(info["k"]) for info in df["restarts"] if isinstance(info, dict) and int(info.get("k", 1)) > 1})
    return [f"Restarts ({' or '.join(map(str, ks))} starts per image): PSNR, SSIM and LPIPS are those of each image's "
            "best start, the one with the lowest final loss (the method's own objective, never the metrics); "
            "PSNR mean of starts: per image the mean PSNR over its starts (a start that failed, its loss non-finite, "
            "left out as a failed image is), then the mean over images with its interval as above (what one start "
            "gives on average)."]


def _task_lines(df: pd.DataFrame) -> list[str]:
    """How a restoration task was scored (nothing for plain reconstruction)."""
    if not _tasks(df):
        return []
    lines = []
    for _, r in df.drop_duplicates("task_label").iterrows():
        task = r.get("task")
        if isinstance(task, dict):
            lines.append(f"Task {r['task_label']}: {task.get('operator')}.")
    lines.append("Restoration: every method received the observation y = D(x) and compared D(G(·)) with y in its "
                 "loss; PSNR, SSIM and LPIPS compare the restoration G(·) with the clean target x"
                 + ("; PSNR hole: the PSNR convention above over the hole's pixels only" if _has(df, "psnr_hole")
                    else "") + ".")
    return lines


def _cost_lines(df: pd.DataFrame) -> list[str]:
    """How latency was measured, and each configuration's one-off preparation (not per image)."""
    lines = ["Alone s/img (latency): the first image inverted again on its own (a batch of one, as the original "
             "code inverts), timed once per configuration; batched s/img is the throughput figure."]
    prep = df.drop_duplicates("method_key")
    # a preparation shorter than 50 ms (a method with nothing to learn) is not worth a line
    prep = prep[pd.to_numeric(prep["prepare_s"], errors="coerce") >= 0.05] if "prepare_s" in prep else prep.iloc[0:0]
    labels = _labelled(df)["label"].loc[prep.index]
    parts = [f"{lab}: {sec:.3g} s ({note})" if note else f"{lab}: {sec:.3g} s"
             for lab, sec, note in zip(labels, prep["prepare_s"], prep["prepare_note"], strict=True)]
    if parts:
        lines.append("Preparation, once per configuration and run, not included in the per-image times: "
                     + "; ".join(parts) + ".")
    caps = df.get("capacity")
    if caps is not None and caps.notna().any():
        lines.append("codes: latent codes per image as each method states its capacity (R×K: R channel subspaces "
                     "of K codes each); multi-code methods are compared at equal codes.")
    return lines


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]

    def fmt(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    return "\n".join([fmt(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [fmt(r) for r in rows])


def _markdown(df: pd.DataFrame, s: pd.DataFrame) -> str:
    if s.empty:
        return "(no results yet)"
    return markdown_table(*_display(s)) + "\n\n" + "\n".join(f"- {x}" for x in footer(df))


def to_markdown(df: pd.DataFrame) -> str:
    return _markdown(df, summary(df))


def to_csv(df: pd.DataFrame) -> str:
    """The summary's numbers; the ``task`` column only when a row has a restoration task (so files
    of plain reconstruction keep the columns they always had)."""
    s = summary(df)
    if "task" in s and set(s["task"]) == {"reconstruct"}:
        s = s.drop(columns="task")
    return s.to_csv(index=False)


#: LaTeX for every character that is special to it, and for the symbols the tables use
_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "_": r"\_", "#": r"\#", "$": r"\$", "{": r"\{",
        "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "±": r"$\pm$", "↑": r"$\uparrow$",
        "↓": r"$\downarrow$", "²": r"$^2$", "–": "--", "−": "$-$", "×": r"$\times$", "·": r"$\cdot$",
        "≥": r"$\geq$", "≤": r"$\leq$", "σ": r"$\sigma$", "…": r"\dots{}"}
_TEX_RE = re.compile("|".join(re.escape(k) for k in _TEX))


def _tex(s: str) -> str:
    """``s`` as LaTeX text: one pass, so a replacement is never escaped again."""
    return _TEX_RE.sub(lambda m: _TEX[m.group()], s)


def _tex_row(cells: list[str]) -> str:
    row = " & ".join(_tex(c) for c in cells)
    return ("{}" if row.startswith("[") else "") + row + r" \\"  # `\\ [` would read as `\\[<length>]`


def _latex(df: pd.DataFrame, s: pd.DataFrame) -> str:
    if s.empty:
        return "% no results yet\n"
    header, rows = _display(s)
    lines = [r"\begin{table}[t]", r"\centering", r"\begin{tabular}{" + "l" * 2 + "r" * (len(header) - 2) + "}",
             r"\toprule", _tex_row(header), r"\midrule"]
    lines += [*(_tex_row(r) for r in rows), r"\bottomrule", r"\end{tabular}",
              r"\caption{" + _tex(" ".join(footer(df))) + "}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def to_latex(df: pd.DataFrame) -> str:
    return _latex(df, summary(df))


def write_tables(run_dir: str | Path, out_dir: str | Path | None = None) -> dict[str, Path]:
    """Write ``table.md``, ``table.csv`` and ``table.tex`` into the run folder (or ``out_dir``).

    Each file is written to a new temporary file and renamed into place; a symbolic link (or
    anything but a regular file) in its place is refused (:class:`~.safe_paths.UnsafePathError`),
    never written through. A read-only folder raises the ``OSError``; ``gib table`` then prints
    the table only and says so."""
    run_dir = Path(run_dir)
    target = Path(out_dir) if out_dir is not None else run_dir
    df = load_records(run_dir)
    s = summary(df)  # once: the intervals are the costly part
    if out_dir is not None:
        target.mkdir(parents=True, exist_ok=True)
    out = {}
    for ext, text in (("md", _markdown(df, s)), ("csv", s.to_csv(index=False)), ("tex", _latex(df, s))):
        path = inside(target, f"table.{ext}")
        write_atomic(path, text.encode("utf-8"))
        out[ext] = path
    return out
