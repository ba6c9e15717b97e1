"""BenchLM's scores equal a direct, one-request-at-a-time computation from the model's logits."""

from __future__ import annotations

import pytest
import torch
from lm_eval.api.instance import Instance
from lm_eval.api.model import LM
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

from bench.evaluation.lm_adapter import UNBOUNDED_MAX_LENGTH, BenchLM
from bench_plugins import models, tokenizers

VOCAB = 256  # the byte tokenizer's vocabulary
SMALL = {
    "lstm": dict(n_layer=2, n_embd=16, n_hidden=16),
    "gpt1": dict(n_layer=2, n_embd=16, n_head=2, n_positions=12),
    "gpt2-tiny": dict(n_layer=2, n_embd=16, n_head=2, n_positions=12),
}
MAX_LENGTH = 12  # shorter than several requests below, so left truncation is exercised


def build(name: str) -> torch.nn.Module:
    component = {c.name: c for c in models.bench_models()}[name]
    torch.manual_seed(0)
    return component.factory(VOCAB, **{**component.defaults, **SMALL[name]}).eval()


def direct_loglikelihood(model, context: list[int], continuation: list[int], max_length: int):
    """The rule spelled out for one request: truncate on the left, one unpadded forward pass."""
    tokens = (context + continuation)[-(max_length + 1):]
    with torch.no_grad():
        logits = model(torch.tensor(tokens[:-1])[None])[0].double()
    logprobs = logits.log_softmax(dim=-1)
    first = len(tokens) - 1 - len(continuation)
    rows = range(first, len(tokens) - 1)
    total = sum(logprobs[row, token].item() for row, token in zip(rows, continuation))
    greedy = all(logits[row].argmax().item() == token for row, token in zip(rows, continuation))
    return total, greedy


def mixed_requests(seed: int = 0, count: int = 11):
    g = torch.Generator().manual_seed(seed)
    requests = []
    for _ in range(count):
        n_context = int(torch.randint(1, 25, (1,), generator=g))  # up to twice MAX_LENGTH
        n_continuation = int(torch.randint(1, 6, (1,), generator=g))
        requests.append((None, torch.randint(0, VOCAB, (n_context,), generator=g).tolist(),
                         torch.randint(0, VOCAB, (n_continuation,), generator=g).tolist()))
    return requests


@pytest.mark.parametrize("name", sorted(SMALL))
def test_batched_scores_equal_direct_unbatched_scores(name):
    model = build(name)
    lm = BenchLM(model, tokenizers.byte(), batch_size=4, max_length=MAX_LENGTH)
    requests = mixed_requests()
    assert any(len(c) + len(x) > MAX_LENGTH + 1 for _, c, x in requests), "no request is truncated"
    assert len({len(c) + len(x) for _, c, x in requests}) > 3, "lengths are not mixed"
    scores = lm._loglikelihood_tokens(requests)
    assert len(scores) == len(requests)
    for (_, context, continuation), (logprob, greedy) in zip(requests, scores):
        expected, expected_greedy = direct_loglikelihood(model, context, continuation, MAX_LENGTH)
        assert logprob == pytest.approx(expected, abs=1e-5)
        assert greedy == expected_greedy


class ForwardOnly(torch.nn.Module):
    """The same model seen through forward only (no hidden/head): BenchLM's full-logits fallback."""

    def __init__(self, model):
        super().__init__()
        self.inner, self.context_length = model, model.context_length

    def forward(self, idx):
        return self.inner(idx)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_head_only_scores_equal_the_full_forward_fallback(name):
    model = build(name)
    requests = mixed_requests(seed=2, count=15)
    head_only = BenchLM(model, tokenizers.byte(), batch_size=4, max_length=MAX_LENGTH)
    fallback = BenchLM(ForwardOnly(model), tokenizers.byte(), batch_size=4, max_length=MAX_LENGTH)
    calls = []
    output_layer = model.lm_head if hasattr(model, "lm_head") else model.head  # GPT's nn.Linear, the LSTM's
    output_layer.register_forward_hook(lambda module, inputs, out: calls.append(out.shape))
    fast, full = head_only._loglikelihood_tokens(requests), fallback._loglikelihood_tokens(requests)
    for (a, greedy_a), (b, greedy_b) in zip(fast, full):
        assert a == pytest.approx(b, abs=1e-6) and greedy_a == greedy_b
    scored = sum(len(x) for _, _, x in requests)
    # The head-only pass ran the head on exactly the scored positions (2-d input), the fallback on every position.
    head_rows = sum(shape[0] for shape in calls if len(shape) == 2)
    assert head_rows == scored


