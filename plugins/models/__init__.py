"""Built-in language models: an LSTM baseline, GPT-1 (post-LN), a small GPT-2 (pre-LN) and Llama."""

from __future__ import annotations

from bench.components import Component
from bench.hookspecs import hookimpl

from . import gpt1, gpt2_tiny, llama, lstm


@hookimpl
def bench_models() -> list[Component]:
    return [
        Component("lstm", lstm.build, lstm.DEFAULTS,
                  "LSTM baseline: embedding, stacked LSTM, linear head (optionally tied)"),
        Component("gpt1", gpt1.build, gpt1.DEFAULTS,
                  "GPT-1 style post-LayerNorm transformer decoder with learned positions"),
        Component("gpt2-tiny", gpt2_tiny.build, gpt2_tiny.DEFAULTS,
                  "GPT-2 style pre-LayerNorm transformer decoder, 6 layers x 384 by default"),
        Component("llama", llama.build, llama.DEFAULTS,
                  "Llama-style decoder: RMSNorm, RoPE, SwiGLU, no biases; n_kv_head < n_head: grouped-query "
                  "attention"),
    ]
