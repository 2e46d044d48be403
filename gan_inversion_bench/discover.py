"""PmSFC stage 1 on its own: discover the channel subspaces of a generator and draw them.

:func:`discover` runs :meth:`PmSFC.prepare <gan_inversion_bench.methods.pmsfc.PmSFC.prepare>`
(training the self-expressive layer, or importing an official ``value50.pkl``; cached under
``out_dir/cache``) and writes into ``out_dir``:

* ``subspace_swap.png`` — the paper's Figure 6: for pairs (A, B) of generated images, the
  features of subspace r of one image replace those of the other and G2 decodes the result;
  the top row shows A and B, then one row per subspace with "A with B's subspace r" and
  "B with A's subspace r";
* ``S_by_cluster.png`` — |S̃| (diagonal masked) with rows and columns ordered by subspace,
  cluster boundaries drawn;
* ``loss_curves.png`` and ``loss_curves.csv`` — the terms of eq. (6) per iteration (only when
  S was trained here or loaded from the cache, not for an imported S);
* ``subspaces.json`` — split point, labels per channel, cluster sizes and the prepared state.

``gib discover`` is the command-line front end.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .generator import SplitGenerator, frozen_copy


def discover(generator: SplitGenerator, *, out_dir: str | Path, split: int | str | None = None,
             n_subspaces: int = 6, iterations: int | None = None, affinity: str = "paper",
             official_orientation: str = "inversion", s_matrix: str | None = None, seed: int = 0,
             n_pairs: int = 3, settings: dict[str, Any] | None = None, progress: Any = None) -> dict[str, Any]:
    """Run subspace discovery on ``generator`` and write the figures (module docstring) to ``out_dir``.

    ``iterations`` is PmSFC's ``discovery_iterations`` (None: its default); ``settings`` passes
    further PmSFC settings (e.g. ``{"data_weight": 0.5}``). Returns ``{"files": {name: path},
    "state": prepared_state, "labels": [C]}``.

    >>> info = discover(GENERATORS.create("pggan-tiny"), out_dir="runs/discover-tiny", iterations=50)
    >>> info["state"]["cluster_sizes"]
    """
    from .methods.pmsfc import PmSFC

    if n_pairs < 1:
        raise ValueError(f"n_pairs must be >= 1, got {n_pairs}")
    extra = dict(settings or {})
    if iterations is not None:
        extra["discovery_iterations"] = iterations
    method = PmSFC(split=split, n_subspaces=n_subspaces, affinity=affinity, official_orientation=official_orientation,
                   s_matrix=s_matrix, **extra)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    method.prepare(generator, seed=seed, cache_dir=out / "cache", progress=progress)
    files = {"subspace_swap": out / "subspace_swap.png", "S_by_cluster": out / "S_by_cluster.png"}
    swap_figure(generator, method.split_["index"], method.masks_, seed=seed, n_pairs=n_pairs,
                path=files["subspace_swap"])
    s_figure(method.S_, method.labels_, path=files["S_by_cluster"])
    if method.loss_curves_:
        files["loss_curves_png"], files["loss_curves_csv"] = out / "loss_curves.png", out / "loss_curves.csv"
        loss_figure(method.loss_curves_, files["loss_curves_png"])
        write_curves_csv(method.loss_curves_, files["loss_curves_csv"])
    state = method.prepared_state()
    files["summary"] = out / "subspaces.json"
    summary = {"generator": generator.describe(), "seed": seed, "settings": method.get_settings(), "state": state,
               "labels": method.labels_.tolist()}
    files["summary"].write_text(json.dumps(summary, indent=1, default=str) + "\n")
    return {"files": {k: str(v) for k, v in files.items()}, "state": state, "labels": method.labels_.tolist()}


@torch.no_grad()
def swap_images(generator: SplitGenerator, split: int, masks: torch.Tensor, *, seed: int,
                n_pairs: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Decoded images for the swap figure.

    Returns ``originals`` ``[2, P, 3, R, R]`` (A and B) and ``swapped`` ``[R_sub, 2, P, 3, R, R]``
    (index 0: A with B's subspace r; 1: B with A's subspace r). Latents: seeded prior draws.
    """
    G = frozen_copy(generator)
    z = G.sample_latents(2 * n_pairs, seed=seed)  # A = rows 0 … P-1, B = rows P … 2P-1
    inter = G.g1(z, split)
    F = G.features_of(inter)  # [2P, C, H, W]
    fa, fb = F[:n_pairs], F[n_pairs:]
    originals = G.g2(inter, split).view(2, n_pairs, 3, G.resolution, G.resolution)
    rows_a = torch.arange(n_pairs, device=F.device)
    rows_b = rows_a + n_pairs
    swapped = []
    for m in masks.to(F.device, F.dtype):
        m = m[None, :, None, None]  # [1, C, 1, 1]
        mixed = torch.cat([fa * (1 - m) + fb * m, fb * (1 - m) + fa * m])  # [2P, C, H, W]
        swapped.append(G.g2(G.with_features(inter, mixed, rows=torch.cat([rows_a, rows_b])), split))
    return originals.cpu(), torch.stack(swapped).view(len(masks), 2, n_pairs, 3, G.resolution, G.resolution).cpu()


