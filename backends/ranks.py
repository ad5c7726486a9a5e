"""Several training processes, started by torchrun for every backend that runs them (swift, peft).

launch(...)      starts torchrun (through backends/rank_launcher.py) as unifier's child: it holds the run
                 folder's lock, gets SIGTERM when unifier dies, and when a rank fails torchrun stops the
                 others and the launcher writes which rank failed and why (ranks/failures-node<N>.json); unifier then
                 raises RanksFailed naming them, recorded in run.json
torchrun_args()  the node's torchrun flags from compute (nproc_per_node, nnodes, node_rank, master address)
prepare_worker() in each training process: stop gracefully on the first signal, record an exception where
                 torchrun reports it, accept 'cpu:N' checkpoint locations
write_rank_record(...) at the end of training every rank writes the digest of its trainable weights, which
                 the after-training CheckRanks step compares (one model trained together, not copies)
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

FAILURES_FILE = "failures-node{node}.json"  # under the run folder's ranks/ (written by rank_launcher.py)


class RanksFailed(RuntimeError):
    """A training process of a multi-process run failed; torchrun stopped the others."""

    def __init__(self, message: str, failures: list[dict[str, Any]]):
        super().__init__(message)
        self.failures = failures


def torchrun_args(compute) -> list[str]:
    return [
        "--nproc_per_node",
        str(compute.nproc_per_node),
        "--nnodes",
        str(compute.nnodes),
        "--node_rank",
        str(compute.node_rank),
        "--master_addr",
        compute.master_addr,
        "--master_port",
        str(compute.master_port),
    ]


def node_rank(torchrun: tuple[str, ...] | list[str]) -> int:
    """--node_rank of torchrun's flags (0 without one)."""
    flags = list(torchrun)
    return int(flags[flags.index("--node_rank") + 1]) if "--node_rank" in flags else 0


def check_ranks(ctx):
    """The after-training step of a multi-process run: every rank reported the same trainable weights (all ranks
    of a one-node run; with several nodes each node counts only what it sees, so the count is not checked)."""
    from .plan import CheckRanks

    c = ctx.spec.compute
    return CheckRanks(
        ranks_dir=str(ctx.folder.ranks),
        expected_ranks=c.nproc_per_node if c.nnodes == 1 else None,
        world_size=c.world_size,
    )


def launch(torchrun: list[str], entry: list[str], env: dict[str, str], ranks_dir: str | Path) -> None:
    """torchrun <torchrun flags> <entry...> as unifier's child. A signal to unifier's process group reaches
    torchrun and its workers (they stop at the next step); a signal to unifier alone reaches them through the
    run folder's stop request. A failed rank ends the whole job (torchrun stops the other ranks)."""
    from unifier import terminal
    from unifier.runlock import held_fds

    failures = Path(ranks_dir) / FAILURES_FILE.format(node=node_rank(torchrun))
    failures.parent.mkdir(parents=True, exist_ok=True)
    failures.unlink(missing_ok=True)
    command = [sys.executable, "-m", "unifier.backends.rank_launcher", str(failures), *torchrun, *entry]
    child = subprocess.Popen(
        command,
        env={**os.environ, **env},
        preexec_fn=die_with_parent,
        pass_fds=held_fds() + terminal.held_fds(),
    )
    try:
        code = child.wait()
    except BaseException:  # unifier stops at once (a second signal): so do its training processes
        child.kill()
        child.wait()
        raise
    if code != 0:
        raise failed_ranks(failures, code)


