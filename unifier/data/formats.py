"""Row formats and their conversion to unifier's canonical rows.

Canonical rows (what every backend trains on):
- chat:       {"messages": [{"role", "content", ["tool_calls"], ["name"], ["reasoning_content"]}...],
               ["tools": [...]]}
- text:       {"text": "..."}
- preference: {"prompt": [messages], "chosen": [messages], "rejected": [messages], ["tools": [...]]}
- prompt:     {"prompt": [messages], "columns": {name: value...}, ["tools": [...]]} (GRPO: the model writes the
               answer; the row's other columns reach the reward functions, e.g. a reference answer)
- unpaired:   {"prompt": [messages], "completion": [messages], "label": true|false, ["tools": [...]]} (KTO: one
               answer marked desirable or undesirable, no pair)

Formats as people write them: OpenAI messages (with tools / tool_calls), sharegpt (with LLaMA-Factory's
and ms-swift's function_call / observation turns, tools as a JSON string), alpaca (with history), raw
text, and preference pairs (prompt/chosen/rejected, two conversations sharing a prefix, or LLaMA-Factory's
conversations + single chosen/rejected turns). A column a format does not use is an error, not silence.
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
    "prompt": "prompt",
    "unpaired": "unpaired",
}
# the columns each format reads; any other column is refused unless the source says extra_columns: ignore
COLUMNS = {
    "alpaca": {"instruction", "input", "output", "system", "history"},
    "sharegpt": {"conversations", "system", "tools"},
    "messages": {"messages", "tools"},
    "text": {"text"},
    "preference": {"prompt", "chosen", "rejected", "conversations", "messages", "system", "tools"},
    "prompt": None,  # every other column is passed to the reward functions
    # trl's prompt/completion/label, or ms-swift's and LLaMA-Factory's (kto_tag) messages + label
    "unpaired": {"prompt", "completion", "label", "messages", "conversations", "system", "tools"},
}


class RowError(ValueError):
    """What is wrong with one row; the caller adds file:row."""


def detect_format(row: dict) -> str:
    keys = set(row)
    if "chosen" in keys and "rejected" in keys:
        return "preference"
    if "label" in keys and keys & {"completion", "messages", "conversations"}:
        return "unpaired"
    if "messages" in keys:
        return "messages"
    if "conversations" in keys:
        return "sharegpt"
    if "instruction" in keys and "output" in keys:
        return "alpaca"
    if "text" in keys:
        return "text"
    if "prompt" in keys:
        return "prompt"
    raise RowError(
        f"cannot tell the format from the keys {sorted(keys)}; expected messages (OpenAI), conversations "
        "(sharegpt), instruction+output (alpaca), text, chosen+rejected (preference), prompt (GRPO prompts) or "
        "completion/messages + label (KTO's unpaired answers)",
    )


def to_canonical(fmt: str, row: dict, roles: dict[str, str], *, extra_columns: str = "error") -> dict:
    unused = sorted(set(row) - COLUMNS[fmt]) if COLUMNS[fmt] is not None else []
    if unused and extra_columns != "ignore":
        raise RowError(
            f"column{'s' if len(unused) > 1 else ''} {', '.join(repr(c) for c in unused)} "
            f"{'are' if len(unused) > 1 else 'is'} not read by the {fmt} format (it reads "
            f"{', '.join(sorted(COLUMNS[fmt]))}); map a column to one the format reads with columns:, or set "
            "extra_columns: ignore on this source to leave such columns out (a score would then be ignored: "
            "the rows train as they are)"
        )
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
    for index, turn in enumerate(row.get("history") or []):  # LLaMA-Factory: earlier [question, answer] pairs
        if not (isinstance(turn, (list, tuple)) and len(turn) == 2 and all(isinstance(t, str) for t in turn)):
            raise RowError(f"history[{index}] must be a [question, answer] pair of texts")
        messages += [{"role": "user", "content": turn[0]}, {"role": "assistant", "content": turn[1]}]
    messages += [{"role": "user", "content": prompt}, {"role": "assistant", "content": output}]
    return {"messages": messages}


def _sharegpt_turns(turns: Any, roles: dict[str, str], key: str = "conversations") -> list[dict]:
    """sharegpt turns as messages; function_call turns become assistant tool_calls, observation turns tool
    results (named after the call they answer), as ms-swift and LLaMA-Factory read them."""
    if not isinstance(turns, list) or not turns:
        raise RowError(f"'{key}' must be a non-empty list of turns")
    role_map = {**SHAREGPT_ROLES, **roles}
    messages: list[dict] = []
    for index, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise RowError(f"{key}[{index}] must be an object with 'from' and 'value'")
        speaker = turn.get("from", turn.get("role"))
        text = turn.get("value", turn.get("content"))
        if speaker not in role_map:
            raise RowError(
                f"{key}[{index}].from is '{speaker}', which is not a known role "
                f"({', '.join(sorted(role_map))}); map it with data.train[*].roles"
            )
        if not isinstance(text, str):
            raise RowError(f"{key}[{index}].value must be text")
        if speaker == "function_call" and role_map[speaker] == "assistant":
            calls = _function_call_value(text, f"{key}[{index}] (function_call)")
            if messages and messages[-1]["role"] == "assistant" and "tool_calls" not in messages[-1]:
                messages[-1]["tool_calls"] = calls  # "Let me check." then the call: one assistant turn
            else:
                messages.append({"role": "assistant", "content": "", "tool_calls": calls})
            continue
        message = {"role": role_map[speaker], "content": text}
        if message["role"] == "tool":
            name = _answered_call(messages)
            if name:
                message["name"] = name
        messages.append(message)
    return messages


def _function_call_value(text: str, where: str) -> list[dict]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise RowError(f'{where}: expected a JSON call {{"name": ..., "arguments": {{...}}}}') from None
    calls = value if isinstance(value, list) else [value]
    out = []
    for number, call in enumerate(calls):
        if not isinstance(call, dict) or not isinstance(call.get("name"), str):
            raise RowError(f'{where}: call {number} must be {{"name": ..., "arguments": {{...}}}}')
        out.append(
            _tool_call(
                {"function": {"name": call["name"], "arguments": call.get("arguments", {})}},
                f"{where}: call {number}",
            )
        )
    return out


def _answered_call(messages: list[dict]) -> str | None:
    """The name of the call a tool result answers: the last assistant turn's calls, in order."""
    results = 0
    for message in reversed(messages):
        if message["role"] == "tool":
            results += 1
        elif message["role"] == "assistant":
            calls = message.get("tool_calls") or []
            return calls[results]["function"]["name"] if results < len(calls) else None
    return None


