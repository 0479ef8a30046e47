"""Keras-style model building: `from engine.nn import Sequential, Dense, ...` runs Keras
code written for `tensorflow.keras` (inference today; training arrives with fit()).

Every layer keeps Keras's constructor arguments and defaults, weight order and layouts, so
`get_weights` / `set_weights` trade weights with Keras itself.
"""

from . import ops
from .activations import Act
from .initializers import set_random_seed
from .layers import *  # noqa: F401,F403  (every layer class and Keras's aliases)
from .layers import LAYERS, Layer
from .models import Model, Sequential, load_model
from .tensor import Input, KerasTensor

__all__ = ["Input", "KerasTensor", "Sequential", "Model", "load_model", "Layer", "set_random_seed", "ops", "Act",
           "TransformerEncoderLayer", "TransformerDecoderLayer"] + sorted(LAYERS)
