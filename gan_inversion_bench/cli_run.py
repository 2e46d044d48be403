"""``gib run`` (the benchmark, also from a TOML/JSON ``--config`` file) and ``gib tune``."""
from __future__ import annotations

import dataclasses
import json
import os
import shlex
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .cli_common import (
    INT64,
    BoundedInt,
    build_generator,
    coerce,
    fix_argument,
    friendly_errors,
    generator_options,
    pairs,
    parse_assignments,
    parse_choices,
    slug,
)
from .devices import KERNEL_ENV
from .imagesets import SEED_LIMIT
from .profiles import STARTUP_TRIALS
from .registry import GENERATORS, METHODS
from .tasks import TASKS

if TYPE_CHECKING:
    from .tuning import TuneConfig


def echo(text: str) -> None:
    """``click.echo`` that survives a closed pipe (``gib run | head``): the run goes on and stores
    every result; what it would have printed is dropped (stdout is pointed at the null device)."""
    try:
        click.echo(text)
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


# ---- gib run ----------------------------------------------------------------------------------
#: why a run seed has its range (:data:`~gan_inversion_bench.imagesets.SEED_LIMIT`)
SEED_WHY = "±2**53: image i of the generated set is drawn with seed × 1000 + i, which must fit 64 bits"


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
    options: dict[str | None, click.Option] = {}
    for param in ctx.command.params:
        if isinstance(param, click.Option) and param.name != "config":
            options.update({o[2:]: param for o in param.opts if o.startswith("--")})
            options.update({o[2:].replace("-", "_"): param for o in param.opts if o.startswith("--")})
            options[param.name] = param
    out: dict[str, Any] = {}
    for key, value in data.items():
        p = options.get(key)
        if p is None:
            valid = sorted({o[2:] for q in set(options.values()) for o in q.opts if o.startswith("--")})
            raise click.BadParameter(f"{path}: unknown option {key!r}; valid: {', '.join(valid)}",
                                     param_hint="--config")
        if p.multiple and isinstance(value, dict):  # e.g. set = {"single-code.lr" = 0.5}
            value = [f"{k}={json.dumps(v)}" for k, v in value.items()]
        elif p.multiple and not isinstance(value, list):
            value = [value]
        elif not p.multiple and isinstance(value, (list, dict)):
            raise click.BadParameter(f"{path}: {key!r} takes one value, found {json.dumps(value)}",
                                     param_hint="--config")
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


@click.command("run")
@click.option("--config", type=click.Path(exists=True, dir_okay=False), is_eager=True, expose_value=False,
              callback=_load_config, help="TOML (Python 3.11+) or JSON file of options, e.g. n = 4; "
                                          "options given on the command line win.")
@click.option("--generator", "-g", default="dcgan-digiface64", show_default=True, help="Registered generator name.")
@click.option("--weights", type=click.Path(dir_okay=True), default=None, help="Local checkpoint for the generator.")
@click.option("--gen-opt", multiple=True, metavar="KEY=VALUE", help="Generator option (repeatable).")
@click.option("--method", "-m", "methods", multiple=True,
              help="Method name (repeatable; default: the default-run methods, `gib list methods` marks them).")
@click.option("--images", default="generated+photos", show_default=True,
              help="Image set: generated, photos, generated+photos, folder:PATH or a directory.")
@click.option("--n", "n_generated", type=INT64, default=8, show_default=True, help="Images in the generated set.")
@click.option("--n-images", "n_images", type=INT64, default=None,
              help="Same as --n; use this one under torchrun, whose own parser takes --n for its options.")
@click.option("--profile", type=click.Choice(["auto", "tuned", "quick", "paper"]), default="auto", show_default=True,
              help="tuned: gib tune's profile of the generator (gan_inversion_bench/profiles/); quick: short budget, "
                   "untuned; paper: the seeds' defaults; auto: tuned where every method has one, else quick.")
@click.option("--iterations", type=INT64, default=None, help="Override the iteration count of every method.")
@click.option("--budget-seconds", type=float, default=None,
              help="Compute budget per image inversion in seconds: each method's iteration count is calibrated "
                   "from its measured time per iteration (instead of, or capped by, --iterations).")
