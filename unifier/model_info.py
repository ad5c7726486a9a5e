"""What can be known about a model before any weight is loaded: config.json, tokenizer_config.json and the
tensor names and shapes in the safetensors headers (a few kilobytes read, no torch).

Planning and validation use it to resolve `target_modules: all-linear` once, to the same list on every
backend, to check that named target modules exist, to pick ms-swift's --model_type, and to see whether a
model folder brings its own Python code (config `auto_map`).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

from . import builtin
from .errors import UserError

# module leaves that hold 2-D weights but are not linear layers peft would adapt
EMBEDDING_LEAVES = (
    "embed_tokens",
    "wte",
    "wpe",
    "word_embeddings",
    "embed_positions",
    "position_embeddings",
    "token_type_embeddings",
    "embeddings",
    "rotary_emb",
)
OUTPUT_HEADS = ("lm_head", "embed_out", "output", "score", "classifier")
MAX_HEADER_BYTES = 100 * 2**20


@dataclass(frozen=True)
class ModelInfo:
    ref: str  # as the recipe writes it
    location: str  # what the libraries load: a local folder or a hub name
    is_local: bool
    config: dict | None = None  # None: not readable before the run (a hub model not in the local cache)
    tokenizer_config: dict | None = None
    weight_shapes: dict[str, list[int]] | None = None
    source: str = "unknown"  # where the information came from, shown in plans
    problems: tuple[str, ...] = field(default_factory=tuple)

    @property
    def model_type(self) -> str | None:
        return (self.config or {}).get("model_type")

    def custom_code(self) -> list[str]:
        """Python modules the model folder asks transformers to import (`auto_map`), from config and tokenizer."""
        found = []
        for name, document in (
            ("config.json", self.config),
            ("tokenizer_config.json", self.tokenizer_config),
        ):
            auto_map = (document or {}).get("auto_map") or {}
            for target in auto_map.values():
                for item in target if isinstance(target, list) else [target]:
                    if isinstance(item, str):
                        found.append(f"{name}: {item}")
        return found

    def module_paths(self) -> set[str] | None:
        if self.weight_shapes is None:
            return None
        return {name.rsplit(".", 1)[0] for name in self.weight_shapes if "." in name}

    def linear_modules(self) -> list[str] | None:
        """What `all-linear` means for this model, as peft decides it: every module with a 2-D weight except
        embeddings and the output head; returned as sorted leaf names (peft/ms-swift/unsloth match leaves)."""
        if self.weight_shapes is None:
            return None
        leaves = set()
        for name, shape in self.weight_shapes.items():
            if not name.endswith(".weight") or len(shape) != 2:
                continue
            path = name[: -len(".weight")]
            leaf = path.rsplit(".", 1)[-1]
            if leaf in EMBEDDING_LEAVES or "embed" in leaf:
                continue
            if (
                leaf in OUTPUT_HEADS and "." not in path
            ):  # the top-level output head (model.lm_head or lm_head)
                continue
            if path in ("model.lm_head", "lm_head"):
                continue
            leaves.add(leaf)
        return sorted(leaves)

    def missing_targets(self, targets: list[str]) -> list[str]:
        """Target module names that match no module (peft matches a name or a dotted suffix)."""
        paths = self.module_paths()
        if paths is None:
            return []
        return [t for t in targets if not any(p == t or p.endswith("." + t) for p in paths)]


def looks_like_path(ref: str) -> bool:
    """A reference the user meant as a local folder (a hub name is 'name' or 'org/name')."""
    return ref.startswith(("/", "./", "../", "~")) or ref.count("/") > 1 or ref in (".", "..")


def read_model_info(ref: str, revision: str | None = None) -> ModelInfo:
    """Everything readable without loading weights. UserError for a local folder that cannot be a model."""
    if ref == builtin.TINY_MODEL_REF:
        from .tiny import planned_config, planned_weight_shapes

        folder = Path(builtin.model_location(ref))
        if (folder / "model.safetensors").is_file():
            return _read_folder(ref, folder, source="builtin model folder")
        return ModelInfo(
            ref=ref,
            location=str(folder),
            is_local=True,
            config=planned_config(),
            weight_shapes=planned_weight_shapes(),
            source="builtin (built on first use)",
        )
    path = Path(ref).expanduser()
    if path.is_dir():
        return _read_folder(ref, path, source="local folder")
    if path.exists():
        raise UserError(
            f"model.name_or_path '{ref}' is a file, not a model folder",
            hint="give the folder that holds config.json and the weights, or a hub name",
        )
    if looks_like_path(ref):
        raise UserError(
            f"model.name_or_path '{ref}': no such folder",
            hint="check the path (relative paths resolve against the recipe's folder), or give a hub name",
        )
    return _read_hub_cache(ref, revision)


def _read_folder(ref: str, folder: Path, source: str) -> ModelInfo:
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise UserError(
            f"{folder}: not a model folder (no config.json)",
            hint="give the folder that holds config.json and the weights",
        )
    config = _read_json(config_file)
    tokenizer_config = (
        _read_json(folder / "tokenizer_config.json") if (folder / "tokenizer_config.json").is_file() else None
    )
    shapes = _folder_weight_shapes(folder)
    return ModelInfo(
        ref=ref,
        location=str(folder),
        is_local=True,
        config=config,
        tokenizer_config=tokenizer_config,
        weight_shapes=shapes,
        source=source,
    )


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(value, dict):
        raise UserError(f"{path}: expected a JSON object")
    return value


def _folder_weight_shapes(folder: Path) -> dict[str, list[int]] | None:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = _read_json(index).get("weight_map") or {}
        shapes: dict[str, list[int]] = {}
        for shard in sorted(set(weight_map.values())):
            shard_file = folder / shard
            if not shard_file.is_file():
                raise UserError(f"{index}: names shard '{shard}', which is missing")
            shapes.update(safetensors_shapes(shard_file))
        return shapes
    single = folder / "model.safetensors"
    if single.is_file():
        return safetensors_shapes(single)
    return None  # .bin weights: names unknown until loaded


def safetensors_shapes(path: Path) -> dict[str, list[int]]:
    """Tensor name -> shape from a safetensors header (the first 8 bytes give the header's length)."""
    try:
        with path.open("rb") as handle:
            length = struct.unpack("<Q", handle.read(8))[0]
            if length > MAX_HEADER_BYTES:
                raise ValueError(f"header of {length} bytes")
            header = json.loads(handle.read(length))
    except (OSError, ValueError, struct.error) as exc:
        raise UserError(f"{path}: not a readable safetensors file ({exc})") from None
    return {name: list(entry["shape"]) for name, entry in header.items() if name != "__metadata__"}


def _read_hub_cache(ref: str, revision: str | None) -> ModelInfo:
    """A hub name: read what the local Hugging Face cache already holds (never the network here)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return ModelInfo(ref=ref, location=ref, is_local=False, source="hub (not in the local cache)")

    def cached(filename: str) -> Path | None:
        try:
            found = try_to_load_from_cache(ref, filename, revision=revision)
        except Exception:  # an invalid repo id and the like: the libraries will say so at load time
            return None
        return Path(found) if isinstance(found, str) else None

    config_file = cached("config.json")
    if config_file is None:
        return ModelInfo(ref=ref, location=ref, is_local=False, source="hub (not in the local cache)")
    tokenizer_file = cached("tokenizer_config.json")
    shapes = None
    index = cached("model.safetensors.index.json")
    if index is not None:
        shards = sorted(set((_read_json(index).get("weight_map") or {}).values()))
        files = [cached(shard) for shard in shards]
        if all(files):
            shapes = {}
            for shard_file in files:
                shapes.update(safetensors_shapes(shard_file))
    elif (single := cached("model.safetensors")) is not None:
        shapes = safetensors_shapes(single)
    return ModelInfo(
        ref=ref,
        location=ref,
        is_local=False,
        config=_read_json(config_file),
        tokenizer_config=_read_json(tokenizer_file) if tokenizer_file else None,
        weight_shapes=shapes,
        source="hub (local cache)",
    )


def fetch_hub_weight_shapes(info: ModelInfo, revision: str | None) -> ModelInfo:
    """At run time, for a hub model not in the cache: read the safetensors headers over the network (range
    requests, no weights). Returns info unchanged when that is impossible (offline)."""
    if info.is_local or info.weight_shapes is not None:
        return info
    try:
        from huggingface_hub import get_safetensors_metadata

        metadata = get_safetensors_metadata(info.ref, revision=revision)
    except Exception:
        return info
    shapes = {
        name: list(tensor.shape)
        for file in metadata.files_metadata.values()
        for name, tensor in file.tensors.items()
    }
    return ModelInfo(
        ref=info.ref,
        location=info.location,
        is_local=False,
        config=info.config,
        tokenizer_config=info.tokenizer_config,
        weight_shapes=shapes,
        source="hub (safetensors headers)",
    )
