"""The claim check of docs/results.md, redone as three experiments (issue "Fair comparisons", item 7).

Does the PmSFC paper's ordering (PmSFC ≥ mGANprior ≥ single-code) hold, and do PmSFC's discovered
subspaces matter?

* **a. best against best** on ``dcgan-digiface64``: every method at its tuned settings
  (``--profile tuned``); mGANprior N ∈ {10, 30} with and without the official /N; PmSFC's paper
  variant with R·K ∈ {10 (R = 2), 30 (R = 6)} (K = 5) and w0 ∈ {0.25, 1} and its tuned value; PmSFC as released
  (Adam lr 1e-4) at the same budget.
* **b. subspace relevance**: first a scan of every split point with at least 2×2 spatial features
  (the self-expressive layer S trained with the paper's discovery settings at each; the ratio of
  the feature loss at the trained S to its value at S = 0 on held-out latents), then, at the split
  with the clearest drop, PmSFC with the discovered masks against a random partition of equal
  sizes against one subspace (R = 1, K = 30: equal capacity).
* **c.** experiment b on the second real generator, ``dcgan-omniart-eyes128`` (needs its tuned
  profile: ``gib tune -g dcgan-omniart-eyes128 -m pmsfc``; skipped with a message without one).

The defaults are the issue's protocol: 2000 iterations, 32 generated faces plus the 8 bundled
photos, 3 restarts (best of 3 by final loss). Every configuration is an ordinary ``harness.run``
into its own folder ``OUT/<experiment>/<configuration>`` (SQLite ``results.sqlite``), with one PmSFC
cache folder ``OUT/cache`` shared by all, so an interrupted check resumes where it stopped. An
``OUT`` folder holds one protocol (``OUT/protocol.json``; a different one is refused). The page
(``--write``) is rendered from the databases: per experiment a summary, paired per-image differences
at the end, the median PSNR at the last trace points (a plateau test) and the same pairs at every
trace point from 1/64 of the budget on (does an ordering hold along the way?); hand-written verdicts
between ``<!-- verdict X -->`` markers survive regeneration. ``--section EXP=FOLDER`` renders an
experiment from another folder (with that folder's protocol; a second folder for one experiment
becomes a subsection), so a page whose experiments ran at different scales still comes from one
command. A resume never moves experiment b/c to another split once configurations ran at one (it
stops and says so). ``--archive DEST`` copies what the page is rendered from without the PNGs and
caches (each configuration's records through ``gib archive``, the protocol, the session log, the
scans) into a folder to commit, e.g. ``docs/records/NAME``; ``--section EXP=DEST`` renders from it.
A configuration runs at the tuned profile's entry of the day, which a later search may replace; with
``--settings-from RECORDS`` (a check folder or such an archive) each runs at the method settings its
records there hold, so a rerun is the same experiment (the folder keeps the option in its protocol).
Under ``torchrun --nproc-per-node K`` one configuration's images are shared over K processes (the
harness's rounds; rank 0 alone shares the cache and logs the session); the split scan is not shared
out, so where ``scan.json`` lacks a split, scan it first in one process (``--only b/scan``).
``gib stop OUT`` stops the configuration in progress after its current batch, losing nothing: its
session line is logged (``stopped``), no further configuration starts, and the script exits with 75.

    python benchmarks/claim_check.py --out runs/claim-check --device cuda --write docs/results.md
    python benchmarks/claim_check.py --out runs/claim-check-cpu --iterations 1000 --n-generated 16 \\
        --restarts 1 --only a --write docs/results.md        # the reduced protocol of this project's CPU
    python benchmarks/claim_check.py --out runs/claim-check-cpu --iterations 1000 --n-generated 16 \\
        --restarts 1 --no-run --section b=runs/claim-check-cpu --section b=runs/claim-check-cpu-b1 \\
        --section b=runs/claim-check-cpu-b3 --section c=runs/claim-check-cpu-c \\
        --write docs/results.md                               # this project's page
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import re
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from gan_inversion_bench import GENERATORS, METHODS, compare_runs, distributed, harness, stats, tables
from gan_inversion_bench.method_tools import LR_SCHEDULES
from gan_inversion_bench.profiles import (
    entry_budget,
    has_tuned,
    method_entries,
    settings_text,
    tuned_settings,
    value_text,
)
from gan_inversion_bench.safe_paths import UnsafePathError, inside
from gan_inversion_bench.store import ResultStore, StoreError

SCRIPT = "python benchmarks/claim_check.py"
GENERATOR = "dcgan-digiface64"
SECOND_GENERATOR = "dcgan-omniart-eyes128"
#: PmSFC's stage 1 as the paper profile runs it (converged on dcgan-digiface64: docs/methods.md, "Convergence")
DISCOVERY: dict[str, Any] = {"discovery_iterations": 10000, "discovery_lr": 1e-4}
#: L_recF(trained S) / L_recF(S = 0) below this counts as "clearly below" (a drop of at least 20 %)
CLEAR_DROP = 0.8
#: prior samples (one fixed draw, never used in training) on which both feature losses are measured
HELD_OUT, HELD_OUT_SEED = 256, 20261130
#: subspaces of the experiment-b configurations (a split needs at least this many channels)
R_SUBSPACES = 6
#: further random partitions of experiments b/c (shuffle seeds), besides the one drawn from the run's seed
RANDOM_DRAWS = (1, 2)
#: experiments b/c: the per-image mean over the random partitions, paired like a configuration
MEAN_RANDOM = "random partitions, mean of the draws"
#: trace points shown in the plateau table (the last ones: e.g. 128, 256, 512, 1000)
PLATEAU_POINTS = 4
#: the paired table along the way starts at this fraction of the budget (the trace's log-spaced points from
#: there: 32 … 2000 at 2000 iterations, 128 … 8000 at 8000)
ALONG_FROM = 1 / 64


@dataclass(frozen=True)
class Protocol:
    """The scale of a check; the defaults are the issue's protocol. One per ``--out`` folder."""

    iterations: int = 2000
    n_generated: int = 32
    images: str = "generated+photos"
    restarts: int = 3
    discovery_iterations: int = 10000
    #: experiments b/c on a generator without a tuned PmSFC profile: use this generator's tuned settings
    tuned_from: str = ""
    #: a check folder (or its archive) whose records pin each configuration's method settings
    settings_from: str = ""
    #: the learning-rate schedule of every configuration (method_tools.LR_SCHEDULES), on top of its settings
    lr_schedule: str = "constant"

    def flags(self) -> str:
        """The command-line options that give this protocol (empty for the issue's)."""
        default = Protocol()
        return " ".join(f"--{f.name.replace('_', '-')} {getattr(self, f.name)}" for f in fields(self)
                        if getattr(self, f.name) != getattr(default, f.name))

    def discovery(self) -> dict[str, Any]:
        return {**DISCOVERY, "discovery_iterations": self.discovery_iterations}


@dataclass(frozen=True)
class Experiment:
    key: str         # "a", "b", "c"
    kind: str        # "best" (experiment a) or "subspaces" (b, c)
    generator: str
    title: str


EXPERIMENTS = [Experiment("a", "best", GENERATOR, "best against best"),
               Experiment("b", "subspaces", GENERATOR, "subspace relevance"),
               Experiment("c", "subspaces", SECOND_GENERATOR, f"subspace relevance on {SECOND_GENERATOR}")]


@dataclass(frozen=True)
class Source:
    """A folder the page renders an experiment from, with that folder's protocol."""

    out: Path
    arg: str         # the folder as given on the command line (shown on the page)
    protocol: Protocol


@dataclass(frozen=True)
class Config:
    experiment: str                  # folder OUT/<experiment>/<name>
    name: str
    label: str                       # its row on the page
    method: str
    generator: str
    overrides: dict[str, Any] = field(default_factory=dict)
    profile: str = "tuned"
    family: str = ""                 # best-of-family pairs: single-code, mganprior, pmsfc, released
    codes: int = 1                   # latent codes per image (capacity)

    @property
    def key(self) -> str:
        return f"{self.experiment}/{self.name}"


def best_configs(exp: Experiment, protocol: Protocol) -> list[Config]:
    """Experiment a: the tuned profile of each method, with the settings under test on top."""
    g, disc = exp.generator, protocol.discovery()
    out = [Config(exp.key, "single-code", "single-code", "single-code", g, family="single-code")]
    for n in (10, 30):
        for div in (False, True):
            out.append(Config(exp.key, f"mganprior-N{n}{'-divN' if div else ''}",
                              f"mGANprior N = {n}{', /N' if div else ''}", "mganprior", g,
                              {"n_codes": n, "divide_by_n": div}, family="mganprior", codes=n))
    for r in (2, 6):
        for w0 in (0.25, 1.0, None):  # the issue's two values, then the profile's own (best against best)
            name, label = (f"w{w0:g}", f"w0 = {w0:g}") if w0 is not None else ("wtuned", "w0 tuned")
            out.append(Config(exp.key, f"pmsfc-RK{5 * r}-{name}", f"PmSFC R·K = {r}·5, {label}", "pmsfc", g,
                              {**disc, "n_subspaces": r, "codes_per_subspace": 5,
                               **({} if w0 is None else {"weight_init": w0})},
                              family="pmsfc", codes=5 * r))
    # as released (Adam lr 1e-4, no perceptual term, the official affinity) except the init: z = 0 is a
    # dead point of this DCGAN (every ReLU at split 3 off, zero gradient), so the codes start from the prior
    out.append(Config(exp.key, "pmsfc-released", "PmSFC released (Adam lr 1e-4, prior init)", "pmsfc", g,
                      {**disc, "variant": "released", "affinity": "official", "init": "normal"}, profile="paper",
                      family="released", codes=R_SUBSPACES + 1))
    return out


