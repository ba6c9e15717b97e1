"""Errors that are the user's to fix: bench prints one line and exits with status 2."""


class BenchError(Exception):
    """A problem with the user's input (matrix, plugin names, data); the message names a fix."""


class ConfigError(BenchError):
    """The matrix file or a cell's configuration is invalid."""


class DataMissingError(BenchError):
    """A dataset's files are not where bench looks for them."""
