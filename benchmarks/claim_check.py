"""The claim check of docs/results.md: does the PmSFC paper's ordering (PmSFC ≥ mGANprior ≥
single-code in PSNR and LPIPS) hold on the embedded default generator with equal budgets? And
ablations over N (mGANprior) and R, K (PmSFC).

Every configuration is an ordinary ``gib run`` (``harness.run``) into its own folder under
``--out`` (SQLite ``results.sqlite`` per folder), so an interrupted check resumes where it
stopped and every number in the page can be traced to its records. The page is then written
from those databases (``--write``), with the device, the settings, the wall time of each run and
the CPU load during it.

    python benchmarks/claim_check.py --out runs/claim-check --write docs/results.md

Budgets: the main table runs every method for ``--iterations`` (default 500) steps from the
quick profiles (SGD; lr 10 for the multi-code methods, lr 1 for single-code as in the seeds,
plus single-code at lr 10 so the learning rate is not what decides), with PmSFC's subspaces from
the paper-default discovery (10 000 Adam steps, lr 1e-4). The ablations use ``--ablation-iterations``
(default 200) steps and change one setting at a time.
"""
from __future__ import annotations

import argparse
import datetime
import itertools
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gan_inversion_bench import harness, tables

#: PmSFC's stage 1 as the paper profile runs it (converged: docs/methods.md, "Convergence")
DISCOVERY = {"discovery_iterations": 10000, "discovery_lr": 1e-4}


@dataclass
class Config:
    name: str                       # folder name
    group: str                      # "main", "N", "R", "K"
    label: str                      # row label in the page
    methods: list[str]
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    iterations: int = 0


def configs(iterations: int, ablation_iterations: int, n_values: list[int], r_values: list[int],
            k_values: list[int], lr_values: list[float] = ()) -> list[Config]:
    out = [
        Config("main", "main", "", ["single-code", "mganprior", "pmsfc"], {"pmsfc": dict(DISCOVERY)}, iterations),
        Config("single-code-lr10", "main", "single-code (lr 10)", ["single-code"], {"single-code": {"lr": 10.0}},
               iterations),
    ]
    for n in n_values:
        out.append(Config(f"mganprior-N{n}", "N", f"N = {n}", ["mganprior"], {"mganprior": {"n_codes": n}},
                          ablation_iterations))
    for r in r_values:
        out.append(Config(f"pmsfc-R{r}-K5", "R", f"R = {r}, K = 5", ["pmsfc"],
                          {"pmsfc": {**DISCOVERY, "n_subspaces": r, "codes_per_subspace": 5}}, ablation_iterations))
    for k in k_values:
        out.append(Config(f"pmsfc-R6-K{k}", "K", f"R = 6, K = {k}", ["pmsfc"],
                          {"pmsfc": {**DISCOVERY, "n_subspaces": 6, "codes_per_subspace": k}}, ablation_iterations))
    for lr in lr_values:  # is the ordering an artefact of the shared learning rate?
        for name, extra in (("mganprior", {}), ("pmsfc", dict(DISCOVERY))):
            out.append(Config(f"{name}-lr{lr:g}", "lr", f"{name}, lr {lr:g}", [name], {name: {**extra, "lr": lr}},
                              ablation_iterations))
    return out


def _loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0]) if Path("/proc/loadavg").exists() else float("nan")


