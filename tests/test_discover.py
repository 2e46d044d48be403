"""PmSFC stage 1 alone: ``discover()`` and ``gib discover`` (figures, CSV, cache), quickly."""
from __future__ import annotations

import csv
import json
import pickle

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from gan_inversion_bench import GENERATORS
from gan_inversion_bench.cli import main
from gan_inversion_bench.methods.pmsfc_discover import discover, swap_images
from gan_inversion_bench.weights import WeightsNotFound


@pytest.fixture(scope="module")
def pggan():
    return GENERATORS.create("pggan-tiny")


def test_discover_writes_figures_csv_and_summary(pggan, tmp_path):
    info = discover(pggan, out_dir=tmp_path, discovery_iterations=7, n_subspaces=4, n_pairs=2, seed=1)
    files = info["files"]
    for key in ("subspace_swap", "S_by_cluster", "loss_curves_png"):
        with Image.open(files[key]) as img:
            assert img.format == "PNG" and img.size[0] > 100
    with open(files["loss_curves_csv"]) as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["iteration", "total", "feature", "data", "sparse"] and len(rows) == 8
    assert float(rows[-1][1]) == pytest.approx(info["state"]["final_losses"]["total"])
    summary = json.loads((tmp_path / "subspaces.json").read_text())
    assert summary["state"]["cluster_sizes"] == info["state"]["cluster_sizes"] and sum(
        summary["state"]["cluster_sizes"]) == 32
    assert len(summary["labels"]) == 32 and summary["settings"]["discovery_iterations"] == 7
    assert any(p.name.startswith("pmsfc-S-") for p in (tmp_path / "cache").iterdir())


def test_swap_images_semantics(pggan):
    """Swapping the subspace that holds every channel gives the other image; an empty one, the same."""
    masks = torch.stack([torch.ones(32, dtype=torch.bool), torch.zeros(32, dtype=torch.bool)])
    originals, swapped = swap_images(pggan, 3, masks, seed=0, n_pairs=2)
    assert originals.shape == (2, 2, 3, 32, 32) and swapped.shape == (2, 2, 2, 3, 32, 32)
    torch.testing.assert_close(swapped[0, 0], originals[1], atol=1e-5, rtol=1e-4)  # A with all of B = B
    torch.testing.assert_close(swapped[0, 1], originals[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(swapped[1, 0], originals[0], atol=1e-5, rtol=1e-4)  # nothing swapped


def test_cli_discover_pggan_tiny(tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["discover", "--generator", "pggan-tiny", "--iterations", "5", "--subspaces",
                                       "3", "--affinity", "official-discovery", "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "cluster sizes" in result.output and "official-discovery" in result.output
    assert (out / "subspace_swap.png").is_file() and (out / "loss_curves.csv").is_file()


def test_cli_discover_imported_s_matrix(tmp_path):
    S = np.random.default_rng(0).normal(scale=1e-3, size=(32, 32)).astype(np.float32)
    path = tmp_path / "value50.pkl"
    path.write_bytes(pickle.dumps(S, protocol=3))
    result = CliRunner().invoke(main, ["discover", "-g", "pggan-tiny", "--split", "8x8.conv0", "--s-matrix",
                                       str(path), "--affinity", "official", "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert "imported" in result.output and not (tmp_path / "o" / "loss_curves.csv").exists()


def test_cli_discover_dcgan_digiface64(tmp_path):
    try:
        GENERATORS.create("dcgan-digiface64")
    except WeightsNotFound as e:
        pytest.skip(str(e))
    result = CliRunner().invoke(main, ["discover", "--generator", "dcgan-digiface64", "--iterations", "3",
                                       "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "split 3 (4x4.relu" in result.output
    assert (tmp_path / "S_by_cluster.png").is_file()


def test_cli_discover_rejects_bad_options(tmp_path):
    runner = CliRunner()
    r = runner.invoke(main, ["discover", "-g", "pggan-tiny", "--subspaces", "0", "--out", str(tmp_path)])
    assert r.exit_code != 0 and "--subspaces" in r.output
    r = runner.invoke(main, ["discover", "-g", "pggan-tiny", "--subspaces", "40", "--iterations", "2",
                             "--out", str(tmp_path)])
    assert r.exit_code != 0 and "n_subspaces" in r.output
    r = runner.invoke(main, ["discover", "-g", "pgan-tiny", "--out", str(tmp_path)])
    assert r.exit_code != 0 and "Did you mean" in r.output
