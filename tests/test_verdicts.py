"""benchmarks/verdicts.py: experiment a at a glance, from committed records.

The committed table must be on docs/results.md as the records give it today, each cell must be what
`gib compare … --b-run … --metric psnr` prints, and a verdicts file that names something outside its
own folder, or is not one, is refused with the file, the row and what was expected.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from bench_scripts import load
from click.testing import CliRunner

from gan_inversion_bench.cli import main as gib

ROOT = Path(__file__).resolve().parent.parent
VERDICTS = ROOT / "docs" / "records" / "verdicts.json"
PAGE = ROOT / "docs" / "results.md"


@pytest.fixture(scope="module")
def vd():
    return load("verdicts")


@pytest.fixture(scope="module")
def table(vd):
    """The committed verdicts' table as the records give it today (computed once: each row pairs two folders)."""
    return vd.table_lines(VERDICTS)


def test_the_page_holds_every_row_as_the_records_give_it_today(vd, table, capsys):
    assert vd.main([str(VERDICTS), "--check", str(PAGE)]) == 0, capsys.readouterr().err
    rows = table[2:]
    # every claim of experiment a is there, on the faces and on the photos
    text = "\n".join(rows)
    for claim in ("PmSFC ≥ mGANprior, 30 codes", "PmSFC ≥ mGANprior, 10 codes", "mGANprior ≥ single-code",
                  "PmSFC ≥ single-code"):
        assert f"| {claim} |" in text and "| faces | 32 |" in text and "| photos | 8 |" in text


def test_a_cell_is_what_gib_compare_prints(vd, table):
    row = vd.load_rows(VERDICTS)[0]
    subset, pair = next(iter(row["pairs"].items()))
    folder = VERDICTS.parent
    res = CliRunner().invoke(gib, ["compare", str(folder / pair[0]), pair[1], pair[3], "--b-run",
                                   str(folder / pair[2]), "--metric", "psnr", "--subset", subset],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    cells = next([c.strip() for c in line.strip().strip("|").split("|")] for line in res.output.splitlines()
                 if "| PSNR (dB)" in line)
    mean, ci, wins, n = cells[3], cells[4], cells[5].split(" / ")[0], cells[2]
    ours = next(line for line in table[2:] if f"| {vd.SUBSETS[subset]} |" in line)
    assert f"| {n} | {vd._signed(float(mean))} [" in ours
    low, high = (vd._signed(float(x)) for x in ci.strip("[]").split(", "))
    assert f"[{low}, {high}] | {wins} of {n} | {cells[6]} |" in ours  # and gib compare's p


def test_q_is_benjamini_hochberg_of_the_p_column_over_every_row(vd, table):
    cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in table[2:]]
    p, q = [float(c[6]) for c in cells], [float(c[7]) for c in cells]
    m, ranked = len(p), sorted(p)
    # by its definition (an implementation of its own): q_i = min over p_j >= p_i of p_j m / rank_j; then
    # rounded as the table prints it
    expected = [min(1.0, min(v * m / (len(ranked) - ranked[::-1].index(v)) for v in ranked if v >= pi)) for pi in p]
    # the table prints 2 significant digits of p, so recomputing from the printed p agrees to that rounding
    assert all(abs(qi - e) <= 0.06 * e + 1e-4 for qi, e in zip(q, expected, strict=True)), (q, expected)
    assert all(qi >= pi for pi, qi in zip(p, q, strict=True))
    # the rows of 8 photos cannot fall below 2/256
    assert all(float(c[6]) >= 0.0078 for c in cells if c[3] == "8")


def _copy_records(tmp_path: Path, rels: list[str]) -> Path:
    """The named run folders of docs/records under tmp_path/records (their SQLite files only)."""
    root = tmp_path / "records"
    for rel in rels:
        (root / rel).mkdir(parents=True)
        shutil.copy(VERDICTS.parent / rel / "results.sqlite", root / rel / "results.sqlite")
    return root


@pytest.fixture
def today(vd, table, monkeypatch):
    """The page checks below against the table computed once (the first test computes it through main)."""
    monkeypatch.setattr(vd, "table_lines", lambda path: table if path == VERDICTS else pytest.fail(str(path)))


