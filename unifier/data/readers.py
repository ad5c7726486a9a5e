"""Read rows from local files (JSON, JSONL, CSV, Parquet) or a `datasets` hub name."""

from __future__ import annotations

import csv
import io
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
    path = Path(source.path)
    return path.is_file() or (
        path.is_symlink() and not path.exists()
    )  # a broken link or a loop: refused here


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
    if path.is_symlink() and not path.exists():
        raise UserError(
            f"{path}: a symbolic link that leads nowhere (broken, or a loop) (data source '{source.path}')",
            hint="point data.train[*].path at the file itself",
        )
    if path.is_dir():
        raise UserError(
            f"{path}: is a folder, not a data file (data source '{source.path}')",
            hint="give a file; a `datasets` folder (save_to_disk or data files) must not end in "
            f"{'/'.join(LOCAL_SUFFIXES)}",
        )
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
        yield from _read_csv(path)
    elif suffix == ".parquet":
        yield from _read_parquet(path)
    else:
        raise UserError(
            f"{path}: unsupported file type '{suffix}'", hint=f"use one of {', '.join(LOCAL_SUFFIXES)}"
        )


def _decoded(path: Path, data: bytes, *, first_line: int = 1) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = first_line + data[: exc.start].count(b"\n")
        raise UserError(
            f"{path}:{line}: not UTF-8 text (byte {data[exc.start]:#04x})",
            hint="convert the file to UTF-8 (e.g. iconv -f latin1 -t utf-8)",
        ) from None


def _parsed(path: Path, where: str, text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        line = f":{exc.lineno}" if where == str(path) else ""
        raise UserError(
            f"{where}{line}: not valid JSON ({exc.msg} at column {exc.colno})",
            hint="a .jsonl file (one object per line) needs the .jsonl suffix"
            if path.suffix == ".json"
            else None,
        ) from None
    except RecursionError:
        raise UserError(f"{where}: the JSON is nested too deeply to be a training row") from None


def _read_jsonl(path: Path) -> Iterator[tuple[str, dict]]:
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            line = _decoded(path, raw, first_line=number)
            if not line.strip():
                continue
            row = _parsed(path, f"{path}:{number}", line)
            if not isinstance(row, dict):
                raise UserError(f"{path}:{number}: expected a JSON object per line, got {type(row).__name__}")
            yield f"{path}:{number}", row


def _read_json(path: Path) -> Iterator[tuple[str, dict]]:
    data = _parsed(path, str(path), _decoded(path, path.read_bytes()))
    if isinstance(data, dict):
        data = next((v for v in data.values() if isinstance(v, list)), None) if len(data) == 1 else None
    if not isinstance(data, list):
        raise UserError(f"{path}: expected a JSON list of rows (or a .jsonl file with one object per line)")
    for number, row in enumerate(data, start=1):
        if not isinstance(row, dict):
            raise UserError(f"{path}:{number}: expected an object, got {type(row).__name__}")
        yield f"{path}:{number}", row


def _read_csv(path: Path) -> Iterator[tuple[str, dict]]:
    text = _decoded(path, path.read_bytes())  # utf-8-sig: a byte-order mark is not part of the first column
    try:
        for number, row in enumerate(csv.DictReader(io.StringIO(text, newline="")), start=2):  # 1: the header
            if None in row:
                raise UserError(f"{path}:{number}: more fields than the header names")
            yield f"{path}:{number}", dict(row)
    except csv.Error as exc:
        raise UserError(f"{path}: not a readable CSV file ({exc})") from None


def _read_parquet(path: Path) -> Iterator[tuple[str, dict]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(path).to_pylist()
    except (pa.ArrowException, OSError) as exc:
        raise UserError(f"{path}: not a readable parquet file ({exc})") from None
    for number, row in enumerate(rows, start=1):
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
