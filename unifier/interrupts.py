"""SIGINT / SIGTERM during a run: stop at the next optimizer step, save a checkpoint, record "interrupted".

The first signal sets a flag (and, for training processes unifier did not start in-process, writes the
run folder's stop-request file); the trainer callback that every backend carries (backends/hf_callbacks.py,
through the ms-swift plugin too) sees it at the next step boundary, asks the trainer to save a checkpoint
and stop. A second signal stops at once: unifier records the run as interrupted (resumable from its newest
complete checkpoint, if any) and exits. SIGKILL cannot be caught: the folder's checkpoints still resume.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}
_state: dict = {"signal": None, "stop_file": None}


class Interrupted(Exception):
    """The run stopped on a signal. `exit_code` is 130 (SIGINT) or 143 (SIGTERM)."""

    def __init__(self, signum: int, run_dir: Path, step: int | None, resumable: bool, at_once: bool = False):
        self.signum = signum
        self.exit_code = EXIT_CODES.get(signum, 128 + signum)
        self.run_dir = run_dir
        self.step = step
        self.resumable = resumable
        self.at_once = at_once
        super().__init__(f"interrupted by {signal.Signals(signum).name}")


class StopAtOnce(BaseException):
    """The second signal: unwind now (BaseException, so library code that catches Exception lets it pass)."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(signal.Signals(signum).name)


def requested() -> int | None:
    """The signal that asked this process's run to stop, if any."""
    return _state["signal"]


def stop_requested(stop_file: str | os.PathLike | None = None) -> bool:
    """For trainer callbacks: a signal reached this process, or unifier wrote the stop-request file."""
    return _state["signal"] is not None or (stop_file is not None and os.path.exists(stop_file))


def _handler(signum, frame):
    if _state["signal"] is not None:
        raise StopAtOnce(signum)
    _state["signal"] = signum
    stop_file = _state["stop_file"]
    if stop_file is not None:
        with contextlib.suppress(OSError):
            Path(stop_file).write_text(f"{signal.Signals(signum).name}\n")
    from . import terminal

    with contextlib.suppress(Exception):
        os.write(
            terminal.stderr_fd(),
            (
                f"\n{signal.Signals(signum).name}: stopping at the next optimizer step and saving a checkpoint; "
                "send it again to stop at once\n"
            ).encode(),
        )


@contextlib.contextmanager
def handling_signals(stop_file: Path) -> Iterator[None]:
    """Install the handlers for the duration of a run (main thread only; elsewhere it does nothing)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _state.update(signal=None, stop_file=str(stop_file))
    previous = {sig: signal.signal(sig, _handler) for sig in EXIT_CODES}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _state["stop_file"] = None


def install_worker_handlers() -> None:
    """In a training process started by torchrun: the first SIGINT/SIGTERM asks for a stop at the next step
    (torchrun forwards the signal to every worker); a second one stops at once."""
    _state.update(signal=None, stop_file=None)
    for sig in EXIT_CODES:
        signal.signal(sig, _handler)
