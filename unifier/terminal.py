"""Quiet by default: what other libraries print goes to the run folder's run.log, the terminal shows unifier's
own lines (progress, the result, warnings and errors).

`captured()` points file descriptors 1 and 2 at a log file, so Python prints, C libraries' messages and child
processes (torchrun and its workers) all land there, and keeps copies of the real terminal for unifier:
`stdout()` / `stderr()` (and the UNIFIER_TERMINAL_FD variable, for unifier's code in child processes). Until
the run folder exists the log is a temporary file; `log_to(folder.log)` moves it into the folder. `unify run
-v` does not capture: everything is printed as it comes.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TextIO

TERMINAL_FD_ENV = "UNIFIER_TERMINAL_FD"


class _Capture:
    def __init__(self):
        self.terminal_out = os.dup(1)
        self.terminal_err = os.dup(2)
        os.set_inheritable(self.terminal_err, True)
        self.out = os.fdopen(self.terminal_out, "w", buffering=1, encoding="utf-8", closefd=False)
        self.err = os.fdopen(self.terminal_err, "w", buffering=1, encoding="utf-8", closefd=False)
        self.log_path: Path | None = None
        self.log = tempfile.TemporaryFile(mode="w+b")  # noqa: SIM115 (held until close())
        self._point_at(self.log.fileno())

    def _point_at(self, fd: int) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(fd, 1)
        os.dup2(fd, 2)

    def log_to(self, path: Path) -> None:
        """From now on the log is `path` (appended to); what was captured before goes first."""
        sys.stdout.flush()
        sys.stderr.flush()
        handle = open(path, "ab")  # noqa: SIM115 (held until close())
        if self.log_path is None:
            self.log.seek(0)
            shutil.copyfileobj(self.log, handle)
            handle.flush()
        self.log.close()
        self.log, self.log_path = handle, Path(path)
        self._point_at(handle.fileno())

    def close(self) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(self.terminal_out, 1)
        os.dup2(self.terminal_err, 2)
        self.log.close()
        if self.log_path is not None:  # what was printed after the run folder's last scrub
            from .secrets import scrub_tree

            scrub_tree(self.log_path)
        self.out.close()
        self.err.close()
        os.close(self.terminal_out)
        os.close(self.terminal_err)


_capture: _Capture | None = None
_last_log: Path | None = None
_child_terminal: TextIO | None = None


@contextlib.contextmanager
def captured(enabled: bool = True):
    """Everything printed inside goes to the log; unifier writes to the terminal through stdout()/stderr()."""
    global _capture, _last_log
    if not enabled or _capture is not None:
        yield
        return
    _capture = _Capture()
    os.environ[TERMINAL_FD_ENV] = _fd_identity(_capture.terminal_err)
    try:
        yield
    finally:
        capture, _capture = _capture, None
        os.environ.pop(TERMINAL_FD_ENV, None)
        _last_log = capture.log_path
        capture.close()


def log_to(path: Path) -> None:
    """The run folder exists: keep the captured output in its run.log (nothing to do when not capturing)."""
    if _capture is not None:
        _capture.log_to(path)


def current_log() -> Path | None:
    """Where captured output goes now (None: a temporary file, or not capturing)."""
    return _capture.log_path if _capture is not None else None


def held_fds() -> tuple[int, ...]:
    """The terminal's descriptor, for child processes that draw unifier's progress."""
    return (_capture.terminal_err,) if _capture is not None else ()


def stderr_fd() -> int:
    """The terminal's descriptor (for a signal handler's one unbuffered line)."""
    return _capture.terminal_err if _capture is not None else 2


def stdout() -> TextIO:
    return _capture.out if _capture is not None else sys.stdout


def stderr() -> TextIO:
    """unifier's own progress and messages: the terminal, also from unifier's code in a child process."""
    if _capture is not None:
        return _capture.err
    return _inherited_terminal() or sys.stderr


ERROR_LINE = re.compile(r"\b\w*(Error|Exception)\b:|\berror:|^Traceback")


def log_tail(lines: int = 8) -> list[str]:
    """For a failure's message: the last error lines of the latest captured run's log, at most `lines` (a
    child process's traceback names the error; torchrun's summary names none)."""
    if _last_log is None or not _last_log.is_file():
        return []
    with open(_last_log, "rb") as handle:
        handle.seek(max(0, handle.seek(0, os.SEEK_END) - 256_000))
        text = handle.read().decode("utf-8", "replace").replace("\r", "\n")
    kept = [line.rstrip() for line in text.splitlines() if line.strip()]
    errors = list(dict.fromkeys(line for line in kept if ERROR_LINE.search(line)))
    return errors[-lines:]


def last_log() -> Path | None:
    return _last_log


def _fd_identity(fd: int) -> str:
    """'fd:device:inode': a child process uses the descriptor only if it still is the terminal it was (a
    process that did not inherit it may have reused the number for a file of its own)."""
    info = os.fstat(fd)
    return f"{fd}:{info.st_dev}:{info.st_ino}"


def _inherited_terminal() -> TextIO | None:
    global _child_terminal
    if _child_terminal is None:
        fd = os.environ.get(TERMINAL_FD_ENV, "").split(":")[0]
        try:
            if not fd.isdigit() or _fd_identity(int(fd)) != os.environ[TERMINAL_FD_ENV]:
                return None
        except OSError:
            return None
        _child_terminal = os.fdopen(int(fd), "w", buffering=1, encoding="utf-8", closefd=False)
    return _child_terminal


class TerminalFile:
    """A file object that writes wherever unifier's terminal output goes at the time of writing (for rich
    Consoles created once, at import)."""

    def __init__(self, which: str):
        self.which = which

    def _target(self) -> TextIO:
        return stdout() if self.which == "stdout" else stderr()

    def write(self, text: str) -> int:
        return self._target().write(text)

    def flush(self) -> None:
        self._target().flush()

    def isatty(self) -> bool:
        return self._target().isatty()

    def fileno(self) -> int:
        return self._target().fileno()

    @property
    def encoding(self) -> str:
        return getattr(self._target(), "encoding", "utf-8")


def training_bar():
    """unifier's one training progress bar (steps, the latest loss, elapsed and remaining time), on the terminal."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("training"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[loss]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(file=stderr()),
    )


@contextlib.contextmanager
def progress_from_metrics(metrics_file: Path, total: int | None):
    """One progress bar drawn from metrics.jsonl, for training in processes that cannot reach the terminal
    (torchrun's workers): the latest logged step and loss, every half second."""
    import json
    import threading

    done = threading.Event()
    progress = training_bar()
    task = progress.add_task("train", total=total, loss="")

    def follow():
        while not done.wait(0.5):
            try:
                lines = Path(metrics_file).read_text(encoding="utf-8").splitlines()
            except OSError:
                continue
            for line in reversed(lines):
                try:
                    row = json.loads(line)
                except ValueError:
                    continue
                if isinstance(row.get("loss"), (int, float)):
                    progress.update(task, completed=row.get("step", 0), loss=f"loss {row['loss']:.4f}")
                    break

    progress.start()
    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        progress.stop()
