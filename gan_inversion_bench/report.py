"""A self-contained static HTML report of a run folder: ``RUN_DIR/report/index.html``.

Everything the page shows lives in ``RUN_DIR/report/``: the page (inline CSS, no scripts, no
external resources), copies of the target and reconstruction PNGs under ``images/``, the plots
(matplotlib, Agg, drawn without pyplot) under ``plots/`` and figures found under ``RUN_DIR/cache/``
and ``RUN_DIR/discover/`` (e.g. PmSFC's subspace swap and permuted |S|) under ``extra/``. Links
are relative, so the folder can be moved, zipped or opened from disk offline.

Sections: the comparison table with the metric conventions (from :mod:`tables`), a grid per
image subset (target, then each method's reconstruction with its PSNR and LPIPS), convergence
(loss against iteration and against time, where the time of iteration t is the image's time ×
(t+1)/T), time against quality, the extra figures, and the failures.
"""
from __future__ import annotations

import datetime as _dt
import html
import math
import os
import shutil
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import quote

import numpy as np
import pandas as pd

from . import __version__, tables

REPORT_DIR = "report"
EXTRA_SOURCES = ("cache", "discover")

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto; max-width: 1200px;
       padding: 1em 2em; color: #1d1d1f; background: #fff; line-height: 1.4; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.8em; }
