"""One writer per directory: an advisory lock that a crash cannot leave stuck.

``with directory_lock(path, what="run"):`` takes an exclusive ``fcntl.flock`` on
``path/.vrp.lock`` for the duration of the block and writes the holder (process id, host,
command, start time) into that file. The lock belongs to the open file, so the operating
system drops it the moment the holding process ends, however it ends (``kill -9``
included): a stale lock file on disk never blocks anyone, only a live holder does. A second
process asking for the same directory gets :class:`DirectoryLockedError` naming the holder's
process id, at once (it never waits).

The lock is re-entrant within one thread (a ``vrp study`` holding its directory may call
code that takes it again); another thread or process is refused. Advisory means that only
code taking the lock is kept out: readers (``vrp report``, pandas) never take it. The lock
file's descriptor is not inherited by programs the holder starts (Python opens files
non-inheritable), but a child made by a bare ``fork`` shares it until it exits. Local disks
only: ``flock`` on a network filesystem may not exclude other hosts.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

LOCK_FILE = ".vrp.lock"

_HELD: dict[str, tuple[int, int]] = {}  # resolved lock path -> (thread id, depth) held by this process
_GUARD = threading.Lock()


class DirectoryLockedError(RuntimeError):
    """Another process (or thread) holds the directory's lock.

    Attributes:
        path: the locked directory.
        holder: what the holder wrote into the lock file (``pid``, ``host``, ``what``,
            ``since``); empty when it could not be read.
    """

    def __init__(self, path: Path, what: str, holder: dict):
        self.path, self.holder = path, holder
        pid = holder.get("pid")
        who = f"process {pid}" if pid else "another process (its id is not written yet)"
        if holder.get("host") and holder["host"] != socket.gethostname():
            who += f" on {holder['host']}"
        if holder.get("what"):
            who += f" (vrp {holder['what']}" + (f", since {holder['since']})" if holder.get("since") else ")")
        stop = f" or stop it (kill {pid})" if pid else ""
        super().__init__(
            f"{path} is in use by {who}: one {what} at a time may write a directory; "
            f"wait for it to finish{stop}, or choose another directory"
        )


def read_holder(path: Path) -> dict:
    """What the lock file of directory ``path`` says about its (last) holder; {} if nothing readable."""
    try:
        rec = json.loads((Path(path) / LOCK_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return rec if isinstance(rec, dict) else {}


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _holder_of(path: Path) -> dict:
    """The holder's record; a new holder may not have written its own yet, so a dead pid is
    read again for a moment before it is reported as it is."""
    holder = read_holder(path)
    for _ in range(20):
        if _alive(holder.get("pid")) or holder.get("host", socket.gethostname()) != socket.gethostname():
            break
        time.sleep(0.025)
        holder = read_holder(path)
    return holder


@contextmanager
def directory_lock(path: str | Path, what: str = "run") -> Iterator[Path]:
    """Hold the exclusive lock of directory ``path`` (created if missing) for the block.

    Args:
        path: the directory (a run or study directory).
        what: the command taking it, shown to whoever is refused ("run", "study").

    Yields:
        The lock file's path.

    Raises:
        DirectoryLockedError: another process, or another thread of this one, holds it.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    lock_path = path / LOCK_FILE
    key = str(lock_path.resolve())
    me = threading.get_ident()
    with _GUARD:
        held = _HELD.get(key)
        if held is not None:
            if held[0] != me:
                raise DirectoryLockedError(path, what, read_holder(path))
            _HELD[key] = (me, held[1] + 1)
    if held is not None:  # re-entered by the holding thread
        try:
            yield lock_path
        finally:
            with _GUARD:
                _HELD[key] = (me, _HELD[key][1] - 1)
        return
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DirectoryLockedError(path, what, _holder_of(path)) from None
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "what": what,
            "since": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        with _GUARD:
            _HELD[key] = (me, 1)
        try:
            yield lock_path
        finally:
            with _GUARD:
                del _HELD[key]
            os.ftruncate(fd, 0)  # no stale holder for the next reader to report
    finally:
        os.close(fd)  # closing the only descriptor releases the lock
