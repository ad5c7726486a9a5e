"""Backend parity: one recipe means the same training on peft, swift and unsloth (CPU, fp32).

Each case runs `unify compare` for real (every backend in its own process, 20 steps, parity probe on)
and checks pair by pair: tokenized samples (input_ids and labels), trainable parameter names and
counts, initial trainable weights, per-step losses and final weights. Tolerances are the measured
ones (unifier/compare.py): peft vs swift are bit-identical in the final adapter; unsloth's CPU path
steps AdamW with the fused kernel, so its weights drift by rounding only.
"""

import json
import shutil
from pathlib import Path

import pytest
from unifier.backends.inline_library import reward_exact_answer

from ..conftest import (
    DPO_STEPS,
    FULL_STEPS,
    PAIR_METHOD_STEPS,
    REFERENCE_STEPS,
    ROOT,
    Scenario,
    load_recipe,
    unify,
    write_recipe,
)

BACKENDS = ("peft", "swift", "unsloth")
STEPS = 20
LOSS_RTOL = 1e-5


def recipe_for(folder: Path, base: str = "tiny-cpu-sft.yaml", **changes) -> Path:
    raw = load_recipe(base)
    raw["training"]["max_steps"] = STEPS
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        raw[section][key] = value
    return write_recipe(folder, raw)


def compare(target: Path | list[Path], output: Path, *extra: str) -> tuple[int, dict, str]:
    args = (
        ["--runs", *map(str, target)]
        if isinstance(target, list)
        else [str(target), "--backends", ",".join(BACKENDS)]
    )
    result = unify("compare", *args, "--output", str(output), *extra, timeout=1200)
    report_file = output / "compare.json"
    report = json.loads(report_file.read_text()) if report_file.is_file() else {}
    return result.returncode, report, result.stdout + result.stderr


def assert_parity(
    code: int, report: dict, log: str, swift_final_atol: float = 1e-6, steps: int = STEPS
) -> None:
    assert code == 0, log[-4000:]
    assert [run["backend"] for run in report["runs"]] == list(BACKENDS)
    for pair in report["pairs"]:
        label = f"peft vs {pair['other']}"
        assert pair["samples"]["identical"] is True and pair["samples"]["compared"] >= 20, label
        assert pair["trainable"]["identical"] is True, label
        assert pair["initial_weights_max_abs_diff"] in (0.0, None), (
            label
        )  # None: full FT starts from the checkpoint
        assert pair["losses"]["steps_compared"] == steps, label
        assert pair["losses"]["max_relative_difference"] <= LOSS_RTOL, label
        assert final_weights_equal(pair), label
    swift = next(p for p in report["pairs"] if p["other"] == "swift")
    # peft and ms-swift: the same computation (0.0 measured), within AdamW's amplified rounding at worst
    assert (
        swift["final_weights_max_abs_diff"] <= swift_final_atol
        or swift["final_weights_update_relative_diff"] <= 1e-2
    ), swift
    assert (report_file_dir(report) / "compare.png").stat().st_size > 1000


def final_weights_equal(pair: dict) -> bool:
    """Within 1e-4 everywhere, or (AdamW sign flips on near-zero gradients) within 1% of the training update."""
    relative = pair["final_weights_update_relative_diff"]
    return pair["final_weights_max_abs_diff"] <= 1e-4 or (relative is not None and relative <= 1e-2)


def report_file_dir(report: dict) -> Path:
    return Path(report["runs"][0]["folder"]).parent


def parity_of(scenario: Scenario, **kwargs) -> None:
    assert_parity(scenario.code, scenario.report, scenario.log, **kwargs)


@pytest.mark.slow
def test_lora_single_and_multi_turn_chat(reference_runs):
    """Single- and multi-turn chat with system prompts (the bundled tiny-chat data), LoRA: the session's
    reference compare (tests/conftest.py), STEPS steps."""
    assert REFERENCE_STEPS == STEPS
    parity_of(reference_runs)


@pytest.mark.slow
def test_qlora_nf4_with_gradient_checkpointing_and_evaluation(qlora_runs):
    parity_of(qlora_runs)