@click.option("--budget-flops", type=float, default=None,
              help="Compute budget per image inversion in FLOPs (from the FLOP count of each method).")
@click.option("--restarts", type=INT64, default=1, show_default=True,
              help="Initialisations per image; the one with the lowest final loss is scored (all are stored).")
@click.option("--no-latency", is_flag=True, help="Do not time one image inverted alone after each method.")
@click.option("--set", "settings", multiple=True, metavar="[METHOD.]KEY=VALUE",
              help="Override a method setting (repeatable), e.g. --set mganprior.n_codes=10; "
                   "task.KEY=VALUE sets the task's, e.g. --set task.ratio=0.25.")
@click.option("--task", type=click.Choice(list(TASKS)), default="reconstruct", show_default=True,
              help="Restoration task: the targets are degraded (y = D(x)), every method compares D(G(·)) with y, "
                   "and the metrics compare G(·) with the clean x. Settings: inpaint mask=centre|boxes|strokes, "
                   "ratio=0.25; super-resolve factor=4|8; denoise sigma=0.1 (on [0, 1]).")
@click.option("--batch-size", type=INT64, default=None, help="Images inverted jointly (default: automatic).")
@click.option("--precision", type=click.Choice(["fp32", "tf32", "bf16"]), default="fp32", show_default=True,
              help="fp32 (TF32 off), tf32 (CUDA tensor cores) or bf16 (autocast; allowed but slow on most CPUs).")
@click.option("--compile", "compile_mode", type=click.Choice(["off", "default", "reduce-overhead", "max-autotune"]),
              default="off", show_default=True,
              help="torch.compile the per-iteration step (reduce-overhead: with CUDA graphs).")
@click.option("--channels-last", is_flag=True, help="Generator weights in channels-last memory format.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1, ...")
@click.option("--seed", type=BoundedInt(-SEED_LIMIT, SEED_LIMIT, SEED_WHY), default=0, show_default=True)
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Run folder (default: runs/<generator>_<images>_<profile>). Re-running resumes.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
@click.option("--download", is_flag=True,
              help="Download a missing zoo checkpoint that has a direct URL into the cache "
                   "(GIB_DOWNLOAD=1 does the same).")
@friendly_errors
def run_cmd(**o: Any) -> None:
    """Invert an image set with every method and print the comparison table."""
    if o["download"]:
        os.environ["GIB_DOWNLOAD"] = "1"
    from .harness import run
    from .harness.stop import EXIT_STOPPED, StopRequested
    from .safe_paths import UnsafePathError
    from .tables import load_records, to_markdown, write_tables

    config = run_config(o)
    out_dir = Path(o["out"]).expanduser() if o["out"] else Path("runs") / slug(
        f"{config.generator}_{config.images}_{config.profile}")
    try:
        run(config, out_dir, echo=echo, progress=not o["no_progress"], argv=sys.argv)
    except KeyboardInterrupt:
        sys.exit(130)
    except StopRequested as e:  # `gib stop`: the batch in flight was stored (rank 0 says so)
        if str(e):
            echo(f"\n{e}")
        sys.exit(EXIT_STOPPED)
    from .distributed import is_main_process

    if not is_main_process():  # under torchrun, rank 0 alone stores results and prints the table
        return
    echo("")
    echo(to_markdown(load_records(out_dir)))
    try:
        paths = write_tables(out_dir)
    except (OSError, UnsafePathError) as e:  # e.g. a link planted in place of table.csv: results are safe
        raise click.ClickException(
            f"every result is stored in {out_dir / 'results.sqlite'} and the table is printed above, but "
            f"table.md/.csv/.tex could not be written ({e}); `gib table {out_dir} --out DIR` writes them "
            f"elsewhere") from None
    echo(f"\nResults: {out_dir / 'results.sqlite'}; tables: {', '.join(str(p) for p in paths.values())}")


