"""Ready-made model families built from checkpoints with engine.nn layers: BERT-family encoders
(BertEncoder) and sentence-transformers folders (SentenceEncoder).

    >>> from engine.models import SentenceEncoder
    >>> emb = SentenceEncoder("all-MiniLM-L6-v2").encode(["A sentence.", "Another one."])

Importing this package needs neither torch nor transformers; SentenceEncoder needs the
`tokenizers` package (the `text` extra) when it is created.
"""

from .bert import BertConfig, BertEncoder, build_bert, load_weights
from .sentence_encoder import SentenceEncoder

__all__ = ["BertConfig", "BertEncoder", "SentenceEncoder", "build_bert", "load_weights"]