@pytest.mark.slow
def test_full_fine_tuning_over_two_epochs_of_sharegpt_and_alpaca(full_runs):
    """Full fine-tuning, two sources of two formats, training.epochs 2: the same 12 steps everywhere, each pass in
    its own order, and the epoch counted right."""
    parity_of(full_runs, steps=FULL_STEPS)
    report = full_runs.report
    for run in report["runs"]:
        rows = [json.loads(line) for line in (Path(run["folder"]) / "metrics.jsonl").read_text().splitlines()]
        epochs = [r["epoch"] for r in rows if r.get("loss") is not None]
        assert epochs[5] == pytest.approx(1.0) and epochs[-1] == pytest.approx(2.0), run["backend"]
    lines = (Path(report["runs"][0]["folder"]) / "data" / "train.jsonl").read_text().splitlines()
    assert len(lines) == 48 and lines[:24] != lines[24:] and sorted(lines[:24]) == sorted(lines[24:])


def test_packing_parity_is_refused_on_cpu_with_the_reason(tmp_path):
    """Packing: peft packs on CPU, but ms-swift needs flash-attention and unsloth's CPU path turns packing
    off silently, so a CPU comparison would compare different trainings: compare refuses (GPU script covers it)."""
    recipe = recipe_for(tmp_path, data__packing=True)
    code, report, log = compare(recipe, tmp_path / "compare")
    assert code == 2 and not report
    assert "swift" in log and "flash-attention" in log
    result = unify("validate", str(recipe), "--backend", "unsloth")
    assert result.returncode == 2 and "turns packing off silently" in result.stdout + result.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    "backend,option,value",
    [
        ("swift", "backend_options", {"swift": {"weight_decay": 1.0}}),
        ("unsloth", "backend_options", {"unsloth": {"get_peft_model": {"lora_dropout": 0.1}}}),
    ],
)
def test_a_changed_default_in_one_backend_is_detected(reference_runs, tmp_path, backend, option, value):
    """The suite is not blind: one adapter with a different weight decay (1.0: large enough to move step 2's loss past 1e-5) / dropout fails the comparison."""
    peft_run = reference_runs.run("peft")
    raw = load_recipe()
    raw["training"]["max_steps"] = STEPS
    raw[option] = value
    raw["output"]["dir"] = str(tmp_path / "changed")
    raw["output"]["probe"] = True
    recipe = write_recipe(tmp_path, raw)
    trained = unify("run", str(recipe), "--backend", backend)
    assert trained.returncode == 0, trained.stderr[-3000:]
    code, report, log = compare([peft_run, tmp_path / "changed"], tmp_path / "compare")
    assert code == 1, log[-3000:]
    pair = report["pairs"][0]
    assert pair["samples"]["identical"] is True  # same data, so the difference is located in training
    first = pair["losses"]["first_step_beyond_tolerance"]
    assert first is not None and first["step"] == 2, pair["losses"]  # step 1 runs before any update
    assert "losses differ from step" in log


@pytest.mark.slow
def test_dpo_preference_pairs(dpo_runs):
    """DPO (recipes/tiny-cpu-dpo.yaml): the same chosen/rejected tokens and completion masks on every backend,
    the same losses, and the same logged rewards (ms-swift's loss_scale 'all' would add the prompt to both
    log-probabilities: the sigmoid loss cancels it, the rewards do not, so they are checked too)."""
    report = dpo_runs.report
    # ms-swift runs chosen and rejected through the model in one concatenated batch, trl's order differs in
    # rounding only: final weights measured 1.8e-6 apart after 20 steps (SFT: bit-identical)
    parity_of(dpo_runs, swift_final_atol=1e-5, steps=DPO_STEPS)
    assert all(pair["samples"]["fields"] == ["input_ids", "loss_mask"] for pair in report["pairs"])
    rewards = {}
    for run in report["runs"]:
        rows = [json.loads(line) for line in (Path(run["folder"]) / "metrics.jsonl").read_text().splitlines()]
        rewards[run["backend"]] = [
            r[key] for r in rows if r.get("loss") is not None for key in ("rewards/chosen", "rewards/margins")
        ]
    assert len(rewards["peft"]) == 2 * DPO_STEPS
    for backend in ("swift", "unsloth"):
        assert rewards[backend] == pytest.approx(rewards["peft"], abs=1e-5), backend


