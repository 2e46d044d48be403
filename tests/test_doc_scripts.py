"""The scripts that write docs/results.md and the tables of docs/performance.md, on tiny budgets."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from bench_scripts import load


@pytest.fixture(autouse=True)
def digiface_profile_only(tmp_path, monkeypatch) -> Path:
    """The scripts see dcgan-digiface64's committed tuned profile and no other (GIB_PROFILES), so what
    they do with an untuned generator does not change when the repository tunes one."""
    from gan_inversion_bench.profiles import PACKAGE_DIR

    folder = tmp_path / "profiles"
    folder.mkdir()
    (folder / "dcgan-digiface64.json").write_bytes((PACKAGE_DIR / "dcgan-digiface64.json").read_bytes())
    monkeypatch.setenv("GIB_PROFILES", str(folder))
    return folder


def test_claim_check_runs_resumes_and_keeps_the_verdict(tmp_path, digiface_profile_only):
    """The three experiments on tiny budgets: a part of experiment a, the split scan and two
    configurations of experiment b; c is skipped (no tuned profile). Then the page, a resume that
    recomputes nothing, hand-written verdicts that survive, and a refused change of protocol."""
    cc = load("claim_check")
    out, page = tmp_path / "cc", tmp_path / "docs" / "results.md"
    args = ["--out", str(out), "--write", str(page), "--iterations", "2", "--n-generated", "1", "--images", "generated",
            "--restarts", "1", "--discovery-iterations", "2", "--scan-splits", "2,3", "--split", "3", "--device", "cpu",
            "--only", "a/single-code,a/pmsfc-RK10-w1,b/discovered,b/random"]
    assert cc.main(args) == 0
    text = page.read_text()
    for heading in ("## Experiment a: best against best", "## Experiment b: subspace relevance",
                    "## Experiment c: subspace relevance on dcgan-omniart-eyes128"):
        assert heading in text
    assert "| PmSFC R·K = 2·5, w0 = 1 − single-code | generated | 1 |" in text
    assert "| discovered masks (R = 6, K = 5) − random partition, same sizes (R = 6, K = 5) | generated |" in text
    assert "Not run in this session: mGANprior N = 10, " in text and "`dcgan-omniart-eyes128` has no tuned" in text
    assert "| 2 | 4x4.bn | 512×4×4 |" in text and "| 3 ◀ | 4x4.relu | 512×4×4 |" in text
    assert "**Split used: 3** (given with --split; the scan's lowest: split " in text
    scan = scan_before = json.loads((out / "b" / "scan.json").read_text())
    for entry in scan["splits"].values():  # both ratios, from the three held-out losses
        assert entry["ratio_init"] == pytest.approx(entry["feature_trained"] / entry["feature_init"])
        assert entry["ratio"] == pytest.approx(entry["feature_trained"] / entry["feature_s0"])
    assert "to the initial S: " in scan["reason"] and "| ratio to initial S |" in text
    assert "| it 1 | it 2 | gain 1→2 |" in text
    assert "| A − B | it 1 | it 2 |" in text  # the pairs along the way, at the trace points from 1/64 of the budget
    assert text.count("(verdict to be written)") == 2
    for key in ("a", "b"):
        assert (page.parent / "img" / f"claim_check_{key}.png").stat().st_size > 1000
    # the figure has a row per configuration that ran, not empty rows for the others
    assert "Rows, top to bottom: target, single-code, PmSFC R·K = 2·5, w0 = 1; columns:" in text
    runs = json.loads((out / "runs.json").read_text())
    assert set(runs) == {"a/single-code", "a/pmsfc-RK10-w1", "b/scan-2", "b/scan-3", "b/discovered", "b/random"}
    # hand-written verdicts survive regeneration, and a second run resumes without recomputing
    text = text.replace("(verdict to be written)", "PmSFC wins nothing here.", 1)
    kept = "<!-- kept: other results -->\n## Restoration\n\nA table.\n<!-- kept: other results -->"
    page.write_text(text.replace("(verdict to be written)", "The subspaces do not matter.", 1) + "\n" + kept + "\n")
    from gan_inversion_bench.tables import load_records

    def records():
        return {k: load_records(out / k)[["method_key", "image_id", "created"]] for k in runs if "scan" not in k}

    # a scan made before the initial S was measured gets it on the next run, with the same value
    legacy = json.loads((out / "b" / "scan.json").read_text())
    for entry in legacy["splits"].values():
        del entry["feature_init"], entry["ratio_init"]
    (out / "b" / "scan.json").write_text(json.dumps(legacy, indent=1, sort_keys=True))
    assert cc.main(args) == 0
    before, scan = records(), (out / "b" / "scan.json").read_text()
    assert json.loads(scan)["splits"] == json.loads(json.dumps(scan_before))["splits"]
    assert cc.main(args) == 0
    again = page.read_text()
    assert "PmSFC wins nothing here." in again and "The subspaces do not matter." in again
    assert "(verdict to be written)" not in again and again.count("## Restoration\n\nA table.") == 1
    after = records()
    assert all(len(after[k]) == 1 and after[k].equals(before[k]) for k in before)  # nothing recomputed or rewritten
    assert (out / "b" / "scan.json").read_text() == scan
    with pytest.raises(SystemExit, match="iterations"):  # one protocol per folder
        cc.main(["--out", str(out), "--iterations", "3", "--no-run"])
    moved = [*args[:args.index("--split")], "--split", "2", *args[args.index("--split") + 2:]]
    with pytest.raises(SystemExit, match="its configurations ran at split 3, but the split would now be 2"):
        cc.main(moved)  # a resume never mixes configurations at two splits
    assert json.loads((out / "b" / "scan.json").read_text())["chosen"] == 3
    # the page states the settings its records used, not a profile re-tuned since
    profile_file = digiface_profile_only / "dcgan-digiface64.json"
    profile = json.loads(profile_file.read_text())
    used = profile["methods"]["single-code"]["settings"]["lr"]
    settings = next(line for line in page.read_text().splitlines() if line.startswith("**Settings.**"))
    from gan_inversion_bench.profiles import entries, entry_budget

    searched = " and ".join(str(entry_budget(e)) for e in entries(profile["methods"]["single-code"])
                            if e["settings"]["lr"] == used)  # every entry that holds them (100 and 2000)
    assert f"single-code: lr {used:.3g}, optimizer adam (searched at {searched} iterations);" in settings
    for e in [profile["methods"]["single-code"], *profile["methods"]["single-code"].get("other_budgets", [])]:
        e["settings"]["lr"] = 0.999  # every entry re-tuned since
    profile_file.write_text(json.dumps(profile))
    assert cc.main([*args, "--no-run"]) == 0
    settings = next(line for line in page.read_text().splitlines() if line.startswith("**Settings.**"))
    assert f"single-code: lr {used:.3g}, optimizer adam (no current entry holds them);" in settings
    assert "0.999" not in settings and "as experiment a's records hold them" in settings


def test_claim_check_states_the_entry_searched_nearest_its_budget():
    """Without records, the settings line is the profile's entry for the protocol's budget, and says
    at which budget it was searched (the committed profile holds mGANprior and PmSFC at 100 and 2000)."""
    import pandas as pd

    from gan_inversion_bench.profiles import method_entries, tuned_settings

    cc = load("claim_check")
    assert [e["tuning"]["budget"] for e in method_entries("dcgan-digiface64", "pmsfc")] == [100, 2000]
    for budget, searched in ((2000, 2000), (100, 100), (440, 100), (450, 2000)):  # the ratio midpoint is 447
        text = cc._tuned_text("dcgan-digiface64", pd.DataFrame(), [], budget)
        for m in ("mganprior", "pmsfc"):
            lr = tuned_settings("dcgan-digiface64", m, searched)[1]["lr"]
            part = next(x for x in text.split("; ") if x.startswith(f"{m}: "))
            assert f"lr {lr:.3g}," in part and part.endswith(f"(searched at {searched} iterations)"), (budget, part)
        # single-code's entries at 100 and 2000 hold the same settings (its warm-started search at 2000 kept them)
        assert "single-code: lr 0.183, optimizer adam (searched at 100 and 2000 iterations)" in text


def test_claim_check_runs_pmsfc_at_its_tuned_w0_beside_the_issues_two():
    """Experiment a's PmSFC grid: w0 0.25 and 1 (the issue's) replace the tuned value; "w0 tuned" keeps the
    entry's, and is paired with w0 = 0.25 at the same capacity when both ran."""
    import pandas as pd

    cc = load("claim_check")
    cfgs = {c.name: c for c in cc.best_configs(cc.EXPERIMENTS[0], cc.Protocol())}
    for rk in (10, 30):
        assert cfgs[f"pmsfc-RK{rk}-w0.25"].overrides["weight_init"] == 0.25
        assert cfgs[f"pmsfc-RK{rk}-w1"].overrides["weight_init"] == 1.0
        tuned = cfgs[f"pmsfc-RK{rk}-wtuned"]
        assert "weight_init" not in tuned.overrides and tuned.codes == rk and tuned.family == "pmsfc"
    labels = ["PmSFC R·K = 6·5, w0 tuned", "PmSFC R·K = 6·5, w0 = 0.25", "mGANprior N = 30, /N"]
    df = pd.DataFrame({"label": labels, "psnr": [40.0, 39.0, 42.0], "status": "ok"})
    pairs = cc.best_pairs(list(cfgs.values()), df)
    assert ("PmSFC R·K = 6·5, w0 tuned", "mGANprior N = 30, /N") in pairs  # the best PmSFC at 30 codes
    assert ("PmSFC R·K = 6·5, w0 tuned", "PmSFC R·K = 6·5, w0 = 0.25") in pairs
    assert not any("2·5" in a or "2·5" in b for a, b in pairs)  # only what ran is paired


