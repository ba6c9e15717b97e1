"""Tokenizer checks: ``factory() -> bench.data.tokenizer.Tokenizer``.

Tokenizers whose files are missing raise ``bench.errors.DataMissingError``; the kit then skips.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from bench.components import Component
from bench.data.tokenizer import Tokenizer
from bench.testing.kit import KindChecks, require

SAMPLES = ["Hello, world!\n", "naïve café — 東京 \t  spaces\n\nnew paragraph", "", "a" * 300]


@dataclass
class TokenizerCase:
    component: Component
    hparams: dict[str, Any]

    def build(self) -> Tokenizer:
        tok = self.component.factory(**self.hparams)
        require(isinstance(tok, Tokenizer), f"factory returned {type(tok).__name__}, which lacks name, vocab_size, "
                "eot_token, encode or decode of bench.data.tokenizer.Tokenizer")
        return tok


def make_case(component: Component, overrides: Mapping[str, Any]) -> TokenizerCase:
    return TokenizerCase(component, {**component.defaults, **overrides})


def check_attributes(case: TokenizerCase) -> None:
    tok = case.build()
    require(isinstance(tok.name, str) and tok.name, f"name must be a non-empty string, got {tok.name!r}")
    require(isinstance(tok.vocab_size, int) and tok.vocab_size > 0,
            f"vocab_size must be a positive int, got {tok.vocab_size!r}")
    eot = tok.eot_token
    require(eot is None or (isinstance(eot, int) and 0 <= eot < tok.vocab_size),
            f"eot_token must be None or an id in [0, vocab_size), got {eot!r}")


def check_round_trip(case: TokenizerCase) -> None:
    tok = case.build()
    for text in SAMPLES:
        ids = tok.encode(text)
        shown = repr(text[:20])
        require(isinstance(ids, list) and all(isinstance(i, int) for i in ids),
                f"encode({shown}) must return list[int]")
        require(all(0 <= i < tok.vocab_size for i in ids), f"encode({shown}) gave ids outside [0, vocab_size)")
        back = tok.decode(ids)
        require(back == text, f"decode(encode({shown})) = {back[:20]!r}: text must survive a round trip")


def check_encode_batch(case: TokenizerCase) -> None:
    tok = case.build()
    batch = getattr(tok, "encode_batch", None)
    if batch is None:
        return  # optional: bench falls back to encode()
    require(batch(SAMPLES) == [tok.encode(t) for t in SAMPLES],
            "encode_batch(texts) must equal [encode(t) for t in texts]")


KIND = KindChecks("tokenizer", (check_attributes, check_round_trip, check_encode_batch), make_case)
