"""Keras-style model building: `from engine.nn import Sequential, Dense, ...` runs Keras
code written for `tensorflow.keras` (inference today; training arrives with fit())."""

from .initializers import set_random_seed
from .layers import (
    Activation,
    AveragePooling2D,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAveragePooling2D,
    Layer,
    MaxPooling2D,
    ReLU,
    Reshape,
    Softmax,
)
from .models import Model, Sequential
from .tensor import Input, KerasTensor

__all__ = [
    "Input", "KerasTensor", "Sequential", "Model", "Layer", "Dense", "Conv2D",
    "MaxPooling2D", "AveragePooling2D", "GlobalAveragePooling2D", "Flatten", "Reshape",
    "Dropout", "Activation", "ReLU", "Softmax", "set_random_seed",
]
