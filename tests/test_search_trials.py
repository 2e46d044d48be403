"""benchmarks/search_trials.py: every trial of a search, from a profile entry or from a stopped search's
journal, checked against the entry and journal written by gib tune itself; bad arguments refused."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from bench_scripts import load
from click.testing import CliRunner

from gan_inversion_bench.cli import main as gib
from gan_inversion_bench.profiles import read_profile

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def st():
    return load("search_trials")


@pytest.fixture(scope="module")
def searched(tmp_path_factory) -> Path:
    """A search drawing the schedule with the rate (pggan-tiny, 3 trials of 3 iterations)."""
    out = tmp_path_factory.mktemp("search") / "pggan-tiny.json"
    result = CliRunner().invoke(gib, ["tune", "-g", "pggan-tiny", "-m", "single-code", "--trials", "3", "--budget", "3",
                                      "--images", "1", "--device", "cpu", "--out", str(out),
                                      "--choose", "lr_schedule=constant,cosine"])
    assert result.exit_code == 0, result.output
    return out


def test_a_profile_entry_gives_a_row_per_trial_with_the_best_marked(st, searched, capsys):
    assert st.main([f"{searched}:single-code@3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header[:3] == ["search", "trial", "schedule"] and header[-1] == "mean PSNR (dB)"
    entry = read_profile(searched)["methods"]["single-code"]
    body = lines[2:]
    assert len(body) == len(entry["trials"]) == 3
    for line, trial in zip(body, entry["trials"], strict=True):
        cells = dict(zip(header, (c.strip() for c in line.strip("|").split("|")), strict=True))
        assert cells["trial"] == str(trial["number"]) and cells["schedule"] == trial["params"]["lr_schedule"]
        assert cells["mean PSNR (dB)"].split()[0] == f"{trial['value']:.2f}"
        lr = trial["params"].get("adam_lr", trial["params"].get("sgd_lr"))
        assert f"{lr:.3g}" in (cells.get("Adam lr"), cells.get("SGD lr"))
        assert cells["mean PSNR (dB)"].endswith("◀") == (trial["number"] == entry["tuning"]["best_trial"])


def test_a_stopped_search_is_read_from_its_journal(st, tmp_path, capsys):
    """A search stopped after its second trial keeps both in its journal (gib tune's own, resumable file)
    and writes no entry; the table reads them from there."""
    from gan_inversion_bench import GENERATORS
    from gan_inversion_bench.tuning import TuneConfig, tune

    journal = tmp_path / "stopped" / "p.journal.sqlite"
    tc = TuneConfig(trials=4, budget=3, n_images=1, min_resource=2, pruning="none",
                    choices={"lr_schedule": ["constant", "cosine"]})
    seen = []

    def stop_after_two(line: str) -> None:
        seen.append(line)
        if len(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        tune(GENERATORS.create("pggan-tiny"), "single-code", tc, on_trial=stop_after_two, journal=journal)
    assert st.main([str(journal)]) == 0
    lines = capsys.readouterr().out.splitlines()
    label = "stopped single-code (3 it, 2 of 4 trials, stopped)"  # the journal's folder, method, budget, trials
    assert [line.split("|")[1].strip() for line in lines[2:]] == [label] * 2
    assert [line.split("|")[2].strip() for line in lines[2:]] == ["0", "1"]
    assert all(line.split("|")[3].strip() in ("constant", "cosine") for line in lines[2:])
    assert sum(line.rstrip(" |").endswith("◀") for line in lines[2:]) == 1


@pytest.mark.parametrize("arg, message", [
    ("nowhere.json:single-code@3", r"nowhere\.json: not found"),
    ("{searched}:single-code", r"expected PROFILE\.json:METHOD@BUDGET"),
    ("{searched}:single-code@100", r"single-code has no entry searched at 100 iterations"),
    ("{searched}:mganprior@3", r"no entry for 'mganprior'"),
])
def test_bad_arguments_are_refused(st, searched, arg, message):
    with pytest.raises(SystemExit, match=message):
        st.main([arg.format(searched=searched)])


def test_the_pages_table_is_what_the_committed_searches_give_today(st, capsys):
    """docs/results.md, "Searching the schedule": the rows its command prints from the committed files."""
    page = (ROOT / "docs" / "results.md").read_text()
    command = re.search(r"\*\*Reproduce the table:\*\* `python benchmarks/search_trials\.py ([^`]+)`", page)
    assert command, "docs/results.md has no search_trials.py command"
    assert st.main([str(ROOT / a) for a in command.group(1).split()]) == 0
    printed = capsys.readouterr().out.replace(str(ROOT) + "/", "").splitlines()
    missing = [row for row in printed if row not in page]
    assert len(printed) > 4 and not missing, missing[:1]