def run_all(cfgs: list[Config], out: Path, n_generated: int, device: str, cache: Path) -> None:
    log_path = out / "runs.json"
    log = json.loads(log_path.read_text()) if log_path.exists() else {}
    for cfg in cfgs:
        run_dir = out / cfg.name
        # one shared cache folder: PmSFC's S is discovered once and reused by every configuration
        config = harness.RunConfig(methods=cfg.methods, overrides=dict(cfg.overrides), budget=cfg.iterations,
                                   n_generated=n_generated, device=device)
        t0, load0 = time.monotonic(), _loadavg()
        print(f"== {cfg.name}: {cfg.methods} {cfg.overrides} iterations {cfg.iterations}", flush=True)
        run_dir.mkdir(parents=True, exist_ok=True)
        cache.mkdir(parents=True, exist_ok=True)
        if not (run_dir / "cache").exists():
            (run_dir / "cache").symlink_to(cache.resolve(), target_is_directory=True)
        harness.run(config, run_dir, progress=False)
        if cfg.name not in log or log[cfg.name].get("wall_s", 0) < 1:
            log[cfg.name] = {"wall_s": round(time.monotonic() - t0, 1), "loadavg_before": load0,
                             "loadavg_after": _loadavg(),
                             "finished": datetime.datetime.now().isoformat(timespec="seconds")}
        log_path.write_text(json.dumps(log, indent=2))


# ---- the page -------------------------------------------------------------------------------------
def _fmt(mean: float, std: float, f: str) -> str:
    return f"{f.format(mean)} ± {f.format(std)}"


def _rows(df: pd.DataFrame, label: str | None = None) -> list[list[str]]:
    """One row per (method, subset) from :func:`tables.summary`, sorted, in this page's formats."""
    s = tables.summary(df).sort_values(["method", "images"])
    return [[label or r.method, r.images, str(r.n), _fmt(r.psnr_mean, r.psnr_std, "{:.2f}"),
             _fmt(r.ssim_mean, r.ssim_std, "{:.3f}"), _fmt(r.lpips_mean, r.lpips_std, "{:.3f}"),
             f"{r.time_s_mean:.2f}", str(r.failed)] for r in s.itertuples()]


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|",
            *["| " + " | ".join(r) + " |" for r in rows]]


def _paired(df: pd.DataFrame, a: str, b: str) -> list[str]:
    """Per image: how often a beats b, and the mean paired difference (same targets, same seeds)."""
    out = []
    for subset in sorted(df["subset"].unique()):
        pa = df[(df["method"] == a) & (df["subset"] == subset)].set_index("image_id")
        pb = df[(df["method"] == b) & (df["subset"] == subset)].set_index("image_id")
        common = pa.index.intersection(pb.index)
        if not len(common):
            continue
        dp = pa.loc[common, "psnr"] - pb.loc[common, "psnr"]
        dl = pa.loc[common, "lpips"] - pb.loc[common, "lpips"]
        out.append([f"{a} − {b}", subset, f"{dp.mean():+.2f} (±{dp.std(ddof=1) / np.sqrt(len(dp)):.2f})",
                    f"{int((dp > 0).sum())}/{len(dp)}", f"{dl.mean():+.3f} (±{dl.std(ddof=1) / np.sqrt(len(dl)):.3f})",
                    f"{int((dl < 0).sum())}/{len(dl)}"])
    return out


def _versions(row: pd.Series) -> dict[str, Any]:
    v = row.get("versions")
    return json.loads(v) if isinstance(v, str) else (v or {})


def write_figure(run_dir: Path, df: pd.DataFrame, path: Path, per_subset: int = 4) -> list[str]:
    """A grid: one column per image (``per_subset`` of each subset), rows target, then each method."""
    from PIL import Image

    ids = [i for sub in sorted(df["subset"].unique())
           for i in sorted(df[df["subset"] == sub]["image_id"].unique())[:per_subset]]
    methods = sorted(df["method"].unique())
    rows = [("target", [run_dir / "targets" / f"{i}.png" for i in ids])]
    for m in methods:
        recs = df[df["method"] == m].set_index("image_id")
        rows.append((m, [run_dir / recs.loc[i, "recon_path"] if i in recs.index and isinstance(
            recs.loc[i, "recon_path"], str) else None for i in ids]))
    first = Image.open(rows[0][1][0])
    size = first.size[0]
    grid = Image.new("RGB", (size * len(ids), size * len(rows)), "white")
    for r, (_, files) in enumerate(rows):
        for c, f in enumerate(files):
            if f is not None and Path(f).is_file():
                grid.paste(Image.open(f).convert("RGB").resize((size, size)), (c * size, r * size))
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)
    return [name for name, _ in rows]


