"""Running a configuration into a run folder: lock, session, generator and images, then every
method batch by batch, each finished result stored the moment it is complete.

Several processes (``torchrun``): see :mod:`gan_inversion_bench.distributed`; rank 0 alone holds
the lock and the database, the other ranks invert their share and send their records to it.
Work proceeds in rounds: each rank inverts its next batch, rank 0 stores what every rank
finished (in one process: its own batch), then all ranks learn whether to go on.
"""
from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
import socket
import sqlite3
import sys
from pathlib import Path
from typing import Any

import torch

from .. import distributed
from ..generator import SplitGenerator
from ..imagesets import ImageItem, ImageSet, load_image_set
from ..method import InversionMethod
from ..metrics import CONVENTIONS
from ..precision import ExecutionOptions, precision_note
from ..registry import GENERATORS
from ..safe_paths import remove_tree
from ..store import ResultStore, meta_value, method_key
from ..tasks import activated
from .config import (
    RunConfig,
    RunError,
    build_method,
    content_identity,
    execution_options,
    profile_text,
    tuned_on,
    validate,
)
from .context import Echo, RunContext, RunSetup
from .costs import (
    BudgetTooSmall,
    check_memory,
    cpu_batch_size,
    derive_budget,
    measure_latency,
    record_prepare,
    timed_prepare,
)
from .folder import (
    check_writable,
    fault_point,
    remove_stale_temp_files,
    reset_fault_counts,
    run_lock,
    save_targets,
    trace_commits,
    writing_into,
)
from .invert import invert_batch, store_rows
from .observe import observe, save_observations
from .provenance import code_revision, device_name, library_versions, resolve_device
from .records import MethodPlan, Provenance, resolved_split
from .resume import continued_key
from .stop import STOP_FILE, StopRequested, clear_stop, stop_requested
from .timing import automatic_batch_size, count_invert_flops, is_out_of_memory, smaller_batch, warm_up


def run(config: RunConfig, out: str | Path, *, echo: Echo = print, progress: bool = True,
        argv: list[str] | None = None) -> Path:
    """Run (or resume) a benchmark into the folder ``out``; returns the folder.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) every process calls this; the images are shared out
    over the processes and rank 0 stores every record (:mod:`gan_inversion_bench.distributed`).
    """
    run_dir = Path(out).expanduser()
    try:
        dist = distributed.from_env()
    except ValueError as e:
        raise RunError(str(e)) from None
    if not dist.enabled:
        return _run_main(RunContext(config, run_dir, resolve_device(config.device), dist, echo, progress), argv)
    if config.budget_seconds is not None or config.budget_flops is not None:
        raise RunError("--budget-seconds/--budget-flops are not supported under torchrun yet (each rank would "
                       "calibrate its own iteration count); run them in one process")
    try:
        device = distributed.device_for(dist, config.device)
    except ValueError as e:
        raise RunError(str(e)) from None
    distributed.init(dist, device)
    try:
        rc = RunContext(config, run_dir, device, dist, echo if dist.is_main else (lambda s: None), progress)
        if dist.is_main:
            return _run_main(rc, argv)
        refused = dist.broadcast(None)  # rank 0 says whether the run started
        if refused:
            raise RunError(refused)
        rc.progress = False
        _run_inner(rc, validate(config))
        return run_dir
    finally:
        distributed.shutdown(dist)


def _run_main(rc: RunContext, argv: list[str] | None) -> Path:
    """The single process, or rank 0: lock, database, session, then the work."""
    started, fresh = False, not rc.run_dir.exists()
    try:
        names = validate(rc.config)  # before anything is created on disk
        check_writable(rc.run_dir)
        with run_lock(rc.run_dir), ResultStore(rc.run_dir) as store:
            rc.store = store
            _open_session(rc, store, argv)
            rc.dist.broadcast(None)  # the other ranks may start
            started = True
            _run_session(rc, store, names)
    except Exception as e:
        if rc.dist.enabled and not started:
            rc.dist.broadcast(f"rank 0 could not start the run: {e}")
        if fresh:
            _remove_if_empty(rc.run_dir)
        raise
    return rc.run_dir


