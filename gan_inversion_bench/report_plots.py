"""The report's plots (matplotlib, Agg, drawn without pyplot): convergence, time against quality,
and quality against compute with the Pareto front.

Quality against compute uses each record's trace (:mod:`gan_inversion_bench.harness.trace`): the
median over a configuration's images of PSNR at log-spaced iterations, against the time spent per
image (net of the trace's own snapshots) and against the FLOPs spent per image. The Pareto front
joins the points (from every configuration's median curve) that no other point beats in both time
and PSNR: at a given time budget, the front says which configuration reconstructs best.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar
from urllib.parse import quote

import numpy as np
import pandas as pd

Record = dict[Hashable, Any]
P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class Plot:
    """A figure of the report folder: relative (URL-quoted) link, alt text, caption (plain text)."""
    link: str
    alt: str
    caption: str



# ---- plots --------------------------------------------------------------------------------------------
def _plain_text(plot: Callable[P, R]) -> Callable[P, R]:
    """``plot`` drawn with matplotlib's math text off: labels come from the records (method names, settings),
    and a ``$`` in one was parsed as TeX (a crafted method name made ``gib report`` fail)."""
    @functools.wraps(plot)
    def drawn(*args: P.args, **kwargs: P.kwargs) -> R:
        import matplotlib

        with matplotlib.rc_context({"text.parse_math": False}):
            return plot(*args, **kwargs)
    return drawn


def _figure(ncols: int, width: float = 11.0, height: float = 4.0) -> tuple[Any, Any]:
    from matplotlib.figure import Figure  # no pyplot: no global backend state, Agg when saving

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    return fig, fig.subplots(1, ncols, squeeze=False)[0]


SUBSET_COLORS = ("#7b3294", "#8c564b", "#e377c2", "#17becf", "#bcbd22")


def _method_color(df: pd.DataFrame, label: str) -> str:
    """The same colour for a method in every plot (matplotlib's cycle, in the order of the table)."""
    return f"C{list(dict.fromkeys(df['label'])).index(label) % 10}"


def _save(fig: Any, root: Path, name: str, alt: str, caption: str) -> Plot:
    (root / "plots").mkdir(exist_ok=True)
    fig.savefig(root / "plots" / name, format="png")
    return Plot(f"plots/{quote(name)}", alt, caption)


def _curves(rows: Iterable[Record], key: str = "loss") -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per image: (iteration, time in s, values) from the stored history summary."""
    out = []
    for r in rows:
        h = r.get("loss_history") or {}
        if key not in h or not h.get("iteration"):
            continue
        it = np.asarray(h["iteration"], dtype=float)
        n = _number(r, "iterations")  # 0 for a method without iterations (the encoder)
        total = n if n > 0 else float(it[-1] + 1)
        time = (r["time_s"] or math.nan) * (it + 1) / total
        out.append((it, time, np.array([math.nan if v is None else v for v in h[key]], dtype=float)))
    return out


@_plain_text
def convergence(df: pd.DataFrame, root: Path) -> dict[str, Any] | None:
    if df.empty:
        return None
    has_psnr = any(isinstance(h, dict) and "psnr" in h for h in df["loss_history"])
    plots = []
    for key in ["loss"] + (["psnr"] if has_psnr else []):
        plots.append(_plot_medians(df, key, root))
        for i, (label, g) in enumerate(df.groupby("label", sort=False)):
            plots.append(_plot_method(str(label), g, key, root, f"{key}-{i}.png"))
    return {"has_psnr": has_psnr, "plots": plots}


def _plot_medians(df: pd.DataFrame, key: str, root: Path) -> Plot:
    fig, (a, b) = _figure(2)
    for label, g in df.groupby("label", sort=False):
        curves = _curves(g.to_dict("records"), key)
        if not curves:
            continue
        n = min(len(c[2]) for c in curves)
        vals = np.stack([c[2][:n] for c in curves])
        med = np.nanmedian(vals, axis=0) if np.isfinite(vals).any() else vals[0]
        style = {"lw": 2, "marker": "o" if n <= 30 else None, "markersize": 4}
        color = _method_color(df, str(label))
        a.plot(curves[0][0][:n], med, label=str(label), color=color, **style)
        b.plot(np.nanmedian(np.stack([c[1][:n] for c in curves]), axis=0), med, color=color, **style)
    _axes(a, "iteration", key)
    _axes(b, "time (s)", key)
    a.legend(fontsize=8)
    fig.suptitle(f"{key}: median over images, per method")
    return _save(fig, root, f"{key}-median.png", f"{key} against iteration and time, median per method",
                 f"{key} against iteration (left) and time (right), median over each method's images.")


def _plot_method(label: str, g: pd.DataFrame, key: str, root: Path, name: str) -> Plot:
    fig, (a, b) = _figure(2, height=3.2)
    for j, (subset, sg) in enumerate(g.groupby("subset", sort=False)):
        color = SUBSET_COLORS[j % len(SUBSET_COLORS)]
        for k, (it, time, vals) in enumerate(_curves(sg.to_dict("records"), key)):
            a.plot(it, vals, lw=0.8, alpha=0.6, color=color, label=None if k else str(subset))
            b.plot(time, vals, lw=0.8, alpha=0.6, color=color)
    _axes(a, "iteration", key)
    _axes(b, "time (s)", key)
    if a.get_legend_handles_labels()[0]:
        a.legend(fontsize=8, title="images")
    fig.suptitle(f"{label}: {key} per image")
    return _save(fig, root, name, f"{label}: {key} per image", f"{label}: {key} of every image, coloured by image "
                 "subset, against iteration (left) and time (right).")


def _axes(ax: Any, xlabel: str, key: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(key)
    ax.grid(alpha=0.3)
    values = np.concatenate([np.asarray(ln.get_ydata(), float) for ln in ax.get_lines()] or [np.zeros(0)])
    values = values[np.isfinite(values)]
    if key == "loss" and values.size and values.min() > 0 and values.max() / values.min() > 20:
        ax.set_yscale("log")  # only when the loss spans more than a decade or so


@_plain_text
def time_quality(df: pd.DataFrame, root: Path) -> Plot | None:
    ok = df[df["status"] == "ok"] if not df.empty else df
    if ok.empty:
        return None
    fig, axes = _figure(2)
    for metric, ax, arrow in (("psnr", axes[0], "↑"), ("lpips", axes[1], "↓")):
        for label, g in ok.groupby("label", sort=False):
            t = pd.to_numeric(g["time_s"], errors="coerce")
            v = pd.to_numeric(g[metric], errors="coerce")
            color = _method_color(df, str(label))
            ax.scatter(t, v, s=14, alpha=0.45, color=color)
            ax.scatter([t.mean()], [v.mean()], s=110, marker="D", edgecolor="black", color=color,
                       label=f"{label} (mean)")
        ax.set_xlabel("time per image (s)")
        ax.set_ylabel(f"{metric.upper()} {arrow}")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("time per image against PSNR and LPIPS (small: images, diamond: method mean)")
    return _save(fig, root, "time-quality.png", "time per image against PSNR and LPIPS per method",
                 "Each small point is one image; each diamond a method's mean. Up-left is better for PSNR, "
                 "down-left for LPIPS.")


# ---- quality against compute -----------------------------------------------------------------------
def median_trace(rows: Iterable[Record], x: str) -> tuple[np.ndarray, np.ndarray]:
    """Median over images of (``x`` ∈ {"seconds", "flops", "iteration"}, PSNR) at the common trace points."""
    traces = [t for t in (_trace_of(r, x) for r in rows) if t is not None]
    if not traces:
        return np.zeros(0), np.zeros(0)
    n = min(len(t[x]) for t in traces)
    xs = np.median(np.array([t[x][:n] for t in traces], dtype=float), axis=0)
    values = np.array([[np.nan if v is None else v for v in t["psnr"][:n]] for t in traces], dtype=float)
    ys = np.array([np.nanmedian(c) if np.isfinite(c).any() else np.nan for c in values.T])  # failed images left out
    return xs, ys


def _trace_of(r: Record, x: str) -> dict[str, Any] | None:
    """A record's trace; a method without one (a single forward pass, the encoder) is one point:
    its final PSNR at its time, its FLOPs and iteration 0."""
    t = r.get("trace")
    if isinstance(t, dict) and t.get(x):
        return t
    flops = _number(r, "flops_fixed") + _number(r, "flops_per_iteration") * _number(r, "iterations")
    at = {"seconds": _number(r, "time_s"), "flops": flops, "iteration": 0.0}.get(x, 0.0)
    psnr = _number(r, "psnr")
    if not psnr or (x != "iteration" and not at):
        return None
    return {x: [at], "psnr": [psnr]}


def _number(r: Record, key: str) -> float:
    """A record's numeric field; absent (None, or NaN once it went through a pandas frame) is 0."""
    v = r.get(key)
    return 0.0 if v is None or pd.isna(v) else float(v)


def pareto_front(points: list[tuple[float, float, str]]) -> list[tuple[float, float, str]]:
    """The points (cost, quality, label) that no other point beats in both: lower or equal cost and
    higher or equal quality, one of them strictly. Sorted by cost."""
    front: list[tuple[float, float, str]] = []
    for c, q, label in sorted((p for p in points if math.isfinite(p[0]) and math.isfinite(p[1])),
                              key=lambda p: (p[0], -p[1])):
        if not front or q > front[-1][1]:
            front.append((c, q, label))
    return front


@_plain_text
def quality_vs_compute(df: pd.DataFrame, root: Path) -> Plot | None:
    """Median PSNR against time and against FLOPs per image, with the Pareto front over time."""
    ok = df[df["status"] == "ok"] if not df.empty else df
    if ok.empty or "trace" not in ok or not ok["trace"].notna().any():
        return None
    fig, (a, b) = _figure(2)
    points: list[tuple[float, float, str]] = []
    for label, g in ok.groupby("label", sort=False):
        rows = g.to_dict("records")
        color = _method_color(df, str(label))
        for ax, key in ((a, "seconds"), (b, "flops")):
            xs, ys = median_trace(rows, key)
            keep = xs > 0
            ax.plot(xs[keep], ys[keep], marker="o", markersize=3, lw=1.5, color=color, label=str(label))
            if key == "seconds":
                points += [(float(x), float(y), str(label)) for x, y in zip(xs[keep], ys[keep], strict=True)]
    front = pareto_front(points)
    if front:
        a.step([p[0] for p in front], [p[1] for p in front], where="post", color="black", lw=1, ls="--",
               label="Pareto front")
    for ax, xlabel in ((a, "time per image (s, log)"), (b, "FLOPs per image (log)")):
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("PSNR (dB), median over images")
        ax.grid(alpha=0.3)
    a.legend(fontsize=8)
    fig.suptitle("quality against compute (log-spaced iterations; dashed: Pareto front over time)")
    owners = ", ".join(f"{p[2]} up to {p[0]:.3g} s" for p in _front_segments(front))
    return _save(fig, root, "quality-compute.png", "median PSNR against time and FLOPs per image, per method",
                 "Median PSNR over each configuration's images at log-spaced iterations, against the time spent per "
                 "image (left; trace snapshots not counted) and the FLOPs spent per image (right). The dashed line is "
                 f"the Pareto front over time: best configuration at each time budget ({owners}).")


def _front_segments(front: list[tuple[float, float, str]]) -> list[tuple[float, float, str]]:
    """The last point of each run of the front that belongs to one configuration."""
    out: list[tuple[float, float, str]] = []
    for i, p in enumerate(front):
        if i + 1 == len(front) or front[i + 1][2] != p[2]:
            out.append(p)
    return out
