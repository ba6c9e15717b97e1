"""Built-in language models: an LSTM baseline, GPT-1 (post-LN) and a small GPT-2 (pre-LN)."""

from __future__ import annotations

from bench.components import Component
from bench.hookspecs import hookimpl

from . import gpt1, gpt2_tiny, lstm


@hookimpl
def bench_models() -> list[Component]:
    return [
        Component("lstm", lstm.build, lstm.DEFAULTS,
                  "LSTM baseline: embedding, stacked LSTM, linear head (optionally tied)"),
        Component("gpt1", gpt1.build, gpt1.DEFAULTS,
                  "GPT-1 style post-LayerNorm transformer decoder with learned positions"),
        Component("gpt2-tiny", gpt2_tiny.build, gpt2_tiny.DEFAULTS,
                  "GPT-2 style pre-LayerNorm transformer decoder, 6 layers x 384 by default"),
    ]
