"""Graph passes: each a function Graph -> Graph (or an analysis), tested on its own."""

from .fuse_activation import fuse_activations
from .fuse_conv_pool import fuse_conv_maxpool
from .shapes import infer_shapes, symbolic_shapes


def optimize(graph):
    """The passes run on every graph before planning."""
    # Activations first: a fused Conv2D+activation is what the pooling fusion then takes.
    return fuse_conv_maxpool(fuse_activations(graph))


__all__ = ["fuse_activations", "fuse_conv_maxpool", "infer_shapes", "symbolic_shapes", "optimize"]
