"""Language models: GGUF weights, the dequantisation reference, model configs, the tokenizer and
chat template from a file's metadata (to come: quantized kernels, KV cache, sampling, the decode
scheduler). Imports nothing heavy."""
