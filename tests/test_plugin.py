"""A plug-in package written from the guides, installed, found through the entry points, checked.

The method and the generator are the code blocks of docs/adding-a-method.md and
docs/adding-a-generator.md, taken verbatim: a method with a budget setting called ``steps``, its
own loop and no dependence on the seed (tagged deterministic), and a small generator. The
package is built and installed into a temporary folder with pip, then a fresh Python process
(with that folder on its path) finds both through the entry points, runs the conformance suite
of ``gan_inversion_bench.testing`` (the new method on every registered generator, every method
on the new generator) and ``gib run`` with the new method, whose FLOPs are recorded.
"""
from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def first_python_block(markdown: Path) -> str:
    blocks = re.findall(r"```python\n(.*?)```", markdown.read_text(), flags=re.S)
    assert blocks, f"no python code block in {markdown}"
    return blocks[0]


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("plugin")
    pkg = root / "src" / "gib_demo_plugin"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "my_method.py").write_text(first_python_block(ROOT / "docs" / "adding-a-method.md"))
    (pkg / "my_gan.py").write_text(first_python_block(ROOT / "docs" / "adding-a-generator.md"))
    (root / "src" / "pyproject.toml").write_text(textwrap.dedent("""\
        [build-system]
        requires = ["setuptools>=64"]
        build-backend = "setuptools.build_meta"
        """))
    (root / "src" / "setup.cfg").write_text(textwrap.dedent("""\
        [metadata]
        name = gib-demo-plugin
        version = 0.0.1

        [options]
        packages = gib_demo_plugin

        [options.entry_points]
        gan_inversion_bench.methods =
            fixed-start = gib_demo_plugin.my_method:FixedStart
        gan_inversion_bench.generators =
            my-gan = gib_demo_plugin.my_gan:my_gan
        """))
    site = root / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(site), str(root / "src")], check=True, capture_output=True)
    return site


def in_fresh_python(site: Path, code: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, *(["-c", code] if code else []), *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=600)


def test_plugin_is_found_and_passes_the_conformance_suites(plugin_site):
    code = textwrap.dedent("""
        from gan_inversion_bench import GENERATORS, METHODS
        from gan_inversion_bench.testing import check_generator, check_method

        assert "fixed-start" in METHODS.names() and "my-gan" in GENERATORS.names()
        m = METHODS.get("fixed-start").from_profile("quick")
        assert m.budget_setting == "steps" and m.budget == 50 and m.with_budget(3).budget == 3
        assert m.get_tags().deterministic
        check_generator("my-gan")
        check_method("fixed-start")                    # on every registered generator, my-gan included
        for name in METHODS.names():                   # every method on the new generator
            check_method(name, generators=["my-gan"])
        print("conformance ok")
    """)
    p = in_fresh_python(plugin_site, code)
    assert p.returncode == 0 and "conformance ok" in p.stdout, p.stderr[-3000:]


def test_plugin_method_runs_in_gib_run_with_flops(plugin_site, tmp_path):
    out = tmp_path / "run"
    p = in_fresh_python(plugin_site, "", "-m", "gan_inversion_bench", "run", "-m", "fixed-start", "-g", "my-gan",
                        "--images", "generated", "--n", "2", "--iterations", "3", "--device", "cpu", "--no-progress",
                        "--out", str(out))
    assert p.returncode == 0, p.stderr[-3000:]
    assert "fixed-start" in p.stdout
    with sqlite3.connect(out / "results.sqlite") as c:
        rows = c.execute("SELECT method, status, iterations, flops_per_iteration, method_settings, generator "
                         "FROM results").fetchall()
    assert len(rows) == 2
    for method, status, iterations, flops, settings, generator in rows:
        assert (method, status, iterations) == ("fixed-start", "ok", 3)
        assert flops and flops > 0
        assert json.loads(settings)["steps"] == 3 and json.loads(generator)["name"] == "my-gan"
    listed = in_fresh_python(plugin_site, "", "-m", "gan_inversion_bench", "list", "methods")
    assert "fixed-start" in listed.stdout
