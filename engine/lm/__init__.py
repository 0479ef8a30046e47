"""Language models: GGUF and Hugging Face decoder checkpoints run by the native decoder
(engine/lm/decoder.py), the tokenizer and chat template from a file's metadata, sampling, and the
continuous-batching scheduler the server uses. `engine.load("x.gguf")` returns a LanguageModel
(engine/lm/model.py). Imports nothing heavy until used."""


def __getattr__(name):
    if name == "LanguageModel":
        from .model import LanguageModel

        return LanguageModel
    raise AttributeError(f"module 'engine.lm' has no attribute {name!r}")