#: the columns of the results tables
HEADER = ["method", "images", "n", "PSNR (dB) ↑", "SSIM ↑", "LPIPS ↓", "time/img (s)", "failed"]
#: (configuration group, title) of the ablation tables
ABLATIONS = [("N", "mGANprior: number of codes N"), ("R", "PmSFC: number of subspaces R (K = 5)"),
             ("K", "PmSFC: codes per subspace K (R = 6)"),
             ("lr", "learning rate of the multi-code methods (SGD; default 10, rows N = 10 and R = 6, K = 5 above)")]


def _intro(cfgs: list[Config], main: pd.DataFrame) -> list[str]:
    first = main.iloc[0]
    mc = next(c for c in cfgs if c.name == "main")
    return ["# Results: the claim check", "",
            "Generated by `python benchmarks/claim_check.py --out runs/claim-check --write docs/results.md` "
            f"(code revision {first['code_revision']}). Raw records: one SQLite database per configuration "
            "(`results.sqlite` in each folder under `--out`); rerunning the command resumes and rewrites "
            "this page from them.", "",
            "**Question** (PmSFC paper, Table 1 and §4): is PmSFC ≥ mGANprior ≥ single-code in PSNR and LPIPS? "
            "Checked on the embedded default generator, `dcgan-digiface64` (real weights, 64², MIT), on "
            f"{int((main['subset'] == 'generated').sum() / main['method'].nunique())} generated images "
            "(in-domain, known latents) and the 8 bundled photos (out of domain: the generator only makes "
            "faces, the photos are not faces), with equal budgets.", "",
            f"**Device:** {first['device']}; torch {_versions(first).get('torch', '?')}.",
            "",
            f"## Main table: {mc.iterations} iterations for every method", "",
            "Settings (quick profiles with the iteration count raised; every other setting as documented in "
            "docs/methods.md): single-code SGD lr 1 (the seeds' value; a second row at lr 10), mGANprior "
            "N = 10 codes at split 3, SGD lr 10, PmSFC paper variant, R = 6 subspaces × K = 5 codes at split 3, "
            "SGD lr 10, subspaces from the paper-default discovery (10 000 Adam steps at lr 1e-4, batch 4, "
            "λ = μ = 1, paper affinity, spectral clustering seeded). Loss for all: pixel MSE + 0.001 · L1 of VGG16 "
            "relu3_3 features at the generator's resolution. Same targets and same initial-code seeds for "
            "every method.", ""]


def _main_results(frames: dict[str, pd.DataFrame], out: Path, page: Path) -> list[str]:
    """The main table, the paired differences and the figure."""
    main = frames["main"]
    both = pd.concat([main, frames.get("single-code-lr10", pd.DataFrame()).assign(method="single-code (lr 10)")])
    lines = _table(HEADER, _rows(both))
    lines += ["", "Paired differences per image (same target; mean difference with its standard error, and the "
              "number of images on which the first method is better):", ""]
    pairs = [("pmsfc", "mganprior"), ("mganprior", "single-code"), ("pmsfc", "single-code"),
             ("mganprior", "single-code (lr 10)")]
    prow = list(itertools.chain.from_iterable(_paired(both, a, b) for a, b in pairs))
    lines += _table(["pair", "images", "ΔPSNR (dB)", "PSNR wins", "ΔLPIPS", "LPIPS wins"], prow)
    fig = page.parent / "img" / "claim_check.png"
    order = write_figure(out / "main", main, fig)
    lines += ["", f"![targets and reconstructions](img/{fig.name})", "",
              f"Rows, top to bottom: {', '.join(order)}; columns: the first 4 generated images, then the first 4 "
              f"photos (alphabetical).", ""]
    return lines


