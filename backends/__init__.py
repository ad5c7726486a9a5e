"""unifier's backends, installed as `unifier.backends` (the folder sits at the top of the repository).

The list of backends is backends/registry.py; each backend is one module there.
"""

if (
    __name__ != "unifier.backends"
):  # `import backends` from a checkout would load a second copy of every module
    raise ImportError(
        "the 'backends' folder is the package 'unifier.backends': import unifier.backends instead "
        "(install the project with `make setup` or `pip install -e .`)"
    )

from .registry import all_backends, get_backend

__all__ = ["all_backends", "get_backend"]
