"""unifier's chat-template renderer (jinja2 alone, for `unify validate`) against transformers' own."""

import json
from pathlib import Path

import pytest
from transformers.utils.chat_template_utils import render_jinja_template

from unifier.data.chat_render import render_with_assistant_spans

ROOT = Path(__file__).resolve().parents[1]
CHATML = (ROOT / "unifier" / "assets" / "chatml.jinja").read_text()
# a template that uses the other globals transformers provides, and loop controls
OTHER = (
    "{{ bos_token }}{% for m in messages %}{% if m.role == 'system' %}{% continue %}{% endif %}"
    "[{{ m.role | upper }}] {% if m.role == 'assistant' %}{% generation %}{{ m.content }}{{ eos_token }}"
    "{% endgeneration %}{% else %}{{ m.content | tojson(indent=1) }}{% endif %}\n{% endfor %}"
    "{% if add_generation_prompt %}[ASSISTANT] {% endif %}{% if messages | length > 9 %}"
    "{{ raise_exception('too long') }}{% endif %}{{ strftime_now('%Y') | length }}"
)
TOOL_ROWS = [json.loads(line) for line in (ROOT / "examples/data/tool_calls.jsonl").read_text().splitlines()]
CONVERSATIONS = [
    ([{"role": "user", "content": "Hi <b>&</b> ü"}, {"role": "assistant", "content": "Hello"}], None),
    (
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "4"},
            {"role": "user", "content": "and 3+3?"},
            {"role": "assistant", "content": "6"},
        ],
        None,
    ),
    *[(row["messages"], row.get("tools")) for row in TOOL_ROWS[:3]],
]
SPECIAL = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"}


@pytest.mark.parametrize("template", [CHATML, OTHER], ids=["chatml", "other"])
@pytest.mark.parametrize("conversation", range(len(CONVERSATIONS)))
@pytest.mark.parametrize("add_generation_prompt", [False, True])
def test_render_equals_transformers(template, conversation, add_generation_prompt):
    messages, tools = CONVERSATIONS[conversation]
    theirs, their_spans = render_jinja_template(
        conversations=[messages],
        tools=tools,
        chat_template=template,
        return_assistant_tokens_mask=True,
        add_generation_prompt=add_generation_prompt,
        **SPECIAL,
    )
    ours, our_spans = render_with_assistant_spans(template, messages, tools, add_generation_prompt, **SPECIAL)
    assert ours == theirs[0]
    assert our_spans == their_spans[0]
    assert our_spans, "the templates mark assistant text"


def test_template_errors_are_jinja_errors_like_transformers():
    import jinja2

    messages = [{"role": "user", "content": str(i)} for i in range(10)]
    with pytest.raises(jinja2.exceptions.TemplateError, match="too long"):
        render_with_assistant_spans(OTHER, messages)
    with pytest.raises(jinja2.exceptions.SecurityError):  # the sandbox, as in transformers
        render_with_assistant_spans("{{ messages.__class__.__mro__ }}", messages)
