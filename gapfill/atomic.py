"""Putting a finished file or store in place all at once.

:func:`replacing` writes a file to a temporary sibling renamed into place when
complete; :func:`move_into_place` puts a finished file or directory (a Zarr
store) at its final path, replacing what is there. A crash or an error mid-write
leaves the previous file (or none), never a half-written one.

Replacing a directory atomically needs ``renameat2(RENAME_EXCHANGE)`` (Linux
3.15+, glibc 2.28+, and a filesystem that supports it: ext4, xfs, btrfs, tmpfs;
not NFS). Elsewhere the old directory is renamed to ``<name>.old-<id>`` first and
the new one renamed in: a crash between those two renames leaves no product at
the path, but the old one intact at ``<name>.old-<id>``, which
:func:`gapfill.guard.clean_leftovers` puts back at the next run.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["OLD_MARK", "TMP_MARK", "exchange", "move_into_place", "remove", "replacing"]

#: What temporary siblings of an output have in their names (``<name>.tmp-<id>``).
TMP_MARK = ".tmp-"
#: What a replaced output is renamed to before its replacement moves in (fallback only).
OLD_MARK = ".old-"

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


@contextmanager
def replacing(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write, renamed to ``path`` on success.

    It keeps the suffix of ``path`` (writers choose their format by it). The parent
    directory is created; the temporary file is removed on failure.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}{TMP_MARK}{uuid.uuid4().hex[:8]}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def exchange(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Swap two existing paths atomically (``renameat2(RENAME_EXCHANGE)``).

    Returns
    -------
    bool
        False where the system or filesystem cannot (nothing was changed).
    """
    fn = _renameat2()
    if fn is None:
        return False
    rc = fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EPERM, errno.EXDEV):
        return False
    raise OSError(err, os.strerror(err), os.fspath(b))


def _renameat2():  # -> the libc function, or None
    if not hasattr(_renameat2, "fn"):
        fn = None
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
            fn = libc.renameat2
            fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                           ctypes.c_uint]
            fn.restype = ctypes.c_int
        except (OSError, AttributeError):  # not Linux/glibc ≥ 2.28
            fn = None
        _renameat2.fn = fn  # type: ignore[attr-defined]
    return _renameat2.fn  # type: ignore[attr-defined]


def move_into_place(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """Rename the finished ``tmp`` to ``path``, replacing whatever ``path`` holds.

    Files are replaced with one ``rename``; a directory (or a file replaced by a
    directory) with an atomic exchange where available, else by the fallback
    described in the module docstring (restored on failure).
    """
    tmp, path = Path(tmp), Path(path)
    if not (path.exists() or path.is_symlink()):
        os.replace(tmp, path)
        return
    if tmp.is_file() and path.is_file():
        os.replace(tmp, path)  # atomic on POSIX
        return
    if exchange(tmp, path):  # tmp now holds the old product
        remove(tmp)
        return
    old = path.with_name(f"{path.name}{OLD_MARK}{uuid.uuid4().hex[:12]}")
    os.replace(path, old)
    try:
        os.replace(tmp, path)
    except BaseException:
        os.replace(old, path)
        raise
    remove(old)


#: Checks, 50 ms apart, that a removed directory must stay gone (see :func:`remove`).
QUIET_CHECKS = 3


def remove(path: str | os.PathLike, attempts: int = 40) -> None:
    """Remove a file or directory tree if it exists.

    A Zarr store whose write failed can still get chunks from writes that were under
    way, and a chunk written after the tree is gone makes its directories again: the
    tree is removed again (every 50 ms, at most ``attempts`` times) until it has stayed
    gone for :data:`QUIET_CHECKS` checks in a row.
    """
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        gone = 0
        for _ in range(attempts):
            if path.exists():
                shutil.rmtree(path, ignore_errors=True)
                gone = 0
            else:
                gone += 1
                if gone >= QUIET_CHECKS:
                    return
            time.sleep(0.05)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)