def logged(run_folder: str, keys: tuple[str, ...]) -> list[float]:
    rows = [json.loads(line) for line in (Path(run_folder) / "metrics.jsonl").read_text().splitlines()]
    return [r[key] for r in rows if r.get("loss") is not None for key in keys]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("scenario", "keys"),
    [
        ("orpo_runs", ("nll_loss", "log_odds_ratio", "rewards/margins")),
        ("simpo_runs", ("nll_loss", "rewards/chosen", "rewards/margins")),
    ],
)
def test_reference_free_preference_methods(scenario, keys, request):
    """ORPO and SimPO (trl's ORPO / CPO trainers on peft and unsloth, ms-swift's on swift): the same pair tokens,
    losses and method terms on every backend. Measured: bit-identical losses peft vs swift; unsloth within
    rounding. ORPO's NLL covers the answer tokens only on every backend (trl's own counts the prompt too)."""
    runs = request.getfixturevalue(scenario)
    parity_of(runs, swift_final_atol=1e-5, steps=PAIR_METHOD_STEPS)
    values = {run["backend"]: logged(run["folder"], keys) for run in runs.report["runs"]}
    assert len(values["peft"]) == len(keys) * PAIR_METHOD_STEPS
    assert all(value != 0 for value in values["peft"]), values["peft"]  # every term is really computed
    for backend in ("swift", "unsloth"):
        assert values[backend] == pytest.approx(values["peft"], rel=1e-5, abs=1e-6), backend
    losses = logged(runs.report["runs"][0]["folder"], ("loss",))
    assert losses[-1] < losses[0], losses  # it learns the pairs
    tokens = {run["backend"]: logged(run["folder"], ("tokens_seen",)) for run in runs.report["runs"]}
    assert tokens["peft"] == tokens["swift"] and tokens["peft"][0] > 0  # the padded chosen + rejected batch


@pytest.mark.slow
def test_kto_unpaired_answers_and_kl_pairs(kto_runs):
    """KTO (trl's trainer on peft and unsloth, ms-swift's on swift): the same answer tokens and the same KL pairs
    (unifier's, in the token files; ms-swift's own reshuffle-and-rotate is replaced), then the same losses, KL
    estimates and rewards. Measured: losses within 2e-7 relative, KL within 2e-6 absolute."""
    assert kto_runs.code == 0, kto_runs.log[-3000:]
    assert [pair["other"] for pair in kto_runs.report["pairs"]] == ["swift", "unsloth"]
    for pair in kto_runs.report["pairs"]:
        assert pair["samples"]["identical"] is True and pair["samples"]["fields"][-1] == "kl_input_ids"
        assert pair["trainable"]["identical"] is True and pair["initial_weights_max_abs_diff"] == 0.0
        assert pair["losses"]["steps_compared"] == PAIR_METHOD_STEPS
        assert pair["losses"]["max_relative_difference"] <= LOSS_RTOL and final_weights_equal(pair)
    values = {run["backend"]: logged(run["folder"], ("kl",)) for run in kto_runs.report["runs"]}
    assert len(values["peft"]) == PAIR_METHOD_STEPS and any(value > 0 for value in values["peft"])
    for other in ("swift", "unsloth"):  # a difference of two ~50-nat sums
        assert values[other] == pytest.approx(values["peft"], abs=1e-5), other
    rewards = {
        run["backend"]: [
            (row.get("rewards/chosen"), row.get("rewards/rejected"))
            for row in map(json.loads, (Path(run["folder"]) / "metrics.jsonl").read_text().splitlines())
            if row.get("loss") is not None
        ]
        for run in kto_runs.report["runs"]
    }
    for other in ("swift", "unsloth"):
        for (a_chosen, a_rejected), (b_chosen, b_rejected) in zip(rewards["peft"], rewards[other]):
            for a, b in ((a_chosen, b_chosen), (a_rejected, b_rejected)):
                assert (a is None) == (b is None) and (a is None or b == pytest.approx(a, rel=1e-4, abs=1e-6))


