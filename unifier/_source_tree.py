"""`unifier.backends` from a source tree that is only on PYTHONPATH (no install).

backends/ sits at the top of the repository (one module per backend) and is installed as unifier.backends
(pyproject.toml's package-dir; the editable install maps it the same way). A checkout put on PYTHONPATH, as on
the lent GPU machine where nothing is installed, has no such mapping: this finder gives the same name the same
folder, so `import unifier.cli` works there too (tests/test_gpu_bench.py runs the CLI from a copy of the tree).
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from pathlib import Path

NAME = "unifier.backends"
PACKAGE = Path(__file__).resolve().parent
SOURCE_BACKENDS = PACKAGE.parent / "backends"


class _BackendsFolder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != NAME:
            return None
        return importlib.util.spec_from_file_location(
            NAME, SOURCE_BACKENDS / "__init__.py", submodule_search_locations=[str(SOURCE_BACKENDS)]
        )


def find_backends() -> None:
    """Install the finder when unifier runs from a checkout (an installed wheel has unifier/backends/)."""
    if (PACKAGE / "backends").is_dir() or not (SOURCE_BACKENDS / "registry.py").is_file():
        return
    if not any(isinstance(finder, _BackendsFolder) for finder in sys.meta_path):
        sys.meta_path.append(_BackendsFolder())
