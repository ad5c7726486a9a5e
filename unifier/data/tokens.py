"""Token statistics of the normalized rows with the recipe's tokenizer and chat template, without torch.

The rows are rendered with a jinja2 environment built as transformers' apply_chat_template builds it
(unifier/data/chat_render.py, `{% generation %}` marks included) and tokenized with the `tokenizers` library from tokenizer.json, the
way trl tokenizes them: so the counts of trained tokens, and of rows whose trained tokens all lie past
max_seq_length (right truncation), are those the trainers will see. tests/test_tokens.py checks them
against what the trainer recorded (the parity probe).
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..model_info import ModelInfo


@dataclass
class RowTokens:
    length: int  # tokens of the whole rendered row
    trained: int  # tokens carrying loss before truncation
    trained_kept: int  # ... within max_seq_length


@dataclass
class TokenStats:
    max_seq_length: int
    rows: int
    lengths: list[int]
    trained_tokens: int  # carrying loss, after truncation
    truncated_rows: int  # longer than max_seq_length
    lost_rows: list[str]  # file:row of rows whose trained tokens all lie past max_seq_length
    batch_size: int
    steps_per_epoch: int
    padding_fraction: float  # of the padded batches at the recipe's batch size, unpacked
    packed_padding_fraction: float  # packing the rows into max_seq_length sequences
    epochs: float | None
    notes: list[str] = field(default_factory=list)

    @property
    def quantiles(self) -> dict[str, int]:
        ordered = sorted(self.lengths)
        return {
            "min": ordered[0],
            "median": int(statistics.median(ordered)),
            "p95": ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)],
            "max": ordered[-1],
        }

    def summary(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "tokens_per_row": self.quantiles,
            "truncated_rows": self.truncated_rows,
            "rows_with_nothing_to_learn": len(self.lost_rows),
            "trained_tokens": self.trained_tokens,
            "steps_per_epoch": self.steps_per_epoch,
            "padding_fraction": round(self.padding_fraction, 4),
            "packed_padding_fraction": round(self.packed_padding_fraction, 4),
        }


class LightTokenizer:
    """tokenizer.json + the chat template + the special tokens of tokenizer_config.json (no transformers
    model classes, no torch)."""

    def __init__(self, folder: Path, chat_template: str | None):
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        config = _read(folder / "tokenizer_config.json")
        self.special = {
            key: _token_text(value)
            for key, value in config.items()
            if key.endswith("_token") and _token_text(value) is not None
        }
        template = chat_template or config.get("chat_template")
        if template is None and (folder / "chat_template.jinja").is_file():
            template = (folder / "chat_template.jinja").read_text(encoding="utf-8")
        self.chat_template = template

    def chat(
        self, messages: list[dict], tools: list | None, add_generation_prompt: bool = False
    ) -> tuple[list, list]:
        """(token ids, assistant mask) as apply_chat_template(..., return_assistant_tokens_mask=True) gives them."""
        from .chat_render import render_with_assistant_spans

        rendered, spans = render_with_assistant_spans(
            self.chat_template, messages, tools or None, add_generation_prompt, **self.special
        )
        encoding = self.tokenizer.encode(rendered, add_special_tokens=False)
        mask = [0] * len(encoding.ids)
        for start, end in spans:
            first, last = encoding.char_to_token(start), encoding.char_to_token(end - 1)
            if first is None:
                break
            for index in range(first, (last + 1) if last is not None else len(mask)):
                mask[index] = 1
        return encoding.ids, mask

    def text(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False)


class TrainerTokenizer:
    """The tokenizer exactly as the trainers load it (transformers' AutoTokenizer; imports torch): what
    `unify run` counts with before it writes anything."""

    def __init__(
        self, location: str, chat_template: str | None, revision: str | None, trust_remote_code: bool
    ):
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(
            location, revision=revision, trust_remote_code=trust_remote_code
        )
        if chat_template:
            self.tokenizer.chat_template = chat_template

    @classmethod
    def wrapping(cls, tokenizer) -> TrainerTokenizer:
        """The same counting around a tokenizer already loaded (`unify eval`)."""
        wrapped = cls.__new__(cls)
        wrapped.tokenizer = tokenizer
        return wrapped

    def chat(
        self, messages: list[dict], tools: list | None, add_generation_prompt: bool = False
    ) -> tuple[list, list]:
        out = self.tokenizer.apply_chat_template(
            messages,
            tools=tools or None,
            tokenize=True,
            return_dict=True,
            return_assistant_tokens_mask=True,
            add_generation_prompt=add_generation_prompt,
        )
        return list(out["input_ids"]), list(out["assistant_masks"])

    def text(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])


def light_tokenizer(info: ModelInfo, chat_template_file: str | None) -> LightTokenizer | str:
    """The recipe's tokenizer if it is readable here without loading a model, else why not (a note)."""
    if not info.is_local:
        return f"token statistics need the tokenizer; {info.ref} is not in the local cache"
    folder = Path(info.location)
    if not (folder / "tokenizer.json").is_file():
        if info.source.startswith("builtin (built"):
            return "token statistics: the built-in model is built on the first run"
        return f"token statistics need {folder}/tokenizer.json (a fast tokenizer)"
    template = Path(chat_template_file).read_text(encoding="utf-8") if chat_template_file else None
    return LightTokenizer(folder, template)


def row_tokens(
    tokenizer: LightTokenizer, kind: str, row: dict, max_len: int, assistant_only: bool
) -> RowTokens:
    if kind == "text":
        length = len(tokenizer.text(row["text"]))
        return RowTokens(length=length, trained=length, trained_kept=min(length, max_len))
    if kind == "preference":
        prompt, _ = tokenizer.chat(row["prompt"], row.get("tools"), add_generation_prompt=True)
        full, _ = tokenizer.chat(row["prompt"] + row["chosen"], row.get("tools"))
        trained = max(len(full) - len(prompt), 0)
        return RowTokens(
            length=len(full), trained=trained, trained_kept=max(min(len(full), max_len) - len(prompt), 0)
        )
    ids, mask = tokenizer.chat(row["messages"], row.get("tools"))
    if not assistant_only:
        mask = [1] * len(ids)
    return RowTokens(length=len(ids), trained=sum(mask), trained_kept=sum(mask[:max_len]))


@dataclass
class Sample:
    """One training row as the trainer sees it: rendered text in spans that carry loss or not."""

    location: str
    spans: list[tuple[str, bool]]  # (text, trained), within max_seq_length
    length: int
    trained: int
    cut: int  # tokens past max_seq_length (dropped)


def row_sample(
    tokenizer: LightTokenizer, kind: str, row: dict, location: str, max_len: int, assistant_only: bool
) -> Sample:
    """The loss mask made visible: the row rendered with the chat template and tokenized as the trainers do,
    decoded back in runs of trained / not-trained tokens (right truncation at max_seq_length)."""
    if kind == "text":
        ids = tokenizer.text(row["text"])
        mask = [1] * len(ids)
    elif kind == "preference":
        prompt, _ = tokenizer.chat(row["prompt"], row.get("tools"), add_generation_prompt=True)
        ids, _ = tokenizer.chat(row["prompt"] + row["chosen"], row.get("tools"))
        mask = [0] * len(prompt) + [1] * (len(ids) - len(prompt))
    else:
        ids, mask = tokenizer.chat(row["messages"], row.get("tools"))
        if not assistant_only:
            mask = [1] * len(ids)
    kept_ids, kept_mask = ids[:max_len], mask[:max_len]
    spans: list[tuple[str, bool]] = []
    start = 0
    for index in range(1, len(kept_ids) + 1):
        if index == len(kept_ids) or kept_mask[index] != kept_mask[start]:
            spans.append((tokenizer.decode(kept_ids[start:index]), bool(kept_mask[start])))
            start = index
    return Sample(
        location=location, spans=spans, length=len(ids), trained=sum(kept_mask), cut=len(ids) - len(kept_ids)
    )


def token_stats(
    tokenizer: LightTokenizer,
    kind: str,
    rows: list[dict],
    locations: list[str],
    *,
    max_len: int,
    assistant_only: bool,
    batch_size: int,
    epochs: float | None,
    max_steps: int | None,
) -> TokenStats:
    counted = [row_tokens(tokenizer, kind, row, max_len, assistant_only) for row in rows]
    lengths = [c.length for c in counted]
    kept = [min(n, max_len) for n in lengths]
    lost = [where for where, c in zip(locations, counted) if c.trained_kept == 0]
    padded = 0
    for start in range(0, len(kept), batch_size):
        batch = kept[start : start + batch_size]
        padded += max(batch) * len(batch)
    packed_sequences = math.ceil(sum(kept) / max_len) if kept else 0
    return TokenStats(
        max_seq_length=max_len,
        rows=len(rows),
        lengths=lengths,
        trained_tokens=sum(c.trained_kept for c in counted),
        truncated_rows=sum(n > max_len for n in lengths),
        lost_rows=lost,
        batch_size=batch_size,
        steps_per_epoch=math.ceil(len(rows) / batch_size) if rows else 0,
        padding_fraction=1 - sum(kept) / padded if padded else 0.0,
        packed_padding_fraction=1 - sum(kept) / (packed_sequences * max_len) if packed_sequences else 0.0,
        epochs=None if max_steps else epochs,
    )


def _read(path: Path) -> dict:
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


def check_trainable(
    spec, data, info: ModelInfo, *, exact: bool = False
) -> tuple[TokenStats | None, str | None]:
    """Token statistics of the training rows, refusing data that cannot train: (stats, None), or (None, why the
    tokenizer is not readable here). UserError when no row keeps a trained token within max_seq_length; a
    warning in data.warnings (file:row) for rows that keep none. exact=True counts with the trainers' own
    tokenizer (transformers, torch); otherwise with tokenizer.json (`unify validate`, no torch)."""
    from ..builtin import chat_template_path
    from ..errors import UserError

    template_file = chat_template_path(spec.model.chat_template)
    if exact:
        template = Path(template_file).read_text(encoding="utf-8") if template_file else None
        try:
            tokenizer = TrainerTokenizer(
                info.location, template, spec.model.revision, spec.model.trust_remote_code
            )
        except Exception as exc:  # e.g. a hub model without network: the backend will say so when it loads
            return None, f"the tokenizer could not be loaded here ({type(exc).__name__})"
    else:
        tokenizer = light_tokenizer(info, template_file)
    if isinstance(tokenizer, str):
        return None, tokenizer
    t, max_len = spec.training, spec.model.max_seq_length
    try:
        stats = token_stats(
            tokenizer,
            data.kind,
            data.train,
            data.train_locations,
            max_len=max_len,
            assistant_only=spec.data.assistant_only_loss,
            batch_size=t.per_device_batch_size,
            epochs=t.epochs,
            max_steps=t.max_steps,
        )
    except Exception as exc:  # the template or tokenizer refuses a row: say which template, not a traceback
        raise UserError(
            f"model.chat_template {spec.model.chat_template}: cannot render the training rows "
            f"({type(exc).__name__}: {exc})"
        ) from None
    lost = stats.lost_rows
    if lost and len(lost) == stats.rows:
        raise UserError(
            f"no training row keeps a trained token within model.max_seq_length {max_len}: the prompts (system, "
            f"tools, earlier turns) alone are longer (rows are {stats.quantiles['min']}..{stats.quantiles['max']} "
            f"tokens), so training would learn nothing (loss 0 at every step), e.g. {lost[0]}",
            hint=f"raise model.max_seq_length to at least {stats.quantiles['max']}, or shorten the prompts",
        )
    if lost:
        share = len(lost) / stats.rows
        data.warnings.append(
            f"{len(lost)} of {stats.rows} training rows ({share:.0%}) keep no trained token within "
            f"model.max_seq_length {max_len} (they are cut before the answer), e.g. {', '.join(lost[:3])}"
        )
    return stats, None
