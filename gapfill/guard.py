"""One run per output at a time, and no leftovers of killed runs.

:func:`exclusive` holds an advisory lock (``flock``) on ``<output>.lock`` for the
whole run: a second run on the same output is refused at once instead of
mixing its temporary files with the first one's. The kernel drops the lock
when its process dies, even by ``kill -9``, so a stale lock file never blocks
a later run. On filesystems without ``flock`` (some network mounts) or
without :mod:`fcntl` (Windows) the run goes on unlocked, with a warning.

:func:`clean_leftovers`, called while the lock is held, removes the temporary
siblings a killed writer left (``<name>.tmp-*``, ``.<stem>.tmp-*<suffix>``) and
puts back a product that a killed fallback swap had moved to ``<name>.old-*``
(see :mod:`gapfill.atomic`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from gapfill.atomic import OLD_MARK, TMP_MARK, remove

__all__ = ["OutputBusyError", "clean_leftovers", "exclusive", "lock_path"]

log = logging.getLogger("gapfill")


class OutputBusyError(FileExistsError):
    """Another process is writing the same output."""


def lock_path(output: str | os.PathLike) -> Path:
    """The lock file of ``output``: ``<output>.lock``."""
    output = Path(os.fspath(output).rstrip("/"))
    return output.with_name(output.name + ".lock")


@contextmanager
def exclusive(output: str | os.PathLike) -> Iterator[None]:
    """Hold the lock of ``output`` while the block runs; removed at the end.

    Raises
    ------
    OutputBusyError
        If another process holds it (the message names that process).
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        log.warning("no file locking on this system: make sure no other run writes %s", output)
        yield
        return
    lock = lock_path(output)
    created = [p for p in (lock.parent, *lock.parent.parents) if not p.exists()]
    lock.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise OutputBusyError(
                f"{os.fspath(output)!r} is being written by another gapfill run (pid {owner}, "
                f"lock {str(lock)!r}); wait for it to finish or choose another output.path"
            ) from None
        except OSError as err:  # no locks on this filesystem
            os.close(fd)
            log.warning("cannot lock %s (%s): make sure no other run writes %s", lock,
                        err.strerror, output)
            yield
            return
        try:  # the holder before us may have removed the file we opened: lock the new one
            same = os.path.samestat(os.fstat(fd), os.stat(lock))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        lock.unlink(missing_ok=True)  # while locked: the next run creates a fresh one
        os.close(fd)
        for folder in created:  # the folders made for the lock, if the run left them empty
            try:
                folder.rmdir()
            except OSError:
                break


def clean_leftovers(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Remove what killed writers of ``paths`` left; put back a product moved aside.

    Call it while holding :func:`exclusive`: another live run's temporary files
    look the same.

    Returns
    -------
    list of Path
        What was removed or restored.
    """
    done: list[Path] = []
    for path in map(Path, paths):
        folder = path.parent
        if not folder.is_dir():
            continue
        olds = sorted(folder.glob(f"{_glob_escape(path.name)}{OLD_MARK}*"),
                      key=lambda p: p.stat().st_mtime)
        if olds and not (path.exists() or path.is_symlink()):
            os.replace(olds.pop(), path)  # the swap was killed between its two renames
            log.warning("restored %s, moved aside by a run killed while replacing it", path)
            done.append(path)
        patterns = (f"{_glob_escape(path.name)}{TMP_MARK}*",
                    f".{_glob_escape(path.stem)}{TMP_MARK}*{_glob_escape(path.suffix)}")
        for leftover in olds + [p for pat in patterns for p in folder.glob(pat)]:
            remove(leftover)
            done.append(leftover)
    if done:
        log.info("removed %d leftover(s) of an interrupted run: %s", len(done),
                 ", ".join(p.name for p in done))
    return done


def _glob_escape(text: str) -> str:
    import glob

    return glob.escape(text)
