"""A job's tokens: the recipe's tokenizer and chat template, every row encoded once (unifier/data/encode.py),
the statistics `unify validate` prints, and the encoded rows `unify run` writes for every backend.

`unify validate` reads the tokenizer from tokenizer.json (`tokenizers`, no torch); `unify run` does the same for a
local folder and loads a hub model's tokenizer through transformers. Both encode with the same Encoder, so
validate's counts are the trainer's, and the rows the backends train are these rows.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..model_info import ModelInfo
from .encode import ChatTemplate, Encoded, EncodeError, Encoder, Vocabulary, read_template

CHATML_TOKENS = ("<|im_start|>", "<|im_end|>")


@dataclass
class TokenStats:
    max_seq_length: int
    rows: int
    lengths: list[int]
    trained_tokens: int  # carrying loss, after truncation
    truncated_rows: int  # longer than max_seq_length
    lost_rows: list[str]  # file:row of rows whose trained tokens all lie past max_seq_length
    batch_size: int
    steps_per_epoch: int  # optimizer steps per pass over the data
    padding_fraction: float  # of the padded batches at the recipe's batch size, unpacked
    packed_padding_fraction: float  # packing the rows into max_seq_length sequences
    epochs: float | None
    template: str | None = None  # where the chat template came from
    reasoning_dropped: int = 0  # assistant turns whose reasoning the template does not render
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
            "chat_template": self.template,
            "reasoning_dropped": self.reasoning_dropped,
        }


def resolve_template(choice: str, vocabulary: Vocabulary | None, model: str) -> ChatTemplate | None:
    """model.chat_template as a template: `auto` is the model's own template, or unifier's ChatML for a model
    without one; None when the model's tokenizer is not readable yet (a hub model not in the local cache)."""
    from ..builtin import chatml_template_file

    if choice.endswith(".jinja"):
        return ChatTemplate(read_template(Path(choice)), f"the file {choice}", "file")
    chatml = ChatTemplate(
        chatml_template_file().read_text(encoding="utf-8"),
        "unifier's ChatML (unifier/assets/chatml.jinja)",
        "chatml",
    )
    if choice == "chatml":
        return chatml
    if vocabulary is None:
        return None
    if vocabulary.own_template:
        return ChatTemplate(vocabulary.own_template, f"the model's own ({model}'s tokenizer)", "model")
    if choice == "tokenizer":
        raise UserError(
            f"model.chat_template: tokenizer, but the tokenizer of {model} has no chat template",
            hint="use chat_template: auto (ChatML for a model without a template), chatml, or a .jinja file",
        )
    chatml.source = f"unifier's ChatML ({model}'s tokenizer has no chat template)"
    return chatml


def check_chatml_tokens(template: ChatTemplate, vocabulary: Vocabulary, model: str) -> None:
    """ChatML's tags must be tokens of the vocabulary: otherwise `<|im_end|>` is split into pieces and the model
    learns to write that text, which no runtime stops on (Llama 3: 7 pieces)."""
    if template.name != "chatml":
        return
    missing = [tag for tag in CHATML_TOKENS if vocabulary.token_id(tag) is None]
    if missing:
        pieces = len(vocabulary.encode(missing[-1]).ids)
        raise UserError(
            f"model.chat_template chatml: {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not a token of "
            f"{model}'s vocabulary ({missing[-1]} would be {pieces} pieces of text), so the model would learn a "
            "format its own template never produces and to stop on text no runtime stops on",
            hint="use chat_template: auto (the model's own chat template), or a .jinja file in the model's format",
        )


def vocabulary_of(spec, info: ModelInfo, *, exact: bool) -> Vocabulary | str:
    """The recipe's tokenizer, or why it is not readable here (a note). exact=True (`unify run`) may load a hub
    model's tokenizer through transformers; otherwise only a local tokenizer.json is read (no torch)."""
    if info.is_local and (Path(info.location) / "tokenizer.json").is_file():
        return Vocabulary.from_folder(Path(info.location))
    if info.source.startswith("builtin (built"):
        return "token statistics: the built-in model is built on the first run"
    if not exact:
        if not info.is_local:
            return f"token statistics need the tokenizer; {info.ref} is not in the local cache"
        return f"token statistics need {info.location}/tokenizer.json (a fast tokenizer)"
    try:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(
            info.location, revision=spec.model.revision, trust_remote_code=spec.model.trust_remote_code
        )
    except Exception as exc:  # e.g. no network: the backend will say so when it loads
        return f"the tokenizer could not be loaded here ({type(exc).__name__})"
    if not getattr(tokenizer, "is_fast", False):
        return "token statistics need a fast tokenizer (tokenizer.json)"
    return Vocabulary.from_transformers(tokenizer)