def _remove_if_empty(run_dir: Path) -> None:
    """A run folder this command created and that holds no result yet goes again on failure (a
    wrong checkpoint path, an impossible setting), so a failed command leaves nothing behind."""
    db = run_dir / ResultStore.FILENAME
    if db.is_file() and not db.is_symlink():
        try:
            with ResultStore(run_dir, create=False) as store:
                if store.results():
                    return
        except Exception:  # noqa: BLE001 - unreadable: keep it, never delete what we cannot inspect
            return
    shutil.rmtree(run_dir, ignore_errors=True)


def _open_session(rc: RunContext, store: ResultStore, argv: list[str] | None) -> None:
    _check_identity(rc.config, rc.run_dir, store, rc.echo)
    reset_fault_counts()
    _clean_up_after_killed_runs(rc.run_dir, store, rc.echo)
    with writing_into(rc.run_dir):
        store.set_meta("identity", rc.config.identity())
        rc.session = store.start_session(argv or sys.argv, socket.gethostname(), os.getpid())
    fault_point("session_start")
    trace_commits(store)


def _run_session(rc: RunContext, store: ResultStore, names: list[str]) -> None:
    status = "failed"
    try:
        _run_inner(rc, names)
        status = "finished"
        if clear_stop(rc.run_dir):  # e.g. during the latency measurement that follows the last batch
            rc.echo(f"a stop request ({STOP_FILE}) came after the last batch was stored; the run had finished")
    except KeyboardInterrupt:
        status = "interrupted"
        rc.echo(f"\nInterrupted. Finished results are kept in {rc.run_dir / ResultStore.FILENAME}; "
                f"run the same command again to resume.")
        raise
    except StopRequested:
        status = "stopped"
        clear_stop(rc.run_dir)
        raise StopRequested(f"Stopped on request ({STOP_FILE}) after a stored batch: every finished result is in "
                            f"{rc.run_dir / ResultStore.FILENAME}; run the same command again to resume.") from None
    finally:
        with contextlib.suppress(sqlite3.Error):  # e.g. a full disk: keep the original error
            store.finish_session(rc.session, status)


def _check_identity(config: RunConfig, run_dir: Path, store: ResultStore, echo: Echo) -> None:
    """Resuming needs the same identity; a folder without any result (e.g. a run that failed on a bad
    checkpoint path) starts again with the new one, dropping the targets it saved."""
    stored = meta_value(store, "identity", dict)
    if stored is None or stored == json.loads(json.dumps(config.identity(), sort_keys=True, default=str)):
        return
    if store.conn.execute("SELECT 1 FROM results LIMIT 1").fetchone() is None:
        for sub in ("targets", "recon"):
            remove_tree(run_dir / sub)  # a symlink there is refused, never deleted through
        with writing_into(run_dir):
            store.conn.execute("DELETE FROM meta WHERE key = 'content'")  # the new inputs' hashes come next
        echo(f"run folder {run_dir} holds no results yet; starting it with the new configuration")
        return
    raise RunError(f"run folder {run_dir} was made with a different configuration:\n  stored: {stored}\n"
                   f"  now:    {config.identity()}\nuse another --out folder for a new configuration")


def _check_content(rc: RunContext, generator: SplitGenerator, images: ImageSet, device: str) -> None:
    """Resuming also needs the same inputs by content (:func:`~.config.content_identity`): a changed weight or
    target image is refused, naming it, and so is a stored ``content`` of other JSON types. A folder made before
    the hashes were stored gets them now; one without results starts again with the new inputs; new ids are added."""
    assert rc.store is not None
    now = content_identity(rc.config, generator, images)
    stored = meta_value(rc.store, "content", {"weights_file": dict, "images": dict}) or {}
    changes = _content_changes(stored, now)
    has_results = rc.store.conn.execute("SELECT 1 FROM results LIMIT 1").fetchone() is not None
    if changes and has_results:
        raise RunError(f"run folder {rc.run_dir} was made from different inputs than this run's: "
                       f"{'; '.join(changes)}. Its results would mix different work, so nothing was run; use "
                       f"another --out folder for the new inputs (or restore the original ones to resume)")
    if changes:
        for sub in ("targets", "recon"):
            remove_tree(rc.run_dir / sub)
        rc.echo(f"run folder {rc.run_dir} holds no results yet; starting it with the new inputs")
        stored = {}
    with writing_into(rc.run_dir):
        rc.store.set_meta("content", {**now, "images": {**(stored.get("images") or {}), **now["images"]}})
    devices = sorted(r[0] for r in rc.store.conn.execute("SELECT DISTINCT device FROM results") if r[0])
    if devices and device not in devices:
        rc.echo(f"note: this run folder holds results timed on {'; '.join(devices)}; times on {device} are "
                f"reported apart in the tables (not averaged with the others)")