def test_claim_check_with_restarts_pairs_the_best_and_the_mean_of_the_starts(tmp_path):
    """With --restarts 2 the page adds the mean PSNR over each image's starts to the table and to
    the paired differences, recomputed here from the stored per-start PSNRs."""
    cc = load("claim_check")
    out, page = tmp_path / "cc", tmp_path / "results.md"
    args = ["--out", str(out), "--write", str(page), "--iterations", "2", "--n-generated", "2", "--images", "generated",
            "--restarts", "2", "--device", "cpu", "--only", "a/single-code,a/mganprior-N10"]
    assert cc.main(args) == 0
    text = page.read_text().split("## Experiment b")[0]
    assert "| PSNR (dB) ↑ | PSNR mean of starts (dB) ↑ | SSIM ↑ |" in text
    assert "| ΔPSNR mean of starts [95 % CI] | W/T/L |" in text and "*PSNR mean of starts* is each image's" in text
    from gan_inversion_bench.tables import load_records

    mean_of_starts = {}
    for name in ("single-code", "mganprior-N10"):
        records = load_records(out / "a" / name)
        assert all(r["k"] == 2 for r in records["restarts"])
        mean_of_starts[name] = {i: sum(r["psnr"]) / 2
                                for i, r in zip(records["image_id"], records["restarts"], strict=True)}
    diff = [mean_of_starts["mganprior-N10"][i] - d for i, d in mean_of_starts["single-code"].items()]
    row = next(line for line in text.splitlines() if line.startswith("| mGANprior N = 10 − single-code | generated |"))
    assert row.split(" | ")[6].startswith(f"{sum(diff) / 2:+.2f} [")  # after ΔPSNR, W/T/L and its p
    assert "| PSNR W/T/L | PSNR p | ΔPSNR mean of starts [95 % CI] |" in text