def tuned_source(exp: Experiment, protocol: Protocol, methods: list[str]) -> str | None:
    """The generator whose tuned profile of ``methods`` experiment ``exp`` uses: (experiments b/c) the
    ``--tuned-from`` one when it was given (the protocol's choice, kept when ``exp``'s generator gets a
    profile of its own later), else its own; None when neither has it."""
    if exp.kind == "subspaces" and protocol.tuned_from and has_tuned(protocol.tuned_from, methods):
        return protocol.tuned_from
    if has_tuned(exp.generator, methods):
        return exp.generator
    return None


def transferred(exp: Experiment, protocol: Protocol) -> bool:
    """Whether experiment ``exp`` runs PmSFC with another generator's tuned settings (``--tuned-from``)."""
    return tuned_source(exp, protocol, ["pmsfc"]) not in (None, exp.generator)


def subspace_configs(exp: Experiment, protocol: Protocol, split: int) -> list[Config]:
    """Experiment b/c: discovered masks, a random partition of the same sizes, one subspace."""
    base = {**protocol.discovery(), "split": split, "n_subspaces": R_SUBSPACES, "codes_per_subspace": 5}
    profile = "tuned"
    if transferred(exp, protocol):  # the settings tuned on another generator, stated on the page
        profile, settings = tuned_settings(protocol.tuned_from, "pmsfc", protocol.iterations)
        base = {**settings, **base}
    g, rk = exp.generator, f"R = {R_SUBSPACES}, K = 5"
    return [Config(exp.key, "discovered", f"discovered masks ({rk})", "pmsfc", g, base, profile, codes=30),
            Config(exp.key, "random", f"random partition, same sizes ({rk})", "pmsfc", g,
                   {**base, "partition": "random"}, profile, codes=30),
            *[Config(exp.key, f"random-s{d}", f"random partition, draw {d} ({rk})", "pmsfc", g,
                     {**base, "partition": f"random:{d}"}, profile, codes=30) for d in RANDOM_DRAWS],
            Config(exp.key, "R1-K30", "one subspace (R = 1, K = 30)", "pmsfc", g,
                   {**base, "n_subspaces": 1, "codes_per_subspace": 30}, profile, codes=30)]


def experiment_configs(exp: Experiment, out: Path, protocol: Protocol) -> list[Config]:
    if exp.kind == "best":
        return best_configs(exp, protocol)
    scan = _read_json(out / exp.key / "scan.json")
    return subspace_configs(exp, protocol, int(scan["chosen"])) if "chosen" in scan else []


