"""Every trial of `gib tune` searches, one table, as docs/results.md shows them.

    python benchmarks/search_trials.py PROFILE.json:METHOD@BUDGET ... [JOURNAL.sqlite ...]

A profile file's entry of METHOD searched at BUDGET iterations or a
search's journal (`--journal`, the trials a search finished before it was stopped; every study in it):
per trial its number, each parameter it drew, and its mean PSNR on the tuning images; ◀ marks the best
finished trial of each search. Files are only read (the journal through SQLite in read-only mode).

    python benchmarks/search_trials.py --paired A_SOURCE B_SOURCE

pairs the finished trials of two searches that drew the same parameters (a seeded TPE draws the same
settings in its random start-up trials whatever the tuning images, so two searches that differ only in
their images score the same settings on both) and prints their two values side by side, with each
value's rank within its search's pairs and Spearman's rank correlation of the two (scipy.stats.spearmanr):
whether the two tuning sets order the same settings alike.
"""
from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from pathlib import Path
from typing import Any

#: a parameter → its column; the order of the columns
COLUMNS = {"lr_schedule": "schedule", "optimizer": "optimizer", "adam_lr": "Adam lr", "adam_alpha_lr": "α lr",
           "adam_weight_lr": "w lr", "sgd_lr": "SGD lr", "divide_by_n": "/N", "weight_init": "w0"}


def profile_trials(path: Path, method: str, budget: int) -> list[tuple[str, list[dict[str, Any]]]]:
    """``(label, trials)`` of the entry of ``method`` searched at ``budget`` iterations in the profile ``path``."""
    data = json.loads(path.read_text())
    entry = data.get("methods", {}).get(method)
    if not isinstance(entry, dict):
        raise SystemExit(f"{path}: no entry for {method!r} (it has {', '.join(sorted(data.get('methods', {})))})")
    found = [e for e in [entry, *entry.get("other_budgets", [])] if (e.get("tuning") or {}).get("budget") == budget]
    if not found or not found[0].get("trials"):
        raise SystemExit(f"{path}: {method} has no entry searched at {budget} iterations with its trials")
    t = found[0]["tuning"]
    return [(f"{path.parent.name} {method} ({budget} it, {t['trials']} trials)", found[0]["trials"])]


def journal_trials(path: Path) -> list[tuple[str, list[dict[str, Any]]]]:
    """``(label, trials)`` of every study in the journal ``path`` (a search stopped before its entry)."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT study, number, state, params, value, description FROM trials "
                          "ORDER BY study, number").fetchall()
    studies: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = {}
    for study, number, state, params, value, description in rows:
        studies.setdefault(study, (json.loads(description), []))[1].append(
            {"number": number, "state": state, "params": json.loads(params), "value": value})
    out = []
    for desc, trials in studies.values():
        p = desc["protocol"]
        out.append((f"{path.parent.name} {desc['method']} ({p['budget']} it, {len(trials)} of {p['trials']} trials, "
                    "stopped)", trials))
    return out


def rows(searches: list[tuple[str, list[dict[str, Any]]]]) -> list[str]:
    names = [k for k in COLUMNS if any(k in t["params"] for _, trials in searches for t in trials)]
    lines = ["| search | trial | " + " | ".join(COLUMNS[k] for k in names) + " | mean PSNR (dB) |",
             "|---|---|" + "---|" * len(names) + "---|"]
    for label, trials in searches:
        done = [t for t in trials if t["state"] == "COMPLETE" and t["value"] is not None]
        best = max(done, key=lambda t: t["value"])["number"] if done else None
        for t in trials:
            cells = [_cell(t["params"].get(k)) for k in names]
            value = "–" if t["value"] is None else f"{t['value']:.2f}"
            mark = " ◀" if t["number"] == best else ""
            lines.append(f"| {label} | {t['number']} | " + " | ".join(cells) + f" | {value}{mark} |")
    return lines


def paired(a: tuple[str, list[dict[str, Any]]], b: tuple[str, list[dict[str, Any]]]) -> list[str]:
    """The finished trials of searches ``a`` and ``b`` with the same parameters, side by side (module docstring)."""
    from scipy.stats import rankdata, spearmanr

    def done(trials: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        return {json.dumps(t["params"], sort_keys=True): t for t in trials
                if t["state"] == "COMPLETE" and t["value"] is not None}

    left, right = done(a[1]), done(b[1])
    keys = [k for k in left if k in right]
    if len(keys) < 3:
        raise SystemExit(f"--paired: {len(keys)} finished trial(s) drew the same parameters in both searches; "
                         "a rank correlation needs at least 3")
    names = [k for k in COLUMNS if any(k in left[key]["params"] for key in keys)]
    va, vb = [left[k]["value"] for k in keys], [right[k]["value"] for k in keys]
    ra, rb = rankdata([-v for v in va], method="min"), rankdata([-v for v in vb], method="min")
    lines = [f"A: {a[0]}; B: {b[0]}. Rank 1: the highest mean PSNR among these pairs.", "",
             "| trial A | trial B | " + " | ".join(COLUMNS[k] for k in names)
             + " | A mean PSNR (dB) | B mean PSNR (dB) | rank in A | rank in B |",
             "|---|---|" + "---|" * len(names) + "---|---|---|---|"]
    for key, x, y, i, j in zip(keys, va, vb, ra, rb, strict=True):
        cells = [_cell(left[key]["params"].get(k)) for k in names]
        lines.append(f"| {left[key]['number']} | {right[key]['number']} | " + " | ".join(cells)
                     + f" | {x:.2f} | {y:.2f} | {int(i)} | {int(j)} |")
    rho = spearmanr(va, vb)
    lines += ["", f"Spearman's rank correlation of A and B over these {len(keys)} settings: {rho.statistic:+.2f} "
                  f"(two-sided p = {rho.pvalue:.2g})."]
    return lines


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("sources", nargs="+", help="PROFILE.json:METHOD@BUDGET or JOURNAL.sqlite")
    ap.add_argument("--paired", action="store_true", help="pair the same settings of two searches (module docstring)")
    args = ap.parse_args(argv)
    searches = []
    for source in args.sources:
        file, sep, which = source.rpartition(":")
        path = Path(file if sep and file.endswith(".json") else source)
        if not path.is_file():
            raise SystemExit(f"{path}: not found")
        if path.suffix == ".json":
            method, _, budget = which.partition("@")
            if not sep or not budget.isdigit():
                raise SystemExit(f"{source}: expected PROFILE.json:METHOD@BUDGET")
            searches += profile_trials(path, method, int(budget))
        else:
            searches += journal_trials(path)
    if args.paired and len(searches) != 2:
        raise SystemExit(f"--paired: expected two searches, got {len(searches)}")
    print("\n".join(paired(*searches) if args.paired else rows(searches)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
