"""What batching buys the lm-eval adapter: HellaSwag items/s, batched vs one request at a time.

Scores the same HellaSwag requests (4 per item: the prompt and each ending, built with lm-eval's
own hellaswag preprocessing) through :class:`bench.evaluation.lm_adapter.BenchLM.loglikelihood`
with ``batch_size=1`` (one forward pass per request) and with larger batches (requests sorted
by length, right-padded, one forward pass per batch). Tokenization is included, lm-eval's
task bookkeeping is not. Rounds alternate between the settings so that drifts in machine load
hit all of them alike; the figure is the median over rounds.

Two model shapes, randomly initialised (speed does not depend on the weights):

* ``byte``: a small GPT-2 over UTF-8 bytes (vocabulary 256). Little arithmetic per token, so
  one-at-a-time scoring is bound by per-call overhead; this is the case batching is for.
* ``gpt2-bpe``: the shape of the trained cell in the HellaSwag run (gpt2-tiny, 2 layers x 128,
  GPT-2 BPE, vocabulary 50,257). The 50k-way output layer dominates the arithmetic.

    python benchmarks/bench_lm_adapter_batching.py
    python benchmarks/bench_lm_adapter_batching.py --items 64 --rounds 3 \
        --write benchmarks/results/lm_adapter_batching.md

Goal: batched >= 5x the items/s of one request at a time on CPU.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

import torch
from lm_eval.api.instance import Instance
from lm_eval.tasks.hellaswag.utils import preprocess

from bench.data.datadir import data_dir
from bench.evaluation.lm_adapter import BenchLM
from bench.registry import build_registry, plugin_manager

FALLBACK_ITEM = {"activity_label": "Washing dishes", "ctx_a": "A woman stands at a sink full of dishes.",
                 "ctx_b": "she", "endings": ["turns on the water and scrubs a plate.", "flies away on a broom.",
                                              "eats the sponge.", "throws the plates out of the window."]}
SHAPES = {
    "byte": ("byte", dict(n_layer=2, n_embd=64, n_head=4, n_positions=1024)),
    "gpt2-bpe": ("gpt2", dict(n_layer=2, n_embd=128, n_head=4, n_positions=256)),
}


def hellaswag_requests(items: int) -> tuple[list[Instance], str]:
    """lm-eval's hellaswag requests for the first ``items`` validation items (or a stand-in item)."""
    path = data_dir() / "hellaswag" / "hellaswag_val.jsonl"
    if path.is_file():
        with path.open() as handle:
            docs = [json.loads(line) for _, line in zip(range(items), handle)]
        source = f"first {len(docs)} items of {path.name}"
    else:
        docs, source = [FALLBACK_ITEM] * items, "one stand-in item repeated (no hellaswag file found)"
    requests = []
    for doc in docs:  # the query and choices exactly as lm-eval's hellaswag process_docs builds them
        query = preprocess(doc["activity_label"] + ": " + doc["ctx_a"] + " " + doc["ctx_b"].capitalize())
        for ending in doc["endings"]:
            requests.append(Instance("loglikelihood", {}, (query, " " + preprocess(ending)), len(requests)))
    return requests, source


def build(shape: str, device: torch.device):
    registry = build_registry(plugin_manager())
    tokenizer_name, hparams = SHAPES[shape]
    tokenizer = registry.get("tokenizer", tokenizer_name).factory()
    component = registry.get("model", "gpt2-tiny")
    torch.manual_seed(0)
    model = component.factory(tokenizer.vocab_size, **{**component.defaults, **hparams})
    return model.to(device).eval(), tokenizer


def items_per_s(lm: BenchLM, requests: list[Instance]) -> float:
    device = lm.device
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    lm.loglikelihood(requests)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return len(requests) / 4 / (time.perf_counter() - started)


def measure(shape: str, requests: list[Instance], batch_sizes: list[int], rounds: int,
            device: torch.device) -> dict[int, float]:
    model, tokenizer = build(shape, device)
    adapters = {b: BenchLM(model, tokenizer, batch_size=b, device=device) for b in batch_sizes}
    for lm in adapters.values():  # warm-up: allocator, kernels, thread pools
        lm.loglikelihood(requests[:8])
    samples: dict[int, list[float]] = {b: [] for b in batch_sizes}
    for _ in range(rounds):
        for b, lm in adapters.items():
            samples[b].append(items_per_s(lm, requests))
    return {b: statistics.median(values) for b, values in samples.items()}


def report(results: dict[str, dict[int, float]], args: argparse.Namespace, source: str, device: torch.device) -> str:
    lines = [
        "# lm-eval adapter: batched vs one request at a time",
        "",
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__} on {device} ({torch.get_num_threads()} threads); {source}, "
        f"{args.rounds} alternating rounds, median. Command: "
        f"`python benchmarks/bench_lm_adapter_batching.py --items {args.items} --rounds {args.rounds}"
        f" --batch-sizes {' '.join(map(str, args.batch_sizes))}"
        f"{f' --threads {args.threads}' if args.threads else ''}`",
        "",
        "| model shape | batch size | items/s | speed-up vs batch 1 |",
        "|---|---:|---:|---:|",
    ]
    for shape, by_batch in results.items():
        base = by_batch[1]
        for b, rate in by_batch.items():
            lines.append(f"| {shape} | {b} | {rate:.1f} | {rate / base:.1f}x |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=64, help="HellaSwag items (4 requests each)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--write", type=Path, help="also write the markdown table to this file")
    args = parser.parse_args()
    if 1 not in args.batch_sizes:
        args.batch_sizes = [1, *args.batch_sizes]
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    requests, source = hellaswag_requests(args.items)
    results = {shape: measure(shape, requests, args.batch_sizes, args.rounds, device) for shape in args.shapes}
    text = report(results, args, source, device)
    print(text)
    if args.write:
        args.write.parent.mkdir(parents=True, exist_ok=True)
        args.write.write_text(text)


if __name__ == "__main__":
    main()