def _sharegpt(row: dict, roles: dict[str, str]) -> dict:
    messages = _system_of(row) + _sharegpt_turns(row.get("conversations"), roles)
    return _checked_chat({"messages": messages, **_tools_of(row)})


def _system_of(row: dict) -> list[dict]:
    if isinstance(row.get("system"), str) and row["system"].strip():
        return [{"role": "system", "content": row["system"]}]
    return []


def _messages(row: dict, roles: dict[str, str]) -> dict:
    return _checked_chat({"messages": _message_list(row.get("messages"), roles), **_tools_of(row)})


def _message_list(messages: Any, roles: dict[str, str], key: str = "messages") -> list[dict]:
    if isinstance(messages, str):
        try:
            messages = json.loads(messages)
        except json.JSONDecodeError:
            raise RowError(f"'{key}' is a string that is not JSON") from None
    if not isinstance(messages, list) or not messages:
        raise RowError(f"'{key}' must be a non-empty list")
    clean = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise RowError(f"{key}[{index}] must be an object with 'role' and 'content'")
        role = roles.get(message.get("role"), message.get("role"))
        out: dict[str, Any] = {"role": role, "content": message.get("content")}
        if message.get("tool_calls"):
            out["tool_calls"] = [
                _tool_call(call, f"{key}[{index}].tool_calls[{n}]")
                for n, call in enumerate(message["tool_calls"])
            ]
        if role == "tool" and message.get("name"):
            out["name"] = message["name"]
        reasoning = message.get("reasoning_content", message.get("reasoning"))
        if reasoning is not None and role == "assistant":
            if not isinstance(reasoning, str):
                raise RowError(f"{key}[{index}].reasoning_content must be text")
            out["reasoning_content"] = reasoning  # the template renders it (Qwen3: <think>...</think>)
        if out["content"] is None and "tool_calls" in out:
            out["content"] = ""
        clean.append(out)
    return clean


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
    if not isinstance(arguments, dict):
        raise RowError(f"{where}.function.arguments must be a JSON object")
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
    # a bare function schema ({name, description, parameters}, as glaive/LLaMA-Factory write them) is wrapped
    # the OpenAI way, so every template and backend sees one shape
    wrapped = [t if "function" in t else {"type": "function", "function": t} for t in tools]
    for index, tool in enumerate(wrapped):
        if not isinstance(tool["function"], dict) or not isinstance(tool["function"].get("name"), str):
            raise RowError(f"tools[{index}] has no function name")
    return {"tools": wrapped}


