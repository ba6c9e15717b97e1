"""Results no model can reach: a loss below the data's entropy floor.

A dataset whose source is known (``Corpus.entropy_rate``, e.g. ``synthetic``) bounds every model:
the expected loss per token cannot be below the entropy rate. A measured loss is a mean over n
tokens, so it may dip below the rate by sampling noise, and by float rounding. A result is called
impossible only when it is below the floor by more than

    FLOAT_NATS + Z * ln(vocab_size) / sqrt(n)

nats: rounding, plus Z standard errors of a mean of n per-token losses whose standard deviation is
taken as ln(vocab_size), far above what a source near its floor shows, so a real model is never
flagged by chance. Models that see future tokens land far below (0.87 and 0.38 nats under
``synthetic``'s floor in the issue that added this check). An impossible result is named in the
summary (``impossible``), on the console, in every report table, and is never shown as the best.
"""

from __future__ import annotations

import math
from typing import Any

FLOAT_NATS = 1e-3
Z = 3.0
CAUSE = ("likely cause: the model sees future tokens (a leak); run bench.testing's causality checks on it "
         "(check_causality_eval, check_causality_train, check_causality_after_training)")


def margin(n_tokens: int, vocab_size: int) -> float:
    """How far below the floor a measured mean loss may be before it is impossible (nats)."""
    return FLOAT_NATS + Z * math.log(max(vocab_size, 2)) / math.sqrt(max(n_tokens, 1))


def verdict(summary: dict[str, Any]) -> str | None:
    """Why ``summary``'s losses are impossible, in one sentence, or None when they are not (or
    the floor is unknown). Works on summaries of any bench version that stored the floor."""
    floor_ppl, vocab = summary.get("entropy_floor_ppl"), summary.get("vocab_size")
    if not isinstance(floor_ppl, (int, float)) or not isinstance(vocab, int) or floor_ppl <= 0:
        return None
    floor = math.log(floor_ppl)
    tokens = summary.get("eval_tokens") or {}
    found = []
    for label, key, split in (("best val loss", "best_val_loss", "valid"), ("test loss", "test_loss", "test")):
        loss, n = summary.get(key), tokens.get(split) if isinstance(tokens, dict) else None
        if not isinstance(loss, (int, float)) or not isinstance(n, int) or not math.isfinite(loss):
            continue
        allowed = margin(n, vocab)
        if loss < floor - allowed:
            found.append(f"{label} {loss:.3f} is {floor - loss:.3f} nats below the entropy floor {floor:.3f} "
                         f"(tolerance {allowed:.3f} over {n} tokens)")
    if not found:
        return None
    return "impossible: " + "; ".join(found) + "; no model can beat the floor; " + CAUSE
