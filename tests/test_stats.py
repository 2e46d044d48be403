"""Bootstrap intervals, paired differences, the tables' interval cells and ``gib compare``."""
from __future__ import annotations

import inspect
import math
import re
import shutil
import warnings
from statistics import NormalDist

import numpy as np
import pandas as pd
import pytest
import scipy.stats
from click.testing import CliRunner
from hypothesis import example, given, settings
from hypothesis import strategies as st

from gan_inversion_bench import compare_runs, stats, tables
from gan_inversion_bench.cli import main
from gan_inversion_bench.harness import RunConfig, run

_RNG = "rng" if "rng" in inspect.signature(scipy.stats.bootstrap).parameters else "random_state"


# ---- bootstrap_ci against independent computations ------------------------------------------------
def _resampled_means(x: np.ndarray, n_resamples: int, seed: int) -> np.ndarray:
    """Our own resampling: the rows of indices scipy draws from the same seeded generator."""
    idx = np.random.default_rng(seed).integers(0, len(x), (n_resamples, len(x)))
    return x[idx].mean(axis=1)


def _bca_by_hand(x: np.ndarray, n_resamples: int, seed: int, confidence: float = 0.95) -> tuple[float, float]:
    """Efron & Tibshirani (1993), eqs. 14.10–14.15, written out with numpy and the standard library."""
    theta_b, theta = _resampled_means(x, n_resamples, seed), x.mean()
    normal = NormalDist()
    z0 = normal.inv_cdf(((theta_b < theta).sum() + (theta_b <= theta).sum()) / (2 * n_resamples))
    jack = np.array([np.delete(x, i).mean() for i in range(len(x))])
    u = jack.mean() - jack
    a = (u ** 3).sum() / (6 * (u ** 2).sum() ** 1.5)
    bounds = []
    for alpha in ((1 - confidence) / 2, (1 + confidence) / 2):
        z = z0 + normal.inv_cdf(alpha)
        bounds.append(np.percentile(theta_b, 100 * normal.cdf(z0 + z / (1 - a * z))))
    return bounds[0], bounds[1]


@pytest.fixture(scope="module")
def skewed() -> np.ndarray:
    return np.random.default_rng(7).lognormal(mean=-2.0, sigma=0.8, size=25)  # LPIPS-like: skewed right


def test_percentile_interval_equals_our_own_numpy_bootstrap(skewed):
    mean, low, high = stats.bootstrap_ci(skewed, n_resamples=2000, seed=3, method="percentile")
    means = _resampled_means(skewed, 2000, 3)
    assert mean == pytest.approx(skewed.mean(), rel=1e-15)
    assert (low, high) == pytest.approx(tuple(np.percentile(means, [2.5, 97.5])), rel=1e-12)


def test_bca_interval_equals_a_hand_written_bca(skewed):
    _, low, high = stats.bootstrap_ci(skewed, n_resamples=2000, seed=3)  # BCa is the default
    assert (low, high) == pytest.approx(_bca_by_hand(skewed, 2000, 3), rel=1e-12)
    _, plow, phigh = stats.bootstrap_ci(skewed, n_resamples=2000, seed=3, method="percentile")
    assert high > phigh and low > plow  # right skew: BCa shifts the interval up


def test_default_equals_scipy_called_directly(skewed):
    res = scipy.stats.bootstrap((skewed,), np.mean, confidence_level=0.95, n_resamples=9999, method="BCa",
                                **{_RNG: np.random.default_rng(0)})
    mean, low, high = stats.bootstrap_ci(skewed)
    assert (mean, low, high) == (pytest.approx(skewed.mean()), res.confidence_interval.low,
                                 res.confidence_interval.high)
    assert stats.bootstrap_ci(skewed) == (mean, low, high)  # seeded: reproducible
    assert stats.bootstrap_ci(skewed, seed=1) != (mean, low, high)
    assert stats.bootstrap_ci(list(skewed)) == (mean, low, high)  # any sequence of numbers


def test_confidence_level_widens_the_interval(skewed):
    _, l90, h90 = stats.bootstrap_ci(skewed, confidence=0.90, n_resamples=2000)
    _, l99, h99 = stats.bootstrap_ci(skewed, confidence=0.99, n_resamples=2000)
    assert l99 < l90 < h90 < h99


@pytest.mark.parametrize("method", ["BCa", "percentile"])
def test_coverage_of_the_true_mean(method):
    """Normal data of known mean: the 95 % interval covers it in about 95 % of seeded repetitions."""
    rng, reps, covered = np.random.default_rng(2024), 300, 0
    for rep in range(reps):
        x = rng.normal(5.0, 2.0, size=30)
        _, low, high = stats.bootstrap_ci(x, n_resamples=999, seed=rep, method=method)
        covered += low <= 5.0 <= high
    assert 0.88 <= covered / reps <= 0.99, covered / reps


# ---- edge cases -----------------------------------------------------------------------------------------
def test_one_value_has_no_interval():
    mean, low, high = stats.bootstrap_ci([27.5])
    assert mean == 27.5 and math.isnan(low) and math.isnan(high)


@pytest.mark.parametrize("method", ["BCa", "percentile"])
def test_constant_values_give_the_point(method):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DegenerateDataWarning, no division warnings
        assert stats.bootstrap_ci([0.1] * 10, method=method) == (0.1, 0.1, 0.1)
        assert stats.bootstrap_ci([3.0, 3.0]) == (3.0, 3.0, 3.0)


