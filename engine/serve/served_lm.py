"""One loaded language-model version: the LanguageModel (engine.load of a .gguf file or a Hugging
Face folder) and the Scheduler that batches its generations, in place of the tensor batcher.

It looks like a ServedVersion to the manager (name, version, sha256, metrics, close, metadata)
so versions, hot reload and unload work the same; close() drains the scheduler: queued and
running generations finish (within the drain timeout) before the model goes.
"""

from __future__ import annotations

import time
from typing import Callable, Optional

from .config import ModelConfig
from ..errors import EngineError
from .metrics import ServerMetrics
from .openai import OpenAIError
from .repository import VersionFiles, is_safetensors, sha256_file
from .tensors import RequestError

COMPLETION_DEFAULT_MAX_TOKENS = 16  # OpenAI's default for /v1/completions (chat: the rest of the context)


class _NoLock:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


_NO_LOCK = _NoLock()


def is_language_model(path) -> bool:
    return path.suffix == ".gguf" or is_safetensors(path)


def _platform(path) -> str:
    return "gguf" if path.suffix == ".gguf" else "safetensors"


class ServedLanguageModel:
    inputs: tuple = ()
    outputs: tuple = ()
    max_batch_size = 0
    is_language_model = True

    def __init__(self, name: str, version: int, files: VersionFiles, config: ModelConfig,
                 metrics: Optional[ServerMetrics] = None, loader: Optional[Callable] = None):
        from ..lm.scheduler import Scheduler
        t0 = time.perf_counter()
        self.name, self.version, self.config = name, version, config
        self.path = files.path
        self.size = files.path.stat().st_size
        self.sha256 = sha256_file(files.path)
        self.model = self.lm = _load(files.path, config, loader)
        if getattr(self.lm, "tokenizer", None) is None:
            raise EngineError(f"{files.path}: the model has no tokenizer; serving needs one to turn text into tokens")
        decoder = self.lm.decoder
        self.max_context = decoder.max_context
        if config.warmup_batch_sizes:
            self._warm(decoder)
        self.metrics = metrics.for_version(name, version) if metrics is not None else None
        self.lm_metrics = metrics.for_language_model(name, version) if metrics is not None else None
        self.scheduler = Scheduler(
            decoder, self.lm.tokenizer, eos_ids=self.lm.eos_ids, max_sequences=config.max_sequences,
            max_tokens_per_step=config.max_tokens_per_step or 512, observer=self.lm_metrics, name=f"{name}-{version}",
            lock=getattr(self.lm, "lock", None))
        if self.lm_metrics is not None:
            self.lm_metrics.attach(self.scheduler)
        self.loaded_at = time.time()
        self.created = int(self.loaded_at)
        self.load_seconds = time.perf_counter() - t0

    def _warm(self, decoder) -> None:
        """One token through the decoder: a model that cannot run (a weight type without a
        kernel, say) fails to load, and the version it would replace keeps serving."""
        token = self.lm.tokenizer.bos_id or 0
        lock = getattr(self.lm, "lock", None) or _NO_LOCK
        with lock:
            seq = decoder.open()
            try:
                decoder.forward([seq], [[token]])
            except EngineError as e:
                raise EngineError(f"{self.path}: warm-up failed: {e}") from None
            finally:
                decoder.close(seq)

    # -- the tensor fronts ask; a language model answers only OpenAI's routes ------------

    def prepare(self, inputs: dict):
        raise RequestError(f"model '{self.name}' is a language model: use POST /v1/chat/completions or "
                           "/v1/completions (or the socket protocol's GENERATE frame)")

    def input_spec(self, name: str):
        self.prepare({})

    # -- generation ---------------------------------------------------------------------

    def start(self, req, sink):
        """Submit an openai.GenerationRequest; the scheduler's Handle. OpenAIError (400) for what
        can never run: a prompt the template refuses, too long for the context, bad parameters.
        SchedulerClosedError (503) while this version drains: route again."""
        from ..lm.sampling import SamplingParams
        from ..lm.scheduler import SchedulerClosedError
        try:
            ids = self.encode_chat(req.messages) if req.chat else self.encode_prompt(req.prompt)
        except EngineError as e:  # a template that refuses the messages (raise_exception), no template
            raise OpenAIError(str(e), param="messages" if req.chat else "prompt") from None
        max_tokens = req.max_tokens
        if max_tokens is None:
            max_tokens = (self.max_context - len(ids)) if req.chat else COMPLETION_DEFAULT_MAX_TOKENS
            if max_tokens < 1:
                raise OpenAIError(f"this model's context is {self.max_context} tokens and the prompt has {len(ids)}: "
                                  "no room to generate; shorten the messages", param="messages",
                                  code="context_length_exceeded")
        try:
            return self.scheduler.submit(ids, SamplingParams(**req.sampling), max_tokens, req.stop, sink)
        except SchedulerClosedError:
            raise
        except EngineError as e:  # GenerationError (the numbers), SamplingError (the field and its range)
            code = "context_length_exceeded" if "context" in str(e) else None
            raise OpenAIError(str(e), getattr(e, "status", 400), code=code) from None

    def encode_chat(self, messages: list) -> list:
        """The prompt ids for chat messages, through the model's chat template."""
        if self.lm.chat_template is None:
            raise RequestError(f"model '{self.name}' has no chat template: use /v1/completions with a prompt")
        text = self.lm.render_chat(messages, add_generation_prompt=True)
        return self.lm.tokenizer.encode(text, add_special_tokens=False)  # the template wrote BOS if any

    def encode_prompt(self, prompt) -> list:
        if isinstance(prompt, str):
            return self.lm.tokenizer.encode(prompt)
        return list(prompt)

    def close(self, timeout: Optional[float] = None) -> bool:
        clean = self.scheduler.close(timeout)
        if self.lm_metrics is not None:
            self.lm_metrics.detach()
        return clean

    def metadata(self) -> dict:
        kv_used, kv_total = self.scheduler.kv_usage()
        return {"name": self.name, "versions": [str(self.version)], "platform": _platform(self.path),
                "inputs": [], "outputs": [], "sha256": self.sha256, "max_batch_size": 0,
                "language_model": {"max_context": self.max_context, "max_sequences": self.scheduler.max_sequences,
                                   "max_tokens_per_step": self.scheduler.max_tokens_per_step,
                                   "kv_blocks": kv_total}}


def _load(path, config: ModelConfig, loader: Optional[Callable]):
    """engine.load of the file (GGUF) or of its folder (Hugging Face: config.json + model.safetensors or
    its shards' index),
    with the decoder sizes config.json sets."""
    target = path if path.suffix == ".gguf" else path.parent
    kw = {k: v for k, v in (("max_sequences", config.max_sequences), ("max_context", config.max_context)) if v}
    if loader is not None:
        return loader(target, **kw)
    import engine
    return engine.load(target, **kw)