def _checked_messages(messages: list[dict], key: str) -> list[dict]:
    """Every turn has a known role and text content (a system turn only first)."""
    for index, message in enumerate(messages):
        if message["role"] not in ROLES:
            raise RowError(f"{key}[{index}].role is {message['role']!r}; expected one of {', '.join(ROLES)}")
        if not isinstance(message["content"], str):
            raise RowError(f"{key}[{index}].content must be text")
        if message["role"] == "system" and index != 0:
            raise RowError(f"{key}[{index}]: a system message may only come first")
    return messages


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
    if messages[-1]["role"] in ("user", "tool"):
        raise RowError(
            f"the conversation ends with a {messages[-1]['role']} turn, which no answer follows: nothing is learned "
            "from it; drop that last turn, or add the assistant's answer"
        )
    return row


def _text(row: dict, roles: dict[str, str]) -> dict:
    text = _text_field(row, "text")
    if not text.strip():
        raise RowError("'text' is empty")
    return {"text": text}


def _as_messages(value: Any, key: str, default_role: str, roles: dict[str, str]) -> list[dict]:
    """Text (one turn of default_role), one sharegpt turn (LLaMA-Factory), or a list of messages / turns."""
    if isinstance(value, str):
        return [{"role": default_role, "content": value}]
    if isinstance(value, dict) and ("from" in value or "value" in value):  # LLaMA-Factory: one sharegpt turn
        return _sharegpt_turns([value], roles, key)
    if isinstance(value, list) and value and all(isinstance(m, dict) for m in value):
        if any("from" in m for m in value):
            return _sharegpt_turns(value, roles, key)
        return _message_list(value, roles, key)
    raise RowError(f"'{key}' must be text or a non-empty list of messages")


def _preference(row: dict, roles: dict[str, str]) -> dict:
    def as_messages(value: Any, key: str, default_role: str) -> list[dict]:
        return _as_messages(value, key, default_role, roles)

    chosen = as_messages(row.get("chosen"), "chosen", "assistant")
    rejected = as_messages(row.get("rejected"), "rejected", "assistant")
    shared_prompt = row.get("prompt", row.get("conversations", row.get("messages")))
    if shared_prompt is not None:
        prompt = _system_of(row) + as_messages(
            shared_prompt, "prompt" if "prompt" in row else "conversations", "user"
        )
    else:  # full conversations: the shared prefix is the prompt
        shared = 0
        while shared < min(len(chosen), len(rejected)) - 1 and chosen[shared] == rejected[shared]:
            shared += 1
        prompt, chosen, rejected = chosen[:shared], chosen[shared:], rejected[shared:]
    if not prompt:
        raise RowError(
            "no prompt: give 'prompt', or chosen/rejected conversations that share their first turns"
        )
    _checked_messages(prompt, "prompt")
    for key, messages in (("chosen", chosen), ("rejected", rejected)):
        _checked_messages(messages, key)
        if messages[-1]["role"] != "assistant" or not isinstance(messages[-1]["content"], str):
            raise RowError(f"'{key}' must end with an assistant answer")
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected, **_tools_of(row)}


PROMPT_KEYS = {"prompt", "system", "tools"}