def test_claim_check_archive_renders_the_same_page_from_the_committed_records(tmp_path):
    """--archive copies the records alone; a page rendered from the archive (--section a=DEST) has the same
    tables as one rendered from the run folder, names the run folder in its Reproduce line, keeps the figure
    it cannot draw, and says the records are committed. A second check folder cannot archive into it."""
    cc = load("claim_check")
    out, dest = tmp_path / "runs" / "cc", tmp_path / "docs" / "records" / "cc"
    page, page2 = tmp_path / "docs" / "results.md", tmp_path / "docs" / "again.md"
    args = ["--out", str(out), "--iterations", "2", "--n-generated", "2", "--images", "generated", "--restarts", "2",
            "--device", "cpu", "--only", "a/single-code,a/mganprior-N10"]
    assert cc.main([*args, "--write", str(page), "--archive", str(dest)]) == 0
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()) == [
        "a/mganprior-N10/results.sqlite", "a/single-code/results.sqlite", "archive.json", "protocol.json", "runs.json"]
    assert cc.main([*args, "--no-run", "--section", f"a={dest}", "--write", str(page2)]) == 0

    def tables_of(text: str) -> list[str]:
        a = text.split("## Experiment a")[1].split("## Experiment b")[0]
        return [line for line in a.splitlines() if line.startswith("|")]

    text, again = page.read_text(), page2.read_text()
    assert tables_of(again) == tables_of(text) and len(tables_of(text)) > 10
    reproduce = next(line for line in again.splitlines() if line.startswith("**Reproduce:**"))
    command = reproduce.split("`")[1]
    assert f"--out {out} " in command and str(dest) not in command
    assert f"add `--settings-from {dest}`, with a new `--out` folder, to run at the settings these records hold" \
        in reproduce and "--settings-from" not in text  # only where the records are committed
    assert f"**Raw records:** `{dest}/a/<configuration>/results.sqlite`" in again
    assert f"committed (`--archive`: the records alone, from the run folder `{out}`" in again
    assert "git-ignored" in text and "git-ignored" not in again.split("## Experiment b")[0]
    assert "![targets and reconstructions, experiment a](img/claim_check_a.png)" in again
    assert "Drawn when the page was rendered from the run folder" in again
    # again: nothing new to copy; an archive with fewer records than its run folder is refused, not merged
    assert cc.main([*args, "--no-run", "--archive", str(dest)]) == 0
    import sqlite3

    with sqlite3.connect(dest / "a" / "single-code" / "results.sqlite") as conn:
        conn.execute("DELETE FROM results WHERE image_id = 'generated/001'")
    with pytest.raises(SystemExit, match=r"holds 1 records, .* 2; remove .*results\.sqlite to archive it again"):
        cc.main([*args, "--no-run", "--archive", str(dest)])
    more = [*args[:args.index("--n-generated") + 1], "3", *args[args.index("--n-generated") + 2:]]
    other = [a if a != str(out) else str(tmp_path / "other") for a in more]
    with pytest.raises(SystemExit, match="it archives the check folder"):
        cc.main([*other, "--no-run", "--archive", str(dest)])


