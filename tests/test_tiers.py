"""The fast tier's guard bites: an inner pytest session (with the same guard as this suite) in which unmarked
tests start a trainer, in a child process and in the test process, fails exactly those tests; the same code
under the `slow` mark, and an unmarked test that trains nothing, pass."""

from __future__ import annotations

import os
import subprocess
import sys

from .conftest import ROOT
from .tier_guard.plugin import ENV

INNER = """
import subprocess, sys
import pytest

START_A_TRAINER = "from transformers import Trainer\\ntry:\\n    Trainer(model=None)\\nexcept Exception as e:\\n    print(e)"


def test_unmarked_child_process_trains():
    subprocess.run([sys.executable, "-c", START_A_TRAINER])  # its exit code is not even checked


def test_unmarked_in_process_trainer():
    exec(START_A_TRAINER)


@pytest.mark.slow
def test_marked_child_process_trains():
    subprocess.run([sys.executable, "-c", START_A_TRAINER])


def test_unmarked_test_that_trains_nothing():
    assert subprocess.run([sys.executable, "-c", "import json"]).returncode == 0
"""


def test_the_guard_fails_unmarked_tests_that_start_a_trainer(tmp_path):
    (tmp_path / "test_inner.py").write_text(INNER)
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    slow: trains\n")
    # the inner session arms its own guard; this (unmarked) test's guard must not see the inner slow test
    env = {key: value for key, value in os.environ.items() if key != ENV}
    env["PYTHONPATH"] = str(ROOT)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.tier_guard.plugin", "-p", "no:cacheprovider", "-rA",
         "test_inner.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    out = result.stdout
    assert result.returncode == 1, out[-3000:]
    assert "FAILED test_inner.py::test_unmarked_child_process_trains" in out, out[-3000:]
    assert "FAILED test_inner.py::test_unmarked_in_process_trainer" in out
    assert "PASSED test_inner.py::test_marked_child_process_trains" in out
    assert "PASSED test_inner.py::test_unmarked_test_that_trains_nothing" in out
    assert "2 failed, 2 passed" in out
    assert "has no `slow` mark" in out and "Trainer in -c" in out
