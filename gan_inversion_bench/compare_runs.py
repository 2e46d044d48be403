"""``gib compare``: paired per-image differences of two configurations (:func:`comparison`, rendered by
:func:`comparison_text`), within one task of a folder (:func:`one_task`), across two run folders
(``--b-run OTHER``: :func:`cross_run_records`), and at an iteration along the way (``--at-iteration N``:
:func:`at_iteration`).

Two runs pair image by image only when they inverted the same things, and the run folders say
what that was by content (the ``content`` meta data every run stores: the sha256 of the
generator's weights and of every target). So the records of A (from the first folder) and of
B (from the other) are paired on the image ids whose targets have the same sha256 in both
folders, after checking that the generator's weights are the same and that both sides ran the
same task; anything else is refused with what differs. An image that both folders name but
whose content differs (another seed, a replaced file) is never paired: it is refused, not
skipped, because it means the two image sets are not the same set.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from . import stats
from .store import ResultStore
from .tables import load_records, markdown_table

#: the metrics ``gib compare`` offers: name → (label, format of a difference)
COMPARE_METRICS = {"psnr": ("PSNR (dB)", "{:+.2f}"), "ssim": ("SSIM", "{:+.4f}"), "lpips": ("LPIPS", "{:+.4f}"),
                   "ms_ssim": ("MS-SSIM", "{:+.4f}"), "psnr_starts": ("PSNR mean of starts (dB)", "{:+.2f}")}
NAN = math.nan


def _content(run_dir: Path) -> dict[str, Any]:
    with ResultStore(run_dir, create=False) as store:
        content = store.get_meta("content")
    if not isinstance(content, dict) or not isinstance(content.get("images"), dict):
        raise ValueError(f"{run_dir} stores no content identity (a run folder from before content hashes); "
                         "re-run it with this version to compare it with another folder")
    return content


def one_task(df: pd.DataFrame, task: str | None, where: str | Path = "this run") -> pd.DataFrame:
    """The records of one task: ``task`` as the tables label it (``inpaint (mask=centre, ratio=0.25)``)
    or a task name that stands for one label (``inpaint``); None where ``df`` holds a single task.
    A folder may hold several tasks, and each image then has a record per task: pairing them across
    tasks is no paired comparison, so several tasks without ``task`` raise ValueError naming them."""
    labels = sorted({str(t) for t in df["task_label"]}) if "task_label" in df else []
    if task is None:
        if len(labels) > 1:
            raise ValueError(f"{where} holds {len(labels)} tasks ({'; '.join(labels)}); pick one with --task")
        return df
    named = [t for t in labels if t == task] or [t for t in labels if t.split(" (")[0] == task]
    if len(named) != 1:
        why = "is ambiguous" if named else "is not in"
        raise ValueError(f"--task {task!r} {why} {where}; its tasks: {'; '.join(labels) or '(none: no results)'}")
    return df[df["task_label"] == named[0]]


def _side(run_dir: Path, name: str, task: str | None) -> tuple[str, pd.DataFrame]:
    """The label ``name`` stands for in ``run_dir`` (its records of one task) and its records."""
    df = load_records(run_dir)
    if df.empty:
        raise ValueError(f"no results in {run_dir} yet")
    df = one_task(df, task, run_dir)
    df = df.assign(label=stats.config_labels(df))
    label = stats.resolve_label(df, name)
    return label, df[df["label"] == label]


def _common_images(content_a: dict[str, Any], content_b: dict[str, Any], dirs: tuple[Path, Path]) -> list[str]:
    if content_a.get("generator_state") != content_b.get("generator_state"):
        raise ValueError(f"{dirs[0]} and {dirs[1]} inverted with different generator weights (sha256 "
                         f"{str(content_a.get('generator_state'))[:12]}… against "
                         f"{str(content_b.get('generator_state'))[:12]}…); their images cannot be paired")
    images_a, images_b = content_a["images"], content_b["images"]
    common = sorted(set(images_a) & set(images_b))
    differ = [i for i in common if images_a[i] != images_b[i]]
    if differ:
        raise ValueError(f"{len(differ)} image(s) with the same id differ in content between {dirs[0]} and "
                         f"{dirs[1]} (e.g. {', '.join(differ[:3])}: another seed or a replaced file); "
                         "the two image sets are not the same set")
    if not common:
        raise ValueError(f"{dirs[0]} and {dirs[1]} have no image in common")
    return common


def cross_run_records(run_a: str | Path, a: str, run_b: str | Path, b: str,
                      task: str | None = None) -> tuple[pd.DataFrame, str, str, int]:
    """The records of configuration ``a`` of ``run_a`` and ``b`` of ``run_b`` on their common images
    (module docstring), relabelled ``"<label> (<folder>)"`` so that equal labels stay apart; ``task``
    picks one task in a folder that holds several (:func:`one_task`). Returns the records, the two
    labels and the number of images the folders share."""
    dirs = (Path(run_a), Path(run_b))
    common = _common_images(_content(dirs[0]), _content(dirs[1]), dirs)
    (label_a, rows_a), (label_b, rows_b) = _side(dirs[0], a, task), _side(dirs[1], b, task)
    if set(rows_a["task_label"]) != set(rows_b["task_label"]):
        raise ValueError(f"A ran {rows_a['task_label'].iloc[0]} and B ran {rows_b['task_label'].iloc[0]}: "
                         "different tasks are not a paired comparison")
    new_a, new_b = f"{label_a} ({dirs[0]})", f"{label_b} ({dirs[1]})"
    if new_a == new_b:
        raise ValueError(f"both sides are the configuration {label_a!r} of {dirs[0]}; "
                         "compare two different configurations")
    both = pd.concat([rows_a.assign(label=new_a), rows_b.assign(label=new_b)], ignore_index=True)
    return both[both["image_id"].isin(common)].reset_index(drop=True), new_a, new_b, len(common)


def trace_value(trace: Any, key: str, iteration: int) -> float:
    """A record's ``key`` (psnr, mse, lpips) at ``iteration`` of its trace; NaN where the trace lacks it."""
    if not isinstance(trace, dict):
        return NAN
    values = trace.get(key)
    if isinstance(values, dict):  # LPIPS: measured at a few points only, keyed by the iteration
        value = values.get(str(iteration))
    else:
        value = dict(zip(trace.get("iteration") or [], values or [], strict=False)).get(iteration)
    return float(value) if isinstance(value, int | float) else NAN


