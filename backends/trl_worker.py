"""torchrun's entry for each process of a multi-process peft run:
`python -m unifier.backends.trl_worker PROGRAM_MODULE:main CALLBACKS` with the program's CONFIG (JSON) in
UNIFIER_PROGRAM_CONFIG. It builds unifier's callbacks in this process (backends/hf_callbacks.py) and calls the
program's main(), the same function a one-process run calls in unifier's own process."""

import importlib
import json
import os
import sys


def main(argv: list[str]) -> None:
    from unifier.backends.ranks import prepare_worker

    prepare_worker()  # stop at the next step on a signal; an exception is recorded for torchrun's report
    from unifier.backends.hf_callbacks import build_callbacks

    entry, names = argv[0], tuple(name for name in argv[1].split(",") if name)
    config = json.loads(os.environ["UNIFIER_PROGRAM_CONFIG"])
    module, function = entry.split(":")
    program = getattr(importlib.import_module(module), function)
    program(config, callbacks=build_callbacks(names, config["paths"]))


if __name__ == "__main__":
    main(sys.argv[1:])
