"""Step timer for the benchmarks: on PYTHONPATH, every Python process of a timed run loads it.

When `transformers.trainer_callback` is first imported, `CallbackHandler.on_step_end` is wrapped to
record `time.perf_counter()` at the end of every optimizer step. The Trainer loop of every backend
(peft/trl, unsloth, ms-swift) calls it once per step, so the intervals between stamps are whole step
times: forward, backward, optimizer, data loading and every callback of the step (metrics, progress).
The same file is loaded for `unify run` and for the native program, so both are timed the same way.
At exit the stamps go to $UNIFIER_BENCH_STEP_TIMES/<pid>.json. Nothing else is changed; without that
variable this file does nothing.
"""

import atexit
import json
import os
import sys
import time
from importlib.abc import MetaPathFinder
from importlib.machinery import PathFinder

_FOLDER = os.environ.get("UNIFIER_BENCH_STEP_TIMES")
_TARGET = "transformers.trainer_callback"
_stamps: list[float] = []


def _wrap(module) -> None:
    handler = module.CallbackHandler
    original = handler.on_step_end

    def on_step_end(self, args, state, control):
        _stamps.append(time.perf_counter())
        return original(self, args, state, control)

    handler.on_step_end = on_step_end


class _PatchOnImport(MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != _TARGET:
            return None
        sys.meta_path.remove(self)
        spec = PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        execute = spec.loader.exec_module

        def exec_module(module):
            execute(module)
            _wrap(module)

        spec.loader.exec_module = exec_module
        return spec


def _write() -> None:
    if _stamps:
        path = os.path.join(_FOLDER, f"{os.getpid()}.json")
        with open(path, "w", encoding="utf-8") as handle:
            json.dump({"pid": os.getpid(), "argv": sys.argv[:3], "stamps": _stamps}, handle)


if _FOLDER:
    sys.meta_path.insert(0, _PatchOnImport())
    atexit.register(_write)
