"""PmSFC stage 1, subspace discovery: the self-expressive layer S and its clustering into channel
subspaces (Li et al., AAAI 2021, eqs. (4)-(6), Algorithm 1; seed-methods.md §4), plus the cache
files and the import of an official ``value50.pkl``. :class:`~gan_inversion_bench.methods.pmsfc.PmSFC`
uses these in ``prepare``; ``gib discover`` (:mod:`~gan_inversion_bench.methods.pmsfc_discover`)
draws them.
"""
from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gan_inversion_bench.generator import SplitGenerator
from gan_inversion_bench.method import ProgressFn
from gan_inversion_bench.method_tools import make_optimizer
from gan_inversion_bench.safe_paths import torch_load_cached, torch_save_atomic
from gan_inversion_bench.weights import CheckpointError, load_numpy_pickle

AFFINITIES = ("paper", "official")
ORIENTATIONS = ("inversion", "discovery")
#: the terms of eq. (6) that Algorithm 1 records per iteration (the loss curves)
CURVES = ("total", "feature", "data", "sparse")


@dataclass(frozen=True)
class DiscoveryConfig:
    """The settings of Algorithm 1 (PmSFC's ``discovery_*``, ``data_weight``, ``sparsity_weight``, ``s_init``)."""

    iterations: int
    batch: int
    lr: float
    optimizer: str
    data_weight: float
    sparsity_weight: float
    s_init: float


# ---- stage 1: the self-expressive layer ----------------------------------------------------------

def masked(S: Tensor) -> Tensor:
    """``S ⊙ (1 − I)``: the self-expressive matrix as used (diagonal forced to zero)."""
    return S * (1 - torch.eye(S.shape[0], device=S.device, dtype=S.dtype))


def self_expression(S: Tensor, F: Tensor) -> Tensor:
    """``T(S̃ · flatten(F))``: every channel rebuilt from the others.

    ``F``: ``[B, C, H, W]``; flattened channel-major to ``[C, B·H·W]``; returns ``[B, C, H, W]``.
    """
    b, c, h, w = F.shape
    flat = F.transpose(0, 1).reshape(c, b * h * w)  # [C, B·H·W]
    return (masked(S) @ flat).view(c, b, h, w).transpose(0, 1)  # [B, C, H, W]


def discovery_losses(G: SplitGenerator, split: int, S: Tensor, z: Tensor, data_weight: float) -> dict[str, Tensor]:
    """The three terms of eq. (6) on one batch of latents ``z`` ``[B, latent]`` (means, as the code)."""
    with torch.no_grad():
        inter = G.g1(z, split)
        F = G.features_of(inter)  # [B, C, H, W]
        target = G.g2(inter, split) if data_weight else None  # [B, 3, R, R]
    rebuilt = self_expression(S, F)
    out = {"feature": (F - rebuilt).pow(2).mean(), "sparse": masked(S).abs().mean()}
    if target is not None:
        out["data"] = (target - G.g2(G.with_features(inter, rebuilt), split)).pow(2).mean()
    else:
        out["data"] = torch.zeros((), device=S.device)
    return out


def initial_s(channels: int, s_init: float, device: Any = None) -> Tensor:
    """Where Algorithm 1 starts: ``s_init`` in every entry of the ``[C, C]`` matrix (as the code)."""
    return torch.full((channels, channels), float(s_init), device=device)


def train_self_expressive(G: SplitGenerator, split: int, config: DiscoveryConfig, *, seed: int,
                          progress: ProgressFn | None = None) -> tuple[Tensor, dict[str, list[float]]]:
    """Algorithm 1: minimise eq. (6) over ``S`` with fresh prior latents every iteration.

    Returns the raw parameter ``S`` ``[C, C]`` (its diagonal keeps ``s_init``: it never gets a
    gradient) on the CPU and the per-iteration curves ``{"total", "feature", "data", "sparse"}``.
    """
    c, iterations = config, config.iterations
    channels = G.split_points[split].shape[0]
    S = initial_s(channels, c.s_init, G.device).requires_grad_(True)
    opt = make_optimizer(c.optimizer, [S], c.lr)
    curves: dict[str, list[float]] = {k: [] for k in CURVES}
    for it in range(iterations):
        z = G.sample_latents(c.batch, seed=(seed * 1_000_003 + it) % 2**63)  # [batch, latent]
        terms = discovery_losses(G, split, S, z, c.data_weight)
        total = terms["feature"] + c.data_weight * terms["data"] + c.sparsity_weight * terms["sparse"]
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        curves["total"].append(total.item())
        for k, v in terms.items():
            curves[k].append(v.item())
        if progress is not None:
            progress(it + 1, iterations)
    return S.detach().cpu(), curves


# ---- stage 1: from S to subspaces ------------------------------------------------------------------