@pytest.mark.parametrize("values", [[1.0, float("nan"), 2.0], [1.0, float("inf")], [-np.inf, 0.0, 1.0]])
def test_non_finite_values_are_refused(values):
    with pytest.raises(ValueError, match=r"1 of \d are NaN or ±inf .*drop missing values first"):
        stats.bootstrap_ci(values)


@pytest.mark.parametrize("kwargs, message", [
    ({"values": []}, "at least one value"),
    ({"values": [[1.0, 2.0]]}, "1-D"),
    ({"values": ["a", "b"]}, "needs numbers"),
    ({"values": [1.0, 2.0], "method": "bootstrap-t"}, "valid: BCa, percentile"),
    ({"values": [1.0, 2.0], "confidence": 95}, "strictly between 0 and 1"),
    ({"values": [1.0, 2.0], "n_resamples": 0}, "positive integer"),
])
def test_bad_arguments(kwargs, message):
    values = kwargs.pop("values")
    with pytest.raises(ValueError, match=message):
        stats.bootstrap_ci(values, **kwargs)


def test_undefined_bca_falls_back_to_percentile_with_a_warning(monkeypatch):
    original = stats._interval

    def undefined_bca(x, confidence, n_resamples, seed, method):
        return (math.nan, math.nan) if method == "BCa" else original(x, confidence, n_resamples, seed, method)

    monkeypatch.setattr(stats, "_interval", undefined_bca)
    with pytest.warns(RuntimeWarning, match="percentile interval"):
        got = stats.bootstrap_ci([1.0, 2.0, 4.0], n_resamples=500)
    assert got == stats.bootstrap_ci([1.0, 2.0, 4.0], n_resamples=500, method="percentile")


# ---- paired differences -------------------------------------------------------------------------------
def _records(rows: list[tuple[str, str, str, str, float | None, float | None]]) -> pd.DataFrame:
    """(method, method_key, image_id, status, psnr, lpips) → a records frame like tables.load_records."""
    df = pd.DataFrame(rows, columns=["method", "method_key", "image_id", "status", "psnr", "lpips"])
    return df.assign(subset=df["image_id"].str.split("/").str[0])


@pytest.fixture
def pair() -> pd.DataFrame:
    a = [("g/0", 20.0, 0.1), ("g/1", 22.0, 0.2), ("g/2", 25.0, 0.3), ("p/x", 30.0, 0.4), ("p/y", 18.0, 0.5)]
    b = [("g/0", 21.0, 0.2), ("g/1", 22.0, 0.2), ("g/2", 24.0, 0.1), ("p/x", 28.0, 0.5), ("p/z", 10.0, 0.9)]
    rows = [("a", "a@1", i, "ok", p, lp) for i, p, lp in a] + [("b", "b@1", i, "ok", p, lp) for i, p, lp in b]
    rows.append(("b", "b@1", "p/y", "failed", None, None))
    return _records(rows)


def test_paired_psnr_by_hand(pair):
    out = stats.paired_differences(pair, "a", "b", "psnr", stats.BootstrapSettings(n_resamples=500))
    assert list(out) == ["g", "p", "all"]
    g, p, overall = out["g"], out["p"], out["all"]
    assert g.differences.to_dict() == {"g/0": -1.0, "g/1": 0.0, "g/2": 1.0}
    assert (g.n, g.mean, g.wins, g.ties, g.losses) == (3, 0.0, 1, 1, 1)
    assert (g.mean, g.ci_low, g.ci_high) == stats.bootstrap_ci([-1.0, 0.0, 1.0], n_resamples=500)
    # p/y failed for b and p/z is b's only: one pair, a single difference has no interval
    assert (p.n, p.mean, p.wins, p.ties, p.losses) == (1, 2.0, 1, 0, 0) and math.isnan(p.ci_low)
    assert (overall.n, overall.mean, overall.wins, overall.ties, overall.losses) == (4, 0.5, 2, 1, 1)
    assert overall.a == "a" and overall.b == "b" and overall.metric == "psnr" and overall.subset == "all"


def test_paired_direction_lower_is_better_for_lpips(pair):
    out = stats.paired_differences(pair, "a", "b", "lpips", stats.BootstrapSettings(n_resamples=500))
    g = out["g"]  # a − b: −0.1 (a better), 0 (tie), +0.2 (b better)
    assert g.differences.round(12).to_dict() == {"g/0": -0.1, "g/1": 0.0, "g/2": 0.2}
    assert (g.wins, g.ties, g.losses) == (1, 1, 1)
    assert (out["all"].wins, out["all"].ties, out["all"].losses) == (2, 1, 1)
    swapped = stats.paired_differences(pair, "b", "a", "lpips", stats.BootstrapSettings(n_resamples=500))["all"]
    assert (swapped.wins, swapped.losses) == (1, 2) and swapped.mean == pytest.approx(-out["all"].mean)