# ---- bookkeeping ------------------------------------------------------------------------------------
def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Atomically (a temporary file per process, then a rename): two checks writing into one folder at
    once never leave a half-written file (the later one's content wins)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    tmp.replace(path)


def _loadavg() -> list[float]:
    p = Path("/proc/loadavg")
    return [float(x) for x in p.read_text().split()[:3]] if p.exists() else [math.nan] * 3


def _log_session(out: Path, key: str, t0: float, load0: list[float], new: int, status: str = "finished") -> None:
    """Append one session of a configuration to ``OUT/runs.json`` (wall time, load, records added; the
    status where it is not ``finished``: ``stopped`` by ``gib stop``).
    The read-modify-write holds an exclusive lock on ``OUT/runs.json.lock``, so checks finishing at
    the same moment in one folder each keep their line."""
    import fcntl

    entry = {"wall_s": round(time.monotonic() - t0, 1), "load_before": load0[0], "load_after": _loadavg(),
             "new_records": new, "finished": datetime.datetime.now().isoformat(timespec="seconds")}
    if status != "finished":
        entry["status"] = status
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "runs.json.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        log = _read_json(out / "runs.json")
        log.setdefault(key, []).append(entry)
        _write_json(out / "runs.json", log)


def session_log(out: Path) -> dict[str, list[dict[str, Any]]]:
    """``OUT/runs.json``, and the sessions it cannot hold: a line is written when a session ends, so one that
    was killed (or stopped, or failed) after writing records has none there. Those come from the records
    themselves (:func:`unfinished_sessions`), after the configuration's ended sessions."""
    log = _read_json(out / "runs.json")
    for db in sorted(out.glob("*/*/results.sqlite")):
        if unfinished := unfinished_sessions(db.parent):
            key = db.parent.relative_to(out).as_posix()
            log[key] = [*log.get(key, []), *unfinished]
    return log


def unfinished_sessions(folder: Path) -> list[dict[str, Any]]:
    """A configuration's sessions that wrote records but never ended (the harness's session table:
    ``abandoned`` when killed, ``interrupted`` by Ctrl-C, ``failed``, or ``running`` still; one stopped by
    ``gib stop`` logged its line): the records each wrote,
    and the time from its start to its last record as its wall time (no load was measured)."""
    with ResultStore(folder, create=False) as store:
        sessions = [s for s in store.sessions() if s["status"] not in ("finished", "stopped")]  # both logged
        rows = store.results() if sessions else []  # the usual case, every session ended: no need to read them
    lines = []
    for s in sessions:
        made = [datetime.datetime.fromisoformat(r["created"]) for r in rows if r["session"] == s["id"]]
        if not made:
            continue
        start = datetime.datetime.fromisoformat(s["started"])
        lines.append({"status": s["status"], "new_records": len(made), "wall_s": round((max(made) - start)
                      .total_seconds(), 1), "finished": max(made).isoformat(), "load_before": None, "load_after": None})
    return lines


def resolve_protocol(out: Path, args: argparse.Namespace) -> Protocol:
    """The folder's protocol; options given on the command line must agree with it."""
    stored, default = _read_json(out / "protocol.json"), asdict(Protocol())
    given = {f.name: getattr(args, f.name) for f in fields(Protocol) if getattr(args, f.name) is not None}
    # a folder whose protocol.json predates an option ran without it (its default)
    clash = {k: (stored.get(k, default[k]), v) for k, v in given.items() if stored and stored.get(k, default[k]) != v}
    if clash:
        raise SystemExit(f"{out} holds the protocol {stored}; these options differ: {clash}. Use another --out.")
    protocol = Protocol(**{**stored, **given})
    if not args.no_run:
        _write_json(out / "protocol.json", asdict(protocol))
    return protocol


# ---- experiment b: the split scan ---------------------------------------------------------------------
def held_out_losses(G: Any, split: int, matrices: dict[str, torch.Tensor | None]) -> dict[str, float]:
    """L_recF (eq. 4) on the held-out latents for each named S, in one pass over the features: the mean
    squared residual of rebuilding every channel from the others (None: S = 0, the mean squared feature)."""
    from gan_inversion_bench.methods.pmsfc_subspaces import self_expression

    z = G.sample_latents(HELD_OUT, seed=HELD_OUT_SEED).to(G.device)
    totals, count = dict.fromkeys(matrices, 0.0), 0
    with torch.no_grad():
        for chunk in z.split(64):
            F = G.features_of(G.g1(chunk, split)).float()
            for name, S in matrices.items():
                totals[name] += (F if S is None else F - self_expression(S.to(F.device), F)).pow(2).sum().item()
            count += F.numel()
    return {name: total / count for name, total in totals.items()}


def initial_s(G: Any, split: int, s_init: float) -> torch.Tensor:
    """Where the discovery starts on ``split`` (the method's own starting matrix)."""
    from gan_inversion_bench.methods.pmsfc_subspaces import initial_s as start

    return start(G.split_points[split].shape[0], s_init, G.device)


def feature_ratio(G: Any, split: int, S: torch.Tensor, s_init: float) -> dict[str, float]:
    """L_recF at S = 0, at the initial S and at the trained S, and the trained value's ratio to each."""
    loss = held_out_losses(G, split, {"zero": None, "initial": initial_s(G, split, s_init), "trained": S})
    return {"feature_s0": loss["zero"], "feature_init": loss["initial"], "feature_trained": loss["trained"],
            "ratio": loss["trained"] / loss["zero"], "ratio_init": loss["trained"] / loss["initial"]}


def _s_init() -> float:
    return float(METHODS.get("pmsfc").from_profile("paper").settings.s_init)


def _scan_one(G: Any, split: int, protocol: Protocol, cache: Path) -> dict[str, Any]:
    from gan_inversion_bench.methods.pmsfc_subspaces import obtain_s

    settings = METHODS.get("pmsfc").from_profile("paper", **protocol.discovery(), split=split).settings
    every = max(1, protocol.discovery_iterations // 10)

    def progress(i: int, n: int) -> None:
        if i % every == 0:
            print(f"   split {split}: discovery {i}/{n}", flush=True)

    t0 = time.monotonic()
    found = obtain_s(G, split, settings, seed=0, cache=cache, progress=progress)
    curves = {k: np.asarray(v, dtype=float) for k, v in found.curves.items()}
    point = G.split_points[split]
    return {"name": point.name, "shape": list(point.shape), **feature_ratio(G, split, found.S, settings.s_init),
            "train_s": None if found.cached else round(time.monotonic() - t0, 1),
            "curve_feature_first": float(curves["feature"][0]),
            "curve_feature_last100": float(curves["feature"][-100:].mean()),
            "curve_data_last100": float(curves["data"][-100:].mean())}


def scan_splits(exp: Experiment, out: Path, protocol: Protocol, device: str,
                wanted: list[int] | None = None) -> dict[str, Any]:
    """S at every split with ≥ 2×2 spatial features and ≥ R channels (or the ``wanted`` ones; paper
    discovery settings); resumable."""
    path = out / exp.key / "scan.json"
    scan = _read_json(path)
    scan.setdefault("splits", {})
    G = GENERATORS.create(exp.generator).to(harness.resolve_device(device)).eval()
    scan["s_init"] = _s_init()
    for key, entry in scan["splits"].items():  # a scan made before the initial S was measured: add it
        if "feature_init" not in entry:
            entry["feature_init"] = held_out_losses(G, int(key), {"i": initial_s(G, int(key), scan["s_init"])})["i"]
            entry["ratio_init"] = entry["feature_trained"] / entry["feature_init"]
            _write_json(path, scan)
    todo = [split for split, point in enumerate(G.split_points) if str(split) not in scan["splits"] and len(
        point.shape) == 3 and min(point.shape[1:]) >= 2 and point.shape[0] >= R_SUBSPACES and (
        not wanted or split in wanted)]
    if todo and distributed.from_env().enabled:  # every rank would train the same S into one cache
        raise SystemExit(f"{path}: splits {todo} are not scanned yet; under torchrun the scan is not shared out, "
                         f"so run it first in one process (--only {exp.key}/scan with the same options)")
    for split in todo:
        point = G.split_points[split]
        t0, load0 = time.monotonic(), _loadavg()
        print(f"== {exp.key}/scan: split {split} ({point.name}, {'×'.join(map(str, point.shape))})", flush=True)
        scan["splits"][str(split)] = _scan_one(G, split, protocol, out / "cache")
        scan["device"], scan["discovery_iterations"] = harness.device_name(G.device), protocol.discovery_iterations
        _write_json(path, scan)
        _log_session(out, f"{exp.key}/scan-{split}", t0, load0, 1)
    return scan


def choose_split(scan: dict[str, Any], forced: int | None) -> tuple[int, str]:
    """The split with the lowest ratio (or ``forced``) and why."""
    best = min(scan["splits"], key=lambda s: scan["splits"][s]["ratio"])
    chosen = best if forced is None else str(forced)
    why = "lowest ratio of the scan" if forced is None else f"given with --split; the scan's lowest: split {best}"
    if chosen not in scan["splits"]:
        return int(chosen), f"{why}; not scanned, so its ratio is not known"
    entry = scan["splits"][chosen]

    def clear(ratio: float) -> str:
        return f"clearly below (< {CLEAR_DROP:g})" if ratio < CLEAR_DROP else f"NOT clearly below ({CLEAR_DROP:g})"

    text = f"{why}; its ratio {entry['ratio']:.3f}: {clear(entry['ratio'])} its S = 0 value"
    if "ratio_init" in entry:
        text += f"; to the initial S: {entry['ratio_init']:.3f}, {clear(entry['ratio_init'])} where training started"
    return int(chosen), text


# ---- running ----------------------------------------------------------------------------------------
def _count(folder: Path) -> int:
    return len(tables.load_records(folder)) if (folder / "results.sqlite").exists() else 0


#: what a pinned rerun (``--settings-from``) takes from its own protocol rather than from the records
NOT_PINNED = ("iterations", "lr_schedule")  # the protocol's own (--iterations, --lr-schedule)


def pinned_settings(cfg: Config, protocol: Protocol) -> dict[str, Any]:
    """``--settings-from RECORDS``: the method settings that the records of ``cfg`` (the configuration of
    the same name) in RECORDS hold, a check folder or its archive, so that a rerun runs at them and not at
    whatever the profile holds today; the iterations and the learning-rate schedule stay this protocol's.
    Empty without the option.
    Refused, with the reason, when RECORDS has no records of ``cfg`` (or reaches outside itself), when they
    were written by another method or method version, hold more than one setting, or contradict what
    ``cfg`` puts on top of the profile (then they are not this configuration)."""
    if not protocol.settings_from:
        return {}
    root = Path(protocol.settings_from)
    where = f"--settings-from {root}: {cfg.key}"
    try:
        records = tables.load_records(inside(root, f"{cfg.experiment}/{cfg.name}"))
    except (StoreError, UnsafePathError) as e:
        raise SystemExit(f"{where}: no records to take its settings from ({e})") from None
    if records.empty:
        raise SystemExit(f"{where}: its results.sqlite holds no records to take the settings from")
    held = {(m, v, json.dumps(s, sort_keys=True)) for m, v, s in
            zip(records["method"], records["method_version"], records["method_settings"], strict=True)}
    if len(held) != 1:
        raise SystemExit(f"{where}: the records hold {len(held)} different method settings; expected one "
                         "(a configuration runs at one setting)")
    method, version, text = held.pop()
    current = METHODS.get(cfg.method).version
    if (method, version) != (cfg.method, current):
        raise SystemExit(f"{where}: the records were written by {method} version {version}; this configuration "
                         f"runs {cfg.method} version {current}, whose settings may not mean the same")
    settings = json.loads(text)
    clash = {k: (settings[k], v) for k, v in cfg.overrides.items() if k in settings and settings[k] != v}
    if clash:
        raise SystemExit(f"{where}: the records' settings differ from what this configuration puts on top "
                         f"(recorded, expected): {clash}; RECORDS is not a folder of this configuration")
    return {k: v for k, v in settings.items() if k not in NOT_PINNED}


def run_config(cfg: Config, out: Path, protocol: Protocol, device: str, pinned: dict[str, Any],
               batch_size: int | None = None) -> None:
    """One configuration: an ordinary ``harness.run`` into ``OUT/<experiment>/<name>`` (resumes); with
    ``--settings-from``, at the settings its records there hold (``pinned``, from :func:`pinned_settings`).
    Under ``torchrun`` every rank inverts its share of the images and rank 0 alone keeps the books: it
    shares the cache and logs the session (the other ranks would count rank 0's records again)."""
    folder = out / cfg.experiment / cfg.name
    overrides = {**cfg.overrides, **pinned, "lr_schedule": protocol.lr_schedule}  # constant: left out of keys
    books = distributed.is_main_process()
    if books:
        share_cache(out / "cache", folder / "cache")  # S is trained once per split and reused by every configuration
    config = harness.RunConfig(generator=cfg.generator, methods=[cfg.method], profile=cfg.profile,
                               overrides={cfg.method: overrides}, images=protocol.images,
                               n_generated=protocol.n_generated, budget=protocol.iterations,
                               restarts=protocol.restarts, device=device, latency=False, batch_size=batch_size)
    note = f" at the settings of {protocol.settings_from}: {overrides}" if protocol.settings_from else ""
    print(f"== {cfg.key}: {cfg.method} ({cfg.profile}) {cfg.overrides}{note}", flush=True)
    before, t0, load0 = _count(folder), time.monotonic(), _loadavg()

    def keep_books(status: str) -> None:
        if books:
            share_cache(folder / "cache", out / "cache")
            _log_session(out, cfg.key, t0, load0, _count(folder) - before, status)

    try:
        harness.run(config, folder, progress=False)
    except harness.StopRequested:  # `gib stop`: this session's line is kept, then the check stops
        keep_books("stopped")
        raise
    keep_books("finished")


def share_cache(src: Path, dst: Path) -> None:
    """Copy the cache entries ``dst`` lacks from ``src`` (regular files only). The harness never follows a
    link inside a run folder, so the one shared cache ``OUT/cache`` is shared by copying (S is ~1 MB)."""
    dst.mkdir(parents=True, exist_ok=True)
    for f in sorted(src.glob("*")) if src.is_dir() else []:
        if f.is_file() and not f.is_symlink() and not f.name.startswith(".") and not (dst / f.name).exists():
            shutil.copy2(f, dst / f.name)


def selected(only: list[str], exp: str, name: str | None = None) -> bool:
    """``--only`` entries: an experiment (``a``) or one configuration (``a/single-code``, ``b/scan``)."""
    if not only:
        return True
    return exp in only or (name is not None and f"{exp}/{name}" in only) or (
        name is None and any(o.startswith(f"{exp}/") for o in only))


def run_experiment(exp: Experiment, out: Path, protocol: Protocol, args: argparse.Namespace) -> None:
    only = [o for o in (args.only or "").split(",") if o]
    methods = ["single-code", "mganprior", "pmsfc"] if exp.kind == "best" else ["pmsfc"]
    if not selected(only, exp.key):
        return
    if tuned_source(exp, protocol, methods) is None:
        print(f"== {exp.key}: skipped: no tuned profile of {', '.join(methods)} for {exp.generator}; run "
              f"`gib tune -g {exp.generator} -m {' -m '.join(methods)}` first (or, for b/c, --tuned-from GENERATOR)",
              flush=True)
        return
    if exp.kind == "subspaces":
        wanted = [int(x) for x in (args.scan_splits or "").split(",") if x]
        scan = scan_splits(exp, out, protocol, args.device, wanted)
        scan["scan_all"] = scan.get("scan_all", False) or not wanted  # else the page's command names the splits
        forced = args.split if args.split is not None else scan.get("forced")
        chosen, reason = choose_split(scan, forced)
        before = scan.get("chosen")
        if before is not None and chosen != int(before) and any(
                _count(out / exp.key / c.name) for c in subspace_configs(exp, protocol, int(before))):
            raise SystemExit(f"{out / exp.key}: its configurations ran at split {before}, but the split would now be "
                             f"{chosen} ({reason}); pass --split {before} (and the --scan-splits the page gives) to go "
                             "on with them, or use another --out")
        scan["chosen"], scan["reason"], scan["forced"] = chosen, reason, forced
        _write_json(out / exp.key / "scan.json", scan)
    cfgs = [c for c in experiment_configs(exp, out, protocol) if selected(only, exp.key, c.name)]
    # read first, so that a configuration --settings-from cannot pin is refused before any of them runs
    pins = [pinned_settings(cfg, protocol) for cfg in cfgs]
    for cfg, pinned in zip(cfgs, pins, strict=True):
        run_config(cfg, out, protocol, args.device, pinned, args.batch_size)


# ---- the page: data ------------------------------------------------------------------------------
def load_experiment(cfgs: list[Config], out: Path, protocol: Protocol) -> pd.DataFrame:
    """The records of the configurations at this protocol, labelled by configuration."""
    frames = []
    for c in cfgs:
        folder = out / c.experiment / c.name
        df = tables.load_records(folder) if (folder / "results.sqlite").exists() else pd.DataFrame()
        if df.empty:
            continue
        df = df[df["iterations"] == protocol.iterations]
        if df["method_key"].nunique() > 1:
            raise SystemExit(f"{folder} holds {df['method_key'].nunique()} configurations at {protocol.iterations} "
                             "iterations; render it from a folder with one protocol")
        frames.append(df.assign(method=c.label, label=c.label, config=c.name, folder=str(folder)))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _ok(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["status"] == "ok"]


def best_pairs(cfgs: list[Config], df: pd.DataFrame) -> list[tuple[str, str]]:
    """Experiment a's pairs: the best configuration (mean PSNR over all images) of each family and
    capacity against each other, against single-code, and the settings under test within a family."""
    mean = _ok(df).groupby("label")["psnr"].mean()

    def best(family: str, codes: int | None = None) -> str | None:
        found = [c.label for c in cfgs if c.family == family and codes in (None, c.codes) and c.label in mean]
        return max(found, key=lambda lab: mean[lab]) if found else None

    pairs = [(best("pmsfc", 10), best("mganprior", 10)), (best("pmsfc", 30), best("mganprior", 30)),
             (best("mganprior"), best("single-code")), (best("pmsfc"), best("single-code")),
             (best("released"), best("pmsfc", 30)),
             ("mGANprior N = 10", "mGANprior N = 10, /N"), ("mGANprior N = 30", "mGANprior N = 30, /N"),
             ("PmSFC R·K = 2·5, w0 = 0.25", "PmSFC R·K = 2·5, w0 = 1"),
             ("PmSFC R·K = 6·5, w0 = 0.25", "PmSFC R·K = 6·5, w0 = 1"),
             ("PmSFC R·K = 2·5, w0 tuned", "PmSFC R·K = 2·5, w0 = 0.25"),
             ("PmSFC R·K = 6·5, w0 tuned", "PmSFC R·K = 6·5, w0 = 0.25")]
    return [(a, b) for a, b in pairs if a in mean and b in mean]


def _random_labels(cfgs: list[Config], df: pd.DataFrame) -> list[str]:
    return [c.label for c in cfgs if c.name.startswith("random") and c.label in set(df["label"])]


def with_random_mean(df: pd.DataFrame, cfgs: list[Config]) -> pd.DataFrame:
    """Experiments b/c: ``df`` plus one row per image holding the mean PSNR and LPIPS over the random
    partitions (labelled ``MEAN_RANDOM``; images that every draw has), when there are several draws."""
    labels = _random_labels(cfgs, df)
    if len(labels) < 2:
        return df
    ok = _ok(df[df["label"].isin(labels)])
    per_image = ok.groupby("image_id").agg(draws=("label", "nunique"), psnr=("psnr", "mean"),
                                           lpips=("lpips", "mean"), subset=("subset", "first"))
    mean = per_image[per_image["draws"] == len(labels)].drop(columns="draws").reset_index()
    return pd.concat([df, mean.assign(label=MEAN_RANDOM, method=MEAN_RANDOM, status="ok")], ignore_index=True)


def subspace_pairs(cfgs: list[Config], df: pd.DataFrame) -> list[tuple[str, str]]:
    """The discovered masks against each random partition (and their mean), the random ones (their mean)
    and the discovered ones against one subspace."""
    present = set(df["label"])
    names = {c.name: c.label for c in cfgs if c.label in present}
    disc, one, rand = names.get("discovered"), names.get("R1-K30"), _random_labels(cfgs, df)
    random_side = MEAN_RANDOM if MEAN_RANDOM in present else (rand[0] if rand else None)
    pairs = [(disc, r) for r in rand] + ([(disc, MEAN_RANDOM)] if random_side == MEAN_RANDOM else [])
    pairs += [(random_side, one), (disc, one)]
    return [(a, b) for a, b in pairs if a is not None and b is not None]


def plateau(df: pd.DataFrame, cfgs: list[Config]) -> tuple[list[int], list[list[str]]]:
    """Median PSNR over images at the last trace points, and the median gain over the last interval."""
    rows, points = [], []
    for c in cfgs:
        for subset, g in _ok(df[df["label"] == c.label]).groupby("subset"):
            traces = [t for t in g["trace"] if isinstance(t, dict) and t.get("iteration")]
            if not traces:
                continue
            points = list(traces[0]["iteration"][-PLATEAU_POINTS:])
            psnr = np.array([[compare_runs.trace_value(t, "psnr", i) for i in points] for t in traces], dtype=float)
            gain = np.nanmedian(psnr[:, -1] - psnr[:, -2])
            rows.append([c.label, str(subset), *[f"{v:.2f}" for v in np.nanmedian(psnr, axis=0)], f"{gain:+.2f}"])
    return points, rows


def along_points(df: pd.DataFrame) -> list[int]:
    """The trace points every traced ok record has, from ``ALONG_FROM`` of the last one on."""
    traces = [set(t["iteration"]) for t in _ok(df).get("trace", []) if isinstance(t, dict) and t.get("iteration")]
    if not traces:
        return []
    common = sorted(set.intersection(*traces))
    return [i for i in common if i > 0 and i >= common[-1] * ALONG_FROM]


def along_pairs(df: pd.DataFrame, cfgs: list[Config], pairs: list[tuple[str, str]],
                kind: str) -> tuple[list[int], dict[tuple[str, str], list[stats.PairedDifference]]]:
    """The paired PSNR differences of ``pairs`` over all images at each trace point of
    :func:`along_points`: the records' PSNR replaced by their trace's value at the point (experiments
    b/c: the mean over the random partitions recomputed from those values; ``compare_runs.at_iteration``, as
    ``gib compare --at-iteration``), then paired as at the end."""
    points = along_points(df)
    out: dict[tuple[str, str], list[stats.PairedDifference]] = {p: [] for p in pairs}
    for i in points:
        at = compare_runs.at_iteration(df, i)
        if kind != "best":
            at = with_random_mean(at, cfgs)
        present = set(at["label"])
        for a, b in pairs:
            if a in present and b in present:
                out[(a, b)].append(stats.paired_differences(at, a, b, "psnr")[stats.OVERALL])
    return points, {p: d for p, d in out.items() if len(d) == len(points)}


def along_lines(df: pd.DataFrame, cfgs: list[Config], pairs: list[tuple[str, str]], kind: str) -> list[str]:
    points, diffs = along_pairs(df, cfgs, pairs, kind)
    if not points or not diffs:
        return []
    rows = [[f"{a} − {b}", *[f"{_diff(d, '{:+.2f}')} ({d.wins}/{d.n})" for d in ds]] for (a, b), ds in diffs.items()]
    return ["", "The same pairs along the way: ΔPSNR (dB) over all images at each trace point, with its 95 % BCa "
            "interval and (wins of A / images), from each record's trace (the PSNR of the start the record keeps, "
            "at that iteration of the same run):", "", *_table(["A − B", *[f"it {p}" for p in points]], rows)]


# ---- the page: Markdown -----------------------------------------------------------------------------
def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|",
            *["| " + " | ".join(r) + " |" for r in rows]]


def _cell(r: pd.Series, col: str, fmt: str) -> str:
    mean, low, high = (float(r.get(f"{col}_{k}", math.nan)) for k in ("mean", "ci_low", "ci_high"))
    if math.isnan(mean):
        return "–"
    return fmt.format(mean) if math.isnan(low) else f"{fmt.format(mean)} [{fmt.format(low)}, {fmt.format(high)}]"


def _several_starts(df: pd.DataFrame) -> bool:
    """Whether any record has several starts per image (``--restarts`` K > 1: a mean PSNR of its starts)."""
    return "psnr_starts" in df and bool(pd.to_numeric(df["psnr_starts"], errors="coerce").notna().any())


def summary_lines(df: pd.DataFrame, cfgs: list[Config]) -> list[str]:
    s = tables.summary(df)
    order = {c.label: i for i, c in enumerate(cfgs)}
    s = s.assign(order=s["method"].map(order)).sort_values(["order", "images"])
    starts = _several_starts(df)
    rows = [[str(r["method"]), str(r["images"]), str(r["n"]), str(r["codes"]), _cell(r, "psnr", "{:.2f}"),
             *([_cell(r, "psnr_starts", "{:.2f}")] if starts else []),
             _cell(r, "ssim", "{:.3f}"), _cell(r, "lpips", "{:.3f}"), f"{r['time_s_mean']:.3g}", str(r["failed"])]
            for _, r in s.iterrows()]
    return _table(["configuration", "images", "n", "codes", "PSNR (dB) ↑",
                   *(["PSNR mean of starts (dB) ↑"] if starts else []), "SSIM ↑", "LPIPS ↓", "s/img", "failed"], rows)


def _diff(d: stats.PairedDifference, fmt: str) -> str:
    if math.isnan(d.mean):
        return "–"
    return fmt.format(d.mean) if math.isnan(d.ci_low) else (
        f"{fmt.format(d.mean)} [{fmt.format(d.ci_low)}, {fmt.format(d.ci_high)}]")


NO_PAIRS = ("No paired table: no two configurations of this folder form a pair (`gib compare RUN A B --b-run OTHER` "
            "pairs them with another folder's records).")


def pair_lines(df: pd.DataFrame, pairs: list[tuple[str, str]]) -> list[str]:
    """Paired differences of PSNR and LPIPS (best start), and of the mean PSNR over the starts when
    the records have several starts per image (``--restarts``)."""
    starts = _several_starts(df)
    rows = []
    for a, b in pairs:
        ps, ls = (stats.paired_differences(df, a, b, m) for m in ("psnr", "lpips"))
        ms = stats.paired_differences(df, a, b, "psnr_starts") if starts else {}
        for subset, p in ps.items():
            q = ls[subset]
            m = ms.get(subset)
            mean_of_starts = [_diff(m, "{:+.2f}"), f"{m.wins}/{m.ties}/{m.losses}"] if m else []
            rows.append([f"{a} − {b}", subset, str(p.n), _diff(p, "{:+.2f}"), f"{p.wins}/{p.ties}/{p.losses}",
                         stats.p_text(p.p_value),
                         *mean_of_starts, _diff(q, "{:+.3f}"), f"{q.wins}/{q.ties}/{q.losses}"])
    return _table(["A − B", "images", "n", "ΔPSNR (dB) [95 % CI]", "PSNR W/T/L", "PSNR p",
                   *(["ΔPSNR mean of starts [95 % CI]", "W/T/L"] if starts else []), "ΔLPIPS [95 % CI]",
                   "LPIPS W/T/L"], rows)


def starts_note(df: pd.DataFrame) -> list[str]:
    """What the columns of several starts mean (nothing for one start per image)."""
    if not _several_starts(df):
        return []
    return ["", "With several starts per image, PSNR, SSIM and LPIPS are the best start's (lowest final loss, the "
            "method's own objective); *PSNR mean of starts* is each image's mean PSNR over its starts (what one "
            "start gives on average), paired the same way."]


def plateau_lines(df: pd.DataFrame, cfgs: list[Config]) -> list[str]:
    points, rows = plateau(df, cfgs)
    if not rows:
        return []
    header = ["configuration", "images", *[f"it {p}" for p in points], f"gain {points[-2]}→{points[-1]}"]
    return ["", "Median PSNR (dB) over images along the way (from each record's trace; the last column is the "
            "median per-image gain over the last interval: near 0 means a plateau):", "", *_table(header, rows)]




# ---- the page: text ---------------------------------------------------------------------------------
EXPLAIN = {
    "a": ["Each method at its tuned settings. mGANprior with N ∈ {10, 30} codes, with and without the official /N "
          "(the release divides the weighted sum of the N feature maps by N; the tuned profile does not). PmSFC's "
          "paper variant with R·K ∈ {10 (R = 2), 30 (R = 6)} codes (K = 5) and w0 ∈ {0.25, 1}, the initial mixing "
          "weight the paper does not give (the tuned value is replaced), and at the tuned value (\"w0 tuned\", the "
          "profile's entry as it stands). PmSFC as released (`variant=released`: "
          "R = 6 masked codes plus one unmasked base code, plain sum, loss 0.01 · MSE(composite) + MSE(base), no "
          "perceptual term, Adam lr 1e-4, the official affinity) at the same budget, **with one change**: the release "
          "starts every code at z = 0, which is a dead point of this DCGAN (all of G1(0) is 0 after the ReLU at "
          "split 3, so z = 0 gets exactly zero gradient and the codes would never move; `zero_init_problem` in "
          "methods/pmsfc.py), so its codes start from the prior like every other configuration's."],
    "b": ["Does it matter *which* channels share a subspace? PmSFC's discovery assumes that a channel is close to a "
          "linear combination of other channels (eq. 4); where the feature loss L_recF does not fall below its value "
          "at S = 0, S has found no such structure and its clusters can carry little. So first a split where it "
          "does, then PmSFC configurations of equal capacity (30 codes) at the tuned settings: the discovered "
          "masks (R = 6, K = 5), random partitions of the channels into subspaces of the discovered sizes "
          "(`partition=random`, drawn from the run's seed, and `random:1`, `random:2`, two more draws: one draw "
          "alone could be a lucky or an unlucky one), and one subspace of all channels (R = 1, K = 30)."],
    "c": [f"Experiment b on the second real generator, `{SECOND_GENERATOR}` (a conditional DCGAN of eyes, 128²)."],
}
CAPACITY = {
    "best": "`codes`: latent codes per image (R×K for PmSFC). The PmSFC–mGANprior pairs are at equal capacity "
            "(R·K = N); single-code has 1 code and PmSFC released 7 (6 masked + 1 base), so their pairs are not. "
            "Every configuration gets the same iterations; an iteration costs more with more codes (s/img: seconds "
            "per image in batches of up to 16).",
    "subspaces": "Capacity matched: 30 codes per image in every row, with the same iterations, images and initial-code "
                 "seeds; only the partition of the channels differs.",
}
PAIRED_CONVENTION = ("Paired tables: per image A − B on the same target; the mean with its 95 % BCa bootstrap interval "
                     "over images (as above), wins/ties/losses, and p, the two-sided sign-flip permutation test of the "
                     "same mean (`gib compare`; all 2^n sign patterns up to 9999, else 9999 drawn with seed 0: never "
                     "below 2/2^n, 0.0078 on 8 images, nor below 0.0002 when drawn). A bootstrap interval over a few "
                     "images can exclude 0 where p does not (a few large differences narrow it); read both.")
PAIRS = {
    "best": "Paired differences per image (A − B on the same target: mean with its 95 % BCa bootstrap interval over "
            "images, wins/ties/losses of A, and the p-value of a two-sided sign-flip permutation test of the PSNR "
            "mean, which cannot fall below 2/2^n, nor below 0.0002 from 14 images on). For each family and "
            "capacity, the *best* configuration (highest mean PSNR over all images of this run; chosen on the same "
            "images, every configuration is in the table above) is paired; where both of its settings ran, a pair "
            "within one family isolates one setting (mGANprior's /N, PmSFC's w0).",
    "subspaces": "Paired differences per image (A − B on the same target: mean with its 95 % BCa bootstrap interval "
                 "over images, wins/ties/losses of A, and the p-value of a two-sided sign-flip permutation test of "
                 "the PSNR mean, which cannot fall below 2/2^n, nor below 0.0002 from 14 images on). "
                 f"\"{MEAN_RANDOM}\": each image's mean over the random partitions (where there are several), so "
                 "the discovered masks meet the partition draw averaged out rather than one draw:",
}
SCAN_TEXT = ("**Choice of split.** At every split point with at least 2×2 spatial features and at least R = 6 channels "
             "(the 3-channel image layers are left out), S was trained with the paper's discovery settings ({steps} "
             "Adam steps at lr 1e-4, batch 4, λ = μ = 1, seed 0; {device}) and the feature loss L_recF of eq. (4) "
             "measured on {n} held-out prior samples, at S = 0 (the mean squared feature), at the initial S (1e-4 "
             "in every entry, where the discovery starts: the other reading of \"S ≈ 0\"; it rebuilds each channel "
             "as 1e-4 times the sum of the others, almost nothing) and at the trained S. The ratio is the trained "
             "value over the S = 0 value (the split is chosen by it); the ratio to the initial S says what training "
             "added. "
             "Below {clear:g} counts as clearly below. The training-curve column gives the first value (one batch of "
             "4 at the initial S: a single noisy batch, not a measurement; the held-out columns are) and the mean of "
             "the last 100 iterations.")


def _tuned_text(generator: str, records: pd.DataFrame, cfgs: list[Config], budget: int) -> str:
    """The tuned settings as experiment a's records hold them (the profile may have changed since):
    the profile's keys, from the configurations that use it, leaving out the settings each puts on
    top; every value a key took, and the budget of the entry that holds them. Without records, the
    current profile's entry for ``budget`` iterations."""
    by_name = {c.name: c for c in cfgs}
    parts = []
    for m in ("single-code", "mganprior", "pmsfc"):
        profile = tuned_settings(generator, m, budget)[1]
        seen: dict[str, set[str]] = {k: set() for k in sorted(profile)}
        for _, row in records.iterrows():
            cfg = by_name.get(row["config"])
            if cfg is None or cfg.method != m or cfg.profile != "tuned" or not isinstance(row["method_settings"], dict):
                continue
            for k in seen:
                if k in row["method_settings"] and k not in cfg.overrides:
                    seen[k].add(value_text(row["method_settings"][k]))
        if not any(seen.values()):
            seen = {k: {value_text(v)} for k, v in profile.items()}
        at = sorted({entry_budget(e) or 0 for e in method_entries(generator, m)
                     if all(value_text((e.get("settings") or {}).get(k)) in v for k, v in seen.items() if v)} - {0})
        where = f" (searched at {' and '.join(map(str, at))} iterations)" if at else " (no current entry holds them)"
        parts.append(f"{m}: " + ", ".join(f"{k} {' or '.join(sorted(v))}" for k, v in seen.items() if v) + where)
    return "; ".join(parts)


def _recorded_text(df: pd.DataFrame, settings: dict[str, Any]) -> str:
    """The keys of a profile entry ``settings`` with the values the records ``df`` hold (every value a key
    took, as the records may postdate or predate the profile); '' without records."""
    held = [s for s in df.get("method_settings", []) if isinstance(s, dict)]
    seen = {k: sorted({value_text(s[k]) for s in held if k in s}) for k in sorted(settings)}
    return ", ".join(f"{k} {' or '.join(v)}" for k, v in seen.items() if v)


def _all_sources(sections: dict[str, list[Source]]) -> list[Source]:
    """Every folder the page renders from, each once, in order of first use."""
    return list(dict.fromkeys(s for srcs in sections.values() for s in srcs))


def intro_lines(sections: dict[str, list[Source]], main: Source, command: str) -> list[str]:
    revs, main_a, main_cfgs = set(), pd.DataFrame(), []
    for exp in EXPERIMENTS:
        for src in sections[exp.key]:
            cfgs = experiment_configs(exp, src.out, src.protocol)
            df = load_experiment(cfgs, src.out, src.protocol)
            revs |= set(df["code_revision"].dropna()) if not df.empty else set()
            if exp.kind == "best" and src == main:
                main_a, main_cfgs = df, cfgs
    issue, protocol, folders = Protocol(), main.protocol, _all_sources(sections)
    scale = ("the issue's protocol" if protocol == issue else
             f"a reduced protocol: {protocol.iterations} iterations, {protocol.n_generated} generated faces "
             f"({protocol.images}), {protocol.restarts} restart{'s' if protocol.restarts > 1 else ''}")
    if any(s.protocol != protocol for s in folders):
        scale += " (a section rendered from another folder states that folder's protocol)"
    where = ", ".join(f"`{s.arg}/`" for s in folders)
    held = "; as experiment a's records hold them" if not main_a.empty else ""
    rerun = ("Rerunning it resumes what is missing and rewrites the page" if folders == [main] else
             f"It runs only into `{main.arg}/` and rewrites the page; each section's command reproduces its records")
    return ["# Results: the claim check, as three experiments", "",
            f"Generated by `{command}` from the records under {where} (code revision "
            f"{', '.join(sorted(revs)) or '?'}). {rerun}; the verdicts are hand-written and kept.", "",
            "**Question** (PmSFC paper, Table 1 and §4): is PmSFC ≥ mGANprior ≥ single-code in reconstruction "
            "quality, and is it the discovered channel subspaces that help? The first version of this page (500 "
            "iterations of untuned SGD, 8 + 8 images, one start, mGANprior with N = 10 codes against PmSFC's "
            "R·K = 30) found mGANprior ahead of PmSFC on every image and R = 1 the best PmSFC. Issue \"Fair "
            "comparisons\" (item 7) asked for tuned settings, equal capacity, budgets that reach a plateau, restarts, "
            "paired intervals, and a direct test of the subspaces: experiments a, b and c below.", "",
            f"**Scale.** The script's defaults are the issue's protocol: {issue.iterations} iterations, "
            f"{issue.n_generated} generated faces plus the 8 bundled photos, {issue.restarts} restarts (best by final "
            "loss). Experiment a alone costs about 20 CPU-hours on this project's 2-core CPU (measured per iteration "
            "and image at a batch of 16: tuned mGANprior N = 30 ≈ 23 ms, PmSFC R·K = 30 ≈ 27 ms, single-code ≈ 19 "
            f"ms), so this page holds {scale}. On a machine with a GPU, `python benchmarks/claim_check.py --out "
            "runs/claim-check --device cuda --write docs/results.md` runs the full protocol in one command.", "",
            f"**Images.** Generated faces: prior samples of `{GENERATOR}` (run seed 0; in-domain, an exact inversion "
            "exists); photos: the 8 bundled photos of scikit-image and scikit-learn (astronaut, chelsea, coffee, "
            "rocket, hubble, ihc, china, flower; out of domain, mostly not faces), centre-cropped and resized to 64².",
            "", f"**Settings.** `--profile tuned` ({_tuned_text(GENERATOR, main_a, main_cfgs, protocol.iterations)}"
            f"{held}), from `gib tune` on held-out generated faces with N = R·K = 30 "
            "(`gan_inversion_bench/profiles/dcgan-digiface64.json`; each entry records its command; a run uses the "
            "entry searched nearest its budget): settings searched at another budget may not be optimal at "
            f"{protocol.iterations} iterations, and none was searched at N = R·K = 10. The settings under test "
            "go on top (codes, /N, subspaces, w0, partition, split, variant). Loss (all but PmSFC released): pixel "
            "MSE + 0.001 · L1 of VGG16 relu3_3 features at 64² (the quick base profile). Split 3 (512×4×4) for both "
            "multi-code methods in experiment a. PmSFC's subspaces: the paper's discovery "
            f"({protocol.discovery_iterations} Adam steps at lr 1e-4, batch 4, λ = μ = 1, seed 0), the paper "
            "affinity (released: the official one), "
            "seeded spectral clustering; S is trained once per split and shared by every configuration.", ""]


def write_figure(df: pd.DataFrame, cfgs: list[Config], path: Path, per_subset: int = 4) -> str | None:
    """A grid: columns the first ``per_subset`` images of each subset, rows the target then each configuration
    (``None``, and no figure, where the folder holds no target PNGs: an archive)."""
    from PIL import Image

    ids = [i for sub in sorted(df["subset"].unique()) for i in sorted(df[df["subset"] == sub]["image_id"].unique())
           [:per_subset]]
    first = Path(df["folder"].iloc[0])
    rows = [("target", [first / "targets" / f"{i}.png" for i in ids])]
    if not rows[0][1][0].is_file():
        return None  # an archive (--archive): records without PNGs
    for c in [c for c in cfgs if c.label in set(df["label"])]:  # a row per configuration that ran
        recs = df[df["label"] == c.label].set_index("image_id")
        rows.append((c.label, [Path(recs.loc[i, "folder"]) / recs.loc[i, "recon_path"]
                               if i in recs.index and isinstance(recs.loc[i, "recon_path"], str) else None
                               for i in ids]))
    size = Image.open(rows[0][1][0]).size[0]
    grid = Image.new("RGB", (size * len(ids), size * len(rows)), "white")
    for r, (_, files) in enumerate(rows):
        for col, f in enumerate(files):
            if f is not None and f.is_file():
                grid.paste(Image.open(f).convert("RGB").resize((size, size)), (col * size, r * size))
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)
    subsets = ", then ".join(f"the first {per_subset} {s} images" for s in sorted(df["subset"].unique()))
    return f"Rows, top to bottom: {', '.join(name for name, _ in rows)}; columns: {subsets} (by id)."


