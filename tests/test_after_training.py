"""After training: `unify chat --prompt`, `unify export --format merged|gguf` and `unify eval` on run folders of
every backend (private copies of the session's reference and DPO scenarios, and of the demo's run), and their bad
inputs."""

from __future__ import annotations

import json
import os

import pytest

from .conftest import ROOT, copy_of, unify

PROMPT = "What is the capital of France?"
BACKENDS = ["peft", "swift", "unsloth"]


@pytest.fixture(scope="module")
def runs(reference_runs, tmp_path_factory):
    """This worker's own copies of the reference runs (eval and export write into a run folder, under its lock)."""
    assert reference_runs.code == 0 and sorted(reference_runs.runs) == BACKENDS, reference_runs.log[-3000:]
    into = tmp_path_factory.mktemp("reference-copies")
    return {backend: copy_of(folder, into / backend) for backend, folder in reference_runs.runs.items()}


@pytest.fixture
def dpo_run(dpo_runs, tmp_path):
    """A copy of the peft run of recipes/tiny-cpu-dpo.yaml (the session's DPO scenario)."""
    return copy_of(dpo_runs.run("peft"), tmp_path)


def answer_in_process(run_dir, tuned: bool) -> str:
    from unifier.trained import TrainedRun, generate, load_model

    model, tokenizer = load_model(TrainedRun.open(run_dir), tuned=tuned)
    return generate(model, tokenizer, [{"role": "user", "content": PROMPT}], max_new_tokens=10)


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_chat_prompt_answers_with_the_runs_adapter(runs, backend):
    result = unify("chat", str(runs[backend]), "--prompt", PROMPT, "--max-new-tokens", "10")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout == answer_in_process(runs[backend], tuned=True) + "\n"  # greedy: the same text
    assert result.stderr == ""  # the libraries' noise is not shown


