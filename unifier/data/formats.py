"""Row formats and their conversion to unifier's canonical rows.

Canonical rows (what every backend trains on):
- chat:       {"messages": [{"role", "content", ["tool_calls"], ["name"]}...], ["tools": [...]]}
- text:       {"text": "..."}
- preference: {"prompt": [messages], "chosen": [messages], "rejected": [messages]}
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

ROLES = ("system", "user", "assistant", "tool")
SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "system": "system",
    "function_call": "assistant",
    "observation": "tool",
    "tool": "tool",
}
KIND_OF_FORMAT = {
    "alpaca": "chat",
    "sharegpt": "chat",
    "messages": "chat",
    "text": "text",
    "preference": "preference",
}


class RowError(ValueError):
    """What is wrong with one row; the caller adds file:row."""


def detect_format(row: dict) -> str:
    keys = set(row)
    if "chosen" in keys and "rejected" in keys:
        return "preference"
    if "messages" in keys:
        return "messages"
    if "conversations" in keys:
        return "sharegpt"
    if "instruction" in keys and "output" in keys:
        return "alpaca"
    if "text" in keys:
        return "text"
    raise RowError(
        f"cannot tell the format from the keys {sorted(keys)}; expected messages (OpenAI), conversations "
        "(sharegpt), instruction+output (alpaca), text, or chosen+rejected (preference)",
    )


def to_canonical(fmt: str, row: dict, roles: dict[str, str]) -> dict:
    return CONVERTERS[fmt](row, roles)


def _text_field(row: dict, key: str, *, required: bool = True) -> str:
    value = row.get(key)
    if value is None or (isinstance(value, float) and value != value):  # missing or NaN from CSV/parquet
        if required:
            raise RowError(f"missing '{key}'")
        return ""
    if not isinstance(value, str):
        raise RowError(f"'{key}' must be text, got {type(value).__name__}")
    return value


def _alpaca(row: dict, roles: dict[str, str]) -> dict:
    instruction = _text_field(row, "instruction")
    extra = _text_field(row, "input", required=False)
    output = _text_field(row, "output")
    system = _text_field(row, "system", required=False)
    if not instruction.strip():
        raise RowError("'instruction' is empty")
    prompt = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    messages = [{"role": "system", "content": system}] if system.strip() else []
    messages += [{"role": "user", "content": prompt}, {"role": "assistant", "content": output}]
    return {"messages": messages}


def _sharegpt(row: dict, roles: dict[str, str]) -> dict:
    turns = row.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise RowError("'conversations' must be a non-empty list of turns")
    role_map = {**SHAREGPT_ROLES, **roles}
    messages = []
    if isinstance(row.get("system"), str) and row["system"].strip():
        messages.append({"role": "system", "content": row["system"]})
    for index, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise RowError(f"conversations[{index}] must be an object with 'from' and 'value'")
        speaker = turn.get("from", turn.get("role"))
        text = turn.get("value", turn.get("content"))
        if speaker not in role_map:
            raise RowError(
                f"conversations[{index}].from is '{speaker}', which is not a known role "
                f"({', '.join(sorted(role_map))}); map it with data.train[*].roles"
            )
        if not isinstance(text, str):
            raise RowError(f"conversations[{index}].value must be text")
        messages.append({"role": role_map[speaker], "content": text})
    return _checked_chat({"messages": messages, **_tools_of(row)})


def _messages(row: dict, roles: dict[str, str]) -> dict:
    messages = row.get("messages")
    if isinstance(messages, str):
        try:
            messages = json.loads(messages)
        except json.JSONDecodeError:
            raise RowError("'messages' is a string that is not JSON") from None
    if not isinstance(messages, list) or not messages:
        raise RowError("'messages' must be a non-empty list")
    clean = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise RowError(f"messages[{index}] must be an object with 'role' and 'content'")
        role = roles.get(message.get("role"), message.get("role"))
        out: dict[str, Any] = {"role": role, "content": message.get("content")}
        if message.get("tool_calls"):
            out["tool_calls"] = [
                _tool_call(call, f"messages[{index}].tool_calls[{n}]")
                for n, call in enumerate(message["tool_calls"])
            ]
        if role == "tool" and message.get("name"):
            out["name"] = message["name"]
        if out["content"] is None and "tool_calls" in out:
            out["content"] = ""
        clean.append(out)
    return _checked_chat({"messages": clean, **_tools_of(row)})


def _tool_call(call: Any, where: str) -> dict:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise RowError(
            f"{where} must look like {{'type': 'function', 'function': {{'name': ..., 'arguments': ...}}}}"
        )
    arguments = function.get("arguments", {})
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError:
            raise RowError(f"{where}.function.arguments is not valid JSON") from None
    return {"type": "function", "function": {"name": function["name"], "arguments": arguments}}


def _tools_of(row: dict) -> dict:
    tools = row.get("tools")
    if tools in (None, "", []):
        return {}
    if isinstance(tools, str):
        try:
            tools = json.loads(tools)
        except json.JSONDecodeError:
            raise RowError("'tools' is a string that is not JSON") from None
    if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
        raise RowError("'tools' must be a list of tool (function) descriptions")
    return {"tools": tools}


def _checked_chat(row: dict) -> dict:
    messages = row["messages"]
    for index, message in enumerate(messages):
        if message["role"] not in ROLES:
            raise RowError(
                f"messages[{index}].role is '{message['role']}'; expected one of {', '.join(ROLES)}"
            )
        if not isinstance(message["content"], str):
            raise RowError(f"messages[{index}].content must be text")
        if message["role"] == "system" and index != 0:
            raise RowError(f"messages[{index}]: a system message may only come first")
    if not any(m["role"] == "assistant" for m in messages):
        raise RowError("no assistant message: there is nothing to train on")
    return row


def _text(row: dict, roles: dict[str, str]) -> dict:
    text = _text_field(row, "text")
    if not text.strip():
        raise RowError("'text' is empty")
    return {"text": text}


def _preference(row: dict, roles: dict[str, str]) -> dict:
    def as_messages(value: Any, key: str, default_role: str) -> list[dict]:
        if isinstance(value, str):
            return [{"role": default_role, "content": value}]
        if isinstance(value, list) and value and all(isinstance(m, dict) for m in value):
            return [{"role": m.get("role"), "content": m.get("content")} for m in value]
        raise RowError(f"'{key}' must be text or a non-empty list of messages")

    chosen = as_messages(row.get("chosen"), "chosen", "assistant")
    rejected = as_messages(row.get("rejected"), "rejected", "assistant")
    if "prompt" in row:
        prompt = as_messages(row["prompt"], "prompt", "user")
    else:  # full conversations: the shared prefix is the prompt
        shared = 0
        while shared < min(len(chosen), len(rejected)) - 1 and chosen[shared] == rejected[shared]:
            shared += 1
        prompt, chosen, rejected = chosen[:shared], chosen[shared:], rejected[shared:]
    if not prompt:
        raise RowError(
            "no prompt: give 'prompt', or chosen/rejected conversations that share their first turns"
        )
    for key, messages in (("chosen", chosen), ("rejected", rejected)):
        if messages[-1]["role"] != "assistant" or not isinstance(messages[-1]["content"], str):
            raise RowError(f"'{key}' must end with an assistant answer")
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


CONVERTERS: dict[str, Callable[[dict, dict[str, str]], dict]] = {
    "alpaca": _alpaca,
    "sharegpt": _sharegpt,
    "messages": _messages,
    "text": _text,
    "preference": _preference,
}
