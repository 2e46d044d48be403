"""Restoration tasks: each operator against an independent computation (PIL, the formula), masks
and noise reproducible by seed, the operator reaching the loss, the harness scoring against the
clean target, reconstruct unchanged, and the bad paths."""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from gan_inversion_bench.cli import main
from gan_inversion_bench.harness import RunConfig, RunError, run
from gan_inversion_bench.losses import ReconstructionLoss
from gan_inversion_bench.metrics import psnr, region_metrics
from gan_inversion_bench.tasks import (
    ActiveTask,
    Colourise,
    Denoise,
    Inpaint,
    Reconstruct,
    SuperResolve,
    TaskError,
    activated,
    downsample,
    luma,
    make_task,
)

RNG = np.random.default_rng(0)
PIXELS = RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)


def as_tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(a)).permute(2, 0, 1)[None].float()


# ---- operators against independent computations -------------------------------------------------------
@pytest.mark.parametrize("factor", [4, 8])
def test_downsampler_matches_pil_bilinear_reduction(factor):
    pil = np.asarray(Image.fromarray(PIXELS).resize((64 // factor,) * 2, Image.BILINEAR)).astype(float)
    ours = downsample(as_tensor(PIXELS), factor)[0].permute(1, 2, 0).numpy()
    assert ours.shape == pil.shape
    assert np.abs(pil - ours).max() <= 1.0  # PIL rounds to 8 bits


def test_luma_is_bt601_and_matches_pil():
    x = as_tensor(PIXELS)
    by_hand = 0.299 * PIXELS[..., 0] + 0.587 * PIXELS[..., 1] + 0.114 * PIXELS[..., 2]
    assert np.allclose(luma(x)[0, 0].numpy(), by_hand, atol=1e-3)
    pil = np.asarray(Image.fromarray(PIXELS).convert("L")).astype(float)  # ITU-R 601-2 luma, rounded
    assert np.abs(pil - by_hand).max() <= 0.5 + 1e-6
    y = Colourise().observe(x[0] / 127.5 - 1, {})
    assert torch.equal(y[0], y[1]) and torch.equal(y[1], y[2])


def test_super_resolution_compares_like_the_small_image():
    """MSE at full size after nearest upsampling equals the MSE of the small images."""
    task = SuperResolve(factor=4)
    x, g = torch.rand(2, 3, 64, 64) * 2 - 1, torch.rand(2, 3, 64, 64) * 2 - 1
    full = (task.apply(g, {}) - task.apply(x, {})).pow(2).mean()
    small = (downsample(g, 4) - downsample(x, 4)).pow(2).mean()
    assert torch.allclose(full, small, rtol=1e-5)
    assert task.shown(task.observe(x[0], {})).shape == (3, 16, 16)
    assert torch.allclose(task.shown(task.observe(x[0], {})), downsample(x[:1], 4)[0])


@pytest.mark.parametrize("mask", ["centre", "boxes", "strokes"])
def test_masks_are_reproducible_by_seed_and_hide_the_ratio(mask):
    task = Inpaint(mask=mask, ratio=0.3)
    clean = torch.zeros(3, 64, 64)
    a, b, c = (task.params(clean, s)["mask"] for s in (5, 5, 6))
    assert torch.equal(a, b)
    assert mask == "centre" or not torch.equal(a, c)
    hidden = 1 - a.mean().item()
    assert 0.27 <= hidden <= 0.45, hidden
    assert set(a.unique().tolist()) <= {0.0, 1.0}


def test_denoise_noise_is_seeded_with_the_stated_sigma():
    task = Denoise(sigma=0.05)
    clean = torch.zeros(3, 64, 64)
    n1, n2 = task.params(clean, 1)["noise"], task.params(clean, 1)["noise"]
    assert torch.equal(n1, n2) and not torch.equal(n1, task.params(clean, 2)["noise"])
    y = task.observe(clean, task.params(clean, 1))
    assert abs(y.std().item() - 0.1) < 0.01  # 2σ on [-1, 1] (nothing clipped at 0 ± 0.1)
    assert task.apply(clean[None], {}).equal(clean[None])  # D = identity inside the loss


def test_region_metrics_by_hand():
    rec, tgt = torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 4)
    rec[..., 0, 0] = 1.0  # one pixel off by 0.5 on [0, 1] in every channel
    region = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    region[..., :2, :2] = True  # 4 pixels
    out = region_metrics(rec, tgt, region)
    assert out["mse_hole"].item() == pytest.approx(0.25 / 4)
    assert out["psnr_hole"].item() == pytest.approx(10 * np.log10(16.0))


# ---- the operator inside the loss ---------------------------------------------------------------------
def active_for(task, clean: torch.Tensor) -> tuple[ActiveTask, torch.Tensor]:
    active, ys = ActiveTask(task, {}), []
    for i, x in enumerate(clean):
        p = task.params(x, 100 + i)
        ys.append(task.observe(x, p))
        active.add(ys[-1], p)
    return active, torch.stack(ys)


def test_the_loss_compares_the_degraded_image_with_the_observation():
    clean, g = torch.rand(2, 3, 16, 16) * 2 - 1, torch.rand(2, 3, 16, 16) * 2 - 1
    task = Inpaint(mask="boxes", ratio=0.4)
    active, y = active_for(task, clean)
    with activated(active):
        loss = ReconstructionLoss(y, perceptual_weight=0.0)
        rows = ReconstructionLoss(y.repeat_interleave(3, 0), perceptual_weight=0.0)  # restarts / candidates
    masks = [task.params(x, 100 + i)["mask"] for i, x in enumerate(clean)]
    by_hand = torch.stack([((g[i] * masks[i] - clean[i] * masks[i]) ** 2).mean() for i in range(2)])
    assert torch.allclose(loss(g), by_hand, atol=1e-6)
    assert torch.allclose(rows(g.repeat_interleave(3, 0)), by_hand.repeat_interleave(3), atol=1e-6)
    assert torch.allclose(loss(g.flip(0)[[1, 0]]), by_hand)
    swapped = ReconstructionLoss(y.flip(0), perceptual_weight=0.0)  # outside the task: plain MSE
    assert torch.allclose(swapped(g.flip(0)), (g.flip(0) - y.flip(0)).pow(2).flatten(1).mean(1))
    with activated(active), pytest.raises(TaskError, match="not an observation of the active task"):
        ReconstructionLoss(clean, perceptual_weight=0.0)


def test_reconstruct_installs_no_operator():
    y = torch.rand(2, 3, 8, 8)
    with activated(ActiveTask(Reconstruct(), {})):
        assert ReconstructionLoss(y, perceptual_weight=0.0).degrade is None


# ---- settings -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "settings", "message"), [
    ("inpaint", {"ratio": 1.5}, "ratio"), ("inpaint", {"mask": "circle"}, "mask must be one of centre"),
    ("super-resolve", {"factor": 3}, "factor must be 2, 4 or 8"), ("denoise", {"sigma": -1}, "sigma"),
    ("deblur", {}, "unknown task 'deblur'; valid tasks: reconstruct"), ("colourise", {"ratio": 0.2}, "no setting"),
])
def test_impossible_task_settings_are_refused(name, settings, message):
    with pytest.raises(TaskError, match=message):
        make_task(name, settings)