def paper_affinity(S: Tensor | np.ndarray) -> np.ndarray:
    """``A = (|S̃| + |S̃ᵀ|) / 2`` with the diagonal masked (the paper)."""
    a = np.abs(masked(torch.as_tensor(np.asarray(S), dtype=torch.float64)).numpy())
    return (a + a.T) / 2


def threshold_columns(C: np.ndarray, ratio: float) -> np.ndarray:
    """Keep, per column, the largest-magnitude entries until their running |·| sum first exceeds
    ``ratio`` × the column's L1 mass; zero the rest (signs kept). An all-zero column stays zero.
    """
    C = np.asarray(C, dtype=np.float64)
    if ratio >= 1:
        return C.copy()
    mag = np.abs(C)
    order = np.argsort(-mag, axis=0, kind="stable")  # per column, largest first
    ranked = np.take_along_axis(mag, order, axis=0)
    mass_before = np.vstack([np.zeros((1, C.shape[1])), np.cumsum(ranked, axis=0)[:-1]])
    keep_ranked = mass_before <= ratio * mag.sum(axis=0, keepdims=True)  # up to the entry that crosses
    keep = np.zeros_like(keep_ranked)
    np.put_along_axis(keep, order, keep_ranked, axis=0)
    return np.where(keep, C, 0.0)


def official_threshold(S: Tensor | np.ndarray, ratio: float, orientation: str) -> np.ndarray:
    """The thresholding step of the official post-processing (seed-methods.md §4.3).

    ``"inversion"`` (``PmSFC.py``): the raw signed S, stored diagonal kept, thresholded per
    column. ``"discovery"`` (``discover_subspace.py``): ReLU of the diagonal-masked S,
    thresholded per row.
    """
    S = torch.as_tensor(np.asarray(S), dtype=torch.float64)
    if orientation == "inversion":
        return threshold_columns(S.numpy(), ratio)
    if orientation == "discovery":
        return threshold_columns(masked(S).clamp(min=0).numpy().T, ratio).T
    raise ValueError(f"official_orientation must be one of {ORIENTATIONS}, got {orientation!r}")


def subspace_affinity(C: np.ndarray, *, n_subspaces: int, subspace_dim: int, power: float) -> np.ndarray:
    """The affinity step of the official post-processing, on an already thresholded matrix.

    Symmetrise; rank r = min(d·R + 1, C − 1) SVD; ``U·√σ`` with rows L2-normalised;
    ``Z = U Uᵀ`` with negatives zeroed; ``L = |Z^power| / max``; symmetrise. A full SVD
    replaces scipy's ``svds`` (same top-r triplets; ``U Uᵀ`` does not depend on their signs).
    """
    C = np.asarray(C, dtype=np.float64)
    C = (C + C.T) / 2
    r = max(1, min(subspace_dim * n_subspaces + 1, C.shape[0] - 1))
    U, sigma, _ = np.linalg.svd(C)
    U = U[:, :r] * np.sqrt(sigma[:r])  # [C, r]
    norms = np.linalg.norm(U, axis=1, keepdims=True)
    U = np.divide(U, norms, out=np.zeros_like(U), where=norms > 0)
    Z = U @ U.T
    Z[Z < 0] = 0.0
    L = np.abs(Z ** power)
    if L.max() > 0:
        L = L / L.max()
    return (L + L.T) / 2


def official_affinity(S: Tensor | np.ndarray, *, n_subspaces: int, subspace_dim: int, power: float,
                      ratio: float, orientation: str) -> np.ndarray:
    """The official post-processing of S, written from its description: threshold, then affinity."""
    return subspace_affinity(official_threshold(S, ratio, orientation), n_subspaces=n_subspaces,
                             subspace_dim=subspace_dim, power=power)


def spectral_labels(A: np.ndarray, n_clusters: int, seed: int, assign_labels: str) -> tuple[np.ndarray, list[str]]:
    """Seeded spectral clustering of a precomputed affinity; labels renumbered by decreasing size.

    Returns ``(labels [C] in 0 … R-1, warnings raised by scikit-learn)``.
    """
    from sklearn.cluster import SpectralClustering

    sc = SpectralClustering(n_clusters=n_clusters, affinity="precomputed", random_state=seed % 2**32,
                            assign_labels=assign_labels, eigen_solver="arpack")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        raw = sc.fit_predict(A)
    sizes = np.bincount(raw, minlength=n_clusters)
    order = np.argsort(-sizes, kind="stable")  # old label of the j-th largest cluster
    relabel = np.empty(n_clusters, dtype=np.int64)
    relabel[order] = np.arange(n_clusters)
    return relabel[raw], sorted({str(w.message).splitlines()[0] for w in caught})


def masks_from_labels(labels: Tensor, n_subspaces: int) -> Tensor:
    """Binary channel masks ``[R, C]`` (bool): ``masks[r, c] = labels[c] == r``; a partition."""
    return labels[None, :] == torch.arange(n_subspaces, device=labels.device)[:, None]