def _split_flags(exp: Experiment, out: Path) -> str:
    """Experiments b/c: the options that make a fresh run scan and use the splits this folder did."""
    scan = _read_json(out / exp.key / "scan.json")
    flags = [] if scan.get("scan_all") or not scan.get("splits") else [
        f"--scan-splits {','.join(sorted(scan['splits'], key=int))}"]
    return " ".join(flags + ([f"--split {scan['forced']}"] if scan.get("forced") is not None else []))


def _commands(exp: Experiment, src: Source) -> list[str]:
    out_arg, protocol = _read_json(src.out / ARCHIVED).get("out", src.arg), src.protocol
    used = f"{SCRIPT} --out {out_arg} {protocol.flags()} {_split_flags(exp, src.out)} --only {exp.key} " \
           "--write docs/results.md"
    full = f"{SCRIPT} --out runs/claim-check --only {exp.key} --device cuda --write docs/results.md"
    lines = [f"**Reproduce:** `{' '.join(used.split())}`"]
    if src.arg != out_arg and not protocol.settings_from:  # committed records: their settings can be pinned
        lines[0] += (f" (at the profile entry of the day it runs; add `--settings-from {src.arg}`, with a new `--out` "
                     "folder, to run at the settings these records hold)")
    if protocol != Protocol():
        lines[0] += f"; the issue's full protocol (the script's defaults): `{full}`"
    db = f"one SQLite database per configuration (`gib table {src.arg}/{exp.key}/<configuration>` renders one, `gib " \
         "compare` pairs two; the folder names are in the Runs table at the end)"
    kept = (f"committed (`--archive`: the records alone, from the run folder `{out_arg}`; targets and "
            "reconstructions are made again by the command above)" if src.arg != out_arg else
            "git-ignored, regenerated by the command above (`--archive DEST` copies the records alone, for committing)")
    return [lines[0] + ".", "", f"**Raw records:** `{src.arg}/{exp.key}/<configuration>/results.sqlite`, {db}; {kept}.",
            ""]


