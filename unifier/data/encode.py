"""How a row becomes tokens: the one encoder that validate, training (every backend), eval and compare use.

A chat row is rendered with the recipe's chat template (jinja2 as transformers renders it, no torch:
chat_render.py) and tokenized once as a whole, as `apply_chat_template(tokenize=True)` does. Which tokens carry
loss (the assistant turns, their end-of-turn marker included, so the model learns to stop) is decided here:

- a template with `{% generation %}` marks (unifier's ChatML) says so itself;
- any other template (the official ones of Qwen, Llama, Gemma... have no marks) is located turn by turn: the
  turn starts where the rendering of the conversation before it plus the generation prompt ends, and ends where
  the rendering of the conversation up to it ends (`<|im_end|>\\n`, `<|eot_id|>`, tool calls before them);
  where the whole conversation renders the turn otherwise (Qwen3), its content is found by rendering the
  conversation with that content replaced, and it ends after what the template writes after the content when
  the turn ends a conversation.
  Every piece is checked against the rendering of the whole conversation: a row whose pieces do not line up is
  refused (file:row), never mis-masked.

Templates that render earlier turns differently from the last one (Qwen3 drops the reasoning of turns before the
last user message) train each turn as the official rendering of the whole conversation shows it; the turns
whose reasoning the template leaves out are counted (validate reports them).

Text rows get the tokenizer's EOS appended (what trl does). Preference rows become trl's layout: prompt_ids
(the prompt with the generation prompt) and chosen_ids / rejected_ids (the rest of the whole tokenized
conversation), the prompt checked to be a token prefix of both.

The encoded rows (data/train.tokens.jsonl) are what every backend trains: trl reads input_ids and
assistant_masks (or the preference ids) as they are; ms-swift through unifier's template (swift_plugin).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .chat_render import render_with_assistant_spans

SENTINEL = "\ue000\ue001"  # private-use characters no real content contains


class EncodeError(ValueError):
    """Why one row cannot be encoded; the caller adds file:row."""


@dataclass
class ChatTemplate:
    text: str
    source: str  # where it came from, for validate and plan
    name: str  # chatml | the model's own | a file

    @property
    def marked(self) -> bool:
        return "{% generation %}" in self.text or "{%- generation %}" in self.text

    def digest(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()[:16]


class Vocabulary:
    """A tokenizer as the encoder needs it: tokenizer.json through `tokenizers` (no torch), and the special
    tokens of tokenizer_config.json (bos/eos/pad text, which the templates use)."""

    def __init__(self, tokenizer, special: dict[str, str], own_template: str | None, source: str):
        self.tokenizer = tokenizer
        self.special = special
        self.own_template = own_template
        self.source = source

    @classmethod
    def from_folder(cls, folder: Path) -> Vocabulary:
        from tokenizers import Tokenizer

        config = _read_json(folder / "tokenizer_config.json")
        special = {
            key: _token_text(value)
            for key, value in config.items()
            if key.endswith("_token") and _token_text(value) is not None
        }
        template = config.get("chat_template")
        if isinstance(template, list):  # several named templates: the default one
            template = next((t.get("template") for t in template if t.get("name") == "default"), None)
        if (folder / "chat_template.jinja").is_file():  # transformers 5: the .jinja file takes priority
            template = read_template(folder / "chat_template.jinja")
        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        return cls(tokenizer, special, template, str(folder))

    @classmethod
    def from_transformers(cls, tokenizer) -> Vocabulary:
        """A loaded transformers fast tokenizer (a hub model the run downloaded)."""
        special = {
            key: value
            for key in ("bos_token", "eos_token", "pad_token", "unk_token")
            if isinstance(value := getattr(tokenizer, key, None), str)
        }
        template = tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else None
        return cls(tokenizer.backend_tokenizer, special, template, tokenizer.name_or_path)

    def encode(self, text: str):
        return self.tokenizer.encode(text, add_special_tokens=False)

    def token_id(self, text: str | None) -> int | None:
        return None if text is None else self.tokenizer.token_to_id(text)

    @property
    def eos_id(self) -> int | None:
        return self.token_id(self.special.get("eos_token"))

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False)

    def digest(self) -> str:
        state = self.tokenizer.to_str() + json.dumps(self.special, sort_keys=True)
        return hashlib.sha256(state.encode()).hexdigest()[:16]


@dataclass
class Encoded:
    """One row as the trainers get it, and what it cost: `layout` is what data/train.tokens.jsonl holds."""

    layout: dict[str, list[int]]
    length: int  # tokens before truncation
    trained: int  # tokens carrying loss before truncation
    trained_kept: int  # ... within max_seq_length
    reasoning_dropped: int = 0  # assistant turns whose reasoning the template does not render
    ids: list[int] = field(default_factory=list)  # the whole row (validate --show), before truncation
    mask: list[int] = field(default_factory=list)


class Encoder:
    def __init__(
        self,
        vocabulary: Vocabulary,
        template: ChatTemplate | None,
        *,
        max_len: int,
        assistant_only: bool = True,
    ):
        self.vocabulary = vocabulary
        self.template = template
        self.max_len = max_len
        self.assistant_only = assistant_only

    # ---- rendering ----
    def render(self, messages: list[dict], tools: list | None, add_generation_prompt: bool = False):
        if self.template is None:
            raise EncodeError("chat rows need a chat template, and none is known for this model")
        try:
            return render_with_assistant_spans(
                self.template.text, messages, tools or None, add_generation_prompt, **self.vocabulary.special
            )
        except Exception as exc:  # the template's own raise_exception, or a row it cannot render
            raise EncodeError(
                f"the chat template ({self.template.source}) cannot render this row: {type(exc).__name__}: {exc}"
            ) from None

    def assistant_spans(
        self, messages: list[dict], tools: list | None
    ) -> tuple[str, list[tuple[int, int]], int]:
        """The rendered conversation, the character spans the assistant turns occupy in it, and how many turns'
        reasoning the template leaves out."""
        rendered, marked = self.render(messages, tools)
        if self.template.marked:
            return rendered, marked, _reasoning_dropped(messages, rendered, marked)
        spans = []
        for index, message in enumerate(messages):
            if message["role"] == "assistant":
                if not any(m["role"] in ("user", "tool") for m in messages[:index]):
                    raise EncodeError(
                        f"messages[{index}] (assistant) comes before any user turn: with a template without "
                        "generation marks unifier locates each answer after the conversation before it, so a "
                        "conversation starts with a user turn (after an optional system message)"
                    )
                spans.append(self._locate_turn(messages, tools, index, rendered))
        return rendered, spans, _reasoning_dropped(messages, rendered, spans)

    def _locate_turn(self, messages, tools, index, rendered) -> tuple[int, int]:
        turn = f"messages[{index}] (assistant)"
        prompt, _ = self.render(messages[:index], tools, add_generation_prompt=True)
        if not rendered.startswith(prompt):
            raise EncodeError(
                f"{turn}: the rendering of the conversation before it plus the generation "
                f"prompt is not where the whole conversation's rendering has it ({_first_difference(prompt, rendered)})"
            )
        alone, _ = self.render(messages[: index + 1], tools)
        if alone.startswith(prompt) and rendered.startswith(alone):
            return len(prompt), len(alone)  # the conversation up to this turn is a prefix of the whole
        # the whole conversation renders this turn otherwise than when it ends one (Qwen3 drops an earlier
        # turn's reasoning): its content is found in the whole rendering, and it ends with what the template
        # writes after the content when the turn ends a conversation
        with_sentinel = self._with_sentinel(messages, index, tools)
        alone_with_sentinel = self._with_sentinel(messages[: index + 1], index, tools)
        if with_sentinel == rendered or alone_with_sentinel == alone:
            raise EncodeError(
                f"{turn}: the template renders it differently inside the conversation than when it "
                "ends one, and does not render its content, so its tokens cannot be told apart"
            )
        content_start, content_end = _changed_region(rendered, with_sentinel)
        _, alone_end = _changed_region(alone, alone_with_sentinel)
        closing = alone[alone_end:]
        if content_start < len(prompt) or rendered[content_end : content_end + len(closing)] != closing:
            raise EncodeError(
                f"{turn}: the template writes it differently inside the conversation than when it "
                f"ends one (after its content: {rendered[content_end : content_end + len(closing)]!r} instead of "
                f"{closing!r}), so its tokens cannot be told apart"
            )
        return len(prompt), content_end + len(closing)

    def _with_sentinel(self, messages, index, tools) -> str:
        changed = [dict(m) for m in messages]
        changed[index]["content"] = SENTINEL
        return self.render(changed, tools)[0]

    # ---- tokens ----
    def chat(self, messages: list[dict], tools: list | None) -> tuple[list[int], list[int], int]:
        """(token ids, loss mask, turns with reasoning left out) of a whole conversation."""
        rendered, spans, dropped = self.assistant_spans(messages, tools)
        encoding = self.vocabulary.encode(rendered)
        ids = list(encoding.ids)
        if not self.assistant_only:
            return ids, [1] * len(ids), dropped
        mask = [0] * len(ids)
        spans = sorted(spans)
        for position, (start, end) in enumerate(encoding.offsets):
            if end > start and any(start < b and end > a for a, b in spans):
                mask[position] = 1
        return ids, mask, dropped

    def encode(self, kind: str, row: dict) -> Encoded:
        if kind == "text":
            ids = list(self.vocabulary.encode(row["text"]).ids)
            if self.vocabulary.eos_id is not None:
                ids.append(self.vocabulary.eos_id)  # trl appends EOS to raw text
            kept = ids[: self.max_len]
            return Encoded(
                {"input_ids": kept, "assistant_masks": [1] * len(kept)},
                len(ids), len(ids), len(kept), ids=ids, mask=[1] * len(ids),
            )  # fmt: skip
        if kind == "preference":
            return self._preference(row)
        if kind == "prompt":
            return self._prompt(row)
        if kind == "unpaired":
            return self._unpaired(row)
        ids, mask, dropped = self.chat(row["messages"], row.get("tools"))
        kept, kept_mask = ids[: self.max_len], mask[: self.max_len]
        return Encoded(
            {"input_ids": kept, "assistant_masks": kept_mask},
            len(ids), sum(mask), sum(kept_mask), dropped, ids=ids, mask=mask,
        )  # fmt: skip

    def _answer_ids(self, prompt: list[dict], prompt_text: str, prompt_ids: list[int], answer: list[dict],
                    tools, side: str) -> list[int]:  # fmt: skip
        """The tokens of an answer: the tokenized whole conversation after the prompt's tokens (checked to be
        their prefix), untruncated."""
        whole, _ = self.render(prompt + answer, tools)
        if not whole.startswith(prompt_text):
            raise EncodeError(
                f"{side}: the prompt's rendering is not the start of the whole conversation's "
                f"({_first_difference(prompt_text, whole)})"
            )
        ids = list(self.vocabulary.encode(whole).ids)
        if ids[: len(prompt_ids)] != prompt_ids:
            raise EncodeError(
                f"{side}: the tokenized prompt is not a token prefix of the tokenized conversation (the answer's "
                "first characters merge with the prompt's last token)"
            )
        return ids[len(prompt_ids) :]

    def _preference(self, row: dict) -> Encoded:
        tools = row.get("tools")
        prompt_text, _ = self.render(row["prompt"], tools, add_generation_prompt=True)
        prompt_ids = list(self.vocabulary.encode(prompt_text).ids)
        layout: dict[str, list[int]] = {"prompt_ids": prompt_ids[: self.max_len]}
        lengths = {}
        for side in ("chosen", "rejected"):
            completion = self._answer_ids(row["prompt"], prompt_text, prompt_ids, row[side], tools, side)
            lengths[side] = len(completion)
            layout[f"{side}_ids"] = completion[: max(self.max_len - len(prompt_ids), 0)]
        full = len(prompt_ids) + lengths["chosen"]
        return Encoded(
            layout, full, lengths["chosen"], len(layout["chosen_ids"]),
            ids=prompt_ids + layout["chosen_ids"],
            mask=[0] * len(prompt_ids) + [1] * len(layout["chosen_ids"]),
        )  # fmt: skip

    def _unpaired(self, row: dict) -> Encoded:
        """KTO: prompt_ids (with the generation prompt), completion_ids (the rest of the whole conversation) and
        the label; kl_completion_ids (another row's answer, for KTO's KL estimate) is added when the rows are
        written in training order (data/tokens.py)."""
        tools = row.get("tools")
        prompt_text, _ = self.render(row["prompt"], tools, add_generation_prompt=True)
        prompt_ids = list(self.vocabulary.encode(prompt_text).ids)
        answer = self._answer_ids(
            row["prompt"], prompt_text, prompt_ids, row["completion"], tools, "completion"
        )
        kept = answer[: max(self.max_len - len(prompt_ids), 0)]
        layout = {"prompt_ids": prompt_ids[: self.max_len], "completion_ids": kept, "label": row["label"]}
        return Encoded(
            layout, len(prompt_ids) + len(answer), len(answer), len(kept),  # type: ignore[arg-type]
            ids=prompt_ids + kept, mask=[0] * len(prompt_ids) + [1] * len(kept),
        )  # fmt: skip

    def _prompt(self, row: dict) -> Encoded:
        """A GRPO prompt: its tokens up to the assistant header (the generation prompt), which every backend
        generates from; the messages and reward columns travel beside them. `trained` counts the room left
        for a completion within max_seq_length (0: the prompt alone fills it)."""
        text, _ = self.render(row["prompt"], row.get("tools"), add_generation_prompt=True)
        ids = list(self.vocabulary.encode(text).ids)
        room = max(self.max_len - len(ids), 0)
        layout = {"prompt_ids": ids, "prompt": row["prompt"], "columns": row["columns"]}
        return Encoded(layout, len(ids), room, room, ids=ids, mask=[0] * len(ids))  # type: ignore[arg-type]

    def fingerprint(self) -> dict[str, Any]:
        """What the encoded rows depend on besides the rows (recorded beside them; resume compares it)."""
        return {
            "chat_template": self.template.digest() if self.template else None,
            "tokenizer": self.vocabulary.digest(),
            "max_seq_length": self.max_len,
            "assistant_only_loss": self.assistant_only,
        }


def _changed_region(a: str, b: str) -> tuple[int, int]:
    """The region of `a` where it differs from `b`: (start, end) in `a`'s positions."""
    prefix = 0
    limit = min(len(a), len(b))
    while prefix < limit and a[prefix] == b[prefix]:
        prefix += 1
    suffix = 0
    while suffix < limit - prefix and a[len(a) - 1 - suffix] == b[len(b) - 1 - suffix]:
        suffix += 1
    return prefix, len(a) - suffix


