"""Image sets: the targets a run inverts.

Specs (``gib list imagesets``):

* ``generated``: N in-domain images sampled from the generator itself; image i uses the latent
  drawn with seed ``seed * 1000 + i``; the ground-truth latents are kept.
* ``photos``: 8 real photos bundled with scikit-image and scikit-learn (out-of-domain targets).
* ``photos-tune``: 4 other real photos, bundled with matplotlib and scikit-image, that no
  evaluation set holds: the real tuning images of ``gib tune --tune-images photos-tune``, so that a
  setting is chosen on real targets without seeing the evaluated ones.
* ``generated-mixed``: like ``generated``, but for a class-conditional generator each image has
  its own class, one-hot, drawn uniformly with the seed ``CLASS_SEED_OFFSET + seed * 1000 + i``
  (:meth:`~gan_inversion_bench.generator.SplitGenerator.sample_conditions`): ``item.condition``
  holds the vector and ``item.meta["class"]`` the class index. An unconditional generator is an
  error. Every other set (``generated`` included) leaves ``condition`` None: the generator's own
  class.
* ``generated+photos``: both (the embedded default); ``generated-mixed+photos`` likewise.
* ``folder:PATH`` (or just an existing directory path): every readable image file in PATH
  (not recursive), sorted by name.

Preprocessing of real images (recorded with every result as ``PREPROCESSING``): decode with
Pillow; palette/grayscale/CMYK/16-bit converted to 8-bit RGB; an alpha channel is composited
on white; centre-crop to the largest square; resize to the generator's resolution with
Pillow's antialiased Lanczos filter; map uint8 v to v / 127.5 − 1, giving [-1, 1].
"""
from __future__ import annotations

import contextlib
import importlib.util
import math
import numbers
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

from .generator import conditioned
from .weights import available_memory

PREPROCESSING = ("EXIF orientation applied; RGB 8-bit (alpha composited on white, 16-bit scaled to 8-bit); "
                 "centre crop to the largest "
                 "square; Pillow Lanczos (antialiased) resize to the generator resolution; v/127.5-1 -> [-1,1]")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm"}
MAX_PIXELS = 100_000_000  # larger images are refused (decompression-bomb guard)
#: added to a generated image's latent seed to seed its class (a stream apart from the latents')
CLASS_SEED_OFFSET = 1 << 40
#: the largest magnitude of a run seed: image i's seeds ``seed * 1000 + i`` (+ CLASS_SEED_OFFSET) must
#: stay within the 64-bit range of torch's random generators (2**53: also exact in JSON everywhere)
SEED_LIMIT = 2**53
#: images generated per forward pass; a larger set is generated in chunks of this many (each image
#: depends only on its own seed, so a set of at most this many is one forward pass, as it always was)
GENERATION_CHUNK = 64
#: Python objects per generated image (its ImageItem, tensor views, meta data, id), for the estimate
ITEM_OVERHEAD = 2048


@dataclass
class ImageItem:
    """One target: ``image`` is ``[3, R, R]`` float in [-1, 1]."""

    id: str
    image: Tensor
    meta: dict[str, Any] = field(default_factory=dict)
    latent: Tensor | None = None  # ground truth, for generated images
    #: per-image class vector ``[condition_dim]`` for a conditional generator; None = the generator's own class
    condition: Tensor | None = None
    #: under a restoration task ``image`` is the observation and ``clean`` the target (None: no task)
    clean: Tensor | None = None


@dataclass
class ImageSet:
    spec: str
    items: list[ImageItem]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)

    def describe(self) -> dict[str, Any]:
        return {"spec": self.spec, "n": len(self.items), "preprocessing": PREPROCESSING,
                "skipped": [f"{f}: {r}" for f, r in self.skipped]}


class ImageSetError(ValueError):
    """An image set cannot be built (empty folder, unknown spec, ...)."""