def test_cli_refuses_an_unknown_task_setting(tmp_path):
    r = CliRunner().invoke(main, ["run", "-g", "pggan-tiny", "-m", "single-code", "--images", "generated", "--n", "1",
                                  "--task", "inpaint", "--set", "task.radius=3", "--out", str(tmp_path / "o")])
    assert r.exit_code != 0 and "task 'inpaint' has no setting 'radius'" in r.output and "mask, ratio" in r.output
    assert not (tmp_path / "o").exists()


# ---- through the harness ------------------------------------------------------------------------------
def config(**kw) -> RunConfig:
    base = dict(generator="pggan-tiny", methods=["single-code"], images="generated", n_generated=2, device="cpu",
                budget=3, latency=False, overrides={"single-code": {"perceptual_weight": 0.0}})
    return RunConfig(**{**base, **kw})


def records(out) -> list[dict]:
    conn = sqlite3.connect(out / "results.sqlite")
    conn.row_factory = sqlite3.Row
    return [dict(r) for r in conn.execute("SELECT * FROM results ORDER BY method_key, image_id")]


PRE_TASKS = json.loads((Path(__file__).parent / "data" / "pre-tasks" / "records.json").read_text())


@pytest.mark.parametrize("case", sorted(PRE_TASKS["cases"]))
def test_reconstruct_task_reproduces_the_numbers_from_before_tasks(tmp_path, case):
    """task='reconstruct' gives the records the code before restoration tasks gave (a72431c, pinned in
    tests/data/pre-tasks): same method keys, same per-image loss and metrics, no task stored."""
    want = PRE_TASKS["cases"][case]
    run(RunConfig(**PRE_TASKS["common"], **want["config"], task="reconstruct"), tmp_path / "o",
        progress=False, echo=lambda s: None)
    got = records(tmp_path / "o")
    def keys(rows):
        return [(r["method_key"], r["image_id"]) for r in rows]

    assert keys(got) == keys(want["records"])
    for g, w in zip(got, want["records"], strict=True):
        assert json.loads(g["task"] or "null") is None
        for col in ("final_loss", "psnr", "mse", "ssim", "lpips"):
            assert g[col] == pytest.approx(w[col], rel=1e-5, abs=1e-7), (case, g["image_id"], col)


