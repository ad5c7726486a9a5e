"""Secrets: recognise them by key name and by value, keep them out of every file and printed plan.

A recipe refers to a secret through an environment variable (`hub_token: ${HF_TOKEN}`); the reference is
what run.json, plans and printed programs show, and only the training process expands it. A literal
secret in a recipe, or credentials inside a URL, are refused with the fix.
"""

from __future__ import annotations

import os
import re
from typing import Any

REDACTED = "<redacted>"
# exact key names (compared lower-case) and suffixes that mark a value as a credential; tokens_seen,
# pad_token, include_num_input_tokens_seen and the like are not secrets
SECRET_KEYS = frozenset(
    {
        "token",
        "hub_token",
        "hf_token",
        "access_token",
        "auth_token",
        "api_token",
        "api_key",
        "apikey",
        "password",
        "passwd",
        "secret",
        "secret_key",
        "client_secret",
        "private_key",
        "credentials",
        "hub_private_token",
    }
)
SECRET_SUFFIXES = (
    "_api_key",
    "_apikey",
    "_password",
    "_passwd",
    "_secret",
    "_secret_key",
    "_access_token",
    "_auth_token",
    "_api_token",
    "_hub_token",
    "_private_key",
    "_credentials",
)
SECRET_ENV_NAMES = (
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "HUGGINGFACE_HUB_TOKEN",
    "WANDB_API_KEY",
    "MODELSCOPE_API_TOKEN",
    "OPENAI_API_KEY",
    "MLFLOW_TRACKING_PASSWORD",
    "SWANLAB_API_KEY",
    "GITHUB_TOKEN",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
)
VALUE_PATTERNS = (
    re.compile(r"\bhf_[A-Za-z0-9]{20,}"),  # Hugging Face
    re.compile(r"\bsk-[A-Za-z0-9_-]{20,}"),  # OpenAI-style
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{20,}"),  # GitHub
    re.compile(r"\bgithub_pat_[A-Za-z0-9_]{20,}"),
    re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"),  # Slack
    re.compile(r"\bAKIA[0-9A-Z]{16}\b"),  # AWS access key id
)
URL_CREDENTIALS = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^/@\s:]*):(?P<password>[^/@\s]+)@"
)
ENV_REFERENCE = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")


def is_secret_key(key: Any) -> bool:
    name = str(key).lower().lstrip("-")
    return name in SECRET_KEYS or name.endswith(SECRET_SUFFIXES)


def env_reference(value: Any) -> str | None:
    """The variable name of a `${NAME}` reference, else None."""
    match = ENV_REFERENCE.match(value) if isinstance(value, str) else None
    return match.group(1) if match else None


def secret_in_text(text: str) -> str | None:
    """What kind of secret a string holds, if any ('a Hugging Face token', 'credentials in a URL'...)."""
    if URL_CREDENTIALS.search(text):
        return "credentials inside a URL"
    for pattern in VALUE_PATTERNS:
        if pattern.search(text):
            return "a value that looks like an access token"
    return None


def redact_text(text: str) -> str:
    text = URL_CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:{REDACTED}@", text)
    for pattern in VALUE_PATTERNS:
        text = pattern.sub(REDACTED, text)
    for value in environment_secret_values():
        text = text.replace(value, REDACTED)
    return text


def redact(value: Any) -> Any:
    """A copy with every credential replaced: values under secret key names (except `${VAR}` references),
    secret-looking strings, and the values of secret environment variables wherever they appear."""
    if isinstance(value, dict):
        return {
            k: (v if env_reference(v) else REDACTED)
            if is_secret_key(k) and v not in (None, "", False)
            else redact(v)
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        items = [redact(v) for v in value]
        # argv style: ["--hub_token", "value"]
        for index in range(len(items) - 1):
            flag = items[index]
            if (
                isinstance(flag, str)
                and flag.startswith("--")
                and is_secret_key(flag)
                and not env_reference(items[index + 1])
            ):
                items[index + 1] = REDACTED
        return items if isinstance(value, list) else tuple(items)
    if isinstance(value, str):
        return redact_text(value)
    return value


def literal_secrets(value: Any, where: str = "") -> list[str]:
    """Places in a recipe that hold a literal secret (refused: recipes refer to secrets as ${VAR})."""
    found = []
    if isinstance(value, dict):
        for key, item in value.items():
            path = f"{where}.{key}" if where else str(key)
            if is_secret_key(key) and isinstance(item, str) and item and not env_reference(item):
                found.append(f"{path}: a secret written into the recipe")
            else:
                found += literal_secrets(item, path)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += literal_secrets(item, f"{where}[{index}]")
    elif isinstance(value, str):
        kind = secret_in_text(value)
        if kind:
            found.append(f"{where}: {kind}")
    return found


def environment_secret_values() -> list[str]:
    """Values of this process's secret environment variables (by name), never to be written anywhere."""
    values = []
    for name, value in os.environ.items():
        if (name in SECRET_ENV_NAMES or is_secret_key(name)) and len(value) >= 8:
            values.append(value)
    return values


def referenced_variables(value: Any) -> set[str]:
    """Names of the environment variables a spec or plan refers to as ${NAME}."""
    if isinstance(value, dict):
        return set().union(*(referenced_variables(v) for v in value.values())) if value else set()
    if isinstance(value, (list, tuple)):
        return set().union(*(referenced_variables(v) for v in value)) if value else set()
    name = env_reference(value)
    return {name} if name else set()


SECRET_VARIABLES_ENV = (
    "UNIFIER_SECRET_VARIABLES"  # names of referenced variables, for processes unifier starts
)


def secret_values() -> list[str]:
    """Every value this process must never write: secret environment variables, and the variables the run's
    recipe refers to (named in UNIFIER_SECRET_VARIABLES)."""
    values = set(environment_secret_values())
    for name in filter(None, os.environ.get(SECRET_VARIABLES_ENV, "").split(",")):
        if len(os.environ.get(name, "")) >= 4:
            values.add(os.environ[name])
    return sorted(values, key=len, reverse=True)


SCRUB_MAX_BYTES = 64 * 2**20  # weights are never where a secret hides; everything smaller is read


def scrub_tree(root: Any, values: list[str] | None = None) -> list[str]:
    """Overwrite every occurrence of a secret value in the files under `root` with '*' of the same length (so
    pickles and other length-prefixed files stay valid). Returns the files changed."""
    from pathlib import Path

    values = [v.encode() for v in (secret_values() if values is None else values) if v]
    changed = []
    root = Path(root)
    if not values or not root.exists():
        return changed
    files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()]
    for path in files:
        try:
            if path.stat().st_size > SCRUB_MAX_BYTES:
                continue
            data = path.read_bytes()
        except OSError:
            continue
        cleaned = data
        for value in values:
            cleaned = cleaned.replace(value, b"*" * len(value))
        if cleaned != data:
            path.write_bytes(cleaned)
            changed.append(str(path))
    return changed