def _package_dir(module: str) -> Path:
    spec = importlib.util.find_spec(module)  # locates without importing
    if spec is None or not spec.submodule_search_locations:
        raise ImageSetError(f"the bundled photos need the package {module!r}; pip install it")
    return Path(next(iter(spec.submodule_search_locations)))


#: id → (package, relative path, licence as stated by the package)
PHOTOS = {
    "astronaut": ("skimage", "data/astronaut.png", "public domain (NASA)"),
    "chelsea": ("skimage", "data/chelsea.png", "CC0 (Stefan van der Walt)"),
    "coffee": ("skimage", "data/coffee.png", "CC0 (Rachel Michetti)"),
    "rocket": ("skimage", "data/rocket.jpg", "public domain (SpaceX)"),
    "hubble": ("skimage", "data/hubble_deep_field.jpg", "public domain (NASA)"),
    "ihc": ("skimage", "data/ihc.png", "no known copyright restrictions (scikit-image)"),
    "china": ("sklearn", "datasets/images/china.jpg", "CC BY 2.0 (danielbuechele, Flickr)"),
    "flower": ("sklearn", "datasets/images/flower.jpg", "CC BY 2.0 (vultilion, Flickr)"),
}
#: the held-out real tuning photos (``photos-tune``), none of them in ``PHOTOS``; two colour, two grey
TUNING_PHOTOS = {
    "grace_hopper": ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg",
                     "public domain (U.S. Navy photograph of Grace Hopper)"),
    "retina": ("skimage", "data/retina.jpg", "CC0 (Mikael Häggström, Wikimedia Commons)"),
    "camera": ("skimage", "data/camera.png", "CC0 (Lav Varshney)"),
    "coins": ("skimage", "data/coins.png", "no known copyright restrictions (Brooklyn Museum)"),
}

IMAGESET_HELP = {
    "generated": "N images sampled from the generator (seeded), ground-truth latents kept",
    "photos": "8 real photos bundled with scikit-image and scikit-learn: " + ", ".join(PHOTOS),
    "photos-tune": "4 real tuning photos that no evaluation set holds (gib tune --tune-images): "
                   + ", ".join(TUNING_PHOTOS),
    "generated-mixed": "like generated, each image with its own seeded class (class-conditional generators)",
    "generated+photos": "generated and photos (the embedded default)",
    "generated-mixed+photos": "generated-mixed and photos",
    "folder:PATH": "every readable image in a folder, centre-cropped and resized",
}


