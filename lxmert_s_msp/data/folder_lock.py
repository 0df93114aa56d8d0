"""One process at a time writes a folder: an exclusive lock that names its holder and dies with it.

Two runs into one output folder (two terminals, a re-submitted job) overwrite each other's half-written files
and can both exit 0. `folder_lock` takes an exclusive `flock` on a lock file for as long as the writer runs
and records the holder's pid, host and start time in it; a second writer is refused with them. The kernel
drops the lock when its process ends, however it ends (SIGKILL included), so the lock file a killed run
leaves behind is simply taken over by the next one: no stale-lock cleanup to get wrong, no pid to guess
alive. The file stays in place (deleting it would let a third process lock a new file while the second
still holds the old one).

The lock is advisory: it keeps apart the writers that take it (`recipes/pretrain.py` on its output folder,
the synthetic world's generator on the world), not other programs.
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

logger = logging.getLogger(__name__)

# errnos of file systems that cannot lock (some network and parallel file systems)
_NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS}


class FolderInUseError(OSError):
    """Another live process holds the lock; the message names it and what to do."""


def _holder(lock_file: Path) -> str:
    """Who the lock file says holds it: 'pid N on HOST since TIME'."""
    try:
        pid, host, since = lock_file.read_text().split(maxsplit=2)
    except (OSError, ValueError):  # taken a moment ago, its holder not yet written
        return "a process that has not yet written its pid"
    return f"pid {pid} on {host}, since {since.strip()}"


def _lock(handle: int, lock_file: Path, what: str, remedy: str, mode: int) -> None:
    """Lock `handle` (`mode`: shared or exclusive) without waiting. Where the file system cannot lock, go on
    unlocked and say so in the log."""
    try:
        fcntl.flock(handle, mode | fcntl.LOCK_NB)
    except BlockingIOError:
        raise FolderInUseError(
            f"{what} is in use by another process ({_holder(lock_file)}): {remedy}"
        ) from None
    except OSError as error:
        if error.errno not in _NO_LOCKS:
            raise
        logger.warning(
            "%s: the file system cannot lock %s (%s): two writers are not kept apart",
            what,
            lock_file,
            error.strerror,
        )


@contextmanager
def folder_lock(lock_file: Path, what: str, remedy: str) -> Iterator[None]:
    """Hold an exclusive lock on `lock_file` (created with its folder) while the block runs, recording this
    process in it; `FolderInUseError` ("<what> is in use by another process (pid ..., host, since ...):
    <remedy>") when another process holds it."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    handle = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _lock(handle, lock_file, what, remedy, fcntl.LOCK_EX)
        os.ftruncate(handle, 0)
        since = time.strftime("%Y-%m-%dT%H:%M:%S")
        os.write(handle, f"{os.getpid()} {socket.gethostname()} {since}\n".encode())
        yield
    finally:
        os.close(handle)  # releases the lock


def check_not_locked(lock_file: Path, what: str, remedy: str) -> None:
    """Refuse (`FolderInUseError`) while another process holds `lock_file`; nothing is created or kept."""
    try:
        handle = os.open(lock_file, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        _lock(handle, lock_file, what, remedy, fcntl.LOCK_SH)
    finally:
        os.close(handle)
