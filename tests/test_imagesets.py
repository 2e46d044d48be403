"""Image sets: bundled photos, generated set, folders, and the preprocessing rule."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from gan_inversion_bench import GENERATORS
from gan_inversion_bench.imagesets import PHOTOS, ImageSetError, load_image_file, load_image_set, prepare_image


@pytest.fixture(scope="module")
def tiny():
    return GENERATORS.create("pggan-tiny")


def test_photos_are_real_and_normalised(tiny):
    s = load_image_set("photos", tiny)
    assert [it.id for it in s.items] == [f"photos/{k}" for k in PHOTOS]
    for it in s.items:
        assert it.image.shape == (3, tiny.resolution, tiny.resolution)
        assert it.image.min() >= -1 and it.image.max() <= 1
        assert it.image.std() > 0.05  # a real photo, not a constant
        assert it.meta["licence"]


def test_generated_set_reproducible_with_latents(tiny):
    a = load_image_set("generated", tiny, n=3, seed=4)
    b = load_image_set("generated", tiny, n=3, seed=4)
    for x, y in zip(a.items, b.items, strict=True):
        assert torch.equal(x.image, y.image) and torch.equal(x.latent, y.latent)
    with torch.no_grad():
        again = tiny(a.items[1].latent[None]).clamp(-1, 1)[0]
    torch.testing.assert_close(again, a.items[1].image)
    assert len(load_image_set("generated+photos", tiny, n=2).items) == 2 + len(PHOTOS)


def test_centre_crop_and_resize_rule():
    # a 6x4 image whose centre 4x4 square is white and the side columns black
    a = np.zeros((4, 6, 3), np.uint8)
    a[:, 1:5] = 255
    t = prepare_image(Image.fromarray(a), 4, "test")
    assert torch.equal(t, torch.ones(3, 4, 4))
    # exact mapping of 8-bit values
    a = np.full((2, 2, 3), 0, np.uint8)
    a[0, 0] = 255
    t = prepare_image(Image.fromarray(a), 2, "test")
    assert t[:, 0, 0].tolist() == [1.0, 1.0, 1.0] and t[:, 1, 1].tolist() == [-1.0, -1.0, -1.0]


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "I;16", "LA", "1"])
def test_modes_convert_to_rgb(tmp_path, mode):
    rgb = Image.fromarray((np.random.default_rng(0).random((10, 12, 3)) * 255).astype(np.uint8))
    if mode == "I;16":
        img = Image.fromarray((np.random.default_rng(0).random((10, 12)) * 65535).astype(np.uint16))
    else:
        img = rgb.convert(mode)
    path = tmp_path / ("x.tif" if mode in ("CMYK", "I;16") else "x.png")
    img.save(path)
    t = load_image_file(path, 8)
    assert t.shape == (3, 8, 8) and t.min() >= -1 and t.max() <= 1


def test_folder_skips_bad_files_and_names_them(tmp_path, tiny):
    Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(tmp_path / "good.png")
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage")
    s = load_image_set(f"folder:{tmp_path}", tiny)
    assert [it.id for it in s.items] == ["folder/good.png"]
    reasons = dict(s.skipped)
    assert "not an image suffix" in reasons[str(tmp_path / "notes.txt")]
    assert "broken.png" in reasons[str(tmp_path / "broken.png")]


def test_empty_and_missing_folders(tmp_path, tiny):
    with pytest.raises(ImageSetError, match="empty"):
        load_image_set(f"folder:{tmp_path}", tiny)
    with pytest.raises(ImageSetError, match="does not exist"):
        load_image_set(f"folder:{tmp_path / 'nope'}", tiny)
    with pytest.raises(ImageSetError, match="unknown image set"):
        load_image_set("nonsense", tiny)
    with pytest.raises(ImageSetError, match="n >= 1"):
        load_image_set("generated", tiny, n=0)


def test_generated_mixed_spec(tiny):
    from gan_inversion_bench.imagesets import IMAGESET_HELP

    assert {"generated-mixed", "generated-mixed+photos"} <= set(IMAGESET_HELP)
    with pytest.raises(ImageSetError, match="needs a class-conditional generator"):
        load_image_set("generated-mixed", tiny, n=2)  # pggan-tiny is unconditional
    for bad in ("generated+", "generated-mixed+folder", "photos+generated"):
        with pytest.raises(ImageSetError, match="generated-mixed, photos"):
            load_image_set(bad, tiny)
    s = load_image_set("generated", tiny, n=2)
    assert all(it.condition is None for it in s.items)  # the generator's own class


def test_generated_mixed_classes_per_image():
    g = GENERATORS.create("dcgan-omniart-eyes128", tiny=True)
    s = load_image_set("generated-mixed", g, n=4, seed=1)
    assert s.spec == "generated-mixed(n=4,seed=1)"
    for it in s.items:
        assert it.condition is not None and it.condition.sum() == 1
        assert it.meta["class"] == int(it.condition.argmax())
        g.set_conditions(it.condition[None])
        try:
            with torch.no_grad():
                torch.testing.assert_close(g(it.latent[None]).clamp(-1, 1)[0], it.image)
        finally:
            g.set_conditions(None)
