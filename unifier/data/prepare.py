"""Normalize every source once into canonical JSONL; every backend trains on those files."""

from __future__ import annotations

import contextlib
import json
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field

from .. import methods as method_table
from ..errors import UserError
from ..spec import DataSource, JobSpec
from .formats import KIND_OF_FORMAT, RowError, detect_format, to_canonical
from .readers import is_local, read_rows

MAX_EPOCHS_IN_FILE = 100  # beyond this the trainer repeats the file (in the same order every time)
LARGE_ROW_BYTES = 4 * 2**20
MAX_WARNINGS = 50


@dataclass
class PreparedData:
    kind: str  # chat | text | preference | prompt | unpaired
    train: list[dict]
    eval: list[dict]
    formats: list[str] = field(default_factory=list)
    skipped_sources: list[str] = field(default_factory=list)  # hub sources not read (validate only)
    train_locations: list[str] = field(default_factory=list)  # file:row of each train row (same order)
    eval_locations: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    epochs_in_file: int = 1  # data/train.jsonl holds this many passes, each in its own order
    seed: int = 42
    shuffle: bool = True
    encoder: object = None  # the job's Encoder and each split's encoded rows, once counted (data/tokens.py)
    encoded: dict = field(default_factory=dict)
    kl_group: int = 0  # KTO: the rows of one forward pass of every process, whose answers trade places for KL

    def split(self, name: str) -> list[dict]:
        return self.train if name == "train" else self.eval

    def locations(self, name: str) -> list[str]:
        return self.train_locations if name == "train" else self.eval_locations

    def summary(self) -> dict:
        return {
            "kind": self.kind,
            "formats": self.formats,
            "train_rows": len(self.train),
            "eval_rows": len(self.eval),
            "epochs_in_file": self.epochs_in_file,
            "fingerprint": self.fingerprint(),
            "warnings": self.warnings[:MAX_WARNINGS],
        }

    def fingerprint(self) -> str:
        """sha256 of the normalized rows, in order: a resumed run must train on exactly these."""
        import hashlib

        digest = hashlib.sha256()
        for split in ("train", "eval"):
            digest.update(split.encode())
            for row in self.split(split):
                digest.update(json.dumps(row, sort_keys=True, ensure_ascii=False).encode())
        return digest.hexdigest()

    def epoch_order(self, epoch: int) -> list[int]:
        """The training rows of one pass, as indices: pass 0 is the order shuffled with data.seed; every later
        pass is reshuffled with (data.seed, pass), so no two passes repeat an order; data.shuffle: false keeps
        the file order in every pass."""
        order = list(range(len(self.train)))
        if epoch == 0 or not self.shuffle:
            return order
        random.Random(f"{self.seed}:epoch:{epoch}").shuffle(order)
        return order

    def file_order(self, split: str) -> Iterator[int]:
        """The rows of data/<split>.jsonl in file order, as indices into the split: every pass of the training
        rows, one after the other; the eval rows once. The encoded rows and the backends' views follow it."""
        if split != "train":
            yield from range(len(self.eval))
            return
        for epoch in range(self.epochs_in_file):
            yield from self.epoch_order(epoch)

    def file_rows(self, split: str) -> Iterator[dict]:
        rows = self.split(split)
        for index in self.file_order(split):
            yield rows[index]

    def write(self, folder) -> None:
        """data/train.jsonl, eval.jsonl and summary.json in a RunFolder. Every backend reads the files in
        order, so the passes are the same on each."""
        folder.data.mkdir(parents=True, exist_ok=True)
        for split in ("train", "eval") if self.eval else ("train",):
            with folder.data_file(split).open("w", encoding="utf-8") as handle:
                for row in self.file_rows(split):
                    handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        folder.data_summary.write_text(json.dumps(self.summary(), indent=2) + "\n")