def test_claim_check_experiment_c_with_transferred_settings(tmp_path, digiface_profile_only):
    """Experiment c on a generator without a tuned PmSFC profile runs with another generator's tuned
    settings (--tuned-from), records them in every configuration and says so on the page."""
    cc = load("claim_check")
    out, page = tmp_path / "cc", tmp_path / "results.md"
    args = ["--out", str(out), "--write", str(page), "--iterations", "2", "--n-generated", "1", "--images", "generated",
            "--restarts", "1", "--discovery-iterations", "2", "--scan-splits", "3", "--device", "cpu", "--only", "c",
            "--tuned-from", "dcgan-digiface64"]
    assert cc.main(args) == 0
    text = page.read_text().split("## Experiment c")[1]
    assert "**Settings transferred, not tuned here.** `dcgan-omniart-eyes128` has no tuned PmSFC profile" in text
    assert "--tuned-from dcgan-digiface64" in text and "**Split used: 3**" in text
    assert "| random partitions, mean of the draws − one subspace (R = 1, K = 30) | generated | 1 |" in text
    assert "| discovered masks (R = 6, K = 5) − random partition, draw 2 (R = 6, K = 5) | generated | 1 |" in text
    from gan_inversion_bench.profiles import tuned_settings
    from gan_inversion_bench.tables import load_records

    _, tuned = tuned_settings("dcgan-digiface64", "pmsfc")
    psnr = {}
    for name, partition in (("discovered", "discovered"), ("random", "random"), ("random-s1", "random:1"),
                            ("random-s2", "random:2"), ("R1-K30", "discovered")):
        records = load_records(out / "c" / name)
        settings, psnr[name] = records["method_settings"].iloc[0], float(records["psnr"].iloc[0])
        assert all(settings[k] == v for k, v in tuned.items()) and settings["partition"] == partition, name
    # the paired "mean of the draws" row, recomputed from the three random partitions' records
    mean = (psnr["random"] + psnr["random-s1"] + psnr["random-s2"]) / 3
    row = "| discovered masks (R = 6, K = 5) − random partitions, mean of the draws | generated | 1 | "
    assert row + f"{psnr['discovered'] - mean:+.2f} |" in text
    without = ["--out", str(tmp_path / "none"), "--iterations", "2", "--n-generated", "1", "--only", "c"]
    assert cc.main(without) == 0 and not (tmp_path / "none" / "c").exists()  # skipped: nothing tuned, nothing given
    # the generator gets a tuned profile of its own later: the folder keeps the settings its protocol named
    own = json.loads((digiface_profile_only / "dcgan-digiface64.json").read_text())
    own["generator"], own["methods"]["pmsfc"]["settings"]["lr"] = "dcgan-omniart-eyes128", 0.5
    (digiface_profile_only / "dcgan-omniart-eyes128.json").write_text(json.dumps(own))
    assert cc.main([*args, "--no-run"]) == 0
    again = page.read_text().split("## Experiment c")[1]
    assert "`--tuned-from` was given, so every row (not `dcgan-omniart-eyes128`'s own tuned profile" in again
    assert row + f"{psnr['discovered'] - mean:+.2f} |" in again and f"lr {tuned['lr']:.3g}" in again
    # without --tuned-from, that profile of its own is what every row runs with, and the page names it
    own_args = [a if a != str(out) else str(tmp_path / "own") for a in args[:-4]] + ["--only", "c/discovered"]
    own_args[own_args.index("--write") + 1] = str(tmp_path / "own.md")
    assert cc.main(own_args) == 0
    assert load_records(tmp_path / "own" / "c" / "discovered")["method_settings"].iloc[0]["lr"] == 0.5
    own_c = (tmp_path / "own.md").read_text().split("## Experiment c")[1]
    assert "**Settings tuned on this generator.** Every row uses `dcgan-omniart-eyes128`'s own tuned PmSFC " \
           "profile (lr 0.5, " in own_c and "Settings transferred" not in own_c

    # the page renders c from that folder (its own protocol) while a and b come from another one; a second
    # folder for c becomes a subsection before c's verdict
    other, page2 = tmp_path / "main", tmp_path / "page.md"
    render = ["--out", str(other), "--iterations", "3", "--n-generated", "1", "--no-run", "--write", str(page2)]
    assert cc.main([*render, "--section", f"c={out}", "--section", f"c={out}/"]) == 0
    text = page2.read_text()
    c = text.split("## Experiment c")[1]
    assert f"**Its own folder and protocol** (`{out}`): iterations 2 (the page's: 3); " in c
    assert "tuned from dcgan-digiface64 (the page's: none)" in c
    assert "--scan-splits 3 --only c" in c and "| discovered masks (R = 6, K = 5) − random partition" in c
    assert c.index(f"### The same from `{out}`: split 3 (") < c.index(
        "<!-- verdict c -->")
    assert (tmp_path / "img" / "claim_check_c_cc.png").is_file()
    assert f"--section c={out} --section c={out} --write" in text and "under `" + str(other) + "/`, `" in text
    assert "| cc/c/discovered | 1 |" in text and "| c/discovered |" not in text  # sessions, once, by folder
    nowhere = f"c={tmp_path / 'nowhere'}"
    bad_sections = (("x=" + str(out), "EXP=FOLDER"), ("c", "EXP=FOLDER"), (nowhere, "protocol.json"))
    for bad, why in bad_sections:
        with pytest.raises(SystemExit, match=why):
            cc.main([*render, "--section", bad])


def test_claim_check_split_choice_states_its_ratio():
    cc = load("claim_check")
    scan = {"splits": {"1": {"ratio": 0.3}, "2": {"ratio": 0.9}}}
    assert cc.choose_split(scan, None) == (1, "lowest ratio of the scan; its ratio 0.300: clearly below (< 0.8) its "
                                              "S = 0 value")
    assert cc.choose_split(scan, 2)[1].endswith("its ratio 0.900: NOT clearly below (0.8) its S = 0 value")
    assert cc.choose_split(scan, 7) == (7, "given with --split; the scan's lowest: split 1; not scanned, so its ratio "
                                           "is not known")


