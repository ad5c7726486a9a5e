"""Python as on the lent GPU machine, where unifier is not installed: this venv's editable install of unifier
(its finder, added by a .pth file before this runs) is removed, so `unifier` comes from the checkout on
PYTHONPATH alone. Put this folder first on PYTHONPATH (tests/test_gpu_bench.py does, for every process)."""

import sys

sys.meta_path[:] = [
    finder for finder in sys.meta_path if "editable" not in getattr(finder, "__name__", "").lower()
]
sys.path_hooks[:] = [hook for hook in sys.path_hooks if "editable" not in repr(hook).lower()]
sys.path_importer_cache.clear()
for name in [m for m in sys.modules if m == "unifier" or m.startswith("unifier.")]:
    del sys.modules[name]
