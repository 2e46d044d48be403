"""benchmarks/settling.py: final loss against the lowest loss of each stored history, checked against a
direct reading of a committed records database, and its refusals."""
from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from bench_scripts import load

RECORDS = Path(__file__).resolve().parent.parent / "docs" / "records"


def test_settling_matches_a_direct_reading_of_the_database():
    st = load("settling")
    run = RECORDS / "claim-check-cpu-xcpu" / "a" / "single-code"
    with sqlite3.connect(run / "results.sqlite") as conn:
        histories = [json.loads(h) for (h,) in conn.execute("SELECT loss_history FROM results WHERE status = 'ok'")]
    ratios = np.array([h["loss"][-1] / min(h["loss"]) for h in histories])
    where = np.array([h["iteration"][int(np.argmin(h["loss"]))] / h["iteration"][-1] for h in histories])
    (row,) = st.settling(run, above=1.5).to_dict("records")
    assert row["method"] == "single-code" and row["images"] == len(histories) == 8 and row["iterations"] == 2000
    assert row["median"] == pytest.approx(float(np.median(ratios)))
    assert row["max"] == pytest.approx(float(ratios.max()))
    assert row["above"] == int((ratios > 1.5).sum())
    assert row["lowest_at"] == pytest.approx(float(np.median(where)))
    assert row["median"] > 1.5  # the constant rate's oscillation (docs/methods.md, "Learning-rate schedule")


def test_image_settling_edge_cases():
    st = load("settling")
    assert st.image_settling({"iteration": [0, 5, 10], "loss": [4.0, 1.0, 2.0]}) == (2.0, 0.5)
    assert st.image_settling({"iteration": [0, 5, 10], "loss": [4.0, None, 2.0]}) == (1.0, 1.0)
    assert st.image_settling({"iteration": [0, 10], "loss": [4.0, None]}) is None  # no final loss (failed)
    assert st.image_settling({"iteration": [0], "loss": [4.0]}) is None
    assert st.image_settling(None) is None and st.image_settling({"loss": [1.0, 2.0]}) is None


def test_refusals(tmp_path, capsys):
    st = load("settling")
    with pytest.raises(SystemExit, match=r"not a run folder .*results.sqlite not found"):
        st.main([str(tmp_path)])
    with pytest.raises(SystemExit, match=r"--above must be at least 1"):
        st.main([str(RECORDS / "claim-check-cpu-xcpu" / "a" / "single-code"), "--above", "0.5"])
    assert st.main([str(RECORDS / "claim-check-cpu-xcpu" / "a" / "mganprior-N30-divN")]) == 0
    assert "| mganprior | 2000 | 8 | 1.000 |" in capsys.readouterr().out


def test_the_pages_table_is_what_the_records_give_today():
    """docs/results.md, "Has each run settled?": the rows its command prints from the committed records."""
    st = load("settling")
    page = (RECORDS.parent / "results.md").read_text()
    command = re.search(r"\*\*Reproduce:\*\* `python benchmarks/settling\.py ([^`]+)`", page)
    assert command, "docs/results.md has no settling.py command"
    folders = command.group(1).split()
    rendered = st.markdown(st.pd.concat([st.settling(RECORDS.parent.parent / f) for f in folders], ignore_index=True),
                           1.1).splitlines()
    missing = [row for row in rendered[2:] if row.replace(str(RECORDS.parent.parent) + "/", "") not in page]
    assert len(rendered) == len(folders) + 2 and not missing, missing[:1]
