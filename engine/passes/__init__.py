"""Graph passes: each a function Graph -> Graph (or an analysis), tested on its own."""

from .dead_code import eliminate_dead_code
from .dense import to_dense
from .fold_batchnorm import fold_batchnorm
from .fold_constants import fold_constants
from .fold_pad import fold_pad_into_conv
from .fuse_activation import fuse_activations
from .fuse_attention import fuse_attention
from .fuse_concat import fuse_concat_convs
from .fuse_conv_pool import fuse_conv_maxpool
from .fuse_gelu import fuse_gelu
from .fuse_layernorm import fuse_layernorm
from .fuse_pool_relu_grad import fuse_pool_relu_grad
from .fuse_qkv import fuse_qkv
from .fuse_residual import fuse_residual
from .fuse_rotary import fuse_rotary
from .layout import to_nhwc
from .matmul_transpose import fuse_matmul_transpose
from .shapes import infer_shapes, probe_types, symbolic_shapes
from .simplify import simplify
from .stats import recording

# In order. Constants and no-ops go first so the pattern passes see clean graphs; then the
# transformer patterns (activations, normalisations, rotary, attention) while the graph is
# still as exported (the attention fusion reads the MatMul+Add projections' outputs), and a
# MatMul by a transposed operand it leaves reads the operand transposed; BatchNorm is
# folded into its Conv before the layout pass moves the conv trunk to NHWC; linear layers
# become Dense after it (it may have permuted their weights); the fusions come last: a residual
# Add before the activation that may follow it, a channel Concat of convs once their
# activations are in.
PIPELINE = (fold_constants, simplify, eliminate_dead_code, fuse_gelu, fuse_layernorm, fuse_rotary, fuse_attention,
            fuse_matmul_transpose, fold_pad_into_conv, fold_batchnorm, to_nhwc, to_dense,
            fuse_qkv, simplify, fold_constants, fuse_residual, fuse_activations, fuse_concat_convs, fuse_conv_maxpool,
            eliminate_dead_code)


# Training graphs (engine/train.py) are built on the unfused forward; these passes then fuse
# what the reverse pass leaves fusable (an activation whose input nothing else reads goes
# into its Dense/Conv2D epilogue; a ReLU's backward into the max-pool backward after it).
# Layout and BatchNorm folding are inference-only.
TRAINING_PIPELINE = (fold_constants, simplify, eliminate_dead_code, fuse_activations, fuse_pool_relu_grad,
                     eliminate_dead_code)


def optimize_training(graph):
    for p in TRAINING_PIPELINE:
        graph = p(graph)
    return graph


def optimize(graph, stats=None):
    """The passes run on every graph before planning (engine.load(..., optimize=False) skips them).
    `stats`, a Counter, receives the rewrites the passes made ({"attention": 6, ...})."""
    with recording(stats):
        for p in PIPELINE:
            graph = p(graph)
    return graph


__all__ = ["eliminate_dead_code", "fold_batchnorm", "fold_pad_into_conv", "fold_constants", "fuse_activations",
           "fuse_attention", "fuse_concat_convs", "fuse_conv_maxpool", "fuse_gelu", "fuse_layernorm",
           "fuse_matmul_transpose", "fuse_pool_relu_grad", "fuse_qkv", "fuse_residual", "fuse_rotary", "infer_shapes", "optimize",
           "optimize_training", "probe_types", "simplify", "symbolic_shapes", "to_dense", "to_nhwc", "PIPELINE",
           "TRAINING_PIPELINE"]
