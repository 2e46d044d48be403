"""The numbers docs/results.md takes from docs/records/ are what those records give today.

A section rendered from committed records (`### The same from docs/records/NAME`) is rendered again
from them and its tables must appear, row for row, in that section of the page; the paired numbers
quoted in prose from `gib compare … --b-run` are recomputed through the command; the Runs rows come
from each archive's session log. A change to the statistics, the table code or the records that moves
a published number fails here, instead of leaving the page silently out of date.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from bench_scripts import load
from click.testing import CliRunner

from gan_inversion_bench.cli import main as gib

ROOT = Path(__file__).resolve().parent.parent
RECORDS = ROOT / "docs" / "records"
PAGE = ROOT / "docs" / "results.md"
ARCHIVES = sorted(p.parent for p in RECORDS.glob("*/archive.json"))


@pytest.fixture(scope="module")
def cc():
    """benchmarks/claim_check.py, loaded once for this file's tests."""
    return load("claim_check")


def _subsection(text: str, heading_start: str) -> str:
    """The page's text from the heading that starts with ``heading_start`` to the next heading of any level."""
    lines = text.splitlines()
    lines = lines[next(i for i, line in enumerate(lines) if line.startswith(heading_start)):]
    end = next((i for i, line in enumerate(lines[1:], 1) if line.startswith("#")), len(lines))
    return "\n".join(lines[:end])


def test_there_are_committed_records_and_the_page_names_each():
    assert ARCHIVES, "docs/records holds no archive (archive.json)"
    text = PAGE.read_text()
    for folder in ARCHIVES:
        assert f"docs/records/{folder.name}" in text, f"docs/results.md never cites {folder}"


SECTIONS = [f for f in ARCHIVES if f"### The same from `docs/records/{f.name}`" in PAGE.read_text()]


@pytest.mark.parametrize("folder", SECTIONS, ids=[f.name for f in SECTIONS])
def test_a_section_rendered_from_records_has_the_tables_they_give_today(folder, tmp_path, cc):
    exp = next(e for e in cc.EXPERIMENTS if (folder / e.key).is_dir())  # the experiment the archive holds
    arg = f"docs/records/{folder.name}"
    src = cc.Source(folder, arg, cc._folder_protocol(folder))
    rendered = cc.experiment_lines(exp, src, tmp_path / "results.md", src.protocol, sub=True)
    rows = [line for line in rendered if line.startswith("|")]
    published = _subsection(PAGE.read_text(), f"### The same from `{arg}`").splitlines()
    # at least the results table and the table along the way, each a header, a rule and a row per configuration
    assert sum(line.startswith("| configuration |") for line in rows) >= 2 and len(rows) >= 8
    missing = [row for row in rows if row not in published]
    assert not missing, f"{len(missing)} rows of {arg} differ from docs/results.md, first: {missing[0]}"


