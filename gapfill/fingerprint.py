"""Cheap fingerprints of input files and stores, to tell whether an input changed.

A file's fingerprint is its size, its modification time and a hash of its
content (the whole file up to :data:`FULL_HASH_BYTES`, else
:data:`SAMPLED_BLOCKS` evenly spaced blocks of :data:`BLOCK_BYTES`, the last one
included). A directory's (a Zarr store) is the number and total size of its
files and a hash of their relative paths (the chunk keys), sizes and
modification times: no chunk is read. Reading the fingerprint of a 100 GB
file costs about 16 MiB of reads.

>>> fp = fingerprint(["sst.nc"])                          # doctest: +SKIP
>>> changes(fp, fingerprint(["sst.nc"]))                  # doctest: +SKIP
[]
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["BLOCK_BYTES", "FULL_HASH_BYTES", "SAMPLED_BLOCKS", "changes", "fingerprint"]

#: Files up to this size are hashed whole.
FULL_HASH_BYTES = 32 * 2**20
#: Larger files: the number of blocks hashed, and their size.
SAMPLED_BLOCKS, BLOCK_BYTES = 16, 2**20


def fingerprint(paths: Iterable[str | os.PathLike]) -> dict[str, dict[str, Any]]:
    """The fingerprint of each path (file or directory), by absolute path.

    Remote paths (URLs) and paths that do not exist get ``{"missing": True}``
    (URLs: ``{"url": True}``): nothing can be said about their content.
    """
    out: dict[str, dict[str, Any]] = {}
    for item in paths:
        text = os.fspath(item)
        if "://" in text:
            out[text] = {"url": True}
            continue
        path = os.path.abspath(os.path.expanduser(text))
        if os.path.isdir(path):
            out[path] = _directory(path)
        elif os.path.isfile(path):
            out[path] = _file(path)
        else:
            out[path] = {"missing": True}
    return out


def _file(path: str) -> dict[str, Any]:
    st = os.stat(path)
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        if st.st_size <= FULL_HASH_BYTES:
            for block in iter(lambda: f.read(BLOCK_BYTES), b""):
                h.update(block)
        else:
            step = (st.st_size - BLOCK_BYTES) / (SAMPLED_BLOCKS - 1)
            for i in range(SAMPLED_BLOCKS):
                f.seek(int(i * step))
                h.update(f.read(BLOCK_BYTES))
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "content": h.hexdigest()}


def _directory(path: str) -> dict[str, Any]:
    h = hashlib.blake2b(digest_size=16)
    n = total = 0
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            full = os.path.join(root, name)
            st = os.stat(full)
            rel = os.path.relpath(full, path)
            h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
            n += 1
            total += st.st_size
    return {"files": n, "size": total, "keys": h.hexdigest()}


def changes(
    old: Mapping[str, Mapping[str, Any]], new: Mapping[str, Mapping[str, Any]]
) -> list[str]:
    """What differs between two fingerprints, one line per path (empty: nothing)."""
    lines = []
    for path in sorted(set(old) | set(new)):
        a, b = old.get(path), new.get(path)
        if a == b:
            continue
        if a is None:
            lines.append(f"{path} is a new input")
        elif b is None:
            lines.append(f"{path} is no longer an input")
        else:
            what = [k for k in ("size", "files", "content", "keys", "mtime_ns", "missing")
                    if a.get(k) != b.get(k)]
            names = {"mtime_ns": "modification time", "keys": "chunk keys",
                     "files": "number of files", "missing": "existence"}
            lines.append(f"{path} changed ({', '.join(names.get(k, k) for k in what)})")
    return lines
