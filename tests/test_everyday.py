"""Everyday ergonomics (issue 14): --version, plain flag help, `init` options, the warm-up flag that says what
it is, loss.png with the eval loss, and `compare` that attempts every backend and reports failures."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from unifier import __version__

from .conftest import REFERENCE_STEPS, load_recipe, unify, write_recipe


def test_version_and_flag_help():
    result = unify("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"unifier {__version__}"
    for command in ([], ["run"], ["init"], ["compare"]):
        text = unify(*command, "--help").stdout
        assert "Usage: " in text and "<bool>" not in text, command


@pytest.mark.parametrize(
    "options,expected",
    [
        ([], {"adapter.type": "lora", "training.method": "sft", "compute.device": "cpu"}),
        (
            ["--qlora"],
            {"adapter.type": "qlora", "quantization.bits": 4, "quantization.compute_dtype": "float32"},
        ),
        (["--method", "dpo"], {"training.method": "dpo", "data.train.0.path": "builtin:tiny-preference"}),
        (["--method", "orpo"], {"training.method": "orpo", "training.orpo.beta": 0.1}),
        (["--method", "simpo"], {"training.simpo.beta": 2.0, "training.simpo.nll_weight": 0.0}),
        (["--method", "reward"], {"training.reward.center_coefficient": 0.0, "output.save": "adapter"}),
        (
            ["--model", "Qwen/Qwen3-8B", "--data", "train.jsonl", "--format", "alpaca", "--qlora"],
            {
                "model.name_or_path": "Qwen/Qwen3-8B",
                "model.dtype": "bfloat16",
                "compute.device": "auto",
                "data.train.0.format": "alpaca",
                "quantization.compute_dtype": "bfloat16",
            },
        ),
    ],
)
def test_init_options_write_a_recipe_that_validates(tmp_path, options, expected):
    target = tmp_path / "recipe.yaml"
    (tmp_path / "train.jsonl").write_text(json.dumps({"instruction": "Say hi.", "output": "Hi."}) + "\n")
    assert unify("init", str(target), *options).returncode == 0
    raw = yaml.safe_load(target.read_text())
    for dotted, value in expected.items():
        node = raw
        for part in dotted.split("."):
            node = node[int(part)] if part.isdigit() else node[part]
        assert node == value, (dotted, node)
    result = unify("validate", str(target), "--no-tokens")
    assert result.returncode == 0, result.stdout + result.stderr


def test_init_refuses_contradictory_options(tmp_path):
    result = unify("init", str(tmp_path / "r.yaml"), "--method", "dpo", "--format", "alpaca")
    assert result.returncode == 2 and "preference" in result.stderr and not (tmp_path / "r.yaml").exists()


def test_the_swift_warmup_flag_says_ratio_or_steps(tiny_recipe):
    ratio = unify("plan", str(tiny_recipe({"training.warmup_ratio": 0.05})), "--backend", "swift").stdout
    steps = unify("plan", str(tiny_recipe({"training.warmup_steps": 7})), "--backend", "swift").stdout
    assert "--warmup_ratio 0.05" in ratio and "--warmup_steps" not in ratio
    assert "--warmup_steps 7" in steps and "--warmup_ratio" not in steps


def test_loss_plot_draws_the_eval_loss(tmp_path, monkeypatch):
    from unifier import plots
    from unifier.runfolder import RunFolder

    folder = RunFolder(tmp_path / "run")
    folder.root.mkdir()
    rows = [{"step": s, "loss": 3.0 - 0.1 * s} for s in range(1, 5)] + [{"step": 2, "eval_loss": 2.9}]
    folder.metrics.write_text("".join(json.dumps(r) + "\n" for r in rows))
    drawn = {}
    real = plots.plot_losses
    monkeypatch.setattr(
        plots, "plot_losses", lambda curves, *a, **k: drawn.update(curves) or real(curves, *a, **k)
    )
    assert plots.plot_run_loss(folder, "run") == folder.loss_plot and folder.loss_plot.stat().st_size > 1000
    assert drawn == {"train loss": [(1, 2.9), (2, 2.8), (3, 2.7), (4, 2.6)], "eval loss": [(2, 2.9)]}


@pytest.mark.slow
def test_compare_attempts_every_backend_and_reports_a_failure(tiny_recipe, tmp_path):
    """swift diverges (its options replace the learning rate), peft still trains: exit 1, not 2 (no user
    mistake), the failure in compare.json, and `--set output.dir` decides where the runs go."""
    recipe = tiny_recipe(
        {
            "training.max_steps": 3,
            "backend_options": {"swift": {"learning_rate": 1e30, "max_grad_norm": 0}},
        }
    )
    runs = tmp_path / "mine-{backend}"
    result = unify(
        "compare", str(recipe), "--backends", "swift,peft", "--output", str(tmp_path / "cmp"),
        "--set", f"output.dir={runs}",
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    report = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert [f["backend"] for f in report["failed"]] == ["swift"] and report["failed"][0]["exit_code"] == 1
    assert "training failed" in report["failed"][0]["message"]
    assert json.loads((tmp_path / "mine-peft" / "run.json").read_text())["status"] == "completed"
    assert json.loads((tmp_path / "mine-swift" / "run.json").read_text())["status"] == "failed"
    assert "swift (1/2)" in result.stdout and "peft: completed" in result.stdout
    assert "fewer than two backends completed" in result.stdout
    # the swift run diverged: it stopped at the first non-finite step with a hint (peft's: test_honest_training)
    from .test_honest_training import assert_stopped_at_a_nonfinite_step

    swift_terminal = (tmp_path / "cmp" / "swift.log").read_text()
    assert_stopped_at_a_nonfinite_step(tmp_path / "mine-swift", swift_terminal, 3)


def trained_losses(folder: Path) -> list[float]:
    """Per-step losses of a run the native program trained: metrics.jsonl (ms-swift's plugin writes it) or the
    trainer's own log_history.json (the standalone trl scripts)."""
    metrics = folder / "metrics.jsonl"
    rows = (
        [json.loads(line) for line in metrics.read_text().splitlines()]
        if metrics.is_file()
        else json.loads((folder / "checkpoints" / "log_history.json").read_text())
    )
    return [row["loss"] for row in rows if row.get("loss") is not None]


@pytest.mark.slow
@pytest.mark.parametrize("backend,how", [("peft", "plan"), ("swift", "prepare"), ("unsloth", "plan")])
def test_prepared_folder_trains_with_its_run_script_like_unify_run(reference_runs, tmp_path, backend, how):
    """`unify prepare` / `unify plan --write DIR` write the data and the native program; `bash DIR/run.sh`,
    with no unifier around it, trains the same steps as `unify run` (the session's reference runs): the printed
    script imports nothing of unifier, the printed swift command passes every default explicitly."""

    reference = reference_runs.runs
    raw = load_recipe()
    raw["training"]["max_steps"] = REFERENCE_STEPS
    recipe = write_recipe(tmp_path, raw)
    folder = tmp_path / "prepared"
    if how == "plan":
        result = unify("plan", str(recipe), "--backend", backend, "--write", str(folder))
        assert result.returncode == 0, result.stderr[-3000:]
        assert result.stdout == (folder / "native" / f"train_{backend}.py").read_text()  # stdout: the program
        assert "run.sh" in result.stderr
        imports = [line for line in result.stdout.splitlines() if line.startswith(("import", "from"))]
        assert imports and "unifier" not in "\n".join(imports)
    else:
        result = unify("prepare", str(recipe), "--backend", backend, "--set", f"output.dir={folder}")
        assert result.returncode == 0, result.stderr[-3000:]
        printed = unify("plan", str(recipe), "--backend", backend, "--set", f"output.dir={folder}")
        assert printed.returncode == 0, printed.stderr
        assert "--weight_decay 0.0" in printed.stdout and "--lora_dropout 0.0" in printed.stdout
        assert "HF_HUB_OFFLINE=1" in printed.stdout
    record = json.loads((folder / "run.json").read_text())
    assert record["status"] == "prepared" and (folder / "data" / "train.jsonl").is_file()
    assert (
        not (folder / "checkpoints").exists() and not (folder / "metrics.jsonl").exists()
    )  # nothing trained

    trained = subprocess.run(["bash", str(folder / "run.sh")], capture_output=True, text=True, timeout=600)
    assert trained.returncode == 0, trained.stderr[-3000:]
    expected = [
        r["loss"] for r in map(json.loads, (reference[backend] / "metrics.jsonl").read_text().splitlines())
    ]
    assert trained_losses(folder) == pytest.approx([x for x in expected if x is not None], rel=1e-5)
    # the folder now holds a checkpoint: overwriting it needs the same consent as any resumable run
    again = unify(
        "run",
        str(recipe),
        "--backend",
        backend,
        "--set",
        f"output.dir={folder}",
        "--set",
        "output.if_exists=overwrite",
    )
    assert again.returncode == 2 and "--discard-checkpoints" in again.stderr
    # its checkpoint is the last step: resume refuses (the trainer would take one step past max_steps) ...
    done = unify("resume", str(folder))
    assert done.returncode == 2 and "is the run's last step" in done.stderr, done.stderr[-2000:]
    assert not list(folder.glob(f"**/checkpoint-{REFERENCE_STEPS + 1}"))
    # ... and trains exactly the steps a raised max_steps asks for, metrics.jsonl then holding every step
    more = unify("resume", str(folder), "--force", "--set", f"training.max_steps={REFERENCE_STEPS + 2}")
    assert more.returncode == 0, more.stderr[-3000:]
    steps = [
        m["step"]
        for m in map(json.loads, (folder / "metrics.jsonl").read_text().splitlines())
        if m.get("loss")
    ]
    assert steps == list(range(1, REFERENCE_STEPS + 3)), steps
