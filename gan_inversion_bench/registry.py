"""Name → implementation registries for generators and inversion methods.

Built-ins are registered lazily as ``"module:attribute"`` strings, so importing the package
does not import torch-heavy modules it does not need. Third-party packages register through
the entry-point groups ``gan_inversion_bench.generators`` and ``gan_inversion_bench.methods``::

    # in the third-party package's setup.cfg
    [options.entry_points]
    gan_inversion_bench.methods =
        my-method = my_pkg.my_method:MyMethod

A wrong name fails with the list of valid names and a "did you mean" suggestion.
"""
from __future__ import annotations

import contextlib
import difflib
import importlib
from collections.abc import Callable, Iterator
from importlib import metadata
from typing import Any


class UnknownNameError(KeyError):
    """Raised for a name that no registry entry carries. ``str()`` is a readable message."""

    def __init__(self, kind: str, name: str, valid: list[str]):
        self.kind, self.name, self.valid = kind, name, valid
        close = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        msg = f"unknown {kind} {name!r}.{hint} Valid {kind}s: {', '.join(valid) or '(none)'}"
        super().__init__(msg)
        self.message = msg

    def __str__(self) -> str:  # KeyError would quote the message
        return self.message


class Registry:
    """A lazy mapping from names to classes or factories.

    >>> r = Registry("method", entry_point_group=None)
    >>> r.register("single-code", "gan_inversion_bench.methods.single_code:SingleCode")
    >>> r.get("single-code").__name__
    'SingleCode'
    """

    def __init__(self, kind: str, entry_point_group: str | None):
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._targets: dict[str, str | Callable[..., Any]] = {}
        self._loaded: dict[str, Any] = {}
        self._entry_points_read = entry_point_group is None

    def register(self, name: str, target: str | Callable[..., Any]) -> None:
        """Register ``target`` (an object or a lazy ``"module:attr"`` string) under ``name``."""
        if not name or name != name.strip():
            raise ValueError(f"invalid {self.kind} name {name!r}")
        if isinstance(target, str) and ":" not in target:
            raise ValueError(f"lazy target for {name!r} must be 'module:attribute', got {target!r}")
        self._targets[name] = target
        self._loaded.pop(name, None)

    def _read_entry_points(self) -> None:
        if self._entry_points_read or self.entry_point_group is None:  # None: set read in __init__
            return
        self._entry_points_read = True
        for ep in metadata.entry_points(group=self.entry_point_group):
            self._targets.setdefault(ep.name, ep.value)

    def names(self) -> list[str]:
        self._read_entry_points()
        return sorted(self._targets)

    def __contains__(self, name: str) -> bool:
        self._read_entry_points()
        return name in self._targets

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def get(self, name: str) -> Any:
        """The registered object, importing it on first use."""
        self._read_entry_points()
        if name not in self._targets:
            raise UnknownNameError(self.kind, name, self.names())
        if name not in self._loaded:
            target = self._targets[name]
            if isinstance(target, str):
                module_name, _, attr = target.partition(":")
                obj: Any = importlib.import_module(module_name)
                for part in attr.split("."):
                    obj = getattr(obj, part)
                target = obj
            self._loaded[name] = target
        return self._loaded[name]

    def create(self, name: str, **kwargs: Any) -> Any:
        """Call the registered class or factory with keyword arguments.

        An object with a ``name`` attribute (a generator) gets the registry name it was created
        under, so factories and plug-ins need not set it themselves.
        """
        obj = self.get(name)(**kwargs)
        if hasattr(obj, "name") and not isinstance(obj, type):
            with contextlib.suppress(AttributeError):  # a read-only name (e.g. a method class attribute)
                obj.name = name
        return obj


GENERATORS = Registry("generator", "gan_inversion_bench.generators")
METHODS = Registry("method", "gan_inversion_bench.methods")

# Built-ins. Keep these strings in sync with the files in generators/ and methods/.
GENERATORS.register("dcgan-digiface64", "gan_inversion_bench.generators.dcgan:digiface64")
GENERATORS.register("dcgan-omniart-eyes128", "gan_inversion_bench.generators.omniart:omniart_eyes128")
GENERATORS.register("pggan", "gan_inversion_bench.generators.pggan:pggan")
GENERATORS.register("pggan-tiny", "gan_inversion_bench.generators.pggan:pggan_tiny")
GENERATORS.register("stylegan2", "gan_inversion_bench.generators.stylegan2:stylegan2")
GENERATORS.register("biggan-deep", "gan_inversion_bench.generators.biggan:biggan_deep")

METHODS.register("single-code", "gan_inversion_bench.methods.single_code:SingleCode")
METHODS.register("mganprior", "gan_inversion_bench.methods.mganprior:MGANPrior")
METHODS.register("pmsfc", "gan_inversion_bench.methods.pmsfc:PmSFC")
METHODS.register("pivotal-tuning", "gan_inversion_bench.methods.pivotal_tuning:PivotalTuning")
METHODS.register("ilo", "gan_inversion_bench.methods.ilo:ILO")
METHODS.register("image2stylegan", "gan_inversion_bench.methods.image2stylegan:Image2StyleGAN")
METHODS.register("encoder", "gan_inversion_bench.methods.idinvert:IDEncoder")
METHODS.register("idinvert", "gan_inversion_bench.methods.idinvert:IDInvert")
METHODS.register("cma-es", "gan_inversion_bench.methods.cmaes:CMAES")