def job_encoder(spec, info: ModelInfo, *, exact: bool = False) -> Encoder | str:
    vocabulary = vocabulary_of(spec, info, exact=exact)
    if isinstance(vocabulary, str):
        return vocabulary
    template = resolve_template(spec.model.chat_template, vocabulary, spec.model.name_or_path)
    check_chatml_tokens(template, vocabulary, spec.model.name_or_path)
    return Encoder(
        vocabulary, template, max_len=spec.model.max_seq_length, assistant_only=spec.data.assistant_only_loss
    )


PARALLEL_FROM = 20_000  # rows: below this, starting worker processes costs more than it saves
CHUNK = 2_000


def encode_rows(encoder: Encoder, kind: str, rows: list[dict], locations: list[str]) -> list[Encoded]:
    """Every row encoded (in order), or UserError naming the first row that cannot be. Large data on a machine
    with 4 or more cores is encoded by one worker process per core (spawned: no fork of a process that may hold
    threads); UNIFIER_ENCODE_WORKERS sets the number."""
    cores = os.cpu_count() or 1  # two cores gain nothing (measured: 8,000 rows 5.9 s alone, 8.1 s in two)
    workers = min(cores, 8) if len(rows) >= PARALLEL_FROM and cores >= 4 else 1
    workers = int(os.environ.get("UNIFIER_ENCODE_WORKERS", workers))
    if workers > 1:
        import multiprocessing

        chunks = [(start, rows[start : start + CHUNK]) for start in range(0, len(rows), CHUNK)]
        context = multiprocessing.get_context("spawn")
        with context.Pool(workers, initializer=_start_worker, initargs=(encoder, kind)) as pool:
            results = pool.map(_encode_chunk, chunks)
        encoded = []
        for start, result in zip((c[0] for c in chunks), results):
            if isinstance(result, tuple):  # (offset, message): the first row of the chunk that failed
                offset, message = result
                raise _row_error(locations[start + offset], message)
            encoded += result
        return encoded
    try:
        return _encode_all(encoder, kind, rows)
    except _RowFailed as failed:
        raise _row_error(locations[failed.index], failed.message) from None


class _RowFailed(Exception):
    def __init__(self, index: int, message: str):
        self.index, self.message = index, message


def _encode_all(encoder: Encoder, kind: str, rows: list[dict]) -> list[Encoded]:
    encoded = []
    for index, row in enumerate(rows):
        try:
            encoded.append(encoder.encode(kind, row))
        except EncodeError as exc:
            raise _RowFailed(index, str(exc)) from None
    return encoded


def _row_error(where: str, message: str) -> UserError:
    return UserError(
        f"{where}: {message}",
        hint="the row's turns must render with model.chat_template as they do in the whole conversation; "
        "check the row, or use another template",
    )


_WORKER: dict = {}


def _start_worker(encoder: Encoder, kind: str) -> None:
    _WORKER.update(encoder=encoder, kind=kind)


def _encode_chunk(chunk: tuple[int, list[dict]]):
    try:
        return _encode_all(_WORKER["encoder"], _WORKER["kind"], chunk[1])
    except _RowFailed as failed:
        return (failed.index, failed.message)


def _check_prompt_room(data, max_len: int, completion: int) -> None:
    """GRPO: every prompt with its longest completion fits model.max_seq_length (nothing truncates them)."""
    for split in ("train", "eval"):
        for where, encoded in zip(data.locations(split), data.encoded[split]):
            if encoded.length + completion > max_len:
                raise UserError(
                    f"{where}: the prompt is {encoded.length} tokens; with training.grpo.max_completion_length "
                    f"{completion} that exceeds model.max_seq_length {max_len}",
                    hint="raise model.max_seq_length, lower max_completion_length, or shorten the prompt",
                )


def token_stats(
    encoded: list[Encoded],
    locations: list[str],
    *,
    max_len: int,
    batch_size: int,
    accumulation: int,
    world_size: int,
    epochs: float | None,
    max_steps: int | None,
    generations: int = 1,
) -> TokenStats:
    lengths = [e.length for e in encoded]
    kept = [min(n, max_len) for n in lengths]
    lost = [where for where, e in zip(locations, encoded) if e.trained_kept == 0]
    padded = 0
    for start in range(0, len(kept), batch_size):
        batch = kept[start : start + batch_size]
        padded += max(batch) * len(batch)
    packed_sequences = math.ceil(sum(kept) / max_len) if kept else 0
    rows_per_step = max(
        batch_size * accumulation * world_size // generations, 1
    )  # GRPO: a row is answered G times
    return TokenStats(
        max_seq_length=max_len,
        rows=len(encoded),
        lengths=lengths,
        trained_tokens=sum(e.trained_kept for e in encoded),
        truncated_rows=sum(n > max_len for n in lengths),
        lost_rows=lost,
        batch_size=batch_size,
        steps_per_epoch=math.ceil(len(encoded) / rows_per_step) if encoded else 0,
        padding_fraction=1 - sum(kept) / padded if padded else 0.0,
        packed_padding_fraction=1 - sum(kept) / (packed_sequences * max_len) if packed_sequences else 0.0,
        epochs=None if max_steps else epochs,
        reasoning_dropped=sum(e.reasoning_dropped for e in encoded),
    )