@pytest.mark.slow
def test_raw_text_continued_pretraining(text_runs):
    """Text rows: no chat markup and loss on every token (after the first, which no causal LM predicts)."""
    parity_of(text_runs)
    report = text_runs.report
    sample = json.loads(
        (Path(report["runs"][0]["folder"]) / "probe" / "samples.jsonl").read_text().splitlines()[0]
    )
    assert sample["labels"][1:] == sample["input_ids"][1:]


@pytest.mark.slow
def test_lora_on_an_8bit_base_peft_vs_swift(tmp_path):
    """bitsandbytes LLM.int8 base (quantization.bits 8): peft and ms-swift only (unsloth quantizes 4-bit)."""
    recipe = recipe_for(tmp_path, "tiny-cpu-qlora.yaml", quantization__bits=8)
    result = unify(
        "compare",
        str(recipe),
        "--backends",
        "peft,swift",
        "--output",
        str(tmp_path / "compare"),
        timeout=1200,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    pair = json.loads((tmp_path / "compare" / "compare.json").read_text())["pairs"][0]
    assert pair["samples"]["identical"] is True and pair["trainable"]["identical"] is True
    assert (
        pair["losses"]["steps_compared"] == STEPS and pair["losses"]["max_relative_difference"] <= LOSS_RTOL
    )
    refused = unify("validate", str(recipe), "--backend", "unsloth")
    assert refused.returncode == 2 and "quantization.bits 8 is not supported by unsloth" in refused.stderr


@pytest.mark.slow
def test_reward_model_peft_vs_swift(reward_runs):
    """Reward modelling (a sequence-score head, LoRA with the head trained): the same pair tokens, trainable
    parameters (the adapter and the new score head) and initial weights, and bit-identical losses and pair
    metrics, peft vs swift. The model it leaves scores text: `unify eval` ranks the held-out pairs by its score
    head (its pairwise loss is the trainer's final eval_loss on the same pairs); chat and export refuse it."""
    report = reward_runs.report
    assert reward_runs.code == 0, reward_runs.log[-3000:]
    (pair,) = report["pairs"]
    assert pair["samples"]["identical"] is True and pair["trainable"]["identical"] is True
    assert pair["initial_weights_max_abs_diff"] == 0.0  # the score head starts the same on both
    assert pair["losses"]["steps_compared"] == PAIR_METHOD_STEPS
    assert pair["losses"]["max_relative_difference"] <= LOSS_RTOL and final_weights_equal(pair)
    keys = ("rewards/accuracies", "rewards/margins")
    values = {run["backend"]: logged(run["folder"], keys) for run in report["runs"]}
    assert values["swift"] == pytest.approx(values["peft"], rel=1e-5, abs=1e-6)
    assert any(v != 0 for v in values["peft"])
    for run in report["runs"]:
        rows = [json.loads(line) for line in (Path(run["folder"]) / "metrics.jsonl").read_text().splitlines()]
        assert any(r.get("eval_loss") is not None for r in rows), run["backend"]
        config = json.loads((Path(run["folder"]) / "adapter" / "adapter_config.json").read_text())
        assert config["task_type"] == "SEQ_CLS" and "score" in config["modules_to_save"], run["backend"]
    for run in report["runs"]:
        folder = Path(run["folder"])
        evaluated = unify("eval", str(folder), "--force")
        assert evaluated.returncode == 0, evaluated.stderr[-3000:]
        assert "held-out pairs (margin" in evaluated.stdout
        pairs = json.loads((folder / "eval" / "eval.json").read_text())["pairs"]["tuned"]
        final_eval = [r for r in map(json.loads, (folder / "metrics.jsonl").read_text().splitlines())]
        final_eval = [r["eval_loss"] for r in final_eval if r.get("eval_loss") is not None][-1]
        assert pairs["pairs"] == 5 and 0.0 <= pairs["pair_accuracy"] <= 1.0, run["backend"]
        assert pairs["loss"] == pytest.approx(final_eval, rel=1e-5), run["backend"]
    trained = str(report["runs"][0]["folder"])
    for command in (("chat", trained, "--prompt", "hi"), ("export", trained)):
        refused = unify(*command)
        assert refused.returncode == 2 and "a reward model scores text" in refused.stderr, command
    refused = unify("eval", trained, "--force", "--retain", "builtin:tiny-retain")
    assert refused.returncode == 2 and "--retain and --benchmark score what a model writes" in refused.stderr


@pytest.mark.slow
def test_grpo_prompts_rewards_and_learning(grpo_runs):
    """GRPO (recipes/tiny-cpu-grpo.yaml) on peft, swift and unsloth: every backend generates from unifier's prompt
    tokens (identical probe samples), calls the rewards with the same arguments (the prompts as messages, the
    completions as text, the rows' columns aligned with their prompts), logs rewards/<name>/mean, and the mean
    reward rises. Measured: peft and unsloth sample the same completions (bit-identical rewards and losses);
    ms-swift samples its own (its generation consumes the random stream differently), so its per-step numbers
    differ and only the trend is compared."""
    report = grpo_runs.report
    assert [run["backend"] for run in report["runs"]] == list(BACKENDS), grpo_runs.log[-3000:]
    # compare accepts the sampled differences with the reason (and still requires identical inputs)
    assert grpo_runs.code == 0 and "GRPO samples its completions" in grpo_runs.log, grpo_runs.log[-3000:]
    for pair in report["pairs"]:
        assert pair["samples"]["identical"] is True and pair["samples"]["compared"] >= 20, pair["other"]
        assert pair["samples"]["fields"] == ["input_ids"]  # the prompt tokens generation starts from
        assert pair["trainable"]["identical"] is True and pair["initial_weights_max_abs_diff"] == 0.0
    keys = ("reward", "rewards/exact_answer/mean", "rewards/recorded/mean", "completions/mean_length")
    series = {run["backend"]: logged(run["folder"], keys) for run in report["runs"]}
    for backend, values in series.items():
        rewards = values[0 :: len(keys)]
        assert len(rewards) == 20, backend
        assert sum(rewards[-5:]) / 5 > sum(rewards[:5]) / 5 + 0.5, (backend, rewards)
    for run in report["runs"]:  # loss.png draws the mean reward (the on-policy loss hovers near 0)
        assert (Path(run["folder"]) / "loss.png").stat().st_size > 1000
    assert series["unsloth"] == pytest.approx(series["peft"], abs=1e-6)
    log = Path(str(shared_log(grpo_runs)))
    for backend in BACKENDS:
        calls = [json.loads(line) for line in Path(f"{log}.{backend}.jsonl").read_text().splitlines()]
        assert len(calls) == 20, backend  # one call per generation batch (steps_per_generation 1)
        for call in calls:
            assert len(call["prompts"]) == len(call["completions"]) == len(call["answer"]) == 16, backend
            assert call["other"] == [], backend  # no internal argument leaks into the user's columns
            for prompt, answer, text in zip(call["prompts"], call["answer"], call["completions"]):
                assert [m["role"] for m in prompt] == ["user"] and isinstance(text, str), backend
                a, b = prompt[0]["content"].removeprefix("What is ").split("?")[0].split(" + ")
                assert int(a) + int(b) == int(answer), backend  # each row's column reaches its own prompt


@pytest.mark.slow
def test_grpo_eval_scores_held_out_prompts_with_the_runs_rewards(grpo_runs, tmp_path):
    """`unify eval` of a GRPO run: base's and tuned's greedy answers to held-out prompts (--data), scored by the
    run's own reward functions with the rows' columns (per function and in total); the tuned model, trained on
    the digits reward, earns more of it. A reward function that raises or whose file is gone: exit 2."""
    assert grpo_runs.code == 0, grpo_runs.log[-3000:]
    folder = Path(grpo_runs.report["runs"][0]["folder"])  # peft
    held_out = tmp_path / "held_out.jsonl"
    held_out.write_text(
        "".join(json.dumps({"prompt": f"What is {a} + {b}?", "answer": str(a + b)}) + "\n" for a, b in
                [(11, 12), (20, 5), (3, 30), (14, 14)])
    )  # fmt: skip
    log = tmp_path / "rewards"
    evaluated = unify("eval", str(folder), "--data", str(held_out), env={"UNIFIER_TEST_REWARD_LOG": str(log)})
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert "4 held-out prompts: reward" in evaluated.stdout
    report = json.loads((folder / "eval" / "eval.json").read_text())
    assert "task" not in report  # prompts have no answer to compute a loss on
    rewards = report["rewards"]
    for which in ("base", "tuned"):
        assert set(rewards[which]) == {
            "reward", "rewards/exact_answer/mean", "rewards/recorded/mean", "completions/mean_length", "prompts"
        }  # fmt: skip
        assert rewards[which]["prompts"] == 4 and 0 < rewards[which]["completions/mean_length"] <= 4
    assert rewards["tuned"]["rewards/recorded/mean"] > rewards["base"]["rewards/recorded/mean"]
    assert rewards["change"] == pytest.approx(rewards["tuned"]["reward"] - rewards["base"]["reward"])
    calls = [json.loads(line) for line in Path(f"{log}.peft.jsonl").read_text().splitlines()]
    assert len(calls) == 2  # base, then tuned: every prompt in one call, as a generation batch in training
    samples = [json.loads(line) for line in (folder / "eval" / "samples.jsonl").read_text().splitlines()]
    assert [s["reference"] for s in samples] == ["23", "25", "33"]
    for call, which in zip(calls, ("base", "tuned")):
        assert call["answer"] == ["23", "25", "33", "28"] and call["other"] == []
        assert [p[-1]["content"] for p in call["prompts"]] == [
            f"What is {q}?" for q in ("11 + 12", "20 + 5", "3 + 30", "14 + 14")
        ]
        assert call["completions"][:3] == [s[which] for s in samples]
        exact = reward_exact_answer(call["prompts"], call["completions"], None, {"answer": call["answer"]}, 4)
        assert [s[f"{which}_reward"] for s in samples] == pytest.approx(
            [e + r for e, r in zip(exact, call["scores"])][:3]
        )  # the weighted total (weights 1, 1)
        assert rewards[which]["rewards/recorded/mean"] == pytest.approx(sum(call["scores"]) / 4)
    assert (folder / "eval" / "eval.png").stat().st_size > 1000

    raises = unify("eval", str(folder), "--force", "--data", str(held_out),
                   env={"UNIFIER_TEST_REWARD_LOG": str(tmp_path / "no" / "folder")})  # fmt: skip
    assert raises.returncode == 2 and "grpo_recorder.py:recorded raised FileNotFoundError" in raises.stderr
    moved = tmp_path / "moved"
    shutil.copytree(folder, moved, ignore=shutil.ignore_patterns("eval", "checkpoint-*"))
    record = json.loads((moved / "run.json").read_text())
    record["spec"]["training"]["grpo"]["rewards"][1] = str(tmp_path / "gone.py") + ":recorded"
    (moved / "run.json").write_text(json.dumps(record))
    gone = unify("eval", str(moved), "--data", str(held_out))
    assert (
        gone.returncode == 2
        and "gone.py (the run's reward function recorded) is no longer there" in gone.stderr
    )
    wrong = unify(
        "eval", str(folder), "--force", "--data", str(ROOT / "unifier" / "assets" / "tiny_chat.jsonl")
    )
    assert wrong.returncode == 2 and "--data" in wrong.stderr and "needs prompt data" in wrong.stderr


def shared_log(scenario) -> Path:
    return Path(scenario.recipe).parents[1] / "grpo-rewards"


@pytest.mark.slow
def test_two_processes_peft_vs_swift(two_process_runs):
    """Two processes each (torchrun, gloo DDP on CPU, two rows per rank): rank 0's tokenized samples, the
    trainable parameters, initial weights, per-step losses and final adapters agree peft vs swift."""
    report = two_process_runs.report
    assert two_process_runs.code == 0, two_process_runs.log[-3000:]
    (pair,) = report["pairs"]
    assert pair["samples"]["identical"] is True and pair["trainable"]["identical"] is True
    assert pair["initial_weights_max_abs_diff"] == 0.0
    assert pair["losses"]["steps_compared"] == REFERENCE_STEPS
    assert pair["losses"]["max_relative_difference"] <= LOSS_RTOL and final_weights_equal(pair)
    for run in report["runs"]:
        record = json.loads((Path(run["folder"]) / "run.json").read_text())
        assert record["backend_details"]["rank_check"]["identical_weights"] is True, run["backend"]