# ---- cache files and imported S -----------------------------------------------------------------

def digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:20]


def load_s_matrix(path: str | Path, channels: int, where: str) -> Tensor:
    """An official ``value50.pkl`` (pickled float (C, C) numpy array) through the numpy-only unpickler."""
    arr = load_numpy_pickle(path)
    if not isinstance(arr, np.ndarray) or arr.dtype.kind != "f" or arr.shape != (channels, channels):
        found = f"{type(arr).__name__} {getattr(arr, 'dtype', '')} of shape {getattr(arr, 'shape', '?')}"
        raise CheckpointError(f"s_matrix {path}: expected a float array of shape ({channels}, {channels}) for "
                              f"{where} ({channels} channels), found {found}")
    if not np.isfinite(arr).all():
        raise CheckpointError(f"s_matrix {path}: contains non-finite values")
    return torch.from_numpy(np.array(arr, dtype=np.float32))


# ---- stage 1 as PmSFC.prepare runs it: S (imported, cached or trained), then the clusters ----------------
DISCOVERY_FIELDS = ("discovery_iterations", "discovery_batch", "discovery_optimizer", "discovery_lr", "data_weight",
                    "sparsity_weight", "s_init")
CLUSTERING_FIELDS = ("n_subspaces", "affinity", "official_orientation", "threshold_ratio", "subspace_dim",
                     "affinity_power")


@dataclass
class FoundS:
    """S ``[C, C]`` with its loss curves (empty when imported), cache key and whether it came from the cache."""

    S: Tensor
    curves: dict[str, list[float]]
    key: str
    cached: bool


@dataclass
class Clusters:
    """Channel labels ``[C]`` (long), scikit-learn's warnings and the cache key of the clustering."""

    labels: Tensor
    notes: list[str]
    key: str


#: the version of stage 1's code (discovery and clustering); part of every cache key, so a change
#: of that code is never served an S or masks the old code computed
STAGE1_VERSION = "2"


def code_version() -> dict[str, str]:
    """The code behind a cached S or clustering: PmSFC's ``version`` and :data:`STAGE1_VERSION`."""
    from .pmsfc import PmSFC  # lazily: pmsfc imports this module

    return {"method": str(PmSFC.version), "stage1": STAGE1_VERSION}


def obtain_s(G: SplitGenerator, split: int, settings: Any, *, seed: int, cache: Path | None,
             progress: ProgressFn | None) -> FoundS:
    """S from ``settings.s_matrix`` (an imported file), the cache, or training (then cached).

    The cache key is the content of the generator's weights (:meth:`SplitGenerator.content_hash`),
    the code version (:func:`code_version`), the split, the discovery settings
    (:data:`DISCOVERY_FIELDS`) and the seed (or the imported file's sha256): never a path or a name. A cache
    entry computed for another key, or whose keys, shapes or dtypes differ from what this code writes (the cache
    may be a run folder's, from someone else), is ignored with a warning naming the file, and S is trained again."""
    s, channels = settings, G.split_points[split].shape[0]
    generator = {"weights_sha256": G.content_hash(), "code": code_version()}
    if s.s_matrix is not None:
        where = f"split {split} ({G.split_points[split].name}) of {G.name or type(G).__name__}"
        S = load_s_matrix(s.s_matrix, channels, where)
        source: dict[str, Any] = {"s_matrix_sha256": hashlib.sha256(Path(s.s_matrix).read_bytes()).hexdigest()}
        return FoundS(S, {}, digest({"generator": generator, "split": split, "source": source}), False)
    source = {"discovery": {k: getattr(s, k) for k in DISCOVERY_FIELDS}, "seed": seed}
    key_material = {"generator": generator, "split": split, "source": source}
    s_key = digest(key_material)
    path = cache / f"pmsfc-S-{s_key}.pt" if cache is not None else None
    entry = _checked(path, _s_problem, key_material, channels, s.discovery_iterations) if path is not None else None
    if entry is not None:
        return FoundS(entry["S"], {k: v.tolist() for k, v in entry["curves"].items()}, s_key, True)
    config = DiscoveryConfig(s.discovery_iterations, s.discovery_batch, s.discovery_lr, s.discovery_optimizer,
                             s.data_weight, s.sparsity_weight, s.s_init)
    S, curves = train_self_expressive(G, split, config, seed=seed, progress=progress)
    if path is not None:
        torch_save_atomic({"S": S, "curves": {k: torch.tensor(v) for k, v in curves.items()},
                     "key": json.dumps(key_material, default=str)}, path)
    return FoundS(S, curves, s_key, False)


