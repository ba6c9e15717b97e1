"""Held-out perplexity: the windows it scores, sliding windows, per-word perplexity, display."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from bench.data.loading import word_count
from bench.evaluation.perplexity import evaluate, format_ppl, perplexity
from bench.registry import build_registry, plugin_manager

REGISTRY = build_registry(plugin_manager())


def _model():
    torch.manual_seed(0)
    return REGISTRY.get("model", "gpt1").factory(11, n_layer=1, n_embd=16, n_head=2, n_positions=16,
                                                 dropout=0.0, tie_weights=True).eval()


def test_sliding_windows_match_a_token_by_token_recomputation():
    model, seq_len, stride = _model(), 8, 2
    tokens = torch.randint(0, 11, (61,), generator=torch.Generator().manual_seed(1), dtype=torch.int32)
    result = evaluate(model, tokens, seq_len=seq_len, batch_size=3, stride=stride)
    # Independently: each target t gets the context the scheme promises, the window ending at t
    # whose start is a multiple of the stride (or 0): at least seq_len - stride tokens once t > seq_len.
    total = 0.0
    with torch.no_grad():
        for t in range(1, 61):
            start = 0 if t <= seq_len else stride * math.ceil((t - seq_len) / stride)
            logits = model(tokens[start:t].long()[None])[0, -1]
            total += F.cross_entropy(logits[None], tokens[t].long()[None]).item()
    assert result["tokens"] == 60
    assert abs(result["loss"] - total / 60) < 1e-6


def test_the_default_stride_is_non_overlapping_windows():
    model = _model()
    tokens = torch.randint(0, 11, (50,), generator=torch.Generator().manual_seed(2), dtype=torch.int32)
    default = evaluate(model, tokens, seq_len=8, batch_size=4)
    explicit = evaluate(model, tokens, seq_len=8, batch_size=4, stride=8)
    with torch.no_grad():
        total = sum(F.cross_entropy(model(tokens[s:s + 9][:-1].long()[None])[0], tokens[s + 1:s + 9].long(),
                                    reduction="sum").item() for s in range(0, 49, 8))
    assert default == explicit and abs(default["loss"] - total / 49) < 1e-6


def test_word_perplexity_spreads_the_same_nll_over_words():
    model = _model()
    tokens = torch.randint(0, 11, (40,), generator=torch.Generator().manual_seed(3), dtype=torch.int32)
    result = evaluate(model, tokens, seq_len=8, batch_size=4, words=13)
    assert abs(math.log(result["word_ppl"]) - result["loss"] * 39 / 13) < 1e-9


def test_word_count_follows_the_word_level_convention():
    assert word_count(" the cat <unk> \n\n = Title = \n") == 3 + 1 + 1 + 3 + 1


def test_absurd_perplexities_print_as_what_they_are():
    assert perplexity(1e5) == math.inf and format_ppl(math.inf) == "inf"
    assert format_ppl(float("nan")) == "inf"
    assert format_ppl(perplexity(20.0)) == ">1e6"
    assert format_ppl(12.3456) == "12.35" and format_ppl(None) == "-"
