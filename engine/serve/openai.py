"""OpenAI's API for language models, without I/O: parse and check request bodies, build the
response, chunk, model and error objects, frame server-sent events.

    req = parse_chat(json_object)            # OpenAIError (400) naming the field when it is bad
    chat_response(rid, created, model, text, "stop", usage(12, 5))
    sse(chat_chunk(rid, created, model, {"content": "Hi"}, None)) + SSE_DONE

Request fields: model, messages (chat) / prompt (completions: a string, a list of token ids, or
a list holding one of those), max_tokens / max_completion_tokens, temperature, top_p, and the
vLLM extensions top_k, min_p, repetition_penalty; seed, stop (a string or a list), stream,
stream_options.include_usage, n (1 only). Other fields are ignored, as OpenAI does with fields
it does not know; logprobs / best_of > 1 / echo are refused rather than silently dropped.
"""

from __future__ import annotations

import json
import math
import secrets
from dataclasses import dataclass
from typing import Optional, Union

from ..errors import EngineError

MAX_STOPS = 16
MAX_STOP_CHARS = 256
_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "invalid_request_error",
                405: "invalid_request_error", 408: "timeout", 413: "invalid_request_error",
                415: "invalid_request_error", 503: "service_unavailable", 500: "server_error"}


class OpenAIError(EngineError):
    """An answer in OpenAI's error shape: {"error": {"message", "type", "param", "code"}}."""

    def __init__(self, message: str, status: int = 400, param: Optional[str] = None, code: Optional[str] = None):
        super().__init__(message)
        self.status, self.param, self.code = status, param, code


@dataclass(frozen=True)
class GenerationRequest:
    chat: bool                          # /v1/chat/completions (messages) or /v1/completions (prompt)
    model: str
    messages: Optional[list]            # chat: [{"role": str, "content": str}] (text parts joined)
    prompt: Union[str, list, None]      # completions: text or token ids
    max_tokens: Optional[int]           # None: the server's default
    sampling: dict                      # SamplingParams keyword arguments
    stop: tuple
    stream: bool
    include_usage: bool


