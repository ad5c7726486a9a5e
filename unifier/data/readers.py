"""Read rows from local files (JSON, JSONL, CSV, Parquet) or a `datasets` hub name."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

from .. import builtin
from ..errors import UserError
from ..spec import DataSource

LOCAL_SUFFIXES = (".json", ".jsonl", ".csv", ".parquet")


def is_local(source: DataSource) -> bool:
    """A file unifier reads itself; anything else (a hub name, a local `datasets` folder) goes through `datasets`."""
    if builtin.is_builtin(source.path) or source.path.lower().endswith(LOCAL_SUFFIXES):
        return True
    return Path(source.path).is_file()


def source_file(source: DataSource) -> Path:
    if builtin.is_builtin(source.path):
        return builtin.data_file(source.path)
    return Path(source.path)


def read_rows(source: DataSource) -> Iterator[tuple[str, dict]]:
    """Yield (location, row) pairs; location is 'file:N' (line for JSONL, 1-based record otherwise)."""
    limit = source.max_rows
    rows = _read_local(source) if is_local(source) else _read_hub(source)
    for count, item in enumerate(rows):
        if limit is not None and count >= limit:
            return
        yield item


def _read_local(source: DataSource) -> Iterator[tuple[str, dict]]:
    path = source_file(source)
    if not path.is_file():
        raise UserError(
            f"{path}: data file not found (data source '{source.path}')",
            hint="check data.train[*].path; relative paths resolve against the recipe's folder",
        )
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        yield from _read_jsonl(path)
    elif suffix == ".json":
        yield from _read_json(path)
    elif suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as handle:
            for number, row in enumerate(csv.DictReader(handle), start=2):  # line 1 is the header
                yield f"{path}:{number}", dict(row)
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        for number, row in enumerate(pq.read_table(path).to_pylist(), start=1):
            yield f"{path}:{number}", row
    else:
        raise UserError(
            f"{path}: unsupported file type '{suffix}'", hint=f"use one of {', '.join(LOCAL_SUFFIXES)}"
        )


def _read_jsonl(path: Path) -> Iterator[tuple[str, dict]]:
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(
                    f"{path}:{number}: not valid JSON ({exc.msg} at column {exc.colno})"
                ) from None
            if not isinstance(row, dict):
                raise UserError(f"{path}:{number}: expected a JSON object per line, got {type(row).__name__}")
            yield f"{path}:{number}", row


def _read_json(path: Path) -> Iterator[tuple[str, dict]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(
            f"{path}:{exc.lineno}: not valid JSON ({exc.msg})", hint="a .jsonl file needs the .jsonl suffix"
        ) from None
    if isinstance(data, dict):
        data = next((v for v in data.values() if isinstance(v, list)), None) if len(data) == 1 else None
    if not isinstance(data, list):
        raise UserError(f"{path}: expected a JSON list of rows (or a .jsonl file with one object per line)")
    for number, row in enumerate(data, start=1):
        if not isinstance(row, dict):
            raise UserError(f"{path}:{number}: expected an object, got {type(row).__name__}")
        yield f"{path}:{number}", row


def _read_hub(source: DataSource) -> Iterator[tuple[str, dict]]:
    """A hub name, a local folder of data files, or a folder written by `Dataset.save_to_disk`: all through
    `datasets` (the tests exercise this code offline with local folders)."""
    try:
        import datasets
    except ImportError:
        raise UserError(
            f"data source '{source.path}': reading hub datasets needs the 'datasets' package",
            hint="pip install 'unifier[peft]'",
        ) from None
    try:
        if (Path(source.path) / "dataset_info.json").is_file() or (
            Path(source.path) / "dataset_dict.json"
        ).is_file():
            dataset = datasets.load_from_disk(source.path)
            if isinstance(dataset, datasets.DatasetDict):
                dataset = dataset[source.split]
        else:
            dataset = datasets.load_dataset(source.path, source.subset, split=source.split)
    except Exception as exc:  # the hub raises many types; all mean the same to the user
        raise UserError(
            f"data source '{source.path}': could not load it as a local file, a `datasets` folder or a hub "
            f"dataset ({type(exc).__name__}: {exc})",
            hint="a local file needs a .json/.jsonl/.csv/.parquet suffix; a hub dataset needs network access "
            "(HF_HUB_OFFLINE unset) and the right data.train[*].split / subset",
        ) from None
    for number, row in enumerate(dataset, start=1):
        yield f"{source.path}[{source.split}]:{number}", dict(row)