@pytest.mark.slow
def test_chat_with_a_base_model_and_the_base_differs_from_the_tuned_model(runs):
    base = unify("chat", "--model", "builtin:tiny-qwen2", "--prompt", PROMPT, "--max-new-tokens", "10")
    assert base.returncode == 0, base.stderr[-2000:]
    assert base.stdout == answer_in_process(runs["peft"], tuned=False) + "\n"
    assert base.stdout != answer_in_process(runs["peft"], tuned=True) + "\n"


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_export_merged_gives_the_tuned_models_logits(runs, backend, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from unifier.trained import TrainedRun, load_model

    target = tmp_path / "merged"
    result = unify("export", str(runs[backend]), "--format", "merged", "--output", str(target))
    assert result.returncode == 0, result.stderr[-2000:]
    assert (target / "model.safetensors").is_file() and (target / "tokenizer.json").is_file()
    merged = AutoModelForCausalLM.from_pretrained(target, dtype=torch.float32).eval()
    tuned, tokenizer = load_model(TrainedRun.open(runs[backend]))
    ids = tokenizer(PROMPT, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, tuned(ids).logits, atol=1e-4)
    again = unify("export", str(runs[backend]), "--output", str(target))
    assert again.returncode == 2 and "already exists" in again.stderr
    forced = unify("export", str(runs[backend]), "--output", str(target), "--force")
    assert forced.returncode == 0, forced.stderr[-2000:]


@pytest.mark.slow
def test_eval_reports_base_and_tuned_and_the_forgetting_check(runs):
    folder = runs["peft"]
    args = ["eval", str(folder), "--data", str(ROOT / "unifier/assets/tiny_chat.jsonl")]
    args += ["--retain", "builtin:tiny-retain", "--samples", "2", "--force"]  # other tests evaluate it too
    result = unify(*args)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((folder / "eval" / "eval.json").read_text())
    task, retain = report["task"], report["retain"]
    assert task["tuned"]["loss"] < task["base"]["loss"]  # it learned the task it trained on
    assert task["tuned"]["tokens"] == task["base"]["tokens"] == 700  # the trained tokens validate counts
    assert retain["relative_increase"] == pytest.approx(
        (retain["tuned"]["loss"] - retain["base"]["loss"]) / retain["base"]["loss"]
    )
    assert "task" in result.stdout and "retain" in result.stdout
    samples = [json.loads(line) for line in (folder / "eval" / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 2 and all({"prompt", "reference", "base", "tuned"} <= set(s) for s in samples)
    assert (folder / "eval" / "eval.png").stat().st_size > 1000
    again = unify(*args)
    assert [
        json.loads(line) for line in (folder / "eval" / "samples.jsonl").read_text().splitlines()
    ] == samples
    strict = unify(*args, "--max-retain-increase", "0")
    if retain["relative_increase"] > 0:
        assert "forgetting" in strict.stderr
    assert again.returncode == 0 and strict.returncode == 0


@pytest.mark.slow
def test_after_training_bad_inputs(runs, tmp_path):
    not_a_run = tmp_path / "empty"
    not_a_run.mkdir()
    failed = tmp_path / "failed"
    failed.mkdir()
    record = json.loads((runs["peft"] / "run.json").read_text())
    (failed / "run.json").write_text(json.dumps({**record, "status": "failed"}))
    cases = [
        (["eval", str(not_a_run)], "not a run folder"),
        (["chat", str(failed), "--prompt", "hi"], "the run is 'failed', not completed"),
        (["eval", str(runs["swift"])], "the run has no eval data"),
        (["eval", str(runs["swift"]), "--data", str(tmp_path / "missing.jsonl")], "missing.jsonl"),
        (["export", str(runs["peft"]), "--format", "onnx"], "--format 'onnx'"),
        (["export", str(runs["peft"]), "--format", "gguf", "--quant", "q4_k"], "--quant 'q4_k'"),
        (["chat", "--prompt", "hi"], "give a run folder or --model"),
        (["chat", str(runs["peft"]), "--prompt", "  "], "--prompt is empty"),
        (["export", str(runs["peft"]), "--quant", "q8_0"], "--quant q8_0: applies to --format gguf only"),
    ]
    for args, message in cases:
        result = unify(*args)
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr[-1500:])
        assert "Traceback" not in result.stderr
    assert not (runs["swift"] / "eval").exists() and not (failed / "export").exists()


@pytest.mark.slow
def test_dpo_recipe_trains_and_evaluates_its_preference_pairs(dpo_run):
    """recipes/tiny-cpu-dpo.yaml: held-out pairs from data.eval_split; eval scores the chosen answers and how often
    they are likelier than the rejected ones (on the pairs it trained on, the tuned model prefers better)."""
    out = dpo_run
    held_out = unify("eval", str(out), "--samples", "1")
    assert held_out.returncode == 0, held_out.stderr[-2000:]
    report = json.loads((out / "eval" / "eval.json").read_text())
    assert report["task"]["tuned"]["rows"] == 5 and "preference_accuracy" in report["task"]["tuned"]
    pairs = ["--samples", "0", "--data", str(ROOT / "unifier/assets/tiny_preference.jsonl")]
    kept = unify("eval", str(out), *pairs)  # an earlier eval is not replaced without --force
    assert kept.returncode == 2 and "already has an eval" in kept.stderr and "--force" in kept.stderr
    assert json.loads((out / "eval" / "eval.json").read_text()) == report
    trained_pairs = unify("eval", str(out), *pairs, "--force")
    assert trained_pairs.returncode == 0 and "preference pairs: chosen likelier" in trained_pairs.stdout
    task = json.loads((out / "eval" / "eval.json").read_text())["task"]
    assert task["tuned"]["preference_margin"] > task["base"]["preference_margin"]


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_export_gguf_continues_a_prompt_like_the_merged_model(runs, backend, tmp_path):
    """llama.cpp's converter writes the GGUF; llama.cpp's Python bindings load it, and its greedy continuation of
    a prompt is the merged model's under transformers (token for token)."""
    import torch
    from llama_cpp import Llama
    from transformers import AutoModelForCausalLM, AutoTokenizer

    merged_dir, gguf_dir = tmp_path / "merged", tmp_path / "gguf"
    for fmt, target in (("merged", merged_dir), ("gguf", gguf_dir)):
        args = ["export", str(runs[backend]), "--format", fmt, "--output", str(target), "--dtype", "float32"]
        result = unify(*args, *(["--quant", "f32"] if fmt == "gguf" else []))
        assert result.returncode == 0, result.stderr[-2000:]
    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    model = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32).eval()
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": PROMPT}], add_generation_prompt=True, tokenize=False
    )
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        expected = model.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False)[
            0, len(ids) :
        ].tolist()

    llm = Llama(model_path=str(gguf_dir / "model.gguf"), n_ctx=256, verbose=False, seed=0)
    assert llm.tokenize(text.encode(), add_bos=False, special=True) == ids  # the same tokenizer
    produced = []
    for token in llm.generate(ids, top_k=1, top_p=1.0, temp=0.0, repeat_penalty=1.0):
        produced.append(token)
        if len(produced) == len(expected) or token == llm.token_eos():
            break
    llm.close()
    assert produced == expected[: len(produced)] and len(produced) >= min(len(expected), 4)


@pytest.mark.slow
def test_compare_shows_eval_results_side_by_side(runs, tmp_path):
    folder = runs["unsloth"]
    evaluated = unify("eval", str(folder), "--data", "builtin:tiny-chat", "--samples", "0", "--force")
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    task = json.loads((folder / "eval" / "eval.json").read_text())["task"]
    result = unify("compare", "--runs", str(runs["peft"]), str(folder), "--output", str(tmp_path / "cmp"))
    assert "unify eval results" in result.stdout, result.stdout[-3000:]
    row = next(
        line for line in result.stdout.splitlines() if line.strip("│ ").startswith("unsloth") and "->" in line
    )
    assert f"{task['base']['loss']:.4f} -> {task['tuned']['loss']:.4f}" in row
    report = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert (
        next(r for r in report["runs"] if r["backend"] == "unsloth")["eval"]["task"]["tuned"]
        == task["tuned"]["loss"]
    )


