"""Shared fixtures: the tiny local model, recipe writing, and running the real `unify` CLI."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"
os.environ.setdefault("UNIFIER_CACHE", str(ROOT / ".ci-cache"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("UNSLOTH_COMPILE_DISABLE", "0")


def unify(*args: str, cwd: Path | None = None, timeout: int = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the real CLI in its own process (backends patch libraries; one process each keeps them apart)."""
    exe = [sys.executable, "-m", "unifier.cli"]
    return subprocess.run([*exe, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def load_recipe(name: str = "tiny-cpu-sft.yaml") -> dict:
    return yaml.safe_load((RECIPES / name).read_text())


def write_recipe(folder: Path, raw: dict, name: str = "recipe.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    from unifier.tiny import ensure_tiny_model

    return ensure_tiny_model()


@pytest.fixture
def tiny_recipe(tmp_path):
    """A factory: the tiny SFT recipe with changes, written under tmp_path, output inside tmp_path."""

    def make(changes: dict | None = None, base: str = "tiny-cpu-sft.yaml", name: str = "recipe.yaml") -> Path:
        raw = load_recipe(base)
        raw["output"]["dir"] = str(tmp_path / "runs" / "{name}-{backend}")
        for dotted, value in (changes or {}).items():
            node = raw
            *parents, last = dotted.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[last] = value
        return write_recipe(tmp_path, raw, name)

    return make