nav a { margin-right: 1em; } .meta { color: #555; font-size: 0.9em; }
table { border-collapse: collapse; margin: 0.5em 0; }
table.comparison th, table.comparison td, table.plain th, table.plain td { border: 1px solid #ccc; padding: 0.3em 0.6em; }
table.comparison td { text-align: right; font-variant-numeric: tabular-nums; } table.comparison td:nth-child(-n+2) { text-align: left; }
table.comparison thead, table.plain thead { background: #f2f2f5; }
table.grid th { font-weight: 600; font-size: 0.85em; padding: 0.2em 0.5em; max-width: 160px; word-break: break-all; }
table.grid td { vertical-align: top; padding: 0.3em; text-align: center; width: 136px; }
table.grid img { width: 128px; height: 128px; image-rendering: pixelated; border: 1px solid #ddd; display: block;
                 margin: 0 auto; }
figure { margin: 0; } figcaption { font-size: 0.78em; color: #333; font-variant-numeric: tabular-nums; }
table.grid figcaption { max-width: 136px; margin: 0 auto; overflow-wrap: anywhere; }
.failed { width: 128px; height: 128px; background: #fdecea; color: #a4000f; font-size: 0.75em; display: flex;
          align-items: center; justify-content: center; border: 1px solid #f5c2c0; overflow: hidden; margin: 0 auto; }
table.plain td:nth-child(-n+2) { white-space: nowrap; }
.plot img { max-width: 100%; border: 1px solid #eee; } .note { background: #f6f8fa; padding: 0.5em 1em; border-left: 3px solid #999; }
.extra { display: flex; flex-wrap: wrap; gap: 1em; } .extra img { max-width: 360px; border: 1px solid #ddd; }
footer { margin-top: 3em; color: #777; font-size: 0.8em; }
"""


def esc(x: Any) -> str:
    return html.escape("" if x is None else str(x))


def fmt(value: Any, spec: str, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return format(float(value), spec) + unit


def write_report(run_dir: str | Path) -> Path:
    """Write ``RUN_DIR/report/`` (replacing an earlier one) and return the path of ``index.html``."""
    run_dir = Path(run_dir)
    df = tables.load_records(run_dir)  # StoreError if this is not a run folder
    tmp = run_dir / f".{REPORT_DIR}-{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        if not df.empty:
            df = df.assign(label=tables._label(df))
        body = [_header(df, run_dir), _comparison(df)] + _grids(df, run_dir, tmp) \
            + [_convergence(df, tmp), _time_quality(df, tmp), _extra_figures(run_dir, tmp), _failures(df)]
        (tmp / "index.html").write_text(_page(run_dir.resolve().name, body), encoding="utf-8")
        final = run_dir / REPORT_DIR
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final / "index.html"


def _page(name: str, sections: list[str]) -> str:
    nav = " ".join(f'<a href="#{i}">{t}</a>' for i, t in (("comparison", "Table"), ("grids", "Reconstructions"),
                   ("convergence", "Convergence"), ("time-quality", "Time vs quality"),
                   ("figures", "PmSFC / discovery figures"), ("failures", "Failures")))
    when = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>GAN inversion report: {esc(name)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
            f"<h1>GAN inversion report: {esc(name)}</h1>\n<nav>{nav}</nav>\n" + "\n".join(sections)
            + f"\n<footer>Written by gan_inversion_bench {esc(__version__)} (<code>gib report</code>) on {esc(when)} "
              f"from the run's results.sqlite. This folder is self-contained.</footer>\n</body>\n</html>\n")


def _header(df: pd.DataFrame, run_dir: Path) -> str:
    if df.empty:
        return '<p class="meta">No results yet in this run folder.</p>'
    first = df.iloc[0]
    gen = first["generator"] or {}
    items = [("Generator", f"{gen.get('name')} ({gen.get('resolution')}², weights: {gen.get('weights')}; "
                           f"licence: {gen.get('licence')})"),
             ("Image set", first["image_set"]), ("Device", "; ".join(sorted(set(df["device"].dropna())))),
             ("Code", "; ".join(sorted(set(df["code_revision"].dropna())))),
             ("Results", f"{len(df)} (method, image) pairs, {int((df['status'] != 'ok').sum())} failed"),
             ("Run folder", str(run_dir.resolve()))]
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in items)
    return f'<table class="plain meta">{rows}</table>'


def _comparison(df: pd.DataFrame) -> str:
    out = ['<section id="comparison"><h2>Comparison</h2>']
    s = tables.summary(df)
    if s.empty:
        return out[0] + "<p>No results yet.</p></section>"
    header, rows = tables._display(s, " ± ", ("↑", "↓"))
    out.append('<table class="comparison"><thead><tr>' + "".join(f"<th>{esc(h)}</th>" for h in header)
               + "</tr></thead><tbody>")
    out += ["<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows]
    out.append("</tbody></table><ul>" + "".join(f"<li>{esc(x)}</li>" for x in tables.footer(df)) + "</ul>")
    out.append(_settings_table(df))
    conventions = df.iloc[0]["metric_conventions"] or {}
    out.append("<details><summary>All metric conventions</summary><dl>"
               + "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in conventions.items()) + "</dl></details>")
    return "".join(out) + "</section>"


def _settings_table(df: pd.DataFrame) -> str:
    """Which settings each method label stands for; settings that differ between labels come first."""
    keys = df.drop_duplicates("label")[["label", "method", "method_version", "method_key", "method_settings"]]
    rows = []
    for r in keys.to_dict("records"):
        others = [o["method_settings"] for o in keys.to_dict("records") if o["method"] == r["method"]]
        settings = r["method_settings"] or {}
        differs = [k for k in settings if any(o.get(k) != settings[k] for o in others)]
        shown = ", ".join(f"<b>{esc(k)}={esc(repr(settings[k]))}</b>" for k in differs)
        rest = ", ".join(f"{esc(k)}={esc(repr(v))}" for k, v in settings.items() if k not in differs)
        rows.append(f"<tr><td>{esc(r['label'])}</td><td>{esc(r['method'])} v{esc(r['method_version'])}</td>"
                    f"<td>{shown}{'; ' if shown and rest else ''}{rest}</td></tr>")
    return ('<table class="plain meta"><thead><tr><th>label</th><th>method</th><th>settings (bold: differs between '
            'runs of the same method)</th></tr></thead><tbody>' + "".join(rows) + "</tbody></table>")


# ---- reconstruction grids ------------------------------------------------------------------------
def _copy(src: Path, root: Path, rel: str) -> str | None:
    """Copy ``src`` to ``root/rel``; the URL-quoted relative link, or None if ``src`` is missing."""
    if not src.is_file():
        return None
    dst = root / rel
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    return quote(rel)


def _grids(df: pd.DataFrame, run_dir: Path, root: Path) -> list[str]:
    if df.empty:
        return ['<section id="grids"><h2>Reconstructions</h2><p>No results yet.</p></section>']
    labels = list(dict.fromkeys(df["label"]))
    by_pair = {(r["label"], r["image_id"]): r for r in df.to_dict("records")}
    out = ['<section id="grids"><h2>Reconstructions</h2><p>Target, then each method\'s reconstruction (the clamped '
           'image that was scored), with that image\'s PSNR and LPIPS. Images are shown at 128 px.</p>']
    for subset, g in df.groupby("subset", sort=False):
        out.append(f"<h3>{esc(subset)}</h3><table class=\"grid\"><thead><tr><th>target</th>"
                   + "".join(f"<th>{esc(label)}</th>" for label in labels) + "</tr></thead><tbody>")
        for image_id in sorted(set(g["image_id"])):
            target = _copy(run_dir / "targets" / f"{image_id}.png", root, f"images/targets/{image_id}.png")
            cells = [_cell(target, image_id, esc(image_id))]
            cells += [_result_cell(by_pair.get((label, image_id)), run_dir, root) for label in labels]
            out.append("<tr>" + "".join(cells) + "</tr>")
        out.append("</tbody></table>")
    return ["".join(out) + "</section>"]


def _cell(link: str | None, alt: str, caption: str) -> str:
    pic = f'<img src="{link}" alt="{esc(alt)}">' if link else '<div class="failed">image file missing</div>'
    return f"<td><figure>{pic}<figcaption>{caption}</figcaption></figure></td>"


def _result_cell(row: dict[str, Any] | None, run_dir: Path, root: Path) -> str:
    if row is None:
        return '<td><div class="failed">not run</div></td>'
    if row["status"] != "ok":
        return f'<td><div class="failed" title="{esc(row["reason"])}">failed</div>' \
               f'<figcaption>{esc(row["reason"])[:80]}</figcaption></td>'
    link = _copy(run_dir / row["recon_path"], root, f"images/{row['recon_path']}")
    caption = f"PSNR {fmt(row['psnr'], '.2f', ' dB')}<br>LPIPS {fmt(row['lpips'], '.4f')}"
    return _cell(link, f"{row['label']} reconstruction of {row['image_id']}", caption)


# ---- plots --------------------------------------------------------------------------------------------
def _figure(ncols: int, width: float = 11.0, height: float = 4.0) -> tuple[Any, Any]:
    from matplotlib.figure import Figure  # no pyplot: no global backend state, Agg when saving

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    return fig, fig.subplots(1, ncols, squeeze=False)[0]


SUBSET_COLORS = ("#7b3294", "#8c564b", "#e377c2", "#17becf", "#bcbd22")


def _method_color(df: pd.DataFrame, label: str) -> str:
    """The same colour for a method in every plot (matplotlib's cycle, in the order of the table)."""
    return f"C{list(dict.fromkeys(df['label'])).index(label) % 10}"


def _save(fig: Any, root: Path, name: str, alt: str, caption: str) -> str:
    (root / "plots").mkdir(exist_ok=True)
    fig.savefig(root / "plots" / name, format="png")
    return f'<figure class="plot"><img src="plots/{quote(name)}" alt="{esc(alt)}"><figcaption>{caption}</figcaption></figure>'


def _curves(rows: Iterable[dict[str, Any]], key: str = "loss") -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per image: (iteration, time in s, values) from the stored history summary."""
    out = []
    for r in rows:
        h = r.get("loss_history") or {}
        if key not in h or not h.get("iteration"):
            continue
        it = np.asarray(h["iteration"], dtype=float)
        total = float(r["iterations"] or it[-1] + 1)
        time = (r["time_s"] or math.nan) * (it + 1) / total
        out.append((it, time, np.array([math.nan if v is None else v for v in h[key]], dtype=float)))
    return out


def _convergence(df: pd.DataFrame, root: Path) -> str:
    out = ['<section id="convergence"><h2>Convergence</h2>']
    if df.empty:
        return out[0] + "<p>No results yet.</p></section>"
    has_psnr = any(isinstance(h, dict) and "psnr" in h for h in df["loss_history"])
    keys = ["loss"] + (["psnr"] if has_psnr else [])
    out.append("<p>Per-iteration values are the stored history (up to 200 evenly spaced iterations per image). "
               "The time of iteration t is the image's inversion time × (t+1)/T (time per image is the batch time "
               "divided by the batch size).</p>")
    if not has_psnr:
        out.append('<p class="note">Only the loss is recorded per iteration in this run, so PSNR against iteration '
                   "is not plotted; final PSNR is in the table and the grids.</p>")
    for key in keys:
        out.append(_plot_medians(df, key, root))
        for i, (label, g) in enumerate(df.groupby("label", sort=False)):
            out.append(_plot_method(label, g, key, root, f"{key}-{i}.png"))
    return "".join(out) + "</section>"


def _plot_medians(df: pd.DataFrame, key: str, root: Path) -> str:
    fig, (a, b) = _figure(2)
    for label, g in df.groupby("label", sort=False):
        curves = _curves(g.to_dict("records"), key)
        if not curves:
            continue
        n = min(len(c[2]) for c in curves)
        vals = np.stack([c[2][:n] for c in curves])
        med = np.nanmedian(vals, axis=0) if np.isfinite(vals).any() else vals[0]
        style = {"lw": 2, "marker": "o" if n <= 30 else None, "markersize": 4}
        color = _method_color(df, label)
        a.plot(curves[0][0][:n], med, label=str(label), color=color, **style)
        b.plot(np.nanmedian(np.stack([c[1][:n] for c in curves]), axis=0), med, color=color, **style)
    _axes(a, "iteration", key)
    _axes(b, "time (s)", key)
    a.legend(fontsize=8)
    fig.suptitle(f"{key}: median over images, per method")
    return _save(fig, root, f"{key}-median.png", f"{key} against iteration and time, median per method",
                 f"{esc(key)} against iteration (left) and time (right), median over each method's images.")


def _plot_method(label: str, g: pd.DataFrame, key: str, root: Path, name: str) -> str:
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
    return _save(fig, root, name, f"{label}: {key} per image", f"{esc(label)}: {esc(key)} of every image, coloured "
                 "by image subset, against iteration (left) and time (right).")


def _axes(ax: Any, xlabel: str, key: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(key)
    ax.grid(alpha=0.3)
    values = np.concatenate([np.asarray(ln.get_ydata(), float) for ln in ax.get_lines()] or [np.zeros(0)])
    values = values[np.isfinite(values)]
    if key == "loss" and values.size and values.min() > 0 and values.max() / values.min() > 20:
        ax.set_yscale("log")  # only when the loss spans more than a decade or so


def _time_quality(df: pd.DataFrame, root: Path) -> str:
    out = '<section id="time-quality"><h2>Time versus quality</h2>'
    ok = df[df["status"] == "ok"] if not df.empty else df
    if ok.empty:
        return out + "<p>No successful results yet.</p></section>"
    fig, axes = _figure(2)
    for metric, ax, arrow in (("psnr", axes[0], "↑"), ("lpips", axes[1], "↓")):
        for label, g in ok.groupby("label", sort=False):
            t = pd.to_numeric(g["time_s"], errors="coerce")
            v = pd.to_numeric(g[metric], errors="coerce")
            color = _method_color(df, label)
            ax.scatter(t, v, s=14, alpha=0.45, color=color)
            ax.scatter([t.mean()], [v.mean()], s=110, marker="D", edgecolor="black", color=color, label=f"{label} (mean)")
        ax.set_xlabel("time per image (s)")
        ax.set_ylabel(f"{metric.upper()} {arrow}")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("time per image against PSNR and LPIPS (small: images, diamond: method mean)")
    return out + _save(fig, root, "time-quality.png", "time per image against PSNR and LPIPS per method",
                       "Each small point is one image; each diamond a method's mean. Up-left is better for PSNR, "
                       "down-left for LPIPS.") + "</section>"


# ---- figures written by methods (PmSFC) and by `gib discover` --------------------------------------
def _extra_figures(run_dir: Path, root: Path) -> str:
    out = ['<section id="figures"><h2>PmSFC and discovery figures</h2>']
    found = [p for src in EXTRA_SOURCES for p in sorted((run_dir / src).glob("**/*.png")) if p.is_file()]
    if not found:
        out.append(f"<p>No figures found under {', '.join(s + '/' for s in EXTRA_SOURCES)} of the run folder. "
                   "PmSFC (and <code>gib discover</code>) write the subspace-swap figure and the permuted |S| there "
                   "when they run.</p>")
        return "".join(out) + "</section>"
    out.append('<div class="extra">')
    for p in found:
        rel = p.relative_to(run_dir).as_posix()
        link = _copy(p, root, f"extra/{rel}")
        out.append(f'<figure><img src="{link}" alt="{esc(rel)}"><figcaption>{esc(rel)}</figcaption></figure>')
    return "".join(out) + "</div></section>"


def _failures(df: pd.DataFrame) -> str:
    out = '<section id="failures"><h2>Failures</h2>'
    failed = df[df["status"] != "ok"] if not df.empty else df
    if failed.empty:
        return out + "<p>No failed (method, image) results.</p></section>"
    rows = "".join(f"<tr><td>{esc(r['label'])}</td><td>{esc(r['image_id'])}</td><td>{esc(r['reason'])}</td></tr>"
                   for r in failed.to_dict("records"))
    return out + ('<p>Failed results are excluded from the means in the table.</p><table class="plain"><thead><tr>'
                  f"<th>method</th><th>image</th><th>reason</th></tr></thead><tbody>{rows}</tbody></table></section>")