def parse_chat(body) -> GenerationRequest:
    body = _object(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise OpenAIError("'messages' must be a non-empty list of {role, content} objects", param="messages")
    return _request(body, True, messages=[_message(m, i) for i, m in enumerate(messages)])


def parse_completion(body) -> GenerationRequest:
    body = _object(body)
    if "prompt" not in body:
        raise OpenAIError("'prompt' is required: a string or a list of token ids", param="prompt")
    if body.get("echo"):
        raise OpenAIError("'echo' is not supported", param="echo")
    if body.get("best_of") not in (None, 1):
        raise OpenAIError("'best_of' must be 1 (or left out)", param="best_of")
    return _request(body, False, prompt=_prompt(body["prompt"]))


def _object(body) -> dict:
    if not isinstance(body, dict):
        raise OpenAIError("the request body must be a JSON object")
    return body


def _request(body: dict, chat: bool, messages=None, prompt=None) -> GenerationRequest:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise OpenAIError("'model' is required: the name of a served language model (GET /v1/models lists them)",
                          param="model")
    n = body.get("n", 1)
    if n not in (1, None) or isinstance(n, bool):
        raise OpenAIError(f"'n' must be 1: this server returns one choice per request, got {n!r}", param="n")
    if body.get("logprobs") not in (None, False, 0) or body.get("top_logprobs") not in (None, 0):
        raise OpenAIError("'logprobs' are not supported", param="logprobs")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens")) if chat else body.get("max_tokens")
    param = "max_completion_tokens" if chat and body.get("max_completion_tokens") is not None else "max_tokens"
    if max_tokens is not None:
        max_tokens = _integer(max_tokens, param, 1)
    sampling = {}
    for key, lo, hi, default in (("temperature", 0.0, 2.0, None), ("top_p", 0.0, 1.0, None),
                                 ("min_p", 0.0, 1.0, None), ("repetition_penalty", 0.0, 10.0, None)):
        v = body.get(key, default)
        if v is not None:
            v = _number(v, key)
            if not (lo <= v <= hi) or (key in ("top_p", "repetition_penalty") and v == 0):
                kind = "(0, " if key in ("top_p", "repetition_penalty") else f"[{lo:g}, "
                raise OpenAIError(f"'{key}' must be in {kind}{hi:g}], got {v!r}", param=key)
            sampling[key] = v
    top_k = body.get("top_k")
    if top_k is not None and top_k != -1:  # vLLM: -1 = off
        sampling["top_k"] = _integer(top_k, "top_k", 0)
    seed = body.get("seed")
    if seed is not None:
        sampling["seed"] = _integer(seed, "seed", -(1 << 63)) & ((1 << 64) - 1)
    stream = body.get("stream", False)
    if not isinstance(stream, bool) and stream is not None:
        raise OpenAIError(f"'stream' must be true or false, got {stream!r}", param="stream")
    opts = body.get("stream_options")
    if opts is not None and not isinstance(opts, dict):
        raise OpenAIError("'stream_options' must be an object", param="stream_options")
    include_usage = bool((opts or {}).get("include_usage", False))
    if opts is not None and not stream:
        raise OpenAIError("'stream_options' is only allowed with 'stream': true", param="stream_options")
    return GenerationRequest(chat, model, messages, prompt, max_tokens, sampling, _stop(body.get("stop")),
                             bool(stream), include_usage)


def _message(m, i: int) -> dict:
    where = f"messages[{i}]"
    if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not m["role"]:
        raise OpenAIError(f"{where} must be an object with a string 'role'", param=where)
    content = m.get("content")
    if isinstance(content, list):  # content parts: only text is understood
        texts = []
        for j, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise OpenAIError(f"{where}.content[{j}]: only {{\"type\": \"text\", \"text\": ...}} parts are "
                                  "supported", param=f"{where}.content")
            texts.append(part["text"])
        content = "".join(texts)
    elif content is None:
        content = ""
    elif not isinstance(content, str):
        raise OpenAIError(f"{where}.content must be a string or a list of text parts", param=f"{where}.content")
    return {"role": m["role"], "content": content}


def _prompt(p):
    if isinstance(p, list) and len(p) == 1 and isinstance(p[0], (str, list)):
        p = p[0]  # a batch of one
    if isinstance(p, str):
        if not p:
            raise OpenAIError("'prompt' is empty", param="prompt")
        return p
    if isinstance(p, list) and p and all(isinstance(t, int) and not isinstance(t, bool) for t in p):
        return p
    if isinstance(p, list) and p and all(isinstance(t, (str, list)) for t in p):
        raise OpenAIError(f"'prompt' holds {len(p)} prompts; this server takes one per request", param="prompt")
    raise OpenAIError("'prompt' must be a non-empty string or a non-empty list of token ids", param="prompt")


def _stop(v) -> tuple:
    if v is None:
        return ()
    stops = [v] if isinstance(v, str) else v
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise OpenAIError("'stop' must be a string or a list of strings", param="stop")
    if len(stops) > MAX_STOPS or any(len(s) > MAX_STOP_CHARS for s in stops):
        raise OpenAIError(f"'stop' takes at most {MAX_STOPS} strings of at most {MAX_STOP_CHARS} characters",
                          param="stop")
    return tuple(s for s in stops if s)


def _number(v, key: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise OpenAIError(f"'{key}' must be a number, got {v!r}", param=key)
    return float(v)


def _integer(v, key: str, lo: int) -> int:
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise OpenAIError(f"'{key}' must be an integer >= {lo}, got {v!r}", param=key)
    return v


# -- responses ------------------------------------------------------------------------

def new_id(chat: bool) -> str:
    return ("chatcmpl-" if chat else "cmpl-") + secrets.token_hex(12)


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def chat_response(rid: str, created: int, model: str, text: str, finish_reason: str, use: dict) -> dict:
    return {"id": rid, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                         "finish_reason": finish_reason}],
            "usage": use}


def chat_chunk(rid: str, created: int, model: str, delta: Optional[dict], finish_reason: Optional[str],
               use: Optional[dict] = None) -> dict:
    """A chat.completion.chunk; delta None makes the usage-only chunk (empty choices)."""
    choices = [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None,
                                          "finish_reason": finish_reason}]
    out = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model, "choices": choices}
    if use is not None:
        out["usage"] = use
    return out


def completion_response(rid: str, created: int, model: str, text: str, finish_reason: Optional[str],
                        use: Optional[dict] = None, with_choice: bool = True) -> dict:
    """A text_completion object (also each streamed chunk; with_choice False: the usage-only one)."""
    choices = [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}] if with_choice else []
    out = {"id": rid, "object": "text_completion", "created": created, "model": model, "choices": choices}
    if use is not None:
        out["usage"] = use
    return out


def model_object(name: str, created: int) -> dict:
    return {"id": name, "object": "model", "created": created, "owned_by": "engine"}


def model_list(models: list) -> dict:
    return {"object": "list", "data": models}


def error_object(message: str, status: int, param: Optional[str] = None, code: Optional[str] = None) -> dict:
    return {"error": {"message": message, "type": _ERROR_TYPES.get(status, "invalid_request_error"),
                      "param": param, "code": code}}


def dumps(obj) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def sse(obj) -> bytes:
    """One server-sent event carrying a JSON object."""
    return b"data: " + dumps(obj) + b"\n\n"


SSE_DONE = b"data: [DONE]\n\n"
