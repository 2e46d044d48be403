"""Statistics over images: bootstrap confidence intervals and paired comparisons.

**The interval.** :func:`bootstrap_ci` gives the mean over images with a 95 % bootstrap
confidence interval of that mean (``scipy.stats.bootstrap``, 9999 resamples, seeded, so a table
rendered twice is identical). The method is **BCa** (bias-corrected and accelerated), chosen on
purpose over the plain percentile interval: per-image metrics are skewed (LPIPS and MSE are
bounded below with a long right tail; PSNR has a long left tail of poor reconstructions), and
BCa corrects the interval for the bias and the skewness of the bootstrap distribution, with a
coverage error of order 1/n instead of 1/√n for the percentile interval. No bootstrap fixes
tiny samples: every bootstrap interval is too narrow for a handful of images, which is why the
tables always show n next to the interval.

**Edge cases.**

* n = 1: no interval; the bounds are NaN (never a made-up ± 0).
* constant data (every value equal): degenerate, the interval is the point ``(v, v, v)``
  (BCa is undefined there: its acceleration is 0/0).
* NaN or ±inf among the values: refused with a ValueError naming how many and where, never
  silently dropped. Callers drop missing values *before*, with their own stated rule (the tables
  and :func:`paired_differences` leave out a result whose metric is missing; the store keeps a
  non-finite metric as an empty value).
* should BCa still come out undefined on non-constant data (values equal up to rounding), the
  percentile interval of the same resamples is returned instead, with a RuntimeWarning.

**Paired comparisons.** :func:`paired_differences` compares two configurations on the images
both have (status ok in both): per image A − B, the mean difference with its bootstrap interval,
and wins / ties / losses, where a win means A is better in the metric's direction
(:data:`HIGHER_IS_BETTER`) and a tie means exactly equal values; per image subset and overall.
Pairing removes the image-to-image variation that both configurations share, so the paired
interval is much narrower than the two tables' intervals suggest.

**A test beside the interval.** Each comparison also carries the two-sided p-value of a sign-flip
permutation test of the same mean (:func:`sign_flip_p`): under "A and B are exchangeable on every
image" each difference is as likely negative as positive, so the p-value is the share of the 2^n
sign patterns whose mean is at least as far from 0 as the observed one (all patterns where 2^n is
at most the resample count, else a seeded random sample of them). Unlike the bootstrap it does not
shrink with a handful of images: it cannot go below 2/2^n (0.0078 at n = 8, whatever the gap). A
table of many comparisons adjusts them together (:func:`fdr_q`, Benjamini–Hochberg): of 70 rows at
95 %, about 3.5 intervals would exclude 0 by chance alone if nothing differed.

This module depends on numpy, pandas and scipy only (layer 0 of docs/architecture.md).
"""
from __future__ import annotations

import inspect
import math
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

__all__ = ["BootstrapSettings", "DEFAULT", "CI_METHODS", "HIGHER_IS_BETTER", "OVERALL", "PairedDifference",
           "bootstrap_ci", "config_labels", "fdr_q", "p_text", "resolve_label", "paired_differences", "sign_flip_floor",
           "sign_flip_p", "with_start_means"]

#: the interval methods offered (case-insensitive); BCa is the default, see the module docstring
CI_METHODS = ("BCa", "percentile")
#: the direction of each metric: True when higher is better
HIGHER_IS_BETTER: dict[str, bool] = {"psnr": True, "ssim": True, "ms_ssim": True, "lpips": False, "mse": False,
                                     "psnr_starts": True}  # the mean PSNR over an image's restarts
#: the key of the pooled result over every subset in :func:`paired_differences`
OVERALL = "all"
#: at most this many resampled values are held in memory at once (resamples are drawn in batches above it)
_MAX_ELEMENTS = 4_000_000


@dataclass(frozen=True)
class BootstrapSettings:
    """How every interval of a table or a comparison is computed (stated in its footer)."""

    confidence: float = 0.95
    n_resamples: int = 9999
    seed: int = 0
    method: str = "BCa"

    def describe(self, over: str = "images") -> str:
        return (f"{self.confidence * 100:g} % bootstrap confidence interval of the mean over {over} "
                f"(scipy.stats.bootstrap, {self.method}, {self.n_resamples} resamples, seed {self.seed})")

    def describe_test(self) -> str:
        """How :func:`sign_flip_p` computes a comparison's p-value at these settings."""
        return (f"two-sided sign-flip permutation test of the mean difference (scipy.stats.permutation_test; all "
                f"2^n sign patterns where 2^n <= {self.n_resamples}, else {self.n_resamples} drawn with seed "
                f"{self.seed}); it cannot fall below 2/2^n (0.0078 at n = 8), nor below "
                f"{2 / (self.n_resamples + 1):.2g} with drawn patterns")