def test_gguf_without_llama_cpps_converter_says_where_it_looked(tmp_path, monkeypatch):
    import sys

    from unifier.errors import UserError
    from unifier.exporting import llama_cpp_converter

    monkeypatch.setenv("LLAMA_CPP_DIR", str(tmp_path / "llama.cpp"))
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "venv"))
    with pytest.raises(UserError, match=r"needs llama\.cpp's converter") as error:
        llama_cpp_converter()
    assert str(tmp_path / "llama.cpp") in error.value.message and "LLAMA_CPP_DIR" in error.value.hint


@pytest.mark.slow
def test_evalscope_benchmark_on_local_data_base_vs_tuned(demo_run, tmp_path):
    """EvalScope's general_qa on a local file: a run trained long enough to answer in the data's shape scores a
    higher ROUGE-L recall than its base (which answers in noise); EvalScope's own reports are kept."""
    qa = tmp_path / "capitals.jsonl"
    rows = [
        ("What is the capital of France?", "The capital of France is Paris."),
        ("What is the capital of Japan?", "The capital of Japan is Tokyo."),
        ("What is the capital of Italy?", "The capital of Italy is Rome."),
    ]
    qa.write_text("".join(json.dumps({"query": q, "response": a}) + "\n" for q, a in rows))
    bad_rows = tmp_path / "bad.jsonl"
    bad_rows.write_text(json.dumps({"foo": "bar"}) + "\n")
    out = copy_of(demo_run, tmp_path)  # recipes/tiny-cpu-sft.yaml, 300 steps on peft
    result = unify(
        "eval", str(out), "--samples", "0", "--benchmark", f"general_qa={qa}", "--force"
    )  # demo's eval
    assert result.returncode == 0, result.stderr[-2000:]
    scores = json.loads((out / "eval" / "eval.json").read_text())["benchmarks"]["general_qa"]
    assert scores["metric"].startswith("rouge") and 0 <= scores["base"] < scores["tuned"] <= 1
    assert "EvalScope benchmarks" in result.stdout
    assert list((out / "eval" / "evalscope" / "tuned" / "reports").rglob("*.json"))
    for args, message in (
        (["--benchmark", "mmlu=x.jsonl"], "--benchmark mmlu: not a benchmark"),
        (["--benchmark", f"general_qa={tmp_path / 'missing.jsonl'}"], "expected a local .jsonl file"),
        (["--benchmark", f"general_qa={bad_rows}"], "a general_qa row needs text fields query and response"),
        (["--benchmark", "general_qa"], "expected NAME=FILE"),
    ):
        bad = unify("eval", str(out), *args, "--force")
        assert bad.returncode == 2 and message in bad.stderr, bad.stderr[-1500:]


def test_benchmark_without_evalscope_installed_says_how_to_install(tmp_path, monkeypatch):
    import importlib.util

    from unifier.errors import UserError
    from unifier.evaluation import checked_benchmarks

    qa = tmp_path / "qa.jsonl"
    qa.write_text(json.dumps({"query": "Hi?", "response": "Hello."}) + "\n")
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "evalscope" else real(name, *a)
    )
    with pytest.raises(UserError, match="needs EvalScope") as error:
        checked_benchmarks({"general_qa": str(qa)})
    assert "unifier[eval]" in error.value.hint


@pytest.mark.slow
def test_eval_after_training_writes_eval_and_summarizes_it_in_run_json(tiny_recipe):
    """(-v: the libraries' own output reaches the terminal, and unifier's lines are still there.)"""
    recipe = tiny_recipe(
        {
            "training.max_steps": 10,
            "data.eval_split": 0.2,
            "eval": {"after_training": True, "retain": ["builtin:tiny-retain"], "samples": 1},
        }
    )
    result = unify("run", str(recipe), "--backend", "peft", "-v")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Loading weights" in result.stderr  # transformers' own output, on the terminal
    assert "completed with peft" in result.stdout
    from .conftest import run_folder_of

    folder = run_folder_of(recipe, "peft")
    record = json.loads((folder / "run.json").read_text())
    report = json.loads((folder / "eval" / "eval.json").read_text())
    assert record["eval"]["task"] == {w: report["task"][w]["loss"] for w in ("base", "tuned")}
    assert record["eval"]["retain"]["tuned"] == report["retain"]["tuned"]["loss"]
    assert record["eval"]["task"]["tuned"] < record["eval"]["task"]["base"]
    assert "eval (task): loss" in result.stdout and "eval (retain): loss" in result.stdout
    refused = unify("validate", str(tiny_recipe({"eval.after_training": True}, name="r2.yaml")))
    assert refused.returncode == 2 and "eval.after_training needs something to score" in refused.stderr


