"""Mutation testing of the translation and safety code with cosmic-ray: `make mutation`.

    .venv/bin/python tests/mutation/run_mutation.py [--module NAME ...] [--report-only]

Each module is mutated in a copy of the repository (so the working tree is never touched, and tests can
run meanwhile), one mutant at a time, and the module's fast tests run against it: a mutant the tests still
pass is a survivor. Writes docs/mutation.md: killed / survived per module, and every survivor with the line
it changed and either the test that now kills it or a one-line reason it may survive (SURVIVOR_REASONS).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tarfile
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
FAST = ["-x", "-q", "-p", "no:cacheprovider", "-m", "not slow"]
# module -> the fast tests that own it
TRANSLATION = ["tests/test_translation.py", "tests/test_golden_plans.py", "tests/test_field_coverage.py"]
MODULES = {
    "backends/trl_config.py": TRANSLATION,
    "backends/swift.py": [
        *TRANSLATION,
        "tests/test_safety_nets.py",
        "tests/test_architecture.py",
        "tests/test_recipes.py",
    ],
    "backends/unsloth.py": [*TRANSLATION, "tests/test_recipes.py"],
    "unifier/secrets.py": ["tests/test_folder_safety_and_secrets.py"],
    "unifier/ownership.py": ["tests/test_folder_safety_and_secrets.py"],
}
# survivors that are equivalent mutants or out of the tests' reach, by (module, changed line text): the reason
_SORTS_FIRST = (
    "`<=`/`>=`/`>` for `==`/`!=` against the Literal value that sorts first (or last) among the field's "
    "allowed values ({}), so the comparison agrees on every value the spec lets through"
)
SURVIVOR_REASONS: dict[tuple[str, str], str] = {
    ("backends/trl_config.py", 'if a.type == "full":'): _SORTS_FIRST.format("full < lora < qlora"),
    (
        "backends/trl_config.py",
        '"assistant_only_loss": ctx.data_kind == "chat" and d.assistant_only_loss,',
    ): _SORTS_FIRST.format("chat < preference < text"),
    ("backends/trl_config.py", 'if t.method == "dpo":'): _SORTS_FIRST.format("dpo < sft"),
    ("backends/trl_config.py", 'if method != "dpo":'): _SORTS_FIRST.format("dpo < sft"),
    (
        "backends/trl_config.py",
        'return {"trainer_args": {"bf16": dtype == "bfloat16", "fp16": dtype == "float16", "use_cpu": ctx.on_cpu}}',
    ): _SORTS_FIRST.format("bfloat16 < float16 < float32; the fp16 mutant is killed by the precision test"),
    ("backends/trl_config.py", "if q.bits == 8:"): _SORTS_FIRST.format("bits 4 or 8"),
}
# mutants no test can tell apart from the original, by kind
EQUIVALENT = {
    "annotation": "changes a type annotation, which `from __future__ import annotations` never evaluates",
    "is": "`is` for `==` on a spec Literal: pydantic returns the interned literal, so both agree",
}


def copy_repository(target: Path) -> None:
    skip = {".venv", ".ci-cache", ".git", "runs", "__pycache__", "mutants"}
    with tempfile.TemporaryFile() as buffer:
        with tarfile.open(fileobj=buffer, mode="w") as archive:
            for item in ROOT.iterdir():
                if item.name not in skip:
                    archive.add(
                        item,
                        arcname=item.name,
                        filter=lambda info: None if "__pycache__" in info.name else info,
                    )
        buffer.seek(0)
        with tarfile.open(fileobj=buffer) as archive:
            archive.extractall(target, filter="data")
    # the copy's `unifier.backends` is its own backends/ (the editable install maps the original)
    (target / "unifier" / "backends").symlink_to("../backends")


def run_module(module: str, tests: list[str], work: Path, sessions: Path) -> dict:
    config = sessions / (module.replace("/", "_") + ".toml")
    session = config.with_suffix(".sqlite")
    command = shlex.join([PYTHON, "-m", "pytest", *FAST, *tests])
    config.write_text(
        "[cosmic-ray]\n"
        f'module-path = "{module}"\ntimeout = 120.0\nexcluded-modules = []\ntest-command = "{command}"\n\n'
        '[cosmic-ray.distributor]\nname = "local"\n'
    )
    env = {
        **os.environ,
        "PYTHONPATH": str(work),
        "UNIFIER_CACHE": str(ROOT / ".ci-cache"),
        "HF_HUB_OFFLINE": "1",
    }
    cosmic = str(Path(PYTHON).with_name("cosmic-ray"))
    baseline = subprocess.run(shlex.split(command), cwd=work, env=env, capture_output=True, text=True)
    if baseline.returncode != 0:  # every mutant would count as killed
        raise SystemExit(f"{module}: the tests fail without any mutant:\n{baseline.stdout[-3000:]}")
    session.unlink(missing_ok=True)
    subprocess.run(
        [cosmic, "init", str(config), str(session)], cwd=work, env=env, check=True, capture_output=True
    )
    started = time.monotonic()
    subprocess.run(
        [cosmic, "exec", str(config), str(session)], cwd=work, env=env, check=True, capture_output=True
    )
    dump = subprocess.run(
        [cosmic, "dump", str(session)], cwd=work, env=env, check=True, capture_output=True, text=True
    ).stdout
    return summarize(module, dump, work, time.monotonic() - started)


def summarize(module: str, dump: str, work: Path, seconds: float) -> dict:
    source = (work / module).read_text().splitlines()
    killed, survivors, other = 0, [], 0
    for line in dump.splitlines():
        item, result = json.loads(line)
        outcome = (result or {}).get("test_outcome")
        if outcome == "killed":
            killed += 1
        elif outcome == "survived":
            mutation = item["mutations"][0]
            row = mutation["start_pos"][0]
            text = source[row - 1].strip()
            survivors.append(
                {
                    "line": row,
                    "text": text,
                    "operator": mutation["operator_name"],
                    "function": mutation.get("definition_name"),
                    "reason": equivalent(mutation, text) or SURVIVOR_REASONS.get((module, text)),
                }
            )
        else:
            other += 1  # incompetent (the mutant does not import) or timed out: killed in effect
    return {
        "module": module,
        "killed": killed + other,
        "survived": len(survivors),
        "survivors": survivors,
        "seconds": round(seconds),
    }


def equivalent(mutation: dict, text: str) -> str | None:
    operator = mutation["operator_name"]
    if text.startswith("def ") and "->" in text and "Binary" in operator:
        return EQUIVALENT["annotation"]
    if operator.endswith(("_Eq_Is", "_NotEq_IsNot")):
        return EQUIVALENT["is"]
    return None


def write_report(results: list[dict]) -> Path:
    lines = [
        "# Mutation testing",
        "",
        f"`make mutation` (tests/mutation/run_mutation.py, cosmic-ray), {date.today().isoformat()}, on a 2-core CPU",
        "machine. Each mutant is one small change (an operator, a constant, a comparison, a boolean) to one line;",
        "the module's fast tests run against it. A survivor is a change no test noticed.",
        "",
        "| module | mutants | killed | survived | of which equivalent | unexplained | time |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        total = r["killed"] + r["survived"]
        explained = sum(1 for s in r["survivors"] if s["reason"])
        unexplained = r["survived"] - explained
        lines.append(
            f"| `{r['module']}` | {total} | {r['killed']} | {r['survived']} | {explained} | "
            f"{unexplained} ({unexplained / total:.0%}) | {max(1, r['seconds'] // 60)} min |"
        )
    for r in results:
        if r["survivors"]:
            lines += ["", f"## Survivors in `{r['module']}`", ""]
            for s in r["survivors"]:
                why = s["reason"] or "no reason recorded: a test is missing"
                lines.append(
                    f"- line {s['line']} (`{s['function']}`, {s['operator']}): `{s['text']}` — {why}"
                )
    path = ROOT / "docs" / "mutation.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--module", action="append", choices=sorted(MODULES), help="only these modules")
    args = parser.parse_args()
    modules = args.module or list(MODULES)
    with tempfile.TemporaryDirectory(prefix="unifier-mutation-") as scratch:
        work, sessions = Path(scratch) / "repo", Path(scratch) / "sessions"
        work.mkdir()
        sessions.mkdir()
        copy_repository(work)
        results = []
        for module in modules:
            print(f"{module}: mutating ...", flush=True)
            result = run_module(module, MODULES[module], work, sessions)
            print(
                f"  {result['killed']} killed, {result['survived']} survived ({result['seconds']} s)",
                flush=True,
            )
            results.append(result)
    print(f"wrote {write_report(results)}")


if __name__ == "__main__":
    main()
