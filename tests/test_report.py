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
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator
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
from gan_inversion_bench.method import Artifact, InversionMethod
from gan_inversion_bench.methods import single_code
from gan_inversion_bench.registry import METHODS
from gan_inversion_bench.report import write_report
from gan_inversion_bench.store import ResultStore


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """generated (2) + photos (8), two settings of single-code, one failed image."""
    out = tmp_path_factory.mktemp("report") / "run"
    real = single_code.optimise
    inject = [True]  # during the first run only: every inversion (FLOP count, warm-up, timed) fails image 0

    def nan_for_first_image(params, per_image_loss, **kw):
        if not inject[0]:
            return real(params, per_image_loss, **kw)
        return real(params, lambda: torch.where(torch.arange(len(params[0])) == 0, torch.nan, per_image_loss()), **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(single_code, "optimise", nan_for_first_image)
        for iterations in (2, 5):
            run(RunConfig(generator="pggan-tiny", methods=["single-code"], images="generated+photos", n_generated=2,
                          overrides={"*": {"iterations": iterations}}, device="cpu", batch_size=10),
                out, progress=False, echo=lambda s: None)
            inject[0] = False
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
    for _tag, link in parser.links:
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
    assert "<h2>Method figures</h2>" in page and "PmSFC" not in page  # the core knows no method
    assert "No method contributed figures" in page  # single-code contributes none


def test_report_command(run_dir, tmp_path):
    r = CliRunner().invoke(main, ["report", str(run_dir)])
    assert r.exit_code == 0 and f"report: {run_dir / 'report' / 'index.html'}" in r.output
    assert not list(run_dir.glob(".report-*"))
    r = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert r.exit_code == 1 and "is not a run folder: results.sqlite not found" in r.output


def test_report_of_a_run_without_results(tmp_path):
    ResultStore(tmp_path).close()
    page = write_report(tmp_path).read_text(encoding="utf-8")
    assert "No results yet" in page and "No method contributed figures" in page and "Not installed" not in page


# ---- values from the run folder are escaped; method figures come through the hook, safely ------------
def _copy_run(run_dir: Path, dst: Path, **columns: str) -> Path:
    """A copy of the run folder with the given result columns set for every row (``where`` picks rows)."""
    shutil.copytree(run_dir, dst, symlinks=True, ignore=shutil.ignore_patterns("report"))
    where = columns.pop("where", "1")
    with sqlite3.connect(dst / "results.sqlite") as db:
        for column, value in columns.items():
            db.execute(f"UPDATE results SET {column} = ? WHERE {where}", (value,))
    db.close()
    return dst


NASTY = '<script>alert("x")</script> "quoted" & more'


def test_values_from_the_run_folder_are_escaped(run_dir, tmp_path):
    settings = json.dumps({"iterations": 2, f'note{NASTY}': NASTY})
    copy = _copy_run(run_dir, tmp_path / "run", method=f"m{NASTY}", method_settings=settings)
    with sqlite3.connect(copy / "results.sqlite") as db:
        db.execute("UPDATE results SET reason = ? WHERE status = 'failed'", (f"reason {NASTY}",))
    db.close()
    page = write_report(copy).read_text(encoding="utf-8")
    parser = Links()
    parser.feed(page)
    assert "script" not in parser.tags and "<script" not in page and '"quoted"' not in page
    escaped = "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &#34;quoted&#34; &amp; more"
    assert f"<td>m{escaped}" in page  # method name in the tables
    assert f'title="reason {escaped}"' in page and f"<td>reason {escaped}</td>" in page  # failure reason
    assert f"note{escaped}=&#39;{escaped}&#39;" in page  # a setting's name and value
    assert f"Not installed here, so their figures (if any) cannot be listed: m{escaped}." in page


class FigMethod(InversionMethod):
    name = "test-fig"

    @classmethod
    def report_artifacts(cls, run_dir: Path) -> list[Artifact]:
        return [Artifact(Path("figs/good.png"), 'A good <b>figure</b> "captioned"'),
                Artifact(Path("figs/table.csv"), "numbers"),
                Artifact(Path("figs/link.png"), "a symlink to a file outside"),
                Artifact(Path("linked/inner.png"), "through a symlinked folder"),
                Artifact(Path("figs/inside-link.png"), "a symlink to a file inside"),
                Artifact(Path("../secret.png"), "dot dot"),
                Artifact(Path("figs/../../secret.png"), "dot dot inside"),
                Artifact(Path(run_dir).parent / "secret.png", "absolute"),
                Artifact(Path("figs/missing.png"), "not there")]


class BrokenHookMethod(InversionMethod):
    name = "test-broken"

    @classmethod
    def report_artifacts(cls, run_dir: Path) -> list[Artifact]:
        raise RuntimeError("hook <failed>")


@pytest.fixture
def test_methods() -> Iterator[None]:
    METHODS.register("test-fig", FigMethod)
    METHODS.register("test-broken", BrokenHookMethod)
    try:
        yield
    finally:
        for name in ("test-fig", "test-broken"):
            METHODS._targets.pop(name, None)
            METHODS._loaded.pop(name, None)


def test_method_figures_through_the_hook(run_dir, tmp_path, test_methods):
    copy = _copy_run(run_dir, tmp_path / "run", method="test-fig", where="iterations = 5")
    with sqlite3.connect(copy / "results.sqlite") as db:
        db.execute("UPDATE results SET method = 'test-broken' WHERE iterations = 2")
    db.close()
    secret = b"\x89PNG secret bytes outside the run folder"
    (tmp_path / "secret.png").write_bytes(secret)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "inner.png").write_bytes(secret)
    (copy / "figs").mkdir()
    Image.fromarray(np.full((20, 30, 3), 200, np.uint8)).save(copy / "figs" / "good.png")
    (copy / "figs" / "table.csv").write_text("a,b\n1,2\n")
    (copy / "figs" / "link.png").symlink_to(tmp_path / "secret.png")
    (copy / "figs" / "inside-link.png").symlink_to(copy / "figs" / "good.png")
    (copy / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)

    index = write_report(copy)
    page = index.read_text(encoding="utf-8")
    assert "<h3>test-fig</h3>" in page and "<h3>test-broken</h3>" in page
    assert "report_artifacts failed: RuntimeError: hook &lt;failed&gt;" in page
    assert "A good &lt;b&gt;figure&lt;/b&gt; &#34;captioned&#34;" in page
    parser = Links()
    parser.feed(page)
    shown = [(t, unquote(v)) for t, v in parser.links if v.startswith("methods/")]
    assert [t for t, _ in shown] == ["img", "a"]  # an image is shown, a table linked
    assert [re.sub(r"^methods/\d+-test-fig/", "", v) for _, v in shown] == ["figs/good.png", "figs/table.csv"]
    assert (index.parent / shown[0][1]).read_bytes() == (copy / "figs" / "good.png").read_bytes()
    assert (index.parent / shown[1][1]).read_text() == "a,b\n1,2\n"
    for path, why in [("figs/link.png", "figs/link.png is a symlink"), ("linked/inner.png", "linked is a symlink"),
                      ("figs/inside-link.png", "figs/inside-link.png is a symlink"),
                      ("../secret.png", "contains &#39;..&#39;"), ("figs/../../secret.png", "contains &#39;..&#39;"),
                      (str(tmp_path / "secret.png"), "an absolute path"), ("figs/missing.png", "not found")]:
        assert re.search(f"<li><code>{re.escape(path)}</code>: [^<]*{re.escape(why)}", page), path
    copied = [p for p in index.parent.rglob("*") if p.is_file() or p.is_symlink()]
    assert not any(p.is_symlink() for p in copied)
    assert all(p.read_bytes() != secret for p in copied)  # nothing from outside the run folder


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
  out.textContent = JSON.stringify({images: images.length, broken: broken,
    rows: table ? table.tBodies[0].rows.length : 0,
    visible: box.width > 0 && box.height > 0 && style.display !== "none" && style.visibility !== "hidden"});
  document.body.appendChild(out);
});
</script>"""


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def browse(url: str, *args: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                               "--no-first-run", "--disable-background-networking", "--disable-component-update",
                               "--disable-sync",
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


def test_restoration_runs_show_the_observation_beside_target_and_restoration(tmp_path):
    """Per image: the clean target, the observation y = D(x) the method saw, then each restoration;
    a plain reconstruction in the same folder gets no observation column."""
    out = tmp_path / "run"
    for task in ("inpaint", "reconstruct"):
        run(RunConfig(generator="pggan-tiny", methods=["single-code"], images="generated", n_generated=2, budget=2,
                      overrides={"*": {"perceptual_weight": 0.0}}, device="cpu", latency=False, task=task),
            out, progress=False, echo=lambda s: None)
    page = write_report(out)
    html = page.read_text(encoding="utf-8")
    sections = {part.split("</h3>")[0]: part for part in html.split("<h3>")[1:]}
    assert "observation y = D(x)" in sections["inpaint (mask=centre, ratio=0.25): generated"]
    assert "observation y = D(x)" not in sections["generated"]
    parser = Links()
    parser.feed(html)
    shown = sorted(unquote(v) for t, v in parser.links if t == "img" and "/observations/" in unquote(v))
    assert len(shown) == 2  # one per image, only for the inpainting records
    for link in shown:
        observed = np.asarray(Image.open(page.parent / link), dtype=np.float64)
        image_id = "/".join(Path(link).with_suffix("").parts[-2:])
        target = np.asarray(Image.open(out / "targets" / f"{image_id}.png"), dtype=np.float64)
        assert np.array_equal(observed, np.asarray(Image.open(out / link.removeprefix("images/")), dtype=np.float64))
        hole = observed != target  # the centre box of a quarter of the pixels is mid-grey, the rest untouched
        assert 0.2 < hole.any(axis=2).mean() < 0.3 and np.all(np.abs(observed[hole] - 127.5) <= 1)
