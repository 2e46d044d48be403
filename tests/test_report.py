"""`gib report`: a self-contained static HTML report, checked as files and in headless Chromium.

The browser test needs Debian's ``chromium`` (``apt-get install -y chromium chromium-driver``) and
is skipped with that reason otherwise. Its screenshot is kept: the test prints the path
(``$GIB_TEST_ARTIFACTS`` if set, else pytest's temporary folder).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from gan_inversion_bench.cli import main
from gan_inversion_bench.harness import RunConfig, run
from gan_inversion_bench.methods import single_code
from gan_inversion_bench.report import write_report
from gan_inversion_bench.store import ResultStore


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """generated (2) + photos (8), two settings of single-code, one failed image, two extra figures."""
    out = tmp_path_factory.mktemp("report") / "run"
    real = single_code.optimise

    def nan_for_first_row_of_first_call(params, per_image_loss, **kw):
        if kw.get("iterations") == 1:  # the harness's untimed warm-up
            return real(params, per_image_loss, **kw)
        first = not calls
        calls.append(1)
        if not first:
            return real(params, per_image_loss, **kw)
        return real(params, lambda: torch.where(torch.arange(len(params[0])) == 0, torch.nan, per_image_loss()), **kw)

    calls: list[int] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(single_code, "optimise", nan_for_first_row_of_first_call)
        for iterations in (2, 5):
            run(RunConfig(generator="pggan-tiny", methods=["single-code"], images="generated+photos", n_generated=2,
                          overrides={"*": {"iterations": iterations}}, device="cpu", batch_size=10),
                out, progress=False, echo=lambda s: None)
    for rel, size in (("discover/pmsfc_subspace_swap.png", (300, 120)), ("cache/pmsfc/permuted_S.png", (160, 160))):
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((np.random.default_rng(0).random((size[1], size[0], 3)) * 255).astype(np.uint8)).save(out / rel)
    return out


@pytest.fixture(scope="module")
def report(run_dir) -> Path:
    return write_report(run_dir)


class Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links: list[tuple[str, str]] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.links += [(tag, v) for k, v in attrs if k in ("src", "href") and v]


def test_report_is_self_contained(report):
    assert report == report.parent / "index.html" and report.parent.name == "report"
    parser = Links()
    parser.feed(report.read_text(encoding="utf-8"))
    assert "script" not in parser.tags and "link" not in parser.tags and "iframe" not in parser.tags
    images = [v for t, v in parser.links if t == "img"]
    assert len(images) >= 2 * 10 + 10  # recon per (setting, image) minus the failure, targets, plots, figures
    for tag, link in parser.links:
        if link.startswith("#"):
            continue
        assert "://" not in link and not link.startswith("/") and ".." not in link, link
        assert (report.parent / unquote(link)).is_file(), link
    moved = report.parent.parent / "moved"
    shutil.copytree(report.parent, moved)  # a copy elsewhere still resolves every link
    assert all((moved / unquote(v)).is_file() for t, v in parser.links if t == "img")


def test_report_contents(report, run_dir):
    page = report.read_text(encoding="utf-8")
    assert "PSNR (dB) ↑" in page and "LPIPS ↓" in page and "data range 1" in page  # table + conventions
    assert page.count("<h3>") == 2 and "<h3>generated</h3>" in page and "<h3>photos</h3>" in page
    with ResultStore(run_dir, create=False) as s:
        rows = s.results()
    ok = next(r for r in rows if r["status"] == "ok" and r["image_id"] == "photos/coffee")
    assert f"PSNR {ok['psnr']:.2f} dB<br>LPIPS {ok['lpips']:.4f}" in page
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(failed) == 1 and "non-finite loss (nan) at iteration 0" in page
    assert "<b>iterations=2</b>" in page and "<b>iterations=5</b>" in page
    assert "Only the loss is recorded per iteration" in page
    for name in ("loss-median.png", "loss-0.png", "loss-1.png", "time-quality.png"):
        with Image.open(report.parent / "plots" / name) as im:
            assert im.width > 400
    assert "discover/pmsfc_subspace_swap.png</figcaption>" in page
    assert "cache/pmsfc/permuted_S.png</figcaption>" in page


def test_report_command(run_dir, tmp_path):
    r = CliRunner().invoke(main, ["report", str(run_dir)])
    assert r.exit_code == 0 and f"report: {run_dir / 'report' / 'index.html'}" in r.output
    assert not list(run_dir.glob(".report-*"))
    r = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert r.exit_code == 1 and "is not a run folder: results.sqlite not found" in r.output


def test_report_of_a_run_without_results(tmp_path):
    ResultStore(tmp_path).close()
    page = write_report(tmp_path).read_text(encoding="utf-8")
    assert "No results yet" in page and "No figures found under cache/, discover/" in page


# ---- in a real browser -------------------------------------------------------------------------------
CHECK_SCRIPT = """<script>
window.addEventListener("load", () => {
  const images = [...document.images];
  const broken = images.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute("src"));
  const table = document.querySelector("table.comparison");
  const box = table ? table.getBoundingClientRect() : {width: 0, height: 0};
  const style = table ? getComputedStyle(table) : {display: "none", visibility: "hidden"};
  const out = document.createElement("pre");
  out.id = "gib-check";
  out.textContent = JSON.stringify({images: images.length, broken: broken, rows: table ? table.tBodies[0].rows.length : 0,
    visible: box.width > 0 && box.height > 0 && style.display !== "none" && style.visibility !== "hidden"});
  document.body.appendChild(out);
});
</script>"""


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def browse(url: str, *args: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                               "--disable-background-networking", "--disable-component-update", "--disable-sync",
                               f"--user-data-dir={profile}", *args, url], capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(chromium() is None, reason="headless Chromium not installed "
                    "(CI: apt-get update && apt-get install -y chromium chromium-driver)")
def test_report_in_headless_chromium(report, tmp_path, record_property):
    check = report.parent / "_browser_check.html"  # the page plus a script that reports what the browser saw
    check.write_text(report.read_text(encoding="utf-8").replace("</body>", CHECK_SCRIPT + "</body>"), encoding="utf-8")
    try:
        dom = browse(check.as_uri(), "--dump-dom")
    finally:
        check.unlink()
    found = re.search(r'<pre id="gib-check">(.*?)</pre>', dom.stdout, re.S)
    assert found, f"no result from the page:\n{dom.stdout[-2000:]}\n{dom.stderr[-2000:]}"
    result = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert result["images"] >= 30 and result["broken"] == [], result
    assert result["visible"] and result["rows"] == 4, result
    artifacts = Path(os.environ.get("GIB_TEST_ARTIFACTS") or tmp_path)
    artifacts.mkdir(parents=True, exist_ok=True)
    shot = artifacts / "report-screenshot.png"
    browse(report.as_uri(), f"--screenshot={shot}", "--window-size=1280,2400", "--hide-scrollbars")
    with Image.open(shot) as im:
        assert im.size == (1280, 2400) and np.asarray(im.convert("L")).std() > 10  # not a blank page
    record_property("screenshot", str(shot))
    print(f"\nreport screenshot: {shot}")