def test_greedy_flag_is_true_for_the_argmax_continuation():
    model = build("gpt2-tiny")
    lm = BenchLM(model, tokenizers.byte(), batch_size=2, max_length=MAX_LENGTH)
    context = [5, 6, 7]
    with torch.no_grad():
        best = model(torch.tensor([context]))[0, -1].argmax().item()
    (_, greedy), (_, other) = lm._loglikelihood_tokens([(None, context, [best]), (None, context, [(best + 1) % VOCAB])])
    assert greedy is True and other is False


def test_loglikelihood_through_lm_eval_instances_uses_lm_evals_encoding():
    model = build("lstm")
    tokenizer = tokenizers.byte()
    lm = BenchLM(model, tokenizer, batch_size=3)
    assert isinstance(lm, LM) and lm.max_length == UNBOUNDED_MAX_LENGTH  # the LSTM has no limit
    pairs = [("The cat sat", " on the mat."), ("A", " b"), ("Spaces move: ", "x"), ("", "no context")]
    instances = [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)]
    scores = lm.loglikelihood(instances)
    for (context, continuation), (logprob, _) in zip(pairs, scores):
        if not context:  # lm-eval's rule: the prefix token stands in for an empty context
            context_ids, continuation_ids = [lm.prefix_token_id], tokenizer.encode(continuation)
        else:  # trailing spaces of the context belong to the continuation
            stripped = context.rstrip()
            context_ids = tokenizer.encode(stripped)
            continuation_ids = tokenizer.encode(context[len(stripped):] + continuation)
        expected, _ = direct_loglikelihood(model, context_ids, continuation_ids, lm.max_length)
        assert logprob == pytest.approx(expected, abs=1e-5)


def test_rolling_loglikelihood_sums_lm_evals_windows():
    model = build("gpt1")
    tokenizer = tokenizers.byte()
    lm = BenchLM(model, tokenizer, batch_size=5, max_length=8)
    texts = ["a rolling window covers every token exactly once", "short"]
    totals = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (t,), i) for i, t in enumerate(texts)])
    for text, total in zip(texts, totals):
        windows = map(make_disjoint_window, get_rolling_token_windows(
            token_list=tokenizer.encode(text), prefix_token=lm.prefix_token_id, max_seq_len=8, context_len=1))
        expected = sum(direct_loglikelihood(model, c, x, 8)[0] for c, x in windows)
        assert total == pytest.approx(expected, abs=1e-5)


def test_prefix_token_is_the_end_of_text_token_when_the_tokenizer_has_one():
    class WithEot:
        eot_token = 3

        def encode(self, text):
            return [ord(ch) % VOCAB for ch in text]

    assert BenchLM(build("lstm"), WithEot()).prefix_token_id == 3
    assert BenchLM(build("lstm"), tokenizers.byte()).prefix_token_id == ord("\n")


def test_generation_is_refused_with_a_clear_message():
    lm = BenchLM(build("lstm"), tokenizers.byte())
    with pytest.raises(NotImplementedError, match="generate_until"):
        lm.generate_until([Instance("generate_until", {}, ("hi", {}), 0)])


