"""The training-memory estimate and the warning for a cell that cannot fit."""

from __future__ import annotations

from bench.schema import TRAINER_KEYS
from bench.training.footprint import estimate_training_bytes, too_large_warning

CONFIG = {name: key.default for name, key in TRAINER_KEYS.items()} | {
    "optimizer": "adamw", "n_layer": 2, "n_embd": 128, "n_head": 4, "batch_size": 16, "seq_len": 128}


def test_the_estimate_adds_weights_gradients_moments_and_activations():
    estimate = estimate_training_bytes(CONFIG, params=1_000_000, vocab_size=50257)
    assert estimate["weights"] == estimate["gradients"] == 4_000_000
    assert estimate["optimizer_state"] == 8_000_000  # two AdamW moments
    tokens = 16 * 128
    assert estimate["activations"] == tokens * (2 * (16 * 128 + 4 * 128) * 4 + 3 * 50257 * 4)
    assert estimate["total"] == sum(v for k, v in estimate.items() if k != "total")
    assert estimate_training_bytes({**CONFIG, "optimizer": "sgd"}, 1_000_000, 256)["optimizer_state"] == 0


def test_loss_chunk_bounds_the_logits_term():
    tokens = 16 * 128
    full = estimate_training_bytes(CONFIG, params=1_000_000, vocab_size=50257)["activations"]
    chunked = estimate_training_bytes({**CONFIG, "loss_chunk": 256}, params=1_000_000, vocab_size=50257)["activations"]
    assert full - chunked == (tokens - 256) * 3 * 50257 * 4
    assert estimate_training_bytes({**CONFIG, "loss_chunk": 10**6}, 1_000_000, 50257)["activations"] == full


def test_a_model_that_cannot_fit_gets_one_warning_line():
    estimate = estimate_training_bytes(CONFIG, params=51_500_000_000, vocab_size=50257)
    line = too_large_warning(estimate, free=24 << 30, name="gpt2-tiny-L48-adamw")
    assert line.startswith("warning: gpt2-tiny-L48-adamw needs about 768.6 GiB to train (weights 191.9, ")
    assert "24.0 GiB is free" in line and "\n" not in line
    assert too_large_warning(estimate, free=None, name="x") is None


def test_dry_run_shows_the_estimate_and_warns_about_a_model_that_cannot_fit(write_matrix, capsys):
    from bench import cli

    path = write_matrix("""
        [defaults]
        dataset = "synthetic"
        vocab_size = 16
        optimizer = "adamw"
        [matrix]
        include = [{ model = "gpt1", n_layer = 16, n_embd = 16384, n_head = 16 }, { model = "lstm" }]
        """, name="huge")
    assert cli.main(["run", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "est. GiB" in out and "51,5" in out  # 51.5 G parameters
    warnings = [line for line in out.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1
    assert warnings[0].startswith("warning: gpt1-L16-adamw-n_embd=16384-n_head=16 needs about 784.2 GiB")
