"""Real tokenizers and official chat templates (Qwen2.5-Instruct, Qwen3, Llama 3.1; unifier/real_vocab.py builds
tiny random models with them from llama.cpp's files): unifier's encoder gives exactly the tokens
`apply_chat_template` gives, trains the assistant turns (their end-of-turn token included) and nothing else, on
every backend the same samples, and the GGUF of such a run loads in llama.cpp with the same tokenizer."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from .conftest import BACKENDS, compare_scenario, copy_of, once, read_jsonl, unify, write_recipe

FAMILIES = ("qwen2.5", "qwen3", "llama3.1")
END_OF_TURN = {"qwen2.5": "<|im_end|>\n", "qwen3": "<|im_end|>\n", "llama3.1": "<|eot_id|>"}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]
CONVERSATIONS = [
    [
        {"role": "user", "content": "What is the capital of Spain?"},
        {"role": "assistant", "content": "Madrid."},
    ],
    [
        {"role": "system", "content": "You answer briefly."},
        {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Capital of Peru?"},
        {"role": "assistant", "content": "Lima."},
    ],
    [
        {"role": "user", "content": "What is 17 + 25?"},
        {"role": "assistant", "content": "42.", "reasoning_content": "17 plus 25 is 42."},
    ],
    [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello.", "reasoning_content": "A greeting."},
        {"role": "user", "content": "3 * 4?"},
        {"role": "assistant", "content": "12.", "reasoning_content": "Three fours are twelve."},
    ],
]
TOOL_ROW = {
    "messages": [
        {"role": "user", "content": "Weather in Oslo?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}
            ],
        },
        {"role": "tool", "name": "get_weather", "content": "-3C and snow"},
        {"role": "assistant", "content": "It is -3C and snowing in Oslo."},
    ],
    "tools": TOOLS,
}


@pytest.fixture(scope="session")
def real_models(tmp_path_factory) -> dict[str, Path]:
    from unifier import real_vocab

    built = once(
        tmp_path_factory, "real-models", lambda _: {n: str(p) for n, p in real_vocab.ensure_all().items()}
    )
    return {name: Path(folder) for name, folder in built.items()}


def encoder_for(folder: Path, max_len: int = 1024):
    from unifier.data.encode import Encoder, Vocabulary
    from unifier.data.tokens import resolve_template

    vocabulary = Vocabulary.from_folder(folder)
    return Encoder(vocabulary, resolve_template("auto", vocabulary, str(folder)), max_len=max_len)


def trained_pieces(vocabulary, ids, mask) -> list[str]:
    pieces, current = [], []
    for token, flag in zip(ids, mask):
        if flag:
            current.append(token)
        elif current:
            pieces.append(vocabulary.decode(current))
            current = []
    if current:
        pieces.append(vocabulary.decode(current))
    return pieces


@pytest.mark.parametrize("family", FAMILIES)
def test_the_encoder_gives_apply_chat_templates_tokens_and_masks_only_the_answers(real_models, family):
    from transformers import AutoTokenizer

    folder = real_models[family]
    tokenizer = AutoTokenizer.from_pretrained(folder)
    encoder = encoder_for(folder)
    assert encoder.template.name == "model" and not encoder.template.marked  # the official template, no marks
    rows = [{"messages": c} for c in CONVERSATIONS] + [TOOL_ROW]
    for row in rows:
        ids, mask, _ = encoder.chat(row["messages"], row.get("tools"))
        expected = tokenizer.apply_chat_template(
            row["messages"], tools=row.get("tools"), tokenize=True, return_dict=True
        )
        assert ids == list(expected["input_ids"]), (family, row)
        trained = trained_pieces(encoder.vocabulary, ids, mask)
        answers = [m for m in row["messages"] if m["role"] == "assistant"]
        assert len(trained) == len(answers), (family, trained)
        for piece, answer in zip(trained, answers):
            assert piece.endswith(END_OF_TURN[family]), (family, piece)  # the model learns to stop
            assert answer["content"].strip() in piece
        untrained = encoder.vocabulary.decode([t for t, m in zip(ids, mask) if not m])
        for message in row["messages"]:
            if message["role"] in ("user", "system"):
                assert message["content"] not in "".join(trained) and message["content"] in untrained
    plain = encoder.chat(CONVERSATIONS[0], None)
    assert trained_pieces(encoder.vocabulary, plain[0], plain[1]) == [
        {"qwen3": "<think>\n\n</think>\n\nMadrid."}.get(family, "Madrid.") + END_OF_TURN[family]
    ]


def test_qwen3_trains_reasoning_as_its_template_renders_it(real_models):
    """The last turn's reasoning is trained inside <think>; Qwen3's template drops the reasoning of turns before
    the last user message, so those turns train without it, and the encoder counts them."""
    encoder = encoder_for(real_models["qwen3"])
    ids, mask, dropped = encoder.chat(CONVERSATIONS[3], None)
    assert trained_pieces(encoder.vocabulary, ids, mask) == [
        "Hello.<|im_end|>\n",
        "<think>\nThree fours are twelve.\n</think>\n\n12.<|im_end|>\n",
    ]
    assert dropped == 1
    in_content = [
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "<think>\nTwo and two.\n</think>\n\n4."},
    ]
    ids, mask, _ = encoder.chat(in_content, None)
    assert trained_pieces(encoder.vocabulary, ids, mask) == [
        "<think>\nTwo and two.\n</think>\n\n4.<|im_end|>\n"
    ]


def recipe_for(folder: Path, model: Path, data: Path, **model_keys) -> Path:
    raw = {
        "name": "real",
        "model": {"name_or_path": str(model), "dtype": "float32", "max_seq_length": 512, **model_keys},
        "adapter": {"type": "lora", "r": 8, "alpha": 16, "dropout": 0.0, "target_modules": "all-linear"},
        "data": {"train": [{"path": str(data)}], "shuffle": False},
        "training": {"max_steps": 2, "per_device_batch_size": 2, "learning_rate": 1e-3, "logging_steps": 1},
        "compute": {"device": "cpu"},
        "output": {"dir": str(folder / "runs" / "{name}-{backend}"), "if_exists": "overwrite"},
    }
    return write_recipe(folder, raw)


def chat_file(folder: Path) -> Path:
    path = folder / "chat.jsonl"
    path.write_text("".join(json.dumps({"messages": c}) + "\n" for c in CONVERSATIONS))
    return path


def test_auto_is_the_models_template_and_chatml_for_a_model_without_one(real_models, tmp_path):
    data = chat_file(tmp_path)
    official = unify("validate", str(recipe_for(tmp_path, real_models["qwen2.5"], data)))
    assert official.returncode == 0, official.stderr
    assert "chat template: the model's own" in official.stdout
    bare = tmp_path / "no-template"
    shutil.copytree(real_models["qwen2.5"], bare)
    (bare / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((bare / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (bare / "tokenizer_config.json").write_text(json.dumps(config))
    fallback = unify("validate", str(recipe_for(tmp_path, bare, data)))
    assert fallback.returncode == 0, fallback.stderr
    assert "chat template: unifier's ChatML" in fallback.stdout and "has no chat template" in fallback.stdout


def test_chatml_on_a_vocabulary_without_its_tags_is_refused(real_models, tmp_path):
    recipe = recipe_for(tmp_path, real_models["llama3.1"], chat_file(tmp_path), chat_template="chatml")
    for command in ("validate", "run"):
        result = unify(command, str(recipe), *(["-b", "peft"] if command == "run" else []))
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
        assert (
            "<|im_start|>, <|im_end|> are not a token" in result.stderr
            and "chat_template: auto" in result.stderr
        )
    assert not (tmp_path / "runs").exists()


def test_a_template_whose_turns_do_not_line_up_is_refused_by_file_and_row(real_models, tmp_path):
    """A template that writes the last turn differently from the same turn inside a longer conversation (here:
    a marker after every turn but the last) leaves no way to tell which tokens are that turn's: exit 2."""
    template = tmp_path / "odd.jinja"
    template.write_text(
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
        "{% if not loop.last %}--{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    data = chat_file(tmp_path)
    result = unify(
        "validate", str(recipe_for(tmp_path, real_models["qwen2.5"], data, chat_template=str(template)))
    )
    assert result.returncode == 2 and f"{data}:1: messages[1] (assistant)" in result.stderr, result.stderr[
        -2000:
    ]
    assert "Traceback" not in result.stderr


@pytest.fixture(scope="session")
def real_runs(tmp_path_factory, real_models):
    """Per family, the conversations (reasoning, multi-turn, tools) trained 2 steps on every backend by
    `unify compare` (parity probe on)."""
    runs = {}
    for family, model in real_models.items():

        def data(folder: Path) -> dict:
            path = folder / "rows.jsonl"
            rows = [{"messages": c} for c in CONVERSATIONS] + [TOOL_ROW]
            path.write_text("".join(json.dumps(r) + "\n" for r in rows))
            return {"path": str(path)}

        rows = once(tmp_path_factory, f"real-{family}-rows", data)["path"]
        raw = {
            "name": f"real-{family}",
            "model": {"name_or_path": str(model), "dtype": "float32", "max_seq_length": 512},
            "adapter": {"type": "lora", "r": 8, "alpha": 16, "dropout": 0.0, "target_modules": "all-linear"},
            "data": {"train": [{"path": rows}], "shuffle": False},
            "training": {
                "max_steps": 2,
                "per_device_batch_size": 2,
                "learning_rate": 1e-3,
                "logging_steps": 1,
            },
            "compute": {"device": "cpu"},
            "output": {"dir": "runs/{name}-{backend}", "if_exists": "overwrite"},
        }
        runs[family] = compare_scenario(tmp_path_factory, f"real-{family}", raw)
    return runs


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_every_backend_trains_the_official_format(real_runs, real_models, family):
    """The decoded training text of every row is apply_chat_template's, the trained tokens are the assistant
    turns, identical on peft, swift and unsloth, and validate's count is the trainer's."""
    from transformers import AutoTokenizer

    scenario = real_runs[family]
    assert scenario.code == 0, scenario.log[-4000:]
    for pair in scenario.report["pairs"]:
        assert pair["samples"]["identical"] is True and pair["losses"]["within_tolerance"], pair
    tokenizer = AutoTokenizer.from_pretrained(real_models[family])
    encoder = encoder_for(real_models[family], max_len=512)
    for backend in BACKENDS:
        folder = scenario.run(backend)
        rows = read_jsonl(folder / "data" / "train.jsonl")
        samples = read_jsonl(folder / "probe" / "samples.jsonl")
        assert len(samples) == len(rows)
        for row, sample in zip(rows, samples):
            text = tokenizer.apply_chat_template(row["messages"], tools=row.get("tools"), tokenize=False)
            assert tokenizer.decode(sample["input_ids"]) == text, (backend, row)
            _, mask, _ = encoder.chat(row["messages"], row.get("tools"))
            assert [int(label != -100) for label in sample["labels"]][1:] == mask[1:], backend
        record = json.loads((folder / "run.json").read_text())
        trained = sum(
            sum(int(label != -100) for label in s["labels"][1:]) for s in samples[: len(CONVERSATIONS) + 1]
        )
        assert record["data"]["tokens"]["trained_tokens"] == trained
        assert record["data"]["tokens"]["chat_template"].startswith("the model's own")
        assert (folder / "adapter" / "tokenizer_config.json").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("family", ["qwen3", "llama3.1"])
def test_gguf_of_a_real_vocabulary_loads_in_llama_cpp_with_the_same_tokens(real_runs, family, tmp_path):
    """The GGUF carries the family's tokenizer (llama.cpp's 'gpt2' byte-level BPE with its pre-tokenizer) and the
    chat template the run trained with; llama.cpp tokenizes a rendered conversation as transformers does."""
    import sys

    from llama_cpp import Llama
    from transformers import AutoTokenizer

    run = copy_of(real_runs[family].run("peft"), tmp_path)
    result = unify(
        "export", str(run), "--format", "gguf", "--quant", "f32", "--output", str(tmp_path / "gguf")
    )
    assert result.returncode == 0, result.stderr[-3000:]
    sys.path.insert(0, str(Path(sys.prefix) / "share" / "llama.cpp" / "gguf-py"))
    from gguf import GGUFReader

    fields = GGUFReader(str(tmp_path / "gguf" / "model.gguf")).fields
    field = lambda key: bytes(fields[key].parts[-1]).decode()  # noqa: E731
    assert field("tokenizer.ggml.model") == "gpt2"
    assert field("tokenizer.ggml.pre") == {"qwen3": "qwen2", "llama3.1": "llama-bpe"}[family]
    template = (run / "data" / "chat_template.jinja").read_text()
    assert field("tokenizer.chat_template") == template
    tokenizer = AutoTokenizer.from_pretrained(run / "adapter")
    assert tokenizer.chat_template == template  # what chat and eval render with
    llm = Llama(model_path=str(tmp_path / "gguf" / "model.gguf"), n_ctx=256, verbose=False)
    for messages in CONVERSATIONS:
        text = tokenizer.apply_chat_template(messages, tokenize=False)
        assert (
            llm.tokenize(text.encode(), add_bos=False, special=True)
            == tokenizer(text, add_special_tokens=False)["input_ids"]
        )
    llm.close()


def test_the_reasoning_recipe_validates_on_qwen3_and_counts_the_reasoning_its_template_drops(real_models):
    """recipes/qwen3-8b-lora-reasoning-sft-1gpu.yaml with examples/data/reasoning.jsonl, on the Qwen3 test model:
    valid, the model's own template, and the one earlier turn whose reasoning Qwen3's template drops is named."""
    from .conftest import RECIPES

    result = unify(
        "validate",
        str(RECIPES / "qwen3-8b-lora-reasoning-sft-1gpu.yaml"),
        *("--set", f"model.name_or_path={real_models['qwen3']}", "--set", "model.max_seq_length=1024"),
        *("--set", "compute.device=cpu", "--set", "model.dtype=float32"),
    )
    assert result.returncode == 0, result.stderr
    assert "chat template: the model's own" in result.stdout and "8 train rows" in result.stdout
    assert "1 assistant turns carry reasoning that the chat template" in " ".join(result.stdout.split())
    encoder = encoder_for(real_models["qwen3"])
    rows = read_jsonl(RECIPES.parent / "examples" / "data" / "reasoning.jsonl")
    for row in rows:
        ids, mask, _ = encoder.chat(row["messages"], None)
        last = trained_pieces(encoder.vocabulary, ids, mask)[-1]
        answer = row["messages"][-1]
        assert last.startswith("<think>\n") and last.endswith("<|im_end|>\n")
        assert (answer.get("reasoning_content") or answer["content"].split("</think>")[0][8:]).strip() in last


def test_encoding_in_worker_processes_gives_the_same_rows_and_the_same_row_errors(real_models, monkeypatch):
    """encode_rows splits large data over worker processes (UNIFIER_ENCODE_WORKERS, or 4+ cores): the same
    Encoded rows in the same order, and a bad row is named by its location as in one process."""
    from unifier.data.tokens import encode_rows
    from unifier.errors import UserError

    encoder = encoder_for(real_models["qwen3"])
    rows = [{"messages": c} for c in CONVERSATIONS] * 1100  # 4,400 rows: three chunks
    locations = [f"rows.jsonl:{i + 1}" for i in range(len(rows))]
    monkeypatch.setenv("UNIFIER_ENCODE_WORKERS", "1")
    alone = encode_rows(encoder, "chat", rows, locations)
    monkeypatch.setenv("UNIFIER_ENCODE_WORKERS", "2")
    assert encode_rows(encoder, "chat", rows, locations) == alone
    bad = [*rows[:2500], {"messages": [{"role": "assistant", "content": "x"}]}, *rows[2500:]]
    bad_locations = [f"rows.jsonl:{i + 1}" for i in range(len(bad))]
    errors = []
    for workers in ("1", "2"):
        monkeypatch.setenv("UNIFIER_ENCODE_WORKERS", workers)
        with pytest.raises(UserError) as caught:
            encode_rows(encoder, "chat", bad, bad_locations)
        errors.append(caught.value.message)
    assert errors[0] == errors[1] and errors[0].startswith("rows.jsonl:2501: ")