def trace_iterations(df: pd.DataFrame) -> list[int]:
    """Every iteration at which some record's trace measured the quality (sorted)."""
    column = df.get("trace", pd.Series(dtype=object))
    return sorted({int(i) for t in column if isinstance(t, dict) for i in t.get("iteration") or []})


def at_iteration(df: pd.DataFrame, iteration: int) -> pd.DataFrame:
    """The records as they stood at ``iteration`` of their own runs: PSNR and MSE from each record's
    trace (quality along the way), LPIPS where the trace measured it at that point, and the other
    quality columns emptied (they are measured only at the end), so that :func:`comparison` pairs
    the methods at equal iterations. A record whose trace lacks the point has no value there (it
    drops out of the pairs). Raises ValueError when no record's trace has the point, naming the
    points there are."""
    points = trace_iterations(df)
    if iteration not in points:
        shown = ", ".join(map(str, points)) if points else "none: the records hold no trace"
        raise ValueError(f"no record's trace has iteration {iteration}; the traced iterations are: {shown}")
    traces = df["trace"]
    return df.assign(psnr=traces.map(lambda t: trace_value(t, "psnr", iteration)).astype(float),
                     mse=traces.map(lambda t: trace_value(t, "mse", iteration)).astype(float),
                     lpips=traces.map(lambda t: trace_value(t, "lpips", iteration)).astype(float),
                     **{c: NAN for c in ("ssim", "ms_ssim", "psnr_starts") if c in df})