def run_config(o: dict[str, Any]) -> Any:
    """The :class:`~gan_inversion_bench.harness.RunConfig` of ``gib run``'s parsed options."""
    from .harness import RunConfig

    GENERATORS.get(o["generator"])
    for m in o["methods"]:
        METHODS.get(m)
    for opt, hint in (("iterations", "--iterations"), ("batch_size", "--batch-size")):
        if o[opt] is not None and o[opt] < 1:
            raise click.BadParameter(f"must be >= 1, got {o[opt]}", param_hint=hint)
    if o["restarts"] < 1:
        raise click.BadParameter(f"must be >= 1, got {o['restarts']}", param_hint="--restarts")
    n_generated = o["n_images"] if o["n_images"] is not None else o["n_generated"]
    if n_generated < 1:
        raise click.BadParameter(f"must be >= 1, got {n_generated}", param_hint="--n")
    gen_options = generator_options(o["generator"], o["gen_opt"])
    if o["weights"]:
        gen_options["weights"] = str(Path(o["weights"]).expanduser().resolve())
    task_items = tuple(s for s in o["settings"] if s.startswith("task."))
    overrides = method_overrides(tuple(s for s in o["settings"] if not s.startswith("task.")),
                                 list(o["methods"]) or default_methods())
    methods = list(o["methods"]) or None
    return RunConfig(generator=o["generator"], generator_options=gen_options, methods=methods,
                     profile=_profile(o["profile"], o["generator"], methods), overrides=overrides,
                     images=o["images"], n_generated=n_generated, seed=o["seed"], batch_size=o["batch_size"],
                     device=o["device"], precision=o["precision"], compile=o["compile_mode"],
                     channels_last=o["channels_last"], budget=o["iterations"], restarts=o["restarts"],
                     budget_seconds=o["budget_seconds"], budget_flops=o["budget_flops"], latency=not o["no_latency"],
                     task=o["task"], task_settings=task_settings(task_items, o["task"]))


def method_overrides(items: tuple[str, ...], methods: list[str]) -> dict[str, dict[str, Any]]:
    """``--set [METHOD.]KEY=VALUE`` by method (``"*"``: every method that has the setting), each
    value parsed by the type of the setting's default (a boolean setting takes ``false``)."""
    out: dict[str, dict[str, Any]] = {}
    for key, text in pairs(items, "--set"):
        method, _, field = key.rpartition(".")
        if method and method not in METHODS:
            METHODS.get(method)  # raises with suggestions
        owners = [method] if method else [m for m in methods if field in METHODS.get(m).setting_names()]
        default = next((f.default for m in owners for f in dataclasses.fields(METHODS.get(m).Settings)
                        if f.name == field), None)
        out.setdefault(method or "*", {})[field] = coerce(text, default, f"--set {key}")
    return out


def default_methods() -> list[str]:
    """The methods of a run without ``-m`` (:func:`~gan_inversion_bench.harness.default_methods`)."""
    from .harness import default_methods as defaults

    return defaults()


def task_settings(items: tuple[str, ...], task: str) -> dict[str, Any]:
    """``--set task.KEY=VALUE`` parsed by the type of the task's setting; an unknown key is refused
    with the task's settings."""
    fields = {f.name: f.default for f in dataclasses.fields(TASKS[task])}
    out = {}
    for key, text in pairs(items, "--set"):
        name = key.partition(".")[2]
        if name not in fields:
            raise click.BadParameter(f"task {task!r} has no setting {name!r}; its settings: "
                                     f"{', '.join(fields) or 'none'}", param_hint=f"--set {key}")
        out[name] = coerce(text, fields[name], f"--set {key}")
    return out


def _profile(choice: str, generator: str, methods: list[str] | None) -> str:
    """``auto``: the tuned profile where every tunable method of the run has one for the generator,
    else quick (a method with nothing to tune runs at its quick profile either way)."""
    from .profiles import has_tuned

    if choice != "auto":
        return choice
    tuned = has_tuned(generator, [m for m in methods or default_methods() if METHODS.get(m).tunable()])
    echo(f"profile: {'tuned (gan_inversion_bench/profiles/' + generator + '.json)' if tuned else 'quick'}")
    return "tuned" if tuned else "quick"


# ---- gib tune ---------------------------------------------------------------------------------
@click.command("tune")
@click.option("--generator", "-g", default="dcgan-digiface64", show_default=True, help="Registered generator name.")
@click.option("--weights", type=click.Path(dir_okay=True), default=None, help="Local checkpoint for the generator.")
@click.option("--gen-opt", multiple=True, metavar="KEY=VALUE", help="Generator option (repeatable).")
@click.option("--method", "-m", "methods", multiple=True,
              help="Method name (repeatable; default: the default-run methods, `gib list methods` marks them).")
