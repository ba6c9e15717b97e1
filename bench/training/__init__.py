"""Training one cell, in parts: :mod:`~bench.training.run` builds it, :mod:`~bench.training.loop`
steps it, :mod:`~bench.training.summary` writes its result. :mod:`bench.budget` decides how many
steps it trains and which budget ends it."""

from bench.training.loop import train_cell
from bench.training.outcomes import Diverged, Halted, Interrupted, check_divergence, is_out_of_memory
from bench.training.state import LoopState

__all__ = ["Diverged", "Halted", "Interrupted", "LoopState", "check_divergence", "is_out_of_memory", "train_cell"]
