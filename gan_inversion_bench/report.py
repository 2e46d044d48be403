"""A self-contained static HTML report of a run folder: ``RUN_DIR/report/index.html``.

Everything the page shows lives in ``RUN_DIR/report/``: the page (inline CSS, no scripts, no
external resources), copies of the target and reconstruction PNGs under ``images/``, the plots
(matplotlib, Agg, no pyplot) under ``plots/`` and the files methods contribute under ``methods/``.
Links are relative, so the folder can be moved, zipped or opened from disk offline.

Sections: the comparison table with the metric conventions (from :mod:`tables`), a grid per
image subset (target, then each method's reconstruction with its PSNR and LPIPS), convergence
(loss against iteration and against time, where the time of iteration t is the image's time ×
(t+1)/T), time against quality, method figures, and the failures.

The page is a jinja2 template (inline below) with autoescaping on: every value from the run
folder (method names, settings, failure reasons, captions) is escaped.

Method figures come from a hook, not from known folders: for each method with results, if the
method is installed here, ``METHODS.get(name).report_artifacts(run_dir)`` lists
:class:`~gan_inversion_bench.method.Artifact` s (a path relative to the run folder and a
caption). A run folder may come from someone else, so an artifact is refused (and named in the
page) when its path is absolute, contains ``..``, passes through a symlink, resolves outside the
run folder or is not a regular file; the file is copied without following a final symlink. The
same rule (:mod:`gan_inversion_bench.safe_paths`) applies to the target and reconstruction PNGs
named by the database (``recon_path``, image ids): a crafted row is listed under the grids as not
shown, never followed. The report folder replaces ``RUN_DIR/report`` (a symlink there is refused,
never deleted through); ``gib report --out DIR`` writes it elsewhere, e.g. for a read-only run folder.
"""
from __future__ import annotations

import datetime as _dt
import math
import os
import re
import shutil
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import jinja2
import pandas as pd

from . import __version__, tables
from .method import Artifact
from .report_plots import convergence, quality_vs_compute, time_quality
from .safe_paths import (
    WHY,
    UnsafePathError,
    new_locked_folder,
    open_regular,
    problem,
    remove_tree,
    remove_unlocked_folders,
)
from .tasks import TaskError, make_task

REPORT_DIR = "report"
#: the file that marks a folder as a report (``gib report --out`` replaces only such a folder)
MARKER = ".gib-report"
#: one stored result as ``DataFrame.to_dict("records")`` gives it (keys: the column names)
Record = dict[Hashable, Any]
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".gif", ".webp", ".svg"})  #: shown inline; others linked

