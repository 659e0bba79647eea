"""Neural-network building blocks: ``gc.nn.functional`` (ops) and modules (layers, models).

Modules (PyTorch's names and defaults): ``Module``, ``Sequential``, ``Linear``, ``Conv1d``,
``Conv2d``, ``ConvTranspose2d``, ``MaxPool1d/2d``, ``AvgPool1d/2d``, ``BatchNorm1d/2d``,
``Dropout``, ``Embedding``, ``RNN``, ``LSTM``, ``GRU``, ``Flatten``, ``ResidualBlock``,
``LayerNorm``, ``MultiheadAttention``, ``TransformerEncoderLayer``, ``TransformerEncoder``,
``PositionalEncoding`` and the activations ``ReLU``, ``Tanh``, ``Sigmoid``, ``LeakyReLU``,
``ELU``, ``PReLU``, ``Maxout``, ``Softmax``, ``GELU``, ``SiLU``; data augmentation
``RandomCrop``, ``RandomFlip``, ``RandomShift``, ``GaussianNoise`` (active in training mode).
"""

from . import functional
from .activation import ELU, GELU, LeakyReLU, Maxout, PReLU, ReLU, Sigmoid, SiLU, Softmax, Tanh
from .attention import MultiheadAttention
from .augment import GaussianNoise, RandomCrop, RandomFlip, RandomShift
from .conv import AvgPool1d, AvgPool2d, Conv1d, Conv2d, ConvTranspose2d, MaxPool1d, MaxPool2d
from .layers import Dropout, Embedding, Flatten, Linear
from .module import Module, Sequential
from .norm import BatchNorm1d, BatchNorm2d, LayerNorm, SyncBatchNorm
from .recurrent import GRU, LSTM, RNN
from .residual import ResidualBlock
from .transformer import PositionalEncoding, TransformerEncoder, TransformerEncoderLayer

__all__ = [
    "AvgPool1d", "AvgPool2d", "BatchNorm1d", "BatchNorm2d", "Conv1d", "Conv2d", "ConvTranspose2d",
    "Dropout", "ELU", "Embedding", "Flatten", "GRU", "LSTM", "LayerNorm", "LeakyReLU", "Linear",
    "MaxPool1d", "MaxPool2d", "Maxout", "Module", "MultiheadAttention", "PReLU",
    "PositionalEncoding", "RNN", "ReLU", "ResidualBlock", "Sequential", "Sigmoid", "Softmax",
    "Tanh", "TransformerEncoder", "TransformerEncoderLayer", "functional",
    "GELU", "SiLU", "GaussianNoise", "RandomCrop", "RandomFlip", "RandomShift", "SyncBatchNorm",
]