def test_perf_summary_picks_the_fastest_variant_per_method(tmp_path, capsys):
    ps = load("perf_summary")

    def row(method, variant, precision, s_img, tflops):
        return {"method": method, "variant": variant, "precision": precision, "batch": 2, "paper_iterations": 100,
                "s_per_image_at_paper_iterations": s_img, "s_per_iteration_per_image": s_img / 100,
                "achieved_tflops": tflops, "peak_fraction": None, "flops_per_iteration_per_image": 1e9,
                "warmup_s": 0.1}

    result = {"info": {}, "rows": [row("a", "reference", "fp32", 10.0, 0.1), row("a", "fp32", "fp32", 5.0, 0.2),
                                   row("a", "bf16", "bf16", 2.0, 0.4), row("b", "reference", "fp32", 30.0, 0.1),
                                   row("b", "fp32", "fp32", 3.0, 0.2)],
              "quality": [{"method": "a", "iterations": 50, "images": 4, "fp32": {"psnr_mean": 20.0},
                           "bf16": {"psnr_mean": 20.01, "psnr_diff_mean": 0.01, "psnr_diff_max_abs": 0.02}}]}
    path = tmp_path / "r.json"
    path.write_text(json.dumps(result))
    assert ps.main([str(path), "--peak-fp32", "0.4", "--peak-bf16", "0.8"]) == 0
    out = capsys.readouterr().out
    assert "| a | 100 | 10 | bf16 | 2 | 5.0× | 0.400 | 50 % | +0.010" in out
    assert "| b | 100 | 30 | fp32 | 3 | 10.0× | 0.200 | 50 % | 0 (fp32) |" in out
    assert "| b | fp32 | 2 | 30.0 | 3 | 10.00× |" in out  # b's speed-up is against b's reference, not a's


def test_perf_summary_takes_each_methods_own_quality_run(tmp_path, capsys):
    ps = load("perf_summary")
    rows = [{"method": m, "variant": v, "precision": v, "batch": 2, "paper_iterations": 100,
             "s_per_image_at_paper_iterations": t, "s_per_iteration_per_image": t / 100, "achieved_tflops": 0.1,
             "peak_fraction": None, "flops_per_iteration_per_image": 1e9, "warmup_s": 0.1}
            for m in ("a", "b") for v, t in (("reference", 10.0), ("bf16", 1.0))]
    quality = [{"method": m, "iterations": 50, "images": 4, "fp32": {"psnr_mean": 20.0},
                "bf16": {"psnr_mean": 20.0 + d, "psnr_diff_mean": d, "psnr_diff_max_abs": abs(d)}}
               for m, d in (("a", 0.01), ("b", -0.05))]
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"info": {}, "rows": rows, "quality": quality}))
    assert ps.main([str(path)]) == 0
    out = capsys.readouterr().out
    assert "| a | 100 | 10 | bf16 | 1 | 10.0× | 0.100 | – | +0.010" in out
    assert "| b | 100 | 10 | bf16 | 1 | 10.0× | 0.100 | – | -0.050" in out


@pytest.mark.parametrize("bad", [[], ["--peak-fp32", "x"]])
def test_perf_summary_refuses_bad_arguments(bad):
    with pytest.raises(SystemExit):
        load("perf_summary").main(bad)


def test_observation_baseline_rebuilds_the_runs_observations(tmp_path, capsys):
    """The observation rows of docs/results.md's restoration tables: rebuilt from the folder's identity,
    checked against independent facts (noise of σ = 0.1 on [0, 1] gives about 20 dB; outside the hole
    y equals x, so the hole's PSNR is the image's plus 10·log10 of the hole's area fraction); a folder
    whose stored inputs no longer match is refused."""
    import math
    import sqlite3

    from gan_inversion_bench.harness import RunConfig, run

    ob = load("observation_baseline")
    out = tmp_path / "o"
    base = dict(generator="pggan-tiny", methods=["single-code"], images="generated", n_generated=3, device="cpu",
                budget=1, latency=False, overrides={"single-code": {"perceptual_weight": 0.0}})
    for task, settings in (("denoise", {"sigma": 0.1}), ("inpaint", {"ratio": 0.25})):
        run(RunConfig(**base, task=task, task_settings=settings), out, progress=False, echo=lambda s: None)
    obs = ob.observation_records(out)
    assert len(obs) == 6 and set(obs["image_id"]) == {"generated/000", "generated/001", "generated/002"}
    noise = obs[obs["task_label"] == "denoise (sigma=0.1)"]
    assert noise["psnr"].between(19.5, 21.5).all()  # -10·log10(0.1²) = 20 dB, a little more where clipped
    hole = obs[obs["task_label"].str.startswith("inpaint")]
    assert all(abs(r.psnr_hole - (r.psnr + 10 * math.log10(0.25))) < 1e-6 for r in hole.itertuples())
    assert ob.main([str(out)]) == 0
    text = capsys.readouterr().out
    assert "#### denoise (sigma=0.1)" in text and "| *the observation y itself* | generated | 3 | " in text
    conn = sqlite3.connect(out / "results.sqlite")  # a stored input hash that no longer matches
    content = json.loads(conn.execute("SELECT value FROM meta WHERE key = 'content'").fetchone()[0])
    content["images"]["generated/001"] = "0" * 64
    conn.execute("UPDATE meta SET value = ? WHERE key = 'content'", (json.dumps(content),))
    conn.commit()
    conn.close()
    with pytest.raises(SystemExit, match=r"inputs differ .*generated/001"):
        ob.observation_records(out)


