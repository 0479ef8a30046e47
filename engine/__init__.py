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
from . import _C  # noqa: E402

__version__ = "0.1.0"
__all__ = [
    "EngineError", "KernelError", "ShapeError", "DTypeError", "ModelFormatError",
    "UnsupportedOpError", "GraphError", "__version__",
]