def _psnr_row(args: list[str], subset: str) -> tuple[float, float, float, int, int]:
    """mean, CI low, CI high, wins, n of `gib compare`'s PSNR row for ``subset`` of the images both runs have."""
    res = CliRunner().invoke(gib, ["compare", *args, "--metric", "psnr"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in res.output.splitlines()
            if "| PSNR (dB)" in line]
    cells = next(c for c in rows if c[0] == subset)
    low, high = map(float, cells[4].strip("[]").split(", "))
    return float(cells[3]), low, high, int(cells[5].split(" / ")[0]), int(cells[2])


def _signed(x: float) -> str:
    return f"{x:+.2f}".replace("-", "−")


R = "docs/records"
FULL2, FULL3 = f"{R}/claim-check-cpu-full2/a", f"{R}/claim-check-cpu-full3/a"
PM30 = {s: f"{R}/claim-check-cpu-full2-{s}/a/pmsfc-RK30-w0.25" for s in ("faces8", "photos")}
N30 = {s: f"{R}/claim-check-cpu-full3-{s}/a/mganprior-N30" for s in ("faces8", "photos")}  # without /N
N10 = {s: f"{R}/claim-check-cpu-full4-{s}/a/mganprior-N10" for s in ("faces8", "photos")}  # without /N
RELEASED = f"{R}/claim-check-cpu-full4/a/pmsfc-released"
FULL5 = f"{R}/claim-check-cpu-full5/a"
N30_OWN = {s: f"{R}/claim-check-cpu-full6-{s}/a/mganprior-N30" for s in ("faces8", "photos")}  # without /N, own lrs
FULL7 = f"{R}/claim-check-cpu-full7/a"  # without /N, own lrs, 32 faces
N10_OWN_PHOTOS = f"{R}/claim-check-cpu-full7-photos/a/mganprior-N10"
PM10_OWN = {s: f"{R}/claim-check-cpu-full8-{s}/a/pmsfc-RK10-wtuned" for s in ("faces8", "photos")}  # its own search
PM10_OWN32 = f"{R}/claim-check-cpu-full9/a/pmsfc-RK10-wtuned"  # its own search, 32 faces
PM30_32 = f"{R}/claim-check-cpu-full10/a/pmsfc-RK30-w0.25"  # 32 faces
PM30_W1_32 = f"{R}/claim-check-cpu-full14/a/pmsfc-RK30-w1"  # 32 faces
N10_OWN_DIVN32 = f"{R}/claim-check-cpu-full16/a/mganprior-N10-divN"  # its own search with /N, 32 faces
C2000, C2000_COS = f"{R}/claim-check-cpu-c2000/c", f"{R}/claim-check-cpu-c2000-cos/c"  # constant, cosine lr
XCPU, XCPU_COS = f"{R}/claim-check-cpu-xcpu/a", f"{R}/claim-check-cpu-xcpu-cos/a"  # constant, cosine lr (Xeon)
XPH, XPH_COS = f"{R}/claim-check-cpu-xcpu-photos/a", f"{R}/claim-check-cpu-xcpu-cos-photos/a"  # the same, photos
XPH_SCHED = f"{R}/claim-check-cpu-xcpu-sched-photos/a/single-code"  # at its schedule search's entry, photos
XPH_PT = f"{R}/claim-check-cpu-xcpu-phototune-photos/a/single-code"  # at its search on real photos' entry
XPH_PT_MGP = f"{R}/claim-check-cpu-xcpu-phototune-mganprior-photos/a/mganprior-N30-divN"  # the same, mGANprior
XCPU_PT_MGP = f"{R}/claim-check-cpu-xcpu-phototune-mganprior/a/mganprior-N30-divN"  # that entry, 8 faces
XPH_PM = f"{R}/claim-check-cpu-xcpu-pmsfc-photos/a/pmsfc-RK30-wtuned"  # PmSFC's committed entry, photos (Xeon)
XPH_PT_PM = f"{R}/claim-check-cpu-xcpu-phototune-pmsfc-photos/a/pmsfc-RK30-wtuned"  # its searches' entry, photos
XCPU_PT_PM = f"{R}/claim-check-cpu-xcpu-phototune-pmsfc/a/pmsfc-RK30-wtuned"  # that entry, 8 faces
FULL17 = f"{R}/claim-check-cpu-full17/a/pmsfc-RK30-wtuned"  # PmSFC's committed entry, 32 faces (Xeon)
C2000_PH = f"{R}/claim-check-cpu-c2000-photos/c"  # experiment c on the 8 photos at 2000 iterations (Xeon)
BFULL = f"{R}/claim-check-cpu-bfull/b"  # experiment b at the full protocol (AMD EPYC)
# (gib compare arguments, subset, how the page quotes it: "lead" = A − B signed, "trail" = B − A unsigned)
QUOTED = [
    ([PM30["photos"], "pmsfc", "single-code", "--b-run", f"{FULL2}/single-code"], "photos", "lead"),
    ([PM30["faces8"], "pmsfc", "single-code", "--b-run", f"{FULL2}/single-code"], "generated", "lead"),
    ([PM30["faces8"], "pmsfc", "mganprior", "--b-run", f"{FULL2}/mganprior-N30-divN"], "generated", "trail"),
    ([PM30["photos"], "pmsfc", "mganprior", "--b-run", f"{FULL2}/mganprior-N30-divN"], "photos", "trail"),
    ([f"{FULL3}/pmsfc-RK10-w0.25", "pmsfc", "mganprior", "--b-run", f"{FULL3}/mganprior-N10-divN"], "all", "trail"),
    ([f"{FULL3}/mganprior-N10-divN", "mganprior", "mganprior", "--b-run", f"{FULL2}/mganprior-N30-divN"],
     "generated", "lead"),
    ([f"{FULL3}/mganprior-N10-divN", "mganprior", "mganprior", "--b-run", f"{FULL2}/mganprior-N30-divN"],
     "photos", "lead"),
    ([PM30["faces8"], "pmsfc", "pmsfc", "--b-run", f"{FULL3}/pmsfc-RK10-w0.25"], "generated", "lead"),
    ([PM30["photos"], "pmsfc", "pmsfc", "--b-run", f"{FULL3}/pmsfc-RK10-w0.25"], "photos", "lead"),
    ([f"{FULL3}/mganprior-N10-divN", "mganprior", "single-code", "--b-run", f"{FULL2}/single-code"], "all", "lead"),
    ([f"{FULL3}/pmsfc-RK10-w0.25", "pmsfc", "single-code", "--b-run", f"{FULL2}/single-code"], "photos", "lead"),
    ([f"{FULL3}/pmsfc-RK10-w0.25", "pmsfc", "single-code", "--b-run", f"{FULL2}/single-code"], "generated", "lead"),
    ([N30["faces8"], "mganprior", "mganprior", "--b-run", f"{FULL2}/mganprior-N30-divN"], "generated", "trail"),
    ([N30["photos"], "mganprior", "mganprior", "--b-run", f"{FULL2}/mganprior-N30-divN"], "photos", "trail"),
    ([N30["faces8"], "mganprior", "pmsfc", "--b-run", PM30["faces8"]], "generated", "lead"),
    ([N30["photos"], "mganprior", "pmsfc", "--b-run", PM30["photos"]], "photos", "lead"),
    ([RELEASED, "pmsfc", "pmsfc", "--b-run", f"{FULL3}/pmsfc-RK10-w0.25"], "all", "lead"),
    ([RELEASED, "pmsfc", "single-code", "--b-run", f"{FULL2}/single-code"], "all", "lead"),
    ([N10["faces8"], "mganprior", "mganprior", "--b-run", f"{FULL3}/mganprior-N10-divN"], "generated", "trail"),
    ([N10["photos"], "mganprior", "mganprior", "--b-run", f"{FULL3}/mganprior-N10-divN"], "photos", "trail"),
    ([N30_OWN["faces8"], "mganprior", "mganprior", "--b-run", N30["faces8"]], "generated", "lead"),
    ([N30_OWN["photos"], "mganprior", "mganprior", "--b-run", N30["photos"]], "photos", "lead"),
    ([N30_OWN["faces8"], "mganprior", "mganprior", "--b-run", f"{FULL2}/mganprior-N30-divN"], "generated", "trail"),
    ([N30_OWN["photos"], "mganprior", "mganprior", "--b-run", f"{FULL2}/mganprior-N30-divN"], "photos", "lead"),
    ([N30_OWN["faces8"], "mganprior", "pmsfc", "--b-run", PM30["faces8"]], "generated", "lead"),
    ([N30_OWN["photos"], "mganprior", "pmsfc", "--b-run", PM30["photos"]], "photos", "lead"),
    ([f"{FULL5}/pmsfc-RK10-w1", "pmsfc", "pmsfc", "--b-run", f"{FULL3}/pmsfc-RK10-w0.25"], "generated", "lead"),
    ([f"{FULL5}/pmsfc-RK10-w1", "pmsfc", "pmsfc", "--b-run", f"{FULL3}/pmsfc-RK10-w0.25"], "photos", "lead"),
    ([f"{FULL5}/pmsfc-RK10-w1", "pmsfc", "pmsfc", "--b-run", f"{FULL3}/pmsfc-RK10-w0.25"], "all", "lead"),
    ([f"{FULL5}/pmsfc-RK10-wtuned", "pmsfc", "pmsfc", "--b-run", f"{FULL3}/pmsfc-RK10-w0.25"], "all", "trail"),
    ([f"{FULL5}/pmsfc-RK10-w1", "pmsfc", "mganprior", "--b-run", f"{FULL3}/mganprior-N10-divN"], "all", "trail"),
    ([f"{FULL5}/pmsfc-RK10-wtuned", "pmsfc", "mganprior", "--b-run", f"{FULL3}/mganprior-N10-divN"], "all", "trail"),
    ([f"{FULL5}/pmsfc-RK10-w1", "pmsfc", "single-code", "--b-run", f"{FULL2}/single-code"], "photos", "lead"),
    ([f"{FULL5}/pmsfc-RK10-w1", "pmsfc", "single-code", "--b-run", f"{FULL2}/single-code"], "generated", "lead"),
    ([f"{FULL7}/mganprior-N30", "mganprior", "mganprior", "--b-run", f"{FULL2}/mganprior-N30-divN"], "generated",
     "trail"),
    ([f"{FULL7}/mganprior-N10", "mganprior", "mganprior", "--b-run", f"{FULL3}/mganprior-N10-divN"], "generated",
     "trail"),
    ([N10_OWN_PHOTOS, "mganprior", "mganprior", "--b-run", f"{FULL3}/mganprior-N10-divN"], "photos", "lead"),
    ([f"{FULL7}/mganprior-N10", "mganprior", "pmsfc", "--b-run", f"{FULL3}/pmsfc-RK10-w0.25"], "generated", "lead"),
    ([N10_OWN_PHOTOS, "mganprior", "pmsfc", "--b-run", f"{FULL3}/pmsfc-RK10-w0.25"], "photos", "lead"),
    ([f"{FULL7}/mganprior-N30", "mganprior", "single-code", "--b-run", f"{FULL2}/single-code"], "generated", "lead"),
    ([f"{FULL7}/mganprior-N10", "mganprior", "single-code", "--b-run", f"{FULL2}/single-code"], "generated", "lead"),
    ([f"{FULL7}/mganprior-N10", "mganprior", "mganprior", "--b-run", f"{FULL7}/mganprior-N30"], "generated", "lead"),
    ([N10_OWN_PHOTOS, "mganprior", "mganprior", "--b-run", N30_OWN["photos"]], "photos", "lead"),
    ([f"{FULL7}/mganprior-N10", "mganprior", "mganprior", "--b-run", N10["faces8"]], "generated", "lead"),
    ([N10_OWN_PHOTOS, "mganprior", "mganprior", "--b-run", N10["photos"]], "photos", "lead"),
    ([PM10_OWN["faces8"], "pmsfc", "pmsfc", "--b-run", f"{FULL3}/pmsfc-RK10-w0.25"], "generated", "lead"),
    ([PM10_OWN["photos"], "pmsfc", "pmsfc", "--b-run", f"{FULL3}/pmsfc-RK10-w0.25"], "photos", "lead"),
    ([PM10_OWN["faces8"], "pmsfc", "mganprior", "--b-run", f"{FULL3}/mganprior-N10-divN"], "generated", "trail"),
    ([PM10_OWN["photos"], "pmsfc", "mganprior", "--b-run", f"{FULL3}/mganprior-N10-divN"], "photos", "trail"),
    ([PM10_OWN["faces8"], "pmsfc", "mganprior", "--b-run", f"{FULL7}/mganprior-N10"], "generated", "trail"),
    ([PM10_OWN["photos"], "pmsfc", "mganprior", "--b-run", N10_OWN_PHOTOS], "photos", "trail"),
    ([PM10_OWN["faces8"], "pmsfc", "single-code", "--b-run", f"{FULL2}/single-code"], "generated", "lead"),
    ([PM10_OWN["photos"], "pmsfc", "single-code", "--b-run", f"{FULL2}/single-code"], "photos", "lead"),
    ([PM10_OWN32, "pmsfc", "pmsfc", "--b-run", PM30_32], "generated", "lead"),
    ([PM30_W1_32, "pmsfc", "pmsfc", "--b-run", PM30_32, "--at-iteration", "128"], "generated", "trail"),
    ([PM30_W1_32, "pmsfc", "pmsfc", "--b-run", PM30_32], "generated", "lead"),
    ([PM30_W1_32, "pmsfc", "mganprior", "--b-run", f"{FULL2}/mganprior-N30-divN"], "generated", "trail"),
    ([N10_OWN_DIVN32, "mganprior", "mganprior", "--b-run", f"{FULL3}/mganprior-N10-divN"], "generated", "lead"),
    ([N10_OWN_DIVN32, "mganprior", "mganprior", "--b-run", f"{FULL2}/mganprior-N30-divN"], "generated", "lead"),
    ([PM10_OWN32, "pmsfc", "mganprior", "--b-run", N10_OWN_DIVN32], "generated", "trail"),
    # experiment c at 2000 iterations: every learning rate decayed (cosine) against the constant rates
    *[([f"{C2000_COS}/{c}", "pmsfc", "pmsfc", "--b-run", f"{C2000}/{c}"], "generated", "lead")
      for c in ("R1-K30", "discovered", "random")],
    ([f"{C2000_COS}/R1-K30", "pmsfc", "pmsfc", "--b-run", f"{C2000}/random"], "generated", "lead"),
    ([f"{C2000_COS}/R1-K30", "pmsfc", "pmsfc", "--b-run", f"{C2000}/discovered"], "generated", "lead"),
    ([f"{C2000_COS}/discovered", "pmsfc", "pmsfc", "--b-run", f"{C2000_COS}/random"], "generated", "trail"),
    # experiment a on the Xeon: every learning rate decayed (cosine) against the constant rates
    ([f"{XCPU_COS}/single-code", "single-code", "single-code", "--b-run", f"{XCPU}/single-code"], "generated", "lead"),
    ([f"{XCPU_COS}/mganprior-N30-divN", "mganprior", "mganprior", "--b-run", f"{XCPU}/mganprior-N30-divN"],
     "generated", "lead"),
    ([f"{XCPU}/mganprior-N30-divN", "mganprior", "single-code", "--b-run", f"{XCPU_COS}/single-code"], "generated",
     "lead"),
    ([f"{XCPU}/mganprior-N30-divN", "mganprior", "single-code", "--b-run", f"{XCPU}/single-code"], "generated", "lead"),
    # ... and on the 8 photos
    ([f"{XPH_COS}/single-code", "single-code", "single-code", "--b-run", f"{XPH}/single-code"], "photos", "trail"),
    ([f"{XPH_COS}/mganprior-N30-divN", "mganprior", "mganprior", "--b-run", f"{XPH}/mganprior-N30-divN"], "photos",
     "trail"),
    ([f"{XPH}/mganprior-N30-divN", "mganprior", "single-code", "--b-run", f"{XPH}/single-code"], "photos", "lead"),
    ([f"{XPH_COS}/mganprior-N30-divN", "mganprior", "single-code", "--b-run", f"{XPH_COS}/single-code"], "photos",
     "lead"),
    ([f"{XPH}/mganprior-N30-divN", "mganprior", "single-code", "--b-run", f"{XPH_COS}/single-code"], "photos", "lead"),
    ([f"{XPH}/single-code", "single-code", "single-code", "--b-run", f"{FULL2}/single-code"], "photos", "lead"),
    ([f"{XPH}/mganprior-N30-divN", "mganprior", "mganprior", "--b-run", f"{FULL2}/mganprior-N30-divN"], "photos",
     "lead"),
    ([XPH_SCHED, "single-code", "single-code", "--b-run", f"{XPH}/single-code"], "photos", "lead"),
    ([XPH_SCHED, "single-code", "single-code", "--b-run", f"{XPH_COS}/single-code"], "photos", "lead"),
    ([f"{XPH}/mganprior-N30-divN", "mganprior", "single-code", "--b-run", XPH_SCHED], "photos", "lead"),
    ([XPH_PT, "single-code", "single-code", "--b-run", f"{XPH}/single-code"], "photos", "lead"),
    ([XPH_PT, "single-code", "single-code", "--b-run", XPH_SCHED], "photos", "lead"),
    ([XPH_PT_MGP, "mganprior", "mganprior", "--b-run", f"{XPH}/mganprior-N30-divN"], "photos", "lead"),
    ([XPH_PT_MGP, "mganprior", "single-code", "--b-run", XPH_PT], "photos", "lead"),
    ([XCPU_PT_MGP, "mganprior", "mganprior", "--b-run", f"{XCPU}/mganprior-N30-divN"], "generated", "trail"),
    ([XCPU_PT_MGP, "mganprior", "single-code", "--b-run", f"{XCPU}/single-code"], "generated", "lead"),
    ([XPH_PM, "pmsfc", "pmsfc", "--b-run", f"{R}/claim-check-cpu-full13-photos/a/pmsfc-RK30-wtuned"], "photos", "lead"),
    ([f"{XPH}/mganprior-N30-divN", "mganprior", "pmsfc", "--b-run", XPH_PM], "photos", "lead"),
    ([XPH_PT_PM, "pmsfc", "pmsfc", "--b-run", XPH_PM], "photos", "lead"),
    ([XPH_PT_MGP, "mganprior", "pmsfc", "--b-run", XPH_PT_PM], "photos", "lead"),
    ([XPH_PT_PM, "pmsfc", "single-code", "--b-run", XPH_PT], "photos", "lead"),
    ([XCPU_PT_PM, "pmsfc", "pmsfc", "--b-run", FULL17], "generated", "lead"),
    ([f"{XCPU}/mganprior-N30-divN", "mganprior", "pmsfc", "--b-run", XCPU_PT_PM], "generated", "lead"),
    ([f"{XCPU}/mganprior-N30-divN", "mganprior", "pmsfc", "--b-run", FULL17], "generated", "lead"),
    ([XCPU_PT_MGP, "mganprior", "pmsfc", "--b-run", XCPU_PT_PM], "generated", "lead"),
    ([f"{C2000_PH}/discovered", "pmsfc", "pmsfc", "--b-run", f"{C2000_PH}/random"], "photos", "lead"),
    ([f"{C2000_PH}/discovered", "pmsfc", "pmsfc", "--b-run", f"{C2000_PH}/random-s1"], "photos", "lead"),
    ([f"{C2000_PH}/random", "pmsfc", "pmsfc", "--b-run", f"{C2000_PH}/R1-K30"], "photos", "lead"),
    ([f"{C2000_PH}/discovered", "pmsfc", "pmsfc", "--b-run", f"{C2000_PH}/R1-K30"], "photos", "lead"),
    # experiment b at the full protocol: the five configurations against one another
    *[([f"{BFULL}/{a}", "pmsfc", "pmsfc", "--b-run", f"{BFULL}/{b}"], subset, "lead")
      for a, b, subset in [("discovered", "random", "all"), ("discovered", "random", "generated"),
                           ("discovered", "random", "photos"), ("discovered", "random-s1", "all"),
                           ("discovered", "random-s2", "all"), ("random", "R1-K30", "all"),
                           ("random-s1", "R1-K30", "all"), ("random-s2", "R1-K30", "all"),
                           ("discovered", "R1-K30", "all")]],
]


@pytest.mark.parametrize("args,subset,form", QUOTED,
                         ids=[f"{a[0].split('/')[2]}-{a[0].split('/')[-1]}-{a[2]}-{s}" for a, s, _ in QUOTED])
def test_paired_numbers_quoted_on_the_page_are_what_gib_compare_gives(args, subset, form):
    """The page quotes a paired difference as "+7.91 dB [+6.65, +9.44] … 8 of 8" (A − B), or as "trails … by
    5.66 dB [4.47, 6.72] … (0 of 8)" (B − A); the wins of A follow within a sentence's reach."""
    mean, low, high, wins, n = _psnr_row(args, subset)
    if form == "lead":
        quoted = f"{_signed(mean)} dB [{_signed(low)}, {_signed(high)}]"
    else:
        assert mean < 0 < -high
        quoted = f"{-mean:.2f} dB [{-high:.2f}, {-low:.2f}]"
    text = PAGE.read_text()
    assert quoted in text, f"docs/results.md lacks {quoted!r} ({' '.join(args)}, {subset})"
    counts = {f"{wins} of {n}"} | ({"none"} if wins == 0 else set())
    assert any(any(c in text[k:k + 120] for c in counts) for k in _all(text, quoted)), (quoted, counts)


def _all(text: str, sub: str) -> list[int]:
    return [m.start() for m in re.finditer(re.escape(sub), text)]


@pytest.mark.parametrize("folder", ARCHIVES, ids=[f.name for f in ARCHIVES])
def test_runs_rows_of_committed_records_are_their_session_logs(folder, cc):
    src = cc.Source(folder, f"docs/records/{folder.name}", cc._folder_protocol(folder))
    rows = cc._runs_rows(src, [e.key for e in cc.EXPERIMENTS if (folder / e.key).is_dir()], f"{folder.name}/")
    assert rows
    text = PAGE.read_text()
    for row in rows:
        line = "| " + " | ".join(row) + " |"
        assert line in text, f"docs/results.md's Runs table lacks {line!r}"


def test_a_folder_without_pairs_says_so_instead_of_an_empty_table(tmp_path, cc):
    """full5 holds PmSFC at two w0 only: no best-of-family pair, so no paired table, but the sentence."""
    folder = RECORDS / "claim-check-cpu-full5"
    exp = next(e for e in cc.EXPERIMENTS if e.key == "a")
    src = cc.Source(folder, f"docs/records/{folder.name}", cc._folder_protocol(folder))
    rendered = cc.experiment_lines(exp, src, tmp_path / "results.md", src.protocol, sub=True)
    assert cc.NO_PAIRS in rendered
    assert not [line for line in rendered if line.startswith("| A − B |")]
    assert cc.NO_PAIRS in _subsection(PAGE.read_text(), f"### The same from `{src.arg}`")