def epochs_in_file(spec: JobSpec, rows: int) -> int:
    """How many passes data/train.jsonl must hold: ceil(epochs), or enough rows for max_steps."""
    t = spec.training
    if t.max_steps:
        per_step = t.per_device_batch_size * t.gradient_accumulation_steps * spec.compute.world_size
        if t.method == "grpo":  # each prompt is answered num_generations times within a step
            per_step = max(per_step // t.grpo.num_generations, 1)
        needed = math.ceil(t.max_steps * per_step / max(rows, 1))
    else:
        needed = math.ceil(t.epochs)
    return max(1, min(needed, MAX_EPOCHS_IN_FILE))


def prepare_data(spec: JobSpec, *, read_hub: bool = True, progress: bool = False) -> PreparedData:
    """Read, check and normalize all sources. Raises UserError naming file:row on the first bad row.

    progress=True shows a progress bar per source on the terminal (rich, on stderr)."""
    data = spec.data
    train, eval_rows, formats, skipped, warnings = [], [], [], [], []
    kinds: set[str] = set()
    with _progress_bars(progress) as bars:
        for split, sources in (("train", data.train), ("eval", data.eval)):
            for source in sources:
                if not read_hub and not is_local(source):
                    skipped.append(source.path)
                    continue
                rows, fmt = _normalize_source(
                    source, bars(f"{split}: {source.path}"), warnings, empty_content=data.empty_content
                )
                kinds.add(KIND_OF_FORMAT[fmt])
                if split == "train":
                    formats.append(fmt)
                    train.extend(rows)
                else:
                    eval_rows.extend(rows)
    kind = _single_kind(kinds, spec)
    if kind == "prompt":
        _check_reward_columns(spec, train + eval_rows)
    if data.shuffle:
        random.Random(data.seed).shuffle(train)
    if data.eval_split and train:
        held_out = max(1, round(len(train) * data.eval_split))
        if held_out >= len(train):
            raise UserError(f"data.eval_split {data.eval_split} leaves no training rows out of {len(train)}")
        train, eval_rows = train[:-held_out], train[-held_out:]
    if not train and not skipped:
        raise UserError("data.train: the sources hold no rows")
    if kind == "unpaired" and train:
        warnings.extend(kto_data_warnings(spec, [r["label"] for r, _ in train]))
    return PreparedData(
        kind=kind,
        train=[r for r, _ in train],
        eval=[r for r, _ in eval_rows],
        formats=formats,
        skipped_sources=skipped,
        train_locations=[w for _, w in train],
        eval_locations=[w for _, w in eval_rows],
        warnings=warnings,
        epochs_in_file=epochs_in_file(spec, len(train)),
        seed=data.seed,
        shuffle=data.shuffle,
        kl_group=spec.training.per_device_batch_size * spec.compute.world_size if kind == "unpaired" else 0,
    )


def kto_data_warnings(spec: JobSpec, labels: list[bool]) -> list[str]:
    """What trains but not as a KTO user expects: answers of one label only, desirable and undesirable rows out of
    the paper's balance for the weights (trl's own check, Eq. 8 of the KTO paper, which it only logs), fewer rows
    than one forward pass (the batch is smaller than the recipe's, and a lone row's KL answer is its own)."""
    kto = spec.training.kto
    desirable, undesirable = sum(labels), len(labels) - sum(labels)
    warnings = []
    if not undesirable or not desirable:
        side = "desirable (label true)" if desirable else "undesirable (label false)"
        other = "undesirable answers (label false)" if desirable else "desirable answers (label true)"
        every = f"all {len(labels)} KTO answers are" if len(labels) > 1 else "the one KTO answer is"
        warnings.append(
            f"data.train: {every} {side}: the loss only pushes "
            f"{'them' if len(labels) > 1 else 'it'} "
            f"{'up' if desirable else 'down'} against the reference; add {other}"
            + (", or train the answers with method sft" if desirable else "")
        )
    elif desirable != undesirable:
        ratio = undesirable * kto.undesirable_weight / desirable
        low, high = round(ratio, 2), round(ratio * 1.33, 2)
        u_low, u_high = (
            round(desirable * kto.desirable_weight / undesirable / 1.33, 2),
            round(desirable * kto.desirable_weight / undesirable, 2),
        )
        if not (low <= kto.desirable_weight <= high or u_low <= kto.undesirable_weight <= u_high):
            warnings.append(
                f"data.train: {desirable} desirable and {undesirable} undesirable KTO answers, with "
                f"training.kto.desirable_weight {kto.desirable_weight} and undesirable_weight "
                f"{kto.undesirable_weight}: the KTO paper keeps desirable_weight x desirable / (undesirable_weight "
                f"x undesirable) within [1, 4/3]; set desirable_weight in [{low}, {high}] or undesirable_weight "
                f"in [{u_low}, {u_high}]"
            )
    group = spec.training.per_device_batch_size * spec.compute.world_size
    if len(labels) < group:
        warnings.append(
            f"data.train: {len(labels)} KTO rows, fewer than one forward pass of per_device_batch_size x "
            f"processes = {group}: every step trains on "
            + (
                f"these {len(labels)} rows"
                if len(labels) > 1
                else "this one row, whose KL estimate uses its own answer"
            )
        )
    return warnings


# names the reward functions' own arguments or ms-swift's rows already use
RESERVED_REWARD_COLUMNS = {
    "prompts", "completions", "completion_ids", "prompt_ids", "trainer_state", "messages", "images", "videos",
    "audios", "objects", "label", "channel", "margin", "rejected_response", "chat_template_kwargs",
    "response_token_ids", "request_id", "prompt_id", "finish_reason", "rollout_infos", "unifier_columns",
}  # fmt: skip


def _check_reward_columns(spec: JobSpec, rows: list[tuple[dict, str]]) -> None:
    """GRPO prompts: the columns the rewards read are there, on every row, under names free to pass."""
    needs_answer = spec.training.method == "grpo" and "exact_answer" in spec.training.grpo.rewards
    for row, location in rows:
        clash = sorted(set(row["columns"]) & RESERVED_REWARD_COLUMNS)
        if clash:
            raise UserError(
                f"{location}: column {clash[0]!r} clashes with an argument the reward functions already get",
                hint="rename it in the file, or map it with data.train[*].columns",
            )
        if needs_answer and "answer" not in row["columns"]:
            raise UserError(
                f"{location}: the exact_answer reward compares with an 'answer' column, and this row has none "
                f"(its columns: {', '.join(sorted(row['columns'])) or 'none'})",
                hint="add the reference answer as 'answer', map your column to it with columns: {answer: ...}, "
                "or drop exact_answer from training.grpo.rewards",
            )


def planned_data_kind(spec: JobSpec) -> str:
    """The kind of rows the job trains on, for `unify plan`: from the declared formats, or from the first row
    of a local file whose format is 'auto' (a cheap peek; prepare_data reads and checks everything)."""
    kinds = set()
    for source in spec.data.train:
        fmt = source.format
        if fmt == "auto" and is_local(source):
            try:
                _, first = next(iter(read_rows(source)))
                fmt = detect_format(_rename_columns(first, source.columns))
            except (StopIteration, UserError, RowError):
                continue
        if fmt != "auto":
            kinds.add(KIND_OF_FORMAT[fmt])
    if len(kinds) == 1:
        return kinds.pop()
    return method_table.method(spec.training.method).data_kinds[0]


@contextlib.contextmanager
def _progress_bars(enabled: bool):
    """Yields a factory: description -> a callable that advances that source's bar by one row."""
    if not enabled:
        yield lambda description: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn("normalizing {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    from .. import terminal

    with Progress(*columns, console=Console(file=terminal.stderr()), transient=False) as bars:

        def factory(description: str):
            task = bars.add_task(description, total=None)
            return lambda: bars.advance(task)

        yield factory


def _normalize_source(
    source: DataSource, progress, warnings: list[str], *, empty_content: str
) -> tuple[list[tuple[dict, str]], str]:
    fmt = None if source.format == "auto" else source.format
    rows = []
    for location, raw in read_rows(source):
        try:
            row = _rename_columns(raw, source.columns)
            if fmt is None:
                fmt = detect_format(row)
            canonical = to_canonical(fmt, row, source.roles, extra_columns=source.extra_columns)
        except RowError as exc:
            hint = (
                None
                if source.format != "auto"
                else f"the format was detected as '{fmt}'; set data.train[*].format to override"
            )
            raise UserError(f"{location}: {exc}", hint=hint if fmt else None) from None
        for problem in _suspicious(canonical):
            if empty_content == "error" and "empty" in problem:
                raise UserError(f"{location}: {problem}", hint="fix the row, or set data.empty_content: warn")
            if len(warnings) < MAX_WARNINGS:
                warnings.append(f"{location}: {problem}")
        rows.append((canonical, location))
        if progress is not None:
            progress()
    if not rows:
        raise UserError(f"{source.path}: no rows")
    return rows, fmt


def _suspicious(row: dict) -> list[str]:
    """What trains but is probably not meant: empty turns, rows of several megabytes."""
    problems = []
    for key in ("messages", "prompt", "chosen", "rejected", "completion"):
        for index, message in enumerate(row.get(key) or []):
            if not message.get("content", "").strip() and not message.get("tool_calls"):
                problems.append(f"{key}[{index}] ({message.get('role')}) is empty")
    size = len(json.dumps(row, ensure_ascii=False))
    if size > LARGE_ROW_BYTES:
        problems.append(
            f"the row is {size / 2**20:.1f} MB of text; it is truncated to model.max_seq_length tokens"
        )
    return problems


def _rename_columns(row: dict, columns: dict[str, str]) -> dict:
    if not columns:
        return row
    renamed = dict(row)
    for canonical, own in columns.items():
        if own not in row:
            raise RowError(
                f"column '{own}' (mapped to '{canonical}' in columns) is missing; the row has {sorted(row)}"
            )
        renamed[canonical] = renamed.pop(own)
    return renamed


def _single_kind(kinds: set[str], spec: JobSpec) -> str:
    method = spec.training.method
    allowed = method_table.method(method).data_kinds
    if len(kinds) > 1:
        raise UserError(
            f"data: sources mix {' and '.join(sorted(kinds))} rows; one job trains on one kind",
            hint="split them into separate jobs, or convert the text rows to chat",
        )
    kind = next(iter(kinds), allowed[0])
    if kind not in allowed:
        expected = " or ".join(allowed)
        hint = method_table.method(method).data_hint
        if kind == "unpaired":
            hint = (
                "the rows carry a 'label' column, which makes them KTO's unpaired answers: set training.method: "
                f"kto, or train them as {expected} rows without it (format: messages and extra_columns: ignore "
                "on the source)"
            )
        raise UserError(
            f"training.method '{method}' needs {expected} data, but the sources hold {kind} rows", hint=hint
        )
    return kind
