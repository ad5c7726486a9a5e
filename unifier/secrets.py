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


def expand_references(value: Any, environ: dict[str, str] | None = None) -> Any:
    """`${VAR}` -> the variable's value (only the training process does this, right before the library call)."""
    environ = os.environ if environ is None else environ
    if isinstance(value, dict):
        return {k: expand_references(v, environ) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_references(v, environ) for v in value]
    name = env_reference(value)
    if name is not None:
        if name not in environ:
            raise KeyError(f"environment variable {name} is not set (the recipe refers to it as ${{{name}}})")
        return environ[name]
    return value
