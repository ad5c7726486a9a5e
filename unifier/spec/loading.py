"""Recipe loading: YAML (safe_load), `--set key=value` overrides, readable validation errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from .. import builtin
from ..errors import UserError
from ..secrets import literal_secrets
from .job import JobSpec

DATA_FILE_SUFFIXES = (".json", ".jsonl", ".csv", ".parquet")


def load_spec(path: str | Path, overrides: list[str] | None = None) -> JobSpec:
    """Read a recipe file, apply overrides, validate. Relative paths resolve against the recipe's folder."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a folder, not a recipe file", hint="give the recipe's .yaml file")
    if not path.is_file():
        raise UserError(
            f"{path}: recipe file not found", hint="check the path, or write one with `unify init`"
        )
    raw = read_yaml(path)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise UserError(
            f"{path}: expected a mapping of sections (model:, data:, ...), got {type(raw).__name__}"
        )
    raw = apply_overrides(raw, overrides or [])
    return spec_from_dict(raw, source=str(path), base_dir=path.parent)


MAX_ALIASES = 50  # a recipe needs few (if any); a few hundred bytes of nested aliases expand to gigabytes


class RecipeLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (the last one would silently win) and alias bombs."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            self.alias_count = getattr(self, "alias_count", 0) + 1
            if self.alias_count > MAX_ALIASES:
                event = self.peek_event()
                raise yaml.YAMLError(_Refusal(f"more than {MAX_ALIASES} aliases (*name)", event.start_mark))
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                continue  # SafeLoader reports unhashable keys itself
            if key in seen:
                raise yaml.YAMLError(
                    _Refusal(f"duplicate key '{key}' (first at line {seen[key] + 1})", key_node.start_mark)
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


class _Refusal:
    def __init__(self, problem: str, mark):
        self.problem, self.problem_mark = problem, mark


def read_yaml(path: Path) -> Any:
    """The recipe's YAML as Python values; every problem is a UserError naming file:line."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"{path}: cannot read it ({exc.strerror})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise UserError(
            f"{path}:{line}: not UTF-8 text (byte {data[exc.start]:#04x})", hint="save the recipe as UTF-8"
        ) from None
    try:
        return yaml.load(text, Loader=RecipeLoader)
    except yaml.YAMLError as exc:
        refusal = exc.args[0] if exc.args and isinstance(exc.args[0], _Refusal) else exc
        mark = getattr(refusal, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise UserError(f"{where}: not valid YAML: {getattr(refusal, 'problem', refusal)}") from None
    except RecursionError:
        raise UserError(f"{path}: not valid YAML: nested too deeply") from None


def spec_from_dict(
    raw: dict[str, Any], *, source: str = "<spec>", base_dir: str | Path | None = None
) -> JobSpec:
    secrets = literal_secrets(raw)
    if secrets:
        raise UserError(
            f"{source}: " + "; ".join(secrets) + " (unifier never stores a secret)",
            hint="refer to it through an environment variable, e.g. hub_token: ${HF_TOKEN}, and export "
            "HF_TOKEN; for a model or data URL, put the token in HF_TOKEN instead of the URL",
        )
    try:
        spec = JobSpec.model_validate(raw)
    except ValidationError as exc:
        raise UserError(format_validation_error(exc, source)) from None
    if base_dir is not None:  # a recipe file: its relative paths, and the reward files it names, checked
        _resolve_relative_paths(spec, Path(base_dir))
        if spec.training.method == "grpo":
            _resolve_rewards(spec, Path(base_dir))
    return spec


def _resolve_rewards(spec: JobSpec, base: Path) -> None:
    """training.grpo.rewards: each `file.py:function` (or `module:function`, module.py) made an absolute path,
    checked to exist and to define the function at its top level (read, not run: nothing executes before
    training)."""
    import ast

    from .training import BUILTIN_REWARDS, REWARD_REFERENCE

    resolved = []
    for index, name in enumerate(spec.training.grpo.rewards):
        match = REWARD_REFERENCE.match(name)
        if name in BUILTIN_REWARDS or match is None:
            resolved.append(name)
            continue
        file, function = match["file"], match["function"]
        if not file.endswith(".py"):
            file = file.replace(".", "/") + ".py"
        path = Path(file) if Path(file).is_absolute() else base / file
        where = f"training.grpo.rewards[{index}] {name!r}"
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        except FileNotFoundError:
            raise UserError(
                f"{where}: {path} not found", hint="relative paths resolve against the recipe's folder"
            ) from None
        except (OSError, UnicodeDecodeError, SyntaxError) as exc:
            raise UserError(f"{where}: {path} is not a readable Python file ({exc})") from None
        defined = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
        if function not in defined:
            raise UserError(
                f"{where}: {path} defines no top-level function {function!r}"
                + (f" (it defines {', '.join(sorted(defined))})" if defined else "")
            )
        arguments = defined[function].args
        named = {a.arg for a in arguments.args + arguments.kwonlyargs}
        if not {"prompts", "completions"} <= named and arguments.kwarg is None:
            raise UserError(
                f"{where}: {function}({', '.join(sorted(named))}) cannot take the reward arguments",
                hint="define it as def "
                + function
                + "(prompts, completions, **columns) (the rows' columns arrive "
                "by name, e.g. answer)",
            )
        resolved.append(f"{_absolute(path)}:{function}")
    if len(set(resolved)) != len(resolved):
        twice = next(name for name in resolved if resolved.count(name) > 1)
        raise UserError(f"training.grpo.rewards: {twice} is named twice (by two spellings of its path)")
    object.__setattr__(spec.training.grpo, "rewards", resolved)  # checked above; no re-validation of the list


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b.c=value` strings; the value is parsed as YAML (so 1e-4, true, [a, b] work)."""
    result = _deep_copy(raw)
    for item in overrides:
        if "=" not in item:
            raise UserError(f"--set {item!r}: expected KEY=VALUE, e.g. --set training.learning_rate=1e-4")
        key, _, text = item.partition("=")
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise UserError(f"--set {item!r}: empty key")
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError:
            value = text
        node = result
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise UserError(f"--set {item!r}: '{'.'.join(parts[: depth + 1])}' is a value, not a section")
            node = child
        node[parts[-1]] = value
    return result


def format_validation_error(exc: ValidationError, source: str) -> str:
    lines = [
        f"{source}: the recipe is not valid ({exc.error_count()} problem{'s' if exc.error_count() > 1 else ''}):"
    ]
    for err in exc.errors():
        loc = ".".join(str(p) for p in _without_union_tags(err["loc"])) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "missing":
            msg = "required, but missing"
        elif "input" in err and err["type"] not in ("value_error",) and not isinstance(err["input"], dict):
            msg += f" (got {err['input']!r})"
        lines.append(f"  {loc}: {msg}")
    return "\n".join(lines)


def _without_union_tags(loc: tuple) -> tuple:
    """pydantic names the chosen variant of `training` (its method) in the location: the recipe has no such key."""
    from ..methods import METHODS

    if len(loc) >= 2 and loc[0] == "training" and loc[1] in METHODS:
        return (loc[0], *loc[2:])
    return loc


def _absolute(path: Path) -> str:
    """The path made absolute with its links followed; a link loop stays unresolved (the reader names it)."""
    try:
        return str(path.resolve())
    except (OSError, RuntimeError):  # Python 3.11 raises RuntimeError("Symlink loop ...")
        return str(path.absolute())


def _resolve_relative_paths(spec: JobSpec, base: Path) -> None:
    for source in [*spec.data.train, *spec.data.eval]:
        if builtin.is_builtin(source.path) or Path(source.path).is_absolute():
            continue
        candidate = base / source.path
        if candidate.exists() or source.path.lower().endswith(DATA_FILE_SUFFIXES):
            source.path = _absolute(candidate)
    spec.eval.retain = [
        path if builtin.is_builtin(path) or Path(path).is_absolute() else _absolute(base / path)
        for path in spec.eval.retain
    ]
    name = spec.model.name_or_path
    if not builtin.is_builtin(name) and not Path(name).is_absolute():
        candidate = base / name
        if candidate.exists() or name.startswith(("./", "../")):
            spec.model.name_or_path = _absolute(candidate)
    template = spec.model.chat_template
    if template.endswith(".jinja"):
        if not Path(template).is_absolute():
            spec.model.chat_template = _absolute(base / template)
        if not Path(spec.model.chat_template).is_file():
            raise UserError(
                f"model.chat_template: {spec.model.chat_template} not found",
                hint="relative paths resolve against the recipe's folder; or use chat_template: chatml",
            )


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value