def failed_ranks(failures_file: Path, code: int) -> RuntimeError:
    try:
        failures = json.loads(failures_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return RuntimeError(f"torchrun exited with code {code}")
    # timestamps are whole seconds: within one, a rank killed by a signal goes before a rank that raised
    failures.sort(key=lambda f: (consequence_level(f), f.get("timestamp", 0), not f.get("signal"), f["rank"]))
    described = describe_failure(failures[0])
    if len(failures) > 1:
        described += "; then " + "; ".join(describe_failure(f) for f in failures[1:])
    return RanksFailed(f"{described} (torchrun stopped the other ranks)", failures)


# what a rank raises when another rank of its group died first (gloo, NCCL, the c10d store)
LOST_PEER_MARKERS = (
    "Connection closed by peer",
    "Connection reset by peer",
    "Broken pipe",
    "remote process exited",
    "NCCL communicator was aborted",
    "DistNetworkError",
    "DistBackendError",
    "Socket Timeout",
)


def consequence_level(failure: dict[str, Any]) -> int:
    """0 for a cause (a rank killed by a signal other than torchrun's SIGTERM, or a real error), 1 for a rank
    that failed because a peer vanished (its collective broke), 2 for a rank torchrun stopped with SIGTERM.
    Timestamps alone cannot order them: torchrun stamps a rank without an error file when it notices the death,
    which is often after the peers' broken-collective errors."""
    if failure.get("signal"):
        return 2 if failure["signal"] == "SIGTERM" else 0
    message = failure.get("message") or ""
    return 1 if any(marker in message for marker in LOST_PEER_MARKERS) else 0


def describe_failure(failure: dict[str, Any]) -> str:
    where = f"rank {failure['rank']} (local rank {failure['local_rank']} on {failure['host']})"
    if failure.get("signal"):
        return f"{where} was killed by {failure['signal']}"
    message = (failure.get("message") or "").strip()
    return f"{where} failed with exit code {failure['exitcode']}" + (f": {message}" if message else "")


def die_with_parent() -> None:
    """In the child, before exec: SIGTERM when unifier's process ends (Linux), so no training is orphaned."""
    import ctypes
    import signal

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def prepare_worker() -> None:
    """In a training process torchrun started (LOCAL_RANK set); nothing otherwise."""
    if os.environ.get("LOCAL_RANK") is None:
        return
    from unifier.interrupts import install_worker_handlers

    install_worker_handlers()
    accept_indexed_cpu_locations()
    record_uncaught_exceptions()


def record_uncaught_exceptions() -> None:
    """An exception that ends this rank goes into torchrun's error file too, so the failure unifier records names
    it (torchrun's own `@record`, for an entry script unifier does not own)."""
    if not os.environ.get("TORCHELASTIC_ERROR_FILE"):
        return
    from torch.distributed.elastic.multiprocessing.errors import ErrorHandler

    handler = ErrorHandler()
    handler.initialize()
    previous = sys.excepthook

    def hook(kind, value, trace):
        with contextlib.suppress(Exception):
            handler.record_exception(value)
        previous(kind, value, trace)

    sys.excepthook = hook


def accept_indexed_cpu_locations() -> None:
    """Resuming a multi-process CPU run: transformers loads optimizer.pt with map_location=args.device, which is
    'cpu:0' under gloo, a location torch.load does not know; treat 'cpu:N' as the CPU."""
    import torch.serialization

    def restore(storage, location):
        return storage if isinstance(location, str) and location.startswith("cpu:") else None

    torch.serialization.register_package(30, lambda obj: None, restore)


def write_rank_record(ranks_dir: str | Path, model, global_step: int) -> None:
    import torch.distributed as dist

    from .probe import trainable_digest

    initialized = dist.is_available() and dist.is_initialized()
    record = {
        "rank": int(os.environ.get("RANK", 0)),
        "world_size": dist.get_world_size() if initialized else 1,
        "distributed_initialized": initialized,
        "backend": dist.get_backend() if initialized else None,
        "global_step": global_step,
        "trainable_digest": trainable_digest(model),
    }
    os.makedirs(ranks_dir, exist_ok=True)
    with open(os.path.join(ranks_dir, f"rank{record['rank']}.json"), "w") as handle:
        json.dump(record, handle)