def _content_changes(stored: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """What differs between the stored content hashes and the current ones (absent ones: nothing)."""
    changes = []
    old, new = stored.get("generator_state"), now["generator_state"]
    if old and old != new:
        changes.append(f"the generator's weights (sha256 of its state_dict {str(old)[:12]}…, now {new[:12]}…)")
    old_file, new_file = stored.get("weights_file") or {}, now["weights_file"] or {}
    if old_file.get("sha256") and new_file.get("sha256") and old_file["sha256"] != new_file["sha256"]:
        changes.append(f"the weights file {new_file['path']} (sha256 {str(old_file['sha256'])[:12]}…, now "
                       f"{new_file['sha256'][:12]}…)")
    old_images = stored.get("images") or {}
    changed = sorted(i for i, h in now["images"].items() if old_images.get(i) not in (None, h))
    if changed:
        listed = ", ".join(changed[:10]) + (f" and {len(changed) - 10} more" if len(changed) > 10 else "")
        changes.append(f"target image(s) {listed} (their content differs from the images inverted before)")
    return changes


def _clean_up_after_killed_runs(run_dir: Path, store: ResultStore, echo: Echo) -> None:
    """Under the lock nobody else is writing: stale temp files go, ``running`` sessions were killed."""
    stale = remove_stale_temp_files(run_dir)
    if stale:
        echo(f"removed {len(stale)} temporary file(s) left by an earlier run that was killed")
    with writing_into(run_dir):
        store.conn.execute("UPDATE sessions SET status = 'abandoned' WHERE status = 'running'")
    if clear_stop(run_dir):
        echo(f"removed a stop request ({run_dir / STOP_FILE}) left after its run had ended")


def _run_inner(rc: RunContext, names: list[str]) -> None:
    setup = _set_up(rc)
    too_small: list[str] = []
    with activated(setup.task.active):  # every ReconstructionLoss built inside compares D(G(·)) with y
        for name in _supported(rc, setup.generator, names):
            try:
                _run_method(rc, setup, name)
            except BudgetTooSmall as e:  # the other methods still run; the command fails at the end
                rc.echo(f"{name}: not run: {e}")
                too_small.append(str(e))
    if too_small:
        raise RunError("the compute budget is too small for " + "; ".join(too_small) +
                       ". The other methods' results are stored; rerun with a larger budget (or without these "
                       "methods) into the same folder to resume")


def _supported(rc: RunContext, generator: SplitGenerator, names: list[str]) -> list[str]:
    """The methods that can run on ``generator``: one the user named that cannot is refused, one
    included by default (every registered method) is skipped with its reason."""
    out = []
    for name in names:
        method = build_method(name, rc.config)
        reason = method.unsupported(generator)
        if reason is None and rc.config.task != "reconstruct" and not method.get_tags().supports_tasks:
            reason = (f"it does not compare through the loss that carries a task's degradation operator, so it "
                      f"cannot run the {rc.config.task!r} task (tag supports_tasks=False)")
        if reason is None:
            out.append(name)
        elif rc.config.methods:
            raise RunError(f"method {name!r} cannot run on generator {rc.config.generator!r}: {reason}")
        else:
            rc.echo(f"{name}: skipped on {rc.config.generator}: {reason}")
    if not out:
        raise RunError(f"none of the methods can run on generator {rc.config.generator!r}")
    return out


def _build_generator(config: RunConfig, device: torch.device) -> SplitGenerator:
    """The run's generator on ``device``; running out of memory while building it (options such as
    a huge ``resolution``) is a :class:`RunError` naming the options, not a traceback."""
    try:
        generator: SplitGenerator = GENERATORS.create(config.generator, **config.generator_options)
        return generator.to(device).eval()
    except (RuntimeError, MemoryError) as e:
        if not is_out_of_memory(e):
            raise
        first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise RunError(f"building generator {config.generator} with options {config.generator_options} ran out of "
                       f"memory on {device} ({first_line[:200]}); choose smaller options (e.g. a lower "
                       f"resolution)") from None


def _set_up(rc: RunContext) -> RunSetup:
    """The generator (named by the registry), the execution options, the images and the provenance."""
    config = rc.config
    generator = _build_generator(config, rc.device)
    options = execution_options(config, rc.device)
    if options.channels_last:
        generator = generator.to(memory_format=torch.channels_last)
    note = precision_note(config.precision, rc.device)
    if note:
        rc.echo(f"note: {note}")
    images = load_image_set(config.images, generator, n=config.n_generated, seed=config.seed)
    for f, reason in images.skipped:
        rc.echo(f"skipped {f}: {reason}")
    if rc.dist.is_main and rc.store is not None:
        _check_content(rc, generator, images, device_name(rc.device))
        with writing_into(rc.run_dir):
            save_targets(images, rc.run_dir)
            rc.store.set_meta("image_set", images.describe())
            rc.store.set_meta("generator", generator.describe())
    task = config.make_task()
    observed = observe(task, images, config.seed)
    if rc.dist.is_main and rc.store is not None:
        with writing_into(rc.run_dir):
            save_observations(observed, images, rc.run_dir)
    prov = Provenance(generator=generator.describe(), device=device_name(rc.device), versions=library_versions(),
                      code_revision=code_revision(), metric_conventions=CONVENTIONS, image_set=images.spec,
                      session=rc.session, task=None if observed.active is None else task.describe())
    return RunSetup(generator, images, options, prov, observed)


# ---- one method ------------------------------------------------------------------------------------
def _run_method(rc: RunContext, setup: RunSetup, name: str) -> None:
    """Invert every pending image with one method, batch by batch, halving the batch on out-of-memory."""
    plan = _plan(rc, setup, name)
    mine, n_pending = _pending(rc, setup, plan)
    how = "" if plan.options.is_default() else f", {plan.options.describe()}"
    how += ", reference execution" if plan.per_image else ""
    how += f", {rc.dist.world_size} processes" if rc.dist.enabled else ""
    rc.echo(f"{name}: {len(setup.images.items) - n_pending} done, {n_pending} to invert "
            f"({profile_text(name, rc.config)}, device {setup.prov.device}{how})")
    _note_tuned_on(rc, setup, name)
    batch_size = _prepare_timing(rc, setup, plan, mine) if mine else 1
    _invert_rounds(rc, setup, plan, mine, batch_size)
    if rc.dist.is_main and not rc.dist.enabled and not plan.per_image:
        with writing_into(rc.run_dir):
            measure_latency(rc, setup, plan, setup.prov.device)


def _note_tuned_on(rc: RunContext, setup: RunSetup, name: str) -> None:
    """Warns, and records in the meta data ``tuned_on``, where the tuned entry a method runs with was tuned
    on images this run evaluates (:func:`~.config.tuned_on`)."""
    seen = tuned_on(name, rc.config, setup.images)
    if not seen:
        return
    rc.echo(f"{name}: warning: its tuned entry was tuned on {len(seen)} of the images this run evaluates "
            f"({', '.join(seen[:4])}{' …' if len(seen) > 4 else ''}): its numbers on them are not held-out "
            "(the run folder's meta data 'tuned_on' lists them)")
    if rc.dist.is_main and rc.store is not None:
        with writing_into(rc.run_dir):
            rc.store.set_meta("tuned_on", {**(meta_value(rc.store, "tuned_on", dict) or {}), name: seen})


def _plan(rc: RunContext, setup: RunSetup, name: str) -> MethodPlan:
    method, prepare_s = _prepared_method(rc, setup.generator, name)
    per_image = method.get_tags().per_image_execution
    options = setup.options
    if per_image and not options.is_default():
        rc.echo(f"{name}: reference execution runs in fp32, uncompiled (the seeds' pattern); ignoring "
                f"{options.describe()}")
        options = ExecutionOptions()
    if per_image and rc.config.batch_size not in (None, 1):
        rc.echo(f"{name}: reference execution inverts one image at a time (batch size 1)")
    if rc.dist.is_main and rc.store is not None:
        key, note = continued_key(rc.store, method, lambda p: run_method_key(method, rc.config, options, p),
                                  rc.run_dir)
        if note:
            rc.echo(note)
    else:  # the other ranks take rank 0's key (_pending)
        key = run_method_key(method, rc.config, options)
    plan = MethodPlan(method, key, options, resolved_split(method, setup.generator), per_image=per_image)
    if rc.dist.is_main:
        with writing_into(rc.run_dir):
            record_prepare(rc, plan, prepare_s, setup.prov.device)
    return plan


def run_method_key(method: InversionMethod, config: RunConfig, options: ExecutionOptions,
                   prepared: dict[str, Any] | None = None) -> str:
    """The key under which a method's results are stored (with ``prepared`` in place of the method's
    prepared state where given). Settings a method added after results were first stored are left out
    while at the defaults it declares (``KEY_OMITS_DEFAULTS``), so are settings without effect under the
    others (``unused_settings``), and so are the default execution options (fp32, no compile), so old run
    folders resume without recomputation."""
    omit, unused = method.KEY_OMITS_DEFAULTS, method.unused_settings()
    settings = {k: v for k, v in method.get_settings().items() if not (k in omit and omit[k] == v) and k not in unused}
    extra = {"prepared": method.prepared_state() if prepared is None else prepared, "profile": config.profile,
             **options.non_defaults()}
    if config.restarts > 1:
        extra["restarts"] = config.restarts
    if config.task != "reconstruct":  # reconstruct keeps the keys it had before tasks existed
        task = config.make_task()
        extra["task"] = {"name": task.name, "settings": task.settings()}
    for name in ("budget_seconds", "budget_flops"):  # the derived iteration count is not the key
        if getattr(config, name) is not None:
            extra[name] = getattr(config, name)
    return method_key(method.name, method.version, settings, extra)


def _prepared_method(rc: RunContext, generator: SplitGenerator, name: str) -> tuple[InversionMethod, float]:
    """Build and prepare a method (and time its preparation); with several ranks, rank 0 prepares
    and sends it to the others."""
    method = build_method(name, rc.config)
    seconds = timed_prepare(method, generator, rc) if rc.dist.is_main else 0.0
    if not rc.dist.enabled:
        return method, seconds
    shipped = rc.dist.broadcast(_with_tensors_on(method, torch.device("cpu")) if rc.dist.is_main else None)
    return (method if rc.dist.is_main else _with_tensors_on(shipped, rc.device)), seconds


def _with_tensors_on(method: InversionMethod, device: torch.device) -> InversionMethod:
    """A shallow copy whose tensor attributes (learned state such as PmSFC's masks) are on ``device``."""
    out = copy.copy(method)
    for k, v in vars(method).items():
        if isinstance(v, torch.Tensor):
            setattr(out, k, v.to(device))
    return out


def _pending(rc: RunContext, setup: RunSetup, plan: MethodPlan) -> tuple[list[ImageItem], int]:
    """This rank's share of the images the database does not hold yet, and how many are pending in all."""
    key, done_list = rc.dist.broadcast(
        (plan.key, sorted(rc.store.done_images(plan.key))) if rc.dist.is_main and rc.store else None)
    plan.key, done = key, set(done_list)
    pending = [it for it in setup.images.items if it.id not in done]
    return rc.dist.shard(pending), len(pending)


def _prepare_timing(rc: RunContext, setup: RunSetup, plan: MethodPlan, mine: list[ImageItem]) -> int:
    """Count FLOPs (which also warms up), choose the batch size (images; each brings ``restarts``
    rows) and warm up at the timed batch shape."""
    G, options, k = setup.generator, plan.options, rc.config.restarts
    check_memory(plan, G, 1, rc.device, restarts=k)  # one image with its restarts must fit, before any allocation
    plan.flops = count_invert_flops(plan.method, G, mine[:1], rc.device, options)
    if plan.per_image:
        plan.budget_info = derive_budget(rc, setup, plan, mine[:1])
        return 1
    bs = rc.config.batch_size or _stored_batch(rc, setup, plan) or cpu_batch_size(rc, setup, plan, mine, max(
        1, automatic_batch_size(plan.method, G, mine, rc.device, options, rc.echo) // k))
    plan.budget_info = derive_budget(rc, setup, plan, [it for it in mine[:bs] for _ in range(k)])
    if options.compile != "off" or (rc.device.type == "cuda" and bs > 1):
        # compile, and on CUDA select kernels and grow the allocator, for the timed batch shape
        rows = [it for it in mine[:bs] for _ in range(k)]
        warm_up(plan.method, G, rows, rc.device, options, iterations=2 if options.compile != "off" else 1)
    return bs


def _stored_batch(rc: RunContext, setup: RunSetup, plan: MethodPlan) -> int | None:
    """On resume, the batch size the configuration's stored rows ran at on this device. The automatic CPU
    choice times an iteration, so it depends on the load when it is estimated; a resume that estimated
    again could run at another size, whose times the tables then keep apart (``not averaged``) and whose
    batch shape may round differently. So a resume keeps the size (``--batch-size`` sets another)."""
    size = rc.dist.broadcast(rc.store.batch_size(plan.key, setup.prov.device) if rc.dist.is_main and rc.store
                             else None)
    if size:
        rc.echo(f"{plan.method.name}: batch of {size} image(s), the size its stored results ran at "
                f"(--batch-size sets another)")
    return size


def _invert_rounds(rc: RunContext, setup: RunSetup, plan: MethodPlan, mine: list[ImageItem], bs: int) -> None:
    requested = bs
    while True:
        batch = mine[:bs]
        payload: dict[str, Any] = {"rows": [], "error": None, "done": not batch}
        if batch:
            fault_point("batch_start")
            note = f"batch size reduced from {requested} to {bs} after running out of memory" if bs < requested else ""
            try:
                payload["rows"] = invert_batch(rc, setup, plan, batch, note)
                mine = mine[len(batch):]
            except (RuntimeError, MemoryError) as e:
                try:
                    if not is_out_of_memory(e):
                        raise
                    bs = smaller_batch(e, len(batch), plan.method.name, rc.device, rc.echo)
                except Exception as e2:
                    if not rc.dist.enabled:
                        raise
                    payload["error"] = f"{type(e2).__name__}: {e2}"
        gathered = rc.dist.gather(payload)  # every rank takes part; rank 0 receives
        verdict = rc.dist.broadcast(_store_round(rc, gathered) if rc.dist.is_main else None)
        if verdict["error"]:
            raise RunError(verdict["error"])
        if verdict["requested"]:
            raise StopRequested
        if verdict["stop"]:
            return


def _store_round(rc: RunContext, payloads: list[dict[str, Any]] | None) -> dict[str, Any]:
    """Rank 0: write the PNGs and rows every rank finished in this round; say whether to go on (not when every
    rank is done, nor after a stop request: :mod:`.stop`)."""
    payloads = payloads or []
    errors = [f"rank {r}: {p['error']}" for r, p in enumerate(payloads) if p["error"]]
    try:
        for p in payloads:
            if p["rows"]:
                for row in p["rows"]:
                    row["session"] = rc.session  # rank 0's session (the other ranks have none)
                assert rc.store is not None
                store_rows(p["rows"], rc.store, rc.run_dir)
    except Exception as e:
        if not rc.dist.enabled:
            raise
        errors.append(f"rank 0: {e}")
    if errors and rc.dist.enabled:
        errors.append("finished results are kept; run the same command again to resume")
    done = all(p["done"] for p in payloads)
    return {"error": "; ".join(errors) or None, "stop": done, "requested": not done and stop_requested(rc.run_dir)}