def _ablations(cfgs: list[Config], frames: dict[str, pd.DataFrame]) -> list[str]:
    lines: list[str] = []
    for group, title in ABLATIONS:
        gc = [c for c in cfgs if c.group == group and c.name in frames]
        if not gc:
            continue
        lines += ["", f"## Ablation, {title}: {gc[0].iterations} iterations", ""]
        rows = []
        for c in gc:
            rows += _rows(frames[c.name], c.label)
        lines += _table(["setting", *HEADER[1:]], rows)
    return lines


def _runs(cfgs: list[Config], log: dict[str, Any]) -> list[str]:
    lines = ["", "## Runs", "",
             "Wall time of each `gib run` (including PmSFC's discovery where it was not cached yet, "
             "model loading and the warm-up) and the 1-minute load average before and after it (2 cores: a "
             "load above 2 means other work competed for the CPU and the times above are inflated).", ""]
    return lines + _table(["configuration", "wall time (s)", "load before", "load after"],
                          [[c.name, f"{log[c.name]['wall_s']:.0f}", f"{log[c.name]['loadavg_before']:.1f}",
                            f"{log[c.name]['loadavg_after']:.1f}"] for c in cfgs if c.name in log])


def write_page(cfgs: list[Config], out: Path, page: Path) -> None:
    log = json.loads((out / "runs.json").read_text())
    frames = {c.name: tables.load_records(out / c.name) for c in cfgs if (out / c.name / "results.sqlite").exists()}
    main = frames["main"]
    lines = _intro(cfgs, main) + _main_results(frames, out, page) + ["", "VERDICT", ""]
    lines += _ablations(cfgs, frames) + _runs(cfgs, log)
    lines += ["", "## Conventions", ""] + [f"- {s}" for s in tables.footer(main)]
    text = "\n".join(lines) + "\n"
    if page.exists():  # keep a hand-written verdict when regenerating
        old = page.read_text()
        if "<!-- verdict -->" in old:
            verdict = old.split("<!-- verdict -->")[1]
            text = text.replace("VERDICT", f"<!-- verdict -->{verdict}<!-- verdict -->")
    page.write_text(text.replace("VERDICT", "<!-- verdict -->\n(verdict to be written)\n<!-- verdict -->"))
    print(f"wrote {page}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/claim-check")
    ap.add_argument("--write", default=None, help="write the Markdown page here (e.g. docs/results.md)")
    ap.add_argument("--iterations", type=int, default=500)
    ap.add_argument("--ablation-iterations", type=int, default=200)
    ap.add_argument("--n-generated", type=int, default=8)
    ap.add_argument("--n-values", default="1,3,10,30")
    ap.add_argument("--r-values", default="1,3,6,12")
    ap.add_argument("--k-values", default="1,3,10")
    ap.add_argument("--lr-values", default="3,30", help="SGD learning rates for mGANprior and PmSFC")
    ap.add_argument("--discovery-iterations", type=int, default=DISCOVERY["discovery_iterations"],
                    help="PmSFC stage-1 steps (default: the paper profile's, converged)")
    ap.add_argument("--only", default=None, help="comma-separated configuration names")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--no-run", action="store_true", help="only write the page from existing results")
    args = ap.parse_args(argv)
    DISCOVERY["discovery_iterations"] = args.discovery_iterations
    ints = lambda s: [int(x) for x in s.split(",") if x]  # noqa: E731
    cfgs = configs(args.iterations, args.ablation_iterations, ints(args.n_values), ints(args.r_values),
                   ints(args.k_values), [float(x) for x in args.lr_values.split(",") if x])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.no_run:
        todo = [c for c in cfgs if not args.only or c.name in args.only.split(",")]
        run_all(todo, out, args.n_generated, args.device, out / "cache")
    if args.write:
        write_page(cfgs, out, Path(args.write))
    return 0


if __name__ == "__main__":
    sys.exit(main())