def to_rgb_array(img: Image.Image, source: str) -> np.ndarray:
    """Any Pillow image → ``[H, W, 3]`` uint8 RGB, with the conversions of ``PREPROCESSING``."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if img.mode.startswith("I;16") or a.max() > 255 else 255.0
        a = np.clip(a / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(a[..., None], 3, axis=2)
    if img.mode == "F":
        a = np.asarray(img, dtype=np.float64)
        a = np.clip(a * (255.0 if a.max() <= 1.0 else 1.0) + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(a[..., None], 3, axis=2)
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    img = img.convert("RGB")
    a = np.asarray(img, dtype=np.uint8)
    if a.ndim != 3 or a.shape[2] != 3:
        raise ImageSetError(f"{source}: could not convert to RGB (got array of shape {a.shape})")
    return a


def prepare_image(img: Image.Image, resolution: int, source: str) -> Tensor:
    """Centre-crop, resize and map to ``[3, R, R]`` in [-1, 1]."""
    w, h = img.size
    if w < 1 or h < 1:
        raise ImageSetError(f"{source}: empty image ({w}x{h})")
    if w * h > MAX_PIXELS:
        raise ImageSetError(f"{source}: {w}x{h} pixels is larger than the limit of {MAX_PIXELS:,} pixels")
    rgb = Image.fromarray(to_rgb_array(img, source))
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    rgb = rgb.crop((left, top, left + side, top + side))
    if side != resolution:
        # Pillow's types leave out the module-level alias (Image.Resampling needs Pillow >= 9.1)
        rgb = rgb.resize((resolution, resolution), Image.LANCZOS)  # type: ignore[attr-defined]
    a = torch.from_numpy(np.asarray(rgb, dtype=np.float32).copy()).permute(2, 0, 1)  # [3, R, R]
    return a / 127.5 - 1.0


def load_image_file(path: Path, resolution: int) -> Tensor:
    """Read one image file; raises :class:`ImageSetError` naming the file and the problem."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                w, h = img.size
                if w * h > MAX_PIXELS:
                    raise ImageSetError(f"{path}: {w}x{h} pixels is larger than the limit of {MAX_PIXELS:,} pixels "
                                        f"(decompression-bomb guard); expected a smaller image")
                img.load()
                # as an image viewer shows it: the EXIF orientation tag (camera photos) applied
                return prepare_image(ImageOps.exif_transpose(img), resolution, str(path))
    except ImageSetError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageSetError(f"{path}: refused as a possible decompression bomb ({type(e).__name__}: {e}); expected "
                            f"at most {MAX_PIXELS:,} pixels") from None
    except UnidentifiedImageError as e:
        raise ImageSetError(f"{path}: not a readable image ({type(e).__name__}: {e}); expected an image file that "
                            f"Pillow can decode (PNG, JPEG, TIFF, BMP, WebP, GIF, PPM)") from None
    except PermissionError as e:
        raise ImageSetError(f"{path}: cannot be read: permission denied ({type(e).__name__}: {e}); expected a file "
                            f"this user may read (check its permissions)") from None
    except OSError as e:
        if e.errno is None:  # Pillow's own OSErrors (truncated, broken data) carry no errno
            raise ImageSetError(f"{path}: corrupt or truncated image ({type(e).__name__}: {e}); expected a complete, "
                                f"valid image file") from None
        raise ImageSetError(f"{path}: cannot be read ({type(e).__name__}: {e}); expected a readable image "
                            f"file") from None
    except (SyntaxError, ValueError) as e:
        raise ImageSetError(f"{path}: corrupt or truncated image ({type(e).__name__}: {e}); expected a complete, "
                            f"valid image file") from None


def photos(resolution: int, *, tuning: bool = False) -> list[ImageItem]:
    """The bundled evaluation photos (``photos``), or with ``tuning`` the held-out ones (``photos-tune``)."""
    items = []
    prefix, table = ("photos-tune", TUNING_PHOTOS) if tuning else ("photos", PHOTOS)
    for key, (module, rel, licence) in table.items():
        path = _package_dir(module) / rel
        items.append(ImageItem(f"{prefix}/{key}", load_image_file(path, resolution),
                               {"source": f"{module}:{rel}", "licence": licence}))
    return items


