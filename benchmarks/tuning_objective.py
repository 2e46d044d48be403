"""The objective of `gib tune` for given settings: each tuning image's PSNR after the budget, and their mean.

`gib tune` keeps only a trial's mean; this recomputes it for any settings, for example to ask whether a
search's choice beats the entry it would replace on the search's own objective (docs/results.md,
"Single-code at 2000 iterations"):

    python benchmarks/tuning_objective.py -g dcgan-digiface64 -m single-code --budget 2000 \
        --set optimizer=adam --set lr=0.18309438164705086
    python benchmarks/tuning_objective.py -m pmsfc --budget 2000 --entry 100   # an entry's settings at 2000

and, for a search whose entry predates per-image values, the paired check `gib tune` now prints
(`gan_inversion_bench/tune_choice.py`): its best trial and the trial it is paired with, scored again

    python benchmarks/tuning_objective.py -m pmsfc --check docs/records/tune-photos-pmsfc/dcgan-digiface64.json \
        --entry 2000

The images, their order, the initial-code seeds and the base profile are the search's
(`tuning.tuning_images`, seeds 0 … n−1, `--base-profile quick`; `--tune-images` as the search's), so a
trial's settings give its value again.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any

import torch

from gan_inversion_bench.cli_common import build_generator, coerce
from gan_inversion_bench.generator import conditioned
from gan_inversion_bench.metrics import psnr
from gan_inversion_bench.profiles import entry_budget, method_entries, profile_path
from gan_inversion_bench.registry import METHODS
from gan_inversion_bench.tune_choice import PER_IMAGE, choice_check, choice_lines, compared_trial, image_labels
from gan_inversion_bench.tuning import TuneConfig, settings_of, tuning_images, tuning_set


def objective(generator: str, method: str, settings: dict[str, Any], tc: TuneConfig,
              device: str = "cpu") -> list[float]:
    """Per-image PSNR (dB) of ``method`` at ``settings`` (text as on the command line, or values as a
    profile holds them) on the tuning images of the search ``tc`` (its budget, images, image seed and
    base profile) after ``tc.budget`` iterations."""
    G = build_generator(generator, None, (), device)
    m = METHODS.get(method).from_profile(tc.base_profile).with_budget(tc.budget)
    defaults = m.get_settings()
    unknown = sorted(set(settings) - set(defaults))
    if unknown:
        raise SystemExit(f"--set {unknown[0]}: {method} has no such setting (it has: {', '.join(sorted(defaults))})")
    m = m.with_settings(**{k: coerce(v, defaults[k], f"--set {k}") if isinstance(v, str) else v
                           for k, v in settings.items()})
    m.prepare(G, seed=0)  # as the search does, before its images
    targets, classes = tuning_images(G, tc, G.device)
    with conditioned(G, classes):
        rec = m.invert(G, targets, seeds=list(range(tc.n_images))).reconstructions
    rec = torch.nan_to_num(rec.float(), nan=0.0).clamp(-1, 1)
    return [float(v) for v in psnr(rec, targets)]


def check_search(generator: str, method: str, entry: dict[str, Any], device: str = "cpu") -> dict[str, Any] | None:
    """`gib tune`'s paired check of ``entry``'s choice (tune_choice.choice_check), with the per-image PSNR of
    its best trial and of the trial it is paired with computed again on the search's own tuning images.
    Prints each trial's recorded and recomputed mean, then the check's lines."""
    t = entry["tuning"]
    tc = TuneConfig(trials=1, budget=t["budget"], n_images=t["n_images"], image_seed=t.get("image_seed", 1),
                    base_profile=entry.get("base_profile", "quick"), images=t.get("images", "generated"))
    m = METHODS.get(method).from_profile(tc.base_profile)
    trials = [dict(x) for x in entry["trials"]]
    best = next(x for x in trials if x["number"] == t["best_trial"])
    for trial in (best, compared_trial(trials, best, "warm_start" in t)):
        if trial is None:
            print(f"{method}: no trial to pair with the best (the warm start is the best, or it alone completed)")
            return None
        settings = {**t.get("held", {}), **settings_of(m, trial["params"], t.get("choices") or {})}
        trial[PER_IMAGE] = objective(generator, method, settings, tc, device)
        print(f"{method}: trial {trial['number']} recorded {trial['value']:.4f} dB, scored again "
              f"{sum(trial[PER_IMAGE]) / len(trial[PER_IMAGE]):.4f} dB")
    ids = image_labels(tuning_set(build_generator(generator, None, (), device), tc))
    check = choice_check({**entry, "trials": trials}, ids)
    for line, _ in choice_lines(method, check):
        print(line)
    return check


def tuned_entry_at(generator: str, method: str, budget: int) -> dict[str, Any]:
    """The tuned profile's entry of ``method`` searched at ``budget`` iterations (``GIB_PROFILES`` or the
    committed profile); refused, with the budgets there are, where it holds none."""
    found = method_entries(generator, method)
    for entry in found:
        if entry_budget(entry) == budget:
            return entry
    have = ", ".join(str(entry_budget(e)) for e in found) or "none"
    raise SystemExit(f"--entry {budget}: {profile_path(generator)} holds no {method} entry searched at {budget} "
                     f"iterations (its entries' budgets: {have})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-g", "--generator", default="dcgan-digiface64")
    ap.add_argument("-m", "--method", required=True)
    ap.add_argument("--budget", type=int, help="iterations, as `gib tune --budget` (required but with --check)")
    ap.add_argument("--images", type=int, default=4, help="tuning images, as `gib tune --images`")
    ap.add_argument("--image-seed", type=int, default=1)
    ap.add_argument("--tune-images", default="generated", metavar="generated|photos-tune|folder:PATH",
                    help="the tuning image set, as `gib tune --tune-images`")
    ap.add_argument("--base-profile", choices=["quick", "paper"], help="default: quick, or --entry's")
    ap.add_argument("--entry", type=int, metavar="N", help="the settings (and base profile) of the tuned profile's "
                    "entry searched at N iterations; --set goes on top")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a setting (repeatable)")
    ap.add_argument("--check", metavar="PROFILE_JSON", help="gib tune's paired check of the choice of this profile "
                    "file's --entry (its best trial against the warm start or runner-up), scored again")
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args(argv)
    if a.check is not None:
        return _check(ap, a)
    if a.budget is None:
        ap.error("--budget N is required (the iterations of the search whose objective to compute)")
    bad = [s for s in a.set if "=" not in s]
    if bad:
        ap.error(f"--set {bad[0]!r}: expected KEY=VALUE")
    settings: dict[str, Any] = {}
    base = a.base_profile or "quick"
    if a.entry is not None:
        entry = tuned_entry_at(a.generator, a.method, a.entry)
        settings, base = dict(entry["settings"]), entry.get("base_profile", base)
        if a.base_profile not in (None, base):  # the entry's settings are deltas on its own base profile
            ap.error(f"--base-profile {a.base_profile}: the entry searched at {a.entry} was searched on base "
                     f"profile {base!r}; drop --base-profile, or pass --set on top of that base instead of --entry")
    settings.update(dict(s.split("=", 1) for s in a.set))
    try:
        tc = TuneConfig(trials=1, budget=a.budget, n_images=a.images, image_seed=a.image_seed, base_profile=base,
                        images=a.tune_images)
    except ValueError as e:
        ap.error(str(e))
    values = objective(a.generator, a.method, settings, tc, a.device)
    print(f"{a.method} at {settings} after {a.budget} iterations: mean {sum(values) / len(values):.4f} dB, "
          f"per image {', '.join(f'{v:.2f}' for v in values)}")
    return 0


def _check(ap: argparse.ArgumentParser, a: argparse.Namespace) -> int:
    """--check: the entry of ``a.method`` searched at ``--entry`` in the profile file ``a.check``."""
    from pathlib import Path

    from gan_inversion_bench.profiles import entries, read_profile

    if a.entry is None:
        ap.error("--check needs --entry N: the budget of the entry whose search to check")
    if not Path(a.check).is_file():
        ap.error(f"--check {a.check}: no such profile file (a gib tune --out file, or one under docs/records/)")
    data = read_profile(Path(a.check))
    first = data["methods"].get(a.method)
    found = [e for e in (entries(first) if first else []) if entry_budget(e) == a.entry]
    if not found:
        ap.error(f"--check {a.check}: no {a.method} entry searched at {a.entry} iterations there")
    check_search(data["generator"], a.method, found[0], a.device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