def test_gib_compare_says_how_many_images_are_in_no_pair(pair):
    """p/y failed for b and p/z is b's only: 6 images, 4 pairs; the output says so rather than showing n alone."""
    s = stats.BootstrapSettings(n_resamples=200)
    text = compare_runs.comparison_text(pair, "a", "b", metric="psnr", settings=s)
    assert "not paired: at least 2 of the 6 images that A or B has" in text, text
    assert "not paired: at least 2 of the 3 images" in compare_runs.comparison_text(pair, "a", "b", metric="psnr",
                                                                                      subset="p", settings=s)
    assert "not paired" not in compare_runs.comparison_text(pair, "a", "b", metric="psnr", subset="g", settings=s)


def test_missing_metric_values_leave_the_pair_out(pair):
    pair.loc[(pair["method"] == "a") & (pair["image_id"] == "g/2"), "psnr"] = None  # stored empty (non-finite)
    g = stats.paired_differences(pair, "a", "b", "psnr", stats.BootstrapSettings(n_resamples=200))["g"]
    assert g.differences.to_dict() == {"g/0": -1.0, "g/1": 0.0}


def test_an_exact_reconstruction_wins_its_pair_and_stays_out_of_the_mean(pair):
    """PSNR +inf (MSE 0) is stored empty beside MSE 0. It used to drop the pair like a missing value, so the
    configuration that reconstructed exactly lost its wins; now it wins (or ties, when both are exact) and the
    mean, the interval and the p-value are over the finite differences."""
    df = pair.assign(mse=0.01)
    df.loc[(df["method"] == "a") & df["image_id"].isin(["g/0", "g/1"]), ["psnr", "mse"]] = [None, 0.0]
    df.loc[(df["method"] == "b") & (df["image_id"] == "g/1"), ["psnr", "mse"]] = [None, 0.0]
    s = stats.BootstrapSettings(n_resamples=200)
    g = stats.paired_differences(df, "a", "b", "psnr", s)["g"]  # g/0: a exact, b 21; g/1: both exact; g/2: 25 − 24
    assert g.differences.to_dict() == {"g/0": math.inf, "g/1": 0.0, "g/2": 1.0}
    assert (g.n, g.wins, g.ties, g.losses) == (3, 2, 1, 0)
    assert g.finite.to_dict() == {"g/1": 0.0, "g/2": 1.0} and g.mean == 0.5
    assert g.p_value == pytest.approx(_exact_sign_flip_p(np.array([0.0, 1.0])))
    back = stats.paired_differences(df, "b", "a", "psnr", s)["g"]
    assert back.differences["g/0"] == -math.inf and (back.wins, back.ties, back.losses) == (0, 1, 2)
    text = compare_runs.comparison_text(df, "a", "b", metric="psnr", subset="g", settings=s)
    assert "| g      | PSNR (dB) | 3 (1 exact) | +0.50" in text and "2 / 1 / 0" in text, text
    assert "exact: pairs where one of A and B reconstructs its target exactly" in text
    assert stats.paired_differences(df, "a", "b", "lpips", s)["g"].n == 3  # other metrics as before
    lines = tables._missing_values(df.assign(ssim=0.5))
    assert lines == ["3 ok result(s) reconstruct their target exactly (MSE 0, PSNR +inf) and are left out of their "
                     "row's PSNR mean and interval, whose mean would be +inf: a/g, b/g."]
    df.loc[(df["method"] == "b") & (df["image_id"] == "g/2"), "psnr"] = None  # non-finite, MSE not 0
    assert "1 ok result(s) have no PSNR (dB) value" in tables._missing_values(df.assign(ssim=0.5))[1]


def test_gib_compare_at_an_iteration_where_a_trace_is_exact():
    """A trace keeps +inf PSNR (JSON Infinity) beside MSE 0: paired at that point it is a win, not a refusal of the
    bootstrap (which needs finite values)."""
    def record(key: str, image: str, psnr: list[float], mse: list[float]) -> dict:
        return {"method": key.split("@")[0], "method_key": key, "image_id": image, "status": "ok", "psnr": psnr[-1],
                "mse": mse[-1], "lpips": 0.1, "subset": "generated", "task_label": "reconstruct",
                "trace": {"iteration": [0, 4], "psnr": psnr, "mse": mse}}

    df = pd.DataFrame([record("a@1", "generated/0", [10.0, math.inf], [0.1, 0.0]),
                       record("a@1", "generated/1", [11.0, 30.0], [0.08, 1e-3]),
                       record("a@1", "generated/2", [12.0, 29.0], [0.06, 1.3e-3]),
                       record("b@1", "generated/0", [10.0, 25.0], [0.1, 3e-3]),
                       record("b@1", "generated/1", [11.0, 28.0], [0.08, 1.6e-3]),
                       record("b@1", "generated/2", [12.0, 30.0], [0.06, 1e-3])])
    found = compare_runs.comparison(compare_runs.at_iteration(df, 4), "a", "b", metric="psnr")
    (d,) = found
    assert (d.n, len(d.finite), d.wins, d.losses) == (3, 2, 2, 1) and d.mean == pytest.approx(0.5)