def test_claim_check_session_log_keeps_every_line_of_concurrent_writers(tmp_path):
    """Eight processes finishing at once in one folder: runs.json holds all 8 × 20 sessions (the
    unlocked read-modify-write kept only some of them)."""
    import multiprocessing

    cc = load("claim_check")

    def log_many(key: str) -> None:
        for _ in range(20):
            cc._log_session(tmp_path, key, 0.0, [0.0, 0.0, 0.0], 3)

    ctx = multiprocessing.get_context("fork")  # the children share the loaded script
    procs = [ctx.Process(target=log_many, args=(f"a/config-{i}",)) for i in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert all(p.exitcode == 0 for p in procs)
    log = json.loads((tmp_path / "runs.json").read_text())
    assert sorted(log) == sorted(f"a/config-{i}" for i in range(8))
    assert all(len(v) == 20 and all(e["new_records"] == 3 for e in v) for v in log.values())


def _traced(label: str, finals: dict[str, list[float]], iterations: list[int]) -> list[dict]:
    return [{"label": label, "method": label, "image_id": image, "subset": image.split("/")[0], "status": "ok",
             "psnr": values[-1], "lpips": 0.1, "trace": {"iteration": iterations, "psnr": values}}
            for image, values in finals.items()]


def test_claim_check_pairs_along_the_way_from_the_traces():
    """Each trace point's pair is the paired difference of the traces' values there (computed by hand
    here), the points start at 1/64 of the budget, the last point's pair is the final one, an image
    whose trace lacks a point is left out at that point only, and experiments b/c average the random
    partitions point by point."""
    import pandas as pd

    cc = load("claim_check")
    from gan_inversion_bench import stats

    its = [0, 1, 2, 4, 8, 16, 32, 64, 128, 200]
    a = {"generated/000": [5, 6, 7, 8, 9, 10, 11, 12, 13, 14], "generated/001": [5, 5, 5, 5, 5, 5, 5, 9, 9, 9],
         "photos/x": [1, 2, 3, 4, 5, 6, 7, 8, 9, 12]}
    b = {"generated/000": [5, 5, 5, 5, 5, 5, 5, 5, 5, 5], "generated/001": [6, 6, 6, 6, 6, 6, 6, 6, 6, 6],
         "photos/x": [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]}
    df = pd.DataFrame(_traced("A", a, its) + _traced("B", b, its))
    kept = [k for k, i in enumerate(its) if i != 64]
    df.loc[(df["label"] == "A") & (df["image_id"] == "photos/x"), "trace"] = [
        {"iteration": [its[k] for k in kept], "psnr": [a["photos/x"][k] for k in kept]}]
    points, diffs = cc.along_pairs(df, [], [("A", "B"), ("A", "missing")], "best")
    assert cc.along_points(df) == [4, 8, 16, 32, 128, 200]  # ≥ 200/64, and 64 is not in every trace
    assert points == [4, 8, 16, 32, 128, 200] and list(diffs) == [("A", "B")]
    for i, d in zip(points, diffs[("A", "B")], strict=True):
        k = its.index(i)
        by_hand = [a[img][k] - b[img][k] for img in a]
        assert d.n == 3 and d.mean == pytest.approx(sum(by_hand) / 3)
        assert d.wins == sum(x > 0 for x in by_hand) and d.losses == sum(x < 0 for x in by_hand)
    final = stats.paired_differences(df, "A", "B", "psnr")[stats.OVERALL]
    assert diffs[("A", "B")][-1].mean == pytest.approx(final.mean)
    assert (diffs[("A", "B")][-1].ci_low, diffs[("A", "B")][-1].ci_high) == pytest.approx((final.ci_low, final.ci_high))
    # an image without the point is left out there (and its absence does not move the points)
    df.loc[(df["label"] == "A") & (df["image_id"] == "photos/x"), "trace"] = [
        {"iteration": its[:-1], "psnr": a["photos/x"][:-1]}]
    points, diffs = cc.along_pairs(df, [], [("A", "B")], "best")
    assert points[-1] == 128  # 200 is no longer common to every trace
    # experiments b/c: the random partitions' mean is taken at each point from the trace values
    r1 = {img: [v + 1 for v in vals] for img, vals in b.items()}
    r2 = {img: [v + 3 for v in vals] for img, vals in b.items()}
    sub = pd.DataFrame(_traced("D", a, its) + _traced("R1", r1, its) + _traced("R2", r2, its))
    cfgs = [cc.Config("b", "discovered", "D", "pmsfc", "g"), cc.Config("b", "random", "R1", "pmsfc", "g"),
            cc.Config("b", "random:1", "R2", "pmsfc", "g")]
    points, diffs = cc.along_pairs(sub, cfgs, [("D", cc.MEAN_RANDOM)], "subspaces")
    for i, d in zip(points, diffs[("D", cc.MEAN_RANDOM)], strict=True):
        k = its.index(i)
        assert d.mean == pytest.approx(sum(a[img][k] - (b[img][k] + 2) for img in a) / 3)
    lines = cc.along_lines(sub, cfgs, [("D", cc.MEAN_RANDOM)], "subspaces")
    assert "| A − B | it 4 | it 8 | it 16 | it 32 | it 64 | it 128 | it 200 |" in lines
    row = next(line for line in lines if line.startswith(f"| D − {cc.MEAN_RANDOM} | "))
    last = diffs[("D", cc.MEAN_RANDOM)][-1]
    assert row.endswith(f"| {last.mean:+.2f} [{last.ci_low:+.2f}, {last.ci_high:+.2f}] ({last.wins}/3) |")
    # records without traces give no table
    assert cc.along_lines(df.assign(trace=None), [], [("A", "B")], "best") == []


def test_claim_check_wall_time_says_when_sessions_overlapped():
    """The protocol line's wall time is the sum over sessions; when sessions ran at the same time it also
    gives the elapsed time (the union of the sessions' intervals), and without finishing times only the sum."""
    cc = load("claim_check")

    def session(end: str, wall: float) -> dict:
        return {"finished": end, "wall_s": wall, "new_records": 1}

    together = [session("2026-12-03T10:00:00", 3600), session("2026-12-03T10:30:00", 3600)]
    assert cc.elapsed_s(together) == pytest.approx(5400)  # 08:30–10:30, the first inside nothing
    apart = [session("2026-12-03T10:00:00", 600), session("2026-12-03T12:00:00", 600)]
    assert cc.elapsed_s(apart) == pytest.approx(1200)  # the gap between them does not count
    nested = [session("2026-12-03T10:00:00", 3600), session("2026-12-03T09:30:00", 600)]
    assert cc.elapsed_s(nested) == pytest.approx(3600)
    assert cc.elapsed_s([{"wall_s": 5, "new_records": 1}]) is None
    assert "120 min for 2 configurations" in cc._wall_text(together, 2)
    assert "90 min elapsed while any ran" in cc._wall_text(together, 2)
    assert "elapsed" not in cc._wall_text(apart, 2) and "20 min for 2" in cc._wall_text(apart, 2)
    assert "elapsed" not in cc._wall_text([{"wall_s": 7200, "new_records": 1}] * 2, 2)


def test_tuning_objective_gives_each_trials_value_again(capsys, tmp_path, monkeypatch):
    """benchmarks/tuning_objective.py recomputes `gib tune`'s objective: each trial's settings give the
    trial's mean PSNR again, and so does the entry named by its budget (--entry); an unknown setting or
    budget is refused with the settings or budgets there are."""
    from gan_inversion_bench import GENERATORS
    from gan_inversion_bench.profiles import write_entry
    from gan_inversion_bench.tuning import TuneConfig, tune

    entry = tune(GENERATORS.create("pggan-tiny"), "single-code", TuneConfig(trials=2, budget=3, n_images=2,
                                                                            pruning="none"))
    script = load("tuning_objective")
    for t in entry["trials"]:
        opt = t["params"]["optimizer"]
        settings = {"optimizer": opt, "lr": repr(t["params"][f"{opt}_lr"])}
        values = script.objective("pggan-tiny", "single-code", settings, TuneConfig(trials=1, budget=3, n_images=2))
        assert len(values) == 2 and sum(values) / 2 == pytest.approx(t["value"], abs=1e-9)
    assert script.main(["-g", "pggan-tiny", "-m", "single-code", "--budget", "3", "--images", "2",
                        "--set", f"optimizer={opt}", "--set", f"lr={settings['lr']}"]) == 0
    assert f"mean {t['value']:.4f} dB, per image" in capsys.readouterr().out
    with pytest.raises(SystemExit, match=r"--set momentum: single-code has no such setting .*lr"):
        script.objective("pggan-tiny", "single-code", {"momentum": "0.9"}, TuneConfig(trials=1, budget=3, n_images=2))
    monkeypatch.setenv("GIB_PROFILES", str(tmp_path))
    write_entry(tmp_path / "pggan-tiny.json", "pggan-tiny", "single-code", entry)
    assert script.main(["-g", "pggan-tiny", "-m", "single-code", "--budget", "3", "--images", "2", "--entry", "3"]) == 0
    assert f"mean {entry['tuning']['best_value']:.4f} dB, per image" in capsys.readouterr().out
    # the entry's base profile, named again, is accepted; another one would silently change what its
    # settings mean, so it is refused
    assert script.main(["-g", "pggan-tiny", "-m", "single-code", "--budget", "3", "--images", "2", "--entry", "3",
                        "--base-profile", entry["base_profile"]]) == 0
    assert f"mean {entry['tuning']['best_value']:.4f} dB, per image" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        script.main(["-g", "pggan-tiny", "-m", "single-code", "--budget", "3", "--entry", "3",
                     "--base-profile", "paper"])
    assert "was searched on base profile 'quick'" in capsys.readouterr().err
    with pytest.raises(SystemExit, match=r"--entry 5: .*pggan-tiny.json holds no single-code entry searched at 5 "
                                         r"iterations \(its entries' budgets: 3\)"):
        script.main(["-g", "pggan-tiny", "-m", "single-code", "--budget", "3", "--entry", "5"])


def test_tuning_objective_scores_on_the_searchs_real_tuning_images(capsys):
    """--tune-images as the search's: a search on the held-out photos gives its trial's value again, which the
    generated tuning faces do not; an evaluation set is refused."""
    from gan_inversion_bench import GENERATORS
    from gan_inversion_bench.tuning import TuneConfig, tune

    tc = TuneConfig(trials=1, budget=3, n_images=2, pruning="none", images="photos-tune")
    t = tune(GENERATORS.create("pggan-tiny"), "single-code", tc)["trials"][0]
    opt = t["params"]["optimizer"]
    args = ["-g", "pggan-tiny", "-m", "single-code", "--budget", "3", "--images", "2",
            "--set", f"optimizer={opt}", "--set", f"lr={t['params'][f'{opt}_lr']!r}"]
    script = load("tuning_objective")
    assert script.main([*args, "--tune-images", "photos-tune"]) == 0
    assert f"mean {t['value']:.4f} dB, per image" in capsys.readouterr().out
    assert script.main(args) == 0
    assert f"mean {t['value']:.4f} dB" not in capsys.readouterr().out
    with pytest.raises(SystemExit):
        script.main([*args, "--tune-images", "photos"])
    assert "images must be one of generated, photos-tune or folder:PATH" in capsys.readouterr().err


def test_tuning_objective_checks_a_search_written_before_per_image_values(capsys, tmp_path):
    """--check scores an entry's best trial and the trial it is paired with again, and prints the very check
    `gib tune` writes now (tune_choice); an entry without per-image values (as every search before them)
    gets it too. A missing file, a missing --entry or a budget the file lacks are refused."""
    import json

    from gan_inversion_bench import GENERATORS
    from gan_inversion_bench.profiles import write_entry
    from gan_inversion_bench.tune_choice import choice_lines
    from gan_inversion_bench.tuning import TuneConfig, tune

    entry = tune(GENERATORS.create("pggan-tiny"), "mganprior", TuneConfig(trials=3, budget=4, n_images=2,
                                                                          pruning="none"))
    expected = entry["tuning"]["choice"]
    old = json.loads(json.dumps(entry))
    for t in old["trials"]:
        t.pop("per_image_psnr", None)
    del old["tuning"]["choice"]
    path = tmp_path / "pggan-tiny.json"
    write_entry(path, "pggan-tiny", "mganprior", old)
    script = load("tuning_objective")
    assert script.main(["-m", "mganprior", "--check", str(path), "--entry", "4"]) == 0
    out = capsys.readouterr().out
    for number in (expected["best_trial"], expected["against_trial"]):
        value = next(t["value"] for t in entry["trials"] if t["number"] == number)
        assert f"mganprior: trial {number} recorded {value:.4f} dB, scored again {value:.4f} dB" in out
    assert choice_lines("mganprior", expected)[0][0] in out
    for args, message in [(["--check", str(tmp_path / "none.json"), "--entry", "4"], "no such profile file"),
                          (["--check", str(path)], "--check needs --entry N"),
                          (["--check", str(path), "--entry", "5"], "no mganprior entry searched at 5 iterations")]:
        with pytest.raises(SystemExit):
            script.main(["-m", "mganprior", *args])
        assert message in capsys.readouterr().err


def test_claim_check_keeps_a_killed_sessions_records_in_the_runs_table(tmp_path, digiface_profile_only, capsys):
    """A session killed after its first record has no line in runs.json (written when a session ends): the
    Runs table reads it from the records (the harness's session table), beside the session that finished
    the configuration, in the run folder and in its archive. A configuration without records is not archived."""
    import subprocess
    import sys

    from gan_inversion_bench import harness

    cc = load("claim_check")
    out = tmp_path / "cc"
    args = ["--out", str(out), "--iterations", "2", "--n-generated", "2", "--images", "generated", "--restarts", "1",
            "--batch-size", "1", "--device", "cpu", "--only", "a/single-code"]
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "claim_check.py"
    killed = subprocess.run([sys.executable, str(script), *args], env={**os.environ, harness.KILL_ENV: "committed:1"},
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert not (out / "runs.json").exists()
    src = cc.Source(out, "cc", cc._folder_protocol(out))
    (row,) = cc._runs_rows(src, ["a"], "")
    assert row[:2] == ["a/single-code", "1"] and float(row[2]) >= 0 and row[3:] == [
        "1", "running (not measured; wall time to its last record)"]
    assert cc.main(args) == 0  # resumes: the second image; the killed session is now abandoned
    (row,) = cc._runs_rows(src, ["a"], "")
    assert row[:2] == ["a/single-code", "2"] and row[3] == "2"
    finished, abandoned = row[4].split(", ")
    assert "→" in finished and abandoned == "abandoned (not measured; wall time to its last record)"
    log = json.loads((out / "runs.json").read_text())
    assert [s["new_records"] for s in log["a/single-code"]] == [1]
    sections = {e.key: [src] if e.key == "a" else [] for e in cc.EXPERIMENTS}
    assert cc.UNFINISHED_TEXT in "\n".join(cc.runs_lines(sections, src))
    from gan_inversion_bench.store import ResultStore

    (out / "a" / "mganprior-N10").mkdir()
    ResultStore(out / "a" / "mganprior-N10").close()  # a configuration that has just started: no record yet
    cc.archive_check(out, "cc", tmp_path / "archive")
    assert "not archived a/mganprior-N10: no records yet" in capsys.readouterr().out
    assert not (tmp_path / "archive" / "a" / "mganprior-N10").exists()  # its later archive is not blocked
    archived = cc.Source(tmp_path / "archive", "archive", cc._folder_protocol(tmp_path / "archive"))
    assert cc._runs_rows(archived, ["a"], "") == [row]
