"""A held-out corpus of bad inputs: each one exits 2 with the field or file:row in the message, no traceback,
and nothing written (recipes, --set values, data files of every format, model folders)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from .conftest import load_recipe, unify

BASE = {"training.max_steps": 2}


def chat(*turns: tuple[str, str], **extra) -> dict:
    return {"messages": [{"role": role, "content": content} for role, content in turns], **extra}


GOOD_ROW = chat(("user", "Hi"), ("assistant", "Hello."))


def write_rows(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


# ---- the corpus: (id, what to build, fragments the message must contain) ----
# recipe changes are dotted keys; a callable gets tmp_path and returns changes (to build files first)

RECIPE_CASES = [
    ("unknown-top-key", {"trainig": {"seed": 1}}, ["unknown key 'trainig'", "did you mean 'training'"]),
    ("unknown-nested-key", {"training.learnig_rate": 0.1}, ["training", "did you mean 'learning_rate'"]),
    ("string-for-float", {"training.learning_rate": "fast"}, ["training.learning_rate", "'fast'"]),
    (
        "bool-for-float",
        {"training.learning_rate": True},
        ["training.learning_rate", "a number, not true/false"],
    ),
    ("bool-for-int", {"training.max_steps": True}, ["training.max_steps", "a number, not true/false"]),
    ("inf-learning-rate", {"training.learning_rate": float("inf")}, ["training.learning_rate", "finite"]),
    ("nan-weight-decay", {"training.weight_decay": float("nan")}, ["training.weight_decay", "finite"]),
    (
        "inf-epochs",
        {"training.epochs": float("inf"), "training.max_steps": None},
        ["training.epochs", "finite"],
    ),
    ("zero-epochs", {"training.epochs": 0}, ["training.epochs", "greater than 0"]),
    ("huge-epochs", {"training.epochs": 1e9}, ["training.epochs", "less than or equal to"]),
    (
        "negative-learning-rate",
        {"training.learning_rate": -1e-4},
        ["training.learning_rate", "greater than 0"],
    ),
    ("negative-seed", {"training.seed": -1}, ["training.seed", "greater than or equal to 0"]),
    ("huge-seed", {"training.seed": 2**40}, ["training.seed", "less than"]),
    ("negative-data-seed", {"data.seed": -3}, ["data.seed", "greater than or equal to 0"]),
    (
        "huge-max-seq-length",
        {"model.max_seq_length": 10**12},
        ["model.max_seq_length", "less than or equal to"],
    ),
    ("huge-max-steps", {"training.max_steps": 10**13}, ["training.max_steps", "less than or equal to"]),
    ("zero-rank", {"adapter.r": 0}, ["adapter.r", "greater than 0"]),
    ("dropout-above-one", {"adapter.dropout": 1.5}, ["adapter.dropout", "less than 1"]),
    (
        "empty-target-modules",
        {"adapter.target_modules": []},
        ["adapter.target_modules", "at least one module"],
    ),
    (
        "unknown-target-module",
        {"adapter.target_modules": ["q_proj", "qkv"]},
        ["adapter.target_modules", "qkv", "match no module"],
    ),
    ("qlora-without-bits", {"adapter.type": "qlora"}, ["quantization.bits: 4"]),
    ("full-with-bits", {"adapter.type": "full", "quantization.bits": 4}, ["cannot train quantized weights"]),
    (
        "eval-steps-without-eval-data",
        {"training.eval_steps": 5},
        ["training.eval_steps", "needs evaluation data"],
    ),
    (
        "eval-and-eval-split",
        {"data.eval": [{"path": "builtin:tiny-chat"}], "data.eval_split": 0.1},
        ["data.eval or data.eval_split, not both"],
    ),
    ("eval-split-one", {"data.eval_split": 1.0}, ["data.eval_split", "less than 1"]),
    (
        "node-rank-out-of-range",
        {"compute.nnodes": 2, "compute.node_rank": 2},
        ["node_rank 2 must be below nnodes 2"],
    ),
    ("port-out-of-range", {"compute.master_port": 70000}, ["compute.master_port", "less than 65536"]),
    ("unknown-backend", {"backend": "axolotl"}, ["backend", "unknown backend 'axolotl'"]),
    (
        "options-for-unknown-backend",
        {"backend_options": {"axolotl": {}}},
        ["backend_options", "unknown backend"],
    ),
    (
        "unknown-option-group",
        {"backend_options": {"peft": {"sft_config": {"report_to": []}}}},
        ["backend_options.peft.sft_config", "trainer_args"],
    ),
    (
        "unknown-trainer-arg",
        {"backend_options": {"peft": {"trainer_args": {"learnin_rate": 0.1}}}},
        ["backend_options.peft.trainer_args.learnin_rate", "did you mean 'learning_rate'"],
    ),
    (
        "trainer-arg-value-not-an-enum-member",
        {"backend_options": {"peft": {"trainer_args": {"lr_scheduler_type": "bogus"}}}},
        [
            "backend_options.peft.trainer_args.lr_scheduler_type",
            "'bogus' is not one of SchedulerType's values",
        ],
    ),
    (
        "trainer-arg-value-of-the-wrong-type",
        {"backend": "unsloth", "backend_options": {"unsloth": {"trainer_args": {"logging_steps": "often"}}}},
        ["backend_options.unsloth.trainer_args.logging_steps", "expected float, got text 'often'"],
    ),
    (
        "dpo-trainer-arg-value",
        {
            "training.method": "dpo",
            "data.train": [{"path": "builtin:tiny-preference"}],
            "backend_options": {"peft": {"trainer_args": {"beta": "high"}}},
        },
        ["backend_options.peft.trainer_args.beta", "expected float, got text"],
    ),
    (
        "unknown-unsloth-keyword",
        {"backend": "unsloth", "backend_options": {"unsloth": {"from_pretrained": {"load_in_3bit": True}}}},
        ["backend_options.unsloth.from_pretrained.load_in_3bit"],
    ),
    (
        "swift-flag-value",
        {"backend": "swift", "backend_options": {"swift": {"lr_scheduler_type": "cosin"}}},
        ["backend_options.swift.lr_scheduler_type", "did you mean 'cosine'"],
    ),
    (
        "swift-flag-yaml-boolean",
        {"backend": "swift", "backend_options": {"swift": {"eval_strategy": False}}},
        ["backend_options.swift.eval_strategy", "quote the text"],
    ),
    (
        "unknown-swift-flag",
        {"backend": "swift", "backend_options": {"swift": {"lora_rnk": 4}}},
        ["backend_options.swift.lora_rnk", "did you mean 'lora_rank'"],
    ),
    (
        "missing-model-path",
        {"model.name_or_path": "./no-such-model"},
        ["model.name_or_path", "no such folder"],
    ),
    (
        "unknown-builtin-model",
        {"model.name_or_path": "builtin:tiny-llama"},
        ["model.name_or_path", "unknown built-in 'builtin:tiny-llama'"],
    ),
    (
        "data-builtin-as-model",
        {"model.name_or_path": "builtin:tiny-chat"},
        ["model.name_or_path", "not a model"],
    ),
    (
        "unknown-builtin-data",
        {"data.train": [{"path": "builtin:tiny-poems"}]},
        ["data.train.0.path", "unknown built-in"],
    ),
    (
        "missing-chat-template-file",
        {"model.chat_template": "templates/missing.jinja"},
        ["model.chat_template", "missing.jinja"],
    ),
    (
        "unknown-chat-template-name",
        {"model.chat_template": "llama3"},
        ["model.chat_template", "'llama3'", "chatml, tokenizer"],
    ),
    ("output-dir-unknown-placeholder", {"output.dir": "runs/{nmae}"}, ["output.dir", "{nmae}", "{name}"]),
    ("output-dir-lone-brace", {"output.dir": "runs/{name"}, ["output.dir", "placeholder"]),
    ("name-with-spaces", {"name": "my run"}, ["name", "should match pattern"]),
    ("empty-train-list", {"data.train": []}, ["data.train", "at least 1"]),
    ("dpo-on-chat-data", {"training.method": "dpo"}, ["training.method 'dpo' needs preference data"]),
    (
        "literal-secret",
        {"backend_options": {"peft": {"trainer_args": {"hub_token": "hf_abcdefghijklmnopqrstuvwxyz123456"}}}},
        ["backend_options.peft.trainer_args.hub_token", "${HF_TOKEN}"],
    ),
    (
        "url-credentials",
        {"model.name_or_path": "https://me:pw@example.com/org/model"},
        ["model.name_or_path", "credentials inside a URL"],
    ),
    (
        "unknown-extra-columns-switch",
        {"data.train": [{"path": "builtin:tiny-chat", "extra_columns": "drop"}]},
        ["data.train.0.extra_columns"],
    ),
]


def model_folder_cases(tiny_model_dir: Path, tmp_path: Path) -> list:
    no_config = tmp_path / "no-config"
    no_config.mkdir()
    (no_config / "model.safetensors").write_bytes(b"")
    bad_json = tmp_path / "bad-json"
    shutil.copytree(tiny_model_dir, bad_json)
    (bad_json / "config.json").write_text("{not json")
    no_template = tmp_path / "no-template"
    shutil.copytree(tiny_model_dir, no_template)
    config = json.loads((no_template / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (no_template / "tokenizer_config.json").write_text(json.dumps(config))
    (no_template / "chat_template.jinja").unlink(missing_ok=True)
    bad_header = tmp_path / "bad-header"
    shutil.copytree(tiny_model_dir, bad_header)
    (bad_header / "model.safetensors").write_bytes(b"\xff" * 16)
    return [
        (
            "model-folder-without-config",
            {"model.name_or_path": str(no_config)},
            [str(no_config), "no config.json"],
        ),
        (
            "model-config-not-json",
            {"model.name_or_path": str(bad_json)},
            [f"{bad_json}/config.json", "not readable JSON"],
        ),
        (
            "tokenizer-without-template",
            {"model.name_or_path": str(no_template), "model.chat_template": "tokenizer"},
            ["model.chat_template", "has no chat template"],
        ),
        (
            "corrupt-safetensors",
            {"model.name_or_path": str(bad_header)},
            ["model.safetensors", "not a readable safetensors"],
        ),
    ]


def data_cases(tmp_path: Path) -> list:
    """Data files of every format, each with one thing wrong (rows are 1-based; the message names file:row)."""
    cases = []

    def case(name, filename, content, fragments, **source):
        path = tmp_path / filename
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif isinstance(content, list):
            write_rows(path, content)
        elif content is not None:
            path.write_text(content)
        cases.append(
            (
                name,
                {"data.train": [{"path": str(path), **source}]},
                [f.replace("FILE", str(path)) for f in fragments],
            )
        )
        return path

    case(
        "jsonl-broken-line",
        "a.jsonl",
        json.dumps(GOOD_ROW) + '\n{"messages": [\n',
        ["FILE:2", "not valid JSON"],
    )
    case(
        "jsonl-not-an-object",
        "b.jsonl",
        json.dumps(GOOD_ROW) + "\n[1, 2]\n",
        ["FILE:2", "expected a JSON object"],
    )
    case(
        "jsonl-not-utf8",
        "c.jsonl",
        (json.dumps(GOOD_ROW) + "\n").encode() + b'{"text": "caf\xe9"}\n',
        ["FILE:2", "not UTF-8"],
    )
    case("json-nested-too-deep", "d.json", "[" * 100000 + "]" * 100000, ["FILE", "nested too deeply"])
    case("json-not-utf8", "e.json", b'[{"text": "\xff\xfe"}]', ["FILE:1", "not UTF-8"])
    case("parquet-corrupt", "f.parquet", b"PAR1 this is not parquet", ["FILE", "not a readable parquet file"])
    case("csv-not-utf8", "g.csv", b"text\nok\n\xff\xfe\n", ["FILE:3", "not UTF-8"])
    folder = tmp_path / "h.jsonl"
    folder.mkdir()
    cases.append(
        ("folder-named-like-a-file", {"data.train": [{"path": str(folder)}]}, [str(folder), "is a folder"])
    )
    loop = tmp_path / "loop.jsonl"
    loop.symlink_to(loop)
    cases.append(("symlink-loop", {"data.train": [{"path": str(loop)}]}, [str(loop), "symbolic link"]))
    cases.append(
        ("symlink-loop-relative", {"data.train": [{"path": "loop.jsonl"}]}, [str(loop), "symbolic link"])
    )
    (tmp_path / "loop-a").symlink_to(tmp_path / "loop-b")
    (tmp_path / "loop-b").symlink_to(tmp_path / "loop-a")  # a folder-like name: not taken for a hub dataset
    cases.append(
        (
            "symlink-loop-folder",
            {"data.train": [{"path": str(tmp_path / "loop-a")}]},
            ["loop-a", "symbolic link"],
        )
    )
    cases.append(
        (
            "missing-file",
            {"data.train": [{"path": str(tmp_path / "nope.jsonl")}]},
            ["nope.jsonl", "not found"],
        )
    )
    case("unsupported-suffix", "i.txt", "hello\n", ["FILE", "unsupported file type"])
    case(
        "content-not-text",
        "j.jsonl",
        [GOOD_ROW, {"messages": [{"role": "user", "content": 3}]}],
        ["FILE:2", "messages[0].content must be text"],
    )
    case(
        "ends-on-user-turn",
        "k.jsonl",
        [GOOD_ROW, chat(("user", "a"), ("assistant", "b"), ("user", "c"))],
        ["FILE:2", "ends with a user turn"],
    )
    case(
        "system-not-first",
        "l.jsonl",
        [chat(("user", "a"), ("system", "s"), ("assistant", "b"))],
        ["FILE:1", "a system message may only come first"],
    )
    case("unknown-role", "m.jsonl", [chat(("user", "a"), ("robot", "b"))], ["FILE:1", "role is 'robot'"])
    case(
        "sharegpt-unknown-speaker",
        "n.jsonl",
        [{"conversations": [{"from": "bot", "value": "x"}]}],
        ["FILE:1", "conversations[0].from is 'bot'"],
    )
    case(
        "alpaca-empty-instruction",
        "o.jsonl",
        [{"instruction": " ", "output": "x"}],
        ["FILE:1", "'instruction' is empty"],
    )
    case(
        "preference-missing-rejected",
        "p.jsonl",
        [{"prompt": "q", "chosen": "a", "rejected": None}],
        ["FILE:1", "'rejected'"],
        format="preference",
    )
    case(
        "tools-string-not-json",
        "q.jsonl",
        [{**GOOD_ROW, "tools": "[{not json"}],
        ["FILE:1", "'tools' is a string that is not JSON"],
    )
    case(
        "tool-call-arguments-not-json",
        "r.jsonl",
        [
            {
                "messages": [
                    {"role": "user", "content": "w?"},
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{oops"}}],
                    },
                    {"role": "tool", "content": "1"},
                    {"role": "assistant", "content": "ok"},
                ]
            }
        ],
        ["FILE:1", "arguments is not valid JSON"],
    )
    case(
        "unused-column",
        "s.jsonl",
        [{**GOOD_ROW, "score": 0.9}],
        ["FILE:1", "'score'", "columns:", "extra_columns: ignore"],
    )
    case(
        "kto-answers-under-sft",
        "kto-answers.jsonl",
        [{**GOOD_ROW, "label": True}],
        ["unpaired rows", "'label'", "training.method: kto", "format: messages"],
    )
    case(
        "column-map-to-missing",
        "t.jsonl",
        [{"question": "q", "answer": "a"}],
        ["FILE:1", "column 'prompt'"],
        format="alpaca",
        columns={"instruction": "prompt", "output": "answer"},
    )
    mixed = tmp_path / "u.jsonl"
    write_rows(mixed, [{"text": "raw"}])
    cases.append(
        (
            "mixed-kinds",
            {"data.train": [{"path": "builtin:tiny-chat"}, {"path": str(mixed)}]},
            ["sources mix chat and text rows"],
        )
    )
    case("empty-file", "v.jsonl", "", ["FILE", "no rows"])
    case("empty-text", "w.jsonl", [{"text": "  "}], ["FILE:1", "'text' is empty"])
    case("no-assistant-turn", "x.jsonl", [chat(("user", "a"))], ["FILE:1", "no assistant message"])
    case(
        "preference-no-prompt",
        "y.jsonl",
        [
            {
                "chosen": [{"role": "assistant", "content": "a"}],
                "rejected": [{"role": "assistant", "content": "b"}],
            }
        ],
        ["FILE:1", "no prompt"],
        format="preference",
    )
    case(
        "sharegpt-function-call-not-json",
        "z.jsonl",
        [
            {
                "conversations": [
                    {"from": "human", "value": "w?"},
                    {"from": "function_call", "value": "not json"},
                    {"from": "observation", "value": "1"},
                    {"from": "gpt", "value": "ok"},
                ]
            }
        ],
        ["FILE:1", "conversations[1]", "function_call"],
    )
    return cases


SET_CASES = [
    ("set-without-equals", ["--set", "training.learning_rate"], ["--set", "KEY=VALUE"]),
    (
        "set-through-a-value",
        ["--set", "training.learning_rate.x=1"],
        ["--set", "'training.learning_rate' is a value"],
    ),
    ("set-empty-key", ["--set", "=3"], ["--set", "empty key"]),
    ("set-unknown-key", ["--set", "adapter.lora_r=8"], ["adapter", "did you mean 'r'"]),
]


def recipe_file(tmp_path: Path, changes: dict, name: str = "recipe.yaml") -> Path:
    raw = load_recipe()
    raw["output"]["dir"] = str(tmp_path / "runs" / "{name}-{backend}")
    for dotted, value in {**BASE, **changes}.items():
        node = raw
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def assert_refused(result, fragments, tmp_path: Path):
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    for fragment in fragments:
        assert fragment in result.stderr, (fragment, result.stderr[-3000:])
    assert not (tmp_path / "runs").exists(), "something was written"


@pytest.mark.parametrize("name, changes, fragments", RECIPE_CASES, ids=[c[0] for c in RECIPE_CASES])
def test_bad_recipe_values(name, changes, fragments, tmp_path):
    assert_refused(unify("validate", str(recipe_file(tmp_path, changes))), fragments, tmp_path)


def test_bad_model_folders(tiny_model_dir, tmp_path):
    for name, changes, fragments in model_folder_cases(tiny_model_dir, tmp_path):
        assert_refused(
            unify("validate", str(recipe_file(tmp_path, changes, f"{name}.yaml"))), fragments, tmp_path
        )


def test_bad_data_files(tmp_path):
    cases = data_cases(tmp_path)
    assert len(cases) >= 25
    for name, changes, fragments in cases:
        result = unify("validate", str(recipe_file(tmp_path, changes, f"{name}.yaml")))
        assert_refused(result, fragments, tmp_path)


@pytest.mark.parametrize("name, args, fragments", SET_CASES, ids=[c[0] for c in SET_CASES])
def test_bad_set_values(name, args, fragments, tmp_path):
    assert_refused(unify("validate", str(recipe_file(tmp_path, {})), *args), fragments, tmp_path)


def test_bad_recipe_files(tmp_path):
    cases = []
    not_utf8 = tmp_path / "latin1.yaml"
    not_utf8.write_bytes("name: caf\xe9\n".encode("latin-1"))
    cases.append((not_utf8, [f"{not_utf8}:1", "not UTF-8"]))
    duplicate = tmp_path / "duplicate.yaml"
    duplicate.write_text(recipe_file(tmp_path, {}).read_text() + "\nname: again\n")
    cases.append((duplicate, [f"{duplicate}:", "duplicate key 'name'"]))
    bomb = tmp_path / "bomb.yaml"
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"] + [
        f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)
    ]
    bomb.write_text("\n".join(lines) + "\n")
    cases.append((bomb, [str(bomb), "aliases"]))
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n")
    cases.append((listed, [str(listed), "expected a mapping"]))
    broken = tmp_path / "broken.yaml"
    broken.write_text("model: [unclosed\n")
    cases.append((broken, [f"{broken}:", "not valid YAML"]))
    folder = tmp_path / "folder.yaml"
    folder.mkdir()
    cases.append((folder, [str(folder), "is a folder"]))
    cases.append((tmp_path / "missing.yaml", ["recipe file not found"]))
    for path, fragments in cases:
        assert_refused(unify("validate", str(path)), fragments, tmp_path)


def test_a_bad_run_writes_nothing(tmp_path):
    """`unify run` refuses the same inputs before the run folder exists (a sample across the categories)."""
    for changes, fragment in [
        ({"training.learning_rate": float("inf")}, "training.learning_rate"),
        ({"model.chat_template": "llama3"}, "model.chat_template"),
        ({"adapter.target_modules": ["nope"]}, "adapter.target_modules"),
        ({"backend_options": {"peft": {"trainer_args": {"learnin_rate": 1}}}}, "learnin_rate"),
        ({"output.dir": "runs/{nmae}"}, "output.dir"),
    ]:
        result = unify("run", str(recipe_file(tmp_path, changes)), "--backend", "peft")
        assert_refused(result, [fragment], tmp_path)


def test_corpus_size():
    assert len(RECIPE_CASES) + len(SET_CASES) + 4 + 7 + 25 >= 60


def test_accepted_real_world_shapes(tmp_path):
    """What must NOT be refused: a CSV with a byte-order mark, and `extra_columns: ignore` for an id column."""
    bom = tmp_path / "bom.csv"
    bom.write_bytes("\ufeffinstruction,output\nSay hi.,Hi.\n".encode())
    with_id = write_rows(tmp_path / "ids.jsonl", [{**GOOD_ROW, "id": 7}])
    result = unify(
        "validate",
        str(
            recipe_file(
                tmp_path,
                {
                    "data.train": [
                        {"path": str(bom), "format": "alpaca"},
                        {"path": str(with_id), "extra_columns": "ignore"},
                    ]
                },
            )
        ),
        "--no-tokens",
    )
    assert result.returncode == 0, result.stderr
    assert "2 train rows" in result.stdout
