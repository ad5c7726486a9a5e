"""One writer per run folder: an exclusive lock held for the whole run (released by the OS if the process dies)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
from pathlib import Path

from .errors import UserError
from .runfolder import now

_HELD: set[int] = set()  # file descriptors of the locks this process holds


def held_fds() -> tuple[int, ...]:
    """For launching training processes: the child inherits the lock, so the folder stays locked while the
    training outlives unifier (a SIGKILLed unifier's children finish their step first)."""
    return tuple(sorted(_HELD))


class RunLock:
    def __init__(self, path: Path):
        self.path = path
        self._handle = None

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 (held open for the run's lifetime)
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = _holder(handle.read())
            handle.close()
            raise UserError(
                f"{self.path.parent}: another unify run is writing this folder ({holder}; or training "
                "processes it started, which finish their step first)",
                hint="wait for it to finish, stop it, or choose another output.dir",
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": now()}) + "\n")
        handle.flush()
        self._handle = handle
        _HELD.add(handle.fileno())
        return self

    def release(self) -> None:
        if self._handle is not None:
            _HELD.discard(self._handle.fileno())
            with contextlib.suppress(OSError):
                fcntl.flock(self._handle.fileno(), fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _holder(text: str) -> str:
    try:
        info = json.loads(text)
        return f"pid {info['pid']} on host {info['host']}, since {info['since']}"
    except (ValueError, KeyError, TypeError):
        return "its pid is unknown"
