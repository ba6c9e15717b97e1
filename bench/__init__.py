"""bench: compare language-model architectures and optimizers from one matrix file."""

from bench.components import Component
from bench.hookspecs import hookimpl

__all__ = ["Component", "hookimpl"]
__version__ = "0.1.0"
