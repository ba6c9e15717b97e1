"""A rough estimate of a cell's training memory, to warn before a run that cannot fit.

    weights + gradients + optimizer state + activations, where
    weights = gradients = 4 bytes x parameters (fp32 master weights),
    optimizer state = k x 4 bytes x parameters (k = 2 for Adam-style moments, 1 for momentum, 0 for SGD;
                      optimizers not in the table are assumed to keep k = 2; for the preconditioned
                      ones, soap, shampoo and kron, k is a typical figure for square-ish matrices),
    activations = micro_batch x seq_len x n_layer x (16 x width + n_head x seq_len) values,
                  2 bytes each under bfloat16/float16 autocast, else 4,
                  + 3 x vocab x 4 bytes (logits, their fp32 softmax and its gradient) for every
                  position whose logits exist at once: micro_batch x seq_len, or loss_chunk if smaller.

The activation term is an order-of-magnitude figure (about 16 saved values per channel per layer for
a transformer block, the attention map per head); it is meant to catch a model ten times too large,
not to predict the allocator's peak.
"""

from __future__ import annotations

from typing import Any

import torch

OPTIMIZER_STATE_COPIES = {"sgd": 0, "momentum": 1, "adam": 2, "adamw": 2, "nadam": 2, "radam": 2,
                          "adafactor": 0, "muon": 1, "lion": 1, "signum": 1, "adopt": 2, "adam-mini": 1,
                          "schedulefree-adamw": 2, "ademamix": 3, "mars": 3, "prodigy": 4, "soap": 4, "shampoo": 4,
                          "kron": 2}


def estimate_training_bytes(config: dict[str, Any], params: int, vocab_size: int) -> dict[str, int]:
    copies = OPTIMIZER_STATE_COPIES.get(config["optimizer"], 2)
    width = int(config.get("n_embd") or config.get("n_hidden") or 0)
    layers, heads = int(config.get("n_layer") or 1), int(config.get("n_head") or 0)
    tokens = config["batch_size"] * config["seq_len"]
    value_bytes = 2 if config["dtype"] in ("bfloat16", "float16") else 4
    per_token = layers * (16 * width + heads * config["seq_len"]) * value_bytes
    logit_positions = min(tokens, config.get("loss_chunk") or tokens)
    parts = {"weights": 4 * params, "gradients": 4 * params, "optimizer_state": 4 * copies * params,
             "activations": tokens * per_token + logit_positions * 3 * vocab_size * 4}
    return {**parts, "total": sum(parts.values())}


def free_bytes(device: torch.device) -> int | None:
    """Memory a new run can still take: CUDA's free device memory, else the OS's MemAvailable."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def too_large_warning(estimate: dict[str, int], free: int | None, name: str) -> str | None:
    """One line when the estimate exceeds the free memory, else None."""
    if free is None or estimate["total"] <= free:
        return None
    gib = 1 << 30
    return (f"warning: {name} needs about {estimate['total'] / gib:.1f} GiB to train (weights "
            f"{estimate['weights'] / gib:.1f}, gradients {estimate['gradients'] / gib:.1f}, optimizer "
            f"{estimate['optimizer_state'] / gib:.1f}, activations {estimate['activations'] / gib:.1f}) but "
            f"{free / gib:.1f} GiB is free; shrink the model or batch, or expect out-of-memory")