def _sessions(log: dict[str, Any], keys: list[str]) -> list[dict[str, Any]]:
    return [s for k in keys for s in log.get(k, []) if s.get("new_records", 0) > 0]


def elapsed_s(sessions: list[dict[str, Any]]) -> float | None:
    """The time during which at least one of ``sessions`` ran (the union of their intervals, each ending at
    its ``finished`` and lasting its ``wall_s``); None when a session lacks its finishing time."""
    try:
        spans = sorted((end - s["wall_s"], end) for s in sessions
                       for end in [datetime.datetime.fromisoformat(s["finished"]).timestamp()])
    except (KeyError, TypeError, ValueError):
        return None
    total, reach = 0.0, -math.inf
    for start, end in spans:
        total += max(0.0, end - max(start, reach))
        reach = max(reach, end)
    return total


def _wall_text(sessions: list[dict[str, Any]], n_configs: int) -> str:
    wall, elapsed = sum(s["wall_s"] for s in sessions), elapsed_s(sessions)
    overlap = (f"; summed over sessions some of which ran at the same time: {elapsed / 60:.0f} min elapsed while any "
               "ran" if elapsed is not None and elapsed < wall - 60 else "")
    return (f"Wall time {wall / 60:.0f} min for {n_configs} configurations (PmSFC's discovery, model loading and "
            f"warm-up included{overlap})")


