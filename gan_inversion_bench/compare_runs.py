"""Paired comparisons across two run folders (``gib compare RUN A B --b-run OTHER``), and at an
iteration along the way (``--at-iteration N``: :func:`at_iteration`).

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
from .tables import load_records

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
    quality columns emptied (they are measured only at the end), so that ``tables.comparison`` pairs
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