def test_labels_and_method_names(pair):
    two = pd.concat([pair, _records([("a", "a@2", "g/0", "ok", 19.0, 0.3)])], ignore_index=True)
    assert set(stats.config_labels(two)) == {"a@1", "a@2", "b"}
    assert list(tables._label(two)) == list(stats.config_labels(two))
    assert stats.paired_differences(two, "a@2", "b", "psnr")["all"].differences.to_dict() == {"g/0": -2.0}
    with pytest.raises(ValueError, match="'a' is ambiguous: method a ran with 2 configurations; pick one of: a@1, a@2"):
        stats.paired_differences(two, "a", "b", "psnr")
    with pytest.raises(ValueError, match="unknown configuration 'c'; valid: a@1, a@2, b"):
        stats.paired_differences(two, "c", "b", "psnr")
    with pytest.raises(ValueError, match="compare two different configurations"):
        stats.paired_differences(pair, "a", "a", "psnr")
    with pytest.raises(ValueError, match="unknown metric 'fid'; valid: psnr, ssim, ms_ssim, lpips, mse"):
        stats.paired_differences(pair, "a", "b", "fid")


# ---- the tables' cells ---------------------------------------------------------------------------------
def _timed(times_and_sizes: list[tuple[float, int]], psnr: list[float]) -> pd.DataFrame:
    """Records of one configuration whose images come in batches (time per image, batch size)."""
    rows, i = [], 0
    for batch, (t, size) in enumerate(times_and_sizes):
        for _ in range(size):
            rows.append({"method": "m", "method_key": "m@1", "image_id": f"generated/{i:03d}", "status": "ok",
                         "psnr": psnr[i], "ssim": 0.5, "lpips": 0.2, "time_s": t, "batch_size": size,
                         "session": 1 + batch // 2, "iterations": 3, "device": "CPU", "subset": "generated"})
            i += 1
    return pd.DataFrame(rows)


def test_time_is_averaged_over_batches_with_an_interval_from_two_on():
    df = _timed([(1.0, 2), (4.0, 1), (2.0, 2)], [20.0, 21.0, 23.0, 22.0, 24.0])
    r = tables.summary(df).iloc[0]
    assert r["time_s_batches"] == 3 and r["time_s_mean"] == pytest.approx(7 / 3)  # over batches, not images (2.0)
    assert (r["time_s_ci_low"], r["time_s_ci_high"]) == stats.bootstrap_ci([1.0, 4.0, 2.0])[1:]
    assert (r["psnr_mean"], r["psnr_ci_low"], r["psnr_ci_high"]) == stats.bootstrap_ci([20.0, 21, 23, 22, 24])
    header, rows = tables._display(tables.summary(df))
    cells = dict(zip(header, rows[0], strict=True))
    assert cells["PSNR (dB) ↑"] == f"22.00 [{r['psnr_ci_low']:.2f}, {r['psnr_ci_high']:.2f}]"
    assert cells["SSIM ↑"] == "0.5000 [0.5000, 0.5000]"  # constant: the interval is the point
    assert re.fullmatch(r"2\.33 \[[\d.]+, [\d.]+\]", cells["batched s/img ↓"])


def test_one_batch_and_one_image_show_the_value_alone():
    df = _timed([(1.5, 1)], [20.0])
    s = tables.summary(df)
    assert math.isnan(s["time_s_ci_low"].iloc[0]) and s["time_s_batches"].iloc[0] == 1
    header, rows = tables._display(s)
    cells = dict(zip(header, rows[0], strict=True))
    assert (cells["PSNR (dB) ↑"], cells["batched s/img ↓"], cells["n"]) == ("20.00", "1.5", "1")
    assert "±" not in " ".join(rows[0])


def test_latex_escapes_every_special_character():
    text = "a_b%c&d#e$f{g}h~i^j\\k ↑ – 32²"
    assert tables._tex(text) == (r"a\_b\%c\&d\#e\$f\{g\}h\textasciitilde{}i\textasciicircum{}j\textbackslash{}k "
                                 r"$\uparrow$ -- 32$^2$")
    assert tables._tex_row(["[x]", "y"]) == r"{}[x] & y \\"


# ---- gib compare on a real run folder -------------------------------------------------------------------
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    config = RunConfig(generator="pggan-tiny", methods=["single-code", "mganprior"], images="generated",
                       n_generated=3, budget=3, device="cpu", batch_size=3)
    return run(config, tmp_path_factory.mktemp("cmp") / "run", progress=False, echo=lambda s: None)


def test_gib_compare_prints_the_paired_differences(run_dir):
    r = CliRunner().invoke(main, ["compare", str(run_dir), "single-code", "mganprior"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert [c.strip() for c in lines[0].split("|")[1:-1]] == ["images", "metric", "n", "mean A − B", "95 % CI",
                                                           "wins / ties / losses", "p"]
    df = tables.load_records(run_dir)
    for metric, label, fmt in (("psnr", "PSNR (dB)", "{:+.2f}"), ("lpips", "LPIPS", "{:+.4f}"),
                               ("ssim", "SSIM", "{:+.4f}"), ("ms_ssim", "MS-SSIM", "{:+.4f}")):
        d = stats.paired_differences(df, "single-code", "mganprior", metric)["generated"]
        cells = ["generated", label, "3", fmt.format(d.mean), f"[{fmt.format(d.ci_low)}, {fmt.format(d.ci_high)}]",
                 f"{d.wins} / {d.ties} / {d.losses}", f"{_exact_sign_flip_p(d.differences.to_numpy()):.2g}"]
        assert any([c.strip() for c in line.split("|")[1:-1]] == cells for line in lines), (cells, r.output)
        assert d.wins + d.ties + d.losses == 3
    assert "A = single-code, B = mganprior" in r.output and "BCa, 9999 resamples, seed 0" in r.output
    assert "LPIPS lower" in r.output and "±" not in r.output


def test_gib_compare_one_metric_and_subset(run_dir):
    r = CliRunner().invoke(main, ["compare", str(run_dir), "mganprior", "single-code", "--metric", "lpips",
                                  "--subset", "generated"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    rows = [line for line in r.output.splitlines() if line.startswith("| generated")]
    assert len(rows) == 1 and "LPIPS" in rows[0] and "| 3 |" in rows[0]


@pytest.mark.parametrize("args, message", [
    (["nope", "mganprior"], "unknown configuration 'nope'; valid: mganprior, single-code"),
    (["single-code", "single-code"], "compare two different configurations"),
    (["single-code", "mganprior", "--subset", "photos"],
     "single-code and mganprior have no images of subset 'photos'; valid: generated, all"),
    (["single-code", "mganprior", "--task", "inpaint"], "--task 'inpaint' is not in "),
    (["single-code", "mganprior", "--metric", "fid"], "Invalid value for '--metric'"),
    (["single-code", "mganprior", "--metric", "psnr_starts"],
     "no psnr_starts values in these records (it exists only for runs with --restarts K > 1); the run has: psnr,"),
])
def test_gib_compare_clear_errors(run_dir, args, message):
    r = CliRunner().invoke(main, ["compare", str(run_dir), *args])
    assert r.exit_code != 0 and message in r.output, r.output
    assert "Traceback" not in r.output



# ---- gib compare --b-run: pairs across two run folders ------------------------------------------------
def _other_run(tmp_path_factory, name: str, **changes):
    config = RunConfig(**{**dict(generator="pggan-tiny", methods=["mganprior"], images="generated", n_generated=4,
                                 budget=5, device="cpu", batch_size=4, latency=False), **changes})
    return run(config, tmp_path_factory.mktemp(name) / "run", progress=False, echo=lambda s: None)


@pytest.fixture(scope="module")
def longer_run(tmp_path_factory):
    """mGANprior at 5 iterations on the fixture's 3 images and a fourth one."""
    return _other_run(tmp_path_factory, "longer")


def test_gib_compare_across_run_folders_pairs_the_common_images(run_dir, longer_run):
    r = CliRunner().invoke(main, ["compare", str(longer_run), "mganprior", "mganprior", "--b-run", str(run_dir),
                                  "--metric", "psnr"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    a, b = tables.load_records(longer_run), tables.load_records(run_dir)
    a = a[a["method"] == "mganprior"].set_index("image_id")["psnr"]
    b = b[b["method"] == "mganprior"].set_index("image_id")["psnr"]
    assert len(a) == 4 and len(b) == 3
    diff = (a - b).dropna()  # the fourth image has no partner
    assert list(diff.index) == ["generated/000", "generated/001", "generated/002"]
    row = next(line for line in r.output.splitlines() if line.startswith("| generated"))
    cells = [c.strip() for c in row.split("|")[1:-1]]
    _, low, high = stats.bootstrap_ci(diff.to_numpy())
    assert cells == ["generated", "PSNR (dB)", "3", f"{diff.mean():+.2f}", f"[{low:+.2f}, {high:+.2f}]",
                     f"{(diff > 0).sum()} / {(diff == 0).sum()} / {(diff < 0).sum()}",
                     f"{_exact_sign_flip_p(diff.to_numpy()):.2g}"]
    assert f"A = mganprior ({longer_run}), B = mganprior ({run_dir})" in r.output
    assert "3 images in both folders with identical content" in r.output


def test_gib_compare_across_run_folders_refuses_what_does_not_pair(run_dir, longer_run, tmp_path_factory):
    from gan_inversion_bench.store import ResultStore

    def refused(other, *extra):
        r = CliRunner().invoke(main, ["compare", str(run_dir), "mganprior", "mganprior", "--b-run", str(other),
                                      *extra])
        assert r.exit_code != 0 and "Traceback" not in r.output, r.output
        return r.output

    reseeded = _other_run(tmp_path_factory, "reseeded", n_generated=2, budget=1, seed=1)
    assert "differ in content" in refused(reseeded) and "generated/000" in refused(reseeded)
    denoised = _other_run(tmp_path_factory, "denoised", n_generated=3, budget=1, task="denoise")
    assert "different tasks" in refused(denoised)
    reweighted = tmp_path_factory.mktemp("reweighted") / "run"
    shutil.copytree(longer_run, reweighted)
    with ResultStore(reweighted) as store:
        store.set_meta("content", {**store.get_meta("content"), "generator_state": "0" * 64})
    assert "different generator weights" in refused(reweighted)
    older = tmp_path_factory.mktemp("older") / "run"  # a folder from before content hashes
    shutil.copytree(longer_run, older)
    with ResultStore(older) as store:
        store.conn.execute("DELETE FROM meta WHERE key = 'content'")
        store.conn.commit()
    assert "stores no content identity" in refused(older)
    assert "compare two different configurations" in refused(run_dir)
    r = CliRunner().invoke(main, ["compare", str(run_dir), "mganprior", "nope", "--b-run", str(longer_run)])
    assert r.exit_code != 0 and "unknown configuration 'nope'; valid: mganprior" in r.output, r.output


@pytest.fixture(scope="module")
def two_tasks(run_dir, tmp_path_factory):
    """The fixture's folder with a second task run into it (README: a folder holds several tasks)."""
    both = tmp_path_factory.mktemp("tasks") / "run"
    shutil.copytree(run_dir, both)
    config = RunConfig(generator="pggan-tiny", methods=["single-code", "mganprior"], images="generated",
                       n_generated=3, budget=1, device="cpu", batch_size=3, latency=False, task="denoise")
    return run(config, both, progress=False, echo=lambda s: None)


def test_gib_compare_in_a_folder_of_two_tasks_pairs_within_the_task_asked_for(run_dir, two_tasks):
    """Each image has a record per task there: without --task the comparison is refused, naming the tasks (it
    crashed in pandas on the duplicate image ids); with it, the pairs are those of that task alone."""
    def compare(folder, *extra):
        return CliRunner().invoke(main, ["compare", str(folder), "single-code", "mganprior", "--metric", "psnr",
                                         *extra])

    r = compare(two_tasks)
    assert r.exit_code != 0 and "Traceback" not in r.output, r.output
    assert "holds 2 tasks (denoise (sigma=0.1); reconstruct); pick one with --task" in r.output
    alone = compare(run_dir)
    assert alone.exit_code == 0 and compare(two_tasks, "--task", "reconstruct").output == alone.output
    denoised = compare(two_tasks, "--task", "denoise")  # by name; the label also works
    assert denoised.exit_code == 0 and denoised.output == compare(two_tasks, "--task", "denoise (sigma=0.1)").output
    assert denoised.output != alone.output and "| generated | PSNR (dB) | 3 |" in denoised.output
    across = ["compare", str(two_tasks), "mganprior", "mganprior", "--b-run", str(run_dir), "--metric", "psnr"]
    assert "pick one with --task" in CliRunner().invoke(main, across).output
    r = CliRunner().invoke(main, [*across, "--task", "denoise"])  # B's folder ran reconstruction only
    assert r.exit_code != 0 and f"--task 'denoise' is not in {run_dir}; its tasks: reconstruct" in r.output, r.output
    r = CliRunner().invoke(main, [*across, "--task", "reconstruct"])
    assert r.exit_code == 0 and "| generated | PSNR (dB) | 3 |" in r.output, r.output
    df = tables.load_records(two_tasks).assign(label=lambda d: stats.config_labels(d))
    with pytest.raises(ValueError, match=r"several records of image generated/000 .*gib compare --task"):
        stats.paired_differences(df, "single-code", "mganprior", "psnr")


def test_the_footer_counts_the_batches_of_each_row_of_each_task(two_tasks):
    df = tables.load_records(two_tasks)
    text = "\n".join(tables.footer(df))
    for task in ("reconstruct", "denoise (sigma=0.1)"):
        for method in ("single-code", "mganprior"):
            assert f"{method}/generated ({task}) (1 batch)" in text, text
    assert "(2 batches)" not in text


# ---- gib compare --at-iteration: the quality along the way, paired ------------------------------------------
def test_gib_compare_at_the_last_trace_point_is_the_final_comparison(run_dir):
    """The trace's last point is the end of the run: PSNR paired there equals the final PSNR pairing, and
    the measures taken only at the end (SSIM, MS-SSIM) are not shown at a trace point."""
    end = CliRunner().invoke(main, ["compare", str(run_dir), "mganprior", "single-code", "--metric", "psnr"],
                             catch_exceptions=False)
    at = CliRunner().invoke(main, ["compare", str(run_dir), "mganprior", "single-code", "--at-iteration", "3"],
                            catch_exceptions=False)
    assert end.exit_code == 0 and at.exit_code == 0, at.output
    def psnr_row(output: str) -> list[str]:
        row = next(line for line in output.splitlines() if line.startswith("| generated") and "PSNR" in line)
        return [c.strip() for c in row.split("|")[1:-1]]

    assert psnr_row(at.output) == psnr_row(end.output)
    assert not any(line.startswith("| generated") and "SSIM" in line for line in at.output.splitlines())
    assert "at iteration 3 of each run, from the records' traces" in at.output


def test_gib_compare_at_an_iteration_pairs_two_budgets_at_equal_iterations(run_dir, longer_run):
    """mGANprior at budget 5 and at budget 3 (same seeds, no schedule) have taken the same steps by iteration
    2: paired there they tie, while at their ends the longer run is ahead."""
    r = CliRunner().invoke(main, ["compare", str(longer_run), "mganprior", "mganprior", "--b-run", str(run_dir),
                                  "--at-iteration", "2", "--metric", "psnr"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    a = compare_runs.at_iteration(tables.load_records(longer_run), 2)
    b = compare_runs.at_iteration(tables.load_records(run_dir), 2)
    a, b = (d[d["method"] == "mganprior"].set_index("image_id")["psnr"] for d in (a, b))
    diff = (a - b).dropna()
    assert len(diff) == 3 and diff.abs().max() < 1e-3
    row = next(line for line in r.output.splitlines() if line.startswith("| generated"))
    assert row.split("|")[3].strip() == "3"
    ends = [d[d["method"] == "mganprior"].set_index("image_id")["psnr"]
            for d in (tables.load_records(longer_run), tables.load_records(run_dir))]
    assert (ends[0] - ends[1]).dropna().mean() > 0.01  # at their ends they differ: the tie is not built in


def test_at_iteration_takes_the_trace_and_empties_the_end_only_measures():
    df = pd.DataFrame([
        {"image_id": "generated/000", "psnr": 30.0, "mse": 1e-3, "lpips": 0.1, "ssim": 0.9, "ms_ssim": 0.95,
         "trace": {"iteration": [0, 4, 8], "psnr": [10.0, 20.0, 30.0], "mse": [0.1, 0.01, 1e-3],
                   "lpips": {"8": 0.1, "4": 0.3}}},
        {"image_id": "generated/001", "psnr": 31.0, "mse": 1e-3, "lpips": 0.1, "ssim": 0.9, "ms_ssim": 0.95,
         "trace": {"iteration": [0, 8], "psnr": [11.0, 31.0], "mse": [0.1, 1e-3], "lpips": {"8": 0.1}}},
        {"image_id": "generated/002", "psnr": 32.0, "mse": 1e-3, "lpips": 0.1, "ssim": 0.9, "ms_ssim": 0.95,
         "trace": None}])
    at = compare_runs.at_iteration(df, 4)
    assert at["psnr"].tolist()[0] == 20.0 and at["mse"].tolist()[0] == 0.01 and at["lpips"].tolist()[0] == 0.3
    assert at[["psnr", "mse", "lpips"]].iloc[1:].isna().all().all()  # no point 4 in its trace, or no trace
    assert at["ssim"].isna().all() and at["ms_ssim"].isna().all()
    assert df["psnr"].tolist() == [30.0, 31.0, 32.0]  # the records themselves are untouched
    assert compare_runs.trace_iterations(df) == [0, 4, 8]
    with pytest.raises(ValueError, match=r"no record's trace has iteration 5; the traced iterations are: 0, 4, 8"):
        compare_runs.at_iteration(df, 5)
    with pytest.raises(ValueError, match="the records hold no trace"):
        compare_runs.at_iteration(df.assign(trace=None), 4)


@pytest.mark.parametrize("args, message", [
    (["--at-iteration", "7"], "no record's trace has iteration 7; the traced iterations are: 0, 1, 2, 3"),
    (["--at-iteration", "2", "--metric", "ssim"], "--metric ssim is measured only at the end of a run"),
    (["--at-iteration", "2", "--metric", "psnr_starts"], "the records' traces give psnr and lpips"),
])
def test_gib_compare_at_an_iteration_refuses_what_the_traces_do_not_hold(run_dir, args, message):
    r = CliRunner().invoke(main, ["compare", str(run_dir), "mganprior", "single-code", *args])
    assert r.exit_code != 0 and message in r.output, r.output
    assert "Traceback" not in r.output


def test_tables_of_the_run_escape_labels_in_latex(run_dir):
    df = tables.load_records(run_dir)
    df["method"] = df["method"].replace({"mganprior": "m_g & 50% #1"})
    tex = tables.to_latex(df)
    assert r"m\_g \& 50\% \#1 & generated & 3 & " in tex
    body = tex.split(r"\midrule")[1].split(r"\bottomrule")[0]
    unescaped = re.sub(r"\\[_%&#$]", "", body).replace(" & ", " ").replace(" \\\\\n", " ")
    assert not re.search(r"[_%&#${}~^\\]", unescaped), unescaped


def test_configurations_of_one_method_get_readable_labels():
    """Labels name what tells configurations apart (settings, then precision or restarts), not a hash."""
    import pandas as pd

    from gan_inversion_bench.stats import config_labels

    def rec(key, settings, precision="fp32", restarts=None):
        return {"method": "mganprior", "method_key": key, "method_settings": settings, "precision": precision,
                "restarts": restarts}

    df = pd.DataFrame([rec("mganprior@a", {"n_codes": 10, "lr": 0.5}), rec("mganprior@a", {"n_codes": 10, "lr": 0.5}),
                       rec("mganprior@b", {"n_codes": 30, "lr": 0.5}),
                       {"method": "pmsfc", "method_key": "pmsfc@c", "method_settings": {}, "precision": "fp32",
                        "restarts": None}])
    assert config_labels(df).tolist() == ["mganprior (n_codes=10)", "mganprior (n_codes=10)", "mganprior (n_codes=30)",
                                          "pmsfc"]
    df2 = pd.DataFrame([rec("mganprior@a", {"n_codes": 10}), rec("mganprior@d", {"n_codes": 10}, "bf16"),
                        rec("mganprior@e", {"n_codes": 10}, "bf16", {"k": 3})])
    assert config_labels(df2).tolist() == ["mganprior (precision=fp32, restarts=1)",
                                           "mganprior (precision=bf16, restarts=1)",
                                           "mganprior (precision=bf16, restarts=3)"]
    df3 = pd.DataFrame([rec("mganprior@a", {"n_codes": 10}), rec("mganprior@f", {"n_codes": 10})])
    assert config_labels(df3).tolist() == ["mganprior@a", "mganprior@f"]  # nothing visible differs: the keys


# ---- the sign-flip test and the Benjamini–Hochberg q -------------------------------------------------------
def _exact_sign_flip_p(x: np.ndarray) -> float:
    """An independent exact sign-flip test: every one of the 2^n sign patterns enumerated, two-sided as
    scipy defines it (twice the smaller one-sided share, at most 1); no scipy."""
    n = len(x)
    signs = 1 - 2 * ((np.arange(2 ** n)[:, None] >> np.arange(n)) & 1)  # [2^n, n] of ±1
    means = (signs * x).mean(axis=1)
    observed = x.mean()
    eps = 1e-12 * max(1.0, abs(observed))
    return float(min(1.0, 2 * min((means >= observed - eps).mean(), (means <= observed + eps).mean())))


@pytest.mark.parametrize("x", [[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0], [0.1, -0.2, 0.3, 0.05, 0.2, -0.1, 0.4, 0.1],
                               [-1.2, -0.4, 0.3], [2.5, -2.5, 1.0, -1.0], [-0.87, -1.1, -0.5, 0.2, -0.9, -1.3, -0.6,
                                                                           -0.4, -0.75, -1.0, -0.2, 0.1, -0.3]])
def test_the_sign_flip_p_is_the_exact_share_of_sign_patterns(x):
    x = np.asarray(x)
    assert stats.sign_flip_p(x) == pytest.approx(_exact_sign_flip_p(x), abs=1e-12)


def test_the_sign_flip_p_beyond_the_exact_range_estimates_the_exact_share():
    x = np.random.default_rng(3).normal(0.3, 1.0, 16)  # 65 536 patterns > 9999: drawn
    exact = _exact_sign_flip_p(x)
    assert 0.01 < exact < 0.9
    assert stats.sign_flip_p(x) == pytest.approx(exact, abs=0.02)  # 9999 draws: sd of the share < 0.005
    assert stats.sign_flip_p(x) == stats.sign_flip_p(x)  # seeded
    assert stats.sign_flip_p(np.full(32, -1.0)) == pytest.approx(2 / 10_000)  # the floor of 9999 draws, not 2/2^32


def test_the_sign_flip_p_counts_a_pattern_whose_exact_sum_passes_the_observed_one_by_one_ulp():
    """Decimal differences whose pattern sums nearly tie: one pattern's exact sum exceeds the observed one by
    about 1e-16. Counted by exact rational arithmetic (no floating point, no scipy); rounding each difference to
    a common grid first (as this function once did) dropped that pattern: p 0.7266 instead of 0.7305."""
    from fractions import Fraction
    from itertools import product

    x = [0.79, 0.5, 0.7, 0.92, 0.87, -0.06, -2.1, -0.78, 0.33]
    exact = [Fraction(v) for v in x]
    sums = [sum(s * v for s, v in zip(signs, exact, strict=True)) for signs in product((1, -1), repeat=len(x))]
    p = Fraction(2 * min(sum(t >= sum(exact) for t in sums), sum(t <= sum(exact) for t in sums)), len(sums))
    assert p == Fraction(187, 256) and stats.sign_flip_p(x) == float(p)


def test_the_sign_flip_p_edge_cases():
    assert math.isnan(stats.sign_flip_p([0.7]))
    assert stats.sign_flip_p([0.0, 0.0, 0.0]) == 1.0
    assert stats.sign_flip_p(np.full(8, 0.3)) == pytest.approx(2 / 256)  # the least 8 images can give
    assert stats.sign_flip_floor(8) == 2 / 256 and stats.sign_flip_floor(13) == 2 / 2 ** 13
    assert stats.sign_flip_floor(16) == 2 / 10_000 == pytest.approx(stats.sign_flip_p(np.full(16, 0.3)))  # drawn
    with pytest.raises(ValueError, match="NaN or ±inf"):
        stats.sign_flip_p([1.0, math.nan])
    # differences near the least float and near the largest
    assert stats.sign_flip_p([3e-310, 2e-310, 1e-310]) == pytest.approx(2 / 8)
    assert stats.sign_flip_p([1e300, 2e300, 3e300]) == pytest.approx(2 / 8)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-20, 20).filter(lambda v: abs(v) > 1e-3), min_size=2, max_size=9),
       st.floats(0.01, 100))
@example([15.875, 19.875, -19.0, 19.0, -16.0, -19.625], 3.2854959225474207)  # a sum that cancels: p 1 became 0.97
def test_the_sign_flip_p_ignores_the_sign_and_the_scale_of_the_differences(x, scale):
    p = stats.sign_flip_p(x)
    assert 0 < p <= 1
    assert stats.sign_flip_p([-v for v in x]) == pytest.approx(p, abs=1e-9)
    assert stats.sign_flip_p([scale * v for v in x]) == pytest.approx(p, abs=1e-9)


def _bh(p: list[float]) -> list[float]:
    """Benjamini–Hochberg by its definition: q_i = min over the p_j >= p_i of p_j * m / rank_j, at most 1."""
    m = len(p)
    ranked = sorted(p)
    return [min(1.0, min(v * m / (ranked.index(v) + ranked.count(v)) for v in ranked if v >= pi)) for pi in p]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.floats(0.0001, 1.0), st.just(math.nan)), min_size=1, max_size=12))
def test_fdr_q_is_benjamini_hochberg_over_the_tests_that_ran(p):
    q = stats.fdr_q(p)
    ran = [v for v in p if not math.isnan(v)]
    expected = iter(_bh(ran))
    for pi, qi in zip(p, q, strict=True):
        assert math.isnan(qi) if math.isnan(pi) else qi == pytest.approx(next(expected), rel=1e-9)
