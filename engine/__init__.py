"""engine: load a model (.engine, ONNX; torch weights via engine.nn) and run it on native kernels.

    >>> import engine
    >>> m = engine.load("cnn.engine")
    >>> probs = m.predict(x)
    >>> engine.set_num_threads(2)
"""

import os as _os

# Developers may point ENGINE_BUILD_DIR at a CMake build folder holding _C*.so, to test a
# build without installing it.
if _os.environ.get("ENGINE_BUILD_DIR"):
    __path__.insert(0, _os.environ["ENGINE_BUILD_DIR"])  # noqa: F821

from .errors import (  # noqa: E402
    DTypeError,
    EngineError,
    GraphError,
    KernelError,
    ModelFormatError,
    SaveError,
    ShapeError,
    UnsupportedOpError,
)
from . import _C  # noqa: E402,F401  (the native extension; fails loudly if not built)
from .config import (get_isa, get_num_threads, memory_info, release_memory, set_isa,  # noqa: E402
                     set_num_threads, set_scratch_keep)
from .graph import Graph, Node, Value  # noqa: E402
from .model import DEFAULT_PLAN_CACHE_SIZE, Model, TensorInfo  # noqa: E402

__version__ = "0.1.0"

from .config import apply_environment as _apply_environment  # noqa: E402

_apply_environment()


def load(source, optimize: bool = True, plan_cache_size: int = DEFAULT_PLAN_CACHE_SIZE, **lm_options):
    """Load a model into a runnable Model: a path (.engine file or directory, .onnx, .keras,
    .h5), the file's bytes, or a binary file object (a model received over the network need
    not touch disk). optimize=False runs the graph exactly as in the file (for debugging).

    A language model (a .gguf file, or a Hugging Face folder with config.json + safetensors)
    loads as an engine.lm.LanguageModel; `lm_options` go to it (dtype="f32" dequantises,
    max_sequences, max_context: see engine/lm/load.py).

    >>> m = engine.load("cnn.engine")
    >>> m = engine.load("resnet50.onnx")
    >>> m = engine.load(open("cnn.engine", "rb").read())
    >>> y = m.predict(x)
    >>> lm = engine.load("SmolLM2-135M-Instruct.Q4_1.gguf"); lm.chat([{"role": "user", "content": "Hi"}])
    """
    from .formats import language_model_path, read_graph

    lm_path = language_model_path(source)
    if lm_path is not None:
        from .lm.load import load_language_model

        return load_language_model(lm_path, **lm_options)
    if lm_options:
        raise EngineError(f"load: option(s) {', '.join(sorted(lm_options))} apply to language models only")
    return Model(read_graph(source), plan_cache_size=plan_cache_size, optimize=optimize)


def from_torch(module, example_inputs, **kwargs) -> Model:
    """A live torch.nn.Module as a Model (exported to ONNX in memory, checked against the
    module on `example_inputs`); see engine/formats/torch_module.py. Needs torch.

    >>> model = engine.from_torch(net, torch.randn(2, 1000))
    """
    from .formats.torch_module import from_torch as _from_torch

    return _from_torch(module, example_inputs, **kwargs)


def __getattr__(name):  # engine.nn, engine.optimizers, engine.schedules, engine.models imported on first use
    if name in ("nn", "optimizers", "schedules", "models", "lm"):
        import importlib

        return importlib.import_module("." + name, __name__)
    raise AttributeError(f"module 'engine' has no attribute {name!r}")


__all__ = [
    "load", "from_torch", "Model", "TensorInfo", "Graph", "Node", "Value", "nn", "optimizers", "schedules", "models",
    "EngineError", "KernelError", "ShapeError", "DTypeError", "ModelFormatError",
    "UnsupportedOpError", "GraphError", "SaveError", "set_num_threads", "get_num_threads",
    "set_isa", "get_isa", "memory_info", "release_memory", "set_scratch_keep", "__version__",
]