def protocol_lines(exp: Experiment, df: pd.DataFrame, keys: list[str], log: dict[str, Any],
                   protocol: Protocol) -> list[str]:
    ok = _ok(df)
    n = {sub: ok[ok["subset"] == sub]["image_id"].nunique() for sub in sorted(ok["subset"].unique())}
    sessions = _sessions(log, keys)
    loads = [x for s in sessions if s["load_after"] for x in (s["load_before"], s["load_after"][0])]
    load = f"1-minute load {min(loads):.1f}–{max(loads):.1f} at the starts and ends of the runs" if loads else ""
    issue, images = Protocol(), " + ".join(f"{v} {k}" for k, v in n.items())
    return [f"**Protocol used:** {protocol.iterations} iterations (the issue: {issue.iterations}), "
            f"{protocol.restarts} restart{'s' if protocol.restarts > 1 else ''} per image{_schedule_text(protocol)} "
            f"(the issue: {issue.restarts}; best of K by final loss), images: {images}"
            f" (the issue: at least {issue.n_generated} generated faces and all 8 photos), the same images and "
            f"initial-code seeds for every configuration; {_devices_text(df)}; "
            f"fp32. {_wall_text(sessions, df['label'].nunique())}{'; ' + load if load else ''} (2 cores: above 2, "
            "other work shared the CPU and the times are inflated).", ""]


def _devices_text(df: pd.DataFrame) -> str:
    """The device, or the devices with how many results ran on each (a check continued on another machine)."""
    counts = df["device"].value_counts().sort_index()
    if len(counts) == 1:
        return f"device: {counts.index[0]}"
    return ("devices (results per device; a per-image pair can span two): "
            + "; ".join(f"{d} ({n})" for d, n in counts.items()))


def _schedule_text(protocol: Protocol) -> str:
    if protocol.lr_schedule == "constant":
        return ""
    return (f" with a {protocol.lr_schedule} learning-rate schedule (every rate of the settings decays to 0 over the "
            "iterations; the profiles' rates were tuned constant)")


def _verdict(key: str) -> str:
    return f"VERDICT:{key}"


