"""How many torch threads a cell trains with on CPU: one policy for every executor.

torch's CPU kernels split reductions by thread count, so the same cell trained with 1 and with 2
threads can differ in the last bits (gpt1: ~1e-6 in the loss; the LSTM happens to agree). Results
are therefore bitwise equal across executors when cells train with the same number of threads:
``threads = N`` (``bench run --threads N`` or ``[executor] threads``) gives every cell N threads,
sequentially, in ``--jobs`` workers and in Ray tasks alike. ``threads = 0`` (the default) means:
in this process, torch's own setting (all cores unless ``OMP_NUM_THREADS`` says otherwise); in a
local worker, an equal share of the cores; in a Ray task, its ``num_cpus``. Every summary records
the count it trained with as ``torch_threads``.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator


def check_threads(threads: int) -> int:
    if threads < 0:
        raise ValueError(f"threads must be >= 0 (0: automatic), got {threads}")
    return threads


@contextmanager
def using_threads(threads: int) -> Iterator[None]:
    """Train with ``threads`` torch threads inside the block (0: leave torch's setting); the
    previous count is restored after, so an in-process run leaves its caller as it was."""
    import torch

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
