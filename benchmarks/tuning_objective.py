"""The objective of `gib tune` for given settings: each tuning image's PSNR after the budget, and their mean.

`gib tune` keeps only a trial's mean; this recomputes it for any settings, for example to ask whether a
search's choice beats the entry it would replace on the search's own objective (docs/results.md,
"Single-code at 2000 iterations"):

    python benchmarks/tuning_objective.py -g dcgan-digiface64 -m single-code --budget 2000 \
        --set optimizer=adam --set lr=0.18309438164705086
    python benchmarks/tuning_objective.py -m pmsfc --budget 2000 --entry 100   # an entry's settings at 2000

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
from gan_inversion_bench.tuning import TuneConfig, tuning_images


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
    ap.add_argument("--budget", type=int, required=True, help="iterations, as `gib tune --budget`")
    ap.add_argument("--images", type=int, default=4, help="tuning images, as `gib tune --images`")
    ap.add_argument("--image-seed", type=int, default=1)
    ap.add_argument("--tune-images", default="generated", metavar="generated|photos-tune|folder:PATH",
                    help="the tuning image set, as `gib tune --tune-images`")
    ap.add_argument("--base-profile", choices=["quick", "paper"], help="default: quick, or --entry's")
    ap.add_argument("--entry", type=int, metavar="N", help="the settings (and base profile) of the tuned profile's "
                    "entry searched at N iterations; --set goes on top")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a setting (repeatable)")
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args(argv)
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


if __name__ == "__main__":
    sys.exit(main())
