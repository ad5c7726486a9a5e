import csv
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from unifier.data import prepare_data
from unifier.errors import UserError
from unifier.spec import spec_from_dict


def spec_for(path, method="sft", **source):
    return spec_from_dict(
        {
            "model": {"name_or_path": "m"},
            "training": {"method": method},
            "data": {"train": [{"path": str(path), **source}], "shuffle": False},
        }
    )


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_alpaca_becomes_messages(tmp_path):
    path = write_jsonl(
        tmp_path / "a.jsonl",
        [{"instruction": "Add", "input": "1 and 2", "output": "3", "system": "Be brief."}],
    )
    data = prepare_data(spec_for(path))
    assert data.formats == ["alpaca"] and data.kind == "chat"
    assert data.train[0]["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Add\n\n1 and 2"},
        {"role": "assistant", "content": "3"},
    ]


def test_sharegpt_with_custom_roles(tmp_path):
    rows = [{"conversations": [{"from": "customer", "value": "hi"}, {"from": "agent", "value": "hello"}]}]
    path = write_jsonl(tmp_path / "s.jsonl", rows)
    data = prepare_data(spec_for(path, roles={"customer": "user", "agent": "assistant"}))
    assert data.train[0]["messages"] == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
    ]


def test_openai_messages_with_tools(tmp_path):
    row = {
        "tools": [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}],
        "messages": [
            {"role": "user", "content": "Weather in Oslo?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"type": "function", "function": {"name": "weather", "arguments": '{"city": "Oslo"}'}}
                ],
            },
            {"role": "tool", "name": "weather", "content": "-3C"},
            {"role": "assistant", "content": "It is -3C in Oslo."},
        ],
    }
    data = prepare_data(spec_for(write_jsonl(tmp_path / "t.jsonl", [row])))
    messages = data.train[0]["messages"]
    assert messages[1]["tool_calls"][0]["function"]["arguments"] == {"city": "Oslo"}
    assert messages[1]["content"] == "" and data.train[0]["tools"][0]["function"]["name"] == "weather"


def test_text_rows_for_continued_pretraining(tmp_path):
    data = prepare_data(spec_for(write_jsonl(tmp_path / "p.jsonl", [{"text": "Paris is in France."}])))
    assert data.kind == "text" and data.train == [{"text": "Paris is in France."}]


def test_preference_pairs_from_strings_and_conversations(tmp_path):
    rows = [
        {"prompt": "2+2?", "chosen": "4", "rejected": "5"},
        {
            "chosen": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
            "rejected": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "go away"}],
        },
    ]
    data = prepare_data(spec_for(write_jsonl(tmp_path / "d.jsonl", rows), method="dpo"))
    assert data.kind == "preference"
    assert data.train[0]["prompt"] == [{"role": "user", "content": "2+2?"}]
    assert data.train[1]["prompt"] == [{"role": "user", "content": "hi"}]
    assert data.train[1]["rejected"] == [{"role": "assistant", "content": "go away"}]


