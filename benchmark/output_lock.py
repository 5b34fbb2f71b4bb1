"""One writer per output folder (issue 12): two invocations on one `--out` would race on the MLflow schema
migration, train the same run keys into the same checkpoint folders and collide on their `.tmp` names.

The lock is `OUT/.clip4vla.lock`, held with `flock` for the life of the invocation (the kernel drops it when
the holder dies, also on NFS, where Linux maps flock onto the server's byte-range locks). An exclusive holder
writes its pid, host, start time and command into the file so that the second invocation can say who holds
the folder; a file that still names a holder when the lock is free was left by a process that died, and is
taken over with a warning. `sweep --only KEY` holds the output folder shared and its run folder exclusively,
so several machines can run distinct keys of one suite into one folder (and one tracking server).
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from benchmark.errors import UserError
from benchmark.records import invocation

LOCK_NAME = ".clip4vla.lock"
log = logging.getLogger("clip4vla")
_held: dict[Path, bool] = {}  # lock file -> shared?, of this process: a nested hold of the same lock is a no-op


def holder_line() -> str:
    """Who holds a lock, as written into the lock file."""
    since = time.strftime("%Y-%m-%d %H:%M:%S")
    return f"pid {os.getpid()} on host {socket.gethostname()}, since {since}: {invocation()[:300]}"


@contextmanager
def hold_folder(folder: Path, shared: bool = False) -> Iterator[None]:
    """Hold `folder`'s lock for the block: exclusive, or `shared` with other shared holders. A lock held
    elsewhere is a one-line UserError naming the holder."""
    path = Path(folder).resolve() / LOCK_NAME
    if path in _held and (shared or not _held[path]):  # this process holds it already, at least as strongly
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as f:
        locked = True
        try:
            fcntl.flock(f, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"{folder} is in use by {_holder(path)} (lock {path}); wait for it to finish or give "
                            "another --out") from None
        except OSError as exc:  # a filesystem without locks: say so once and go on unprotected
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
            log.warning("cannot lock %s (%s): nothing stops a second clip4vla from writing into it", folder,
                        exc.strerror)
            locked = False
        _held[path] = shared
        try:
            _take_over(f, folder, shared)
            yield
        finally:
            del _held[path]
            if not shared:
                f.truncate(0)  # the file stays: deleting a lock file races with the next holder's open
            if locked:
                fcntl.flock(f, fcntl.LOCK_UN)


def _take_over(f, folder: Path, shared: bool) -> None:
    """Clear a held lock file that still names a holder (it died: no exclusive holder can coexist with this
    hold) with a warning; an exclusive holder then writes itself in."""
    f.seek(0)
    stale = f.read().strip()
    if stale:
        log.warning("took over the lock of %s: that process is gone (it was %s)", folder, stale)
        f.seek(0)
        f.truncate(0)
    if not shared:
        f.write(holder_line() + "\n")
    f.flush()


def _holder(path: Path) -> str:
    """The exclusive holder named in a lock file, or the shared holders' kind."""
    try:
        named = path.read_text().strip()
    except OSError:
        named = ""
    return named or "`clip4vla sweep --only` jobs (they hold it shared)"


@contextmanager
def waiting_for(path: Path) -> Iterator[None]:
    """Hold the exclusive lock `path` for a short critical section (e.g. creating a store), waiting for it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