def generated(generator: Any, n: int, seed: int = 0, *, mixed_classes: bool = False) -> list[ImageItem]:
    """``n`` images ``G(z_i)`` with ``z_i`` drawn with seed ``seed * 1000 + i``.

    ``mixed_classes``: each image gets its own class (a conditional generator only; see the
    module docstring), kept in ``item.condition`` and ``item.meta["class"]``. The memory the set
    needs is estimated first (:func:`check_generation_memory`): a set that cannot fit is refused
    before anything is allocated. The images are generated :data:`GENERATION_CHUNK` at a time.
    """
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ImageSetError(f"the generated set needs n >= 1 images (an integer), got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or abs(seed) > SEED_LIMIT:
        raise ImageSetError(f"the generated set's seed must be an integer from {-SEED_LIMIT} to {SEED_LIMIT} "
                            f"(image i is drawn with seed * 1000 + i, which must fit 64 bits), got {seed!r}")
    n, seed = int(n), int(seed)
    check_generation_memory(generator, n)
    items: list[ImageItem] = []
    try:
        for start, stop in generation_chunks(n):
            items += _generate_chunk(generator, start, [seed * 1000 + i for i in range(start, stop)], mixed_classes)
    except (MemoryError, RuntimeError) as e:  # the estimate is a lower bound
        why = (str(e).splitlines() or [""])[0]
        if not isinstance(e, MemoryError) and "allocate" not in why and "out of memory" not in why:
            raise
        raise ImageSetError(f"the generated set of {n} images ran out of memory after {len(items)} images "
                            f"({type(e).__name__}: {why}); lower the number of images (--n)") from None
    return items


def generation_chunks(n: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of each forward pass over ``n`` images: :data:`GENERATION_CHUNK` at a time,
    never one image alone when ``n > 1`` (a batch of one takes other kernels on the CPU, whose last
    bits differ; with batches of two or more the chunked images equal the one-pass ones)."""
    starts = list(range(0, n, GENERATION_CHUNK))
    if len(starts) > 1 and n - starts[-1] == 1:
        starts.pop()  # the last image joins the chunk before it
    return list(zip(starts, [*starts[1:], n], strict=True))


def _largest_chunk(n: int) -> int:
    return n if n <= GENERATION_CHUNK else GENERATION_CHUNK + 1


@torch.no_grad()
def _generate_chunk(generator: Any, start: int, seeds: list[int], mixed_classes: bool) -> list[ImageItem]:
    """Images ``start …`` of the generated set, one forward pass; row i depends only on ``seeds[i]``."""
    z = generator.sample_latents(len(seeds), seed=seeds)
    c = _mixed_classes(generator, seeds) if mixed_classes else None
    with conditioned(generator, c) if c is not None else contextlib.nullcontext():
        images = generator(z).clamp(-1, 1).float().cpu()
    items = [ImageItem(f"generated/{start + i:03d}", images[i], {"latent_seed": s}, latent=z[i].cpu())
             for i, s in enumerate(seeds)]
    if c is not None:
        for item, s, ci in zip(items, seeds, c.cpu(), strict=True):
            item.condition = ci
            item.meta.update({"class": int(ci.argmax()), "class_seed": CLASS_SEED_OFFSET + s})
    return items


def generation_memory(generator: Any, n: int) -> tuple[int, int]:
    """A lower bound of the bytes the generated set needs: (kept on the CPU: n × 3 × R² × 4 for the
    images, with their latents, classes and Python objects; one forward pass of a chunk: its
    latents, the largest feature map twice (a layer's input and output) and the images)."""
    r, latent = int(generator.resolution), int(getattr(generator, "latent_dim", 0))
    codes = latent + int(getattr(generator, "condition_dim", 0) or 0)
    kept = n * (3 * r * r * 4 + codes * 4 + ITEM_OVERHEAD)
    largest = max((math.prod(p.shape) for p in getattr(generator, "split_points", ())), default=0)
    return kept, _largest_chunk(n) * (codes + 2 * largest + 3 * r * r) * 4


def check_generation_memory(generator: Any, n: int) -> None:
    """Refuse, with the estimate, a generated set whose memory exceeds what is free (CPU memory for
    the images; the forward pass too where the generator is on the CPU, else that device's memory)."""
    kept, work = generation_memory(generator, n)
    params = generator.parameters() if hasattr(generator, "parameters") else iter(())
    device = next((p.device for p in params), torch.device("cpu"))
    checks = [("cpu", kept + work, available_memory())]
    if device.type == "cuda":
        checks = [("cpu", kept, available_memory()), (str(device), work, int(torch.cuda.mem_get_info(device)[0]))]
    r, chunk = generator.resolution, min(n, GENERATION_CHUNK)  # (the last chunk may hold one more)
    for where, need, free in checks:
        if free is not None and need > free:
            raise ImageSetError(
                f"the generated set of {n} images at {r}x{r} needs at least {(kept + work) / 2**30:.3g} GiB "
                f"({kept / 2**30:.3g} GiB to keep the images, n × 3 × {r}² × 4 bytes with their latents, and "
                f"{work / 2**30:.3g} GiB to generate them {chunk} at a time); {free / 2**30:.3g} GiB are free on "
                f"{where}. Lower the number of images (--n)")


def _mixed_classes(generator: Any, seeds: list[int]) -> Tensor:
    """One seeded one-hot class per image; an :class:`ImageSetError` for an unconditional generator."""
    if getattr(generator, "condition_dim", 0) <= 0:
        name = getattr(generator, "name", "") or type(generator).__name__
        raise ImageSetError(f"generated-mixed needs a class-conditional generator (condition_dim > 0), but "
                            f"{name} is unconditional; use the image set 'generated'")
    c = generator.sample_conditions(len(seeds), seed=[CLASS_SEED_OFFSET + s for s in seeds])
    assert isinstance(c, Tensor)
    return c


def stack_conditions(generator: Any, items: list[ImageItem]) -> Tensor | None:
    """The ``[B, condition_dim]`` conditions of a batch of items, or None when no item has one.

    An item without a condition (a photo, a folder image, the ``generated`` set) gets the
    generator's own class (:meth:`~gan_inversion_bench.generator.SplitGenerator.default_condition`).
    """
    if all(it.condition is None for it in items):
        return None
    default = generator.default_condition()
    if default is None:
        raise ImageSetError(f"items {[it.id for it in items if it.condition is not None]} carry class conditions, "
                            f"but the generator is unconditional (condition_dim = 0); expected condition=None")
    rows = [default if it.condition is None else it.condition for it in items]
    return torch.stack([r.to(device="cpu", dtype=torch.float32) for r in rows])


def folder(path: Path, resolution: int) -> ImageSet:
    path = Path(path)
    if not path.is_dir():
        raise ImageSetError(f"image folder {path} does not exist or is not a directory")
    items, skipped = [], []
    try:
        entries = sorted(path.iterdir())
    except OSError as e:
        raise ImageSetError(f"cannot list image folder {path}: {e}") from None
    for f in entries:
        try:
            if not f.is_file():
                kind = ("a symbolic link to a directory or special file" if f.is_symlink() and f.exists()
                        else "a broken symbolic link or a symbolic link loop" if f.is_symlink()
                        else "a directory or special file")
                skipped.append((str(f), f"not a regular file ({kind}); expected an image file"))
                continue
        except OSError as e:  # e.g. a symlink loop
            skipped.append((str(f), f"cannot stat: {e}"))
            continue
        if f.suffix.lower() not in IMAGE_SUFFIXES:
            suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
            skipped.append((str(f), f"suffix {f.suffix!r} is not an image suffix ({suffixes})"))
            continue
        try:
            items.append(ImageItem(f"folder/{f.name}", load_image_file(f, resolution), {"source": str(f)}))
        except ImageSetError as e:
            skipped.append((str(f), str(e)))
    if not items:
        detail = "; ".join(f"{Path(f).name}: {r}" for f, r in skipped[:5])
        raise ImageSetError(f"image folder {path} holds no readable images"
                            + (f" (skipped: {detail})" if detail else " (it is empty)"))
    return ImageSet(f"folder:{path}", items, skipped)


def load_image_set(spec: str, generator: Any, *, n: int = 8, seed: int = 0) -> ImageSet:
    """Build the image set named by ``spec`` at the generator's resolution."""
    r = generator.resolution
    base, plus, rest = spec.partition("+")
    if base in ("generated", "generated-mixed") and rest in ("", "photos") and (rest or not plus):
        items = generated(generator, n, seed, mixed_classes=base == "generated-mixed")
        if rest:
            items += photos(r)
        return ImageSet(f"{base}(n={n},seed={seed})" + (f"+{rest}" if rest else ""), items)
    if spec in ("photos", "photos-tune"):
        return ImageSet(spec, photos(r, tuning=spec == "photos-tune"))
    if spec.startswith("folder:"):
        return folder(Path(spec[len("folder:"):]).expanduser(), r)
    if Path(spec).expanduser().is_dir():
        return folder(Path(spec).expanduser(), r)
    raise ImageSetError(f"unknown image set {spec!r}; expected one of: generated, generated-mixed, photos, "
                        f"photos-tune, generated+photos, generated-mixed+photos, folder:PATH (or an existing "
                        f"directory)")
