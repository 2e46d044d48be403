"""Does a search's choice lead on its tuning images, or on one of them? The paired check of ``gib tune``.

A search ranks its trials by the mean PSNR over a handful of tuning images, and a mean over four
images can be made by one. On `photos-tune` PmSFC's search at 2000 iterations chose settings 2.80 dB
above the entry it would replace, and 11.85 of that came from one photo (a retinal fundus image, unlike
every evaluation photo) while the other three moved by +0.00, +0.35 and −1.00 dB; on the 8 evaluation
photos the choice was level with the entry it replaced (docs/results.md, "Tuning on real photos").
The mean could not tell; the per-image differences could.

So every completed trial records its per-image PSNR (``per_image_psnr`` in the entry's trial list, in
the order of the tuning images), and :func:`choice_check` pairs the best trial with the trial it must
beat: the warm start (trial 0) where the search had one (the settings the choice would replace), else
the runner-up (the best other completed trial with other settings). It records, in the entry's
``tuning["choice"]``:

* each tuning image's difference best − other (dB) and on how many images the best is ahead;
* their mean with a 95 % bootstrap interval over the images (:func:`stats.bootstrap_ci`, BCa): with
  four images any interval is too narrow and is shown only beside n;
* ``p``: a sign-flip permutation test of that mean (:func:`stats.sign_flip_p`); with four images it cannot
  fall below 2/16 = 0.125, however the images agree, so no search over four images can show its choice
  is better at 5 %;
* the mean without the image that favours the best most, and ``rests_on_one_image``: the best leads on the
  mean but not without that image (or a search of one tuning image leads at all). ``gib tune`` then warns,
  naming the image. The choice is kept (the search's objective is the mean, so a search repeats from its
  seed); the warning says that the tuning images do not back it, and that more of them (``--images``) would
  say whether it carries over.

Entries written before per-image values were recorded have none; they get no check (None).
``python benchmarks/tuning_objective.py -m METHOD --check PROFILE.json --entry BUDGET`` scores such an
entry's two trials again on its tuning images and prints the same check.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from .stats import bootstrap_ci, sign_flip_floor, sign_flip_p

__all__ = ["PER_IMAGE", "choice_check", "choice_lines", "compared_trial", "image_labels"]

#: the key of a trial record's per-image PSNR (dB), in the order of the tuning images
PER_IMAGE = "per_image_psnr"


def image_labels(items: Iterable[Any]) -> list[str]:
    """The tuning images' names in the check: a photo's id; a generated image by its latent seed
    (``generated/seed1000``), since the evaluation set's ``generated/000`` is another face (seed 0)."""
    return [f"generated/seed{it.meta['latent_seed']}" if "latent_seed" in it.meta else it.id for it in items]


def compared_trial(trials: list[dict[str, Any]], best: dict[str, Any], warm: bool) -> dict[str, Any] | None:
    """The trial the best must beat: the warm start (trial 0) where ``warm``, or the best other completed
    trial whose settings differ (a repeat of the best's settings has its values, so it says nothing)."""
    if warm:
        zero = next((t for t in trials if t["number"] == 0), None)
        return zero if zero is not None and zero["number"] != best["number"] else None
    others = [t for t in trials if t["state"] == "COMPLETE" and t["number"] != best["number"]
              and t["params"] != best["params"] and t.get("repeat_of") != best["number"]]
    return max(others, key=lambda t: (t["value"], -t["number"])) if others else None


def choice_check(entry: dict[str, Any], image_ids: list[str]) -> dict[str, Any] | None:
    """The paired check of ``entry``'s best trial (module docstring), or None where it has no per-image
    values, no trial to compare with, the warm start is itself the best, or a PSNR is infinite.
    ``image_ids``: the tuning images in the order the trials record them. Raises ValueError where a
    trial records another number of images than ``image_ids`` names."""
    t = entry["tuning"]
    trials = entry["trials"]
    best = next(x for x in trials if x["number"] == t["best_trial"])
    other = compared_trial(trials, best, "warm_start" in t)
    if other is None or PER_IMAGE not in best or PER_IMAGE not in other:
        return None
    for x in (best, other):
        if len(x[PER_IMAGE]) != len(image_ids):
            raise ValueError(f"trial {x['number']} records {len(x[PER_IMAGE])} per-image PSNR values, but the "
                             f"search names {len(image_ids)} tuning images ({', '.join(image_ids)})")
    diffs = [float(a) - float(b) for a, b in zip(best[PER_IMAGE], other[PER_IMAGE], strict=True)]
    if not all(math.isfinite(d) for d in diffs):  # an exact reconstruction (PSNR inf): no finite difference
        return None
    mean, low, high = bootstrap_ci(diffs)
    top = max(range(len(diffs)), key=lambda i: diffs[i])
    rest = [d for i, d in enumerate(diffs) if i != top]
    without = sum(rest) / len(rest) if rest else math.nan
    return {"best_trial": best["number"], "against_trial": other["number"],
            "against": "warm start" if "warm_start" in t else "runner-up", "p": sign_flip_p(diffs),
            "images": list(image_ids), "differences": diffs, "mean": mean, "low": low, "high": high,
            "ahead": sum(d > 0 for d in diffs), "n": len(diffs), "largest_image": image_ids[top],
            "mean_without_largest": without, "rests_on_one_image": bool(mean > 0 and not without > 0)}


def choice_lines(name: str, check: dict[str, Any] | None) -> list[tuple[str, bool]]:
    """``gib tune``'s closing lines on the check: (text, is a warning)."""
    if check is None:
        return []
    c = check
    per = ", ".join(f"{i} {d:+.2f}" for i, d in zip(c["images"], c["differences"], strict=True))
    interval = "" if math.isnan(c["low"]) else f" [{c['low']:+.2f}, {c['high']:+.2f}]"
    one = c["n"] == 1  # a single tuning image: nothing is left without it
    rest = "" if one else (f"; without its most favourable image ({c['largest_image']}) "
                           f"{c['mean_without_largest']:+.2f}")
    test = "" if math.isnan(c.get("p", math.nan)) else (f"; sign-flip p {c['p']:.3g} (the least {c['n']} images "
                                                         f"can give: {sign_flip_floor(c['n']):.3g})")
    lines = [(f"{name}: trial {c['best_trial']} − the {c['against']} (trial {c['against_trial']}) per tuning image: "
              f"{per} dB; mean {c['mean']:+.2f}{interval} (95 % bootstrap over {c['n']} images), ahead on "
              f"{c['ahead']} of {c['n']}{rest}{test}", False)]
    if c["rests_on_one_image"]:
        why = ("the search had only that one" if one else
               f"without {c['largest_image']} ({max(c['differences']):+.2f} dB) "
               f"trial {c['best_trial']} leads the {c['against']} by {c['mean_without_largest']:+.2f} dB on average")
        lines.append((f"{name}: warning: the choice rests on one tuning image: {why}; more tuning images (--images) "
                      "would say whether it carries over", True))
    return lines