def test_a_missing_or_changed_row_fails_the_check_and_names_it(vd, table, today, tmp_path, capsys):
    lines = table
    page = tmp_path / "page.md"
    page.write_text("\n".join(lines[:3] + lines[4:]))
    assert vd.main([str(VERDICTS), "--check", str(page)]) == 1
    assert lines[3] in capsys.readouterr().err
    page.write_text("\n".join(lines).replace(" of 8 |", " of 9 |"))
    assert vd.main([str(VERDICTS), "--check", str(page)]) == 1


@pytest.mark.parametrize("change", ["repeated", "left over"])
def test_a_row_the_records_do_not_give_fails_the_check(vd, table, today, tmp_path, capsys, change):
    """The page's table must be exactly today's: a row pasted twice (the page once held one) or left
    from an earlier rendering fails, though every row of today's is there."""
    extra = table[4] if change == "repeated" else table[4].replace(" of 8 |", " of 7 |")
    page = tmp_path / "page.md"
    page.write_text("\n".join(["intro", "", *table[:5], extra, *table[5:], "", "after"]))
    assert vd.main([str(VERDICTS), "--check", str(page)]) == 1
    assert "the records do not give (left over or repeated), first:\n" + extra in capsys.readouterr().err
    page.write_text("\n".join(["intro", "", *table, "", "after"]))
    assert vd.main([str(VERDICTS), "--check", str(page)]) == 0


def _file(root: Path, rows: object) -> Path:
    path = root / "v.json"
    path.write_text(json.dumps({"rows": rows}))
    return path


def test_a_verdicts_file_of_its_own_renders_from_copied_records(vd, table, tmp_path):
    row = vd.load_rows(VERDICTS)[0]
    subset, pair = next(iter(row["pairs"].items()))
    root = _copy_records(tmp_path, [pair[0], pair[2]])
    own = vd.table_lines(_file(root, [{**row, "pairs": {subset: pair}}]))
    cells, committed = own[2].split(" | "), table[2].split(" | ")
    # the same row, but for q: a family of one test has q = p
    assert cells[:7] + cells[8:] == committed[:7] + committed[8:] and cells[7] == cells[6]


@pytest.mark.parametrize("rows,expected", [
    ([], "non-empty list 'rows'"),
    ([{"claim": "c", "a": "A"}], "expected the strings 'claim', 'a' and 'b'"),
    ([{"claim": "c", "a": "A", "b": "B", "pairs": {"faces": []}}], "keyed by subset"),
    ([{"claim": "c", "a": "A", "b": "B", "pairs": {"photos": ["x", "pmsfc"]}}], "[A folder, A method, B folder"),
    ([{"claim": "c", "a": "A", "b": "B", "pairs": {"photos": ["../outside", "m", "x", "m"]}}], "lies outside"),
    ([{"claim": "c", "a": "A", "b": "B", "pairs": {"photos": ["/etc", "m", "x", "m"]}}], "lies outside"),
    ([{"claim": "c", "a": "A", "b": "B", "pairs": {"photos": ["nowhere", "m", "x", "m"]}}], "not a run folder"),
])
def test_a_bad_verdicts_file_is_refused_with_the_row_and_what_was_expected(vd, tmp_path, rows, expected):
    path = _file(tmp_path, rows)
    with pytest.raises(vd.VerdictsError) as err:
        vd.load_rows(path)
    assert expected in str(err.value) and str(path) in str(err.value)
    if rows:
        assert "row 1" in str(err.value)


def test_a_file_that_is_not_json_and_a_pair_gib_compare_refuses_exit_with_a_message(vd, tmp_path, capsys):
    bad = tmp_path / "v.json"
    bad.write_text("{not json")
    assert vd.main([str(bad)]) == 2
    assert "not a readable JSON file" in capsys.readouterr().err
    # 32 faces against 8 photos: the two folders share no image, which gib compare refuses
    faces, photos = "claim-check-cpu-full7/a/mganprior-N30", "claim-check-cpu-full6-photos/a/mganprior-N30"
    root = _copy_records(tmp_path, [faces, photos])
    path = _file(root, [{"claim": "c", "a": "A", "b": "B", "pairs": {"photos": [faces, "mganprior", photos,
                                                                                 "mganprior"]}}])
    assert vd.main([str(path)]) == 2
    assert "no image in common" in capsys.readouterr().err