# ---- gib compare ---------------------------------------------------------------------------------
def comparison(df: pd.DataFrame, a: str, b: str, *, metric: str = "all", subset: str = "all",
               settings: stats.BootstrapSettings = stats.DEFAULT) -> list[stats.PairedDifference]:
    """The paired comparisons A − B that ``gib compare`` prints, per subset then metric.

    ``metric``: one of :data:`COMPARE_METRICS` or ``"all"`` (those the records have values of); ``subset``: one
    image subset of A's or B's, or ``"all"``: each, then all pooled (when several). ValueError lists the valid ones.
    """
    if df.empty:
        raise ValueError("no results in this run folder yet")
    df = _with_labels(df)  # once, not per metric
    if metric != "all" and metric not in COMPARE_METRICS:
        raise ValueError(f"unknown metric {metric!r}; valid: {', '.join([*COMPARE_METRICS, 'all'])}")
    present = [m for m in COMPARE_METRICS if m in df and pd.to_numeric(df[m], errors="coerce").notna().any()]
    if metric != "all" and metric not in present:
        why = " (it exists only for runs with --restarts K > 1)" if metric == "psnr_starts" else ""
        raise ValueError(f"no {metric} values in these records{why}; the run has: {', '.join(present)}")
    results = {m: stats.paired_differences(df, a, b, m, settings) for m in ([metric] if metric != "all" else present)}
    first = next(iter(results.values()), {})
    subsets = [k for k in first if k != stats.OVERALL]  # those A or B has images of
    if subset != "all" and subset not in subsets:
        raise ValueError(f"{a} and {b} have no images of subset {subset!r}; valid: {', '.join([*subsets, 'all'])}")
    keys = [subset] if subset != "all" else subsets + ([stats.OVERALL] if len(subsets) > 1 else [])
    # under "all", the mean of starts only where both sides ran restarts (else it pairs no image)
    return [results[m][k] for k in keys for m in results if k in results[m]
            and not (metric == "all" and m == "psnr_starts" and results[m][k].differences.empty)]


def _with_labels(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with its configuration labels (:func:`~.stats.config_labels`), where it has none yet."""
    return df if df.empty or "label" in df else df.assign(label=stats.config_labels(df))


def _comparison_row(d: stats.PairedDifference) -> list[str]:
    label, fmt = COMPARE_METRICS[d.metric]
    interval = "–" if math.isnan(d.ci_low) else f"[{fmt.format(d.ci_low)}, {fmt.format(d.ci_high)}]"
    exact = d.n - len(d.finite)  # pairs with an exact reconstruction (PSNR +inf): no finite difference
    n = f"{d.n} ({exact} exact)" if exact else str(d.n)
    return [d.subset, label, n, "–" if math.isnan(d.mean) else fmt.format(d.mean), interval,
            f"{d.wins} / {d.ties} / {d.losses}", stats.p_text(d.p_value)]


def comparison_text(df: pd.DataFrame, a: str, b: str, *, metric: str = "all", subset: str = "all",
                    settings: stats.BootstrapSettings = stats.DEFAULT) -> str:
    """``gib compare``'s output: a Markdown table of :func:`comparison` and what it means."""
    df = _with_labels(df)
    found = comparison(df, a, b, metric=metric, subset=subset, settings=settings)
    if not found:
        return f"nothing to compare: no {metric} values in this run"
    a, b = found[0].a, found[0].b
    head = ["images", "metric", "n", "mean A − B", f"{settings.confidence * 100:g} % CI", "wins / ties / losses", "p"]
    notes = [f"A = {a}, B = {b}: per-image differences A − B on the images both have (status ok in both).",
             "win: A better (PSNR, SSIM, MS-SSIM higher; LPIPS lower); tie: exactly equal; loss: B better.",
             f"CI: {settings.describe('images')}; – : fewer than 2 images, no interval.",
             f"p: {settings.describe_test()}."]
    if any(len(d.finite) < d.n for d in found):
        notes.append("exact: pairs where one of A and B reconstructs its target exactly (MSE 0, PSNR +inf) and the "
                     "other does not; they count in wins / ties / losses, and the mean, CI and p are over the other "
                     "pairs (where both are exact, the difference is 0).")
    if any(d.subset == stats.OVERALL for d in found):
        notes.append(f"images '{stats.OVERALL}': every subset pooled.")
    notes += _unpaired(df, found)
    return markdown_table(head, [_comparison_row(d) for d in found]) + "\n\n" + "\n".join(f"- {x}" for x in notes)


def _unpaired(df: pd.DataFrame, found: list[stats.PairedDifference]) -> list[str]:
    """How many of the images that A or B has (in the subsets shown) are in no pair: failed or missing on one side,
    or without the metric's value. n counts pairs only, so without this a failure would pass unseen."""
    scope = stats.OVERALL if any(d.subset == stats.OVERALL for d in found) else found[0].subset
    ids = {i for i in df.loc[df["label"].isin([found[0].a, found[0].b]), "image_id"]
           if scope == stats.OVERALL or str(i).split("/")[0] == scope}
    left = len(ids) - max(d.n for d in found if d.subset == scope)
    return [f"not paired: at least {left} of the {len(ids)} images that A or B has (failed or missing on one side, "
            "or without the metric's value); n counts the pairs."] if left > 0 else []