def test_csv_parquet_and_json_with_column_mapping(tmp_path):
    with (tmp_path / "c.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["question", "answer"])
        writer.writerow(["What is 1+1?", "2"])
    data = prepare_data(
        spec_for(tmp_path / "c.csv", format="alpaca", columns={"instruction": "question", "output": "answer"})
    )
    assert data.train[0]["messages"][-1] == {"role": "assistant", "content": "2"}
    pq.write_table(pa.Table.from_pylist([{"text": "a b c"}]), tmp_path / "p.parquet")
    assert prepare_data(spec_for(tmp_path / "p.parquet")).train == [{"text": "a b c"}]
    (tmp_path / "j.json").write_text(json.dumps([{"text": "x"}, {"text": "y"}]))
    assert len(prepare_data(spec_for(tmp_path / "j.json")).train) == 2


@pytest.mark.parametrize(
    "rows, message",
    [
        ([{"messages": [{"role": "user", "content": "hi"}]}], ":1: no assistant message"),
        ([{"text": "ok"}, {"text": 5}], ":2: 'text' must be text"),
        (
            [{"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]}],
            "role is 'robot'",
        ),
        ([{"foo": 1}], ":1: cannot tell the format"),
    ],
)
def test_malformed_rows_name_file_and_row(tmp_path, rows, message):
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(UserError) as info:
        prepare_data(spec_for(path))
    assert f"{path}" in str(info.value) and message in str(info.value)


def test_broken_json_line_names_the_line(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text('{"text": "fine"}\n{"text": \n')
    with pytest.raises(UserError, match=r"broken.jsonl:2: not valid JSON"):
        prepare_data(spec_for(path))


def test_dpo_needs_preference_rows(tmp_path):
    with pytest.raises(UserError, match="needs preference data"):
        prepare_data(spec_for(write_jsonl(tmp_path / "x.jsonl", [{"text": "a"}]), method="dpo"))


def test_shuffle_is_seeded_and_eval_split_holds_out_rows(tmp_path):
    path = write_jsonl(tmp_path / "n.jsonl", [{"text": f"row {i}"} for i in range(20)])
    raw = {
        "model": {"name_or_path": "m"},
        "data": {"train": [{"path": str(path)}], "shuffle": True, "seed": 3, "eval_split": 0.25},
    }
    first, second = prepare_data(spec_from_dict(raw)), prepare_data(spec_from_dict(raw))
    assert first.train == second.train and len(first.train) == 15 and len(first.eval) == 5
    assert [r["text"] for r in first.train] != [f"row {i}" for i in range(15)]
    raw["data"]["seed"] = 4
    assert prepare_data(spec_from_dict(raw)).train != first.train


def test_builtin_data_reads(tmp_path):
    spec = spec_from_dict(
        {"model": {"name_or_path": "m"}, "data": {"train": [{"path": "builtin:tiny-chat"}]}}
    )
    data = prepare_data(spec)
    assert len(data.train) == 68 and data.formats == ["messages"]


def test_local_datasets_folders_go_through_the_datasets_loader(tmp_path):
    """The hub code path for real, offline: a folder of data files, and a folder from save_to_disk."""
    import datasets

    folder = tmp_path / "my_dataset"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", [{"instruction": f"Say {i}.", "output": f"{i}"} for i in range(3)])
    data = prepare_data(spec_for(folder))
    assert data.formats == ["alpaca"] and len(data.train) == 3
    assert data.train[2]["messages"][-1] == {"role": "assistant", "content": "2"}

    saved = tmp_path / "saved"
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_list([{"text": "a"}, {"text": "b"}]),
            "test": datasets.Dataset.from_list([{"text": "c"}]),
        }
    ).save_to_disk(str(saved))
    assert [r["text"] for r in prepare_data(spec_for(saved, split="test")).train] == ["c"]
    (tmp_path / "bad_dataset").mkdir()
    write_jsonl(tmp_path / "bad_dataset" / "train.jsonl", [{"text": "ok"}, {"text": 7}])
    with pytest.raises(UserError, match=r"bad_dataset\[train\]:2: 'text' must be text"):
        prepare_data(spec_for(tmp_path / "bad_dataset"))


def test_a_missing_hub_dataset_is_a_user_error_offline():
    with pytest.raises(
        UserError, match="could not load it as a local file, a `datasets` folder or a hub dataset"
    ):
        prepare_data(spec_for("nobody/no-such-dataset-xyz"))


def test_sharegpt_function_calls_become_tool_calls_and_tool_results(tmp_path):
    """LLaMA-Factory's glaive_toolcall layout: function_call / observation turns, tools as a JSON string of bare
    function schemas."""
    row = {
        "conversations": [
            {"from": "human", "value": "A 12-letter password, please."},
            {
                "from": "function_call",
                "value": json.dumps({"name": "generate_password", "arguments": {"length": 12}}),
            },
            {"from": "observation", "value": json.dumps({"password": "x1y2"})},
            {"from": "gpt", "value": "Here it is: x1y2"},
        ],
        "tools": json.dumps(
            [
                {
                    "name": "generate_password",
                    "description": "Make one",
                    "parameters": {"type": "object", "properties": {"length": {"type": "integer"}}},
                }
            ]
        ),
    }
    data = prepare_data(spec_for(write_jsonl(tmp_path / "glaive.jsonl", [row])))
    messages = data.train[0]["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "assistant"]
    assert messages[1]["tool_calls"] == [
        {"type": "function", "function": {"name": "generate_password", "arguments": {"length": 12}}}
    ]
    assert messages[1]["content"] == "" and messages[2]["name"] == "generate_password"
    assert data.train[0]["tools"][0] == {"type": "function", "function": json.loads(row["tools"])[0]}


def test_llamafactory_preference_layout_and_alpaca_history(tmp_path):
    dpo = {
        "conversations": [{"from": "human", "value": "Capital of Peru?"}],
        "chosen": {"from": "gpt", "value": "Lima."},
        "rejected": {"from": "gpt", "value": "Cusco."},
    }
    data = prepare_data(spec_for(write_jsonl(tmp_path / "dpo.jsonl", [dpo]), method="dpo"))
    assert data.train[0] == {
        "prompt": [{"role": "user", "content": "Capital of Peru?"}],
        "chosen": [{"role": "assistant", "content": "Lima."}],
        "rejected": [{"role": "assistant", "content": "Cusco."}],
    }
    alpaca = {"instruction": "And Chile?", "output": "Santiago.", "history": [["Capital of Peru?", "Lima."]]}
    data = prepare_data(spec_for(write_jsonl(tmp_path / "alpaca.jsonl", [alpaca])))
    assert [m["content"] for m in data.train[0]["messages"]] == [
        "Capital of Peru?",
        "Lima.",
        "And Chile?",
        "Santiago.",
    ]


def test_a_column_the_format_does_not_read_is_refused_or_ignored_on_request(tmp_path):
    """LLaMA-Factory's kto_en_demo layout (messages + a boolean label) reads as KTO's unpaired answers; declared
    as messages, the label must not vanish silently."""
    kto = {
        "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "go away"}],
        "label": False,
    }
    path = write_jsonl(tmp_path / "kto.jsonl", [kto])
    with pytest.raises(UserError, match=r"sources hold unpaired rows") as caught:
        prepare_data(spec_for(path))
    assert "training.method: kto" in caught.value.hint
    with pytest.raises(UserError, match=r"kto.jsonl:1: column 'label' is not read by the messages format"):
        prepare_data(spec_for(path, format="messages"))
    data = prepare_data(spec_for(path, format="messages", extra_columns="ignore"))
    assert "label" not in data.train[0]


def test_empty_turns_warn_with_file_and_row_or_refuse(tmp_path):
    rows = [
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]},
        {"messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": "yo"}]},
    ]
    path = write_jsonl(tmp_path / "empty.jsonl", rows)
    data = prepare_data(spec_for(path))
    assert data.warnings == [f"{path}:2: messages[0] (user) is empty"]
    spec = spec_from_dict(
        {"model": {"name_or_path": "m"}, "data": {"train": [{"path": str(path)}], "empty_content": "error"}}
    )
    with pytest.raises(UserError, match=r"empty\.jsonl:2: messages"):
        prepare_data(spec)
