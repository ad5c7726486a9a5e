"""`python -m unifier.backends.rank_launcher FAILURES_JSON <torchrun arguments>`: torchrun itself (torch's
torch.distributed.run), and when a rank fails (torchrun then stops the other ranks of the node) a JSON list of
the failed ranks with their exit code, signal and recorded error in FAILURES_JSON (backends/ranks.py reads it)."""

import json
import socket
import sys

NO_RECORD = "To enable traceback see"  # torchrun's text for a rank that wrote no error file


def failure_record(rank: int, failure) -> dict:
    message = failure.message
    if isinstance(message, dict):  # written by torch's ErrorHandler: {"message": "...", "extraInfo": {...}}
        message = message.get("message", "")
    if not isinstance(message, str) or message.startswith(NO_RECORD) or failure.exitcode < 0:
        message = ""
    return {
        "rank": rank,
        "local_rank": failure.local_rank,
        "host": socket.gethostname(),
        "pid": failure.pid,
        "exitcode": failure.exitcode,
        "timestamp": failure.timestamp,
        "signal": failure.signal_name() if failure.exitcode < 0 else None,
        "message": message.strip()[-2000:],
    }


def main(argv: list[str]) -> int:
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    failures_file, torchrun = argv[0], argv[1:]
    try:
        run(parse_args(torchrun))
    except ChildFailedError as exc:
        records = [failure_record(rank, f) for rank, f in sorted(exc.failures.items())]
        with open(failures_file, "w", encoding="utf-8") as handle:
            json.dump(records, handle, indent=2)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
