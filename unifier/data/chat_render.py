"""Chat templates rendered the way transformers renders them, with jinja2 alone (no transformers import).

`unify validate` counts tokens before anything heavy loads; importing transformers for its renderer cost
about a second. This module builds the same sandboxed jinja2 environment as transformers'
`utils.chat_template_utils` (trim_blocks, lstrip_blocks, loopcontrols, the `{% generation %}` tag that
marks assistant text, its `tojson`, `raise_exception` and `strftime_now`), adapted from transformers
(Apache-2.0). tests/test_chat_render.py checks the output against transformers' own renderer.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from datetime import datetime
from functools import lru_cache

import jinja2
import jinja2.ext
import jinja2.nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment


class _AssistantTracker(jinja2.ext.Extension):
    """`{% generation %}...{% endgeneration %}`: records the character span of what it wraps."""

    tags = frozenset({"generation"})

    def __init__(self, environment):
        super().__init__(environment)
        environment.extend(activate_tracker=self.activate_tracker)
        self._rendered_blocks = None
        self._generation_indices = None

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_generation_support"), [], [], body).set_lineno(
            lineno
        )

    @jinja2.pass_eval_context
    def _generation_support(self, context, caller):
        text = caller()
        if self._rendered_blocks is not None:
            start = len("".join(self._rendered_blocks))
            self._generation_indices.append((start, start + len(text)))
        return text

    @contextmanager
    def activate_tracker(self, rendered_blocks, generation_indices):
        try:
            self._rendered_blocks, self._generation_indices = rendered_blocks, generation_indices
            yield
        finally:
            self._rendered_blocks = self._generation_indices = None


def _raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(format):
    return datetime.now().strftime(format)


@lru_cache
def compiled(chat_template: str) -> jinja2.Template:
    environment = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_AssistantTracker, jinja2.ext.loopcontrols]
    )
    environment.filters["tojson"] = _tojson
    environment.globals["raise_exception"] = _raise_exception
    environment.globals["strftime_now"] = _strftime_now
    return environment.from_string(chat_template)


def render_with_assistant_spans(
    chat_template: str,
    messages: list[dict],
    tools: list[dict] | None = None,
    add_generation_prompt: bool = False,
    **special_tokens,
) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the (start, end) character spans of its `{% generation %}` blocks."""
    template = compiled(chat_template)
    blocks: list[str] = []
    spans: list[tuple[int, int]] = []
    with template.environment.activate_tracker(blocks, spans):
        for block in template.generate(
            messages=messages,
            tools=tools,
            documents=None,
            add_generation_prompt=add_generation_prompt,
            **special_tokens,
        ):
            blocks.append(block)
    return "".join(blocks), spans