def check_trainable(
    spec, data, info: ModelInfo, *, exact: bool = False
) -> tuple[TokenStats | None, str | None]:
    """Encode the rows and refuse data that cannot train: (stats, None), or (None, why the tokenizer is not
    readable here). UserError when no row keeps a trained token within max_seq_length; a warning in
    data.warnings (file:row) for rows that keep none. The encoded rows stay on `data` (data.encoded) for the run
    folder."""
    encoder = job_encoder(spec, info, exact=exact)
    if isinstance(encoder, str):
        return None, encoder
    data.encoder = encoder
    data.encoded = {
        split: encode_rows(encoder, data.kind, data.split(split), data.locations(split))
        for split in ("train", "eval")
    }
    t, max_len = spec.training, spec.model.max_seq_length
    stats = token_stats(
        data.encoded["train"],
        data.train_locations,
        max_len=max_len,
        batch_size=t.per_device_batch_size,
        accumulation=t.gradient_accumulation_steps,
        world_size=spec.compute.world_size,
        epochs=t.epochs,
        max_steps=t.max_steps,
        generations=t.grpo.num_generations if t.method == "grpo" else 1,
    )
    if data.kind == "prompt" and t.method == "grpo":
        _check_prompt_room(data, max_len, t.grpo.max_completion_length)
    stats.template = encoder.template.source if encoder.template and data.kind != "text" else None
    lost = stats.lost_rows
    if lost and len(lost) == stats.rows and not any(e.trained for e in data.encoded["train"]):
        raise UserError(
            f"no training row has a trained token at any length: the chat template ({stats.template}) renders no "
            f"assistant turn text for them (rows are {stats.quantiles['min']}..{stats.quantiles['max']} tokens), "
            f"e.g. {lost[0]}",
            hint="check model.chat_template (it must write each assistant message's content), or the rows",
        )
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
    if stats.reasoning_dropped:
        data.warnings.append(
            f"{stats.reasoning_dropped} assistant turns carry reasoning that the chat template ({stats.template}) "
            "leaves out (a template may render no reasoning at all, or, like Qwen3's, drop it from turns before "
            "the last user message): they train as the template renders them, without it"
        )
    return stats, None


def write_tokens(folder, data) -> None:
    """data/<split>.tokens.jsonl in the order of data/<split>.jsonl (every pass), the chat template, and
    data/tokens.json: what the rows depend on, so a resumed run can tell they are the same."""
    encoder = data.encoder
    for split in ("train", "eval") if data.eval else ("train",):
        with folder.tokens_file(split).open("w", encoding="utf-8") as handle:
            for layout in file_layouts(data, split):
                handle.write(json.dumps(layout) + "\n")
    if encoder.template is not None:
        folder.chat_template.write_text(encoder.template.text, encoding="utf-8")
    pairing = {"kl_group": data.kl_group} if data.kind == "unpaired" else {}
    folder.tokens_summary.write_text(
        json.dumps(
            {**encoder.fingerprint(), "data": data.fingerprint(), "kind": data.kind, **pairing}, indent=1
        )
        + "\n"
    )


def file_layouts(data, split: str) -> list[dict]:
    """The encoded rows of a split in the order of data/<split>.jsonl (every pass), KTO's KL answers paired."""
    encoded = data.encoded[split]
    layouts = [encoded[index].layout for index in data.file_order(split)]
    if data.kind == "unpaired":
        layouts = with_kl_completions(layouts, data.kl_group, data.encoder.max_len)
    return layouts


def with_kl_completions(layouts: list[dict], group: int, max_len: int) -> list[dict]:
    """KTO's KL estimate compares each prompt with another row's answer: in training order, the rows one forward
    pass of every process reads (`group` = per-device batch x processes) are paired with the answer of the row
    before them in that group (the first with the last), trl's own rotation on one process, and unifier's on
    every backend. The borrowed answer is cut to fit model.max_seq_length after the row's own prompt."""
    paired = []
    for start in range(0, len(layouts), max(group, 1)):
        block = layouts[start : start + max(group, 1)]
        for position, row in enumerate(block):
            room = max(max_len - len(row["prompt_ids"]), 0)
            paired.append({**row, "kl_completion_ids": block[position - 1]["completion_ids"][:room]})
    return paired


def sample_spans(vocabulary: Vocabulary, encoded: Encoded, max_len: int) -> list[tuple[str, bool]]:
    """`validate --show`: the row decoded in runs of trained / not-trained tokens, within max_seq_length."""
    ids, mask = encoded.ids[:max_len], encoded.mask[:max_len]
    spans: list[tuple[str, bool]] = []
    start = 0
    for index in range(1, len(ids) + 1):
        if index == len(ids) or mask[index] != mask[start]:
            spans.append((vocabulary.decode(ids[start:index]), bool(mask[start])))
            start = index
    return spans
