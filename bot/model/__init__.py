"""The scoring network: a NumPy stacked LSTM, its heads and its optimiser."""

from bot.model.heads import HEAD_NAMES, Heads, last_step_grad
from bot.model.lstm import LSTM, LSTMCache
from bot.model.optim import Adam, clip_grad_norm

__all__ = ["HEAD_NAMES", "LSTM", "Adam", "Heads", "LSTMCache", "clip_grad_norm", "last_step_grad"]