DEFAULT = BootstrapSettings()


def _finite_1d(values: npt.ArrayLike) -> npt.NDArray[np.float64]:
    try:
        x = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"bootstrap_ci needs numbers: {e}") from None
    if x.ndim != 1:
        raise ValueError(f"bootstrap_ci needs a 1-D sequence of values, got shape {x.shape}")
    if x.size == 0:
        raise ValueError("bootstrap_ci needs at least one value (the mean of nothing is undefined)")
    bad = np.flatnonzero(~np.isfinite(x))
    if bad.size:
        raise ValueError(f"bootstrap_ci needs finite values: {bad.size} of {x.size} are NaN or ±inf (at positions "
                         f"{bad[:10].tolist()}{' …' if bad.size > 10 else ''}); drop missing values first, "
                         f"stating the rule (e.g. values[np.isfinite(values)])")
    return x


def _method_name(method: str) -> str:
    for name in CI_METHODS:
        if method.lower() == name.lower():
            return name
    raise ValueError(f"unknown bootstrap interval method {method!r}; valid: {', '.join(CI_METHODS)}")


def bootstrap_ci(values: npt.ArrayLike, *, confidence: float = DEFAULT.confidence,
                 n_resamples: int = DEFAULT.n_resamples, seed: int = DEFAULT.seed,
                 method: str = DEFAULT.method) -> tuple[float, float, float]:
    """``(mean, low, high)``: the mean of ``values`` and its bootstrap confidence interval.

    ``method`` is ``"BCa"`` (default: corrects for the bias and skewness of per-image metrics)
    or ``"percentile"``. The resamples come from ``numpy.random.default_rng(seed)``, so the same
    values give the same interval. One value gives NaN bounds (no interval); constant values
    give the point ``(v, v, v)``; NaN or ±inf values raise ValueError (drop them first).
    """
    name = _method_name(method)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence}")
    if int(n_resamples) != n_resamples or n_resamples < 1:
        raise ValueError(f"n_resamples must be a positive integer, got {n_resamples}")
    x = _finite_1d(values)
    if x.size == 1:
        return float(x[0]), math.nan, math.nan
    if np.ptp(x) == 0:
        return float(x[0]), float(x[0]), float(x[0])
    low, high = _interval(x, confidence, int(n_resamples), seed, name)
    if not (math.isfinite(low) and math.isfinite(high)) and name == "BCa":
        warnings.warn("the BCa interval is undefined for these values (equal up to rounding); "
                      "the percentile interval of the same resamples is given instead", RuntimeWarning, stacklevel=2)
        low, high = _interval(x, confidence, int(n_resamples), seed, "percentile")
    return float(np.mean(x)), low, high


