"""Language models: GGUF weights, dequantisation reference, model configs (more to come:
tokenizer, chat template, KV cache, sampling, the decode scheduler). Imports nothing heavy."""