@click.option("--trials", type=INT64, default=24, show_default=True, help="optuna trials per method.")
@click.option("--budget", type=INT64, default=100, show_default=True,
              help="Iterations of every trial: the budget the tuned profile is for.")
@click.option("--images", "n_images", type=INT64, default=4, show_default=True,
              help="Tuning images: how many (generated, or the first of --tune-images).")
@click.option("--tune-images", "tune_images", default="generated", show_default=True,
              metavar="generated|photos-tune|folder:PATH",
              help="The tuning image set: generated (seed --image-seed, disjoint from the evaluation set's), "
                   "photos-tune (4 real photos no evaluation set holds) or a folder of real images; an "
                   "evaluation photo among them is refused. Generated targets reward finding the generating "
                   "code, so a setting meant for real images is tuned on real ones.")
@click.option("--image-seed", type=BoundedInt(-SEED_LIMIT, SEED_LIMIT, SEED_WHY), default=1, show_default=True,
              help="Run seed of the tuning images (the evaluation set uses 0).")
@click.option("--seed", type=BoundedInt(0, 2**32 - 1, "numpy's seed range, which optuna uses"), default=0,
              show_default=True, help="Seed of optuna's TPE sampler.")
@click.option("--min-resource", type=INT64, default=None,
              help="Iterations of successive halving's first rung (default: max(8, budget // 27)).")
@click.option("--pruning", type=click.Choice(["halving", "none"]), default="halving", show_default=True,
              help="halving: stop poor trials early (favours settings that rise fast); none: every trial runs "
                   "to the budget.")
@click.option("--startup-trials", type=INT64, default=STARTUP_TRIALS, show_default=True,
              help="Trials that TPE draws at random before it models the results (optuna's default); with "
                   "--trials at or below it the search is a random search.")
@click.option("--fix", multiple=True, metavar="NAME=VALUE",
              help="Hold a parameter of the search space at one value (repeatable; e.g. optimizer=adam), so the "
                   "trials go to the others; the value is read as JSON where it parses.")
@click.option("--set", "held", multiple=True, metavar="NAME=VALUE",
              help="Set a method setting that is not searched for every trial (repeatable; e.g. n_codes=10: "
                   "capacity is not searched, so a search per capacity sets it); the entry's settings include it, "
                   "and it replaces the entry at this budget, so give it its own --out unless runs should use it.")
@click.option("--choose", multiple=True, metavar="NAME=V1,V2,...",
              help="Draw a method setting that the search space does not hold among the values given, in every "
                   "trial (repeatable; e.g. lr_schedule=constant,cosine: the schedule is a choice per method and "
                   "budget, like the rate); the values are read as JSON where they parse (a JSON list too).")
@click.option("--base-profile", type=click.Choice(["quick", "paper"]), default="quick", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Profile file to write (default: gan_inversion_bench/profiles/<generator>.json, or $GIB_PROFILES). "
                   "A new file starts as a copy of the profile runs use now, so that it is a whole profile: a run "
                   "or claim check with GIB_PROFILES=its folder (named <generator>.json) has every method's entry.")
@click.option("--journal", type=click.Path(dir_okay=False), default=None,
              help="SQLite file keeping every finished trial, so that the same command started again after an "
                   "interruption resumes exactly where it stopped (default: beside --out, <name>.journal.sqlite; "
                   "a search's trials leave it once its entry is written). `gib stop JOURNAL` stops the search after "
                   "its trial in flight.")
@click.option("--warm-start", is_flag=True,
              help="Trial 0 is the entry a run at this budget uses now (the tuned profile's, nearest in budget), "
                   "so the search never ends below the settings it replaces on its own objective.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1, ...")
@click.option("--cpu-kernels", type=click.Choice(sorted(KERNEL_ENV)), default=None,
              help="Run torch's CPU kernels of this kind (a CPU with AVX-512 can run AVX2 ones), e.g. to repeat "
                   "an entry whose device names them: the search re-runs in a new process so capped.")
