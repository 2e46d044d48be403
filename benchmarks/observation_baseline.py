"""The observation baseline of a restoration run (docs/results.md, "Restoration tasks").

For every task a run folder holds results of, the observation y = D(x) itself is scored against
the clean target x with the run's own metrics and conventions: what a method must beat to have
restored anything at all. The images and the operators' parameters (masks, noise) are rebuilt
exactly as the run built them, from the identity stored in the folder (generator, image set, run
seed) and each record's task; a folder whose inputs no longer match the hashes it stored is
refused. One Markdown row per task and image subset, in the columns of ``gib table``:

    python benchmarks/observation_baseline.py runs/tasks-digiface64
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from gan_inversion_bench import GENERATORS, stats
from gan_inversion_bench.harness import RunConfig, content_identity, observe
from gan_inversion_bench.imagesets import ImageSet, load_image_set
from gan_inversion_bench.metrics import compute_metrics, region_metrics
from gan_inversion_bench.store import ResultStore
from gan_inversion_bench.tables import load_records, task_label
from gan_inversion_bench.tasks import make_task

LABEL = "*the observation y itself*"


def _stored(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    with ResultStore(run_dir, create=False) as store:
        identity, content = store.get_meta("identity"), store.get_meta("content")
    if not isinstance(identity, dict):
        raise SystemExit(f"{run_dir}: no run identity in its database (not a run folder of gib run?)")
    return identity, content if isinstance(content, dict) else {}


def observation_records(run_dir: str | Path) -> pd.DataFrame:
    """One row per (task, image) the run has records of: PSNR, SSIM, LPIPS (and PSNR in the hole)
    of the observation against the clean target, computed as the harness computes a method's."""
    run_dir = Path(run_dir)
    df = load_records(run_dir)
    if df.empty:
        raise SystemExit(f"{run_dir}: no results")
    identity, content = _stored(run_dir)
    config = RunConfig(**{k: v for k, v in identity.items() if k in RunConfig.IDENTITY})
    generator = GENERATORS.create(config.generator, **config.generator_options).eval()
    def images() -> ImageSet:  # afresh per task: observing replaces each item's image by its observation
        return load_image_set(config.images, generator, n=config.n_generated, seed=config.seed)

    now = content_identity(config, generator, images())
    changed = sorted(i for i, h in now["images"].items() if content.get("images", {}).get(i) not in (None, h))
    if changed or content.get("generator_state") not in (None, now["generator_state"]):
        raise SystemExit(f"{run_dir}: the inputs differ from those the run stored (images {changed or 'same'}, "
                         "generator weights too?): the observations could not be rebuilt exactly")
    tasks = {json.dumps(t, sort_keys=True): t for t in df["task"] if isinstance(t, dict) and t.get("name")}
    rows = []
    for task in tasks.values():
        label = task_label(task)
        wanted = set(df.loc[df["task_label"] == label, "image_id"])
        observed = images()
        setup = observe(make_task(task["name"], task.get("settings") or {}), observed, config.seed)
        items = [it for it in observed.items if it.id in wanted]
        y = torch.stack([it.image for it in items])
        x = torch.stack([it.image if it.clean is None else it.clean for it in items])
        metrics = compute_metrics(y.clamp(-1, 1), x)
        if setup.regions:
            metrics.update(region_metrics(y.clamp(-1, 1), x, torch.stack([setup.regions[it.id] for it in items])))
        for i, it in enumerate(items):
            rows.append({"task_label": label, "image_id": it.id, "subset": it.id.split("/")[0],
                         **{k: float(v[i]) for k, v in metrics.items()}})
    return pd.DataFrame(rows)


def _cell(values: pd.Series, fmt: str) -> str:
    v = values.dropna().to_numpy(dtype=float)
    if not len(v):
        return "–"
    mean, low, high = stats.bootstrap_ci(v)  # the tables' interval (stats.DEFAULT)
    return fmt.format(mean) if math.isnan(low) else f"{fmt.format(mean)} [{fmt.format(low)}, {fmt.format(high)}]"


def markdown(obs: pd.DataFrame) -> str:
    """Per task, one row per image subset: n, PSNR, PSNR in the hole (inpainting), LPIPS, SSIM."""
    out = []
    for label, g in obs.groupby("task_label", sort=False):
        out += [f"#### {label}", "",
                "| configuration | images | n | PSNR (dB) ↑ | PSNR hole (dB) ↑ | LPIPS ↓ | SSIM ↑ |",
                "|---|---|---|---|---|---|---|"]
        for subset, s in g.groupby("subset"):
            hole = _cell(s["psnr_hole"], "{:.2f}") if "psnr_hole" in s else "–"
            out.append(f"| {LABEL} | {subset} | {len(s)} | {_cell(s['psnr'], '{:.2f}')} | {hole} | "
                       f"{_cell(s['lpips'], '{:.3f}')} | {_cell(s['ssim'], '{:.3f}')} |")
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("run_dir", help="a run folder of `gib run --task ...`")
    args = ap.parse_args(argv)
    obs = observation_records(args.run_dir)
    if obs.empty:
        print(f"{args.run_dir}: every record is plain reconstruction; there is no observation to score")
        return 0
    print(markdown(obs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