def _to_rgb(img: torch.Tensor) -> np.ndarray:
    return ((img.clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy()  # [R, R, 3] in [0, 1]


def swap_figure(generator: SplitGenerator, split: int, masks: torch.Tensor, *, seed: int, n_pairs: int,
                path: str | Path) -> None:
    """The subspace-swap grid (paper Figure 6), saved as a PNG."""
    from matplotlib.figure import Figure

    originals, swapped = swap_images(generator, split, masks, seed=seed, n_pairs=n_pairs)
    n_rows, n_cols = len(masks) + 1, 2 * n_pairs
    fig = Figure(figsize=(1.4 * n_cols + 1.2, 1.4 * n_rows + 0.4))
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    sizes = masks.sum(1).tolist()
    for p in range(n_pairs):
        for side, name in enumerate("AB"):
            ax = axes[0, 2 * p + side]
            ax.imshow(_to_rgb(originals[side, p]))
            ax.set_title(f"{name}{p + 1}", fontsize=8)
        for r in range(len(masks)):
            for side, label in enumerate((f"A{p + 1}←B{p + 1}", f"B{p + 1}←A{p + 1}")):
                ax = axes[r + 1, 2 * p + side]
                ax.imshow(_to_rgb(swapped[r, side, p]))
                if r == 0:
                    ax.set_title(label, fontsize=7)
    for r in range(n_rows):
        axes[r, 0].set_ylabel("originals" if r == 0 else f"subspace {r - 1}\n({sizes[r - 1]} ch)", fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"subspace swap at split {split}: row r replaces the features of subspace r", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def s_figure(S: torch.Tensor, labels: torch.Tensor, *, path: str | Path) -> None:
    """|S̃| (diagonal masked) with rows and columns grouped by subspace, saved as a PNG."""
    from matplotlib.figure import Figure

    order = torch.argsort(labels, stable=True)
    mat = (S * (1 - torch.eye(S.shape[0]))).abs()[order][:, order].numpy()
    fig = Figure(figsize=(6, 5))
    ax = fig.subplots()
    im = ax.imshow(mat, cmap="magma", interpolation="nearest")
    bounds = np.cumsum(np.bincount(labels.numpy()))[:-1] - 0.5
    for b in bounds:
        ax.axhline(b, color="cyan", lw=0.6)
        ax.axvline(b, color="cyan", lw=0.6)
    ax.set_title("|S| (diagonal masked), channels grouped by subspace", fontsize=9)
    ax.set_xlabel("channel (by subspace)")
    ax.set_ylabel("channel (by subspace)")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def loss_figure(curves: dict[str, list[float]], path: str | Path) -> None:
    """The terms of eq. (6) against the iteration (log scale), saved as a PNG."""
    from matplotlib.figure import Figure

    names = [k for k in ("total", "feature", "data", "sparse") if curves.get(k)]
    fig = Figure(figsize=(3.2 * len(names), 3))
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    for ax, name in zip(axes, names):
        values = np.asarray(curves[name])
        ax.plot(np.arange(1, len(values) + 1), values, lw=0.8)
        if (values > 0).all():
            ax.set_yscale("log")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("iteration")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def write_curves_csv(curves: dict[str, list[float]], path: str | Path) -> None:
    """``iteration,total,feature,data,sparse`` rows (iteration counted from 1)."""
    names = [k for k in ("total", "feature", "data", "sparse") if k in curves]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["iteration", *names])
        for i, row in enumerate(zip(*(curves[k] for k in names)), start=1):
            writer.writerow([i, *(repr(float(v)) for v in row)])