def heading_lines(exp: Experiment, src: Source, main: Protocol, sub: bool) -> list[str]:
    """An experiment's heading (a subsection for a second folder), and its folder's protocol where it is not
    the page's."""
    if sub:
        scan = _read_json(src.out / exp.key / "scan.json")
        where = (f": split {scan['chosen']} ({scan['splits'][str(scan['chosen'])]['name']})"
                 if str(scan.get("chosen")) in scan.get("splits", {}) else "")
        lines = [f"### The same from `{src.arg}`{where}", ""]
    else:
        lines = [f"## Experiment {exp.key}: {exp.title}", "", *EXPLAIN[exp.key], ""]
    differs = [f"{f.name.replace('_', ' ')} {getattr(src.protocol, f.name) or 'none'} (the page's: "
               f"{getattr(main, f.name) or 'none'})" for f in fields(Protocol)
               if getattr(src.protocol, f.name) != getattr(main, f.name)]
    if differs:
        lines += [f"**Its own folder and protocol** (`{src.arg}`): {'; '.join(differs)}.", ""]
    return lines


def experiment_lines(exp: Experiment, src: Source, page: Path, main: Protocol, sub: bool = False) -> list[str]:
    """One experiment's section from one folder (or how to run it, when it has no results there)."""
    out, protocol = src.out, src.protocol
    lines = heading_lines(exp, src, main, sub)
    cfgs = experiment_configs(exp, out, protocol)
    df = load_experiment(cfgs, out, protocol)
    if protocol.settings_from and not df.empty:
        method = df["config"].map({c.name: c.method for c in cfgs})
        held = "; ".join(f"{m}: " + _recorded_text(df[method == m], tuned_settings(
            tuned_source(exp, protocol, [m]) or exp.generator, m, protocol.iterations)[1])
                         for m in dict.fromkeys(c.method for c in cfgs) if (method == m).any())
        lines += [f"**Settings pinned.** `--settings-from {protocol.settings_from}`: every configuration ran at the "
                  "method settings that the records of the configuration of the same name hold there, not at the "
                  "profile entry of the day it ran (the iterations and the learning-rate schedule are this "
                  f"protocol's): {held}.", ""]
    elif transferred(exp, protocol) and not sub:
        _, settings = tuned_settings(protocol.tuned_from, "pmsfc", protocol.iterations)
        why = (f"`{exp.generator}` has no tuned PmSFC profile, so every row" if not has_tuned(exp.generator, ["pmsfc"])
               else f"`--tuned-from` was given, so every row (not `{exp.generator}`'s own tuned profile, which the "
                    f"command without `--tuned-from` uses)")
        lines += [f"**Settings transferred, not tuned here.** {why} uses the settings tuned on `{protocol.tuned_from}` "
                  f"(`--tuned-from`: {_recorded_text(df, settings) or settings_text(settings)}); the rows differ only "
                  "in the partition, so the comparison stays paired, but the absolute numbers may be below what tuned "
                  "settings reach.", ""]
    elif exp.generator != GENERATOR and tuned_source(exp, protocol, ["pmsfc"]) == exp.generator:
        _, settings = tuned_settings(exp.generator, "pmsfc", protocol.iterations)
        lines += [f"**Settings tuned on this generator.** Every row uses `{exp.generator}`'s own tuned PmSFC "
                  f"profile ({_recorded_text(df, settings) or settings_text(settings)}; "
                  f"`gan_inversion_bench/profiles/{exp.generator}.json`, whose entry records its search); the "
                  "settings under test go on top.", ""]
    if exp.kind == "subspaces":
        lines += scan_lines(exp, out, protocol)
    if df.empty:
        return lines + not_run_lines(exp, src)
    log = session_log(out)
    keys = [c.key for c in cfgs] + [k for k in log if k.startswith(f"{exp.key}/scan")]
    lines += protocol_lines(exp, df, keys, log, protocol) + _commands(exp, src)
    lines += [*summary_lines(df, cfgs), "", CAPACITY[exp.kind], ""]
    paired = df if exp.kind == "best" else with_random_mean(df, cfgs)
    pairs = best_pairs(cfgs, df) if exp.kind == "best" else subspace_pairs(cfgs, paired)
    # a folder of one configuration per family and capacity pairs only with other folders (`--b-run`)
    lines += [PAIRS[exp.kind], "", *pair_lines(paired, pairs)] if pairs else [NO_PAIRS]
    lines += [*starts_note(df), *plateau_lines(df, cfgs), *along_lines(df, cfgs, pairs, exp.kind)]
    fig = page.parent / "img" / f"claim_check_{exp.key}{'_' + src.out.name if sub else ''}.png"
    caption = write_figure(df, cfgs, fig)
    if caption is None and fig.is_file():
        caption = (f"Drawn when the page was rendered from the run folder; `{src.arg}` holds the records without "
                   "their PNGs, so the figure was kept as it was.")
    if caption is not None:
        lines += ["", f"![targets and reconstructions, experiment {exp.key}](img/{fig.name})", "", caption, ""]
    missing = [c.label for c in cfgs if c.label not in set(df["label"])]
    if missing:
        if lines[-1]:  # after a table, when no figure was drawn
            lines.append("")
        lines += [f"Not run in this session: {', '.join(missing)} (the command above runs them).", ""]
    return lines


def not_run_lines(exp: Experiment, src: Source) -> list[str]:
    lines = ["**Not run in this session.**"]
    if not has_tuned(exp.generator, ["pmsfc"]):
        lines[0] += (f" `{exp.generator}` has no tuned profile; tuning PmSFC on it (`gib tune -g {exp.generator} "
                     "-m pmsfc --trials 24 --budget 100 --images 4 --image-seed 1 --seed 0 --base-profile quick`) "
                     "costs about an hour on this project's 2-core CPU, and the check itself more than experiment b "
                     "(128² images).")
    return [*lines, "", *_commands(exp, src)]


def scan_lines(exp: Experiment, out: Path, protocol: Protocol) -> list[str]:
    """Experiment b/c's choice of split: the feature loss at the trained S against its S = 0 value."""
    scan = _read_json(out / exp.key / "scan.json")
    if not scan.get("splits"):
        return []
    rows = []
    for k in sorted(scan["splits"], key=int):
        e = scan["splits"][k]
        mark = " ◀" if str(scan.get("chosen")) == k else ""
        init = [f"{e['feature_init']:.4g}", f"{e['ratio_init']:.3f}"] if "feature_init" in e else ["–", "–"]
        rows.append([f"{k}{mark}", e["name"], "×".join(map(str, e["shape"])), f"{e['feature_s0']:.4g}", init[0],
                     f"{e['feature_trained']:.4g}", f"**{e['ratio']:.3f}**", init[1],
                     f"{e['curve_feature_first']:.4g} → {e['curve_feature_last100']:.4g}",
                     f"{e['curve_data_last100']:.4g}", "cached" if e["train_s"] is None else f"{e['train_s']:.0f}"])
    header = ["split", "layer", "C×H×W", "L_recF at S = 0", "at initial S", "at trained S", "ratio (to S = 0)",
              "ratio to initial S", "training curve L_recF",
              "L_recD (last 100)", "discovery (s)"]
    steps = scan.get("discovery_iterations", protocol.discovery_iterations)
    text = SCAN_TEXT.format(n=HELD_OUT, clear=CLEAR_DROP, device=scan.get("device", "?"), steps=steps)
    return [text, "", *_table(header, rows), "", f"**Split used: {scan['chosen']}** ({scan['reason']}).", ""]


