"""Neural-network building blocks: ``gc.nn.functional`` (ops) and modules (layers, models).

Modules (PyTorch's names and defaults): ``Module``, ``Sequential``, ``Linear``, ``Conv1d``,
``Conv2d``, ``ConvTranspose2d``, ``MaxPool1d/2d``, ``AvgPool1d/2d``, ``BatchNorm1d/2d``,
``Dropout``, ``Embedding``, ``RNN``, ``LSTM``, ``GRU``, ``Flatten``, ``ResidualBlock`` and the
activations ``ReLU``, ``Tanh``, ``Sigmoid``, ``LeakyReLU``, ``ELU``, ``PReLU``, ``Maxout``,
``Softmax``.
"""

from . import functional
from .activation import ELU, LeakyReLU, Maxout, PReLU, ReLU, Sigmoid, Softmax, Tanh
from .conv import AvgPool1d, AvgPool2d, Conv1d, Conv2d, ConvTranspose2d, MaxPool1d, MaxPool2d
from .layers import Dropout, Embedding, Flatten, Linear
from .module import Module, Sequential
from .norm import BatchNorm1d, BatchNorm2d
from .recurrent import GRU, LSTM, RNN
from .residual import ResidualBlock

__all__ = [
    "AvgPool1d", "AvgPool2d", "BatchNorm1d", "BatchNorm2d", "Conv1d", "Conv2d", "ConvTranspose2d",
    "Dropout", "ELU", "Embedding", "Flatten", "GRU", "LSTM", "LeakyReLU", "Linear", "MaxPool1d",
    "MaxPool2d", "Maxout", "Module", "PReLU", "RNN", "ReLU", "ResidualBlock", "Sequential",
    "Sigmoid", "Softmax", "Tanh", "functional",
]
