"""Every engine.nn layer, by family (kept for `from engine.nn.layers import Dense`)."""

from .activation_layers import ELU, LeakyReLU, PReLU, ReLU, Softmax
from .attention import MultiHeadAttention
from .base import GraphBuilder, Layer, weights_epoch
from .conv import (Conv1D, Conv1DTranspose, Conv2D, Conv2DTranspose, Conv3D, Conv3DTranspose, DepthwiseConv1D,
                   DepthwiseConv2D, SeparableConv1D, SeparableConv2D)
from .core import (ActivityRegularization, Activation, AlphaDropout, Dense, Dropout, Embedding, GaussianDropout,
                   GaussianNoise, Identity, Masking, SpatialDropout1D, SpatialDropout2D, SpatialDropout3D)
from .merge import Add, Average, Concatenate, Dot, Maximum, Minimum, Multiply, Subtract
from .normalization import BatchNormalization, GroupNormalization, LayerNormalization, UnitNormalization
from .pooling import (AveragePooling1D, AveragePooling2D, AveragePooling3D, GlobalAveragePooling1D,
                      GlobalAveragePooling2D, GlobalAveragePooling3D, GlobalMaxPooling1D, GlobalMaxPooling2D,
                      GlobalMaxPooling3D, MaxPooling1D, MaxPooling2D, MaxPooling3D)
from .preprocessing import Normalization, Rescaling
from .recurrent import GRU, LSTM, Bidirectional, SimpleRNN, TimeDistributed
from .reshaping import (Cropping1D, Cropping2D, Cropping3D, Flatten, Permute, RepeatVector, Reshape, UpSampling1D,
                        UpSampling2D, UpSampling3D, ZeroPadding1D, ZeroPadding2D, ZeroPadding3D)

# Keras's aliases
Convolution1D, Convolution2D, Convolution3D = Conv1D, Conv2D, Conv3D
Convolution2DTranspose = Conv2DTranspose
MaxPool1D, MaxPool2D, MaxPool3D = MaxPooling1D, MaxPooling2D, MaxPooling3D
AvgPool1D, AvgPool2D, AvgPool3D = AveragePooling1D, AveragePooling2D, AveragePooling3D
GlobalAvgPool1D, GlobalAvgPool2D, GlobalAvgPool3D = GlobalAveragePooling1D, GlobalAveragePooling2D, GlobalAveragePooling3D
GlobalMaxPool1D, GlobalMaxPool2D, GlobalMaxPool3D = GlobalMaxPooling1D, GlobalMaxPooling2D, GlobalMaxPooling3D

# Layer classes by Keras class name (the Keras file reader builds from these).
LAYERS = {name: obj for name, obj in dict(globals()).items()
          if isinstance(obj, type) and issubclass(obj, Layer) and obj is not Layer and not name.startswith("_")}

# engine.nn's own layers, which are no Keras class (keras_hub's are custom objects to Keras):
# neither read from nor written to Keras files.
from .transformer import TransformerDecoderLayer, TransformerEncoderLayer  # noqa: E402

__all__ = sorted(LAYERS) + ["TransformerDecoderLayer", "TransformerEncoderLayer", "GraphBuilder", "Layer",
                            "weights_epoch", "LAYERS"]
