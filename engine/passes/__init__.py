"""Graph passes: each a function Graph -> Graph (or an analysis), tested on its own."""

from .fuse_activation import fuse_activations
from .shapes import infer_shapes, symbolic_shapes


def optimize(graph):
    """The passes run on every graph before planning."""
    return fuse_activations(graph)


__all__ = ["fuse_activations", "infer_shapes", "symbolic_shapes", "optimize"]
