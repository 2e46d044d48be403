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

``gib discover`` (:data:`discover_command`, contributed to the ``gib`` command line through
``PmSFC.commands``) is the command-line front end; with ``--out RUN_DIR/discover`` the figures
appear in that run's HTML report (``PmSFC.report_artifacts``).
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gan_inversion_bench.generator import SplitGenerator, frozen_copy
from gan_inversion_bench.method import ProgressFn
from gan_inversion_bench.safe_paths import WHY, UnsafePathError, refuse_links, write_atomic

from .pmsfc import PmSFC


def discover(generator: SplitGenerator, *, out_dir: str | Path, seed: int = 0, n_pairs: int = 3,
             progress: ProgressFn | None = None, **settings: Any) -> dict[str, Any]:
    """Run subspace discovery on ``generator`` and write the figures (module docstring) to ``out_dir``.

    ``settings`` are PmSFC settings (``split``, ``n_subspaces``, ``discovery_iterations``,
    ``affinity``, ``s_matrix``, ...; defaults: PmSFC's). Returns ``{"files": {name: path},
    "state": prepared_state, "labels": [C]}``.

    >>> info = discover(GENERATORS.create("pggan-tiny"), out_dir="runs/discover-tiny", discovery_iterations=50)
    >>> info["state"]["cluster_sizes"]
    """
    if n_pairs < 1:
        raise ValueError(f"n_pairs must be >= 1, got {n_pairs}")
    method = PmSFC(**settings)
    out = Path(out_dir).expanduser()
    if out.is_symlink():  # e.g. RUN_DIR/discover inside a run folder from someone else
        raise UnsafePathError(f"{out}: refused: the output folder is a symlink (not followed); {WHY}")
    out.mkdir(parents=True, exist_ok=True)
    refuse_links(out, ["cache"])  # cache entries themselves are replaced, never written through
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
    write_atomic(files["summary"], (json.dumps(summary, indent=1, default=str) + "\n").encode())
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
    _save_figure(fig, path)


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
    _save_figure(fig, path)


def loss_figure(curves: dict[str, list[float]], path: str | Path) -> None:
    """The terms of eq. (6) against the iteration (log scale), saved as a PNG."""
    from matplotlib.figure import Figure

    names = [k for k in ("total", "feature", "data", "sparse") if curves.get(k)]
    fig = Figure(figsize=(3.2 * len(names), 3))
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    for ax, name in zip(axes, names, strict=True):
        values = np.asarray(curves[name])
        ax.plot(np.arange(1, len(values) + 1), values, lw=0.8)
        if (values > 0).all():
            ax.set_yscale("log")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("iteration")
    fig.tight_layout()
    _save_figure(fig, path)


def write_curves_csv(curves: dict[str, list[float]], path: str | Path) -> None:
    """``iteration,total,feature,data,sparse`` rows (iteration counted from 1)."""
    names = [k for k in ("total", "feature", "data", "sparse") if k in curves]
    f = io.StringIO(newline="")
    writer = csv.writer(f)
    writer.writerow(["iteration", *names])
    for i, row in enumerate(zip(*(curves[k] for k in names), strict=True), start=1):
        writer.writerow([i, *(repr(float(v)) for v in row)])
    write_atomic(Path(path), f.getvalue().encode())


def _save_figure(fig: Any, path: str | Path) -> None:
    """The figure as a PNG, written through :func:`write_atomic` (a link at ``path`` is refused)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    write_atomic(Path(path), buf.getvalue())


# ---- gib discover ------------------------------------------------------------------------------------
def _discover_options(fn: Any) -> Any:
    import click

    options = [
        click.option("--generator", "-g", default="dcgan-digiface64", show_default=True,
                     help="Registered generator name."),
        click.option("--weights", type=click.Path(dir_okay=True), default=None,
                     help="Local checkpoint for the generator."),
        click.option("--gen-opt", multiple=True, metavar="KEY=VALUE",
                     help="Generator option (repeatable), e.g. tiny=true."),
        click.option("--split", default=None,
                     help="Split point, index or name (default: PmSFC's per-generator default)."),
        click.option("--subspaces", type=int, default=6, show_default=True, help="Number of subspaces R."),
        click.option("--iterations", type=int, default=None, help="Discovery iterations (default: PmSFC's)."),
        click.option("--affinity", type=click.Choice(["paper", "official", "official-inversion", "official-discovery"]),
                     default="paper", show_default=True,
                     help="paper: (|S|+|S^T|)/2; official: the release's post-processing (inversion orientation, "
                          "as PmSFC.py; official-discovery: as discover_subspace.py)."),
        click.option("--s-matrix", type=click.Path(exists=True, dir_okay=False), default=None,
                     help="Import an official value50.pkl instead of training S."),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--out", type=click.Path(file_okay=False), default=None,
                     help="Output folder (default: runs/discover_<generator>; RUN_DIR/discover puts the figures in "
                          "that run's report). S is cached in OUT/cache."),
        click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1, ..."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _discover_cli(**o: Any) -> None:
    """PmSFC stage 1 alone: learn S, cluster the channels, draw the subspace-swap figure."""
    import click

    from gan_inversion_bench.cli_common import build_generator, slug

    for name in ("subspaces", "iterations"):
        if o[name] is not None and o[name] < 1:
            raise click.BadParameter(f"must be >= 1, got {o[name]}", param_hint=f"--{name}")
    G = build_generator(o["generator"], o["weights"], o["gen_opt"], o["device"])
    kind, _, orientation = o["affinity"].partition("-")
    settings: dict[str, Any] = {"n_subspaces": o["subspaces"], "affinity": kind,
                                "official_orientation": orientation or "inversion", "s_matrix": o["s_matrix"]}
    if o["split"] is not None:
        settings["split"] = int(o["split"]) if o["split"].lstrip("-").isdigit() else o["split"]
    if o["iterations"] is not None:
        settings["discovery_iterations"] = o["iterations"]
    out_dir = Path(o["out"]) if o["out"] else Path("runs") / slug(f"discover_{o['generator']}")
    info = discover(G, out_dir=out_dir, seed=o["seed"], **settings)
    state = info["state"]
    split_info = state["split"]
    click.echo(f"split {split_info['index']} ({split_info['name']}, {'x'.join(map(str, split_info['shape']))}); "
               f"affinity {state['affinity']}; S {state['s_source']}")
    click.echo(f"cluster sizes: {state['cluster_sizes']}")
    if state["final_losses"]:
        click.echo("final losses: " + ", ".join(f"{k} {v:.4g}" for k, v in state["final_losses"].items()))
    for name, path in info["files"].items():
        click.echo(f"{name}: {path}")


def _make_command() -> Any:
    import click

    from gan_inversion_bench.cli_common import friendly_errors

    return click.command("discover", help=_discover_cli.__doc__)(_discover_options(friendly_errors(_discover_cli)))


#: the ``gib discover`` click command (registered through ``PmSFC.commands``)
discover_command = _make_command()
