"""The fast tier cannot rot: a test without the `slow` mark that starts a trainer (in the test process, or in
any Python process it starts: `unify run`, `compare`, torchrun workers, a printed script) fails with the
trainer's name and process. tests/conftest.py uses these hooks; tests/test_tiers.py shows they bite."""

from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path

import pytest

GUARD_DIR = Path(__file__).resolve().parent
ENV = "UNIFIER_TEST_NO_TRAINING"


def _install_in_this_process() -> None:
    spec = importlib.util.spec_from_file_location("unifier_tier_guard", GUARD_DIR / "sitecustomize.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)


_install_in_this_process()


def _guarded(item) -> bool:
    return item.get_closest_marker("slow") is None


def _arm(item) -> None:
    if not _guarded(item) or hasattr(item, "_tier_guard"):
        return
    handle, report = tempfile.mkstemp(prefix="unifier-tier-guard-", suffix=".txt")
    os.close(handle)
    item._tier_guard = (Path(report), os.environ.get(ENV), os.environ.get("PYTHONPATH"))
    os.environ[ENV] = report
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(GUARD_DIR), *([item._tier_guard[2]] if item._tier_guard[2] else [])]
    )


def _check(item) -> None:
    guard = getattr(item, "_tier_guard", None)
    if guard is None:
        return
    started = guard[0].read_text(encoding="utf-8") if guard[0].is_file() else ""
    if started:
        guard[0].write_text("")
        pytest.fail(
            "this test trains but has no `slow` mark (`make test-fast` must start no trainer): mark it "
            "@pytest.mark.slow or assert on a shared scenario fixture instead. Trainers started:\n" + started,
            pytrace=False,
        )


def _disarm(item) -> None:
    guard = getattr(item, "_tier_guard", None)
    if guard is None:
        return
    report, old_env, old_path = guard
    for key, old in ((ENV, old_env), ("PYTHONPATH", old_path)):
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old
    report.unlink(missing_ok=True)
    del item._tier_guard


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_setup(item):
    _arm(item)
    try:
        return (yield)
    finally:
        _check(item)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_call(item):
    try:
        return (yield)
    finally:
        _check(item)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_teardown(item, nextitem):
    try:
        return (yield)
    finally:
        try:
            _check(item)
        finally:
            _disarm(item)
