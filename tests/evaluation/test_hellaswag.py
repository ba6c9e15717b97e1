"""lm-eval's own hellaswag task, run offline through BenchLM on a local file in the official schema."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from bench.data.datadir import DATA_DIR_ENV
from bench.errors import DataMissingError
from bench.evaluation.hellaswag import LOCAL_FILE, locate_hellaswag, run_hellaswag
from bench.evaluation.lm_adapter import BenchLM
from bench_plugins import models, tokenizers
from tests.evaluation.conftest import ITEMS

MAX_LENGTH = 48  # shorter than most prompts here, so left truncation takes part


def tiny_model() -> torch.nn.Module:
    component = {c.name: c for c in models.bench_models()}["gpt2-tiny"]
    torch.manual_seed(0)
    return component.factory(256, **{**component.defaults, "n_layer": 1, "n_embd": 16, "n_head": 2,
                                     "n_positions": MAX_LENGTH}).eval()


def preprocess(text: str) -> str:
    """HellaSwag's published cleanup of WikiHow markers (the rule lm-eval applies)."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def hand_scores(model, tokenizer, items) -> tuple[float, float]:
    """acc and acc_norm by hand: zero-shot prompt "<label>: <ctx_a> <Ctx_b>", each ending after a
    space, summed log-probabilities; acc_norm divides them by the ending's length in characters."""
    correct = correct_norm = 0
    for label, ctx_a, ctx_b, endings, gold in items:
        query = preprocess(f"{label}: {ctx_a} {ctx_b.capitalize()}")
        choices = [preprocess(e) for e in endings]
        lls = []
        for choice in choices:
            context = tokenizer.encode(query)
            whole = tokenizer.encode(query + " " + choice)
            continuation = whole[len(context):]
            tokens = whole[-(MAX_LENGTH + 1):]
            with torch.no_grad():
                logprobs = model(torch.tensor(tokens[:-1])[None])[0].double().log_softmax(-1)
            first = len(tokens) - 1 - len(continuation)
            lls.append(sum(logprobs[first + j, t].item() for j, t in enumerate(continuation)))
        lls = np.array(lls)
        correct += int(np.argmax(lls) == gold)
        correct_norm += int(np.argmax(lls / np.array([len(c) for c in choices], dtype=float)) == gold)
    return correct / len(items), correct_norm / len(items)


def test_lm_eval_hellaswag_matches_a_hand_computation(hellaswag_data):
    model, tokenizer = tiny_model(), tokenizers.byte()
    source = locate_hellaswag()
    assert source.local_file == hellaswag_data
    result = run_hellaswag(BenchLM(model, tokenizer, batch_size=5, max_length=MAX_LENGTH), source=source)
    acc, acc_norm = hand_scores(model, tokenizer, ITEMS)
    assert result["items"] == len(ITEMS)
    assert result["acc"] == pytest.approx(acc, abs=1e-12)
    assert result["acc_norm"] == pytest.approx(acc_norm, abs=1e-12)
    # lm-eval's standard error of a mean of 0/1 scores: sample standard deviation / sqrt(n).
    n = len(ITEMS)
    assert result["acc_stderr"] == pytest.approx(np.sqrt(acc * (1 - acc) * n / (n - 1) / n), abs=1e-9)
    assert result["source"] == str(hellaswag_data)


def test_limit_scores_the_first_items_only(hellaswag_data):
    model, tokenizer = tiny_model(), tokenizers.byte()
    result = run_hellaswag(BenchLM(model, tokenizer, max_length=MAX_LENGTH), limit=2)
    assert result["items"] == 2
    acc, acc_norm = hand_scores(model, tokenizer, ITEMS[:2])
    assert (result["acc"], result["acc_norm"]) == (pytest.approx(acc), pytest.approx(acc_norm))


def test_missing_file_offline_is_one_clear_line(offline_hf, monkeypatch, tmp_path):
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "empty"))
    with pytest.raises(DataMissingError) as info:
        locate_hellaswag()
    message = str(info.value)
    assert LOCAL_FILE in message and DATA_DIR_ENV in message and "HF_DATASETS_OFFLINE" in message
    assert "\n" not in message


def test_missing_file_online_falls_back_to_lm_evals_default_dataset(monkeypatch, tmp_path):
    for name in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE", "BENCH_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "empty"))
    source = locate_hellaswag()  # nothing is downloaded here; lm-eval would do it when the task loads
    assert source.local_file is None and "Rowan/hellaswag" in source.describe()


def test_head_only_scoring_gives_the_same_accuracy_as_the_full_forward_pass(hellaswag_data):
    from tests.evaluation.test_lm_adapter import ForwardOnly

    model, tokenizer = tiny_model(), tokenizers.byte()
    fast = run_hellaswag(BenchLM(model, tokenizer, batch_size=5, max_length=MAX_LENGTH), log_samples=True)
    full = run_hellaswag(BenchLM(ForwardOnly(model), tokenizer, batch_size=5, max_length=MAX_LENGTH), log_samples=True)
    assert (fast["acc"], fast["acc_norm"]) == (full["acc"], full["acc_norm"])
    for a, b in zip(fast["samples"], full["samples"]):
        assert a["loglikelihoods"] == pytest.approx(b["loglikelihoods"], abs=1e-6)