@friendly_errors
def tune_cmd(**o: Any) -> None:
    """Tune each method's open settings on held-out generated images (optuna, successive halving)."""
    from .devices import rerun_with_kernels
    from .harness.stop import EXIT_STOPPED, StopRequested, remove_request, search_lock
    from .profiles import profile_path
    from .tuning import TuneConfig, check_fixed, held_method, tuning_set

    if o["cpu_kernels"]:
        rerun_with_kernels(o["cpu_kernels"], sys.argv[1:])
    tc = TuneConfig(trials=o["trials"], budget=o["budget"], n_images=o["n_images"], image_seed=o["image_seed"],
                    seed=o["seed"], base_profile=o["base_profile"], min_resource=o["min_resource"],
                    pruning=o["pruning"], startup_trials=o["startup_trials"],
                    fixed=parse_assignments(o["fix"], "--fix"), held=parse_assignments(o["held"], "--set"),
                    choices=parse_choices(o["choose"]), images=o["tune_images"])
    G = build_generator(o["generator"], o["weights"], o["gen_opt"], o["device"])
    out = Path(o["out"]).expanduser() if o["out"] else profile_path(o["generator"])
    journal = Path(o["journal"]).expanduser() if o["journal"] else out.with_name(out.stem + ".journal.sqlite")
    _start_as_copy(out, profile_path(o["generator"]))
    names = list(o["methods"]) or default_methods()
    tuning_set(G, tc)  # the tuning images, refused before any search runs for hours
    for name in names:  # every method's held settings and fixed parameters too
        check_fixed(held_method(name, tc), tc.fixed)
    with search_lock(journal, echo=lambda line: click.echo(line, err=True)) as place:
        for i, name in enumerate(names):
            try:
                _tune_one(o, G, name, tc, journal, out)
            except StopRequested as e:
                remove_request(place.request)
                click.echo(f"{e}. {_resume_text(names, i, out)}", err=True)
                sys.exit(EXIT_STOPPED)
            if remove_request(place.request):  # it came during the last trial: this entry is written
                if names[i + 1:]:
                    click.echo(f"Stopped on request ({place.request.name}) after {name}'s entry was written. "
                               f"{_resume_text(names, i + 1, out)}", err=True)
                    sys.exit(EXIT_STOPPED)
                click.echo(f"a stop request ({place.request.name}) came after the last trial; the search had "
                           "finished", err=True)
    click.echo(f"profile: {out}")


def _resume_text(names: list[str], i: int, out: Path) -> str:
    """How to go on after a search stopped in or before method ``names[i]``."""
    if i == 0:
        return "Run the same command again to resume."
    return (f"The entries of {', '.join(names[:i])} are written to {out}; to go on without searching them again, "
            f"run the same command with the methods {' '.join('-m ' + n for n in names[i:])}.")


def _tune_one(o: dict[str, Any], G: Any, name: str, tc: TuneConfig, journal: Path, out: Path) -> None:
    """Search method ``name`` and write its entry into ``out``; Ctrl-C (exit 130) keeps the finished trials in
    ``journal``, and so does a stop request between trials (:class:`StopRequested` raised)."""
    from .profiles import write_entry
    from .tuning import tune

    click.echo(f"{name}: {tc.trials} trials at {tc.budget} iterations on {tc.n_images} tuning images "
               f"({tc.images}) …")
    try:
        entry = tune(G, name, tc, on_trial=lambda line: click.echo(line, err=True), journal=journal,
                     start=_warm_start(o["generator"], name, tc.budget) if o["warm_start"] else None)
    except KeyboardInterrupt:
        click.echo(f"\nInterrupted. Finished trials are kept in {journal}; run the same command again to "
                   "resume.", err=True)
        sys.exit(130)
    entry["provenance"]["command"] = _tune_command(o, name, tc)
    write_entry(out, o["generator"], name, entry)
    _report_entry(name, entry, tc, out)


def _start_as_copy(out: Path, current: Path) -> None:
    """A new ``--out`` file starts as a copy of the profile runs use now (read and checked first), so the
    search replaces one entry of a whole profile instead of writing a profile of one method."""
    from .profiles import read_profile

    if out.exists() or not current.is_file() or out.resolve() == current.resolve():
        return
    data = read_profile(current)
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(current, out)
    click.echo(f"{out}: new, so it starts as a copy of {current} (the profile runs use now: "
               f"{', '.join(sorted(data['methods'])) or 'no entries'}); the search replaces its own entry")