# ruff: disable[E501] - the stylesheet and the page template are markup kept one rule / element per line
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
.extra { display: flex; flex-wrap: wrap; gap: 1em; } .extra img, .extra figcaption { max-width: 360px; }
.extra img { border: 1px solid #ddd; }
footer { margin-top: 3em; color: #777; font-size: 0.8em; }
"""

NAV = (("comparison", "Table"), ("grids", "Reconstructions"), ("convergence", "Convergence"),
       ("quality-compute", "Quality vs compute"), ("time-quality", "Time vs quality"), ("figures", "Method figures"),
       ("failures", "Failures"))

# ---- the template (autoescaped: only the template text itself is markup) ------------------------------
_PAGE = """{% macro plot(f) -%}
<figure class="plot"><img src="{{ f.link }}" alt="{{ f.alt }}"><figcaption>{{ f.caption }}</figcaption></figure>
{%- endmacro %}
{% macro cell(c) -%}
{% if c.kind == "not run" %}<td><div class="failed">not run</div></td>
{%- elif c.kind == "failed" %}<td><div class="failed" title="{{ c.reason }}">failed</div><figcaption>{{ c.reason[:80] }}</figcaption></td>
{%- else %}<td><figure>{% if c.link %}<img src="{{ c.link }}" alt="{{ c.alt }}">{% else %}<div class="failed">image file missing</div>{% endif %}<figcaption>
{%- for line in c.lines %}{{ line }}{% if not loop.last %}<br>{% endif %}{% endfor %}</figcaption></figure></td>
{%- endif %}
{%- endmacro %}
{% macro pairs(items, bold) -%}
{% for k, v in items %}{% if bold %}<b>{{ k }}={{ v }}</b>{% else %}{{ k }}={{ v }}{% endif %}{% if not loop.last %}, {% endif %}{% endfor %}
{%- endmacro %}
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>GAN inversion report: {{ name }}</title>
<style>{% raw %}""" + CSS + """{% endraw %}</style>
</head>
<body>
<h1>GAN inversion report: {{ name }}</h1>
<nav>{% for id, title in nav %}<a href="#{{ id }}">{{ title }}</a>{% if not loop.last %} {% endif %}{% endfor %}</nav>
{% if header %}<table class="plain meta">{% for k, v in header %}<tr><th>{{ k }}</th><td>{{ v }}</td></tr>{% endfor %}</table>
{% else %}<p class="meta">No results yet in this run folder.</p>
{% endif %}
<section id="comparison"><h2>Comparison</h2>
{% if not comparison %}<p>No results yet.</p>
{% else %}{% set c = comparison %}<table class="comparison"><thead><tr>{% for h in c.header %}<th>{{ h }}</th>{% endfor %}</tr></thead><tbody>
{% for r in c.rows %}<tr>{% for v in r %}<td>{{ v }}</td>{% endfor %}</tr>
{% endfor %}</tbody></table>
<ul>{% for line in c.footer %}<li>{{ line }}</li>{% endfor %}</ul>
<table class="plain meta"><thead><tr><th>label</th><th>method</th><th>settings (bold: differs between runs of the same method)</th></tr></thead><tbody>
{% for s in c.settings %}<tr><td>{{ s.label }}</td><td>{{ s.method }} v{{ s.version }}</td><td>{{ pairs(s.differs, true) }}{% if s.differs and s.rest %}; {% endif %}{{ pairs(s.rest, false) }}</td></tr>
{% endfor %}</tbody></table>
<details><summary>All metric conventions</summary><dl>{% for k, v in c.conventions.items() %}<dt>{{ k }}</dt><dd>{{ v }}</dd>{% endfor %}</dl></details>
{% endif %}</section>
<section id="grids"><h2>Reconstructions</h2>
{% if not grids %}<p>No results yet.</p>
{% else %}<p>Target, then each method's reconstruction (the clamped image that was scored), with that image's PSNR and LPIPS. Images are shown at 128 px.</p>
{% for g in grids %}<h3>{{ g.subset }}</h3><table class="grid"><thead><tr><th>target</th>{% for label in g.labels %}<th>{{ label }}</th>{% endfor %}</tr></thead><tbody>
{% for row in g.rows %}<tr>{% for c in row %}{{ cell(c) }}{% endfor %}</tr>
{% endfor %}</tbody></table>
{% endfor %}{% endif %}{% if refused_images %}<p class="note">Not shown (a report only copies regular files inside the run folder, and its database named these):</p><ul>{% for path, why in refused_images %}<li><code>{{ path }}</code>: {{ why }}</li>{% endfor %}</ul>
{% endif %}</section>
<section id="convergence"><h2>Convergence</h2>
{% if not convergence %}<p>No results yet.</p>
{% else %}<p>Per-iteration values are the stored history (up to 200 evenly spaced iterations per image). The time of iteration t is the image's inversion time × (t+1)/T (time per image is the batch time divided by the batch size).</p>
{% if not convergence.has_psnr %}<p class="note">Only the loss is recorded per iteration in this run, so PSNR against iteration is not plotted; final PSNR is in the table and the grids.</p>
{% endif %}{% for f in convergence.plots %}{{ plot(f) }}
{% endfor %}{% endif %}</section>
<section id="quality-compute"><h2>Quality versus compute</h2>
{% if quality_compute %}{{ plot(quality_compute) }}{% else %}<p>No traced results in this run (quality along the way is recorded for methods that report trace points).</p>{% endif %}
</section>
<section id="time-quality"><h2>Time versus quality</h2>
{% if time_quality %}{{ plot(time_quality) }}{% else %}<p>No successful results yet.</p>{% endif %}
</section>
<section id="figures"><h2>Method figures</h2>
{% if not method_figures %}<p>No method contributed figures. A method lists the files it wrote for the report with its <code>report_artifacts(run_dir)</code> hook.</p>
{% endif %}{% for g in method_figures %}<h3>{{ g.method }}</h3>
{% if g.note %}<p class="note">{{ g.note }}</p>
{% endif %}{% if g.shown %}<div class="extra">{% for a in g.shown %}<figure>{% if a.image %}<img src="{{ a.link }}" alt="{{ a.caption }}">{% else %}<a href="{{ a.link }}">{{ a.path }}</a>{% endif %}<figcaption>{{ a.caption }}<br><code>{{ a.path }}</code></figcaption></figure>{% endfor %}</div>
{% endif %}{% if g.refused %}<p class="note">Not shown (a report only copies regular files inside the run folder):</p><ul>{% for path, why in g.refused %}<li><code>{{ path }}</code>: {{ why }}</li>{% endfor %}</ul>
{% endif %}{% endfor %}{% if not_installed %}<p class="meta">Not installed here, so their figures (if any) cannot be listed: {{ not_installed|join(", ") }}.</p>
{% endif %}</section>
<section id="failures"><h2>Failures</h2>
{% if not failures %}<p>No failed (method, image) results.</p>
{% else %}<p>Failed results are excluded from the means in the table.</p><table class="plain"><thead><tr><th>method</th><th>image</th><th>reason</th></tr></thead><tbody>
{% for label, image, reason in failures %}<tr><td>{{ label }}</td><td>{{ image }}</td><td>{{ reason }}</td></tr>
{% endfor %}</tbody></table>
{% endif %}</section>
<footer>Written by gan_inversion_bench {{ version }} (<code>gib report</code>) on {{ when }} from the run's results.sqlite. This folder is self-contained.</footer>
</body>
</html>
"""
# ruff: enable[E501]

_ENV = jinja2.Environment(loader=jinja2.DictLoader({"page": _PAGE}), autoescape=True,
                          undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


# ---- what the templates show --------------------------------------------------------------------------
@dataclass(frozen=True)
class Cell:
    """One cell of a reconstruction grid."""
    kind: Literal["image", "failed", "not run"]
    link: str | None = None
    alt: str = ""
    lines: tuple[str, ...] = ()
    reason: str = ""


@dataclass(frozen=True)
class Shown:
    """A method artifact copied into the report folder."""
    link: str
    path: str
    caption: str
    image: bool


@dataclass
class MethodFigures:
    """The artifacts of one method: shown, refused (path, why) and a note (e.g. the hook failed)."""
    method: str
    shown: list[Shown] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)
    note: str = ""


def fmt(value: Any, spec: str, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return format(float(value), spec) + unit


class ReportError(RuntimeError):
    """The report could not be written; the message names the folder and what to do."""


def write_report(run_dir: str | Path, out: str | Path | None = None,
                 echo: Callable[[str], None] | None = None) -> Path:
    """Write ``RUN_DIR/report/`` (replacing an earlier one), or the folder ``out``, and return the
    path of ``index.html``.

    The report is built in a new temporary folder next to its destination and renamed into place;
    the temporary folders of earlier reports that were killed are deleted first
    (:func:`remove_stale_temporaries`; ``echo`` says how many). ``out`` (``gib report --out DIR``)
    is for a run folder that cannot (read-only) or should not be written into; it must not exist,
    be empty, or hold an earlier report (:data:`MARKER`). A symbolic link in the destination's
    place is refused, never deleted or written through."""
    run_dir = Path(run_dir)
    df = tables.load_records(run_dir)  # StoreError if this is not a run folder
    final = run_dir / REPORT_DIR if out is None else Path(out).expanduser()
    _check_destination(final, own=out is None)
    hint = "; use --out DIR to write it elsewhere" if out is None else ""
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        removed = remove_stale_temporaries(final)
        if removed and echo:
            echo(f"removed {removed} temporary folder(s) left in {final.parent} by an earlier report that was killed")
        tmp, lock = new_locked_folder(final.parent, f".{final.name}-", ".tmp")
    except OSError as e:
        raise ReportError(f"cannot write the report into {final}: {e}{hint}") from None
    try:
        os.chmod(tmp, 0o755)  # mkdtemp's 0700 would hide a report served from this folder
        (tmp / MARKER).write_text("written by gib report; `gib report --out` may replace this folder\n")
        if not df.empty:
            df = df.assign(label=tables._label(df))
        (tmp / "index.html").write_text(render(_context(df, run_dir, tmp)), encoding="utf-8")
        remove_tree(final)  # a link there was refused above, and is refused again here
        os.replace(tmp, final)
    except OSError as e:
        raise ReportError(f"cannot write the report into {final}: {e}{hint}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # a folder this call created (mkdtemp)
        os.close(lock)
    return final / "index.html"


def remove_stale_temporaries(final: Path) -> int:
    """Delete the temporary folders that reports into ``final`` left next to it when they were
    killed (``RUN/.report-XXXXXXXX.tmp``) and return how many: real folders directly inside
    ``final.parent``, named as :func:`write_report` names them, holding nothing or a report's
    :data:`MARKER`, and not locked by a report being written now (a link is neither followed nor
    deleted: :func:`~gan_inversion_bench.safe_paths.remove_unlocked_folders`)."""
    pattern = re.compile(re.escape(f".{final.name}-") + r"[a-z0-9_]{8}" + re.escape(".tmp"))
    return remove_unlocked_folders(final.parent, pattern, lambda names: not names or MARKER in names)


def _check_destination(final: Path, own: bool) -> None:
    """Refuse a link or a non-folder in the report's place and, for ``--out``, a folder that holds
    something else than an earlier report (replacing it would delete it)."""
    if final.is_symlink():
        raise UnsafePathError(f"{final}: refused: a symlink (not followed: the report folder is replaced as a whole"
                              f"); {WHY}; remove the link or use --out DIR")
    if final.exists() and not final.is_dir():
        raise ReportError(f"{final}: refused: not a folder; use --out DIR to write the report elsewhere")
    if not own and final.is_dir() and not (final / MARKER).is_file() and any(final.iterdir()):
        raise ReportError(f"{final} exists and holds something else than an earlier report (no {MARKER} file); "
                          f"choose a new or empty folder for --out")


def render(context: dict[str, Any]) -> str:
    """The page for a context as built by :func:`write_report` (autoescaped)."""
    return _ENV.get_template("page").render(**context)


def _context(df: pd.DataFrame, run_dir: Path, root: Path) -> dict[str, Any]:
    figures, not_installed = _method_figures(df, run_dir, root)
    refused: list[tuple[str, str]] = []  # image paths from the database that were not followed
    return {"name": run_dir.resolve().name, "nav": NAV, "version": __version__,
            "when": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "header": _header(df, run_dir), "comparison": _comparison(df),
            "grids": _grids(df, run_dir, root, refused), "refused_images": refused,
            "convergence": convergence(df, root), "time_quality": time_quality(df, root),
            "quality_compute": quality_vs_compute(df, root),
            "method_figures": figures, "not_installed": not_installed, "failures": _failures(df)}


def _header(df: pd.DataFrame, run_dir: Path) -> list[tuple[str, str]]:
    if df.empty:
        return []
    first = df.iloc[0]
    gen = first["generator"] or {}
    return [("Generator", f"{gen.get('name')} ({gen.get('resolution')}², weights: {gen.get('weights')}; "
                          f"licence: {gen.get('licence')})"),
            ("Image set", str(first["image_set"])), ("Device", "; ".join(sorted(set(df["device"].dropna())))),
            ("Code", "; ".join(sorted(set(df["code_revision"].dropna())))),
            ("Results", f"{len(df)} (method, image) pairs, {int((df['status'] != 'ok').sum())} failed"),
            ("Run folder", str(run_dir.resolve()))]


def _comparison(df: pd.DataFrame) -> dict[str, Any] | None:
    s = tables.summary(df)
    if s.empty:
        return None
    header, rows = tables._display(s, ("↑", "↓"))
    return {"header": header, "rows": rows, "footer": tables.footer(df), "settings": _settings(df),
            "conventions": df.iloc[0]["metric_conventions"] or {}}


def _settings(df: pd.DataFrame) -> list[dict[str, Any]]:
    """Which settings each method label stands for; settings that differ between labels come first."""
    keys = df.drop_duplicates("label")[["label", "method", "method_version", "method_key", "method_settings"]]
    records = keys.to_dict("records")
    out = []
    for r in records:
        others = [o["method_settings"] or {} for o in records if o["method"] == r["method"]]
        settings = r["method_settings"] or {}
        differs = [k for k in settings if any(o.get(k) != settings[k] for o in others)]
        out.append({"label": r["label"], "method": r["method"], "version": r["method_version"],
                    "differs": [(k, repr(settings[k])) for k in differs],
                    "rest": [(k, repr(v)) for k, v in settings.items() if k not in differs]})
    return out


# ---- reconstruction grids ------------------------------------------------------------------------
def _copy(run_dir: Path, rel: str, root: Path, dst: str, refused: list[tuple[str, str]]) -> str | None:
    """Copy the run folder's file ``rel`` (a path from the database: checked, never followed through a
    link) to ``root/dst``; the URL-quoted link, or None if missing or refused (then noted in ``refused``)."""
    why = problem(run_dir, rel)
    if not why:
        if not (run_dir / rel).is_file():
            return None
        try:
            _copy_no_follow(run_dir / rel, root / dst)
            return quote(dst)
        except (OSError, UnsafePathError) as e:
            why = f"could not be copied ({e})"
    refused.append((rel, why))
    return None


def _grids(df: pd.DataFrame, run_dir: Path, root: Path, refused: list[tuple[str, str]]) -> list[dict[str, Any]]:
    if df.empty:
        return []
    df = tables.with_task_label(df)
    by_pair = {(r["task_label"], r["label"], r["image_id"]): r for r in df.to_dict("records")}
    out = []
    for (task, subset), g in df.groupby(["task_label", "subset"], sort=False):
        labels = list(dict.fromkeys(g["label"]))
        observations = _observation_folder(g)
        rows = []
        for image_id in sorted(set(g["image_id"])):
            rel = f"targets/{image_id}.png"
            target = _copy(run_dir, rel, root, f"images/{rel}", refused)
            cells = [Cell("image", target, str(image_id), (str(image_id),))]
            if observations:
                rel = f"{observations}/{image_id}.png"
                cells.append(Cell("image", _copy(run_dir, rel, root, f"images/{rel}", refused), "observation"))
            cells += [_result_cell(by_pair.get((task, label, image_id)), run_dir, root, refused) for label in labels]
            rows.append(cells)
        title = subset if task == "reconstruct" else f"{task}: {subset}"
        out.append({"subset": title, "labels": ["observation y = D(x)"] * bool(observations) + labels, "rows": rows})
    return out


def _observation_folder(g: pd.DataFrame) -> str | None:
    """``observations/<task key>`` of a restoration task's records (None: plain reconstruction)."""
    task = g["task"].iloc[0] if "task" in g else None
    if not isinstance(task, dict):
        return None
    try:
        return f"observations/{make_task(str(task.get('name')), task.get('settings') or {}).key()}"
    except (TaskError, TypeError):  # a task of a newer version or a crafted row: no observation column
        return None


def _result_cell(row: Record | None, run_dir: Path, root: Path, refused: list[tuple[str, str]]) -> Cell:
    if row is None:
        return Cell("not run")
    if row["status"] != "ok":
        return Cell("failed", reason=str(row["reason"] or ""))
    rel = str(row["recon_path"] or "")
    link = _copy(run_dir, rel, root, f"images/{rel}", refused)
    lines = (f"PSNR {fmt(row['psnr'], '.2f', ' dB')}", f"LPIPS {fmt(row['lpips'], '.4f')}")
    return Cell("image", link, f"{row['label']} reconstruction of {row['image_id']}", lines)


# ---- figures contributed by methods (InversionMethod.report_artifacts) ---------------------------------
def _method_figures(df: pd.DataFrame, run_dir: Path, root: Path) -> tuple[list[MethodFigures], list[str]]:
    """The artifacts of every method with results (copied into ``root/methods/``), and the
    methods that are not installed here."""
    from .registry import METHODS

    groups: list[MethodFigures] = []
    not_installed: list[str] = []
    for i, name in enumerate(dict.fromkeys(df["method"]) if not df.empty else []):
        name = str(name)
        if name not in METHODS:
            not_installed.append(name)
            continue
        try:  # a (third-party) method or hook must not break the report
            hook = getattr(METHODS.get(name), "report_artifacts", None)
            artifacts = list(hook(run_dir)) if callable(hook) else []
        except Exception as e:  # noqa: BLE001 - shown in the page instead
            groups.append(MethodFigures(name, note=f"report_artifacts failed: {type(e).__name__}: {e}"))
            continue
        if artifacts:
            slug = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "method"
            groups.append(_show_artifacts(name, f"methods/{i}-{slug}", artifacts, run_dir, root))
    return groups, not_installed


def _show_artifacts(name: str, folder: str, artifacts: list[Any], run_dir: Path, root: Path) -> MethodFigures:
    group = MethodFigures(name)
    run_root = run_dir.resolve()
    for a in artifacts:
        src, why = check_artifact(run_root, a)
        shown_path = str(getattr(a, "path", a))
        if src is None:
            group.refused.append((shown_path, why))
            continue
        posix = Path(a.path).as_posix()
        try:
            _copy_no_follow(src, root / folder / posix)
        except (OSError, UnsafePathError) as e:  # e.g. replaced by a symlink since the check
            group.refused.append((shown_path, f"could not be copied ({e})"))
            continue
        image = src.suffix.lower() in IMAGE_SUFFIXES
        group.shown.append(Shown(quote(f"{folder}/{posix}"), posix, str(a.caption), image))
    return group


def check_artifact(run_root: Path, artifact: Any) -> tuple[Path | None, str]:
    """``(real path, "")`` if ``artifact`` may be copied into the report, else ``(None, why not)``.
    ``run_root`` is the resolved run folder. Refused (:func:`~.safe_paths.problem`): anything but
    an :class:`Artifact`, absolute paths, ``..``, any symlink on the way (none is followed), a real
    path outside ``run_root``, and anything but a regular file."""
    if not isinstance(artifact, Artifact) or not isinstance(artifact.path, (str, os.PathLike)):
        return None, f"not an Artifact with a path ({type(artifact).__name__})"
    why = problem(run_root, artifact.path)
    if why:
        return None, f"refused: {why}"
    real = (run_root / artifact.path).resolve()
    if not real.is_file():
        return None, "not found (or not a regular file)"
    return real, ""


def _copy_no_follow(src: Path, dst: Path) -> None:
    """Copy the regular file ``src`` to ``dst`` (inside the report's new folder), refusing
    (:class:`~.safe_paths.UnsafePathError`) if ``src`` became a symlink since it was checked."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open_regular(src) as f, open(dst, "wb") as out:
        shutil.copyfileobj(f, out)


def _failures(df: pd.DataFrame) -> list[tuple[str, str, str]]:
    failed = df[df["status"] != "ok"] if not df.empty else df
    return [(str(r["label"]), str(r["image_id"]), str(r["reason"])) for r in failed.to_dict("records")]