def _prompt(row: dict, roles: dict[str, str]) -> dict:
    """A prompt for the model to answer (GRPO): text or messages ending with a user (or tool) turn; every other
    column is kept, by name, for the reward functions."""
    value = row.get("prompt")
    if isinstance(value, str):
        if not value.strip():
            raise RowError("'prompt' is empty")
        messages = [{"role": "user", "content": value}]
    elif isinstance(value, list) and value and all(isinstance(m, dict) for m in value):
        messages = (
            _sharegpt_turns(value, roles, "prompt")
            if any("from" in m for m in value)
            else _message_list(value, roles, "prompt")
        )
    else:
        raise RowError("'prompt' must be text or a non-empty list of messages")
    if "system" in row and row["system"] is not None and not isinstance(row["system"], str):
        raise RowError("'system' must be text")
    messages = _checked_messages(_system_of(row) + messages, "prompt")
    if messages[-1]["role"] == "assistant":
        raise RowError("'prompt' ends with an assistant turn: the model writes that turn in GRPO; drop it")
    columns = {key: value for key, value in row.items() if key not in PROMPT_KEYS}
    try:
        json.dumps(columns, allow_nan=False)
    except (TypeError, ValueError):
        raise RowError(
            "the columns beside 'prompt' must be JSON values (they reach the reward functions)"
        ) from None
    return {"prompt": messages, "columns": columns, **_tools_of(row)}


def _label(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):  # CSV / parquet booleans
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    shown = "missing" if value is None else f"got {value!r}"
    raise RowError(f"'label' must be true (a desirable answer) or false (an undesirable one), {shown}")


def _unpaired(row: dict, roles: dict[str, str]) -> dict:
    """KTO: one answer with a label, no pair. trl's layout (prompt + completion, text or messages) or ms-swift's
    and LLaMA-Factory's (a conversation whose last assistant turn is the answer, and a label)."""
    label = _label(row.get("label"))
    if "system" in row and row["system"] is not None and not isinstance(row["system"], str):
        raise RowError("'system' must be text")
    if ("completion" in row or "prompt" in row) and not ("messages" in row or "conversations" in row):
        if "prompt" not in row:
            raise RowError("'completion' needs the 'prompt' it answers")
        if "completion" not in row:
            raise RowError("'prompt' needs a 'completion': the answer the label judges")
        prompt = _as_messages(row["prompt"], "prompt", "user", roles)
        completion = _as_messages(row["completion"], "completion", "assistant", roles)
        if any(m["role"] != "assistant" for m in completion):
            raise RowError(
                "'completion' must hold the assistant's answer only (earlier turns go in 'prompt')"
            )
    else:
        if "messages" in row and "conversations" in row:
            raise RowError("both 'messages' and 'conversations': give the conversation once")
        if "messages" not in row and "conversations" not in row:
            raise RowError(
                "no answer: give 'prompt' + 'completion', or 'messages' (or sharegpt 'conversations') ending with "
                "the answer the label judges"
            )
        key = "messages" if "messages" in row else "conversations"
        beside = next((name for name in ("prompt", "completion") if name in row), None)
        if beside:
            raise RowError(
                f"'{beside}' beside '{key}': give prompt + completion, or one conversation + label"
            )
        turns = _as_messages(row[key], key, "user", roles)
        if turns[-1]["role"] != "assistant":
            raise RowError(f"'{key}' must end with the assistant answer that the label judges")
        prompt, completion = turns[:-1], turns[-1:]
    prompt = _checked_messages(_system_of(row) + prompt, "prompt")
    if not prompt or prompt[-1]["role"] == "assistant":
        raise RowError("the answer needs a prompt before it that ends with a user (or tool) turn")
    _checked_messages(prompt + completion, "completion")
    if not isinstance(completion[-1].get("content"), str):
        raise RowError("the answer must end with assistant text")
    return {"prompt": prompt, "completion": completion, "label": label, **_tools_of(row)}


CONVERTERS: dict[str, Callable[[dict, dict[str, str]], dict]] = {
    "alpaca": _alpaca,
    "sharegpt": _sharegpt,
    "messages": _messages,
    "text": _text,
    "preference": _preference,
    "prompt": _prompt,
    "unpaired": _unpaired,
}
