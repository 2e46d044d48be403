"""Packaging: methods/ and generators/ install under the package namespace, for editable and
regular installs alike, and the weight carriers did not pull in jax, flax or wandb."""
from __future__ import annotations

import importlib.metadata as md
import json
import subprocess
import sys
from pathlib import Path

import pytest

import gan_inversion_bench

ROOT = Path(__file__).resolve().parent.parent


def test_current_install_maps_folders_into_namespace():
    import gan_inversion_bench.generators as g
    import gan_inversion_bench.methods as m

    assert Path(m.__file__).resolve().parent.name in ("methods",)
    assert Path(g.__file__).resolve().parent.name in ("generators",)
    # the bare names must not be importable from this installation
    probe = subprocess.run([sys.executable, "-c", "import methods"], capture_output=True, text=True, cwd="/")
    assert probe.returncode != 0
    probe = subprocess.run([sys.executable, "-c", "import generators"], capture_output=True, text=True, cwd="/")
    assert probe.returncode != 0


def test_editable_install_points_at_the_checkout():
    # (a build leaves gan_inversion_bench.egg-info in the checkout; it carries no direct_url.json)
    urls = [d.read_text("direct_url.json") for d in md.distributions(name="gan-inversion-bench")]
    direct_url = json.loads(next((u for u in urls if u), "{}"))
    if not direct_url.get("dir_info", {}).get("editable"):
        pytest.skip("the toolkit is not installed in editable mode here")
    import gan_inversion_bench.methods as m

    assert Path(m.__file__).resolve() == (ROOT / "methods" / "__init__.py").resolve()


def test_regular_install_imports_namespaced_subpackages(tmp_path):
    target = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                        "--target", str(target), str(ROOT)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (target / "gan_inversion_bench" / "methods" / "single_code.py").is_file()
    assert (target / "gan_inversion_bench" / "generators" / "dcgan.py").is_file()
    assert not (target / "methods").exists() and not (target / "generators").exists()
    code = ("import gan_inversion_bench.methods.single_code as s, gan_inversion_bench.generators.dcgan as d;"
            "print(s.__file__); print(d.__file__)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                       env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    assert all(line.startswith(str(target)) for line in r.stdout.split()), r.stdout


@pytest.mark.parametrize("dist", ["jax", "jaxlib", "flax", "wandb"])
def test_weight_carriers_did_not_pull_unneeded_dependencies(dist):
    with pytest.raises(md.PackageNotFoundError):
        md.distribution(dist)


def test_version_is_exposed():
    assert gan_inversion_bench.__version__ == md.version("gan-inversion-bench")
