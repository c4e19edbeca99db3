"""aiortc imported without PyAV: FFmpeg's libraries load when a frame is first coded.

aiortc imports PyAV (``av``) at import time, for its codecs and media tracks, although
a server that forwards RTP never encodes or decodes: PyAV and FFmpeg's shared libraries
were a quarter of an idle ``parley serve``'s resident memory (docs/benchmarks.md,
"Memory"). :func:`deferred_av` is the context in which this package imports aiortc: while
it runs, ``av`` and the submodules aiortc names are stand-in modules whose attributes
are stand-ins of the classes aiortc imports by name (``AudioFrame``,
``VideoFrame``, ``CodecContext``, ``Frame``, ``Packet``...). On leaving the context the
stand-in modules leave ``sys.modules``, so any later ``import av`` is the real PyAV.

A stand-in loads the real PyAV the first time it is used: called (a frame made, a codec
context created), asked for an attribute (``VideoFrame.from_ndarray``), or in
``isinstance``/``issubclass`` (aiortc's sender tells frames from packets that way); from
then on it behaves as the class it stands for, except that it is not that class
(``type(frame) is VideoFrame`` is false; aiortc never asks). The stand-in ``av`` module
that aiortc's ``rtcrtpreceiver`` and codecs keep (``import av``) hands out the real
module's attributes. A bot that decodes loads PyAV on its first frame (or had loaded it
before aiortc: then nothing here happens), a server never does.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import types
from collections.abc import Iterator
from typing import Any

__all__ = ["MODULES", "deferred_av", "is_deferred"]

#: The modules aiortc 1.16 imports from PyAV (``import av``, ``from av.x import Y``).
MODULES = ("av", "av.frame", "av.packet", "av.audio", "av.video", "av.video.codeccontext")


class _Resolver:
    """Loads the real PyAV for the stand-ins of one :func:`deferred_av` context."""

    def __init__(self) -> None:
        self.stand_ins: dict[str, types.ModuleType] = {}

    def withdraw(self) -> None:
        """Take the stand-in modules out of ``sys.modules`` (those still there)."""
        for name, module in self.stand_ins.items():
            if sys.modules.get(name) is module:
                del sys.modules[name]

    def module(self, name: str) -> types.ModuleType:
        self.withdraw()  # used while aiortc still imports: the real modules from now on
        return importlib.import_module(name)


class _StandInModule(types.ModuleType):
    """A stand-in for ``av`` or one of its submodules while aiortc imports."""

    def __init__(self, name: str, resolver: _Resolver) -> None:
        super().__init__(name, f"aiortc's stand-in for {name} (sfu/aiortc_adapter/deferred_av.py)")
        self._resolver = resolver
        self._names: dict[str, Any] = {}

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        if sys.modules.get(self.__name__) is self and attr[:1].isupper():
            # aiortc's import-time ``from av import VideoFrame``: a stand-in class
            deferred = self._names.get(attr)
            if deferred is None:
                deferred = self._names[attr] = _deferred_class(self.__name__, attr, self._resolver)
            return deferred
        return getattr(self._resolver.module(self.__name__), attr)


class _DeferredMeta(type):
    """Forwards what aiortc does with a stand-in class to the real class."""

    def __instancecheck__(cls, obj: object) -> bool:
        return isinstance(obj, cls.resolve())

    def __subclasscheck__(cls, other: type) -> bool:
        return issubclass(other, cls.resolve())

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        return cls.resolve()(*args, **kwargs)

    def __getattr__(cls, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        return getattr(cls.resolve(), attr)

    def __repr__(cls) -> str:
        return f"<deferred {cls._where}.{cls.__name__}>"

    def resolve(cls) -> Any:
        real = cls.__dict__.get("_real")
        if real is None:
            real = getattr(cls._resolver.module(cls._where), cls.__name__)
            type.__setattr__(cls, "_real", real)
        return real


def _deferred_class(module: str, name: str, resolver: _Resolver) -> Any:
    """A stand-in for the class ``module.name`` of PyAV (see the module docstring)."""
    return _DeferredMeta(name, (), {"_where": module, "_resolver": resolver, "_real": None})


def is_deferred(obj: object) -> bool:
    """Whether ``obj`` is one of the stand-ins (a class or a module) made here."""
    return isinstance(obj, (_DeferredMeta, _StandInModule))


@contextlib.contextmanager
def deferred_av() -> Iterator[None]:
    """Within: ``av`` and its submodules of :data:`MODULES` are stand-ins (unless PyAV
    is loaded already, then nothing changes)."""
    if "av" in sys.modules:
        yield
        return
    resolver = _Resolver()
    for name in MODULES:
        module = _StandInModule(name, resolver)
        resolver.stand_ins[name] = module
        sys.modules[name] = module
    for name in MODULES:  # ``av.video.codeccontext`` reachable as attributes too
        parent, _, child = name.rpartition(".")
        if parent:
            object.__setattr__(resolver.stand_ins[parent], child, resolver.stand_ins[name])
    try:
        yield
    finally:
        resolver.withdraw()


with deferred_av():  # the first import of aiortc in this process, if it is: without PyAV
    import aiortc  # noqa: F401
