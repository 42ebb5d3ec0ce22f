"""The method registry: a name maps to a :class:`~gapfill.methods.base.Method` class.

Methods register themselves with :func:`register`; :func:`get` finds one by
name. Torch-based methods live in modules that import torch only when they are
used, so ``import gapfill`` stays light.
"""

from __future__ import annotations

import difflib
import importlib

from gapfill.methods.base import (
    Chunking,
    Coords,
    FillResult,
    Method,
    Options,
    TimeEdges,
    limit_threads,
)

#: name -> "module:Class"; imported lazily on first use.
_BUILTIN = {
    "eof": "gapfill.methods.eof:EOF",
    "linear": "gapfill.methods.linear:Linear",
    "climatology": "gapfill.methods.climatology:Climatology",
    "regem": "gapfill.methods.regem:RegEM",
    "gan": "gapfill.methods.gan:GAN",
    "combcn": "gapfill.methods.combcn:CombCN",
    "tgfnet": "gapfill.methods.tgfnet:TGFNet",
    "stgconvnet": "gapfill.methods.stgconvnet:STGConvNet",
    "flowfill": "gapfill.methods.flowfill:FlowFill",
}
_REGISTRY: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    """Register a method class under ``cls.name`` (usable as a decorator)."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    _REGISTRY[cls.name] = cls
    return cls


def available() -> list[str]:
    """Names of all methods that can be passed as ``method=``."""
    return sorted(set(_BUILTIN) | set(_REGISTRY))


def get(name: str) -> type[Method]:
    """Return the method class registered as ``name`` (any case: ``"EOF"`` is ``"eof"``).

    Raises
    ------
    ValueError
        If no method has that name; the message lists the valid names.
    """
    if not isinstance(name, str):
        raise TypeError(f"a method name is a string, got {type(name).__name__}")
    if name not in _REGISTRY and name not in _BUILTIN:
        name = name.lower()
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name in _BUILTIN:
        module, _, attr = _BUILTIN[name].partition(":")
        cls = getattr(importlib.import_module(module), attr)
        _REGISTRY[name] = cls
        return cls
    close = difflib.get_close_matches(name, available(), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(f"unknown method {name!r}{hint}; choose one of {available()}")


__all__ = [
    "Chunking", "Coords", "FillResult", "Method", "Options", "TimeEdges", "available", "get",
    "limit_threads", "register",
]