def test_rejects_impossible_settings():
    with pytest.raises(ValueError, match="context length 12"):
        BenchLM(build("gpt2-tiny"), tokenizers.byte(), max_length=13)
    with pytest.raises(ValueError, match="batch_size"):
        BenchLM(build("lstm"), tokenizers.byte(), batch_size=0)
    with pytest.raises(ValueError, match="context token"):
        BenchLM(build("lstm"), tokenizers.byte())._loglikelihood_tokens([(None, [], [1, 2])])


@pytest.mark.parametrize("name", ["gpt2-tiny", "lstm"])
def test_a_continuation_longer_than_max_length_is_scored_in_windows_from_the_end(name):
    model = build(name)
    lm = BenchLM(model, tokenizers.byte(), batch_size=3, max_length=4)
    context, continuation = [9, 8, 7], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    tokens = context + continuation
    # Chunks of at most 4 targets, the last chunk first: targets [9, 13), [5, 9), [3, 5).
    expected = sum(direct_loglikelihood(model, tokens[:a], tokens[a:b], 4)[0] for a, b in [(9, 13), (5, 9), (3, 5)])
    short = [(None, [4, 5], [6, 7])]  # fits in one window, scored in the same batches
    (logprob, _), (short_logprob, _) = lm._loglikelihood_tokens([(None, context, continuation)] + short)
    assert logprob == pytest.approx(expected, abs=1e-5)
    assert short_logprob == pytest.approx(direct_loglikelihood(model, [4, 5], [6, 7], 4)[0], abs=1e-5)
    assert lm._loglikelihood_tokens([(None, [1, 2], [])]) == [(0.0, True)]  # nothing to score


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_scores_match_cpu_scores():
    requests = mixed_requests(seed=1)
    cpu = BenchLM(build("gpt2-tiny"), tokenizers.byte(), batch_size=4)._loglikelihood_tokens(requests)
    cuda = BenchLM(build("gpt2-tiny"), tokenizers.byte(), batch_size=4, device="cuda")._loglikelihood_tokens(requests)
    for (a, _), (b, _) in zip(cpu, cuda):
        assert a == pytest.approx(b, abs=1e-3)


class WithoutPrefixSharing(torch.nn.Module):
    """The same model with its hidden/head split but without ``hidden_after``."""

    def __init__(self, model):
        super().__init__()
        self.inner = model
        self.context_length = getattr(model, "context_length", None)

    def hidden(self, idx):
        return self.inner.hidden(idx)

    def head(self, h):
        return self.inner.head(h)


def item_requests(seed: int = 2, items: int = 5, endings: int = 4):
    """HellaSwag-shaped requests: each item's endings follow one context of that item."""
    g = torch.Generator().manual_seed(seed)
    requests = []
    for _ in range(items):
        context = torch.randint(0, VOCAB, (int(torch.randint(2, 8, (1,), generator=g)),), generator=g).tolist()
        for _ in range(endings):
            ending = torch.randint(0, VOCAB, (int(torch.randint(1, 5, (1,), generator=g)),), generator=g).tolist()
            requests.append((None, context, ending))
    return requests


@pytest.mark.parametrize("name", sorted(SMALL))
def test_endings_read_after_one_shared_context_score_as_read_whole(name):
    model = build(name)
    requests = item_requests() + mixed_requests(count=5)  # shared contexts, and requests that cannot share
    lm = BenchLM(model, tokenizers.byte(), batch_size=4, max_length=MAX_LENGTH)
    groups, rest = lm._shared_contexts(requests)
    assert sorted(map(len, groups.values())) == [4] * 5 and len(rest) == 5
    shared = lm._loglikelihood_tokens(requests)
    whole = BenchLM(WithoutPrefixSharing(model), tokenizers.byte(), batch_size=4,
                    max_length=MAX_LENGTH)._loglikelihood_tokens(requests)
    for (a, greedy_a), (b, greedy_b), (_, context, continuation) in zip(shared, whole, requests):
        assert a == pytest.approx(b, abs=1e-5) and greedy_a == greedy_b
        assert a == pytest.approx(direct_loglikelihood(model, context, continuation, MAX_LENGTH)[0], abs=1e-5)
