"""Language models: GGUF and Hugging Face decoder checkpoints (load.py, gguf_weights.py,
hf_checkpoint.py) run by the native decoder (decoder.py), sampled natively (sampling.py, stops.py),
with the tokenizer and chat template from the file (tokenizer.py, chat_template.py), and the
continuous-batching scheduler the server uses (scheduler.py). `engine.load("x.gguf")` returns a
LanguageModel (model.py). Imports nothing heavy until used."""


def __getattr__(name):
    if name == "LanguageModel":
        from .model import LanguageModel

        return LanguageModel
    raise AttributeError(f"module 'engine.lm' has no attribute {name!r}")
