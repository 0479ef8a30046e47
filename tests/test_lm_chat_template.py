"""engine.lm.ChatTemplate against transformers' apply_chat_template: the SmolLM2 file's own
template on several conversations (text and token ids), a template using HF's block trimming,
tools, tojson, loop controls and raise_exception; hostile or broken templates are clear errors."""

from __future__ import annotations

import pytest

from engine.errors import ModelFormatError
from engine.lm.chat_template import ChatTemplate, ChatTemplateError
from engine.lm.tokenizer import Tokenizer

pytest.importorskip("jinja2")
pytest.importorskip("tokenizers")
from gguf_smollm2 import smollm2_metadata, smollm2_reference  # noqa: E402

SYSTEM_USER = [
    {"role": "system", "content": "You answer in one word."},
    {"role": "user", "content": "Capital of France?"},
]
MULTI_TURN = [
    {"role": "user", "content": "Hi! 🙂"},
    {"role": "assistant", "content": "Hello. How can I help?"},
    {"role": "user", "content": "Write   code:\n\tdef f(): pass"},
]
CONVERSATIONS = [SYSTEM_USER, MULTI_TURN, [{"role": "user", "content": ""}], MULTI_TURN[:2]]

# Multi-line block tags (trimmed as HF trims them), tools, tojson, break and raise_exception.
TOOL_TEMPLATE = """{% if tools %}
Tools: {{ tools | tojson }}
{% endif %}
{% for message in messages %}
    {% if message['role'] not in ['user', 'assistant', 'system'] %}
        {{ raise_exception('unknown role ' + message['role']) }}
    {% endif %}
    {% if message['content'] == 'STOP' %}{% break %}{% endif %}
<{{ message['role'] }}>{{ message['content'] }}{{ eos_token }}
{% endfor %}
{% if add_generation_prompt %}
<assistant>
{% endif %}"""
TOOLS = [{"type": "function", "function": {"name": "weather", "parameters": {"city": "Zürich <b>"}}}]


@pytest.fixture(scope="module")
def template():
    return ChatTemplate.from_gguf_metadata(smollm2_metadata())


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.from_gguf_metadata(smollm2_metadata())


@pytest.mark.parametrize("generation_prompt", [False, True])
@pytest.mark.parametrize("messages", CONVERSATIONS)
def test_smollm2_template_equals_transformers(template, tok, messages, generation_prompt):
    ref = smollm2_reference()
    text = template.render(messages, add_generation_prompt=generation_prompt)
    assert text == ref.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    ids = tok.encode(text)
    expected = ref.apply_chat_template(messages, tokenize=True, add_generation_prompt=generation_prompt)
    assert ids == expected["input_ids"]


@pytest.mark.parametrize("tools", [None, TOOLS])
def test_trimming_tools_and_loop_controls_equal_transformers(tools):
    ref = smollm2_reference()
    messages = [*MULTI_TURN, {"role": "user", "content": "STOP"}, {"role": "user", "content": "unseen"}]
    text = ChatTemplate(TOOL_TEMPLATE, eos_token="<|im_end|>").render(messages, add_generation_prompt=True, tools=tools)
    expected = ref.apply_chat_template(
        messages, chat_template=TOOL_TEMPLATE, tools=tools, tokenize=False, add_generation_prompt=True
    )
    assert text == expected
    assert "unseen" not in text and ("Zürich <b>" in text) == bool(tools)


@pytest.mark.parametrize(
    "source, match",
    [
        ("{{ ''.__class__.__mro__ }}", "__class__"),
        ("{{ messages[0].__class__ }}", "__class__"),
        ("{{ cycler.__init__.__globals__ }}", "not allowed"),
        ("{% set x = messages.append(1) %}", "SecurityError"),
        ("{{ messages[0].update({'role': 'x'}) }}", "SecurityError"),
        ("{{ raise_exception('roles must alternate') }}", "roles must alternate"),
        ("{{ 1 / 0 }}", "ZeroDivisionError"),
    ],
)
def test_hostile_or_failing_templates_raise(source, match):
    with pytest.raises(ChatTemplateError, match=match):
        ChatTemplate(source).render([{"role": "user", "content": "Hi"}])


def test_broken_or_missing_template():
    with pytest.raises(ChatTemplateError, match="does not compile"):
        ChatTemplate("{% for m in messages %}")
    with pytest.raises(ModelFormatError, match="tokenizer.chat_template"):
        ChatTemplate.from_gguf_metadata({"tokenizer.ggml.tokens": ["a"]})