def cluster_channels(S: Tensor, s_key: str, settings: Any, *, seed: int, cache: Path | None) -> Clusters:
    """Spectral clustering of S's affinity (paper or official post-processing) into R subspaces, cached; a cache
    entry that is not what this code writes (see :func:`obtain_s`) is ignored with a warning and recomputed."""
    s = settings
    spec = {k: getattr(s, k) for k in CLUSTERING_FIELDS}
    if s.affinity == "paper":
        spec = {"n_subspaces": s.n_subspaces, "affinity": "paper"}
    m_key = digest({"S": s_key, "clustering": spec, "seed": seed, "code": code_version()})
    path = cache / f"pmsfc-masks-{m_key}.pt" if cache is not None else None
    entry = _checked(path, _masks_problem, spec, S.shape[0], s.n_subspaces) if path is not None else None
    if entry is not None:
        return Clusters(entry["labels"].long(), list(entry["warnings"]), m_key)
    if s.affinity == "paper":
        A, assign = paper_affinity(S), "kmeans"  # Ng-Jordan-Weiss: k-means on the embedding
    else:
        A = official_affinity(S, n_subspaces=s.n_subspaces, subspace_dim=s.subspace_dim, power=s.affinity_power,
                              ratio=s.threshold_ratio, orientation=s.official_orientation)
        assign = "discretize"  # as the official code
    raw, notes = spectral_labels(A, s.n_subspaces, seed, assign)
    labels = torch.from_numpy(raw)
    if path is not None:
        torch_save_atomic({"labels": labels, "warnings": notes, "spec": json.dumps(spec)}, path)
    return Clusters(labels.long(), notes, m_key)


# ---- checking a cache entry (the cache may be a run folder's, which may come from someone else) ------------

def _checked(path: Path, problem: Callable[[Any, Any, int, int], str], key: Any, size: int,
             count: int) -> dict[str, Any] | None:
    """The cache entry at ``path`` where ``problem(entry, key, size, count)`` finds nothing wrong with it, else None
    (as for a corrupt file, :func:`~gan_inversion_bench.safe_paths.torch_load_cached`: a warning names the file and
    what was wrong, and stage 1 recomputes it)."""
    entry = torch_load_cached(path)
    why = problem(entry, key, size, count) if entry is not None else ""
    if why:
        warnings.warn(f"ignoring PmSFC cache file {path}: {why}; recomputing it", stacklevel=3)
        return None
    return entry


def _tensor_problem(value: Any, name: str, shape: tuple[int, ...], floating: bool) -> str:
    """What makes ``value`` other than a finite float (``floating``) or integer tensor of ``shape`` ("" if nothing)."""
    if not isinstance(value, Tensor):
        return f"{name!r} is {type(value).__name__}, not a tensor"
    integer = not (value.dtype.is_floating_point or value.dtype.is_complex or value.dtype == torch.bool)
    if not (value.dtype.is_floating_point if floating else integer) or tuple(value.shape) != shape:
        expected = "a float" if floating else "an integer"
        return f"{name!r} is a {value.dtype} tensor of shape {tuple(value.shape)}, expected {expected} one of {shape}"
    if floating and not bool(torch.isfinite(value).all()):
        return f"{name!r} holds non-finite values"
    return ""


def _s_problem(entry: Any, key_material: dict[str, Any], channels: int, iterations: int) -> str:
    """What is wrong with an S cache entry: ``S`` ``[C, C]`` float, ``curves`` the terms of :data:`CURVES` over
    every iteration, computed for ``key_material`` ("" if nothing)."""
    if not isinstance(entry, dict) or entry.get("key") != json.dumps(key_material, default=str):
        return "it was not computed for this generator, split and these discovery settings"
    curves = entry.get("curves")
    if not isinstance(curves, dict) or set(curves) != set(CURVES):
        return f"'curves' is not a dict of the terms {', '.join(CURVES)}"
    problems = [_tensor_problem(v, f"curves[{k!r}]", (iterations,), True) for k, v in curves.items()]
    return _tensor_problem(entry.get("S"), "S", (channels, channels), True) or next(filter(None, problems), "")


def _masks_problem(entry: Any, spec: dict[str, Any], channels: int, n_subspaces: int) -> str:
    """What is wrong with a clustering cache entry: ``labels`` ``[C]`` integers in 0 … R-1 and ``warnings`` a list
    of strings, computed for ``spec`` ("" if nothing)."""
    if not isinstance(entry, dict) or entry.get("spec") != json.dumps(spec):
        return "it was not computed for these clustering settings"
    labels: Any = entry.get("labels")
    notes = entry.get("warnings")
    if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
        return "'warnings' is not a list of strings"
    why = _tensor_problem(labels, "labels", (channels,), False)
    if not why and not 0 <= int(labels.min()) <= int(labels.max()) < n_subspaces:
        why = f"'labels' are not all subspace numbers from 0 to {n_subspaces - 1}"
    return why
