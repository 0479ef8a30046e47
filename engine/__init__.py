"""engine: load a model (.engine, later ONNX/Keras/.pth) and run it on native kernels.

    >>> import engine
    >>> m = engine.load("cnn.engine")
    >>> probs = m.predict(x)
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
    ShapeError,
    UnsupportedOpError,
)
from . import _C  # noqa: E402,F401  (the native extension; fails loudly if not built)
from .graph import Graph, Node, Value  # noqa: E402
from .model import Model, TensorInfo  # noqa: E402

__version__ = "0.1.0"


def load(path) -> Model:
    """Load a model file (.engine file or directory) into a runnable Model.

    >>> m = engine.load("cnn.engine")
    >>> y = m.predict(x)
    """
    from .formats import read_graph

    return Model(read_graph(path))


def __getattr__(name):  # engine.nn imported on first use
    if name == "nn":
        import importlib

        return importlib.import_module(".nn", __name__)
    raise AttributeError(f"module 'engine' has no attribute {name!r}")


__all__ = [
    "load", "Model", "TensorInfo", "Graph", "Node", "Value", "nn",
    "EngineError", "KernelError", "ShapeError", "DTypeError", "ModelFormatError",
    "UnsupportedOpError", "GraphError", "__version__",
]