def _interval(x: npt.NDArray[np.float64], confidence: float, n_resamples: int, seed: int,
              method: str) -> tuple[float, float]:
    from scipy import stats  # type: ignore[import-untyped]  # lazy: scipy is slow to import

    # scipy >= 1.15 calls the generator `rng`; before, `random_state` (a Generator is used as is by both)
    key = "rng" if "rng" in inspect.signature(stats.bootstrap).parameters else "random_state"
    batch = None if x.size * n_resamples <= _MAX_ELEMENTS else max(1, _MAX_ELEMENTS // x.size)
    options: dict[str, Any] = {key: np.random.default_rng(seed), "batch": batch}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy's DegenerateDataWarning: handled by the caller
        res = stats.bootstrap((x,), np.mean, n_resamples=n_resamples, confidence_level=confidence,
                              method=method, vectorized=True, **options)
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def sign_flip_p(differences: npt.ArrayLike, *, n_resamples: int = DEFAULT.n_resamples,
                seed: int = DEFAULT.seed) -> float:
    """Two-sided p-value of the sign-flip permutation test that paired ``differences`` have mean 0
    (``scipy.stats.permutation_test``, one sample: each sign flipped independently). Exact (every one
    of the 2^n sign patterns) where 2^n <= ``n_resamples``, else ``n_resamples`` patterns drawn from
    ``numpy.random.default_rng(seed)``. NaN for fewer than 2 values; 1 where every difference is 0.
    NaN or ±inf values raise ValueError, as in :func:`bootstrap_ci`."""
    from scipy import stats

    x = _finite_1d(differences)
    if x.size < 2:
        return math.nan
    if not np.any(x):
        return 1.0
    # The statistic is the exactly summed mean (math.fsum, correctly rounded), so each sign pattern's value is
    # that of its exact sum: a pattern ties with the observed one exactly when their exact sums are equal, in
    # whatever order numpy would have added them. scipy's tie tolerance is relative to the observed mean, which
    # cancellation can make tiny: with numpy's sums the p of six differences of about 18 summing to 0.125 moved
    # by one pattern when they were scaled by 3.3 (the observed pattern no longer tied with itself).
    key = "rng" if "rng" in inspect.signature(stats.permutation_test).parameters else "random_state"
    res = stats.permutation_test((x,), _exact_mean, permutation_type="samples", vectorized=True,
                                 n_resamples=n_resamples, alternative="two-sided", **{key: np.random.default_rng(seed)})
    return float(res.pvalue)


def _exact_mean(v: npt.NDArray[np.float64], axis: int) -> npt.NDArray[np.float64]:
    """The mean along ``axis`` of each row of sign-flipped values, from its exact sum (:func:`math.fsum`)."""
    rows = np.moveaxis(np.asarray(v, dtype=np.float64), axis, -1)
    sums = [math.fsum(row) for row in rows.reshape(-1, rows.shape[-1])]
    means: npt.NDArray[np.float64] = np.asarray(sums, dtype=np.float64).reshape(rows.shape[:-1]) / rows.shape[-1]
    return means


def sign_flip_floor(n: int, n_resamples: int = DEFAULT.n_resamples) -> float:
    """The least p :func:`sign_flip_p` can give for ``n`` values: 2/2^n where it enumerates the sign
    patterns, 2/(n_resamples + 1) where it draws them."""
    return 2 / 2 ** n if 2 ** n <= n_resamples else 2 / (n_resamples + 1)


def p_text(p: float) -> str:
    """A p- or q-value as every table prints it: two significant digits, ``–`` where there is none."""
    return "–" if math.isnan(p) else f"{p:.2g}"


def fdr_q(p_values: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Benjamini–Hochberg adjusted p-values (q) of a family of tests
    (``scipy.stats.false_discovery_control``): the tests with q < alpha hold at a false discovery rate
    of alpha. NaN entries (no test: n < 2) are left NaN and not counted in the family."""
    from scipy import stats

    p = np.asarray(p_values, dtype=np.float64)
    q = np.full(p.shape, math.nan)
    have = ~np.isnan(p)
    if have.any():
        q[have] = stats.false_discovery_control(p[have], method="bh")
    return q


# ---- configurations and paired comparisons ---------------------------------------------------------
def config_labels(df: pd.DataFrame) -> pd.Series:
    """The label of each record's configuration: the method name, or, when that method was run
    with several configurations, the name with what tells them apart, e.g. ``mganprior (n_codes=10)``
    (the settings that differ, then precision or restarts; the settings hash as the last resort)."""
    labels = {i: str(m) for i, m in df["method"].items()}
    for _, g in df.groupby(["method", "task_label"] if "task_label" in df else "method"):  # tables group by task
        keys = [str(k) for k in dict.fromkeys(g["method_key"])]
        if len(keys) > 1:
            named = _distinguish(g, keys)
            labels.update({i: named[str(k)] for i, k in g["method_key"].items()})
    return pd.Series(labels, index=df.index, dtype=object).astype(str)


def _describe(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _distinguish(g: pd.DataFrame, keys: list[str]) -> dict[str, str]:
    """A readable, unique label per configuration key of one method."""
    first: dict[str, dict[Any, Any]] = {str(r["method_key"]): r for r in g.drop_duplicates("method_key")
                                        .to_dict("records")}
    settings = {k: _as_dict(first[k].get("method_settings")) for k in keys}
    restarts = {k: _as_dict(first[k].get("restarts")).get("k", 1) for k in keys}
    extra = {k: {"precision": first[k].get("precision"), "restarts": restarts[k]} for k in keys}
    names = sorted({n for v in settings.values() for n in v})
    differ = [n for n in names if len({repr(settings[k].get(n)) for k in keys}) > 1]
    differ_extra = [n for n in ("precision", "restarts") if len({repr(extra[k][n]) for k in keys}) > 1]
    method = str(g["method"].iloc[0])
    out = {}
    for k in keys:
        parts = [f"{n}={_describe(settings[k].get(n))}" for n in differ]
        parts += [f"{n}={_describe(extra[k][n])}" for n in differ_extra]
        out[k] = f"{method} ({', '.join(parts)})" if parts else k
    if len(set(out.values())) < len(keys):  # the same visible settings: fall back to the keys
        out = {k: f"{v} [{k.rpartition('@')[2]}]" for k, v in out.items()}
    return out


def resolve_label(df: pd.DataFrame, name: str) -> str:
    """The configuration label ``name`` stands for: a label itself, or a method name with a single
    configuration. ``df`` needs a ``label`` column; anything else raises ValueError listing the labels."""
    labels = sorted({str(x) for x in df["label"]})
    if name in labels:
        return name
    of_method = sorted({str(x) for x in df.loc[df["method"] == name, "label"]})
    if len(of_method) == 1:
        return of_method[0]
    if of_method:
        raise ValueError(f"{name!r} is ambiguous: method {name} ran with {len(of_method)} configurations; "
                         f"pick one of: {', '.join(of_method)}")
    raise ValueError(f"unknown configuration {name!r}; valid: {', '.join(labels) or '(none: no results)'}")


@dataclass(frozen=True)
class PairedDifference:
    """A − B of one metric on one subset of images (``OVERALL`` for every subset together)."""

    a: str
    b: str
    metric: str
    subset: str
    differences: pd.Series  # A − B per image_id, on the images both have (ok and with a value); ±inf: one exact
    mean: float
    ci_low: float
    ci_high: float
    wins: int  # A better in the metric's direction
    ties: int  # exactly equal
    losses: int  # B better
    settings: BootstrapSettings = field(default=DEFAULT, repr=False, compare=False)  # of the interval and the test

    @property
    def n(self) -> int:
        return len(self.differences)

    @property
    def finite(self) -> pd.Series:
        """The differences the mean, the interval and the test are taken over: a pair where one of A and B
        reconstructs its target exactly (PSNR +inf: MSE 0) and the other does not has no finite difference and
        counts in wins/ties/losses only (where both are exact, the difference is 0: a tie)."""
        return _finite_part(self.differences)

    @cached_property
    def p_value(self) -> float:
        """Two-sided sign-flip permutation test of the mean (:func:`sign_flip_p` at ``settings``); NaN for n < 2.
        Computed when first read: most comparisons (a table along the way, the LPIPS columns) never show it."""
        if self.n < 2:
            return math.nan
        return sign_flip_p(self.finite.to_numpy(), n_resamples=self.settings.n_resamples, seed=self.settings.seed)


def _finite_part(differences: pd.Series) -> pd.Series:
    kept: pd.Series = differences[np.isfinite(differences.to_numpy(dtype=float))]
    return kept


def exact_psnr(records: pd.DataFrame) -> npt.NDArray[np.bool_]:
    """Which records reconstruct their target exactly: PSNR +inf, which the store keeps empty, beside MSE 0."""
    if "mse" not in records:
        return np.zeros(len(records), dtype=bool)
    empty = pd.to_numeric(records["psnr"], errors="coerce").isna().to_numpy() if "psnr" in records else True
    exact: npt.NDArray[np.bool_] = empty & (pd.to_numeric(records["mse"], errors="coerce").to_numpy(dtype=float) == 0)
    return exact


def _subset(image_id: object) -> str:
    return str(image_id).split("/")[0]


def _values(df: pd.DataFrame, label: str, metric: str) -> pd.Series:
    ok = df[(df["label"] == label) & (df["status"] == "ok")]
    twice = sorted(set(ok.loc[ok["image_id"].duplicated(), "image_id"]))
    if twice:  # e.g. one folder's records of two tasks: pairing needs one record per image and side
        raise ValueError(f"{label!r} has several records of image {twice[0]} ({len(twice)} image(s) so); pair "
                         "the records of one task (gib compare --task)")
    values = np.array(pd.to_numeric(ok[metric], errors="coerce"), dtype=float)  # a copy (pandas' may be read-only)
    if metric == "psnr":
        values[exact_psnr(ok)] = math.inf
    return pd.Series(values, index=ok["image_id"])


def _paired(diff: pd.Series, key: tuple[str, str, str, str], higher: bool,
            settings: BootstrapSettings) -> PairedDifference:
    finite = _finite_part(diff)  # ±inf: A or B exact (PSNR), wins/ties/losses only
    if len(finite):
        mean, low, high = bootstrap_ci(finite.to_numpy(), confidence=settings.confidence,
                                       n_resamples=settings.n_resamples, seed=settings.seed, method=settings.method)
    else:
        mean = low = high = math.nan
    better, worse = int((diff > 0).sum()), int((diff < 0).sum())
    return PairedDifference(*key, differences=diff, mean=mean, ci_low=low, ci_high=high,
                            wins=better if higher else worse, ties=int((diff == 0).sum()),
                            losses=worse if higher else better, settings=settings)


def paired_differences(df: pd.DataFrame, a: str, b: str, metric: str,
                       settings: BootstrapSettings = DEFAULT) -> dict[str, PairedDifference]:
    """Per-image differences A − B of ``metric`` between two configurations, per subset and overall.

    ``df`` holds the records (``tables.load_records``); ``a`` and ``b`` are configuration labels
    (``label`` column if present, else :func:`config_labels`) or unambiguous method names. An
    image counts when both have it with status ok and a value of the metric (a missing value,
    e.g. a non-finite metric the store kept empty, leaves the pair out; an empty PSNR with MSE 0 is an
    exact reconstruction, PSNR +inf: see :attr:`PairedDifference.finite`). Returns one
    :class:`PairedDifference` per subset either configuration has images of (sorted by name; n = 0
    when no image of it has a pair), then ``OVERALL`` (every pair).
    """
    if metric not in HIGHER_IS_BETTER:
        raise ValueError(f"unknown metric {metric!r}; valid: {', '.join(HIGHER_IS_BETTER)}")
    if df.empty:
        raise ValueError("no results to compare")
    if "label" not in df:
        df = df.assign(label=config_labels(df))
    a, b = resolve_label(df, a), resolve_label(df, b)
    if a == b:
        raise ValueError(f"both sides are the configuration {a!r}; compare two different configurations")
    if metric not in df:
        df = df.assign(**{metric: math.nan})  # an older database without this column
    both = pd.concat({"a": _values(df, a, metric), "b": _values(df, b, metric)}, axis=1, join="inner").dropna()
    diff = (both["a"] - both["b"]).where(both["a"] != both["b"], 0.0).sort_index()  # both exact: a tie, not NaN
    subsets = pd.Series([_subset(i) for i in diff.index], index=diff.index, dtype=object)
    higher = HIGHER_IS_BETTER[metric]
    names = sorted({_subset(i) for i in df.loc[df["label"].isin([a, b]), "image_id"]})  # also those without a pair
    out = {s: _paired(diff[subsets == s], (a, b, metric, s), higher, settings) for s in names}
    out[OVERALL] = _paired(diff, (a, b, metric, OVERALL), higher, settings)
    return out


def _mean_of_starts(info: Any) -> float:
    """An image's mean PSNR over its K starts (every start's metrics are in the record), leaving out the starts
    that failed (a non-finite loss: their PSNR is that of their last finite iterate, and a failed image of a run of
    one start is left out of the means too); NaN for a record of one start or with no finite value."""
    if not isinstance(info, dict) or int(info.get("k", 1)) < 2:
        return math.nan
    failed = set(info.get("failed") or [])  # records before it was stored: every start counts
    values = [v for j, v in enumerate(info.get("psnr") or [])
              if j not in failed and isinstance(v, int | float) and math.isfinite(v)]
    return float(np.mean(values)) if values else math.nan


def with_start_means(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with its ``psnr_starts`` column (per image, the mean PSNR over its restarts)."""
    if "psnr_starts" in df:
        return df
    infos = df.get("restarts", pd.Series([None] * len(df), index=df.index))
    return df.assign(psnr_starts=[_mean_of_starts(info) for info in infos])
