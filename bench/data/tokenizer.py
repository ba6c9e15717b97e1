"""The interface a tokenizer plugin implements."""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class Tokenizer(Protocol):
    name: str
    vocab_size: int
    eot_token: int | None  # document separator, if the vocabulary has one

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...
