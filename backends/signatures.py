"""The keyword names the installed libraries accept, read from their source without importing them.

`backend_options` is passed verbatim to trl's SFTConfig/DPOConfig, unsloth's from_pretrained /
get_peft_model, or ms-swift's command line; a misspelt key would fail only after the model has loaded (or,
behind **kwargs, never). check() compares each key with these names first, as torchtune binds config keys
to the signature of what they build. Parsing the source (ast) keeps `unify validate` free of torch.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
from pathlib import Path


def module_file(module: str) -> Path | None:
    """The source file of a module, found without importing anything (importlib would run the parent packages'
    __init__, and unsloth's patches half of the ecosystem on import)."""
    top, *rest = module.split(".")
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None:
        return None
    base = Path(spec.origin)
    if not rest:
        return base if base.suffix == ".py" else None
    if base.name != "__init__.py":
        return None
    path = base.parent.joinpath(*rest)
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@functools.cache
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"))


@functools.cache
def dataclass_fields(module: str, name: str) -> frozenset[str] | None:
    """Field names of a class (annotated class attributes), its bases' included when they can be found in the
    modules it imports them from. None when the module is not installed."""
    annotations = dataclass_annotations(module, name)
    return None if annotations is None else frozenset(annotations)


@functools.cache
def dataclass_annotations(module: str, name: str) -> dict[str, tuple[str, str]] | None:
    """field -> (its annotation as written, the module it is written in), bases first. None: not installed."""
    found = _class_node(module, name)
    if found is None:
        return None
    node, module, tree = found
    annotations: dict[str, tuple[str, str]] = {}
    imported = _imported_names(tree, module)
    for base in node.bases:
        base_name = (
            base.id if isinstance(base, ast.Name) else base.attr if isinstance(base, ast.Attribute) else None
        )
        if base_name is None:
            continue
        inherited = dataclass_annotations(imported.get(base_name, module), base_name)
        if inherited:
            annotations.update(inherited)
    for item in node.body:
        if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
            annotations[item.target.id] = (ast.unparse(item.annotation), module)
    return annotations


def _class_node(module: str, name: str) -> tuple[ast.ClassDef, str, ast.Module] | None:
    path = module_file(module)
    if path is None:
        return None
    tree = _tree(path)
    node = next((n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == name), None)
    if node is None and path.name == "__init__.py":  # a lazily importing package: find the defining module
        for source in sorted(path.parent.glob("*.py")):
            text = source.read_text(encoding="utf-8", errors="ignore")
            if f"class {name}(" in text or f"class {name}:" in text:
                return _class_node(f"{module}.{source.stem}", name)
    return None if node is None else (node, module, tree)


@functools.cache
def enum_values(module: str, name: str) -> frozenset[str] | None:
    """The string values of an Enum class (NAME = "value" members), read from the source; None: not an enum."""
    found = _class_node(module, name)
    if found is None:
        imported = _imported_names(_tree(module_file(module)), module) if module_file(module) else {}
        return enum_values(imported[name], name) if name in imported and imported[name] != module else None
    node, _, _ = found
    bases = {b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases}
    if not any("Enum" in base for base in bases):
        return None
    values = {
        item.value.value
        for item in node.body
        if isinstance(item, ast.Assign)
        and isinstance(item.value, ast.Constant)
        and isinstance(item.value.value, str)
    }
    return frozenset(values) or None


SCALARS = {"bool": (bool,), "int": (int,), "float": (int, float), "str": (str,)}


def value_problem(value, annotation: str, module: str) -> str | None:
    """Why `value` cannot be what a field annotated `annotation` takes (transformers' enums, bool/int/float/str);
    None when it can, or when the annotation says too little to tell (dicts, lists, Any, unknown names)."""
    text = (
        annotation.replace("Optional[", "None | ").replace("Union[", "").replace("]", "").replace(",", " |")
    )
    names = {part.strip() for part in text.split("|") if part.strip()}
    if value is None:
        return None  # None is the dataclasses' own "unset" almost everywhere
    names.discard("None")
    enums = {n: enum_values(module, n) for n in names if n not in SCALARS}
    if any(v is None for v in enums.values()):
        return None  # a type this cannot read (dict, list, Any, a class): the library checks it
    if isinstance(value, str):
        if any(value in values for values in enums.values()):
            return None
        if enums:  # transformers turns the text into the enum and fails on any other value
            choices = frozenset().union(*enums.values())
            listed = ", ".join(sorted(choices)[:12]) + (", ..." if len(choices) > 12 else "")
            return (
                f"{value!r} is not one of {' / '.join(enums)}'s values ({listed}){suggestion(value, choices)}"
            )
        return None if "str" in names else f"expected {' or '.join(sorted(names))}, got text {value!r}"
    allowed = tuple(t for n in names if n in SCALARS for t in SCALARS[n])
    if enums and not allowed:
        return f"expected one of {', '.join(sorted(set().union(*enums.values())))}, got {value!r}"
    if isinstance(value, bool) and bool not in allowed:
        quoted = (
            " (YAML reads no/yes/off/on as booleans: quote the text, e.g. 'no')" if str in allowed else ""
        )
        return f"expected {' or '.join(sorted(names))}, got {value!r}{quoted}"
    if allowed and not isinstance(value, allowed):
        return f"expected {' or '.join(sorted(names))}, got {value!r}"
    return None


def _imported_names(tree: ast.Module, module: str) -> dict[str, str]:
    found = {}
    package = module.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            for alias in node.names:
                found[alias.asname or alias.name] = base
    return found


@functools.cache
def function_parameters(module: str, qualified: str) -> frozenset[str] | None:
    """Named parameters of `Class.method` or `function` in a module's source (None: not found/installed)."""
    path = module_file(module)
    if path is None:
        return None
    owner, _, function = qualified.rpartition(".")
    for node in ast.walk(_tree(path)):
        if (isinstance(node, ast.ClassDef) and node.name == owner) or (
            not owner and isinstance(node, ast.Module)
        ):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and item.name == function:
                    args = item.args
                    return frozenset(a.arg for a in [*args.posonlyargs, *args.args, *args.kwonlyargs])
    return None


@functools.cache
def package_dataclass_fields(package: str) -> frozenset[str] | None:
    """Every annotated class attribute in a package's modules (ms-swift's arguments are spread over many)."""
    annotations = package_dataclass_annotations(package)
    return None if annotations is None else frozenset(annotations)


@functools.cache
def package_dataclass_annotations(package: str) -> dict[str, tuple[str, str]] | None:
    """field -> (annotation, module) over every class of a package's modules (ms-swift's arguments)."""
    path = module_file(package)
    if path is None:
        return None
    found: dict[str, tuple[str, str]] = {}
    for source in sorted(path.parent.rglob("*.py")):
        module = ".".join([package, *source.relative_to(path.parent).with_suffix("").parts])
        module = module.removesuffix(".__init__")
        try:
            tree = _tree(source)
        except (SyntaxError, UnicodeDecodeError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                for item in node.body:
                    if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                        found.setdefault(item.target.id, (ast.unparse(item.annotation), module))
    return found


def unknown_keys(keys, known: frozenset[str] | None) -> list[str]:
    if known is None:
        return []
    return [key for key in keys if key not in known]


def suggestion(key: str, known: frozenset[str] | None) -> str:
    import difflib

    close = difflib.get_close_matches(key, sorted(known or ()), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""
