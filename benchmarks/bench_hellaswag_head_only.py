"""HellaSwag scoring: full forward vs head at continuation positions vs that plus one shared context per item.

Scores lm-eval's hellaswag requests for the first N validation items (4 per item, built with
lm-eval's own preprocessing, see ``bench_lm_adapter_batching.py``) through
:meth:`bench.evaluation.lm_adapter.BenchLM.loglikelihood` on the shape of the cell scored on all
of HellaSwag: gpt2-tiny, 2 layers x 128, GPT-2 BPE (vocabulary 50,257), randomly initialised
(speed does not depend on the weights).

* ``full``: the adapter's fallback for models without ``hidden``/``head``, the path every model
  took before: one forward pass computes (B, T, V) logits, the continuation positions are picked
  out of them. (Like the new path it runs under ``torch.inference_mode``; before, scoring ran
  under ``torch.no_grad``, measured 1.7-3 % slower, so the ratio below slightly understates the
  gain over the old code.)
* ``head-only``: the trunk over the batch, the vocabulary head at continuation positions only
  (the model seen without ``hidden_after``).
* ``shared-context``: head-only, and each item's context read once for its four endings
  (``hidden_after``: the endings attend to the context's keys and values).

Both sides score the same requests in the same batches; rounds alternate between them, the
figure is the median over rounds of items / CPU second (``time.process_time``: all threads of
this process, so the result depends less on what else the machine runs). The script also checks
the largest log-likelihood difference from ``full`` and whether acc / acc_norm decisions are identical.

    python benchmarks/bench_hellaswag_head_only.py --items 64 --rounds 5 --threads 1 \
        --write benchmarks/results/hellaswag_head_only.md

Goal (issue 11): >= 2x the items per CPU-second of the full forward pass, identical acc / acc_norm.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from bench_lm_adapter_batching import build, hellaswag_requests
from lm_eval.api.instance import Instance

from bench.evaluation.lm_adapter import BenchLM


class SplitOnly(torch.nn.Module):
    """The model seen through ``hidden`` and ``head`` only: no shared context."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.inner, self.context_length = model, model.context_length

    def hidden(self, idx: torch.Tensor) -> torch.Tensor:
        return self.inner.hidden(idx)

    def head(self, h: torch.Tensor) -> torch.Tensor:
        return self.inner.head(h)


class ForwardOnly(torch.nn.Module):
    """The model seen through ``forward`` only, so BenchLM takes its full-logits fallback."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.inner, self.context_length = model, model.context_length

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.inner(idx)


def items_per_cpu_s(lm: BenchLM, requests: list[Instance]) -> tuple[float, list[tuple[float, bool]]]:
    started = time.process_time()
    scores = lm.loglikelihood(requests)
    return len(requests) / 4 / (time.process_time() - started), scores


def decisions(requests: list[Instance], scores: list[tuple[float, bool]]) -> tuple[list[int], list[int]]:
    """acc and acc_norm picks per item: argmax of the log-likelihood, and of it over the ending's length."""
    lls = np.array([ll for ll, _ in scores]).reshape(-1, 4)
    lengths = np.array([len(r.args[1]) for r in requests], dtype=float).reshape(-1, 4)
    return lls.argmax(axis=1).tolist(), (lls / lengths).argmax(axis=1).tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    requests, source = hellaswag_requests(args.items)
    model, tokenizer = build("gpt2-bpe", device)
    sides = {"full": BenchLM(ForwardOnly(model), tokenizer, batch_size=args.batch_size),
             "head-only": BenchLM(SplitOnly(model), tokenizer, batch_size=args.batch_size),
             "shared-context": BenchLM(model, tokenizer, batch_size=args.batch_size)}
    for lm in sides.values():  # warm-up: allocator, thread pools
        lm.loglikelihood(requests[:8])
    rates: dict[str, list[float]] = {name: [] for name in sides}
    scores = {}
    for _ in range(args.rounds):
        for name, lm in sides.items():
            rate, scores[name] = items_per_cpu_s(lm, requests)
            rates[name].append(rate)
    diffs = {name: max(abs(a - b) for (a, _), (b, _) in zip(scores["full"], scores[name])) for name in sides}
    same = {name: decisions(requests, scores["full"]) == decisions(requests, scores[name]) for name in sides}
    median = {name: statistics.median(values) for name, values in rates.items()}
    text = "\n".join([
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()} ({_cpu()}), torch "
        f"{torch.__version__}, {torch.get_num_threads()} thread(s), load average {os.getloadavg()[0]:.1f}; "
        f"gpt2-tiny 2 x 128, GPT-2 BPE; {source}; batch size {args.batch_size}; {args.rounds} alternating "
        "rounds, median.",
        "",
        "| path | items / CPU-s (median) | vs full | largest log-likelihood difference from full (nats) "
        "| acc, acc_norm identical | all rounds |",
        "|---|---:|---:|---:|---|---|",
        *(f"| {name} | {median[name]:.2f} | {median[name] / median['full']:.2f}x | {diffs[name]:.1e} | {same[name]} "
          f"| {', '.join(f'{r:.2f}' for r in rates[name])} |" for name in sides),
    ]) + "\n"
    print(text)
    if args.write:
        args.write.parent.mkdir(parents=True, exist_ok=True)
        args.write.write_text(text)


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    main()
