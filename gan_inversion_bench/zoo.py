"""Known pretrained checkpoints: where they come from, what they are called, under which licence.

By default the toolkit never downloads anything on its own: ``gib`` commands and the generator
factories look a checkpoint up in the cache directory (``$GIB_CACHE``, else
``~/.cache/gan_inversion_bench/checkpoints``) and otherwise fail with instructions. Downloading
on first use is opt-in: ``gib run --download`` (or ``GIB_DOWNLOAD=1``) makes :func:`require`
fetch a missing checkpoint that has a direct URL; if that fails, the error carries the reason
and the same instructions.
:func:`fetch_checkpoint` downloads the entries that have a direct URL (with resume and checksum
checks, see :mod:`gan_inversion_bench.download`); the others (share pages, Google Drive) must be
downloaded in a browser and put in the cache directory under :attr:`Checkpoint.filename`.

Sizes and hashes: ``size``/``sha256`` are ``None`` where they are not known from a verified copy
of the file; they are never guessed. ``licence_certain`` says whether the licence was checked
against the upstream release notes (False: what is commonly stated, not re-checked).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .weights import WeightsNotFound

__all__ = ["Checkpoint", "CHECKPOINTS", "resolve_cache_dir", "local_path", "instructions", "require",
           "fetch_checkpoint", "by_family", "download_on_first_use"]


@dataclass(frozen=True)
class ExtraFile:
    """A companion file that must sit next to the checkpoint (e.g. BigGAN's config.json)."""

    filename: str
    url: str | None
    size: int | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class Checkpoint:
    name: str
    #: registry name of the generator family that loads it
    family: str
    resolution: int
    #: file name inside the cache directory
    filename: str
    #: where to get it; ``None`` if there is no stable public URL for this exact file
    url: str | None
    #: True if ``url`` serves the file itself (a plain GET works); False for share pages
    direct: bool
    size: int | None
    sha256: str | None
    licence: str
    licence_certain: bool
    notes: str = ""
    extra: tuple[ExtraFile, ...] = field(default_factory=tuple)
    #: keyword arguments for the generator factory besides ``weights``
    factory_kwargs: dict[str, Any] = field(default_factory=dict)


_PGGAN_LICENCE = "CC BY-NC 4.0 (NVIDIA progressive_growing_of_gans networks; mirrored by the mGANprior authors)"
_SG2_LICENCE = ("Nvidia Source Code License-NC (as stated for the NVlabs/stylegan2 release; conversion code "
                "of rosinality/stylegan2-pytorch is MIT)")
_BIGGAN_LICENCE = ("Apache-2.0 (DeepMind's BigGAN-deep TF-Hub modules, which the HF files are a conversion of; "
                   "the HF pytorch-pretrained-BigGAN code is MIT)")
_SP = "https://mycuhk-my.sharepoint.com/:u:/g/personal/1155082926_link_cuhk_edu_hk/"
_SHAREPOINT_NOTE = ("mirror of the official TF release converted to a genforce PyTorch state_dict, shared by the "
                    "mGANprior/PmSFC authors (models/README.md); a OneDrive share page: open it in a browser, "
                    "download, and put the file in the cache directory")

# (dataset, resolution, share-link tail) copied from seed-methods.md §8 (mGANprior models/README.md)
_PGGAN = [
    ("celebahq", 1024, "ERkthZuF1rBCrJRURQ5M1W8BbsfT5gFF-TGbuxCAuUJXPQ?e=uKYyQ1"),
    ("bedroom", 256, "EZeWkI9pbUZDqZAzEUDjlSwB5nDZhe94vmmg4G5QSKGy7A?e=5RhTOo"),
    ("livingroom", 256, "EbHv-4YvGYJJl6i4zH8s25kBqpA1RG-YZbAvp2PSc5CtRA?e=SnSk49"),
    ("diningroom", 256, "Ee2LUJ6fectMiFDYYrZiA1sBD5q4j_FBC8xzH2Z6GSb-JQ?e=pxhVrt"),
    ("kitchen", 256, "ERTDgXhOqJZPlM72bULyKsgBu7nABHvmCBIbwvASzKruvg?e=lIrB34"),
    ("churchoutdoor", 256, "EfPAIPVXbYxIn0KQ5IzCJxYBfEG4nP1p7D3MK-N24HLzow?e=za16Z1"),
    ("tower", 256, "EXZGTFQX8gNPgwvCGWKmiIwBxGgU4UTIQy1wezKnpAADMg?e=KUp4hJ"),
    ("bridge", 256, "EXba4rsRrcZDg_6SQk-vClMBmqesihPHY6fne5oobKLHhg?e=9Gk1v3"),
    ("cat", 256, "Ebr89QFQnRJHv-OQ7IMgu-YBG02kswtRukk-9ylUqY8bGQ?e=ioo5m4"),
    ("horse", 256, "EfsJ0u6ZhDhHvleYRd5OCYABCd6Q6uqU1l-AM_C-Cot5_g?e=Fqmudf"),
]


def _entries() -> dict[str, Checkpoint]:
    out: dict[str, Checkpoint] = {}
    for ds, res, tail in _PGGAN:
        name = f"pggan_{ds}{res}"
        out[name] = Checkpoint(
            name=name, family="pggan", resolution=res, filename=f"pggan_{ds}{res}_generator.pth", url=_SP + tail,
            direct=False, size=None, sha256=None, licence=_PGGAN_LICENCE, licence_certain=True,
            notes=_SHAREPOINT_NOTE, factory_kwargs={"resolution": res})
    out["stylegan2_ffhq1024"] = Checkpoint(
        name="stylegan2_ffhq1024", family="stylegan2", resolution=1024, filename="stylegan2-ffhq-config-f.pt",
        url="https://drive.google.com/uc?id=1EM87UquaoQmk17Q8d5kYIAHqu0dkYqdT", direct=False, size=None, sha256=None,
        licence=_SG2_LICENCE, licence_certain=False,
        notes=("rosinality convert_weight.py output of NVIDIA's stylegan2-ffhq-config-f.pkl, the Google Drive copy "
               "that pSp/e4e and many projects link to (a Drive page: large files need the browser's confirmation). "
               "Alternatively convert https://nvlabs-fi-cdn.nvidia.com/stylegan2/networks/stylegan2-ffhq-config-f.pkl "
               "yourself with rosinality's convert_weight.py"),
        factory_kwargs={"resolution": 1024})
    for ds in ("church", "cat", "horse"):
        name = f"stylegan2_{ds}256"
        out[name] = Checkpoint(
            name=name, family="stylegan2", resolution=256, filename=f"stylegan2-{ds}-config-f.pt", url=None,
            direct=False, size=None, sha256=None, licence=_SG2_LICENCE, licence_certain=False,
            notes=(f"no official hosted PyTorch conversion: download NVIDIA's "
                   f"https://nvlabs-fi-cdn.nvidia.com/stylegan2/networks/stylegan2-{ds}-config-f.pkl and convert it "
                   f"with rosinality/stylegan2-pytorch's convert_weight.py (needs TensorFlow 1.x and the NVlabs "
                   f"stylegan2 repository); the result is stylegan2-{ds}-config-f.pt"),
            factory_kwargs={"resolution": 256})
    for res in (128, 256, 512):
        base = f"https://s3.amazonaws.com/models.huggingface.co/biggan/biggan-deep-{res}"
        name = f"biggan_deep_{res}"
        out[name] = Checkpoint(
            name=name, family="biggan-deep", resolution=res, filename=f"biggan-deep-{res}-pytorch_model.bin",
            url=f"{base}-pytorch_model.bin", direct=True, size=None, sha256=None, licence=_BIGGAN_LICENCE,
            licence_certain=False,
            notes=(f"HuggingFace pytorch-pretrained-BigGAN conversion of the TF-Hub biggan-deep-{res} module; the "
                   "config.json goes next to it (same prefix or as config.json)"),
            extra=(ExtraFile(f"biggan-deep-{res}-config.json", f"{base}-config.json"),),
            factory_kwargs={"resolution": res})
    return out


#: name → :class:`Checkpoint`
CHECKPOINTS: dict[str, Checkpoint] = _entries()


def by_family(family: str) -> list[Checkpoint]:
    return [c for c in CHECKPOINTS.values() if c.family == family]


def resolve_cache_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The checkpoint cache: the argument, else ``$GIB_CACHE``, else ``~/.cache/gan_inversion_bench/checkpoints``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("GIB_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "gan_inversion_bench" / "checkpoints"


def _get(name: str) -> Checkpoint:
    try:
        return CHECKPOINTS[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(name, list(CHECKPOINTS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise KeyError(f"unknown checkpoint {name!r}.{hint} Known: {', '.join(sorted(CHECKPOINTS))}") from None


def local_path(name: str, cache_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """Path of checkpoint ``name`` in the cache directory if it (and its companion files) is there, else None."""
    ckpt = _get(name)
    d = resolve_cache_dir(cache_dir)
    path = d / ckpt.filename
    if not path.is_file() or any(not (d / e.filename).is_file() for e in ckpt.extra):
        return None
    return path


def instructions(name: str, cache_dir: str | os.PathLike[str] | None = None) -> str:
    """Human-readable instructions for getting checkpoint ``name`` into the cache."""
    ckpt = _get(name)
    d = resolve_cache_dir(cache_dir)
    lines = [f"checkpoint {name!r} ({ckpt.family}, {ckpt.resolution}px) is not in the cache {d}."]
    if ckpt.url:
        how = "download it" if ckpt.direct else "open this page in a browser and download it"
        lines.append(f"  {how}: {ckpt.url}")
    lines.append(f"  and save it as {d / ckpt.filename}")
    for e in ckpt.extra:
        lines.append(f"  with its companion {e.filename}" + (f" from {e.url}" if e.url else ""))
    if ckpt.notes:
        lines.append(f"  notes: {ckpt.notes}")
    if ckpt.direct:
        lines.append(f"  (or, with network access: python -c \"from gan_inversion_bench.zoo import fetch_checkpoint; "
                     f"fetch_checkpoint('{name}')\")")
    lines.append("  Any local file also works offline: pass --weights PATH (or weights=PATH).")
    lines.append(f"  Licence: {ckpt.licence}" + ("" if ckpt.licence_certain else " (not re-verified)"))
    return "\n".join(lines)


def download_on_first_use() -> bool:
    """Whether :func:`require` may download (``GIB_DOWNLOAD`` set to 1/true/yes; ``gib run --download``)."""
    return os.environ.get("GIB_DOWNLOAD", "").strip().lower() in ("1", "true", "yes", "on")


def require(name: str, cache_dir: str | os.PathLike[str] | None = None, *, download: bool | None = None) -> Path:
    """Like :func:`local_path` but raising :class:`WeightsNotFound` with instructions when absent.

    With ``download`` (default: :func:`download_on_first_use`), a missing checkpoint that has a
    direct URL is fetched into the cache first (progress bar, resume, size/sha256 checks).
    """
    path = local_path(name, cache_dir)
    if path is not None:
        return path
    ckpt = _get(name)
    if download is None:
        download = download_on_first_use()
    if download and ckpt.url and ckpt.direct:
        from .download import DownloadError

        try:
            return fetch_checkpoint(name, cache_dir, progress=True)
        except DownloadError as e:
            raise WeightsNotFound(f"downloading {name!r} failed: {e}\n{instructions(name, cache_dir)}") from None
    raise WeightsNotFound(instructions(name, cache_dir))


def fetch_checkpoint(name: str, cache_dir: str | os.PathLike[str] | None = None, *, progress: bool = True,
                     timeout: float = 30) -> Path:
    """Download checkpoint ``name`` (and companions) into the cache; only for entries with a direct URL."""
    from .download import fetch

    ckpt = _get(name)
    d = resolve_cache_dir(cache_dir)
    if not (ckpt.url and ckpt.direct):
        raise WeightsNotFound(instructions(name, cache_dir))
    for e in ckpt.extra:
        if e.url and not (d / e.filename).is_file():
            fetch(e.url, d / e.filename, sha256=e.sha256, size=e.size, progress=progress, timeout=timeout)
    path = d / ckpt.filename
    if not path.is_file():
        fetch(ckpt.url, path, sha256=ckpt.sha256, size=ckpt.size, progress=progress, timeout=timeout)
    return path
