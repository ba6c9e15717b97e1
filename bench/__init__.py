"""bench: compare language-model architectures and optimizers from one matrix file.

Everything a plugin needs is importable from here; :mod:`bench.hookspecs` is the contract."""

from bench.components import Component
from bench.data.corpus import Corpus
from bench.data.tokenizer import Tokenizer
from bench.hookspecs import hookimpl
from bench.lm import LanguageModel

__all__ = ["Component", "Corpus", "LanguageModel", "Tokenizer", "hookimpl"]
__version__ = "0.1.0"
