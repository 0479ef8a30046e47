"""Every user-facing failure is an EngineError subclass whose message names what is wrong."""


class EngineError(Exception):
    """Base class of all engine errors."""


class KernelError(EngineError, ValueError):
    """A native kernel refused its arguments (raised from engine._C)."""


class ShapeError(EngineError, ValueError):
    """An input or intermediate has the wrong rank or shape (expected vs got)."""


class DTypeError(EngineError, TypeError):
    """An input has a dtype the model cannot take without loss."""


class ModelFormatError(EngineError):
    """A model file is missing, truncated, corrupt or of an unknown version."""


class UnsupportedOpError(EngineError):
    """A graph names an op this engine does not implement."""


class GraphError(EngineError):
    """A graph is malformed: dangling values, cycles, duplicate names, bad attributes."""


class SaveError(EngineError, OSError):
    """A model could not be written: the target is something we must not replace, or the
    file system refused (the message says which)."""