def _natural(key: str) -> list[Any]:
    """``b/scan-2`` before ``b/scan-10``."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", key)]


#: the load cell of a session read from its records (:func:`unfinished_sessions`): nothing was measured
UNMEASURED = "not measured; wall time to its last record"
UNFINISHED_TEXT = (" A session that never ended (killed: `abandoned`; Ctrl-C: `interrupted`; `failed`; or still "
                   "`running`) is read from its records: the harness's session table says which, and its wall time "
                   "runs from its start to its last record.")


def runs_lines(sections: dict[str, list[Source]], main: Source) -> list[str]:
    rows = []
    for src in _all_sources(sections):
        rows += _runs_rows(src, [k for k, srcs in sections.items() if src in srcs], "" if src == main else
                           f"{src.out.name}/")
    return ["## Runs", "", "Every configuration's sessions that added records: wall time (discovery, model loading and "
            "warm-up included) and the load average before → after (1/5/15 minutes; 2 cores: a load above 2 means "
            "other work shared the CPU). A configuration from another folder than the first is prefixed with its "
            f"folder's name.{UNFINISHED_TEXT if any(UNMEASURED in r[-1] for r in rows) else ''}", "",
            *_table(["configuration", "sessions", "wall (s)", "records", "load before → after"], rows), ""]


def _runs_rows(src: Source, experiments: list[str], prefix: str) -> list[list[str]]:
    log = session_log(src.out)
    rows = []
    for key, sessions in sorted(log.items(), key=lambda kv: _natural(kv[0])):
        if key.split("/")[0] not in experiments:
            continue
        done = [s for s in sessions if s.get("new_records", 0) > 0] or sessions[-1:]
        rows.append([prefix + key, str(len(done)), f"{sum(s['wall_s'] for s in done):.0f}",
                     str(sum(s.get("new_records", 0) for s in done)),
                     ", ".join(map(_load_text, done))])
    return rows


def _load_text(session: dict[str, Any]) -> str:
    if not session["load_after"]:  # from the records: it never ended
        return f"{session['status']} ({UNMEASURED})"
    stopped = " (stopped by `gib stop`)" if session.get("status") == "stopped" else ""
    return f"{session['load_before']:.1f} → {'/'.join(f'{x:.1f}' for x in session['load_after'])}{stopped}"


#: the page may end with other results between two of these markers; regenerating keeps them
KEPT = "<!-- kept: other results -->"
#: in an archive (``--archive DEST``): the check folder it was copied from
ARCHIVED = "archive.json"


def archive_check(out: Path, out_arg: str, dest: Path) -> None:
    """``--archive DEST``: what the page is rendered from, without the PNGs and caches, for committing:
    each configuration's records (``gib archive``: one consistent SQLite file), the protocol, the session
    log, the split scans, and ``archive.json`` naming ``out_arg``. A configuration without records is left
    out (archiving it while it starts would block its later archive). A configuration already archived with
    as many records is skipped; one with fewer is refused (remove it to archive it again). ``DEST`` serves
    one check folder: ``--section EXP=DEST`` renders from it, and its Reproduce line names ``out_arg``."""
    from gan_inversion_bench.archive import archive_run

    made_from = _read_json(dest / ARCHIVED).get("out", out_arg)
    if made_from != out_arg or _read_json(dest / "protocol.json") not in ({}, _read_json(out / "protocol.json")):
        raise SystemExit(f"--archive {dest}: it archives the check folder {made_from} (its protocol.json); "
                         f"archive {out_arg} into another folder")
    for db in sorted(out.glob("*/*/results.sqlite")):
        rel, n = db.parent.relative_to(out), _count(db.parent)
        if n == 0:  # a configuration that has not written a record yet (still starting, or failed at once)
            print(f"not archived {rel}: no records yet", flush=True)
            continue
        if (dest / rel / db.name).exists():
            have = _count(dest / rel)
            if have != n:
                raise SystemExit(f"--archive: {dest / rel} holds {have} records, {out / rel} {n}; "
                                 f"remove {dest / rel / db.name} to archive it again")
            continue
        info = archive_run(db.parent, dest / rel)
        print(f"archived {rel}: {info['records']} records, {info['bytes'] / 1024:.0f} KiB", flush=True)
    for name in ("protocol.json", "runs.json", *(p.relative_to(out).as_posix() for p in out.glob("*/scan.json"))):
        if (out / name).is_file():
            _write_json(dest / name, _read_json(out / name))
    _write_json(dest / ARCHIVED, {"out": out_arg})


def seed_from_records(records: Path, out: Path) -> None:
    """``--resume-from RECORDS``: an unfinished check continues from its archive (a run folder lives only on
    the machine that ran it). Copies into ``out`` what it lacks: the protocol (one that differs is refused),
    each configuration's ``results.sqlite``, the session log and the split scans. The configurations resume
    from their records like any run folder; a preparation made again is checked against them
    (``gan_inversion_bench.harness.resume``). A link inside ``records`` is refused, never followed."""
    if not (records / "protocol.json").is_file():
        raise SystemExit(f"--resume-from {records}: no protocol.json there; expected a folder --archive wrote")
    theirs, ours = _read_json(records / "protocol.json"), _read_json(out / "protocol.json")
    if ours and ours != theirs:
        raise SystemExit(f"--resume-from {records}: its protocol {theirs} differs from {out}'s {ours}; "
                         f"resume into another --out")
    copied, kept = [], []
    wanted = [*sorted(records.glob("*/*/results.sqlite")), records / "protocol.json", records / "runs.json",
              *sorted(records.glob("*/scan.json"))]
    try:  # all checked before anything is copied
        for src in wanted:
            inside(records, src.relative_to(records))
    except UnsafePathError as e:
        raise SystemExit(f"--resume-from: {e}") from None
    for src in filter(Path.is_file, wanted):
        rel = src.relative_to(records)
        if (out / rel).exists():
            kept.append(rel.as_posix())
            continue
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, out / rel)
        copied.append(rel.as_posix())
    print(f"--resume-from {records}: copied {', '.join(copied) or 'nothing'}"
          + (f"; {out} already holds {', '.join(kept)} (kept)" if kept else ""), flush=True)


def write_page(sections: dict[str, list[Source]], main: Source, page: Path, command: str) -> None:
    """The page: each experiment from its folders (``--section``; the first as the section, the others as
    subsections before its verdict), then every folder's sessions and the conventions."""
    lines = intro_lines(sections, main, command)
    first = pd.DataFrame()
    for exp in EXPERIMENTS:
        ran = False
        for i, src in enumerate(sections[exp.key]):
            lines += experiment_lines(exp, src, page, main.protocol, sub=i > 0)
            df = load_experiment(experiment_configs(exp, src.out, src.protocol), src.out, src.protocol)
            ran, first = ran or not df.empty, df if first.empty else first
        lines += [_verdict(exp.key), ""] if ran else []  # a verdict only on results
    conventions = [s for s in tables.footer(first) if not s.startswith("Alone s/img")]  # latency is not measured
    conventions.append(PAIRED_CONVENTION)
    lines += [*runs_lines(sections, main), "## Conventions", "", *[f"- {s}" for s in conventions]]
    text = "\n".join(lines) + "\n"
    old = page.read_text() if page.exists() else ""
    for exp in EXPERIMENTS:  # keep hand-written verdicts when regenerating
        marker = f"<!-- verdict {exp.key} -->"
        body = old.split(marker)[1] if old.count(marker) >= 2 else "\n(verdict to be written)\n"
        text = text.replace(_verdict(exp.key), f"{marker}{body}{marker}")
    if old.count(KEPT) >= 2:  # other results on the same page (e.g. restoration tasks), kept as written
        text += f"\n{KEPT}{old.split(KEPT)[1]}{KEPT}\n"
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(text)
    print(f"wrote {page}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--out", default="runs/claim-check", help="one folder per protocol (default: %(default)s)")
    ap.add_argument("--write", default=None, help="write the Markdown page here (e.g. docs/results.md)")
    ap.add_argument("--iterations", type=int, default=None, help="per restart (issue: 2000)")
    ap.add_argument("--n-generated", type=int, default=None, help="generated images (issue: 32)")
    ap.add_argument("--images", default=None, help="image set (default generated+photos: the 8 bundled photos)")
    ap.add_argument("--restarts", type=int, default=None, help="initialisations per image, best scored (issue: 3)")
    ap.add_argument("--discovery-iterations", type=int, default=None, help="PmSFC stage 1 (paper: 10 000)")
    ap.add_argument("--tuned-from", default=None, help="experiments b/c on a generator without a tuned PmSFC "
                    "profile: use this generator's tuned settings (stated on the page)")
    ap.add_argument("--settings-from", default=None, metavar="RECORDS",
                    help="run each configuration at the method settings its records in RECORDS hold (a check "
                         "folder or its archive under docs/records/), not at today's profile entry: a rerun that "
                         "is the same experiment; the iterations and the learning-rate schedule stay "
                         "this protocol's")
    ap.add_argument("--lr-schedule", default=None, choices=LR_SCHEDULES,
                    help="every configuration's learning-rate schedule (default: constant, the profiles'; cosine "
                         "decays every rate to 0 over the iterations)")
    ap.add_argument("--only", default=None, help="comma-separated: a, b, c, a/single-code, b/scan, …")
    ap.add_argument("--split", type=int, default=None, help="experiments b/c: this split instead of the scan's choice")
    ap.add_argument("--scan-splits", default=None, help="experiments b/c: scan only these splits (default: all)")
    ap.add_argument("--resume-from", default=None, metavar="RECORDS",
                    help="continue a check archived unfinished (--archive) on another machine: copy its records, "
                         "protocol, session log and scans into --out where --out lacks them, then run the rest")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch-size", type=int, default=None,
                    help="images per batch (default: the harness's estimate); under Adam an image's result can depend "
                         "on its batch by a fraction of a dB, so a run paired with other records can match theirs")
    ap.add_argument("--no-run", action="store_true", help="only write the page from existing results")
    ap.add_argument("--section", action="append", default=[], metavar="EXP=FOLDER",
                    help="the page renders experiment EXP from FOLDER (a check folder with its own protocol) instead "
                         "of --out; given again for the same EXP, each further folder becomes a subsection (e.g. b at "
                         "another split). Only the page: runs go into --out")
    ap.add_argument("--archive", default=None, metavar="DEST",
                    help="after running, copy the records alone (no PNGs, no caches) into DEST for committing, e.g. "
                         "docs/records/NAME; --section EXP=DEST then renders the page from them")
    args = ap.parse_args(argv)
    out = Path(args.out)
    sections = parse_sections(args.section)
    out.mkdir(parents=True, exist_ok=True)
    if args.resume_from:
        seed_from_records(Path(args.resume_from), out)
    protocol = resolve_protocol(out, args)
    if not args.no_run:
        for name in ("single-code", "mganprior", "pmsfc"):  # import now: a long run keeps the code it started with
            METHODS.get(name)
        try:
            for exp in EXPERIMENTS:
                run_experiment(exp, out, protocol, args)
        except harness.StopRequested as e:  # `gib stop OUT` (or one configuration's folder): no further configuration
            if str(e):
                print(f"{e} The check stopped there.", flush=True)
            return harness.EXIT_STOPPED
    if args.archive:
        archive_check(out, args.out, Path(args.archive))
    if args.write:
        main_src = Source(out, args.out, protocol)
        by_exp = {e.key: [Source(Path(f), f, _folder_protocol(Path(f))) if Path(f) != out else main_src
                          for f in sections.get(e.key, [])] or [main_src] for e in EXPERIMENTS}
        command = f"{SCRIPT} --out {args.out} {protocol.flags()} --no-run " + " ".join(
            f"--section {k}={f}" for k, fs in sections.items() for f in fs) + " --write docs/results.md"
        write_page(by_exp, main_src, Path(args.write), " ".join(command.split()))
    return 0


def parse_sections(given: list[str]) -> dict[str, list[str]]:
    """``--section EXP=FOLDER`` entries, by experiment, in order."""
    out: dict[str, list[str]] = {}
    keys = [e.key for e in EXPERIMENTS]
    for entry in given:
        key, sep, folder = entry.partition("=")
        if not sep or key not in keys or not folder:
            raise SystemExit(f"--section {entry!r}: expected EXP=FOLDER with EXP one of {', '.join(keys)}")
        out.setdefault(key, []).append(folder.rstrip("/"))
    return out


def _folder_protocol(folder: Path) -> Protocol:
    """The protocol of a check folder named by ``--section``; a folder without one is refused."""
    stored = _read_json(folder / "protocol.json")
    if not stored:
        raise SystemExit(f"--section {folder}: no protocol.json there, so it is not a folder this script ran into "
                         "(run it with --out first)")
    return Protocol(**{k: v for k, v in stored.items() if k in {f.name for f in fields(Protocol)}})


if __name__ == "__main__":
    sys.exit(main())
