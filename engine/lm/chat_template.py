"""Render a model's chat template (`tokenizer.chat_template`, jinja2) the way transformers'
`apply_chat_template` does, in jinja2's immutable sandbox: the template comes from a model file,
so it may read the messages it is given and nothing else."""

from __future__ import annotations

import json
from datetime import datetime

from engine.errors import EngineError, ModelFormatError


class ChatTemplateError(EngineError):
    """A chat template failed to compile or render, or reached outside its sandbox."""


class ChatTemplate:
    """A compiled chat template.

    >>> t = ChatTemplate(metadata["tokenizer.chat_template"], bos_token="<|im_start|>", eos_token="<|im_end|>")
    >>> t.render([{"role": "user", "content": "Hi"}], add_generation_prompt=True)
    '<|im_start|>system\\n...<|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\n'
    """

    def __init__(self, source: str, *, bos_token: str | None = None, eos_token: str | None = None, **special_tokens):
        try:
            import jinja2  # noqa: F401
        except ImportError:
            raise EngineError("chat templates need the `jinja2` package: pip install 'engine[lm]'") from None
        self._special_tokens = {"bos_token": bos_token, "eos_token": eos_token, **special_tokens}
        try:
            self._template = _environment().from_string(source)
        except Exception as e:  # jinja2's TemplateSyntaxError and anything a broken file provokes
            raise ChatTemplateError(f"chat template does not compile: {e}") from None

    @classmethod
    def from_gguf_metadata(cls, md: dict) -> ChatTemplate:
        """The template a GGUF file carries, with its special tokens' strings.

        >>> ChatTemplate.from_gguf_metadata(metadata).render(messages, add_generation_prompt=True)
        """
        if "tokenizer.chat_template" not in md:
            raise ModelFormatError("GGUF metadata has no 'tokenizer.chat_template'")
        tokens = md.get("tokenizer.ggml.tokens", ())

        def token(name):
            token_id = md.get(f"tokenizer.ggml.{name}_token_id")
            return tokens[token_id] if token_id is not None and token_id < len(tokens) else None

        return cls(
            md["tokenizer.chat_template"],
            bos_token=token("bos"),
            eos_token=token("eos"),
            unk_token=token("unknown"),
            pad_token=token("padding"),
        )

    def render(
        self, messages: list[dict], add_generation_prompt: bool = False, tools: list | None = None, **extra
    ) -> str:
        """The prompt text for `messages`; with `add_generation_prompt`, ending where the
        assistant's reply starts."""
        try:
            return self._template.render(
                messages=messages,
                add_generation_prompt=add_generation_prompt,
                tools=tools,
                **self._special_tokens,
                **extra,
            )
        except Exception as e:  # raise_exception(), SecurityError, a TypeError inside the template...
            raise ChatTemplateError(f"chat template failed: {type(e).__name__}: {e}") from None


def _environment():
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

    class StrictSandbox(ImmutableSandboxedEnvironment):
        # The stock sandbox answers a forbidden attribute with an Undefined that prints as "";
        # a template that tries one is hostile or broken, so stop it at once.
        def unsafe_undefined(self, obj, attribute):
            raise SecurityError(f"access to attribute {attribute!r} of a {type(obj).__name__} is not allowed")

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        # jinja2's own tojson escapes HTML characters; transformers' does not.
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = StrictSandbox(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env