def test_inpainting_run_scores_against_the_clean_target(tmp_path):
    out = tmp_path / "o"
    run(config(task="inpaint", task_settings={"ratio": 0.3}), out, progress=False, echo=lambda s: None)
    rows = records(out)
    assert len(rows) == 2 and all(r["status"] == "ok" and r["psnr_hole"] is not None for r in rows)
    task = json.loads(rows[0]["task"])
    assert task["name"] == "inpaint" and task["settings"] == {"mask": "centre", "ratio": 0.3}
    for r in rows:
        recon = as_tensor(np.asarray(Image.open(out / r["recon_path"]))) / 127.5 - 1
        clean = as_tensor(np.asarray(Image.open(out / "targets" / f"{r['image_id']}.png"))) / 127.5 - 1
        observed = as_tensor(np.asarray(Image.open(next((out / "observations").glob(f"*/{r['image_id']}.png")))))
        observed = observed / 127.5 - 1
        assert r["psnr"] == pytest.approx(psnr(recon, clean).item(), abs=0.05)  # PNGs are 8-bit
        assert abs(psnr(recon, observed).item() - r["psnr"]) > 0.1  # not scored against the observation
    # another task into the same folder: its own rows, grouped by task in the table
    run(config(task="colourise"), out, progress=False, echo=lambda s: None)
    assert len(records(out)) == 4
    table = CliRunner().invoke(main, ["table", str(out)]).output
    assert "| inpaint (mask=centre, ratio=0.3) | single-code |" in table and "| colourise " in table
    assert "PSNR hole (dB)" in table and "compare the restoration G(·) with the clean target x" in table


def test_an_encoder_like_method_is_skipped_or_refused_under_a_task(tmp_path, monkeypatch):
    from dataclasses import replace

    from gan_inversion_bench.methods.single_code import SingleCode

    monkeypatch.setattr(SingleCode, "tags", replace(SingleCode.tags, supports_tasks=False))
    with pytest.raises(RunError, match="supports_tasks=False"):
        run(config(task="denoise"), tmp_path / "o", progress=False, echo=lambda s: None)
    assert not (tmp_path / "o").exists()