def _tune_command(o: dict[str, Any], name: str, tc: TuneConfig) -> str:
    """The ``gib tune`` command that reproduces method ``name``'s entry (its provenance)."""
    return (f"gib tune -g {o['generator']} -m {name} --trials {tc.trials} --budget {tc.budget} --images {tc.n_images} "
            f"--image-seed {tc.image_seed} --seed {tc.seed} --base-profile {tc.base_profile}"
            + (f" --tune-images {shlex.quote(tc.images)}" if tc.images != "generated" else "")
            + (f" --min-resource {tc.min_resource}" if o["min_resource"] is not None else "")
            + (" --pruning none" if tc.pruning == "none" else "") + (" --warm-start" if o["warm_start"] else "")
            + (f" --startup-trials {tc.startup_trials}" if tc.startup_trials != STARTUP_TRIALS else "")
            + "".join(f" --fix {fix_argument(k, v)}" for k, v in tc.fixed.items())
            + "".join(f" --set {fix_argument(k, v)}" for k, v in tc.held.items())
            + "".join(f" --choose {fix_argument(k, v)}" for k, v in tc.choices.items())
            + (f" --cpu-kernels {o['cpu_kernels']}" if o["cpu_kernels"] else "")
            + "".join(f" --gen-opt {shlex.quote(g)}" for g in o["gen_opt"]))


def _report_entry(name: str, entry: dict[str, Any], tc: TuneConfig, out: Path) -> None:
    """The closing lines of a method's search: its best, and what the reader should know about it."""
    from .profiles import entries, entry_budget, random_search, read_profile
    from .tune_choice import choice_lines

    t = entry["tuning"]
    click.echo(f"{name}: best mean PSNR {t['best_value']:.2f} dB (trial {t['best_trial']}, "
               f"{t['complete_trials']} complete, {t['pruned_trials']} pruned): {entry['settings']}")
    if t["complete_trials"] == 1 and tc.trials > 1:
        stops = sorted({int(x["last_step"]) for x in entry["trials"]
                        if x["state"] == "PRUNED" and x.get("last_step") is not None})
        where = f"at iteration {', '.join(map(str, stops))}" if stops else "early"
        click.echo(f"{name}: warning: only trial {t['best_trial']} ran to the budget; the others were stopped "
                   f"{where} (first rung: {t['min_resource']} iterations), so the settings are that one trial's "
                   f"draw, compared with the others only where they stopped; --pruning none (or a larger "
                   f"--min-resource) compares them at the budget", err=True)
    if random_search(t):
        warm = " besides the warm start's trial 0" if "warm_start" in t else ""
        click.echo(f"{name}: note: TPE models the results only after {tc.startup_trials} trials, so every trial"
                   f"{warm} was an independent random draw: this was a random search of {tc.trials} trials; "
                   f"--startup-trials below --trials makes TPE model the results from that trial on", err=True)
    for line, warning in choice_lines(name, t.get("choice")):
        click.echo(line, err=warning)
    budgets = [entry_budget(e) for e in entries(read_profile(out)["methods"][name])]
    if len(budgets) > 1:
        click.echo(f"{name}: the profile holds entries searched at {', '.join(map(str, budgets))} iterations; a "
                   f"run uses the one nearest its budget (this one for about {tc.budget} iterations)")


def _warm_start(generator: str, method: str, budget: int) -> dict[str, Any]:
    """The entry ``gib tune --warm-start`` starts from: the one a run of ``budget`` iterations uses now."""
    from .profiles import ProfileError, entry_budget, settings_text, tuned_entry

    try:
        entry = tuned_entry(generator, method, budget)
    except ProfileError as e:
        raise click.UsageError(f"--warm-start: nothing to start from ({e}); drop --warm-start") from None
    click.echo(f"{method}: warm start: trial 0 is the entry searched at {entry_budget(entry)} iterations "
               f"({settings_text(entry['settings'])})")
    return entry
