"""A fourth backend that exists only in tests: one module and one registry entry, nothing else edited.

It runs the reference trl program under another name, so the test can train with it for real and show
that the spec, `backend: auto`, the CLI, `unify backends` and `unify compare` all learn of it from the
registry entry alone.
"""

from unifier.backends.peft import PeftBackend


class FourthBackend(PeftBackend):
    script_name = "train_fourth.py"


BACKEND_CLASS = FourthBackend
