"""The fast tier's guard, in every Python process a test starts (tests/conftest.py puts this folder first on
PYTHONPATH for tests without the `slow` mark) and in the test process itself.

When UNIFIER_TEST_NO_TRAINING names a file, creating any transformers Trainer (trl's and unsloth's trainers,
ms-swift's, the peft backend's: all subclass it) appends the process and the trainer's class to that file and
raises, so a test that trains without the `slow` mark fails (conftest reads the file after the test), even when
the training happened in a child process whose exit code the test expected to be non-zero.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys

ENV = "UNIFIER_TEST_NO_TRAINING"
GUARDED_MODULE = "transformers.trainer"


def _guard(trainer_class) -> None:
    original = trainer_class.__init__
    if getattr(original, "_unifier_tier_guard", False):
        return

    def __init__(self, *args, **kwargs):
        report = os.environ.get(ENV)
        if report:
            with open(report, "a", encoding="utf-8") as handle:
                handle.write(f"pid {os.getpid()}: {type(self).__name__} in {' '.join(sys.argv)[:300]}\n")
            raise RuntimeError(
                f"{type(self).__name__} started in a test without the `slow` mark (the fast tier trains nothing)"
            )
        original(self, *args, **kwargs)

    __init__._unifier_tier_guard = True
    trainer_class.__init__ = __init__


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Wraps Trainer.__init__ as soon as transformers.trainer is imported (nothing is imported early)."""

    def find_spec(self, name, path=None, target=None):
        if name != GUARDED_MODULE:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        exec_module = loader.exec_module

        def exec_and_guard(module):
            exec_module(module)
            _guard(module.Trainer)

        loader.exec_module = exec_and_guard
        return spec


def install() -> None:
    if GUARDED_MODULE in sys.modules:
        _guard(sys.modules[GUARDED_MODULE].Trainer)
    elif not any(isinstance(finder, _PatchOnImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _PatchOnImport())


install()
