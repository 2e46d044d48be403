"""Experiment a at a glance: the paired verdicts of docs/results.md, recomputed from committed records.

    python benchmarks/verdicts.py docs/records/verdicts.json            # print the Markdown table
    python benchmarks/verdicts.py docs/records/verdicts.json --check docs/results.md

The JSON file lists, per row, the claim or setting it tests, the two configurations A and B, and for
each image subset the run folder and method of A and of B (folders relative to the JSON file's own
folder, and never outside it: the records may come from someone else). Each cell is what
``gib compare A_RUN A B --b-run B_RUN --metric psnr`` prints for that subset: the mean of A − B over
the images both folders inverted (paired by content), its 95 % BCa bootstrap interval, and on how
many images A is ahead; then the two-sided p-value of a sign-flip permutation test of the same mean
(``stats.sign_flip_p``, the p column of ``gib compare``) and its Benjamini–Hochberg q over every row of
the table (``stats.fdr_q``): a row with q < 0.05 holds at a false discovery rate of 5 % across the
table, which an interval that excludes 0 does not promise when the table has dozens of rows.
``--check PAGE`` fails, naming the first row that differs, unless the page holds every row of the
table as it is computed today.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from gan_inversion_bench import stats
from gan_inversion_bench.compare_runs import comparison, cross_run_records

SUBSETS = {"generated": "faces", "photos": "photos"}
HEADER = ["claim or setting", "A − B", "images", "n", "ΔPSNR (dB) [95 % CI]", "A ahead", "p", "q (BH)",
          "records (A; B)"]


class VerdictsError(ValueError):
    """A verdicts file that cannot be read as one: says which file, which row and what was expected."""


def _folder(root: Path, rel: Any, where: str) -> Path:
    if not isinstance(rel, str) or not rel:
        raise VerdictsError(f"{where}: expected a run folder relative to {root}, got {rel!r}")
    path = (root / rel).resolve()
    if Path(rel).is_absolute() or not path.is_relative_to(root.resolve()):
        raise VerdictsError(f"{where}: {rel!r} lies outside {root}; a verdicts file may only name folders beside it")
    if not (path / "results.sqlite").is_file():
        raise VerdictsError(f"{where}: {rel!r} is not a run folder (no results.sqlite in {path})")
    return path


def load_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a verdicts file, checked: each has claim, a, b and, per subset, [A folder, A method,
    B folder, B method]."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise VerdictsError(f"{path}: not a readable JSON file ({e})") from None
    rows = data.get("rows") if isinstance(data, dict) else None
    if not isinstance(rows, list) or not rows:
        raise VerdictsError(f"{path}: expected an object with a non-empty list 'rows'")
    for i, row in enumerate(rows, 1):
        where = f"{path}, row {i}"
        if not isinstance(row, dict) or not all(isinstance(row.get(k), str) and row[k] for k in ("claim", "a", "b")):
            raise VerdictsError(f"{where}: expected the strings 'claim', 'a' and 'b'")
        pairs = row.get("pairs")
        if not isinstance(pairs, dict) or not pairs or set(pairs) - set(SUBSETS):
            raise VerdictsError(f"{where}: expected 'pairs' keyed by subset, one or more of {', '.join(SUBSETS)}")
        for subset, pair in pairs.items():
            if not (isinstance(pair, list) and len(pair) == 4 and all(isinstance(x, str) for x in pair)):
                raise VerdictsError(f"{where}, {subset}: expected [A folder, A method, B folder, B method]")
            for rel in pair[0::2]:
                _folder(path.parent, rel, f"{where}, {subset}")
    return rows


def _short(rel: str) -> str:
    """``claim-check-cpu-full2/a/single-code`` → ``full2/single-code``."""
    parts = rel.split("/")
    return f"{parts[0].removeprefix('claim-check-cpu-')}/{parts[-1]}"


def paired(root: Path, subset: str, pair: list[str]) -> stats.PairedDifference:
    """``gib compare`` of one subset: A of the first folder against B of the second, PSNR."""
    df, a, b, _ = cross_run_records(root / pair[0], pair[1], root / pair[2], pair[3])
    found = comparison(df, a, b, metric="psnr", subset=subset)
    if not found:
        raise VerdictsError(f"{pair[0]} against {pair[2]}: no PSNR values of subset {subset!r} in both")
    return found[0]


def _signed(x: float) -> str:
    return f"{x:+.2f}".replace("-", "−")


def table_lines(path: Path) -> list[str]:
    """The Markdown table of a verdicts file, one line per row and subset."""
    rows, root = load_rows(path), path.parent
    found = [(row, subset, pair, paired(root, subset, pair)) for row in rows for subset, pair in row["pairs"].items()]
    q = stats.fdr_q([d.p_value for *_, d in found])
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for (row, subset, pair, d), qi in zip(found, q, strict=True):
        ci = "–" if math.isnan(d.ci_low) else f"[{_signed(d.ci_low)}, {_signed(d.ci_high)}]"
        cells = [row["claim"], f"{row['a']} − {row['b']}", SUBSETS[subset], str(d.n), f"{_signed(d.mean)} {ci}",
                 f"{d.wins} of {d.n}", stats.p_text(d.p_value), stats.p_text(qi),
                 f"{_short(pair[0])}; {_short(pair[2])}"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def check_page(page: list[str], lines: list[str]) -> str | None:
    """What is wrong with the page's table against ``lines`` (the table as computed today), or None. The
    table is the block of ``|`` lines under the page's header line; it must hold every row, and no other
    (a row left over from an earlier rendering, or one pasted twice)."""
    missing = [line for line in lines[2:] if line not in page]
    if missing:
        return f"{len(missing)} of {len(lines) - 2} rows differ or are missing, first:\n{missing[0]}"
    if lines[0] not in page:
        return f"no table with the header {lines[0]}"
    start = page.index(lines[0])
    end = next((i for i in range(start, len(page)) if not page[i].startswith("|")), len(page))
    rows = page[start + 2:end]
    extra = [line for i, line in enumerate(rows) if line not in lines or line in rows[:i]]
    if extra:
        return f"{len(extra)} rows that the records do not give (left over or repeated), first:\n{extra[0]}"
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("verdicts", type=Path, help="a verdicts JSON file, e.g. docs/records/verdicts.json")
    ap.add_argument("--check", type=Path, default=None, metavar="PAGE",
                    help="instead of printing, fail unless PAGE holds every row as computed today")
    args = ap.parse_args(argv)
    try:
        lines = table_lines(args.verdicts)
    except ValueError as e:  # VerdictsError, and gib compare's refusals (other images, other weights)
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.check is None:
        print("\n".join(lines))
        return 0
    problem = check_page(args.check.read_text().split("\n"), lines)
    if problem:
        print(f"{args.check}: {problem}", file=sys.stderr)
        return 1
    print(f"{args.check}: all {len(lines) - 2} rows as computed today, and no other")
    return 0


if __name__ == "__main__":
    sys.exit(main())