def _first_difference(short: str, long: str) -> str:
    at = next((i for i, (x, y) in enumerate(zip(short, long)) if x != y), min(len(short), len(long)))
    return f"at character {at}: {short[at : at + 30]!r} vs {long[at : at + 30]!r}"


def _reasoning_dropped(messages: list[dict], rendered: str, spans: list[tuple[int, int]]) -> int:
    """Assistant turns whose reasoning (reasoning_content, or a <think>...</think> block in the content) or
    content the template leaves out of the trained text."""
    trained = "".join(rendered[a:b] for a, b in spans)
    dropped = 0
    for m in messages:
        if m["role"] != "assistant":
            continue
        content = m.get("content") if isinstance(m.get("content"), str) else ""
        pieces = [m.get("reasoning_content") or ""]
        if "</think>" in content:
            before, _, after = content.partition("</think>")
            pieces += [before.replace("<think>", ""), after]
        if any(piece.strip() and piece.strip() not in trained for piece in pieces):
            dropped += 1
    return dropped


def read_template(path: Path) -> str:
    """A Jinja chat template file, or UserError naming it (unreadable, not UTF-8)."""
    from ..errors import UserError

    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(
            f"{path}: the chat template is not UTF-8 text ({exc.reason} at byte {exc.start})",
            hint="save the template as UTF-8",
        ) from None
    except OSError as exc:
        raise UserError(f"{path}: the chat template cannot be read ({exc.strerror or exc})") from None


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _token_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    return None