def test_tool_calls_in_an_answer_are_parsed():
    from unifier.trained import parse_tool_calls

    answer = (
        'Let me check.<tool_call>\n{"name": "get_order_status", "arguments": {"order_id": "1042"}}\n</tool_call>'
        "<tool_call>\nnot json\n</tool_call>"
    )
    assert parse_tool_calls(answer) == [
        {"name": "get_order_status", "arguments": {"order_id": "1042"}},
        {"unparsed": "not json"},
    ]
    assert parse_tool_calls("no calls here") == []


@pytest.mark.slow
def test_chat_with_tools_renders_them_and_refuses_a_bad_tools_file(runs, tmp_path):
    row = json.loads((ROOT / "examples/data/tool_calls.jsonl").read_text().splitlines()[0])
    tools = tmp_path / "tools.json"
    tools.write_text(json.dumps(row["tools"]))
    result = unify(
        "chat",
        str(runs["peft"]),
        "--prompt",
        "Where is my order 1042?",
        "--tools",
        str(tools),
        "--max-new-tokens",
        "4",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (tmp_path / "bad.json").write_text('{"tools": 5}')
    bad = unify("chat", str(runs["peft"]), "--prompt", "hi", "--tools", str(tmp_path / "bad.json"))
    assert bad.returncode == 2 and "expected a JSON list of tool definitions" in bad.stderr


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_eval_scores_each_backends_adapter(runs, backend):
    result = unify("eval", str(runs[backend]), "--data", "builtin:tiny-chat", "--samples", "0", "--force")
    assert result.returncode == 0, result.stderr[-2000:]
    task = json.loads((runs[backend] / "eval" / "eval.json").read_text())["task"]
    assert task["tuned"]["loss"] < task["base"]["loss"] and task["tuned"]["tokens"] == 700
    umask = os.umask(0)
    os.umask(umask)
    assert (
        runs[backend] / "eval"
    ).stat().st_mode & 0o777 == 0o777 & ~umask  # readable as any folder, not 0700


@pytest.mark.slow
def test_gguf_refuses_an_architecture_it_does_not_convert(runs, tmp_path):
    import shutil

    folder = tmp_path / "run"
    shutil.copytree(runs["peft"], folder)
    other = tmp_path / "gpt2-model"
    other.mkdir()
    (other / "config.json").write_text(
        json.dumps({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]})
    )
    record = json.loads((folder / "run.json").read_text())
    record["spec"]["model"]["name_or_path"] = str(other)
    (folder / "run.json").write_text(json.dumps(record))
    result = unify("export", str(folder), "--format", "gguf")
    assert (
        result.returncode == 2 and "is a 'gpt2' model; unifier converts qwen2, qwen3, llama" in result.stderr
    )
    assert not (folder / "export").exists()


@pytest.mark.slow
def test_one_writer_and_user_folders_are_never_touched(runs, tmp_path):
    """An export or eval while another unifier process holds the run folder is refused; a user's folder that
    happens to be named like a temporary one survives; a damaged adapter config is an exit-2 error."""
    import shutil

    from unifier.runfolder import RunFolder
    from unifier.runlock import RunLock

    folder = tmp_path / "run"
    shutil.copytree(runs["peft"], folder)
    with RunLock(RunFolder(folder).lock):
        for args in (["export", str(folder)], ["eval", str(folder), "--data", "builtin:tiny-chat"]):
            busy = unify(*args)
            assert busy.returncode == 2 and "another unify run is writing this folder" in busy.stderr, args
    mine = tmp_path / "out" / ".merged.partial"
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("mine")
    exported = unify("export", str(folder), "--output", str(tmp_path / "out" / "merged"))
    assert exported.returncode == 0, exported.stderr[-2000:]
    assert (mine / "notes.txt").read_text() == "mine"
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.endswith(".partial") and p != mine]
    (folder / "adapter" / "adapter_config.json").write_text("{not json")
    damaged = unify("chat", str(folder), "--prompt", "hi")
    assert damaged.returncode == 2 and "adapter_config.json: not readable JSON" in damaged.stderr


@pytest.mark.slow
def test_forgetting_check_on_a_dpo_run_reads_chat_rows(dpo_run):
    out = dpo_run
    result = unify("eval", str(out), "--retain", "builtin:tiny-retain", "--samples", "0")
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((out / "eval" / "eval.json").read_text())
    assert report["retain"]["tuned"]["rows"] == 16 and "preference_accuracy" in report["task"]["tuned"]
