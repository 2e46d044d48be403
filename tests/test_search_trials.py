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


def test_the_pages_tables_are_what_the_committed_searches_give_today(st, capsys):
    """docs/results.md, "Searching the schedule" and "Tuning on real photos": the rows each of its commands
    prints from the committed files."""
    page = (ROOT / "docs" / "results.md").read_text()
    commands = re.findall(r"\*\*Reproduce the table:\*\* `python benchmarks/search_trials\.py ([^`]+)`", page)
    assert commands, "docs/results.md has no search_trials.py command"
    for command in commands:
        assert st.main([a if a.startswith("--") else str(ROOT / a) for a in command.split()]) == 0
        printed = [row for row in capsys.readouterr().out.replace(str(ROOT) + "/", "").splitlines() if row]
        missing = [row for row in printed if row not in page]
        assert len(printed) > 4 and not missing, missing[:1]


def test_two_searches_differing_only_in_their_images_score_the_same_settings(st, tmp_path, capsys):
    """A seeded search draws the same settings in its random start-up trials whatever its tuning images, so
    --paired puts the two values of each setting side by side; the rank correlation is Spearman's, checked
    against the Pearson correlation of the ranks computed here."""
    import numpy as np

    files = {}
    for images in ("generated", "photos-tune"):
        files[images] = tmp_path / images / "pggan-tiny.json"
        result = CliRunner().invoke(gib, ["tune", "-g", "pggan-tiny", "-m", "single-code", "--trials", "4",
                                          "--budget", "3", "--images", "2", "--pruning", "none", "--device", "cpu",
                                          "--tune-images", images, "--out", str(files[images])])
        assert result.exit_code == 0, result.output
    a, b = (read_profile(files[k])["methods"]["single-code"]["trials"] for k in ("generated", "photos-tune"))
    assert [t["params"] for t in a] == [t["params"] for t in b] and [t["value"] for t in a] != [t["value"] for t in b]
    assert st.main(["--paired", f"{files['generated']}:single-code@3", f"{files['photos-tune']}:single-code@3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    body = [line for line in lines if line.startswith("| ") and line[2].isdigit()]
    assert len(body) == 4
    for line, x, y in zip(body, a, b, strict=True):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[:2] == [str(x["number"])] * 2 and cells[-4:-2] == [f"{x['value']:.2f}", f"{y['value']:.2f}"]
    ra, rb = (np.argsort(np.argsort([-t["value"] for t in trials])) for trials in (a, b))
    rho = float(np.corrcoef(ra, rb)[0, 1])
    assert f"over these 4 settings: {rho:+.2f} (two-sided p = " in lines[-1]
    with pytest.raises(SystemExit, match="--paired: expected two searches, got 1"):
        st.main(["--paired", f"{files['generated']}:single-code@3"])
    other = tmp_path / "other" / "pggan-tiny.json"  # another seed: no setting in common
    result = CliRunner().invoke(gib, ["tune", "-g", "pggan-tiny", "-m", "single-code", "--trials", "2", "--budget", "3",
                                      "--images", "1", "--seed", "7", "--device", "cpu", "--out", str(other)])
    assert result.exit_code == 0, result.output
    with pytest.raises(SystemExit, match=r"--paired: 0 finished trial\(s\) drew the same parameters"):
        st.main(["--paired", f"{files['generated']}:single-code@3", f"{other}:single-code@3"])
