"""Language models: tokenizer, chat template, KV cache, sampling, the decode scheduler."""
